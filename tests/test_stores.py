"""The conformance suite (``connectome_dask.testing``) on every store, the RAM budget, and the HDF5
store's encoding and reliability."""

import collections
import concurrent.futures
import datetime
import gc
import multiprocessing
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import typing
import warnings
import zoneinfo

import cloudpickle
import dask
import h5py
import numpy as np
import pytest

from connectome_dask.cache.hdf5 import HDF5Store
from connectome_dask.cache.memory import Budget, MemoryStore
from connectome_dask.cache.store import MISSING, DictStore, as_store, local
from connectome_dask.layers.columns import ShardStore
from connectome_dask.testing import TOKENS, VALUES, StoreTests, same
from connectome_dask.exceptions import CacheWarning, SerializationError
from connectome_dask.serializers import ChainSerializer, JsonSerializer, NumpySerializer, PickleSerializer


def _truncate(path):
    os.truncate(path, os.path.getsize(path) // 2)
    return True


class TestMemoryStore(StoreTests):
    def make_store(self, tmp_path):
        return MemoryStore()

    def test_lru_per_field_and_the_budget(self):
        store = MemoryStore(size=2)
        for token in ("a", "b", "a", "b", "c"):
            if store.get("f", token) is MISSING:
                store.set("f", token, token)
        assert [store.contains("f", t) for t in "abc"] == [False, True, True]
        budget = Budget(1000)
        small = MemoryStore(budget=budget)
        small.set("f", "x", np.zeros(100))  # 800 bytes
        small.set("g", "y", np.zeros(100))  # evicts x
        assert not small.contains("f", "x") and small.contains("g", "y") and small.nbytes == budget.nbytes == 800
        small.set("f", "z", np.zeros(1000))  # larger than the budget: not kept
        assert not small.contains("f", "z") and small.contains("g", "y")

    def test_stores_of_one_budget_evict_each_others_least_recently_used(self):
        budget = Budget(2000)
        first, second = MemoryStore(budget=budget), MemoryStore(budget=budget)
        first.set("f", "a", np.zeros(100))
        first.set("f", "b", np.zeros(100))
        first.get("f", "a")  # b is now the least recently used
        second.set("f", "a", np.zeros(100))  # 2400 bytes > 2000: b goes
        assert first.contains("f", "a") and not first.contains("f", "b") and second.contains("f", "a")
        assert budget.usage() == {"bytes": 1600, "entries": 2, "stores": 2, "budget": 2000}
        del second
        gc.collect()
        assert budget.usage()["bytes"] == 800 and budget.usage()["stores"] == 1  # freed with the store

    def test_evicting_the_last_reference_to_another_store_frees_it(self):
        budget = Budget(10_000)
        outer, inner = MemoryStore(budget=budget), MemoryStore(budget=budget)
        inner.set("f", "x", np.zeros(10))
        outer.set("f", "a", [inner, np.zeros(1000)])  # a value holding a store (a pipeline, say)
        del inner
        evict = threading.Thread(target=outer.set, args=("f", "b", np.zeros(1200)))  # evicts "a": frees inner
        evict.start()
        evict.join(10)
        assert not evict.is_alive(), "the store's finalizer waited for the lock held by the eviction"
        assert budget.usage() == {"bytes": 9600, "entries": 1, "stores": 1, "budget": 10_000}

    def test_hit_returns_the_stored_object(self):
        store, value = MemoryStore(), [1]
        store.set("f", "x", value)
        assert store.get("f", "x") is value

    def test_the_budget_follows_the_dask_config(self):
        budget = Budget()
        with dask.config.set({"connectome_dask.ram-budget": "1 KiB"}):
            assert budget.max_bytes == 1024
            store = MemoryStore(budget=budget)
            store.set("f", "a", np.zeros(100))
            store.set("f", "b", np.zeros(100))
            assert len(store) == 1
        assert budget.memory == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # not on a worker
        with dask.config.set({"connectome_dask.ram-budget": "50%"}):
            assert budget.max_bytes == budget.memory // 2
        with dask.config.set({"connectome_dask.ram-budget": 0.1}):
            assert budget.max_bytes == int(0.1 * budget.memory)
        with dask.config.set({"connectome_dask.ram-budget": "lots"}):
            with pytest.raises(ValueError, match="connectome_dask.ram-budget.*'lots'.*4 GiB"):
                budget.max_bytes
        assert Budget().max_bytes == budget.memory // 4  # the default: a quarter of the memory


class TestDictStore(StoreTests):
    def make_store(self, tmp_path):
        return as_store({})


def _read_only(*args, **kwargs):
    raise OSError(30, "Read-only file system")  # tests run as root, where chmod would not stop writes


class TestHDF5Store(StoreTests):
    def make_store(self, tmp_path):
        return HDF5Store(tmp_path / "root")

    def corrupt(self, store, field, token):
        return _truncate(store.path(field, token))

    def break_writes(self, store, monkeypatch):
        monkeypatch.setattr(os, "replace", _read_only)
        return True


    def test_arrays_keep_their_byte_order(self, store):  # pickle makes them native; HDF5 keeps them
        for token, value in zip(TOKENS, (np.array([1, 2], ">i4"), np.array([1, 2], ">m8[s]"), np.array([1.5], ">f8"))):
            store.set("f", token, value)
            assert same(store.get("f", token), value)


class TestHDF5Gzip(TestHDF5Store):
    def make_store(self, tmp_path):
        return HDF5Store(tmp_path / "root", compression="gzip")


class TestHDF5Lzf(TestHDF5Store):
    def make_store(self, tmp_path):
        return HDF5Store(tmp_path / "root", compression="lzf")


class TestHDF5Pickle(TestHDF5Store):
    def make_store(self, tmp_path):
        return HDF5Store(tmp_path / "root", serializer=PickleSerializer())

    def test_pickles_what_hdf5_cannot_encode(self, tmp_path):
        store = self.make_store(tmp_path)
        store.set("f", TOKENS[0], {"s": {1, 2}, "o": np.array([1, "a"], dtype=object)})
        value = store.get("f", TOKENS[0])
        assert value["s"] == {1, 2} and value["o"].tolist() == [1, "a"]


class TestShardStore(StoreTests):
    """CacheColumns' store: shards (tuples of the values of consecutive ids) in an HDF5 root."""

    def make_store(self, tmp_path):
        return ShardStore(HDF5Store(tmp_path / "root", serializer=NumpySerializer()))

    def values(self):
        return [(value,) for value in VALUES if isinstance(value, np.ndarray)] + [(np.arange(3), np.ones(2))]

    def corrupt(self, store, field, token):
        return _truncate(store.store.path(field, token))

    def break_writes(self, store, monkeypatch):
        monkeypatch.setattr(os, "replace", _read_only)
        return True

    def test_the_serializer_judges_each_value_of_a_shard(self, tmp_path):
        store = self.make_store(tmp_path)
        with pytest.raises(SerializationError):
            store.set("f", TOKENS[0], (np.arange(3), "not an array"))
        assert store.get("f", TOKENS[0]) is MISSING

    def test_shards_read_once_are_served_from_ram(self, tmp_path):
        store = self.make_store(tmp_path)
        store.set("f", TOKENS[0], (np.arange(3),))
        reader = pickle.loads(pickle.dumps(store))
        first = reader.get("f", TOKENS[0])
        os.unlink(store.store.path("f", TOKENS[0]))
        assert reader.get("f", TOKENS[0]) is first


def test_stores_of_one_token_are_one_store_per_process(tmp_path):
    a, b = HDF5Store(tmp_path / "a"), HDF5Store(tmp_path / "a")
    assert a.token == b.token != HDF5Store(tmp_path / "b").token
    assert local(a) is a and local(b) is a  # the first one registered is this process's
    ram = MemoryStore()
    assert local(ram) is ram and local(pickle.loads(pickle.dumps(ram))) is ram  # an unpickled copy resolves to it


# --- the HDF5 store specifically ---------------------------------------------------------------

def test_entries_are_plain_hdf5(tmp_path):
    store = HDF5Store(tmp_path / "root")
    store.set("image", TOKENS[0], np.arange(6.0).reshape(2, 3))
    (field, token, path, size, _), = store.entries()
    assert (field, token) == ("image", TOKENS[0]) and size > 0
    assert path == os.path.join(str(tmp_path / "root"), "image", TOKENS[0][:1], TOKENS[0] + ".h5")
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["value"][()], np.arange(6.0).reshape(2, 3))


