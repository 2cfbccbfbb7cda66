"""``HDF5Store``: the persistent cache, one immutable HDF5 file per entry.

Layout of a root::

    root/connectome_dask.json          format marker {"format": "connectome_dask.hdf5", "version": 1}
    root/<field>/<token[0]>/<token>.h5

An entry file holds the node ``value`` (see ``encoding``) and the root attribute ``header``
(the checksum, and whether ``value`` is a plain array read by the fast path); any HDF5 tool (``h5ls``, ``h5py``, HDFView) can read it.

Writes go to a temporary file in the entry's folder (``.<token>.<random>.tmp``), which is then
published with ``os.replace``: concurrent writers (threads, processes, dask workers on a shared
file system) publish whole files only, the last one wins with identical content, and a writer
killed at any moment leaves at most a temporary file, which readers never open (the CLI removes
stale ones). Data is not fsynced: after an OS crash an entry may be lost or torn, and the checksum
turns a torn entry into a miss. Readers open with HDF5 file locking off (entries are immutable)
and never keep handles. A corrupt entry (unreadable, truncated, checksum mismatch) is a miss with
one ``CacheWarning``; a root that cannot be written degrades to computing, with one warning per
cause. Root creation is itself atomic (the marker is written through a temporary file).
"""

import json
import os
import uuid
import warnings

import numpy as np

from ..exceptions import CacheWarning, StorageCorruption, StoreError
from .store import MISSING, Store

__all__ = ["HDF5Store", "ForeignRoot", "MARKER"]

MARKER = "connectome_dask.json"
FORMAT = {"format": "connectome_dask.hdf5", "version": 1}


class ForeignRoot(StoreError, FileNotFoundError):
    """The folder holds files that are not a connectome_dask cache."""


def _h5py():
    import h5py

    return h5py


class HDF5Store(Store):
    """Entries as HDF5 files under ``root``. ``serializer``: a ``connectome_dask.serializers``
    policy or a sequence of them (default: native types only, never pickle)."""

    def __init__(self, root, *, compression=None, serializer=None, create=True):
        from ..serializers import as_policy

        self.root = os.path.abspath(os.fspath(root))
        self.compression, self.serializer = compression, serializer
        self._policy = as_policy(serializer)
        self._warned = set()
        if create:
            _open_root(self.root)

    def __reduce__(self):
        return _store, (self.root, self.compression, self.serializer)

    def __repr__(self):
        return f"HDF5Store({self.root!r})"

    def path(self, field, token):
        return os.path.join(self.root, field, token[:1], token + ".h5")

    def contains(self, field, token):
        return os.path.exists(self.path(field, token))

    def get(self, field, token):
        path = self.path(field, token)
        try:
            return _read(path, self._policy.allow_pickle)
        except FileNotFoundError:
            return MISSING
        except Exception as e:  # noqa: BLE001 - any unreadable entry is a miss, never a crash
            self._warn(("corrupt", field), f"cache entry {path} of field {field!r} is corrupt ({type(e).__name__}: "
                                           f"{e}); it is recomputed and replaced")
            return MISSING

    def set(self, field, token, value):
        from .encoding import encode

        self._policy.check(field, value)
        path = self.path(field, token)
        folder = os.path.dirname(path)
        tmp = os.path.join(folder, f".{token}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            if not os.path.isdir(folder):
                os.makedirs(folder, exist_ok=True)
            try:
                with _h5py().File(tmp, "w", locking=False, libver="latest") as f:
                    checksum, plain = encode(f, value, field, self._policy.compression(self.compression),
                                             self._policy.allow_pickle)
                    f.attrs["header"] = np.array([checksum, int(plain)], np.int64)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as e:
            self._warn(("write", type(e).__name__, e.errno),
                       f"cannot write to the cache root {self.root} ({e}); values are computed but not stored")

    def _warn(self, cause, message):
        if cause not in self._warned:
            self._warned.add(cause)
            warnings.warn(message, CacheWarning, stacklevel=4)

    def entries(self):
        """``(field, token, path, size, mtime)`` of every entry, without opening any file."""
        for field in _scandir(self.root):
            if not field.is_dir():
                continue
            for prefix in _scandir(field.path):
                if not prefix.is_dir():
                    continue
                for entry in _scandir(prefix.path):
                    if entry.name.endswith(".h5") and not entry.name.startswith("."):
                        stat = entry.stat()
                        yield field.name, entry.name[:-3], entry.path, stat.st_size, stat.st_mtime

    def temporaries(self):
        """Paths of temporary files left by killed writers."""
        for field in _scandir(self.root):
            if field.is_dir():
                for prefix in _scandir(field.path):
                    if prefix.is_dir():
                        yield from (e.path for e in _scandir(prefix.path) if e.name.endswith(".tmp"))

    def verify(self, field, token):
        """Whether the entry reads back with a valid checksum."""
        self._warned.add(("corrupt", field))  # verification reports, it does not warn
        return self.get(field, token) is not MISSING

    def delete(self, field, token):
        try:
            os.unlink(self.path(field, token))
        except FileNotFoundError:
            pass


def _read(path, allow_pickle):
    """Decode an entry. Plain uncompressed arrays (the common case) take h5py's low-level API,
    which saves most of the per-file overhead of the high-level one."""
    h5py = _h5py()
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_file_locking(False, True)
    try:
        fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY, fapl=fapl)
    except OSError:
        if not os.path.exists(path):
            raise FileNotFoundError(path) from None
        raise
    try:
        attr = h5py.h5a.open(fid, b"header")
        header = np.empty(2, np.int64)
        attr.read(header)
        if header[1]:
            from .encoding import checksum_of

            dataset = h5py.h5d.open(fid, b"value")
            value = np.empty(dataset.shape, dataset.dtype)
            if value.size:
                dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, value)
            checksum = checksum_of("array", value)
        else:
            from .encoding import decode

            value, checksum = decode(h5py.File(fid), allow_pickle)
        if checksum != header[0]:
            raise StorageCorruption("checksum mismatch")
        return value
    finally:
        fid.close()


def _store(root, compression, serializer):
    return HDF5Store(root, compression=compression, serializer=serializer, create=False)


def _scandir(path):
    try:
        return list(os.scandir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _open_root(root):
    marker = os.path.join(root, MARKER)
    if os.path.exists(marker):
        try:
            with open(marker) as f:
                found = json.load(f)
        except (OSError, ValueError) as e:
            raise ForeignRoot(f"{root}: unreadable cache marker {MARKER} ({e})") from None
        if found.get("format") != FORMAT["format"] or found.get("version", 0) > FORMAT["version"]:
            raise ForeignRoot(f"{root} holds a cache of format {found}, this version reads {FORMAT}; "
                              "use another root or upgrade connectome_dask")
        return
    os.makedirs(root, exist_ok=True)
    others = [n for n in os.listdir(root) if n != MARKER and not (n.startswith(f".{MARKER}") and n.endswith(".tmp"))]
    if others:
        raise ForeignRoot(f"{root} is not empty and is not a connectome_dask cache (found {sorted(others)[:5]}); "
                          "choose an empty or new folder as the cache root")
    tmp = os.path.join(root, f".{MARKER}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(FORMAT, f)
        os.replace(tmp, marker)
    except OSError as e:
        if not os.path.exists(marker):
            raise StoreError(f"cannot create the cache root {root}: {e}") from e
