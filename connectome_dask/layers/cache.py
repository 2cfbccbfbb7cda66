"""Cache layers: ``CacheToRam``, ``CacheToDisk`` and ``CacheColumns``.

A cache layer replaces each cached field's node by a ``Cached`` node around it: same token
(caches are transparent to hashing), but evaluation first asks a store for ``(field, token)``.
The store is reached through a *binding*, the small picklable object that travels inside dask
tasks:

* :class:`RamBinding` names a per-process :class:`~connectome_dask.cache.memory.MemoryStore`
  by a uid; unpickled on a dask worker it resolves to that worker process's own store (never
  ``Worker.data``). A new uid is drawn each time the layer is connected into a chain, as in
  connectome (one ``CacheToRam`` placed in two chains does not share entries).
* :class:`DiskBinding` holds an :class:`~connectome_dask.cache.hdf5.HDF5Store` (a root folder and
  options; no open handles) or a :class:`~connectome_dask.cache.remote.RemoteStore` (a URL), so
  every worker writes entries straight into the shared root.

At chain construction each cache layer checks that no cached field has an ``@impure`` ancestor
(``ValueError`` unless ``impure=True``).
"""

import threading
import uuid

from ..cache.root import check_field_name
from ..cache.store import as_store
from ..cache.memory import MemoryStore
from ..cache.cached import cached_call
from ..hashing import combine
from ..nodes import Cached, walk
from ..plan import Plan
from ..stamps import attach
from .base import Layer, as_names

__all__ = ["CacheLayer", "CacheToRam", "CacheToDisk", "RamBinding", "DiskBinding"]

_STORES = {}
_STORES_LOCK = threading.Lock()


class RamBinding:
    """A per-process RAM store, identified by ``uid`` (see the module docstring)."""

    __slots__ = ("uid", "size", "max_bytes", "token")

    def __init__(self, uid, size=None, max_bytes=None):
        self.uid, self.size, self.max_bytes = uid, size, max_bytes
        self.token = combine("ram", uid)

    def store(self):
        store = _STORES.get(self.uid)
        if store is None:
            with _STORES_LOCK:
                store = _STORES.get(self.uid)
                if store is None:
                    kwargs = {} if self.max_bytes is None else {"max_bytes": self.max_bytes}
                    store = _STORES[self.uid] = MemoryStore(size=self.size, **kwargs)
        return store

    def load_or_compute(self, field, token, compute):
        return cached_call(self.store(), field, token, compute)

    def contains(self, field, token):
        return self.store().contains(field, token)

    def __reduce__(self):
        return RamBinding, (self.uid, self.size, self.max_bytes)

    def __repr__(self):
        return f"RamBinding({self.uid[:8]})"


class DiskBinding:
    """A persistent store shared by every process that can see its root (a folder or a URL)."""

    __slots__ = ("_store", "token")

    def __init__(self, store):
        self._store = store
        self.token = combine("hdf5", str(store.root))

    def store(self):
        return self._store

    def load_or_compute(self, field, token, compute):
        return cached_call(self._store, field, token, compute)

    def contains(self, field, token):
        return self._store.contains(field, token)

    def __reduce__(self):
        return DiskBinding, (self._store,)

    def __repr__(self):
        return f"DiskBinding({self._store.root})"


class CacheLayer(Layer):
    """Base class of the cache layers (``CacheToRam``, ``CacheToDisk``, ``CacheColumns``).

    A cache layer changes neither the fields nor their tokens (caches are transparent to hashing):
    it only decides where a cached field's value is looked up before it is computed. Fields it does
    not cache pass through, and every name passes back in the inverse direction.
    ``chain._drop_cache()`` removes every ``CacheLayer`` of a chain.
    """

    _all_by_default = False

    def __init__(self, names, impure):
        self._names = None if names is None else frozenset(as_names(names))
        self._impure = impure

    def _cached_names(self, prev):
        if self._names is None:
            return list(prev.fields) if self._all_by_default else []
        return [n for n in prev.fields if n in self._names]  # unknown names are ignored, as connectome

    def _binding(self):
        raise NotImplementedError

    def _connect(self, prev):
        binding = self._binding()
        fields = dict(prev.fields)
        for name in self._cached_names(prev):
            fields[name] = Cached(name, prev.fields[name], binding)
            if isinstance(binding, DiskBinding):
                attach(prev.fields[name], binding.store().root)  # the stamp index lives in this root
        return Plan(fields, prev.metas, prev.persistent, prev.virtual, prev.dropped,
                    prev.backward + (dict,), prev.broken)

    def _prepare(self, prev):
        if self._impure:
            return
        for name in self._cached_names(prev):
            impure = [n.name for n in walk([prev.fields[name]], inner=True) if getattr(n, "impure", False)]
            if impure:
                raise ValueError(
                    f"{type(self).__name__}: the field {name!r} depends on the impure {sorted(set(impure))}, so its "
                    "cached value would be stale. Cache only pure fields, or pass impure=True to cache anyway"
                )


