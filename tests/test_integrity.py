"""The HDF5 store against a hostile user: corrupted, crafted and planted entries, odd field names,
values it cannot hold, bad roots and markers (issue 15, the store's part)."""

import errno
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import textwrap
import time
import warnings

import h5py
import numpy as np
import pytest

from connectome_dask import CacheColumns, CacheToDisk, Source, meta
from connectome_dask.cache.hdf5 import MARKER, ForeignRoot, HDF5Store
from connectome_dask.cache.store import MISSING
from connectome_dask.exceptions import CacheWarning, FieldNameError, SerializationError, StoreError
from test_stores import TOKENS, same


def read(store, field, token):
    """``(value, CacheWarning messages)`` of one read."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = store.get(field, token)
    return value, [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]


def assert_warned_miss(store, field, token):
    value, warned = read(store, field, token)
    assert value is MISSING and len(warned) == 1, (value, warned)
    return warned[0]


# --- an entry is tied to what it claims to be ------------------------------------------------------

def test_an_entry_of_another_key_or_field_copied_or_linked_over_an_entry_is_a_miss(tmp_path):
    store = HDF5Store(tmp_path / "root")
    store.set("image", TOKENS[0], np.zeros(4))
    store.set("image", TOKENS[1], np.ones(4))
    store.set("mask", TOKENS[2], (1, "x"))
    store.set("label", TOKENS[3], (2, "y"))
    shutil.copyfile(store.path("image", TOKENS[1]), store.path("image", TOKENS[0]))  # another key
    assert "image" in assert_warned_miss(store, "image", TOKENS[0])
    os.unlink(store.path("mask", TOKENS[2]))
    os.symlink(store.path("label", TOKENS[3]), store.path("mask", TOKENS[2]))  # another field, same token layout
    os.makedirs(os.path.dirname(store.path("mask", TOKENS[3])), exist_ok=True)
    shutil.copyfile(store.path("label", TOKENS[3]), store.path("mask", TOKENS[3]))  # same token, other field
    assert_warned_miss(store, "mask", TOKENS[2])
    assert_warned_miss(HDF5Store(store.root), "mask", TOKENS[3])
    store.set("mask", TOKENS[2], (1, "x"))  # replaced: the link itself, not what it pointed to
    assert store.get("mask", TOKENS[2]) == (1, "x") and store.get("label", TOKENS[3]) == (2, "y")


def _rewrite_value(path, make):
    """Replace the dataset ``value`` by ``make(old)``, keeping its attributes and the header."""
    with h5py.File(path, "r+") as f:
        old, attrs = f["value"][()], dict(f["value"].attrs)
        del f["value"]
        f["value"] = make(old)
        f["value"].attrs.update(attrs)


def _complementary(a):
    words = a.view(np.uint64).copy()
    words[0, 0] += np.uint64(2)
    words[0, 1] -= np.uint64(2)
    return words.view(np.float64)


@pytest.mark.parametrize("edit", ["swap words", "complementary flips", "retype", "reshape", "raw dtype",
                                  "plain header over bytes"])
def test_edited_payloads_types_and_shapes_are_misses(tmp_path, edit):
    store = HDF5Store(tmp_path / "root")
    value = np.arange(16, dtype=np.float64).reshape(4, 4) * 1.5
    if edit == "raw dtype":
        value = np.array(["ab", "cd"])  # stored as raw bytes, its dtype in an attribute
    if edit == "plain header over bytes":
        value = b"\x00" * 64
    store.set("f", TOKENS[0], value)
    path = store.path("f", TOKENS[0])
    if edit == "swap words":  # blind spot of the old sum/xor checksum
        _rewrite_value(path, lambda a: a.reshape(-1)[[1, 0, *range(2, 16)]].reshape(4, 4))
    elif edit == "complementary flips":  # +1 in one word, -1 in another: the sum is unchanged
        _rewrite_value(path, _complementary)
    elif edit == "retype":
        _rewrite_value(path, lambda a: a.view(np.int64))
    elif edit == "reshape":
        _rewrite_value(path, lambda a: a.reshape(2, 8))
    elif edit == "raw dtype":
        with h5py.File(path, "r+") as f:
            f["value"].attrs["dtype"] = np.bytes_(b"<i8")  # the same bytes as int64
    else:  # the "plain" flag set over a bytes entry: its uint8 payload must not come back as an array
        with h5py.File(path, "r+") as f:
            header = f.attrs["header"]
            header[1] = 1
            f.attrs["header"] = header
    assert_warned_miss(store, "f", TOKENS[0])
    store.set("f", TOKENS[0], value)
    assert same(store.get("f", TOKENS[0]), value)


def test_entries_of_format_1_are_misses_and_replaced(tmp_path):
    """Version 1 kept type tags as variable-length strings (an unchecksummed heap): its entries are
    never decoded, only recognised by their header, and its marker is upgraded."""
    root = tmp_path / "root"
    HDF5Store(root)
    (root / MARKER).write_text(json.dumps({"format": "connectome_dask.hdf5", "version": 1}))
    store = HDF5Store(root)
    assert json.loads((root / MARKER).read_text())["version"] == 2
    path = store.path("f", TOKENS[0])
    os.makedirs(os.path.dirname(path))
    with h5py.File(path, "w") as f:  # what version 1 wrote
        f["value"] = np.arange(3)
        f["value"].attrs["t"] = "array"
        f.attrs["header"] = np.array([12345, 1], np.int64)
    assert "older" in assert_warned_miss(store, "f", TOKENS[0])
    store.set("f", TOKENS[0], np.arange(3))
    assert same(store.get("f", TOKENS[0]), np.arange(3))


FIFO_READER = """
import sys, warnings
from connectome_dask.cache.hdf5 import HDF5Store
store = HDF5Store(sys.argv[1], create=False)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    print(store.get("f", sys.argv[2]) is store.get("g", sys.argv[2]), store.contains("f", sys.argv[2]), len(caught))
"""


def test_a_fifo_planted_at_an_entry_path_does_not_block_the_reader(tmp_path):
    store = HDF5Store(tmp_path / "root")
    store.set("f", TOKENS[0], 1)
    os.unlink(store.path("f", TOKENS[0]))
    os.mkfifo(store.path("f", TOKENS[0]))
    out = subprocess.run([sys.executable, "-c", FIFO_READER, store.root, TOKENS[0]], capture_output=True,
                         text=True, timeout=60)  # opening the FIFO would block forever
    assert out.stdout.split() == ["True", "False", "1"], out.stderr  # a miss (MISSING is MISSING), one warning
    store.set("f", TOKENS[0], 2)  # replaced by a regular file
    assert store.get("f", TOKENS[0]) == 2


# --- the fuzz: every byte of one entry of each kind, two patterns -----------------------------------

class Labels(Source):
    @meta
    def ids():
        return [0, 1, 2, 3]

    def label(i):
        return ("abc"[i % 3], i * 1.5)


def _fuzz_entries(tmp_path):
    """``[(kind, root, field, token, value)]``: one entry of each kind the store writes."""
    plain, packed = HDF5Store(tmp_path / "plain"), HDF5Store(tmp_path / "packed", compression="gzip")
    entries = [
        ("plain array", plain, "f", TOKENS[0], np.arange(24, dtype=np.float32).reshape(4, 6)),
        ("compressed array", packed, "f", TOKENS[1], np.tile(np.arange(8, dtype=np.int32), 256)),
        ("tuple/dict", plain, "f", TOKENS[2], ({"a": (1, "x"), 2: [np.int8(3), None]}, b"\x01")),
        ("scalar", plain, "f", TOKENS[3], 2.5),
    ]
    for _, store, field, token, value in entries:
        store.set(field, token, value)
    ds = Labels() >> CacheColumns.simple("label", root=tmp_path / "shards")
    assert ds.label(2) == ("c", 3.0)
    (field, token, _, _, _), = HDF5Store(tmp_path / "shards").entries()
    shard = HDF5Store(tmp_path / "shards").get(field, token)
    assert shard == tuple(("abc"[i % 3], i * 1.5) for i in range(4))
    entries.append(("shard", HDF5Store(tmp_path / "shards"), field, token, shard))
    return [(kind, store.root, field, token, value) for kind, store, field, token, value in entries]


def _fuzz_child(entries, progress, result):
    """Flip every byte of each entry (xor 0xff, then xor 0x01), read it with a fresh store each time,
    and write what happened; ``progress`` names the read in flight (for a hang)."""
    report = {}
    with open(progress, "r+b") as mark:
        for kind, root, field, token, expected in entries:
            path = HDF5Store(root, create=False).path(field, token)
            original = open(path, "rb").read()
            counts = {"right": 0, "warned miss": 0}
            failures, slowest = [], 0.0
            fd = os.open(path, os.O_WRONLY)
            try:
                for offset in range(len(original)):
                    for pattern in (0xFF, 0x01):
                        os.pwrite(fd, bytes([original[offset] ^ pattern]), offset)
                        mark.seek(0)
                        mark.write(f"{kind}: byte {offset} ^ {pattern:#x}".ljust(64).encode())
                        mark.flush()
                        start = time.perf_counter()
                        try:
                            value, warned = read(HDF5Store(root, create=False), field, token)
                        except Exception as e:  # noqa: BLE001 - reported
                            value, warned = e, []
                        slowest = max(slowest, time.perf_counter() - start)
                        if value is MISSING and len(warned) == 1:
                            counts["warned miss"] += 1
                        elif not warned and same(value, expected):
                            counts["right"] += 1
                        else:
                            failures.append(f"byte {offset} ^ {pattern:#x}: {value!r:.80} {warned}")
                    os.pwrite(fd, original[offset:offset + 1], offset)
            finally:
                os.close(fd)
            report[kind] = dict(counts, bytes=len(original), slowest=slowest, failures=failures[:10])
    with open(result, "w") as f:
        json.dump(report, f)


@pytest.mark.slow
def test_every_flipped_byte_of_every_kind_of_entry_reads_right_or_is_a_warned_miss(tmp_path):
    entries = _fuzz_entries(tmp_path)
    progress, result = tmp_path / "progress", tmp_path / "result.json"
    progress.write_bytes(b"starting".ljust(64))
    child = multiprocessing.get_context("spawn").Process(target=_fuzz_child, args=(entries, progress, result))
    child.start()
    last, since = None, time.monotonic()
    while child.is_alive():
        child.join(1)
        now = progress.read_bytes()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 20:  # one read stuck (20 s, not 1 s: the machine may be loaded)
            child.kill()
            child.join()
            pytest.fail(f"a read hung: {now.decode().strip()}")
    assert child.exitcode == 0
    report = json.loads(result.read_text())
    assert sorted(report) == sorted(kind for kind, *_ in entries)
    for kind, outcome in report.items():
        assert outcome["failures"] == [], (kind, outcome)
        assert outcome["right"] + outcome["warned miss"] == 2 * outcome["bytes"]
        assert outcome["warned miss"] > outcome["bytes"] // 4, (kind, outcome)  # flips are noticed, not ignored
        assert outcome["slowest"] < 1.0, (kind, outcome)


# --- field names are folder names --------------------------------------------------------------

BAD_NAMES = ["../x", "/abs/path", "..", ".", ".hidden", "a/b", "a\\b", "", "nul\x00name", "x" * 256,
             "é" * 128, MARKER, "\ud800"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_field_names_that_cannot_be_folders_are_refused_at_construction(tmp_path, name):
    root = tmp_path / "deep" / "root"
    with pytest.raises(FieldNameError, match="CacheToDisk: the field name .* cannot name a folder") as info:
        CacheToDisk(root, [name, "ok"])
    assert isinstance(info.value, ValueError)
    with pytest.raises(FieldNameError, match="CacheColumns"):
        CacheColumns.simple(name, root=root)
    store = HDF5Store(root)
    with pytest.raises(FieldNameError):
        store.set(name, TOKENS[0], 1)
    with pytest.raises(FieldNameError):
        store.get(name, TOKENS[0])
    inside = {os.path.relpath(os.path.join(d, f), tmp_path) for d, _, files in os.walk(tmp_path) for f in files}
    assert inside == {os.path.join("deep", "root", MARKER)}


def test_names_that_are_folders_work(tmp_path):
    store = HDF5Store(tmp_path / "root")
    for name in ["image", "x" * 255, "é" * 127, "with space", "a.b", "ünïcode_名前"]:
        store.set(name, TOKENS[0], name)
        assert store.get(name, TOKENS[0]) == name
    assert sorted(field for field, *_ in store.entries()) == \
        sorted(["image", "x" * 255, "é" * 127, "with space", "a.b", "ünïcode_名前"])


# --- values the store accepts are values it reads back exactly ------------------------------------

STRUCTURED = [
    np.array([(1.5, 2), (-1.0, 7)], dtype=[("x", "<f4"), ("y", "<i8")]),
    np.zeros(3, np.dtype({"names": ["a", "b"], "formats": ["<i2", "<f8"], "offsets": [0, 8], "itemsize": 16})),
    np.array([((3,), [1.0, 2.0], b"ab")], dtype=[("p", [("q", "<i4")]), ("s", "<f4", (2,)), ("t", "S2")]),
    np.array([(1, 2.0)], dtype=[("big", ">i4"), ("f", ">f8")]),
    np.array([(1, 2.0)], dtype=[("x", "<i4"), ("y", "<f8")])[0],  # a structured scalar (np.void)
]


def test_structured_arrays_round_trip_with_their_fields(tmp_path):
    store = HDF5Store(tmp_path / "root", compression="gzip")
    STRUCTURED[1]["a"], STRUCTURED[1]["b"] = [1, 2, 3], [0.5, 1.5, 2.5]
    for token, value in zip(TOKENS, STRUCTURED + [np.zeros(2000, STRUCTURED[0].dtype)]):
        store.set("f", token, value)
        back, warned = read(store, "f", token)
        assert not warned and type(back) is type(value) and back.dtype == value.dtype and back.dtype.names
        assert back.tobytes() == value.tobytes() or all(np.array_equal(back[n], value[n]) for n in value.dtype.names)
    with h5py.File(store.path("f", TOKENS[0]), "r") as f:  # a compound dataset any HDF5 reader sees with fields
        assert f["value"].dtype.names == ("x", "y")


def test_extended_precision_floats_round_trip_exactly(tmp_path):
    store = HDF5Store(tmp_path / "root")
    for token, value in zip(TOKENS, [np.float128(1) / 3, np.array([1, 2], np.float128) / 7,
                                     np.array([1j], np.complex256) / 3]):
        store.set("f", token, value)
        back, warned = read(store, "f", token)
        assert not warned and type(back) is type(value) and back.dtype == value.dtype
        assert back.tobytes() == value.tobytes() or np.array_equal(back, value)


def _nested(depth):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("value, what", [
    (_nested(300), "nested more than 100 deep"), (_nested(2000), "nested more than 100 deep"),
    ({"a": _nested(150)}, "nested"), (10**5000, "an int of 16610 bits"), (-(2**9000), "an int of 9001 bits"),
    (np.zeros((1,) * 33), "33 dimensions"), (np.array(["a"]).reshape((1,) * 32), "33 dimensions"),
    (np.zeros(2, [("s", "<U3"), ("x", "<i4")]), "structured array"),
], ids=["list 300 deep", "list 2000 deep", "dict of a list 150 deep", "10**5000", "-2**9000", "33-d array",
        "32-d str array", "structured with str"])
def test_values_that_would_not_read_back_are_refused_at_write(tmp_path, value, what):
    store = HDF5Store(tmp_path / "root")
    with pytest.raises(SerializationError, match=f"field 'deep'.*{what}"):
        store.set("deep", TOKENS[0], value)
    assert store.get("deep", TOKENS[0]) is MISSING and list(store.entries()) == [] and list(store.temporaries()) == []
    store.set("deep", TOKENS[0], _nested(100))  # the limits are where they say
    store.set("deep", TOKENS[1], 2**8191)
    store.set("deep", TOKENS[2], np.zeros((1,) * 32))
    assert store.get("deep", TOKENS[0]) == _nested(100) and store.get("deep", TOKENS[1]) == 2**8191
    assert store.get("deep", TOKENS[2]).shape == (1,) * 32


# --- roots and markers ---------------------------------------------------------------------------

@pytest.mark.parametrize("marker", ["[]", "null", '"x"', "3", '{"format": "connectome_dask.hdf5", "version": "2"}',
                                    '{"format": "connectome_dask.hdf5", "version": true}', '{"format": "other"}',
                                    "{not json"])
def test_bad_markers_are_typed_errors_saying_what_to_do(tmp_path, marker):
    root = tmp_path / "root"
    HDF5Store(root)
    (root / MARKER).write_text(marker)
    with pytest.raises(ForeignRoot, match=f"marker.*write .*connectome_dask.hdf5.* into .*{MARKER}"):
        HDF5Store(root)
    with pytest.raises(StoreError):
        CacheToDisk(root, ["f"])


def test_bad_roots_are_typed_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file, not a folder"):
        HDF5Store(tmp_path / "file")
    with pytest.raises(StoreError, match=f"{tmp_path / 'file'} is a file, not a folder"):
        HDF5Store(tmp_path / "file" / "under" / "it")
    with pytest.raises(StoreError, match="NUL"):
        HDF5Store(str(tmp_path / "nul\x00root"))
    root = tmp_path / "lost"
    store = HDF5Store(root)
    store.set("f", TOKENS[0], 1)
    os.unlink(root / MARKER)
    (root / "notes.txt").write_text("mine")
    with pytest.raises(ForeignRoot, match=f"marker {MARKER} is missing"):  # not "choose an empty folder"
        HDF5Store(root)


def test_a_new_root_on_a_read_only_file_system_computes_with_one_warning(tmp_path, monkeypatch, counter):
    """Simulated (tests run as root, where permissions do not stop writes): every folder creation
    fails with EROFS, as on a read-only mount."""
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    class Numbers(Source):
        @meta
        def ids():
            return [1, 2]

        def value(i):
            counter("value")
            return np.full(3, i)

    monkeypatch.setattr(os, "makedirs", refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = Numbers() >> CacheToDisk.simple("value", root=tmp_path / "ro" / "cache")
        assert [ds.value(i).tolist() for i in (1, 2, 1)] == [[1] * 3, [2] * 3, [1] * 3]
    assert [str(w.message) for w in caught if issubclass(w.category, CacheWarning)] == [
        f"cannot create the cache root {tmp_path / 'ro' / 'cache'} ([Errno 30] Read-only file system); "
        "values are computed but not stored"]
    assert counter.count("value") == 3 and not (tmp_path / "ro").exists()



def test_a_crafted_entry_of_variable_length_data_is_a_miss_without_reading_it(tmp_path):
    store = HDF5Store(tmp_path / "root")
    store.set("f", TOKENS[0], "text")
    store.set("f", TOKENS[1], np.arange(3))
    for token in TOKENS[:2]:
        with h5py.File(store.path("f", token), "r+") as f:
            attrs = dict(f["value"].attrs)
            del f["value"]
            f["value"] = np.array(["text"], dtype=h5py.string_dtype())  # kept in the global heap
            f["value"].attrs.update(attrs)
    assert "variable-length data" in assert_warned_miss(store, "f", TOKENS[0])  # the general decoder
    assert "not a plain array" in assert_warned_miss(HDF5Store(store.root), "f", TOKENS[1])  # the fast path


def test_listing_tolerates_entries_deleted_while_it_runs(tmp_path):
    store = HDF5Store(tmp_path / "root")
    for token in TOKENS[:3]:  # one fan-out folder: listed at once, each entry stat'ed as it is reached
        store.set("f", token, 1)
    listing = store.entries()
    first = next(listing)
    for token in TOKENS[:3]:
        if token != first[1]:
            store.delete("f", token)  # a concurrent `cache delete`
    assert list(listing) == []


def test_folders_that_cannot_be_fields_are_not_listed(tmp_path):
    store = HDF5Store(tmp_path / "root")
    store.set("f", TOKENS[0], 1)
    planted = tmp_path / "root" / ".hidden" / "0"
    planted.mkdir(parents=True)
    shutil.copyfile(store.path("f", TOKENS[0]), planted / f"{TOKENS[0]}.h5")
    assert [(field, token) for field, token, *_ in store.entries()] == [("f", TOKENS[0])]


# --- parameters are frozen when the pipeline is built ------------------------------------------------


SHIFTS = {"all": np.zeros(3)}


class Weighted(Source):
    _weights: np.ndarray
    _shifts: dict = SHIFTS

    @meta
    def ids():
        return ["a", "b"]

    def total(id, _weights, _shifts):
        return float((_weights + _shifts["all"]).sum()) + len(id)

    def weights(id, _weights):
        return _weights


def test_an_array_parameter_changed_in_place_after_building_changes_neither_value_nor_key(tmp_path):
    weights = np.array([1.0, 2.0, 3.0])
    cached = Weighted(weights=weights) >> CacheToDisk(tmp_path / "root", ["total"])
    key = cached.total.delayed("a").key
    weights[0] = 100.0  # in place, after the pipeline was built, before anything was computed
    assert cached.total("a") == 7.0 and cached.total.delayed("a").key == key
    again = Weighted(weights=np.array([1.0, 2.0, 3.0])) >> CacheToDisk(tmp_path / "root", ["total"])
    assert again.total.delayed("a").key == key and again.total("a") == 7.0  # the entry means what its key says
    changed = Weighted(weights=weights)
    assert changed.total.delayed("a").key != key and changed.total("a") == 106.0  # the new array: a new key
    inside = Weighted(weights=weights).weights("a")
    assert not inside.flags.writeable and inside is not weights and weights.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        inside[0] = 0
    SHIFTS["all"] += 1  # an array in a default, changed in place after the layer was built
    assert cached.total("b") == 7.0 and Weighted(weights=np.array([1.0, 2.0, 3.0])).total("b") == 10.0


# --- keys and enums: equal keys name one entry, unequal ones never share it ----------------------------

MODES = '''
import enum

class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2

class Color(str, enum.Enum):
    RED = "red"

class Access(enum.Flag):
    READ = 1
    WRITE = 2

class Mode(enum.Enum):
    FAST = 1

class Speed(enum.Enum):
    FAST = 1
'''

KEYS = '''
import sys
sys.path.insert(0, sys.argv[1])
import modes
from connectome_dask import Source

class Tuned(Source):
    _mode: object

    def value(id, _mode):
        return (id, _mode)

members = [modes.Level.LOW, modes.Level.HIGH, modes.Color.RED, modes.Access.READ,
           modes.Access.READ | modes.Access.WRITE, modes.Mode.FAST, modes.Speed.FAST]
print(" ".join(Tuned(mode=m).value.delayed("a").key for m in members))
'''


def test_enum_parameters_hash_by_class_and_value(tmp_path):
    (tmp_path / "modes.py").write_text(MODES)
    (tmp_path / "keys.py").write_text(KEYS)

    def keys(seed):
        out = subprocess.run([sys.executable, str(tmp_path / "keys.py"), str(tmp_path)], capture_output=True,
                             text=True, check=True, env={**os.environ, "PYTHONHASHSEED": seed})
        return out.stdout.split()

    first = keys("1")
    assert len(set(first)) == 7  # members, classes with equal values (Mode.FAST, Speed.FAST): all apart
    assert keys("2") == first  # another process, another hash seed: the same keys
    (tmp_path / "modes.py").write_text(MODES.replace("HIGH = 2", "HIGH = 3"))
    edited = keys("1")
    assert edited[0] != first[0] and edited[1] != first[1]  # the edited class: new keys for its members
    assert edited[2:] == first[2:]


def test_numpy_scalar_keys_name_the_entries_of_the_python_scalars_they_equal(tmp_path, counter):
    class Echo(Source):
        _count: object

        @meta
        def ids():
            return np.arange(3)

        def echo(id, _count):
            _count(f"{id!r}")
            return f"{id}"

    root = tmp_path / "root"
    ds = Echo(count=counter) >> CacheToDisk(root, ["echo"])
    equal = [(np.int64(1), 1), (np.uint8(2), 2), (np.str_("a"), "a"), (np.float64(0.5), 0.5),
             (np.float32(0.25), 0.25), (np.bool_(True), True)]
    assert ds.echo.delayed((np.int64(4), np.str_("b"))).key == ds.echo.delayed((4, "b")).key  # inside keys too
    for numpy_key, python_key in equal:
        assert ds.echo.delayed(numpy_key).key == ds.echo.delayed(python_key).key
        assert ds.echo(numpy_key) == ds.echo(python_key) == f"{python_key}"
    assert counter.count() == len(equal)  # the Python key read the entry its NumPy twin stored
    assert len(list(HDF5Store(root).entries())) == len(equal)
    assert ds.echo(ds.ids[0]) == ds.echo(0) == "0" and counter.count() == len(equal) + 1  # an id as `ids` yields it
    apart = [3, 3.0, True, 1, np.float32(0.1), 0.1, "3", b"3"]  # equal or not, their code sees them differently
    assert [ds.echo(key) for key in apart] == [f"{key}" for key in apart]
    assert len({ds.echo.delayed(key).key for key in apart}) == len(apart)
