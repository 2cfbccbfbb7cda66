"""``RemoteStore``: the HDF5 cache on object storage or any fsspec file system (``s3://``, ``gs://``,
``az://``, ``memory://``, ...), for clusters without a shared file system.

The root is a URL; its layout is the local one (``hdf5``): the marker ``connectome_dask.json`` and one
HDF5 file per entry at ``<field>/<token[0]>/<token>.h5``, encoded, digested and decoded by the same
code, so a root can be listed, verified and copied with ordinary tools and the CLI.

Publish: an entry is written into memory (h5py on a ``BytesIO``: measured 0.7 ms for a 4 MB array,
where HDF5's core driver took 3.5 ms and a file on tmpfs 2.1 ms) and published with one PUT, which
object stores make visible whole or not at all. Where the backend has create-only writes (s3fs:
``If-None-Match: *``; fsspec's memory file system) the PUT is create-only and "already exists" is
another writer's success; elsewhere the last of several writers of identical content wins. Nothing
is ever renamed, and a writer killed mid-upload leaves no object (s3fs sends an entry over 100 MB
as a multipart upload, invisible until completed; a bucket lifecycle rule removes the parts of one
never completed). An entry found corrupt (truncated, flipped bits, digest
mismatch) is a miss with one ``CacheWarning`` per field, and this process replaces it (the one
overwriting PUT).

Reads: the first ``GET_BYTES`` of an entry come with one ranged GET; an entry smaller than that
(the common case) is decoded from memory. A larger one is read through :class:`_Ranged`: HDF5 asks
for its metadata in small pieces (a plain array's all lie before its payload, in the first GET;
others are served from blocks of ``BLOCK_BYTES``) and for a contiguous dataset in one piece, fetched
in ranged GETs of about ``GET_BYTES`` straight into the array, so a large payload is in memory once
(plus one part). On moto each ranged GET of a large object costs the server a copy of the whole
object, so there one GET is faster (``benchmarks/cases/s3.py``, ``large_read_*``); the parts bound
the memory a read takes. Nothing lists a folder in the hot path: a miss is one failed GET. The CLI
lists, and ``persist`` lists each field it fills once per call (``missing``), so that the entries it
computes need no failed GET first (on moto that GET was ~15% of a populate). File systems whose
errors are not ``FileNotFoundError`` (a denied read, a lost connection) degrade to computing, with
one warning per cause, as a denied write does: ``set`` returns the error.

``local=PATH``: a read-through copy in a node-local ``HDF5Store`` (the same path on every node, each
node its own folder). A remote hit is written there
(the bytes as fetched, published with ``os.replace``) and served from there afterwards; entries are
immutable, so the copy never needs invalidating. A miss is written to the remote root, and to the
copy. ``file://`` URLs are plain paths (the local store, whose publish is an atomic rename).

The store pickles as its URL and options (``storage_options`` included: prefer credentials from the
environment on shared clusters); each process makes its own file system object (fsspec caches them).
Its ``token`` (which salts task keys) and its repr and messages name the root and options without
their secrets: the values of options named like one (``secret``, ``token``, ``password``,
``account_key``, ...; at any depth, e.g. in ``client_kwargs``) and a password in the URL are left
out, so two stores that differ only there are one store in a process (``store.local``). An access
key id (``key``) is kept: stores of two users of one bucket stay apart. Entries of a ``memory://``
root live in this process only, so such a store is not ``persistent`` (unless it has a local copy).
"""

import io
import inspect
import json
import os
import re
import uuid
import warnings

from ..exceptions import CacheWarning, StorageCorruption, StoreError
from . import hdf5
from .encoding import encode, plain_array
from .plain import header
from .root import FORMAT, MARKER, ForeignRoot, _name_problem, check_field_name, marker_version
from .store import MISSING, Store, config_token

__all__ = ["RemoteStore", "open_root", "is_url", "GET_BYTES", "BLOCK_BYTES"]