class CacheToRam(CacheLayer):
    """Keep field values in this process's RAM (on a dask worker: that worker's).

    A hit returns the stored object itself (do not mutate it). The store is per process and
    thread-safe; ``persist`` fills the RAM of the worker that computed an entry. Each time the layer
    is connected into a chain it gets new stores, so one instance in two chains shares nothing.

    Parameters
    ----------
    names : str or list of str, optional
        Fields to cache; None (default) caches every field. Unknown names are ignored.
    size : int, optional
        Least-recently-used entries kept per field; None keeps all (up to ``max_bytes``).
    impure : bool
        Allow caching fields that depend on an ``@impure`` function (else ``ValueError``).
    max_bytes : int, optional
        Bound on the bytes one store holds (default: see
        :class:`~connectome_dask.cache.memory.MemoryStore`).

    Examples
    --------
    >>> from connectome_dask import Source, CacheToRam, meta
    >>> class Numbers(Source):
    ...     @meta
    ...     def ids():
    ...         return [1, 2]
    ...     def value(i):
    ...         return i * 10
    >>> cache = CacheToRam(size=100)
    >>> ds = Numbers() >> cache
    >>> ds.value(2), ds.value(2)  # computed, then a hit
    (20, 20)
    >>> cache._clear()  # empty every store this layer created in this process
    """

    _all_by_default = True

    def __init__(self, names=None, *, size=None, impure=False, max_bytes=None):
        super().__init__(names, impure)
        self._size, self._max_bytes = size, max_bytes
        self._uids = []

    def _binding(self):
        uid = uuid.uuid4().hex
        self._uids.append(uid)
        return RamBinding(uid, self._size, self._max_bytes)

    def _clear(self):
        """Empty every store this layer created (in this process)."""
        for uid in self._uids:
            store = _STORES.get(uid)
            if store is not None:
                store.clear()

    def __reduce__(self):
        names = None if self._names is None else sorted(self._names)
        return _ram, (names, self._size, self._impure, self._max_bytes)

    def __repr__(self):
        return f"CacheToRam({'' if self._names is None else ', '.join(sorted(self._names))})"


def _ram(names, size, impure, max_bytes):
    return CacheToRam(names, size=size, impure=impure, max_bytes=max_bytes)


class CacheToDisk(CacheLayer):
    """Persist field values as HDF5 files under ``root``: one immutable file per field × key,
    named by the field's token, published atomically (docs/cache-layout.md).

    Values come back with the types they were computed with (tuples, int dict keys, numpy dtypes).
    A corrupt entry is recomputed with a ``CacheWarning``; a root that cannot be written makes the
    layer compute without storing, with one warning.

    Parameters
    ----------
    root : str or os.PathLike
        The cache root, created if needed: a folder, or an fsspec URL (``s3://bucket/prefix``,
        ``gs://...``, ``memory://...``; see docs/clusters.md, "No shared file system"). A root holding
        anything but a cache raises :class:`~connectome_dask.cache.hdf5.ForeignRoot` (a
        ``FileNotFoundError``).
    names : str or list of str
        Fields to cache. None caches nothing (connectome's rule); unknown names are ignored. A name
        that cannot be a folder name (``""``, ``".."``, ``"a/b"``, NUL, over 255 bytes) raises
        :class:`~connectome_dask.exceptions.FieldNameError`.
    serializer : optional
        A :mod:`connectome_dask.serializers` policy or a sequence of them. Default: native HDF5
        types only (arrays, numbers, str, bytes, None, tuples/lists/dicts of them); anything else
        raises :class:`~connectome_dask.exceptions.SerializationError`. Only ``PickleSerializer``
        pickles.
    compression : {None, "gzip", "lzf"} or an hdf5plugin filter
        Compression of arrays of 4 KiB or more.
    impure : bool
        Allow caching fields that depend on an ``@impure`` function (else ``ValueError``).
    labels : optional
        Accepted for connectome compatibility; not used.
    storage_options : dict, optional
        For a URL root: options of its fsspec file system (``key``, ``secret``,
        ``client_kwargs={"endpoint_url": ...}``, ...). They travel with the tasks.
    local : str or os.PathLike, optional
        For a URL root: a node-local folder that keeps a copy of every entry read or written, served
        from there afterwards (entries never change, so the copy never goes stale).

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from connectome_dask import CacheToDisk, Source, meta
    >>> class Grids(Source):
    ...     @meta
    ...     def ids():
    ...         return ["a", "b"]
    ...     def grid(key):
    ...         return np.zeros((2, 3), np.int16)
    ...     def spacing(key):
    ...         return (1.0, 2.5)
    >>> root = tempfile.mkdtemp()
    >>> ds = Grids() >> CacheToDisk(root, ["grid", "spacing"], compression="gzip")
    >>> ds.spacing("a")  # computed and stored
    (1.0, 2.5)
    >>> fresh = Grids() >> CacheToDisk.simple("grid", "spacing", root=root)
    >>> fresh.spacing("a"), fresh.grid("a").dtype  # read back from disk: a tuple stays a tuple
    ((1.0, 2.5), dtype('int16'))
    """

    def __init__(self, root, names=None, *, serializer=None, compression=None, impure=False, labels=None,
                 storage_options=None, local=None):
        super().__init__(names, impure)
        for name in self._names or ():
            check_field_name(name, "CacheToDisk")
        self._store = as_store(root, compression=compression, serializer=serializer, storage_options=storage_options,
                               local=local, layer="CacheToDisk")
        self._options = dict(serializer=serializer, compression=compression, labels=labels,
                             storage_options=storage_options, local=local)

    @classmethod
    def simple(cls, *names, root, serializer=None, compression=None, labels=None, storage_options=None, local=None):
        """``CacheToDisk.simple('image', 'mask', root='cache/')``: connectome's form, the fields
        to cache as positional arguments (see the class docstring for the options)."""
        return cls(root, names, serializer=serializer, compression=compression, labels=labels,
                   storage_options=storage_options, local=local)

    def _binding(self):
        return DiskBinding(self._store)

    @property
    def root(self):
        return self._store.root

    def __reduce__(self):
        names = None if self._names is None else sorted(self._names)
        return _disk, (self._store.root, names, self._impure, self._options)

    def __repr__(self):
        return f"CacheToDisk({', '.join(sorted(self._names or ()))})"


def _disk(root, names, impure, options):
    return CacheToDisk(root, names, impure=impure, **options)
