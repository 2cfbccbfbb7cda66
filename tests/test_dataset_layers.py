"""Dataset layers (spec §6.2–6.7, checklist items 39–44): Filter, CheckIds, Merge, Join, GroupBy,
Split — eager semantics and errors, tokens kept (caches shared with the pipelines without the layer),
and the same values through ``.delayed``/``to_dask`` on a distributed cluster and under ``persist``."""

import hashlib
import pickle

import cloudpickle
import pytest

import connectome_dask as connectome
from connectome_dask import (CacheToDisk, CheckIds, Filter, GroupBy, Join, JoinMode, Merge, Source, Split,
                             Transform, meta)
from connectome_dask.exceptions import DependencyError, DuplicateKeys, HashError, UnknownKey
from dataset_layers import Double, Records, Scans, SiteA, SiteB, Slices


def sha(*values):
    return hashlib.sha256(b"".join(hashlib.sha256(v.encode()).digest() for v in values)).hexdigest()


# Filter ---------------------------------------------------------------------------------------

def test_filter_keeps_matching_ids_in_original_order_and_passes_fields_through():
    ds = Scans() >> Filter(lambda size: size > 15)
    assert ds.ids == ("s3", "s2", "s4")
    assert (Scans() >> Filter(lambda id, side: side == "L" and id != "s2")).ids == ("s1",)
    assert dir(ds) == dir(Scans())
    assert ds.size("s1") == 10  # filtered out, still accessible
    assert repr(Filter(lambda id, side: True)) == "Filter(id, side)"


def test_filter_drop_keep_and_keys_field():
    assert (Scans() >> Filter.drop(["s1", "s4"])).ids == ("s3", "s2")
    assert (Scans() >> Filter.keep({"s1", "zz"})).ids == ("s1",)
    with pytest.raises(AssertionError):
        Filter.keep("s1")
    renamed = Scans() >> Transform(__inherit__=True, keys=meta(lambda ids: ids)) >> Filter(
        lambda side: side == "R", keys="keys")
    assert renamed.keys == ("s3", "s4") and renamed.ids == ["s3", "s1", "s2", "s4"]


def test_filter_errors():
    with pytest.raises(DependencyError, match="zzz"):
        Scans() >> Filter(lambda zzz: True)
    with pytest.raises(ValueError, match="default"):
        Filter(lambda size=1: True)
    with pytest.raises(ValueError):
        Filter(lambda *sizes: True)
    with pytest.raises(TypeError):
        Filter(1)
    with pytest.raises(HashError) as error:
        Scans() >> Filter(lambda noise: noise > 0.5)
    assert isinstance(error.value, RuntimeError)
    with pytest.raises(DependencyError):  # no ids before the filter: lazy, as connectome
        (Transform(x=lambda x: x) >> Filter(lambda x: x)).ids


def test_filter_runs_the_predicate_once_per_pipeline_and_shows_progress(counter, capsys):
    ds = Scans(log=counter.path) >> Filter(lambda size: size > 15, verbose=True)
    assert ds.ids == ds.ids == ("s3", "s2", "s4")
    assert counter.count() == 4
    assert "Filter" in capsys.readouterr().err


def test_filter_and_checkids_keep_cache_entries(counter, cache_root):
    plain = Scans(log=counter.path) >> CacheToDisk(cache_root, "size")
    assert plain.size("s2") == 20 and counter.count() == 1
    for layers in ([Filter(lambda side: side == "L")], [CheckIds()], [Filter.keep(["s2"]), CheckIds()]):
        assert connectome.Chain(Scans(log=counter.path), *layers, CacheToDisk(cache_root, "size")).size("s2") == 20
    assert counter.count() == 1


# CheckIds -------------------------------------------------------------------------------------

def test_checkids_rejects_keys_not_in_ids():
    ds = Scans() >> Filter(lambda side: side == "L") >> CheckIds()
    assert ds.size("s1") == 10 and ds.id("s2") == "s2"
    for name in ("size", "id", "patient"):
        with pytest.raises(KeyError, match="s3"):
            getattr(ds, name)("s3")
    with pytest.raises(UnknownKey):
        ds._compile(["size", "side"])("zz")
    with pytest.raises(KeyError):
        ds.size(["unhashable"])
    assert dir(ds) == dir(Scans())