PLAIN = [np.arange(6.0).reshape(2, 3), np.zeros((0, 3), np.int16), np.array(5, np.uint8), np.array([True, False]),
         np.array([b"ab", b"c"]), np.arange(4).astype(np.complex64) * 1j, np.arange(5, dtype=">f4"),
         np.arange(24).reshape(4, 6)[:, ::2], np.random.default_rng(0).random((300, 1000)).astype(np.float32),
         np.ones((64, 128, 130), bool), np.float16([1, 2])]


class Visit(typing.NamedTuple):
    patient: str
    when: datetime.date


def test_namedtuples_read_back_as_namedtuples_of_the_same_name_and_fields(tmp_path):
    store = HDF5Store(tmp_path / "root")
    Point = collections.namedtuple("Point", ["x", "y"])
    value = [Visit("p1", datetime.date(2020, 1, 2)), {"at": Point(1.5, np.arange(3))}, Visit("p2", None)]
    store.set("f", TOKENS[0], value)
    back = store.get("f", TOKENS[0])
    first, inner, last = back
    assert type(first).__name__ == "Visit" and first._fields == ("patient", "when") and first == value[0]
    assert type(first) is type(last) and last.when is None  # one type per name and fields
    assert inner["at"].x == 1.5 and type(inner["at"].y) is np.ndarray and inner["at"]._fields == ("x", "y")
    assert type(first) is not Visit  # made from the file: the original class is never imported
    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)):
        assert loads(dumps(first)) == first and type(loads(dumps(first))).__name__ == "Visit"
    with h5py.File(store.path("f", TOKENS[0]), "r") as f:  # what another HDF5 reader sees
        node = f["value/0"]
        assert (node.attrs["t"], node.attrs["name"], node.attrs["fields"]) == (b"namedtuple", b"Visit", b"patient,when")
        assert f["value/0/1"].attrs["t"] == b"date" and f["value/0/1"][()].tobytes() == b"2020-01-02"


