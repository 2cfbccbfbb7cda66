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
from connectome_dask.exceptions import CacheWarning

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


def test_templates_are_made_once_per_dtype_and_shape():
    plain.template.cache_clear()
    for value in (np.zeros((4, 4)), np.ones((4, 4)), np.zeros((4, 5)), np.zeros((4, 4), np.float32)):
        plain.entry_parts(value, "f", "0" * 32)
    info = plain.template.cache_info()
    assert (info.misses, info.hits) == (3, 1)
