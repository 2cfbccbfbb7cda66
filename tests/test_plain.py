"""Plain array entries written from templates (``connectome_dask.cache.plain``): the same bytes
HDF5 writes, read back by any HDF5 reader, a damaged patch a miss."""

import struct

import h5py
import numpy as np
import pytest

from connectome_dask.cache import plain
from connectome_dask.cache.encoding import Digest
from connectome_dask.cache.hdf5 import HDF5Store
from connectome_dask.cache.store import MISSING
from connectome_dask.exceptions import CacheWarning, StorageCorruption

VALUES = [np.arange(6.0).reshape(2, 3), np.arange(5, dtype=">f4"), np.array([True, False, True]),
          np.array([b"ab", b"c"]), np.arange(4).astype(np.complex128) * 1j, np.arange(7, dtype=np.int8),
          np.arange(2**10, dtype=np.uint64), np.random.default_rng(0).random((16, 32, 33)).astype(np.float32),
          np.ones((1,) * 32, np.int16), np.zeros((3, 70000), np.float16)]


def whole_file(arr, field, token):
    """The entry as HDF5 writes it, payload and all (the same property lists as the template)."""
    digest = Digest(field, token).dataset("array", {}, arr).words()
    return plain._write(arr.dtype, arr.shape, digest, arr)[0]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: f"{v.dtype.str}{v.shape}")
def test_an_entry_from_a_template_is_the_file_hdf5_writes(value):
    for field, token in [("image", "0" * 32), ("other field", "f" * 32)]:  # one template, every digest
        parts = plain.entry_parts(value, field, token)
        assert parts is not None, "no template for a plain array"
        assert b"".join(parts) == whole_file(value, field, token)


def test_hdf5_readers_read_entries_made_from_templates(tmp_path):
    store = HDF5Store(tmp_path / "cache")
    for i, value in enumerate(VALUES):
        store.set("f", f"{i:032x}", value)
        with h5py.File(store.path("f", f"{i:032x}"), "r") as f:  # h5py verifies every metadata checksum
            assert f["value"].dtype == value.dtype and (f["value"][()] == value).all()
            assert list(f.attrs["header"][:2]) == [2, 1] and f["value"].attrs["t"] == b"array"
        back = store.get("f", f"{i:032x}")
        assert back.dtype == value.dtype and back.shape == value.shape and (back == value).all()


def test_scalars_and_empty_arrays_have_no_template_and_are_stored_all_the_same(tmp_path):
    store = HDF5Store(tmp_path / "cache")
    for i, value in enumerate([np.array(5, np.uint8), np.zeros((0, 3), np.int16)]):
        assert plain.template(value.dtype, value.shape) is None
        store.set("f", f"{i:032x}", value)
        back = store.get("f", f"{i:032x}")
        assert back.dtype == value.dtype and back.shape == value.shape and (back == value).all()


def test_a_damaged_digest_or_checksum_of_a_template_entry_is_a_warned_miss(tmp_path):
    store = HDF5Store(tmp_path / "cache")
    value = np.arange(1000, dtype=np.float32)
    found = plain.template(value.dtype, value.shape)
    start, end = found.chunk
    for where in (found.digest_at, found.digest_at + 15, end, start + 4):  # digest words, checksum, chunk
        token = f"{where:032x}"
        store.set("f", token, value)
        path = store.path("f", token)
        with open(path, "r+b") as f:
            f.seek(where)
            byte = f.read(1)
            f.seek(where)
            f.write(bytes([byte[0] ^ 0x10]))
        store._warned.clear()
        with pytest.warns(CacheWarning, match="corrupt"):
            assert store.get("f", token) is MISSING
        store.set("f", token, value)  # replaced whole
        assert (store.get("f", token) == value).all()


def test_lookup3_is_hdf5s_metadata_checksum():
    # the values of Bob Jenkins' lookup3.c self-test, and the superblock checksum of a file HDF5 wrote
    assert plain.lookup3(b"") == 0xDEADBEEF
    assert plain.lookup3(b"Four score and seven years ago") == 0x17770551
    assert plain.lookup3(b"Four score and seven years ago", 1) == 0xCD628161
    written = plain._write(np.dtype("f8"), (3,))[0]
    assert written[8] == 3  # a version-3 superblock: its last four bytes checksum the 44 before
    assert plain.lookup3(written[:44]) == struct.unpack_from("<I", written, 44)[0]


