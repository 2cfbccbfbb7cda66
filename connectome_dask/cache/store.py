"""The store interface behind every cache layer, and the per-process table of stores.

A store maps ``(field, token)`` to a value: ``field`` is the field name (layout, listing,
messages), ``token`` the hex Merkle token of the computation (32 hex digits). Every cache layer
reads and writes its store through :func:`~connectome_dask.cache.cached.cached_call` only.

Stores travel to dask workers inside the tasks' ``Cached`` nodes, so they pickle as their
configuration, never with open handles, locks or (for RAM) entries. A node unpickled in a process
resolves its store with :func:`local`: the store of this process with the same :attr:`Store.token`
(the first copy to arrive becomes it). So every task of a worker reaches one instance per store —
one RAM cache, one set of warnings — whatever store it is: RAM, HDF5 files, shards, a third
party's. Stores made by a layer in this process are held by the pipelines that use them (the
table keeps weak references: they are freed with the last such pipeline); on a ``distributed``
worker no pipeline holds them, so the table does, for the life of the worker process.

Writing a store: subclass :class:`Store`, implement ``get`` and ``set`` (and ``contains`` if a
cheaper test than ``get`` exists, ``missing`` if one listing is cheaper than a lookup per entry),
set ``persistent``, make it pickle as its configuration, and run the conformance suite
:class:`connectome_dask.testing.StoreTests` on it (docs/api.md, "Writing a store").
"""

import abc
import hashlib
import os
import pickle
import sys
import threading
import uuid
import weakref

from ..hashing import combine

__all__ = ["Store", "MISSING", "as_store", "DictStore", "local", "config_token"]


class _Missing:
    def __repr__(self):
        return "MISSING"

    def __reduce__(self):
        return "MISSING"


MISSING = _Missing()


class Store(abc.ABC):
    """A cache store: values by ``(field, token)``.

    Subclasses implement :meth:`get` and :meth:`set`; everything else has a default. The rules
    (checked by :class:`connectome_dask.testing.StoreTests`):

    * ``get`` returns the value or :data:`MISSING`; an entry that cannot be read back (corrupt,
      truncated, of another format) is a miss, with one ``CacheWarning`` per cause.
    * ``set`` returns ``None`` when the value is stored, or the exception that kept it from being
      stored (after one ``CacheWarning`` per cause): it never raises for the environment (a
      read-only root, a full disk, a denied bucket). It raises ``SerializationError`` for a value
      it refuses to encode. Storing a token twice is harmless (same token, same value); concurrent
      ``set`` and ``get`` from threads (and, for persistent stores, from processes) are safe.
    * ``persistent``: whether entries outlive the process (``persist`` counts only those as
      computed).
    * Pickling gives the store's configuration; a persistent store's copy sees the same entries.
    * ``token`` names the store: equal tokens mean the same entries. It salts the task keys of
      cached fields and is how a process finds its own instance of a store (:func:`local`).
    """

    #: whether entries outlive the process (``persist`` counts only these as computed)
    persistent = False

    @abc.abstractmethod
    def get(self, field, token):
        """The stored value, or ``MISSING`` (a corrupt entry is a miss too)."""

    @abc.abstractmethod
    def set(self, field, token, value):
        """Store ``value``; storing the same token twice is harmless. Returns ``None`` when the value
        is stored, else the error that kept it from being stored (after warning once per cause)."""

    def contains(self, field, token):
        """Whether ``get`` would find the entry (default: it is ``get``)."""
        return self.get(field, token) is not MISSING

    def missing(self, field, tokens):
        """The tokens among ``tokens`` whose entries this store does not hold, found without looking
        each up (a listing: one request for many entries), or ``None`` when a lookup per entry is
        as cheap (the default). ``persist`` asks before it runs and computes those entries without
        a lookup; an entry another writer stores meanwhile is then written again (same value)."""
        return None

    @property
    def token(self):
        """The store's identity. Default: the type and a digest of the pickled configuration;
        override it when pickling is not a pure function of where the entries live (or holds
        secrets: :func:`config_token` of what identifies them)."""
        return config_token(type(self), self)


def config_token(cls, config):
    """The token of a store of class ``cls`` configured by ``config`` (a picklable object)."""
    kind = f"{cls.__module__}.{cls.__qualname__}"
    try:
        data = pickle.dumps(config, protocol=4)
    except (pickle.PicklingError, AttributeError, TypeError):  # a class pickled by value
        import cloudpickle

        data = cloudpickle.dumps(config, protocol=4)
    return combine("store", kind, hashlib.blake2b(data, digest_size=16).hexdigest())


class DictStore(Store):
    """A store over a plain dict (no bounds; for tests and user-provided mappings). A copy unpickled
    in the process that made it is the same store (the same dict); elsewhere it starts with the
    entries the dict held when it was pickled."""

    def __init__(self, mapping=None, uid=None):
        self.mapping = {} if mapping is None else mapping
        self.uid = uid or uuid.uuid4().hex

    def get(self, field, token):
        return self.mapping.get((field, token), MISSING)

    def set(self, field, token, value):
        self.mapping[field, token] = value

    def contains(self, field, token):
        return (field, token) in self.mapping

    @property
    def token(self):
        return combine("dict", self.uid)

    def __reduce__(self):
        return DictStore, (self.mapping, self.uid)


def as_store(obj, **options):
    """The store for ``obj``: a ``Store`` is itself; a ``str`` or path is an ``HDF5Store`` root, an
    fsspec URL (``s3://bucket/prefix``, ``memory://...``) a ``RemoteStore`` root (``options``:
    ``storage_options``, ``local``, ``compression``, ``serializer``, ``layer``; see
    :func:`~connectome_dask.cache.remote.open_root`); a ``dict`` (or any mutable mapping) becomes a
    ``DictStore``."""
    if isinstance(obj, Store):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        from .remote import open_root

        return open_root(obj if isinstance(obj, str) else os.fspath(obj), **options)
    if hasattr(obj, "__getitem__") and hasattr(obj, "__setitem__"):
        return DictStore(obj)
    raise TypeError(f"cannot use {type(obj).__name__} as a cache store; pass a folder, a URL, a dict or a Store")


# --- the stores of this process ----------------------------------------------------------------

_LOCAL = weakref.WeakValueDictionary()  # token -> the store of this process
_HELD = {}  # token -> store, on a distributed worker (no pipeline holds them there)
_LOCK = threading.Lock()


def local(store):
    """This process's instance of ``store``: the one registered under its token, else ``store``
    itself, registered now (held by the process on a ``distributed`` worker, else weakly)."""
    token = store.token
    found = _LOCAL.get(token)
    if found is not None:
        return found
    with _LOCK:
        found = _LOCAL.get(token)
        if found is None:
            found = _LOCAL[token] = store
            if current_worker() is not None:
                _HELD[token] = store
    return found


def current_worker():
    """The ``distributed`` worker running this code, or None."""
    distributed = sys.modules.get("distributed")  # never imported here: a worker has imported it
    if distributed is None:
        return None
    try:
        return distributed.get_worker()
    except ValueError:
        return None
