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

Folders are made on demand by the writer that needs them, so nothing touches the root once a call
returns (``shutil.rmtree(root)`` right after use is safe). A root whose marker is gone but whose
contents are exactly this layout (``rm -rf root`` under a live pipeline, whose next writes remake
folders) is recognised, and its marker restored, by the writer and by ``HDF5Store(root)``.

Entries are read, and plain arrays (the common case) written, with h5py's low-level API; a helper
thread per process checksums large arrays while HDF5 copies them into the file (the writer waits
for it before it returns).
"""

import concurrent.futures
import json
import os
import threading
import uuid
import warnings

import numpy as np

from ..exceptions import CacheWarning, StorageCorruption, StoreError
from .encoding import _NATIVE_KINDS, checksum_of, decode, encode, plain_array
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
        if not os.path.exists(path):  # a stat: ~5 us, where HDF5 takes ~50 us to fail opening a missing file
            return MISSING
        try:
            return _read(path, self._policy.allow_pickle)
        except FileNotFoundError:
            return MISSING
        except Exception as e:  # noqa: BLE001 - any unreadable entry is a miss, never a crash
            self._warn(("corrupt", field), f"cache entry {path} of field {field!r} is corrupt ({type(e).__name__}: "
                                           f"{e}); it is recomputed and replaced")
            return MISSING

    def set(self, field, token, value, each=False):
        """Store ``value``; ``each``: it is a tuple of values (a shard) that the serializer judges one by one."""
        for item in (value if each else (value,)):
            self._policy.check(field, item)
        value = plain_array(value)
        compression = self._policy.compression(self.compression)
        path = self.path(field, token)
        folder = os.path.dirname(path)
        tmp = os.path.join(folder, f".{token}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            if not os.path.isdir(folder):
                self._make_folder(folder)
            published = False
            try:
                if _is_plain(value, compression):
                    _write_plain(tmp, value)
                else:
                    _write_encoded(tmp, value, field, compression, self._policy.allow_pickle)
                os.replace(tmp, path)
                published = True
            finally:
                if not published and os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as e:
            self._warn(("write", type(e).__name__, e.errno),
                       f"cannot write to the cache root {self.root} ({e}); values are computed but not stored")

    def _make_folder(self, folder):
        """Create an entry's folder (and the root, if it was removed under us: its marker too)."""
        os.makedirs(folder, exist_ok=True)
        if not os.path.exists(os.path.join(self.root, MARKER)) and _is_layout(self.root):
            _write_marker(self.root)

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


def _is_plain(value, compression):
    """Whether ``value`` is stored as one uncompressed array dataset (the fast write and read paths)."""
    return (type(value) is np.ndarray and value.dtype.kind in _NATIVE_KINDS and value.dtype.fields is None
            and not (compression and value.ndim and value.nbytes >= 4096))


def _write_encoded(tmp, value, field, compression, allow_pickle):
    with _h5py().File(tmp, "w", locking=False, libver="latest") as f:
        checksum, plain = encode(f, value, field, compression, allow_pickle)
        f.attrs["header"] = np.array([checksum, int(plain)], np.int64)


def _write_plain(tmp, value):
    """Write a plain array entry with h5py's low-level API: the same file ``encode`` makes (the
    dataset ``value`` with ``t="array"``, the root attribute ``header``), without the per-object
    overhead of the high-level one. The checksum of a large array is computed by a helper thread
    while HDF5 copies the array into the file (both release the GIL, they read the same memory)."""
    h5py = _h5py()
    h5f, h5p, h5s, h5t = h5py.h5f, h5py.h5p, h5py.h5s, h5py.h5t
    arr = np.require(value, requirements="C")
    pending = _background.submit(checksum_of, "array", arr) if arr.nbytes >= _BACKGROUND_CHECKSUM_BYTES else None
    fapl = h5p.create(h5p.FILE_ACCESS)
    fapl.set_file_locking(False, True)
    fapl.set_libver_bounds(h5f.LIBVER_LATEST, h5f.LIBVER_LATEST)
    fapl.set_fclose_degree(h5f.CLOSE_STRONG)  # closing the file closes (and flushes) every object in it
    fid = h5f.create(os.fsencode(tmp), h5f.ACC_TRUNC, fapl=fapl)
    try:
        dcpl = h5p.create(h5p.DATASET_CREATE)
        dcpl.set_obj_track_times(False)  # as h5py's create_dataset: the file depends on the value only
        space = h5s.create(h5s.SCALAR) if arr.ndim == 0 else h5s.create_simple(arr.shape)
        dataset = h5py.h5d.create(fid, b"value", h5t.py_create(arr.dtype, logical=1), space, dcpl=dcpl)
        if arr.size:
            dataset.write(h5s.ALL, h5s.ALL, arr)
        tag = h5py.h5a.create(dataset, b"t", _types()["str"], h5s.create(h5s.SCALAR))
        tag.write(np.array("array", dtype=h5py.string_dtype()))
        checksum = checksum_of("array", arr) if pending is None else pending.result()
        header = h5py.h5a.create(fid, b"header", _types()["int64"], h5s.create_simple((2,)))
        header.write(np.array([checksum, 1], np.int64))
        del tag, header, dataset
    finally:
        fid.close()


