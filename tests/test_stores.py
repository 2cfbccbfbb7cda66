"""One conformance suite every store passes, plus the HDF5 store's encoding and reliability."""

import collections
import concurrent.futures
import datetime
import decimal
import multiprocessing
import os
import pathlib
import pickle
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import typing
import uuid
import warnings
import zoneinfo

import cloudpickle
import h5py
import numpy as np
import pytest

from connectome_dask.cache.hdf5 import HDF5Store
from connectome_dask.cache.memory import MemoryStore
from connectome_dask.cache.store import MISSING, DictStore, as_store
from connectome_dask.exceptions import CacheWarning, SerializationError
from connectome_dask.serializers import ChainSerializer, JsonSerializer, NumpySerializer, PickleSerializer

TOKENS = [f"{i:032x}" for i in range(64)]

ZOO = [
    None, True, False, 0, -7, 2**100, -(2**70), 1.5, float("inf"), 2j, "", "héllo\x00world", b"", b"\x00\xff",
    (), [], {}, (1, [2, {3: (4, "x")}]), {2: "int key", "b": 2, None: 3, (1, "x"): 4, 2.5: 5, False: 6},
    np.arange(12, dtype=np.int16).reshape(3, 4), np.zeros((2, 0), np.float32), np.array(["ab", "c"]),
    np.array([b"x", b"yz"]), np.array([True, False]), np.float32(1.5), np.int8(-3), np.bool_(True), np.array(4.0),
    np.array(["2020-01-01"], dtype="datetime64[D]"), np.arange(10)[::3], np.array([1, 2], ">i4"),
    {"image": np.ones((2, 2), np.float64), "meta": ("spacing", [1.0, 1.0])},
    datetime.date(2020, 1, 2), datetime.datetime(2020, 1, 2, 3, 4, 5, 6),
    datetime.datetime(2020, 1, 2, 3, 4, tzinfo=datetime.timezone(datetime.timedelta(hours=-5, minutes=-30))),
    datetime.time(23, 59, 59, 999999), datetime.time(8, tzinfo=datetime.timezone.utc),
    datetime.timedelta(days=-3, seconds=5, microseconds=1), datetime.timedelta.max, decimal.Decimal("-1.10E-3"),
    decimal.Decimal("NaN"), pathlib.PurePosixPath("/data/ct"), pathlib.PureWindowsPath(r"C:\data\ct"),
    pathlib.Path("rel/ative"), uuid.UUID("12345678-1234-5678-1234-567812345678"),
    np.datetime64("2020-01-01T01:02:03.5"), np.datetime64("NaT", "s"), np.timedelta64(-5, "ms"),
    np.array([1, 2], ">m8[s]"), np.array([["2020-01", "NaT"]], "datetime64[M]"),
    {datetime.date(2020, 1, 1): [decimal.Decimal(1), uuid.UUID(int=1)]},
]


def same(a, b):
    """Equality that also compares types and dtypes, recursively."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (np.ndarray, np.generic)) and a.dtype.kind in "Mm":  # NaT != NaT: compare the counts
        return a.dtype == b.dtype and np.shape(a) == np.shape(b) and np.asarray(a).tobytes() == np.asarray(b).tobytes()
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, np.generic):
        return a.dtype == b.dtype and a == b
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(map(type, a)) == list(map(type, b)) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b or (a != a and b != b)


class StoreTests:
    def make_store(self, tmp_path):
        raise NotImplementedError

    def test_miss(self, tmp_path):
        store = self.make_store(tmp_path)
        assert store.get("f", TOKENS[0]) is MISSING and not store.contains("f", TOKENS[0])

    def test_round_trip_of_the_value_zoo(self, tmp_path):
        store = self.make_store(tmp_path)
        for token, value in zip(TOKENS, ZOO):
            store.set("f", token, value)
            assert store.contains("f", token)
            assert same(store.get("f", token), value), value

    def test_fields_are_separate_and_overwrite_is_idempotent(self, tmp_path):
        store = self.make_store(tmp_path)
        store.set("a", TOKENS[1], 1)
        store.set("a", TOKENS[1], 1)
        assert store.get("a", TOKENS[1]) == 1 and store.get("b", TOKENS[1]) is MISSING

    def test_pickles_as_configuration(self, tmp_path):
        store = self.make_store(tmp_path)
        store.set("a", TOKENS[2], [1, 2])
        clone = pickle.loads(pickle.dumps(store))
        clone.set("a", TOKENS[3], "x")
        assert clone.get("a", TOKENS[3]) == "x"

    def test_threads_hammering_overlapping_tokens(self, tmp_path):
        store = self.make_store(tmp_path)

        def work(seed):
            rng = random.Random(seed)
            for _ in range(40):
                token = rng.choice(TOKENS[:8])
                store.set("t", token, np.full(100, int(token, 16)))
                value = store.get("t", token)
                assert value is MISSING or (value == int(token, 16)).all()

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(work, range(8)))


class TestMemoryStore(StoreTests):
    def make_store(self, tmp_path):
        return MemoryStore()

    def test_lru_per_field_and_bytes_bound(self):
        store = MemoryStore(size=2)
        for token in ("a", "b", "a", "b", "c"):
            if store.get("f", token) is MISSING:
                store.set("f", token, token)
        assert [store.contains("f", t) for t in "abc"] == [False, True, True]
        small = MemoryStore(max_bytes=1000)
        small.set("f", "x", np.zeros(100))  # 800 bytes
        small.set("g", "y", np.zeros(100))  # evicts x
        assert not small.contains("f", "x") and small.contains("g", "y") and small.nbytes <= 1000
        big = np.zeros(1000)
        small.set("f", "z", big)  # larger than the bound: not kept
        assert not small.contains("f", "z")

    def test_hit_returns_the_stored_object(self):
        store, value = MemoryStore(), [1]
        store.set("f", "x", value)
        assert store.get("f", "x") is value


class TestDictStore(StoreTests):
    def make_store(self, tmp_path):
        return as_store({})


class TestHDF5Store(StoreTests):
    def make_store(self, tmp_path):
        return HDF5Store(tmp_path / "root")


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
    """Plain arrays are written with h5py's low-level API: the files hold what the general encoder
    writes, and read back exactly."""
    from connectome_dask.cache import hdf5

    fast = HDF5Store(tmp_path / "fast", compression=compression)
    for i, value in enumerate(PLAIN):
        fast.set("f", TOKENS[i], value)
    monkeypatch.setattr(hdf5, "_is_plain", lambda value, compression: False)
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