GET_BYTES = 32 << 20  # entries up to this size: one GET, decoded from memory; larger: parts of this size
BLOCK_BYTES = 256 << 10  # larger entries: reads of metadata served from blocks of this size
LIST_MIN = 16  # ``missing`` lists a field for this many tokens or more


def is_url(root):
    """Whether ``root`` names a file system by protocol (``s3://...``, ``memory://...``)."""
    return isinstance(root, str) and "://" in root


def open_root(root, *, storage_options=None, local=None, layer="CacheToDisk", **options):
    """The store of a cache root: ``RemoteStore`` for a URL, ``HDF5Store`` for a path or ``file://`` URL.
    ``options``: ``compression``, ``serializer``."""
    if is_url(root) and not root.startswith("file://"):
        return RemoteStore(root, storage_options=storage_options, local=local, **options)
    for name, given in (("local", local), ("storage_options", storage_options)):
        if given:
            raise ValueError(f"{layer}: {name}= is for a URL root (s3://bucket/prefix, ...); the root {root!r} is a "
                             "local folder: leave it out")
    return hdf5.HDF5Store(root[len("file://"):] if is_url(root) else root, **options)


class RemoteStore(Store):
    """Entries as HDF5 objects under the URL ``root`` (see the module docstring).

    ``storage_options`` go to fsspec (``key``, ``secret``, ``endpoint_url``, ...); ``local``: a
    node-local folder for the read-through copy; ``compression``, ``serializer``: as ``HDF5Store``."""

    def __init__(self, root, *, storage_options=None, local=None, compression=None, serializer=None, create=True):
        import fsspec

        from ..serializers import as_policy

        self.root = root.rstrip("/")
        self.shown = _redacted(self.root)  # the root in messages and the repr
        self.storage_options = dict(storage_options or {})
        self.compression, self.serializer = compression, serializer
        self.local = None if local is None else os.path.abspath(os.fspath(local))
        self._policy = as_policy(serializer)
        try:
            self.fs, path = fsspec.core.url_to_fs(self.root, **self.storage_options)
        except (ImportError, ValueError, TypeError) as e:
            extra = " (pip install 'connectome_dask[s3]')" if isinstance(e, ImportError) and "s3" in str(e) else ""
            raise StoreError(f"cannot open the cache root {self.shown}: {type(e).__name__}: {e}{extra}") from e
        self._path = path.rstrip("/")
        # entries outlive the process, except those of a memory:// root without a local copy
        self.persistent = local is not None or "memory" not in _protocols(self.fs)
        self._create_only = "mode" in inspect.signature(self.fs.pipe_file).parameters
        self._copy = None if local is None else hdf5.HDF5Store(self.local, compression=compression,
                                                                serializer=serializer, create=create)
        self._warned = set()
        self._corrupt = set()  # (field, token) found corrupt here: replaced by an overwriting PUT
        if create:
            try:
                self._open_root()
            except StoreError:
                raise
            except Exception as e:  # noqa: BLE001 - a denied or unreachable bucket: compute without storing
                self._warn(_cause("write", e), f"cannot use the cache root {self.shown} ({type(e).__name__}: {e}); "
                                               "values are computed but not stored", stacklevel=3)

    def __reduce__(self):
        return _store, (self.root, self.storage_options, self.local, self.compression, self.serializer)

    def __repr__(self):
        return f"RemoteStore({self.shown!r})"

    @property
    def token(self):
        """The root and options, without their secrets (module docstring)."""
        config = (self.shown, _public(self.storage_options), self.local, self.compression, self.serializer)
        return config_token(RemoteStore, config)

    def path(self, field, token):
        """The entry's path on the file system (without the protocol)."""
        return f"{self._path}/{check_field_name(field)}/{token[:1]}/{token}.h5"

    def url(self, path):
        return self.fs.unstrip_protocol(path)

    # --- the root ------------------------------------------------------------------------------------------------

    def _open_root(self, create=True):
        """Check the marker, or (``create``) make one (a root whose marker is gone but whose objects
        are all entries gets its marker back); ``ForeignRoot`` for anything else."""
        fs, marker = self.fs, f"{self._path}/{MARKER}"
        try:
            text = fs.cat_file(marker)
        except FileNotFoundError:
            text = None
        if text is not None:
            if marker_version(self.shown, self.url(marker), text) == FORMAT["version"] or not create:
                return
        elif not create:
            raise ForeignRoot(f"{self.shown}: no cache root there (no {MARKER}; a root given to CacheToDisk has one)")
        else:
            # the marker itself may appear now: another process creating the root (the PUT is create-only)
            # (and a LIST racing with that creation may name the root prefix itself, as a folder)
            inside = [p for p in self._objects() if p.startswith(self._path + "/")]
            others = [p for p in inside if p != marker and _entry_of(p[len(self._path) + 1:]) is None]
            if others:
                raise ForeignRoot(f"{self.shown} is not empty and is not a connectome_dask cache (found "
                                  f"{[self.url(p) for p in others[:5]]}); choose an empty or new prefix as the root")
        self._put(marker, json.dumps(FORMAT).encode(), create=text is None)

    def _objects(self):
        """Paths of every object under the root (a LIST: for the root's creation and the CLI only)."""
        try:
            return sorted(self.fs.find(self._path))
        except FileNotFoundError:
            return []

    # --- the Store interface -------------------------------------------------------------------------------------

    def get(self, field, token):
        if self._copy is not None:
            value = self._copy.get(field, token)
            if value is not MISSING:
                return value
        path = self.path(field, token)
        try:
            try:
                head = self.fs.cat_file(path, start=0, end=GET_BYTES)
            except FileNotFoundError:
                raise
            except Exception:  # noqa: BLE001 - an empty object refuses any range: read it whole
                head = self.fs.cat_file(path)
        except FileNotFoundError:
            return MISSING
        except Exception as e:  # noqa: BLE001 - a denied or failed read is a miss, never a crash
            self._warn(_cause("read", e), f"cannot read from the cache root {self.shown} ({type(e).__name__}: {e}); "
                                          "values are computed")
            return MISSING
        try:
            if len(head) < GET_BYTES:
                value, image = _decode(io.BytesIO(head), field, token, self._policy.allow_pickle), head
            else:
                value, image = _decode(_Ranged(self.fs, path, head), field, token, self._policy.allow_pickle), None
        except Exception as e:  # noqa: BLE001 - any unreadable entry is a miss, never a crash
            self._corrupt.add((field, token))
            self._warn(("corrupt", field), f"cache entry {self.url(path)} of field {field!r} is corrupt or stale "
                                           f"({type(e).__name__}: {e}); it is recomputed and replaced")
            return MISSING
        if self._copy is not None:
            self._keep(field, token, image if image is not None else path)
        return value

    def contains(self, field, token):
        if self._copy is not None and self._copy.contains(field, token):
            return True
        try:
            self.fs.cat_file(self.path(field, token), start=0, end=1)  # a GET: no LIST on a miss, as a HEAD may do
        except FileNotFoundError:
            return False
        except Exception:  # noqa: BLE001 - unreadable: not there for this process
            return False
        return True

    def missing(self, field, tokens):
        """One LIST of the field (a request per 1,000 objects) for ``LIST_MIN`` tokens or more (for
        fewer, a GET each is cheaper than listing a field that may hold many more entries): the tokens
        neither there nor in the local copy. None if the listing fails."""
        if len(tokens) < LIST_MIN:
            return None
        start = len(self._path) + 1
        try:
            held = {entry[1] for entry in map(_entry_of, (p[start:] for p in self.fs.find(f"{self._path}/{field}")))
                    if entry}
        except FileNotFoundError:
            held = set()
        except Exception:  # noqa: BLE001 - a denied LIST: look each entry up
            return None
        copy = self._copy
        return {t for t in tokens if t not in held and (copy is None or not copy.contains(field, t))}

    def set(self, field, token, value, each=False):
        """Store ``value`` (``each``: a shard, a tuple the serializer judges item by item)."""
        for item in (value if each else (value,)):
            self._policy.check(field, item)
        image = _image(plain_array(value), field, token, self._policy.compression(self.compression),
                       self._policy.allow_pickle)
        try:
            self._put(self.path(field, token), image, create=(field, token) not in self._corrupt)
        except Exception as e:  # noqa: BLE001 - a denied bucket, a lost connection: compute without storing
            self._warn(_cause("write", e), f"cannot write to the cache root {self.shown} ({type(e).__name__}: {e}); "
                                           "values are computed but not stored")
            return e
        self._corrupt.discard((field, token))
        if self._copy is not None:
            self._keep(field, token, image)
        return None

    def _put(self, path, data, create=True):
        """One PUT; create-only where the backend has it (then an existing object is another writer's)."""
        fs = self.fs
        try:
            if create and self._create_only:
                fs.pipe_file(path, data, mode="create")
            else:
                fs.pipe_file(path, data)
        except FileExistsError:
            pass

    def _keep(self, field, token, source):
        """Put an entry into the local copy: its bytes, or (a large entry) downloaded from ``source``."""
        copy = self._copy
        path = copy.path(field, token)
        tmp = os.path.join(os.path.dirname(path), f".{token}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            if not os.path.isdir(os.path.dirname(path)):
                copy._make_folder(os.path.dirname(path))
            try:
                if isinstance(source, str):
                    self.fs.get_file(source, tmp)
                else:
                    with open(tmp, "wb") as f:
                        f.write(source)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except Exception as e:  # noqa: BLE001 - the copy only saves reads: serve from the root without it
            self._warn(_cause("copy", e), f"cannot keep a local copy of {self.shown} in {copy.root} "
                                          f"({type(e).__name__}: {e}); entries are read from the root")

    def _warn(self, cause, message, stacklevel=4):
        if cause not in self._warned:
            self._warned.add(cause)
            warnings.warn(message, CacheWarning, stacklevel=stacklevel)

    # --- what the CLI needs ----------------------------------------------------------------------------------------

    def entries(self):
        """``(field, token, url, size, mtime)`` of every entry (one LIST of the root)."""
        try:
            found = self.fs.find(self._path, detail=True)
        except FileNotFoundError:
            found = {}
        for path, info in sorted(found.items()):
            entry = _entry_of(path[len(self._path) + 1:])
            if entry is not None:
                yield (*entry, self.url(path), info.get("size", 0), _mtime(info))

    def temporaries(self):
        return self.files("temporary")

    def files(self, kind):
        """As ``HDF5Store.files``: ``"entry"`` lists the entries; there are no ``"temporary"`` files (objects
        are published whole) and no ``"other"`` ones (what sits at an entry's name is an object)."""
        return self.entries() if kind == "entry" else ()

    def problem(self, field, token):
        """Why the entry is bad (unreadable, corrupt), or None if it reads back with a valid digest."""
        path = self.path(field, token)
        try:
            _decode(io.BytesIO(self.fs.cat_file(path)), field, token, self._policy.allow_pickle)
        except Exception as e:  # noqa: BLE001 - the reason is reported
            return f"{type(e).__name__}: {e}"
        return None

    def delete(self, field, token):
        try:
            self.fs.rm_file(self.path(field, token))
        except FileNotFoundError:
            pass


_SECRET = re.compile(r"secret|token|passw|credential|account_key|connection_string|auth", re.I)


def _public(options):
    """``options`` with the values of secret-named options (at any depth) replaced by a mark."""
    if isinstance(options, dict):
        return {k: "<secret>" if isinstance(k, str) and _SECRET.search(k) else _public(v) for k, v in options.items()}
    return options


def _redacted(url):
    """``url`` without the password of its user part (``ftp://user:pw@host/...`` -> ``ftp://user:***@host/...``)."""
    return re.sub(r"^([\w+.-]+://[^/@:]*):[^/@]*@", r"\1:***@", url)


def _protocols(fs):
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _entry_of(relative):
    """``(field, token)`` of an entry's path relative to the root, None if it is the marker or not an entry."""
    parts = relative.split("/")
    if len(parts) != 3 or _name_problem(parts[0]) or not parts[2].endswith(".h5"):
        return None
    token = parts[2][:-3]
    return (parts[0], token) if token[:1] == parts[1] and len(parts[1]) == 1 else None


def _mtime(info):
    """An fsspec listing's modification time as seconds since the epoch (0 if it has none)."""
    for key in ("LastModified", "mtime", "created", "updated", "last_modified"):
        value = info.get(key)
        if hasattr(value, "timestamp"):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
    return 0.0


def _cause(kind, error):
    """The key under which a failure of one kind is warned about once."""
    return kind, type(error).__name__, getattr(error, "errno", None)


def _image(value, field, token, compression, allow_pickle):
    """The bytes of the HDF5 file of an entry, made in memory (the file ``HDF5Store`` writes)."""
    parts = hdf5._plain_parts(value, field, token, compression)
    if parts is not None:
        return b"".join(parts)
    buffer = io.BytesIO()
    with hdf5._h5py().File(buffer, "w", libver="latest", locking=False) as f:
        digest, plain = encode(f, value, field, token, compression, allow_pickle)
        f.attrs["header"] = header(digest, plain)
    return buffer.getvalue()


def _decode(fileobj, field, token, allow_pickle):
    """The value of the entry whose HDF5 file ``fileobj`` reads, its digest verified."""
    try:
        file = hdf5._h5py().File(fileobj, "r", locking=False)
    except OSError as e:
        raise StorageCorruption(f"not a readable HDF5 file ({e})") from None
    with file:
        return hdf5._read_fid(file.id, field, token, allow_pickle)


class _Ranged(io.RawIOBase):
    """A large entry as a read-only file: the bytes of the first GET, then ranged GETs (a read of
    less than ``BLOCK_BYTES``, HDF5's metadata, through a cache of aligned blocks; a larger one, a
    dataset's payload, in parts of about ``GET_BYTES`` of exactly its bytes)."""

    def __init__(self, fs, path, head):
        self.fs, self.path, self.head, self.pos = fs, path, memoryview(head), 0
        self.size = fs.size(path)
        self.blocks = {}

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=io.SEEK_SET):
        self.pos = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence] + offset
        return self.pos

    def readinto(self, buffer):
        view = memoryview(buffer).cast("B")
        start, end = self.pos, min(self.pos + len(view), self.size)
        if end <= start:
            return 0
        n = end - start
        if end <= len(self.head):
            view[:n] = self.head[start:end]
        elif n >= BLOCK_BYTES:  # a payload: what the first GET holds, the rest in equal parts of ~GET_BYTES
            held = max(0, len(self.head) - start)
            view[:held] = self.head[start:start + held]
            parts = max(1, (n - held) // GET_BYTES)
            bounds = [start + held + (n - held) * i // parts for i in range(parts + 1)]
            for part, stop in zip(bounds, bounds[1:]):
                view[part - start:stop - start] = self.fs.cat_file(self.path, start=part, end=stop)
        else:
            done = 0
            while done < n:
                block, offset = divmod(start + done, BLOCK_BYTES)
                data = self._block(block)
                take = min(n - done, len(data) - offset)
                view[done:done + take] = data[offset:offset + take]
                done += take
        self.pos = end
        return n

    def _block(self, index):
        data = self.blocks.get(index)
        if data is None:
            start = index * BLOCK_BYTES
            if start + BLOCK_BYTES <= len(self.head):
                data = self.head[start:start + BLOCK_BYTES]
            else:
                data = self.fs.cat_file(self.path, start=start, end=min(start + BLOCK_BYTES, self.size))
            self.blocks[index] = data
        return data


def _store(root, storage_options, local, compression, serializer):
    return RemoteStore(root, storage_options=storage_options, local=local, compression=compression,
                       serializer=serializer, create=False)