def test_zoned_datetimes_keep_their_zone_and_fold(tmp_path):
    store = HDF5Store(tmp_path / "root")
    zone = zoneinfo.ZoneInfo("America/New_York")
    second = datetime.datetime(2020, 11, 1, 1, 30, fold=1, tzinfo=zone)  # the second 1:30 of that night
    store.set("f", TOKENS[0], second)
    back = store.get("f", TOKENS[0])
    assert back == second and back.tzinfo is zone and back.fold == 1 and back.utcoffset() == second.utcoffset()


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_array_subclasses_are_stored_as_plain_arrays(tmp_path):
    store = HDF5Store(tmp_path / "root")
    mapped = np.memmap(tmp_path / "volume.dat", dtype=np.float32, mode="w+", shape=(3, 4))
    mapped[:] = np.arange(12).reshape(3, 4)
    for token, value in zip(TOKENS, (mapped, mapped[1:], np.matrix([[1, 2]]), [mapped, {"m": mapped}])):
        store.set("f", token, value)
    back = store.get("f", TOKENS[0])
    assert type(back) is np.ndarray and back.dtype == np.float32 and (back == np.arange(12).reshape(3, 4)).all()
    assert type(store.get("f", TOKENS[2])) is np.ndarray and store.get("f", TOKENS[2]).shape == (1, 2)
    listed = store.get("f", TOKENS[3])
    assert type(listed[0]) is np.ndarray and (listed[1]["m"] == back).all()
    with pytest.raises(SerializationError, match="masked array"):
        store.set("f", TOKENS[4], np.ma.masked_array([1, 2], mask=[0, 1]))


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_plain_arrays_take_the_fast_path_and_match_the_general_encoding(tmp_path, monkeypatch, compression):
    """Plain arrays are written from templates (``cache.plain``): the files hold what the general
    encoder writes, and read back exactly."""
    from connectome_dask.cache import hdf5

    fast = HDF5Store(tmp_path / "fast", compression=compression)
    for i, value in enumerate(PLAIN):
        fast.set("f", TOKENS[i], value)
    monkeypatch.setattr(hdf5, "_plain_parts", lambda value, field, token, compression: None)
    general = HDF5Store(tmp_path / "general", compression=compression)
    for i, value in enumerate(PLAIN):
        general.set("f", TOKENS[i], value)
        assert same(fast.get("f", TOKENS[i]), value) and same(general.get("f", TOKENS[i]), value)
        with h5py.File(fast.path("f", TOKENS[i]), "r") as a, h5py.File(general.path("f", TOKENS[i]), "r") as b:
            assert list(a.attrs["header"]) == list(b.attrs["header"])
            assert dict(a["value"].attrs) == dict(b["value"].attrs) and a["value"].attrs["t"] == b"array"
            assert (a["value"].dtype, a["value"].shape, a["value"].compression) == \
                   (b["value"].dtype, b["value"].shape, b["value"].compression)