def test_checkids_needs_a_dataset():
    with pytest.raises(DependencyError):
        Transform(x=lambda x: x) >> CheckIds()
    with pytest.raises(AttributeError):
        CheckIds().size


# Merge ----------------------------------------------------------------------------------------

def test_merge_routes_keys_and_intersects_fields():
    merged = Merge(SiteA(), SiteB())
    assert merged.ids == ("a1", "a2", "b1")
    assert dir(merged) == ["id", "ids", "value"]
    assert (merged.value("a1"), merged.value("b1"), merged.id("b1")) == ("Aa1", "Bb1", "b1")
    with pytest.raises(ValueError, match="zz"):
        merged.value("zz")
    class SiteC(Source):
        @meta
        def ids():
            return ["c1"]

        def value(key):
            return "C"

    nested = Merge(merged, Merge(SiteC()))
    assert nested.ids == ("a1", "a2", "b1", "c1") and nested.value("c1") == "C" and nested.value("a2") == "Aa2"
    assert (merged >> Transform(value=lambda value: value + "!")).value("a2") == "Aa2!"


def test_merge_errors():
    with pytest.raises(RuntimeError, match="a1"):
        Merge(SiteA(), SiteA())
    with pytest.raises(DuplicateKeys):
        Merge(SiteA(), SiteB(), SiteB())

    class Other(Source):
        @meta
        def ids():
            return ["o"]

        @meta
        def extra():
            return 1

        def value(key):
            return key

    with pytest.raises(ValueError, match="same properties"):
        Merge(SiteA(), Other())
    with pytest.raises(ValueError, match="several properties"):
        Merge(Other())
    with pytest.raises(ValueError, match="no properties"):
        Merge(Transform(x=lambda x: x))
    with pytest.raises(TypeError):
        Merge(1)


def test_merge_keeps_tokens_downstream(counter, cache_root):
    def cached(head):
        return head >> Double(log=counter.path) >> CacheToDisk(cache_root, "value")

    assert cached(SiteA(log=counter.path)).value("a1") == "Aa1Aa1"
    assert counter.count() == 2
    merged = cached(Merge(SiteA(log=counter.path), SiteB(log=counter.path)))
    assert merged.value("a1") == "Aa1Aa1" and counter.count() == 2  # the same entry
    assert merged.value("b1") == "Bb1Bb1" and counter.count() == 4


# Join -----------------------------------------------------------------------------------------

def left():
    return Scans() >> Filter(lambda id: id != "s3")  # patients p1, p2, p3


@pytest.mark.parametrize("how, ids", [("inner", ("p1", "p2")), ("left", ("p1", "p2", "p3")),
                                      ("right", ("p1", "p2", "p5")), ("OUTER", ("p1", "p2", "p3", "p5")),
                                      (JoinMode.left, ("p1", "p2", "p3"))])
def test_join_modes_fill_the_missing_side_with_none(how, ids):
    joined = Join(left(), Records(), on="patient", how=how)
    assert joined.ids == ids
    assert dir(joined) == ["age", "id", "ids", "noise", "patient", "side", "size"]
    rows = {k: (joined.patient(k), joined.size(k), joined.age(k)) for k in ids}
    expected = {"p1": ("p1", 10, 40), "p2": ("p2", 20, 50), "p3": ("p3", 40, None), "p5": ("p5", None, 70)}
    assert rows == {k: expected[k] for k in ids}


def test_join_keys_from_several_fields_and_to_key():
    class L(Source):
        @meta
        def ids():
            return ["l1", "l2"]

        def patient(key):
            return "p1"

        def day(key):
            return {"l1": "d1", "l2": "d2"}[key]

    class R(Source):
        @meta
        def ids():
            return ["r1"]

        def patient(key):
            return "p1"

        def day(key):
            return "d2"

        def age(key):
            return 7

    joined = Join(L(), R(), on=["patient", "day"])
    assert joined.ids == (sha("p1", "d2"),)  # the same ids as connectome
    assert joined.age(sha("p1", "d2")) == 7
    custom = Join(L(), R(), on=["patient", "day"], how="left", to_key=lambda values: "/".join(values))
    assert custom.ids == ("p1/d1", "p1/d2") and custom.day("p1/d1") == "d1" and custom.age("p1/d1") is None