@pytest.fixture
def fresh(monkeypatch):
    """The template registry of a process that has neither written nor read an entry yet."""
    monkeypatch.setattr(plain, "_TEMPLATES", {})
    monkeypatch.setattr(plain, "_SIZES", {})
    monkeypatch.setattr(plain, "_SEEN", set())
    made = []
    make = plain._make
    monkeypatch.setattr(plain, "_make", lambda dtype, shape: made.append((dtype, shape)) or make(dtype, shape))
    return made


def test_templates_are_made_once_per_dtype_and_shape(fresh):
    for value in (np.zeros((4, 4)), np.ones((4, 4)), np.zeros((4, 5)), np.zeros((4, 4), np.float32)):
        plain.entry_parts(value, "f", "0" * 32)
    assert fresh == [(np.dtype("f8"), (4, 4)), (np.dtype("f8"), (4, 5)), (np.dtype("f4"), (4, 4))]


def hdf5_reads(monkeypatch):
    from connectome_dask.cache import hdf5

    calls = []
    read_fid = hdf5._read_fid
    monkeypatch.setattr(hdf5, "_read_fid", lambda *a: calls.append(a[1:3]) or read_fid(*a))
    return calls


def test_a_reader_reads_template_entries_without_hdf5_once_it_has_read_two(tmp_path, monkeypatch, fresh):
    store = HDF5Store(tmp_path / "cache")
    values = [np.random.default_rng(i).random((8, 9)) for i in range(4)]
    for i, value in enumerate(values):
        store.set("f", f"{i:032x}", value)
    plain._TEMPLATES.clear(), plain._SIZES.clear()  # a new process reads them
    calls = hdf5_reads(monkeypatch)
    backs = [store.get("f", f"{i:032x}") for i in range(4)]
    assert calls == [("f", f"{0:032x}"), ("f", f"{1:032x}")]  # the second makes the template
    for back, value in zip(backs, values):
        assert (back == value).all() and back.flags.owndata and back.flags.writeable and back.dtype == value.dtype


def test_entries_that_differ_from_the_template_are_read_by_hdf5(tmp_path, monkeypatch, fresh):
    from connectome_dask.cache import hdf5

    store = HDF5Store(tmp_path / "cache")
    value = np.arange(12.0).reshape(3, 4)
    store.set("f", "a" * 32, value)  # the template of (f8, (3, 4)) exists
    with monkeypatch.context() as m:  # an entry of the same array written by h5py (as older versions did)
        m.setattr(hdf5, "_plain_parts", lambda value, field, token, compression: None)
        store.set("f", "b" * 32, value)
        store.set("f", "c" * 32, value.T.copy())  # the same size, another shape
    store.set("f", "d" * 32, value.reshape(4, 3))  # a template of the same size as (3, 4)'s
    calls = hdf5_reads(monkeypatch)
    tokens = ("a" * 32, "b" * 32, "c" * 32, "d" * 32)
    assert [store.get("f", t).shape for t in tokens] == [(3, 4), (3, 4), (4, 3), (4, 3)]
    assert calls == [("f", "b" * 32), ("f", "c" * 32)]
    assert (store.get("f", "d" * 32) == value.reshape(4, 3)).all()


def test_short_writes_and_reads_are_continued(tmp_path, monkeypatch):
    import os

    from connectome_dask.cache import hdf5

    write, readv = os.write, os.readv
    monkeypatch.setattr(hdf5.os, "write", lambda fd, data: write(fd, memoryview(data)[:1000]))
    monkeypatch.setattr(plain.os, "readv", lambda fd, buffers: readv(fd, [memoryview(buffers[0])[:777]]))
    store = HDF5Store(tmp_path / "cache")
    value = np.random.default_rng(1).random((30, 40))
    store.set("f", "a" * 32, value)
    assert os.path.getsize(store.path("f", "a" * 32)) == plain.template(value.dtype, value.shape).size
    assert (store.get("f", "a" * 32) == value).all()


def test_a_file_shorter_than_its_size_said_is_corrupt(tmp_path):
    store = HDF5Store(tmp_path / "cache")
    value = np.arange(100.0)
    store.set("f", "a" * 32, value)
    path = store.path("f", "a" * 32)
    size = plain.template(value.dtype, value.shape).size
    with open(path, "r+b") as f:  # truncated between the stat and the read
        f.truncate(size - 8)
    with pytest.raises(StorageCorruption, match="ended after"):
        plain.read(path, size, "f", "a" * 32)
