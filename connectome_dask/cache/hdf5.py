"""``HDF5Store``: the persistent cache, one immutable HDF5 file per entry.

Layout of a root::

    root/connectome_dask.json          format marker {"format": "connectome_dask.hdf5", "version": 2}
    root/<field>/<token[0]>/<token>.h5

An entry file holds the node ``value`` (see ``encoding``) and the root attribute ``header``, four
uint64: the format version, whether ``value`` is a plain array read by the fast path, and the
two words of the digest; any HDF5 tool (``h5ls``, ``h5py``, HDFView) can read it. Field names are
checked (``check_field_name``) before they become folder names, so no entry lives outside the root;
the root itself (marker, layout, bad roots) is the ``root`` module's.
Only regular files are opened as entries (a FIFO or device at an entry's path is a miss).

Format 1 (before the digest) kept type tags as variable-length strings in HDF5's unchecksummed
global heap, where a flipped bit could hang a reader. Its entries are misses here (one
``CacheWarning`` per field, then replaced); a root with a version-1 marker is used, and its marker
upgraded, so processes of the older version refuse it instead of misreading new entries.

Writes go to a temporary file in the entry's folder (``.<token>.<random>.tmp``), which is then
published with ``os.replace``: concurrent writers (threads, processes, dask workers on a shared
file system) publish whole files only, the last one wins with identical content, and a writer
killed at any moment leaves at most a temporary file, which readers never open (the CLI removes
stale ones). Data is not fsynced: after an OS crash an entry may be lost or torn, and the digest
turns a torn entry into a miss. Readers open with HDF5 file locking off (entries are immutable)
and never keep handles. A corrupt entry (unreadable, truncated, digest mismatch, not a regular
file) is a miss with one ``CacheWarning`` per field; a root that cannot be written (also a new one
on a read-only file system) degrades to computing, with one warning per cause. Root creation is
itself atomic (the marker is written through a temporary file).

Folders are made on demand by the writer that needs them, so nothing touches the root once a call
returns (``shutil.rmtree(root)`` right after use is safe). A root whose marker is gone but whose
contents are exactly this layout (``rm -rf root`` under a live pipeline, whose next writes remake
folders) is recognised, and its marker restored, by the writer and by ``HDF5Store(root)``.

A plain array (the common case) is written and read as the bytes of its file, its metadata made
from a template per dtype and shape (``plain``): the same file HDF5 would write, without HDF5's
work per file. Other values are written by ``encoding`` through h5py, and read with h5py's
low-level API. The digest is computed by the writer itself: a helper thread digesting while HDF5 copied the
array (as the checksum of format 1 was) measured ~3% slower populating on this shared 2-core VM.
"""

import functools
import os
import stat
import uuid
import warnings

import numpy as np

from ..exceptions import CacheWarning, StorageCorruption
from .encoding import decode, encode, is_native, plain_array
from .plain import array_digest, entry_parts, header, learn
from .plain import read as read_plain
from .root import (MARKER, VERSION, ForeignRoot, _Unwritable, _is_layout, _name_problem, _open_root, _scandir,
                   _write_marker, check_field_name)
from .store import MISSING, Store

__all__ = ["HDF5Store", "ForeignRoot", "MARKER", "check_field_name"]


def _h5py():
    import h5py

    return h5py