def test_folders_are_made_by_the_writer_and_nothing_runs_after_it_returns(tmp_path):
    for attempt in range(20):  # a background folder maker failed the rmtree about one time in four
        root = tmp_path / f"root{attempt}"
        store = HDF5Store(root)
        store.set("f", TOKENS[attempt], np.arange(3))
        store.set("g", TOKENS[attempt + 20], 1)
        assert sorted(os.listdir(root / "f")) == [TOKENS[attempt][0]]  # only the folder the entry needs
        shutil.rmtree(root)  # raises "Directory not empty" if anything still creates folders
        assert not root.exists()


def test_a_root_removed_under_a_live_store_is_recognised(tmp_path):
    root = tmp_path / "cache"
    store = HDF5Store(root)
    store.set("f", TOKENS[0], np.arange(3))
    shutil.rmtree(root)  # `rm -rf cache` while the pipeline object is alive
    store.set("f", TOKENS[1], np.arange(4))  # the writer remakes the folders, and the marker
    assert (root / "connectome_dask.json").exists()
    assert (HDF5Store(root).get("f", TOKENS[1]) == np.arange(4)).all()

    os.unlink(root / "connectome_dask.json")  # a marker deleted by hand: the layout alone is recognised
    (root / "f" / TOKENS[1][0] / f".{TOKENS[2]}.ab12cd34.tmp").write_bytes(b"torn")
    assert (HDF5Store(root).get("f", TOKENS[1]) == np.arange(4)).all()
    assert (root / "connectome_dask.json").exists()

    os.unlink(root / "connectome_dask.json")
    (root / "f" / "notes.txt").write_text("mine")  # anything else: not ours
    with pytest.raises(FileNotFoundError, match="not a connectome_dask cache"):
        HDF5Store(root)
    (tmp_path / "other" / "empty").mkdir(parents=True)  # an empty folder is not a field of ours either
    with pytest.raises(FileNotFoundError, match="not a connectome_dask cache"):
        HDF5Store(tmp_path / "other")


def test_foreign_or_newer_roots_are_refused(tmp_path):
    (tmp_path / "data.csv").write_text("x")
    with pytest.raises(FileNotFoundError, match="not a connectome_dask cache"):
        HDF5Store(tmp_path)
    root = tmp_path / "new"
    HDF5Store(root)
    (root / "connectome_dask.json").write_text('{"format": "connectome_dask.hdf5", "version": 99}')
    with pytest.raises(FileNotFoundError, match="upgrade"):
        HDF5Store(root)