_TYPES = {}


def _types():
    if not _TYPES:
        h5py = _h5py()
        _TYPES.update(str=h5py.h5t.py_create(h5py.string_dtype(), logical=True),
                      int64=h5py.h5t.py_create(np.dtype("<i8")))
    return _TYPES


_BACKGROUND_CHECKSUM_BYTES = 1 << 20  # below this, handing the work to a thread costs what it saves


class _Background:
    """One daemon helper thread per process, started on first use (again in a forked child), for
    work that overlaps with the caller's: checksums of arrays being written, each awaited by its
    writer. Jobs run in submission order. ``submit`` returns None if no thread can be started; the caller
    then does the work itself."""

    def __init__(self):
        self._lock = threading.Lock()
        self._queue, self._pid = None, None

    def submit(self, func, *args):
        queue = self._queue
        if queue is None or self._pid != os.getpid():
            with self._lock:
                if self._queue is None or self._pid != os.getpid():
                    import queue as queues

                    fresh = queues.SimpleQueue()
                    try:
                        threading.Thread(target=_serve, args=(fresh,), daemon=True,
                                         name="connectome_dask-hdf5").start()
                    except RuntimeError:  # interpreter shutting down, or no thread can be started
                        return None
                    self._queue, self._pid = fresh, os.getpid()
                queue = self._queue
        job = concurrent.futures.Future()
        queue.put((job, func, args))
        return job


def _serve(queue):
    while True:
        job, func, args = queue.get()
        try:
            job.set_result(func(*args))
        except BaseException as e:  # noqa: BLE001 - handed to the caller that waits for the job
            job.set_exception(e)


_background = _Background()


def _read(path, allow_pickle):
    """Decode an entry with h5py's low-level API (it saves most of the high-level one's per-object
    overhead); a plain uncompressed array (the common case) is read without the general decoder."""
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
            dataset = h5py.h5d.open(fid, b"value")
            value = np.empty(dataset.shape, dataset.dtype)
            if value.size:
                dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, value)
            checksum = checksum_of("array", value)
        else:
            value, checksum = decode(fid, allow_pickle)
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
    if not _is_layout(root):
        others = sorted(n for n in os.listdir(root) if not _is_marker_tmp(n))
        raise ForeignRoot(f"{root} is not empty and is not a connectome_dask cache (found {others[:5]}); "
                          "choose an empty or new folder as the cache root")
    _write_marker(root)


def _is_marker_tmp(name):
    return name.startswith(f".{MARKER}") and name.endswith(".tmp")


def _is_layout(root):
    """Whether ``root`` holds nothing but this store's layout: ``<field>/<character>/`` folders of
    entries (``<token>.h5``, in the folder of its first character) and writers' temporary files (``.<token>.<random>.tmp``)."""
    for field in _scandir(root):
        if field.name == MARKER or _is_marker_tmp(field.name):
            continue
        prefixes = _scandir(field.path) if field.is_dir(follow_symlinks=False) else []
        if field.name.startswith(".") or not prefixes:
            return False
        for prefix in prefixes:
            if len(prefix.name) != 1 or not prefix.is_dir(follow_symlinks=False):
                return False
            for entry in _scandir(prefix.path):
                name = entry.name
                if not entry.is_file(follow_symlinks=False) or not (
                        (name.endswith(".h5") and name[:1] == prefix.name) or (name[:1] == "." and name.endswith(".tmp"))):
                    return False
    return True


def _write_marker(root):
    marker = os.path.join(root, MARKER)
    tmp = os.path.join(root, f".{MARKER}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(FORMAT, f)
        os.replace(tmp, marker)
    except OSError as e:
        if not os.path.exists(marker):
            raise StoreError(f"cannot create the cache root {root}: {e}") from e