class HDF5Store(Store):
    """Entries as HDF5 files under ``root``. ``serializer``: a ``connectome_dask.serializers``
    policy or a sequence of them (default: native types only, never pickle)."""

    persistent = True

    def __init__(self, root, *, compression=None, serializer=None, create=True):
        from ..serializers import as_policy

        self.root = os.path.abspath(os.fspath(root))
        self.compression, self.serializer = compression, serializer
        self._policy = as_policy(serializer)
        self._warned = set()
        if create:
            try:
                _open_root(self.root)
            except _Unwritable as e:
                self._warn(_cause(e.error), f"{e}; values are computed but not stored", stacklevel=3)

    def __reduce__(self):
        return _store, (self.root, self.compression, self.serializer)

    def __repr__(self):
        return f"HDF5Store({self.root!r})"

    def path(self, field, token):
        return os.path.join(self.root, check_field_name(field), token[:1], token + ".h5")

    def contains(self, field, token):
        info = _stat(self.path(field, token))
        return info is not None and stat.S_ISREG(info.st_mode)

    def get(self, field, token):
        path = self.path(field, token)
        info = _stat(path)  # ~5 us, where HDF5 takes ~50 us to fail opening a missing file
        if info is None:
            return MISSING
        try:
            if not stat.S_ISREG(info.st_mode):
                raise StorageCorruption("not a regular file")
            return _read(path, field, token, self._policy.allow_pickle, info.st_size)
        except FileNotFoundError:
            return MISSING
        except Exception as e:  # noqa: BLE001 - any unreadable entry is a miss, never a crash
            self._warn(("corrupt", field), f"cache entry {path} of field {field!r} is corrupt or stale "
                                           f"({type(e).__name__}: {e}); it is recomputed and replaced")
            return MISSING

    def set(self, field, token, value, each=False):
        """Store ``value``; ``each``: it is a tuple of values (a shard) that the serializer judges one by one."""
        for item in (value if each else (value,)):
            self._policy.check(field, item)
        value = plain_array(value)
        compression = self._policy.compression(self.compression)
        parts = _plain_parts(value, field, token, compression)
        path = self.path(field, token)
        folder = os.path.dirname(path)
        tmp = os.path.join(folder, f".{token}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            if not os.path.isdir(folder):
                self._make_folder(folder)
            published = False
            try:
                if parts is not None:
                    _write_parts(tmp, parts)
                else:
                    _write_encoded(tmp, value, field, token, compression, self._policy.allow_pickle)
                os.replace(tmp, path)
                published = True
            finally:
                if not published and os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as e:
            self._warn(_cause(e), f"cannot write to the cache root {self.root} ({e}); values are computed but "
                                  "not stored")
            return e
        return None

    def _make_folder(self, folder):
        """Create an entry's folder (and the root, if it was removed under us: its marker too)."""
        os.makedirs(folder, exist_ok=True)
        if not os.path.exists(os.path.join(self.root, MARKER)) and _is_layout(self.root):
            _write_marker(self.root, required=False)

    def _warn(self, cause, message, stacklevel=4):
        if cause not in self._warned:
            self._warned.add(cause)
            warnings.warn(message, CacheWarning, stacklevel=stacklevel)

    def entries(self):
        """``(field, token, path, size, mtime)`` of every entry, without opening any file: regular
        files only, in field and fan-out folders that are folders of the root (symbolic links are
        never followed; folders that cannot be fields are not listed)."""
        return self.files("entry")

    def temporaries(self):
        """``(field, token, path, size, mtime)`` of the temporary files of writers (killed ones, or live)."""
        return self.files("temporary")

    def files(self, kind):
        """``(field, token, path, size, mtime)`` of the files of one ``kind`` inside the root: ``"entry"``
        (``<token>.h5`` regular files), ``"temporary"`` (``.<token>.<random>.tmp`` regular files) or
        ``"other"`` (what else sits at an entry's name: a symbolic link, a FIFO; listed, not followed,
        so that the CLI can remove it as itself). Entries that vanish while listed are skipped."""
        for field in _scandir(self.root):
            if _name_problem(field.name) or not field.is_dir(follow_symlinks=False):
                continue
            for prefix in _scandir(field.path):
                if len(prefix.name) != 1 or not prefix.is_dir(follow_symlinks=False):
                    continue
                for entry in _scandir(prefix.path):
                    name = entry.name
                    if name.endswith(".h5") and not name.startswith("."):
                        token = name[:-3]
                    elif name.startswith(".") and name.endswith(".tmp"):
                        token = name[1:].split(".", 1)[0]
                    else:
                        continue
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:  # deleted while listed
                        continue
                    if stat.S_ISREG(info.st_mode):
                        found = "temporary" if name[0] == "." else "entry"
                    else:
                        found = "other" if name[0] != "." else None
                    if found == kind:
                        yield field.name, token, entry.path, info.st_size, info.st_mtime

    def verify(self, field, token):
        """Whether the entry reads back with a valid digest."""
        self._warned.add(("corrupt", field))  # verification reports, it does not warn
        return self.get(field, token) is not MISSING

    def delete(self, field, token):
        try:
            os.unlink(self.path(field, token))
        except FileNotFoundError:
            pass


def _stat(path):
    """The ``os.stat`` of ``path`` (symlinks followed), None if there is nothing."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _cause(error):
    """The key under which a failure to write is warned about once."""
    return "write", type(error).__name__, error.errno


def _plain_parts(value, field, token, compression):
    """``[metadata, payload]`` of the file of an entry holding one uncompressed array (the common
    case, written without HDF5: see ``plain``), or None for any other value."""
    if (type(value) is np.ndarray and value.dtype.fields is None and is_native(value.dtype) and value.ndim <= 32
            and not (compression and value.ndim and value.nbytes >= 4096)):
        return entry_parts(np.require(value, requirements="C"), field, token)
    return None


def _write_parts(path, parts):
    """Create the file ``path`` holding the bytes of ``parts``, one after the other."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        for part in parts:
            view = memoryview(part)
            while view.nbytes:
                view = view[os.write(fd, view):]  # a write may store less than asked (over 2 GiB)
    finally:
        os.close(fd)


def _write_encoded(tmp, value, field, token, compression, allow_pickle):
    with _h5py().File(tmp, "w", locking=False, libver="latest") as f:
        words, plain = encode(f, value, field, token, compression, allow_pickle)
        f.attrs["header"] = header(words, plain)


@functools.lru_cache(maxsize=None)
def _read_access():
    """The file access property list of readers (no file locking: entries are immutable)."""
    access = _h5py().h5p.create(_h5py().h5p.FILE_ACCESS)
    access.set_file_locking(False, True)
    return access


def _read(path, field, token, allow_pickle, size=None):
    """Decode an entry: one made from a template (``plain``) as the bytes of its file, any other
    with h5py's low-level API (it saves most of the high-level one's per-object overhead), a plain
    uncompressed array without the general decoder. Every read verifies the digest before the
    value is returned."""
    value = read_plain(path, os.stat(path).st_size if size is None else size, field, token)
    if value is not None:
        return value
    h5py = _h5py()
    try:
        fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY, fapl=_read_access())
    except OSError:
        if not os.path.exists(path):
            raise FileNotFoundError(path) from None
        raise
    try:
        return _read_fid(fid, field, token, allow_pickle)
    finally:
        fid.close()


def _read_fid(fid, field, token, allow_pickle):
    """The value of the entry open as ``fid`` (an ``h5py.h5f.FileID``), its digest verified."""
    h5py = _h5py()
    attr = h5py.h5a.open(fid, b"header")
    if attr.shape != (4,) or attr.dtype != np.uint64:
        raise StorageCorruption("no header of format 2 (an entry of an older version?)")
    words = np.empty(4, np.uint64)
    attr.read(words)
    if words[0] != VERSION or words[1] > 1:
        raise StorageCorruption(f"a header of format {words[0]}, this version reads {VERSION}")
    if not words[1]:
        return decode(fid, field, token, words[2:], allow_pickle)
    dataset = h5py.h5d.open(fid, b"value")
    if dataset.dtype.fields is not None or dataset.dtype.hasobject:
        raise StorageCorruption("the plain flag on a dataset that is not a plain array")
    value = np.empty(dataset.shape, dataset.dtype)
    if value.size:
        dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, value)
    if not array_digest(field, token, value).matches(words[2:]):
        raise StorageCorruption("digest mismatch")
    learn(value.dtype, value.shape)
    return value


def _store(root, compression, serializer):
    return HDF5Store(root, compression=compression, serializer=serializer, create=False)

