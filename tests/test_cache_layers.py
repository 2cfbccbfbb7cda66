"""CacheToRam, CacheToDisk and CacheColumns as a connectome user sees them (spec §7)."""

import gc
import os
import subprocess
import sys
import textwrap

import cloudpickle
import dask
import numpy as np
import pytest

import connectome_dask as connectome
from connectome_dask import CacheColumns, CacheToDisk, CacheToRam, Source, Transform, impure, meta
from connectome_dask import ram_usage
from connectome_dask.cache.memory import MemoryStore
from connectome_dask.cache.store import DictStore
from connectome_dask.exceptions import DependencyError, InvalidArgument, SerializationError


def counted_source(counter, factor=1):
    class Numbers(Source):
        @meta
        def ids():
            return [1, 2, 3, 4, 5]

        def value(i):
            counter("value")
            return i * factor

        def pair(i):
            counter("pair")
            return (i, {i: "x", "k": (1.5, None)})

        def fails(i):
            counter("fails")
            raise KeyError(f"no entry {i}")

    return Numbers()


# --- CacheToRam ---------------------------------------------------------------------------------

def test_ram_hits_do_not_recompute_and_are_per_key(counter):
    ds = counted_source(counter) >> CacheToRam()
    assert [ds.value(2), ds.value(2), ds.value(3)] == [2, 2, 3]
    assert counter.count("value") == 2
    assert dir(ds) == dir(counted_source(counter))


def test_ram_names_size_clear_and_failures(counter):
    cache = CacheToRam(["value", "unknown_is_ignored"], size=2)
    ds = counted_source(counter) >> cache
    for key in (1, 2, 1, 2, 3, 1):  # a b a b c evicts a; then a is recomputed
        ds.value(key)
    assert counter.count("value") == 4
    ds.pair(1), ds.pair(1)
    assert counter.count("pair") == 2  # not cached
    with pytest.raises(KeyError):
        ds.fails(1)
    with pytest.raises(KeyError):
        ds.fails(1)
    assert counter.count("fails") == 2  # failures are not stored
    cache._clear()
    ds.value(2)
    assert counter.count("value") == 5


def test_ram_hit_returns_the_stored_object_and_downstream_layers_benefit(counter):
    ds = counted_source(counter) >> CacheToRam() >> Transform(pair=lambda pair: pair[1])
    first = ds.pair(4)
    assert ds.pair(4) is first and counter.count("pair") == 1


def test_ram_keys_follow_parameters_and_code(counter):
    cache = CacheToRam()
    assert (counted_source(counter, 2) >> cache).value(3) == 6
    assert (counted_source(counter, 3) >> cache).value(3) == 9  # another closure value
    assert counter.count("value") == 2


def test_impure_fields_cannot_be_cached_unless_asked(counter):
    class Noisy(Source):
        @impure
        def noise(i):
            return np.random.rand()

        def value(i):
            return i

    with pytest.raises(ValueError, match="impure"):
        Noisy() >> CacheToRam()
    Noisy() >> CacheToRam(["value"])  # caching only pure fields is fine
    ds = Noisy() >> CacheToRam(impure=True)
    assert ds.noise(1) != ds.noise(1)  # the impure value still changes the key


def test_equal_keys_of_other_types_are_other_entries(counter):
    # hits skip hashing by remembering each key's token: 1, True, 1.0 and "1" must stay apart
    class Keys(Source):
        def value(i):
            counter("value")
            return repr(i)

    ds = Keys() >> CacheToRam()
    keys = [1, True, 1.0, "1", (1,), 1, True, 1.0, "1", (1,)]
    assert [ds.value(k) for k in keys] == [repr(k) for k in keys]
    assert counter.count("value") == 5


def test_impure_ancestors_are_hashed_on_every_hit(counter):
    class Rolls(Source):
        @impure
        def roll(i):
            counter("roll")
            return counter.count("roll") % 2  # 1, 0, 1, 0, ...

        def value(i):
            return i

    ds = Rolls() >> Transform(__inherit__=True, twice=lambda roll: (counter("twice"), 2 * roll)[1]) \
        >> CacheToRam(["twice"], impure=True)
    assert [ds.twice(7) for _ in range(4)] == [2, 0, 2, 0]
    assert counter.count("twice") == 2  # one entry per value of the impure ancestor