def _create_root(path):
    HDF5Store(path)
    return True


def test_concurrent_root_creation(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(4, mp_context=ctx) as pool:
        assert all(pool.map(_create_root, [str(tmp_path / "shared")] * 8))


def test_unencodable_value_names_field_and_type_and_leaves_nothing(tmp_path):
    store = HDF5Store(tmp_path / "root")
    with pytest.raises(SerializationError, match="'handle'.*lock.*PickleSerializer"):
        store.set("handle", TOKENS[0], (1, threading.Lock()))
    leftovers = [f for _, _, files in os.walk(tmp_path / "root") for f in files if f != "connectome_dask.json"]
    assert leftovers == []


def test_serializer_policies(tmp_path):
    json_store = HDF5Store(tmp_path / "j", serializer=JsonSerializer())
    json_store.set("f", TOKENS[0], {"a": [1, 2.5, None]})
    with pytest.raises(SerializationError):
        json_store.set("f", TOKENS[1], np.ones(2))
    chained = HDF5Store(tmp_path / "c", serializer=[JsonSerializer(), NumpySerializer(compression=4)])
    chained.set("f", TOKENS[2], np.ones((100, 100)))
    assert chained.get("f", TOKENS[2]).sum() == 10000
    assert ChainSerializer(JsonSerializer(), PickleSerializer()).allow_pickle


def test_pickle_payload_is_refused_without_opt_in(tmp_path):
    HDF5Store(tmp_path / "root", serializer=PickleSerializer()).set("f", TOKENS[0], {1, 2})
    strict = HDF5Store(tmp_path / "root")
    with pytest.warns(CacheWarning, match="pickle"):
        assert strict.get("f", TOKENS[0]) is MISSING


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_entries_are_misses_with_one_warning(tmp_path, damage):
    store = HDF5Store(tmp_path / "root")
    value = np.random.default_rng(0).random((64, 64))
    store.set("image", TOKENS[0], value)
    store.set("image", TOKENS[1], value)
    for token in TOKENS[:2]:
        path = store.path("image", token)
        data = bytearray(open(path, "rb").read())
        if damage == "truncate":
            data = data[: len(data) // 2]
        else:
            data[len(data) // 2] ^= 0x10  # inside the array payload
        open(path, "wb").write(bytes(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert store.get("image", TOKENS[0]) is MISSING and store.get("image", TOKENS[1]) is MISSING
    assert len([w for w in caught if issubclass(w.category, CacheWarning)]) == 1
    store.set("image", TOKENS[0], value)
    np.testing.assert_array_equal(store.get("image", TOKENS[0]), value)


def test_unwritable_root_degrades_with_one_warning(tmp_path, monkeypatch):
    """Simulates a read-only or full file system: publishing files fails with EROFS (tests run as root,
    where chmod would not stop writes)."""
    store = HDF5Store(tmp_path / "root")
    store.set("f", TOKENS[0], 1)

    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(os, "replace", refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store.set("f", TOKENS[1], 2)
        store.set("f", TOKENS[2], 3)
    assert len([w for w in caught if issubclass(w.category, CacheWarning)]) == 1
    assert store.get("f", TOKENS[0]) == 1 and store.get("f", TOKENS[1]) is MISSING
    assert not list(store.temporaries())  # the failed writes cleaned up after themselves


def _writer(root, seed, n):
    store = HDF5Store(root)
    rng = random.Random(seed)
    for _ in range(n):
        i = rng.randrange(16)
        store.set("x", TOKENS[i], np.full((64, 64), i, np.int32))
    return True


def test_processes_populating_one_root(tmp_path):
    root = str(tmp_path / "root")
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(4, mp_context=ctx) as pool:
        assert all(pool.map(_writer, [root] * 4, range(4), [40] * 4))
    store = HDF5Store(root)
    for field, token, _, _, _ in store.entries():
        np.testing.assert_array_equal(store.get(field, token), np.full((64, 64), int(token, 16), np.int32))


KILLED_WRITER = """
import os, sys, numpy as np
from connectome_dask.cache.hdf5 import HDF5Store
store = HDF5Store(sys.argv[1])
i, parent = 0, os.getppid()
while os.getppid() == parent:  # until killed, or until the test process is gone
    store.set("big", f"{i % 8:032x}", np.full((256, 256, 16), i % 8, np.float32))
    i += 1
"""


@pytest.mark.slow
def test_writer_killed_mid_write_leaves_no_corrupt_entry(tmp_path):
    root = str(tmp_path / "root")
    HDF5Store(root)
    rng = random.Random(1)
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, root])
        time.sleep(0.8 + rng.random())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    store = HDF5Store(root)
    entries = list(store.entries())
    assert entries
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)  # a corrupt published entry would warn
        for field, token, _, _, _ in entries:
            assert (store.get(field, token) == int(token, 16)).all()
    store.set("big", TOKENS[0], np.zeros(3))
    assert store.get("big", TOKENS[0]).shape == (3,)


# --- the command line ---------------------------------------------------------------------------

def cli(*args):
    return subprocess.run([sys.executable, "-m", "connectome_dask", "cache", *map(str, args)],
                          capture_output=True, text=True)


def test_cli_list_verify_delete(tmp_path):
    root = tmp_path / "root"
    store = HDF5Store(root)
    for token in TOKENS[:3]:
        store.set("image", token, np.ones(10))
    store.set("mask", TOKENS[0], (1, "a"))
    out = cli(root, "list", "--json")
    assert out.returncode == 0
    import json

    summary = json.loads(out.stdout)
    assert summary["entries"] == 4 and summary["fields"]["image"]["entries"] == 3
    path = store.path("image", TOKENS[1])
    open(path, "r+b").truncate(100)
    out = cli(root, "verify")
    assert out.returncode == 1 and path in out.stdout
    assert cli(root, "verify", "--remove").returncode == 0 and cli(root, "verify").returncode == 0  # repaired
    out = cli(root, "delete", "--field", "image", "--dry-run")
    assert "2 entries to remove" in out.stdout and len(list(store.entries())) == 3
    assert cli(root, "delete", "--older-than", "1d").stdout.strip().endswith("0 entries removed")
    assert cli(root, "delete", "--all").returncode == 0 and list(store.entries()) == []
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    assert cli(tmp_path / "other", "list").returncode == 2


class LyingStore(DictStore):
    """Claims that its entries outlive the process."""

    persistent = True


class NoneForMissing(DictStore):
    def get(self, field, token):
        return self.mapping.get((field, token))


def test_the_suite_catches_stores_that_break_the_contract():
    suite = StoreTests()
    with pytest.raises(AssertionError, match="persistent = True"):
        suite.test_the_persistent_flag_is_honest(LyingStore())
    with pytest.raises(AssertionError):
        suite.test_get_of_a_missing_entry_is_missing(NoneForMissing())


def _docs_store():
    """The ``SqliteStore`` of docs/api.md, "Writing a store" (its first block, run as written)."""
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "api.md")) as f:
        section = f.read().split("## Writing a store")[1]
    namespace = {"__name__": "docs_store"}
    exec(section.split("```python\n")[1].split("```")[0], namespace)
    return namespace["SqliteStore"]


class TestTheStoreOfTheDocs(StoreTests):
    def make_store(self, tmp_path):
        return _docs_store()(tmp_path / "cache.db")

    def corrupt(self, store, field, token):
        import sqlite3

        with sqlite3.connect(store.path) as db:
            db.execute("UPDATE entries SET value = ? WHERE field = ? AND token = ?", (b"junk", field, token))
        return True


def test_importing_the_package_imports_neither_distributed_nor_pytest():
    code = ("import sys, connectome_dask, connectome_dask.cache.memory, connectome_dask.layers.columns; "
            "print(sorted(m for m in ('distributed', 'pytest', 's3fs', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