def test_join_errors():
    with pytest.raises(ValueError, match="not in both"):
        Join(left(), Records(), on="side")
    with pytest.raises(ValueError, match="'id'"):
        Join(left(), Records(), on=["patient", "id"])
    with pytest.raises(ValueError, match="both datasets have the fields"):
        Join(left(), Records() >> Transform(__inherit__=True, side=lambda age: "x"), on="patient")
    with pytest.raises(KeyError, match="cross"):
        Join(left(), Records(), on="patient", how="cross")
    with pytest.raises(TypeError):
        Join(left(), Records(), on="patient", how=1)
    duplicated = Join(Scans(), Records(), on="patient")  # s1 and s3 are both p1
    with pytest.raises(ValueError, match="s1"):
        duplicated.ids
    with pytest.raises(KeyError, match="p9"):
        Join(left(), Records(), on="patient").age("p9")


def test_join_keeps_each_sides_cache_entries(counter, cache_root):
    assert (Scans(log=counter.path) >> CacheToDisk(cache_root, "size")).size("s2") == 20
    joined = Join(Scans(log=counter.path) >> Filter(lambda id: id != "s3"), Records(), on="patient")
    assert (joined >> CacheToDisk(cache_root, "size")).size("p2") == 20
    assert counter.count() == 1


# GroupBy --------------------------------------------------------------------------------------

def test_groupby_field_list_and_callable():
    grouped = Scans() >> GroupBy("patient")
    assert grouped.ids == ("p1", "p2", "p3")
    assert grouped.size("p1") == {"s1": 10, "s3": 30} and list(grouped.size("p1")) == ["s1", "s3"]
    assert grouped.id("p1") == "p1" and dir(grouped) == dir(Scans())
    assert (Scans() >> GroupBy(lambda side: side)).side("L") == {"s1": "L", "s2": "L"}
    pairs = Scans() >> GroupBy(["patient", "side"])
    assert pairs.ids == tuple(sorted(sha(*k) for k in [("p1", "L"), ("p1", "R"), ("p2", "L"), ("p3", "R")]))
    assert pairs.size(sha("p1", "R")) == {"s3": 30}
    assert (Scans() >> GroupBy("patient") >> Transform(n=lambda size: len(size))).n("p1") == 2


def test_groupby_errors():
    with pytest.raises(KeyError, match="p9"):
        (Scans() >> GroupBy("patient")).size("p9")
    with pytest.raises(TypeError, match="group key"):
        (Scans() >> GroupBy("size")).ids
    with pytest.raises(DependencyError):
        Scans() >> GroupBy(lambda zz: zz)
    with pytest.raises(HashError):
        Scans() >> GroupBy("noise")

    class OnlyIds(Source):
        @meta
        def ids():
            return ["a"]

    with pytest.raises(RuntimeError, match="nothing to group"):
        OnlyIds() >> GroupBy("id")
    with pytest.raises(DependencyError):
        Transform(x=lambda x: x) >> GroupBy("x")


def test_groupby_keeps_cache_entries(counter, cache_root):
    cached = Scans(log=counter.path) >> CacheToDisk(cache_root, "size")
    cached.size("s1"), cached.size("s3")
    grouped = Scans(log=counter.path) >> CacheToDisk(cache_root, "size") >> GroupBy("patient")
    assert grouped.size("p1") == {"s1": 10, "s3": 30} and counter.count() == 2


# Split ----------------------------------------------------------------------------------------

def test_split_yields_new_entries_with_parts():
    ds = Scans() >> Slices()
    assert ds.ids == ("s1-0", "s2-0", "s2-1", "s3-0", "s3-1", "s3-2", "s4-0", "s4-1", "s4-2", "s4-3")
    assert dir(ds) == ["id", "ids", "index", "patient", "slice_size"]
    assert (ds.index("s3-2"), ds.slice_size("s3-2"), ds.patient("s3-2"), ds.id("s3-2")) == (2, 32, "p1", "s3-2")
    assert (Scans() >> Slices(prefix="_")).ids[0] == "s1_0"  # __split__ may use parameters
    with pytest.raises(KeyError, match="zz"):
        ds.index("zz")