def test_pickled_cache_nodes_do_not_carry_remembered_tokens(counter):
    from connectome_dask.batches import Batches
    from connectome_dask.persist import PersistBatch, cached_nodes

    ds = counted_source(counter) >> CacheToRam()
    task = Batches(cached_nodes(ds, ["value"], ram=True)[1], PersistBatch).task  # what persist sends to workers
    small = len(cloudpickle.dumps(task))
    for key in range(2000):
        ds.value(key)
    assert len(cloudpickle.dumps(task)) < small + 200


def array_source(counter, tag="Arrays"):
    """Entries of 8,000 bytes each."""

    class Arrays(Source):
        @meta
        def ids():
            return list(range(10))

        def volume(i):
            counter(tag)
            return np.full(1000, i, np.float64)

    return Arrays()


def test_ram_stores_are_freed_with_the_last_pipeline_that_uses_them(counter):
    gc.collect()
    before = ram_usage()
    cache = CacheToRam()
    ds = array_source(counter) >> cache
    volume = ds.volume  # a compiled field: it holds the store too
    for key in range(5):
        ds.volume(key)
    held = ram_usage()
    assert held["stores"] == before["stores"] + 1 and held["bytes"] == before["bytes"] + 5 * 8000
    del ds
    gc.collect()
    assert ram_usage()["bytes"] == held["bytes"]  # still used by `volume`
    assert volume(1)[0] == 1 and counter.count("Arrays") == 5
    del volume
    gc.collect()
    assert ram_usage() == before
    assert list(cache._stores) == []


def test_every_cache_to_ram_of_a_process_shares_one_budget(counter):
    with dask.config.set({"connectome_dask.ram-budget": 8 * 8000 + 4000}):  # room for 8 entries of 8000 bytes
        first = array_source(counter, "First") >> CacheToRam()
        second = array_source(counter, "Second") >> CacheToRam()
        for key in range(6):
            first.volume(key)
        first.volume(0)  # 1 is now the least recently used entry
        for key in range(3):  # 9 entries: the oldest of all goes, from the other layer
            second.volume(key)
        counter.reset()
        for key in (0, 2, 3, 4, 5):
            first.volume(key)
        for key in range(3):
            second.volume(key)
        assert counter.count() == 0
        first.volume(1)
        assert counter.count("First") == 1


def test_cache_layers_accept_a_store(counter):
    mapping = {}
    ds = counted_source(counter) >> CacheToDisk(DictStore(mapping), ["value"])
    assert ds.value(2) == ds.value(2) == 2 and counter.count("value") == 1
    (field, token), = mapping
    assert field == "value" and len(token) == 32 and mapping[field, token] == 2
    shared = MemoryStore(size=1)
    one, other = counted_source(counter) >> CacheToRam(store=shared), counted_source(counter) >> CacheToRam(store=shared)
    one.value(4)
    assert other.value(4) == 4 and counter.count("value") == 2  # one store, used by both chains
    with pytest.raises(InvalidArgument, match="CacheToDisk: serializer and compression"):
        CacheToDisk(DictStore(), ["value"], compression="gzip")
    with pytest.raises(InvalidArgument, match="ram-budget"):
        CacheToRam(max_bytes=2**20)
    with pytest.raises(InvalidArgument, match="store must be"):
        CacheToRam(store={})


def _plugin_registered(dask_worker):
    return "connectome_dask.ram" in dask_worker.plugins


