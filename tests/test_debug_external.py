"""``HashDigest`` (spec §6.8) and ``External``/``ExternalBase`` (spec §6.9): layout, digest equality
exactly for equal computations, dropped and persistent fields, errors; plain objects as layers,
their cache keys, pickling, and the same values through ``.delayed`` on a distributed cluster."""

import hashlib
import pickle

import cloudpickle
import pytest

from connectome_dask import (Apply, CacheToDisk, CacheToRam, CheckIds, External, ExternalBase, Filter, HashDigest,
                             Merge, Source, Transform, inverse, meta, optional)
from connectome_dask.exceptions import DependencyError, FieldError, GraphError, UnknownAlgorithm
from dataset_layers import Scans, SiteA, SiteB
import external_layers
from external_layers import Pair, Table


def digest(ds, key, name="size", algorithm="sha256"):
    return (ds >> HashDigest(name, algorithm))._compile(name)(key)[-1]


# HashDigest: layout ---------------------------------------------------------------------------

def test_layout_value_hashes_and_digest():
    ds = Scans() >> HashDigest("size", hashlib.sha256, return_value=True)
    value, node_hash, pickled_hash, last = ds.size("s2")
    assert value == 20 and isinstance(node_hash, str) and pickled_hash == bytes.fromhex(node_hash)
    assert last == hashlib.sha256(pickled_hash).digest()
    assert (Scans() >> HashDigest("size")).size("s2") == (node_hash, pickled_hash)
    assert (Scans() >> HashDigest("size", return_value=True)).size("s2") == (20, node_hash, pickled_hash)
    assert (Scans() >> HashDigest("size", "sha256")).size("s2") == (node_hash, pickled_hash, last)
    assert digest(Scans(), "s2", algorithm="md5") == hashlib.md5(pickled_hash).digest()


def test_standalone_and_chained_onward():
    standalone = HashDigest(["x", "y"], "sha256")
    assert dir(standalone) == ["x", "y"] and len(standalone.x(1)) == 3
    assert standalone.x(1)[-1] == standalone.y(1)[-1] != standalone.x(2)[-1]  # the raw input's identity
    ds = Scans() >> HashDigest("size", "sha256") >> Transform(short=lambda size: size[-1].hex()[:8])
    assert ds.short("s1") == digest(Scans(), "s1").hex()[:8]
    assert repr(HashDigest(["size", "side"])) == "HashDigest(size, side)"


def test_unnamed_fields_are_dropped_persistent_ones_kept():
    class Named(Source):
        @meta
        def ids():
            return ["a", "b"]

        @meta
        def version():
            return 2

        def x(key):
            return key * 2

        def y(key):
            return key * 3

    ds = Named() >> HashDigest("x", "sha256")
    assert dir(ds) == ["id", "ids", "version", "x"]
    assert (ds.id("a"), ds.ids, ds.version) == ("a", ["a", "b"], 2)
    with pytest.raises(AttributeError):
        ds.y
    assert dir(Named() >> HashDigest("x") >> Transform(z=lambda x: x)) == ["id", "ids", "version", "z"]
    named_meta = Named() >> HashDigest(["ids", "id"], "sha256")
    assert isinstance(named_meta.ids, tuple) and len(named_meta.ids) == 3  # a meta stays a property
    assert named_meta.ids[-1] == (Named() >> HashDigest("ids", "sha256")).ids[-1]
    assert len(named_meta.id("a")) == 3 and named_meta.id("a") != named_meta.id("b")
    assert dir(named_meta >> Transform(z=lambda id: id)) == ["version", "z"]  # named fields are no longer persistent


# HashDigest: equal digests <=> equal computations ------------------------------------------------

SAME = {
    "identity transform": lambda root: Scans() >> Transform(__inherit__=True),
    "CacheToRam": lambda root: Scans() >> CacheToRam("size"),
    "CacheToRam all": lambda root: Scans() >> CacheToRam(impure=True) >> Transform(__inherit__=True),
    "CacheToDisk": lambda root: Scans() >> CacheToDisk(root, "size"),
    "Filter": lambda root: Scans() >> Filter(lambda side: side == "R"),
    "CheckIds": lambda root: Scans() >> Filter.keep(["s1"]) >> CheckIds(),
    "Apply of another field": lambda root: Scans() >> Apply(side=str.lower),
    "another pipeline object": lambda root: Scans(),
    "a pickled copy": lambda root: pickle.loads(cloudpickle.dumps(Scans() >> Transform(__inherit__=True))),
}

