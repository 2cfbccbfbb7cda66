"""Cache layers: ``CacheToRam``, ``CacheToDisk`` and ``CacheColumns`` (``columns``).

A cache layer replaces each cached field's node by a ``Cached`` node around it: same token
(caches are transparent to hashing), but evaluation first asks the layer's store for
``(field, token)`` (:func:`~connectome_dask.cache.cached.cached_call`). The node holds the store
itself; a store pickles as its configuration and a node unpickled on a dask worker resolves it to
that worker process's instance (:func:`~connectome_dask.cache.store.local`):

* ``CacheToRam`` makes a new :class:`~connectome_dask.cache.memory.MemoryStore` each time it is
  connected into a chain, as in connectome (one ``CacheToRam`` placed in two chains does not
  share entries). All of them share the process's RAM budget and are freed with the last
  pipeline built with them. On a worker it is the worker's RAM (never ``Worker.data``).
* ``CacheToDisk`` uses one store for every chain: an ``HDF5Store`` (a root folder and options; no
  open handles), a :class:`~connectome_dask.cache.remote.RemoteStore` (a URL root), or any
  :class:`~connectome_dask.cache.store.Store` given instead of a root, so
  every worker writes entries straight into the shared root.

At chain construction each cache layer checks that no cached field has an ``@impure`` ancestor
(``ValueError`` unless ``impure=True``).
"""

import dataclasses
import weakref

from ..cache.memory import MemoryStore, check_size
from ..cache.root import check_field_name
from ..cache.store import Store, as_store, local
from ..exceptions import InvalidArgument
from ..nodes import Cached, Input, walk
from ..stamps import attach
from .base import Layer, as_names

__all__ = ["CacheLayer", "CacheToRam", "CacheToDisk"]


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
        """The fields to cache: unknown names are ignored, as connectome does, and so is a raw input
        (the key ``id`` itself): there is nothing to compute."""
        if self._names is None:
            names = list(prev.fields) if self._all_by_default else []
        else:
            names = [n for n in prev.fields if n in self._names]
        return [n for n in names if not isinstance(prev.fields[n], Input)]

    def _new_store(self):
        """The store of one connection into a chain."""
        raise NotImplementedError

    def _nodes(self, prev, store):
        """The nodes of the cached fields, read through ``store``."""
        return {name: Cached(name, prev.fields[name], store) for name in self._cached_names(prev)}

    def _connect(self, prev):
        fields = dict(prev.fields)
        fields.update(self._nodes(prev, local(self._new_store())))
        return dataclasses.replace(prev, fields=fields, backward=prev.backward + (dict,))

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
        Least-recently-used entries kept per field; None keeps all (up to the RAM budget).
    impure : bool
        Allow caching fields that depend on an ``@impure`` function (else ``ValueError``).
    store : Store, optional
        Use this store (for every chain the layer is connected into) instead of a new
        ``MemoryStore`` per chain; e.g. ``MemoryStore(budget=Budget(2**30))`` for a bound of its own.

    The bytes held by every ``CacheToRam`` of a process share one budget, the dask config value
    ``connectome_dask.ram-budget`` (bytes, ``"4 GiB"``, or a fraction of the memory: ``"25%"``,
    the default); least recently used entries go first, whichever layer holds them.
    ``connectome_dask.ram_usage()`` (``ram_usage(client)``: per worker) shows what is held.

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

    def __init__(self, names=None, *, size=None, impure=False, store=None, max_bytes=None):
        super().__init__(names, impure)
        check_size(size)
        if max_bytes is not None:
            raise InvalidArgument("CacheToRam: max_bytes is gone: every CacheToRam of a process shares one RAM "
                                  "budget; set it with dask.config.set({'connectome_dask.ram-budget': '4 GiB'}), or "
                                  "pass store=MemoryStore(budget=Budget(max_bytes)) for a bound of this layer's own")
        if store is not None and not isinstance(store, Store):
            raise InvalidArgument(f"CacheToRam: store must be a connectome_dask.cache.store.Store, got "
                                  f"{type(store).__name__}")
        self._size, self._store = size, store
        self._stores = weakref.WeakSet()

    def _new_store(self):
        store = MemoryStore(self._size) if self._store is None else self._store
        self._stores.add(store)
        return store

    def _clear(self):
        """Empty every store this layer created (in this process)."""
        for store in list(self._stores):
            clear = getattr(store, "clear", None)
            if clear is not None:
                clear()

    def __reduce__(self):
        names = None if self._names is None else sorted(self._names)
        return _ram, (names, self._size, self._impure, self._store)

    def __repr__(self):
        return f"CacheToRam({'' if self._names is None else ', '.join(sorted(self._names))})"


def _ram(names, size, impure, store):
    return CacheToRam(names, size=size, impure=impure, store=store)


def _root_store(layer, root, **options):
    """The store of a cache root (``as_store``: a folder, a URL), or ``root`` itself if it is a
    ``Store``: then it has its own options, and giving any raises ``InvalidArgument``."""
    if not isinstance(root, Store):
        return as_store(root, layer=layer, **options)
    if any(value is not None for value in options.values()):
        raise InvalidArgument(f"{layer}: serializer and compression (and storage_options, local) are options of the "
                              f"store; pass them to the store itself, not with the store {root!r}")
    return root


class CacheToDisk(CacheLayer):
    """Persist field values as HDF5 files under ``root``: one immutable file per field × key,
    named by the field's token, published atomically (docs/cache-layout.md).

    Values come back with the types they were computed with (tuples, int dict keys, numpy dtypes).
    A corrupt entry is recomputed with a ``CacheWarning``; a root that cannot be written makes the
    layer compute without storing, with one warning.

    Parameters
    ----------
    root : str, os.PathLike or Store
        The cache root, created if needed: a folder, or an fsspec URL (``s3://bucket/prefix``,
        ``gs://...``, ``memory://...``; see docs/clusters.md, "No shared file system"). A root holding
        anything but a cache raises :class:`~connectome_dask.cache.hdf5.ForeignRoot` (a
        ``FileNotFoundError``). A :class:`~connectome_dask.cache.store.Store` instance is used as it
        is (its own options; then ``serializer``, ``compression``, ``storage_options`` and ``local``
        must be left out): see docs/api.md, "Writing a store".
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
        self._store = _root_store("CacheToDisk", root, compression=compression, serializer=serializer,
                                  storage_options=storage_options, local=local)
        self._options = dict(labels=labels)

    @classmethod
    def simple(cls, *names, root, serializer=None, compression=None, labels=None, storage_options=None, local=None):
        """``CacheToDisk.simple('image', 'mask', root='cache/')``: connectome's form, the fields
        to cache as positional arguments (see the class docstring for the options)."""
        return cls(root, names, serializer=serializer, compression=compression, labels=labels,
                   storage_options=storage_options, local=local)

    def _new_store(self):
        return self._store

    def _connect(self, prev):
        plan = super()._connect(prev)
        for name in self._cached_names(prev):
            attach(prev.fields[name], self.root)  # the stamp index lives in this root
        return plan

    @property
    def root(self):
        """The store's root (None for a store without one)."""
        return getattr(self._store, "root", None)

    def __reduce__(self):
        names = None if self._names is None else sorted(self._names)
        return _disk, (self._store, names, self._impure, self._options)

    def __repr__(self):
        return f"CacheToDisk({', '.join(sorted(self._names or ()))})"


def _disk(store, names, impure, options):
    return CacheToDisk(store, names, impure=impure, **options)