def test_the_ram_of_each_worker_is_held_there_and_visible(counter):
    from distributed import Client, LocalCluster

    ds = array_source(counter) >> CacheToRam()
    gc.collect()  # the stores of earlier tests' pipelines are freed now, not during this test
    here = ram_usage()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=40) as cluster, Client(cluster) as client:
        usage = connectome.ram_usage(client)  # registers the worker plugin
        workers = client.scheduler_info()["workers"]
        assert set(usage) == set(workers) and all(u["bytes"] == 0 for u in usage.values())
        assert all(client.run(_plugin_registered).values())
        assert all(usage[w]["budget"] == info["memory_limit"] // 4 for w, info in workers.items())
        first, second = sorted(workers)
        for _ in range(2):  # the second time: hits in that worker's RAM, across tasks and graphs
            values = client.gather(client.compute([ds.volume.delayed(k) for k in range(6)], workers=[first]))
            assert [v[0] for v in values] == list(range(6)) and counter.count("Arrays") == 6
        held = connectome.ram_usage(client)
        assert (held[first]["bytes"], held[first]["entries"], held[second]["bytes"]) == (6 * 8000, 6, 0)
    assert (ram_usage()["bytes"], ram_usage()["entries"]) == (here["bytes"], here["entries"])  # nothing here


# --- CacheToDisk ----------------------------------------------------------------------------------

def test_disk_roundtrip_types_and_persistence(counter, cache_root):
    ds = counted_source(counter) >> CacheToDisk.simple("value", "pair", root=cache_root)
    computed = ds.pair(2)
    again = (counted_source(counter) >> CacheToDisk.simple("value", "pair", root=cache_root)).pair(2)
    assert computed == again and type(again) is tuple and type(again[1]) is dict and 2 in again[1]
    assert counter.count("pair") == 1


def test_disk_arrays_keep_dtype_and_shape(cache_root):
    class Images(Source):
        def image(i):
            return np.arange(24, dtype=np.int16).reshape(2, 3, 4) * i

        def mask(i):
            return np.eye(3, dtype=bool)

    ds = Images() >> CacheToDisk.simple("image", "mask", root=cache_root)
    ds.image(2), ds.mask(2)
    loaded = (Images() >> CacheToDisk.simple("image", "mask", root=cache_root))
    image, mask = loaded.image(2), loaded.mask(2)
    assert image.dtype == np.int16 and image.shape == (2, 3, 4) and mask.dtype == bool
    np.testing.assert_array_equal(image, Images().image(2))


def test_disk_only_listed_names_and_no_names_caches_nothing(counter, cache_root):
    ds = counted_source(counter) >> CacheToDisk.simple(root=cache_root)
    ds.value(1), ds.value(1)
    assert counter.count("value") == 2
    ds = counted_source(counter) >> CacheToDisk.simple("pair", root=cache_root)
    ds.value(1), ds.pair(1), ds.pair(1)
    assert counter.count("value") == 3 and counter.count("pair") == 1


def test_foreign_root_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileNotFoundError):
        CacheToDisk.simple("value", root=tmp_path)


def test_disk_cache_is_shared_across_processes(counter, cache_root, tmp_path):
    script = textwrap.dedent(f"""
        from connectome_dask import Source, CacheToDisk
        class Data(Source):
            def value(i):
                with open({counter.path!r}, "a") as f:
                    f.write("value\\n")
                return [i, str(i)]
        ds = Data() >> CacheToDisk.simple("value", root={cache_root!r})
        print(ds.value(7))
    """)
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "[7, '7']"
    assert counter.count("value") == 1


def test_disk_invalidation_follows_code_and_parameters(counter, cache_root):
    def pipeline(offset):
        return counted_source(counter) >> Transform(value=lambda value, _o: value + _o, _o=lambda: offset) \
            >> CacheToDisk.simple("value", root=cache_root)

    assert pipeline(1).value(1) == 2 and pipeline(2).value(1) == 3 and pipeline(1).value(1) == 2
    assert counter.count("value") == 2  # switching back re-hits the old entry


def test_disk_and_ram_stack(counter, cache_root):
    ds = counted_source(counter) >> CacheToDisk.simple("value", root=cache_root) >> CacheToRam()
    assert ds.value(5) == ds.value(5) == 5
    assert counter.count("value") == 1


def test_unencodable_value_names_field_and_type(cache_root):
    class Odd(Source):
        def handle(i):
            return object()

    with pytest.raises(SerializationError, match="handle.*object"):
        (Odd() >> CacheToDisk.simple("handle", root=cache_root)).handle(1)