def test_split_errors():
    class Same(Split):
        def __split__(id):
            yield "same", 0

        def x(__part__):
            return __part__

    with pytest.raises(AssertionError, match="same"):
        (Scans() >> Same()).ids

    class Reads(Split):
        def __split__(id, zz):
            yield id, 0

    with pytest.raises(DependencyError, match="zz"):
        Scans() >> Reads()

    class Inverse(Split):
        def __split__(id):
            yield id, 0

        def x(size):
            return size

        @connectome.inverse
        def x(x):
            return x

    with pytest.raises(ValueError, match="not reversible"):
        Inverse()


def test_split_reads_each_old_entry_through_the_cache_once(counter, cache_root):
    ds = Scans(log=counter.path) >> CacheToDisk(cache_root, "size") >> Slices()
    assert [ds.slice_size(k) for k in ds.ids][-4:] == [40, 41, 42, 43]
    assert counter.count("size:s4") == 1


# pickling and dask ----------------------------------------------------------------------------

def pipelines():
    return {
        "filter": (Scans() >> Filter(lambda side: side == "L") >> CheckIds(), "size", ["s1", "s2"]),
        "merge": (Merge(SiteA(), SiteB()) >> Double(), "value", ["a1", "b1"]),
        "join": (Join(left(), Records(), on="patient", how="outer"), ["size", "age"], ["p1", "p3", "p5"]),
        "groupby": (Scans() >> GroupBy("patient"), "size", ["p1", "p3"]),
        "split": (Scans() >> Slices(), ["slice_size", "patient"], ["s1-0", "s4-3"]),
    }


@pytest.mark.parametrize("name", sorted(pipelines()))
def test_layers_pickle(name):
    ds, fields, keys = pipelines()[name]
    lambdas = name in ("filter", "join")  # stdlib pickle cannot pickle lambdas; cloudpickle can
    for dumps in (cloudpickle.dumps,) if lambdas else (pickle.dumps, cloudpickle.dumps):
        again = pickle.loads(dumps(ds))
        assert again.ids == ds.ids
        assert [again._compile(fields)(k) for k in keys] == [ds._compile(fields)(k) for k in keys]


@pytest.mark.cluster
@pytest.mark.parametrize("name", sorted(pipelines()))
def test_layers_on_distributed(name, client):
    ds, fields, keys = pipelines()[name]
    compiled = ds._compile(fields)
    expected = [compiled(k) for k in keys]
    assert [client.compute(compiled.delayed(k)).result() for k in keys] == expected
    assert client.compute(ds.to_dask(fields, keys)).result() == expected
    assert ds._compile(fields).delayed(keys[0]).key == compiled.delayed(keys[0]).key


@pytest.mark.cluster
def test_unknown_key_reaches_the_caller_from_a_worker(client):
    ds = Scans() >> GroupBy("patient")
    with pytest.raises(KeyError, match="p9"):
        client.compute(ds.size.delayed("p9")).result()


@pytest.mark.cluster
def test_persist_fills_caches_after_and_inside_routing_layers(client, counter, cache_root):
    grouped = Scans(log=counter.path) >> GroupBy("patient") >> CacheToDisk(cache_root, "size")
    report = grouped.persist(client, progress=False)
    assert (report.computed, report.failed) == (3, {})
    sizes = counter.count()
    assert grouped.size("p1") == {"s1": 10, "s3": 30} and counter.count() == sizes
    assert grouped.persist(client, progress=False).cached == 3

    branches = [SiteA(log=counter.path) >> CacheToDisk(cache_root, "value"),
                SiteB(log=counter.path) >> CacheToDisk(cache_root, "value")]
    counter.reset()
    report = Merge(*branches).persist(client, progress=False)
    assert (report.computed, report.failed) == (3, {}) and counter.count() == 3
    assert branches[1].value("b1") == "Bb1" and counter.count() == 3  # read from the cache persist filled