DIFFERENT = {
    "a parameter the field reads": lambda: (Scans(log="elsewhere"), "s1"),
    "the key": lambda: (Scans(), "s2"),
    "an applied function": lambda: (Scans() >> Apply(size=abs), "s1"),
    "a transform": lambda: (Scans() >> Transform(size=lambda size: size), "s1"),
    "another function": lambda: (Scans() >> Transform(size=lambda size: size + 0), "s1"),
}


@pytest.mark.parametrize("case", sorted(SAME))
def test_layers_that_do_not_change_the_computation_keep_the_digest(case, cache_root):
    assert digest(SAME[case](cache_root), "s1") == digest(Scans(), "s1")


@pytest.mark.parametrize("case", sorted(DIFFERENT))
def test_other_computations_have_other_digests(case):
    ds, key = DIFFERENT[case]()
    assert digest(ds, key) != digest(Scans(), "s1")


def test_merge_routing_and_digest_of_different_transforms():
    assert digest(Merge(SiteA(), SiteB()), "a1", "value") == digest(SiteA(), "a1", "value")
    assert digest(Merge(SiteA(), SiteB()), "b1", "value") == digest(SiteB(), "b1", "value")
    one = Scans() >> Transform(size=lambda size: size + 1)
    other = Scans() >> Transform(size=lambda size: size + 2)
    assert digest(one, "s1") != digest(other, "s1")