def test_cache_layers_pickle(counter, cache_root):
    ds = counted_source(counter) >> CacheToDisk.simple("value", root=cache_root) >> CacheToRam()
    clone = cloudpickle.loads(cloudpickle.dumps(ds))
    assert clone.value(3) == 3 and counter.count("value") == 1
    assert clone.value(3) == 3 and counter.count("value") == 1  # the clone's RAM cache and the disk entry
    disk_only = counted_source(counter) >> CacheToDisk.simple("value", root=cache_root)
    assert cloudpickle.loads(cloudpickle.dumps(disk_only)).value.delayed(3).key == disk_only.value.delayed(3).key


def test_cached_task_keys_differ_from_the_plain_computation(counter, cache_root):
    plain = counted_source(counter)
    cached = plain >> CacheToDisk.simple("value", root=cache_root)
    a, b = plain.value.delayed(2).key, cached.value.delayed(2).key
    assert a != b and a.startswith("value-") and b.startswith("value-")
    assert cached.value.delayed(2).compute() == 2


# --- CacheColumns --------------------------------------------------------------------------------

def test_columns_compute_whole_shards_and_persist(counter, tmp_path):
    root = tmp_path / "columns"
    ds = counted_source(counter) >> CacheColumns.simple("value", root=root, shard_size=2)
    assert ds.value(3) == 3
    assert counter.count("value") == 2  # the shard (3, 4)
    ds.value(4)
    assert counter.count("value") == 2
    again = counted_source(counter) >> CacheColumns(root / "index", root, None, ["value"], shard_size=2)
    assert [again.value(k) for k in (3, 4)] == [3, 4] and counter.count("value") == 2
    with pytest.raises(ValueError):
        ds.value(99)


def test_columns_ids_of_one_shard_share_its_task(counter, tmp_path):
    ds = counted_source(counter) >> CacheColumns.simple("value", root=tmp_path / "columns", shard_size=2)
    three, four, five = (ds.value.delayed(k) for k in (3, 4, 5))
    assert three.key != four.key and three.key.startswith("value-")
    assert three.key != (counted_source(counter)).value.delayed(3).key  # salted like a cached field
    assert dask.compute(three, four, five, scheduler="sync") == (3, 4, 5)
    assert counter.count("value") == 3  # the shard (3, 4) once, the shard (5,) once
    from connectome_dask.persist import batches_of, cached_nodes

    assert batches_of([1, 2, 3, 4, 5], cached_nodes(ds)[1], slots=2) == [[1, 2], [3, 4], [5]]


def test_columns_errors(tmp_path):
    with pytest.raises(ValueError):
        CacheColumns.simple("x", root=tmp_path / "c", shard_size=1)

    class NoIds(Source):
        def value(i):
            return i

    with pytest.raises(DependencyError):
        NoIds() >> CacheColumns.simple("value", root=tmp_path / "c")


def test_columns_float_shard_size(counter, tmp_path):
    ds = counted_source(counter) >> CacheColumns.simple("value", root=tmp_path / "c", shard_size=0.5)
    ds.value(1)
    assert counter.count("value") == 3  # ceil(0.5 * 5)


def test_submodules_for_connectome_users():
    from connectome_dask.cache import is_stable, is_unstable, unstable_module  # noqa: F401
    from connectome_dask.exceptions import DependencyError, FieldError, GraphError  # noqa: F401
    from connectome_dask.serializers import ChainSerializer, JsonSerializer, NumpySerializer, PickleSerializer  # noqa

    assert issubclass(DependencyError, GraphError) and not issubclass(FieldError, GraphError)
    assert not hasattr(connectome, "FieldError")


def test_pickle_serializer_is_opt_in(cache_root, tmp_path):
    from connectome_dask.serializers import PickleSerializer

    class Odd(Source):
        def handle(i):
            return {1: complex(1, i), "s": {frozenset([1])}}

    ds = Odd() >> CacheToDisk.simple("handle", root=tmp_path / "p", serializer=PickleSerializer())
    assert ds.handle(2) == (Odd() >> CacheToDisk.simple("handle", root=tmp_path / "p",
                                                          serializer=PickleSerializer())).handle(2)
    assert os.listdir(tmp_path / "p")