def test_field_is_computed_only_for_return_value(counter):
    ds = Scans(log=counter.path) >> HashDigest("size", "sha256")
    ds.size("s1")
    assert counter.count() == 0
    assert (Scans(log=counter.path) >> HashDigest("size", return_value=True)).size("s1")[0] == 10
    assert counter.count() == 1
    fails = Scans() >> Transform(size=lambda size: size // 0) >> HashDigest("size")
    assert len(fails.size("s1")) == 2  # the identity of a failing computation
    with pytest.raises(ZeroDivisionError):
        (Scans() >> Transform(size=lambda size: size // 0) >> HashDigest("size", return_value=True)).size("s1")


def test_impure_fields_digest_their_value():
    ds = Scans() >> HashDigest("noise", "sha256", return_value=True)
    first, second = ds.noise("s1"), ds.noise("s1")
    assert first[0] != second[0] and first[-1] != second[-1]
    both = (Scans() >> Transform(__inherit__=True, again=lambda noise: noise)
            >> HashDigest(["noise", "again"], return_value=True))._compile(["noise", "again"])("s1")
    assert both[0][0] == both[1][0]  # one evaluation, one impure value


def test_algorithm_name_and_constructor_agree():
    assert digest(Scans(), "s1", algorithm="sha256") == digest(Scans(), "s1", algorithm=hashlib.sha256)
    assert digest(Scans(), "s1", algorithm="SHA256") == digest(Scans(), "s1", algorithm="sha256")
    assert digest(Scans(), "s1", algorithm="md5") != digest(Scans(), "s1", algorithm="sha256")


# HashDigest: errors ---------------------------------------------------------------------------

def test_hashdigest_argument_errors():
    with pytest.raises(ValueError, match="HashDigest: unknown hash algorithm 'no-such-hash'"):
        HashDigest("size", "no-such-hash")
    with pytest.raises(AttributeError):  # the type connectome raises
        HashDigest("size", "no-such-hash")
    assert issubclass(UnknownAlgorithm, ValueError)
    with pytest.raises(TypeError, match="algorithm must be a hashlib name"):
        HashDigest("size", 42)
    with pytest.raises(TypeError, match="shake_128"):
        HashDigest("size", "shake_128")
    with pytest.raises(TypeError, match="names must be"):
        HashDigest(42)
    with pytest.raises(TypeError, match="must be strings"):
        HashDigest(["size", 1])


def test_missing_field_fails_the_pipeline_lazily():
    ds = Scans() >> HashDigest(["size", "nope"])  # building never fails
    for use in (dir, lambda d: d.size("s1"), lambda d: d.ids):
        with pytest.raises(DependencyError, match=r"HashDigest: the field 'nope' needs \['nope'\]"):
            use(ds)


def test_discarded_optional_is_dropped_and_decorate_stops_at_hashdigest():
    class Opt(Transform):
        __inherit__ = True

        @optional
        def extra(missing_field):
            return missing_field

        def size(size):
            return size + 1

        @inverse
        def size(size):
            return size - 1

    ds = Scans() >> Opt() >> HashDigest(["size", "extra"])
    assert "extra" not in dir(ds)
    with pytest.raises(FieldError, match="discarded"):
        ds._compile("extra")
    chain = Scans() >> Opt() >> HashDigest("size")
    with pytest.raises(FieldError, match="HashDigest: 'size' cannot be passed back"):
        chain._decorate("size")(lambda size: size)


# HashDigest: pickling and dask ------------------------------------------------------------------

def test_hashdigest_pipelines_pickle():
    ds = Scans() >> Filter.keep(["s1", "s2"]) >> HashDigest("size", hashlib.sha256, return_value=True)
    for dumps in (pickle.dumps, cloudpickle.dumps):
        again = pickle.loads(dumps(ds))
        assert again.size("s1") == ds.size("s1") and dir(again) == dir(ds)
    assert pickle.loads(pickle.dumps(ds.size))("s2") == ds.size("s2")


def test_hashdigest_delayed_on_local_schedulers():
    ds = Scans() >> CacheToRam("size") >> HashDigest("size", "sha256")
    assert ds.size.delayed("s1").compute(scheduler="sync") == ds.size("s1")
    assert ds.size.delayed("s1").key == ds.size.delayed("s1").key != ds.size.delayed("s2").key
    other = Scans() >> CacheToRam("size") >> HashDigest("size", "md5")
    assert other.size.delayed("s1").key != ds.size.delayed("s1").key  # the algorithm is part of the key


@pytest.mark.cluster
def test_hashdigest_on_distributed(client):
    pipelines = [
        Scans() >> Filter(lambda side: side == "L") >> HashDigest("size", "sha256"),
        Scans() >> CacheToRam("size") >> HashDigest("size", "sha256", return_value=True),
        Merge(SiteA(), SiteB()) >> HashDigest("value", hashlib.sha256),
        Scans() >> Transform(__inherit__=True, a=lambda size: size + 1, b=lambda size: size + 2)
        >> HashDigest(["a", "b"], "sha256"),
    ]
    for ds, name, key in zip(pipelines, ["size", "size", "value", "a"], ["s1", "s2", "b1", "s3"]):
        field = getattr(ds, name)
        assert client.compute(field.delayed(key)).result() == field(key)
    both = pipelines[-1]._compile(["a", "b"])
    assert client.compute(both.delayed("s1")).result() == both("s1")
    assert client.compute(pipelines[0].to_dask("size", ["s1", "s2"])).result() == [
        pipelines[0].size("s1"), pipelines[0].size("s2")]


# External: fields, metas, attribute access -----------------------------------------------------

def test_methods_are_fields_and_properties_metas():
    ds = External(Table({"a": 1, "b": 2}), inputs=["id"], inherit=["id"])
    assert dir(ds) == ["double", "fails", "id", "ids", "size", "value"]  # static, class, private skipped
    assert (ds.ids, ds.size, ds.value("b"), ds.double("a")) == (["a", "b"], 2, 2, 2)
    assert ds.id("a") == "a"  # connectome: AttributeError (quirk 18)
    assert (ds.rows, ds.kind, ds.helper(), ds.build().rows) == ({"a": 1, "b": 2}, "table", "static", {})
    with pytest.raises(AttributeError):
        ds.nothing
    with pytest.raises(AttributeError):
        ds._private
    with pytest.raises(LookupError, match="no row 'a' here"):
        ds.fails("a")  # user exceptions propagate unchanged
    assert repr(ds) == "External(Table)"


def test_fields_properties_and_inherit_restrict():
    table = Table({"a": 1})
    assert dir(External(table, inputs="id", fields=["value"])) == ["ids", "size", "value"]
    assert dir(External(table, inputs=["id"], properties=["ids"])) == ["double", "fails", "ids", "value"]
    assert dir(External(table, inputs=["id"], fields=[], properties=[])) == []
    explicit = External(table, inputs=["id"], fields=["helper"], properties=["kind", "rows"])
    assert dir(explicit) == ["helper", "kind", "rows"] and explicit.kind == "table" and explicit.rows == {"a": 1}
    virtual = External(table, inputs=["id"], inherit=["nothing"])  # standalone: callable, hidden from dir
    assert dir(virtual) == dir(External(table, inputs=["id"])) and virtual.nothing(3) == 3
    two = External(Pair(), inputs=["id", "image"])
    assert two.both("a", 3) == ("a", 3) and list(two.both.__signature__.parameters) == ["id", "image"]


def test_chaining_after_and_before():
    class Images(Source):
        @meta
        def ids():
            return ["a", "b"]

        def image(key):
            return key * 3

    after = Images() >> External(Pair(), inputs=["id", "image"])
    assert dir(after) == ["both", "id", "ids"] and after.both("a") == ("a", "aaa")  # persistent fields pass
    overridden = Images() >> External(Table({"x": 1}), inputs=["id"], inherit=["image"])
    assert overridden.ids == ["x"] and overridden.image("b") == "bbb"
    ds = External(Table({"a": 1, "b": 2}), inputs=["id"], inherit=["id"])
    onward = ds >> Transform(y=lambda value, id: (value, id))
    assert dir(onward) == ["id", "ids", "size", "y"] and onward.y("b") == (2, "b")  # metas and id persist
    only_ids = dict(inputs=["id"], inherit=["id"], properties=["ids"])
    assert Merge(External(Table({"a": 1, "b": 2}), **only_ids), External(Table({"c": 3}), **only_ids)).ids == (
        "a", "b", "c")
    assert (ds >> Filter(lambda value: value > 1)).ids == ("b",)


def test_external_errors():
    table = Table({"a": 1})
    cases = [
        (dict(fields=["nope"]), FieldError, r"External\(Table\): the object has no attribute 'nope'"),
        (dict(fields=["ids"]), FieldError, "'ids' is a property, not a method; list it in properties="),
        (dict(fields=["rows"]), FieldError, "'rows' is not a method"),
        (dict(properties=["value"]), FieldError, "'value' is a method, not a property; list it in fields="),
        (dict(fields=["_private"]), FieldError, "'_private' is private"),
        (dict(fields=["value"], properties=["value"]), FieldError, "both in fields= and in properties="),
        (dict(inherit=["value"]), GraphError, r"\['value'\] are both inherited and defined"),
        (dict(inherit=[1]), TypeError, "inherit must be strings"),
        (dict(marker="v1"), TypeError, "marker must be a callable"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            External(table, inputs=["id"], **kwargs)
    with pytest.raises(TypeError):
        External(table, ["id"])  # inputs is keyword-only
    with pytest.raises(TypeError):
        External(table)
    missing = Scans() >> External(Pair(), inputs=["id", "image"])
    with pytest.raises(DependencyError, match=r"External\(Pair\): the field 'both' needs \['image'\]"):
        dir(missing)

    class Forgot(ExternalBase):
        def __init__(self):
            pass

        def f(self, id):
            return id

    assert Forgot().f(1) == 1  # plain Python
    with pytest.raises(GraphError, match=r"Forgot is not initialised: call super\(\).__init__"):
        dir(Forgot())
    with pytest.raises(GraphError, match="not initialised"):
        (Forgot() >> Transform(g=lambda f: f)).g(1)


# External: identity ----------------------------------------------------------------------------

def test_identity_is_the_class_the_state_the_method_and_the_inputs():
    def ext(rows=None, **kwargs):
        return External(Table(rows or {"a": 1, "b": 2}), inputs=["id"], **kwargs)

    base = digest(ext(), "a", "value")
    assert digest(ext(), "a", "value") == base  # another object, same class and state
    assert digest(ext({"a": 5, "b": 2}), "a", "value") != base  # connectome: equal (stale caches)
    assert digest(ext(), "a", "double") != base  # connectome: equal
    assert digest(ext(), "b", "value") != base
    metas = ext() >> HashDigest(["ids", "size"], "sha256")
    assert metas.ids[-1] != metas.size[-1]
    assert digest(ext() >> Transform(__inherit__=True), "a", "value") == base
    marked = digest(ext(marker=lambda name: "v1"), "a", "value")
    assert marked != base and marked == digest(ext({"z": 0}, marker=lambda name: "v1"), "a", "value")
    assert marked != digest(ext(marker=lambda name: "v2"), "a", "value")
    assert digest(ext(marker=lambda name: "v1"), "a", "double") != marked  # the name is always part of it
    with pytest.raises(TypeError, match=r"marker\('\w+'\) failed.*field name only"):
        digest(ext(marker=lambda: "v1"), "a", "value")


def make_class(body):
    namespace = {"__name__": "__main__"}  # user code: hashed by value
    exec(f"class Data:\n    def value(self, key):\n        {body}\n", namespace)
    return namespace["Data"]


def test_editing_the_class_changes_tokens_renaming_it_does_not():
    one, same, edited = make_class("return key"), make_class("return key"), make_class("return key + '!'")
    same.__name__ = same.__qualname__ = "Renamed"
    base = digest(External(one(), inputs=["id"]), "a", "value")
    assert digest(External(same(), inputs=["id"]), "a", "value") == base
    assert digest(External(edited(), inputs=["id"]), "a", "value") != base


def test_unhashable_state_and_classes():
    class Handle:
        def __init__(self):
            self.handle = object()  # pickle sees a stateless object: equal for every instance

        def value(self, key):
            return key

    assert digest(External(Handle(), inputs=["id"]), "a", "value") == digest(
        External(Handle(), inputs=["id"]), "a", "value")

    class Locked:
        lock = object()

        def value(self, key):
            return key

    assert digest(External(Locked(), inputs=["id"]), "a", "value") == digest(External(Locked(), inputs=["id"]), "a",
                                                                              "value")


def test_no_stale_disk_cache_entries_for_another_state(cache_root, counter):
    first = External(Table({"a": 1}, log=counter.path), inputs=["id"]) >> CacheToDisk(cache_root, "value")
    second = External(Table({"a": 5}, log=counter.path), inputs=["id"]) >> CacheToDisk(cache_root, "value")
    assert (first.value("a"), second.value("a"), first.value("a")) == (1, 5, 1)
    assert counter.count() == 2


# ExternalBase ----------------------------------------------------------------------------------

def test_external_base_subclass():
    ds = external_layers.Scans("/data")
    assert (ds.ids, ds.path("s1"), ds.description) == (["s0", "s1", "s2"], "/data/s1.nii", "3 scans in /data")
    assert dir(ds) == ["description", "id", "ids", "path", "size"] and ds.id("s1") == "s1"
    assert ds._compile("path")("s2") == "/data/s2.nii"
    chained = ds >> Transform(__inherit__=True)
    assert (chained.path("s0"), chained.ids, chained.id("s0")) == ("/data/s0.nii", ["s0", "s1", "s2"], "s0")
    assert repr(ds) == "Scans" and isinstance(ds, External)
    other = external_layers.Scans("/elsewhere")
    assert digest(ds, "s1", "path") != digest(other, "s1", "path")  # connectome: equal
    assert digest(ds, "s1", "path") == digest(external_layers.Scans("/data"), "s1", "path")
    merged = Merge(external_layers.Scans("/a", n=2, properties=["ids"]),
                   external_layers.Scans("/b", n=4, properties=["ids"]) >> Filter(lambda id: id >= "s2"))
    assert merged.ids == ("s0", "s1", "s2", "s3") and merged.path("s3") == "/b/s3.nii"


def test_external_layers_pickle():
    local = make_class("return key * 2")
    pipelines = [
        External(Table({"a": 1, "b": 2}), inputs=["id"], inherit=["id"]),
        external_layers.Scans("/data") >> Transform(__inherit__=True),
        External(local(), inputs=["id"]),
    ]
    for ds, name in zip(pipelines, ["value", "path", "value"]):
        for dumps in (pickle.dumps, cloudpickle.dumps):
            if dumps is pickle.dumps and ds is pipelines[-1]:
                continue  # a local class travels by value with cloudpickle only
            again = pickle.loads(dumps(ds))
            key = "a" if name == "value" else "s1"
            assert getattr(again, name)(key) == getattr(ds, name)(key) and dir(again) == dir(ds)
            assert digest(again, key, name) == digest(ds, key, name)


@pytest.mark.cluster
def test_external_on_distributed(client):
    class Local(ExternalBase):  # shipped to the workers by value
        def __init__(self, factor):
            super().__init__(inputs=["id"])
            self.factor = factor

        def scaled(self, key):
            return key * self.factor

    table = External(Table({"a": 1, "b": 2}), inputs=["id"], inherit=["id"])
    assert client.compute(table.to_dask("value", ["a", "b"])).result() == [1, 2]
    assert client.compute(table.double.delayed("b")).result() == 4
    scans = external_layers.Scans("/data") >> Transform(__inherit__=True, name=lambda path: path.upper())
    assert client.compute(scans.name.delayed("s1")).result() == "/DATA/S1.NII"
    local = Local(3) >> HashDigest("scaled", "sha256", return_value=True)
    assert client.compute(local.scaled.delayed(2)).result() == local.scaled(2)
    assert local.scaled(2)[0] == 6
