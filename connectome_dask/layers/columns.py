"""``CacheColumns``: a disk cache for many small entries, stored one entry per *shard*.

The previous layer's ``ids`` are sorted and cut into shards (``shard_size``: None → one shard;
an int n → n consecutive ids; a float f → ``ceil(f * len(ids))``). A cached field becomes three
plain nodes, so that the cache is an ordinary ``Cached`` node over an ordinary store:

* :class:`Shard`, a routing node (as ``routing.Group``): the tuple of the field's values for every
  id of the entry's shard, in id order; its token is the combination of theirs, so editing the
  code or a parameter still invalidates the shard;
* ``Cached(name, Shard, ShardStore)``: the shard loaded, or computed and stored, like any entry;
* :class:`Pick`: the entry's own value in the shard. It is transparent to hashing (its token is
  the field's token without the cache), and its task key is salted like a ``Cached`` node's.

:class:`ShardStore` is the store of shards: a persistent store (an ``HDF5Store`` root) whose
serializer judges each value of a shard, with the shards this process read or wrote kept in its
RAM budget (``cache.memory``), so the other ids of a shard are served from memory. In a dask
graph two ids of one shard share the shard's task.
"""

import inspect
import math

from ..cache.memory import MemoryStore
from ..cache.root import check_field_name
from ..cache.store import MISSING, Store
from ..evaluate import Evaluation, Symbolic
from ..exceptions import DependencyError, UnknownKey
from ..hashing import combine
from ..nodes import Cached, Const, Input, Node, walk
from ..routing import Table
from .cache import CacheLayer, _root_store

__all__ = ["CacheColumns", "ShardStore", "Shard", "Pick"]


def _cut(ids, size):
    """``({id: (shard number, position)}, shards)``: the sorted ids cut into shards, a shard being a
    tuple of raw inputs ``{"id": key}``."""
    ids = sorted(ids)
    if size is None:
        size = max(len(ids), 1)
    elif isinstance(size, float):
        size = max(1, math.ceil(size * len(ids)))
    shards = [tuple({"id": k} for k in ids[i:i + size]) for i in range(0, len(ids), size)]
    return {inputs["id"]: (n, i) for n, shard in enumerate(shards) for i, inputs in enumerate(shard)}, shards


class Shard(Node):
    """The values of ``inner`` for every id of the entry's shard (``table``: :func:`_cut`)."""

    __slots__ = ("table", "key", "inner")
    leaf = True  # its token is that of what it routes to

    def __init__(self, name, table, inner):
        self.key = Input("id")
        super().__init__(name, (table, self.key, inner))
        self.table, self.inner = table, inner

    def deps(self):
        return (self.table, self.key)

    def routed(self):
        return (self.inner,)

    def place(self, ev):
        """``(members, position)``: the raw inputs of the entry's shard and the entry's place in it."""
        key = ev.value(self.key)
        index, shards = ev.value(self.table)
        try:
            n, position = index[key]
        except (KeyError, TypeError):
            raise UnknownKey(f"CacheColumns: unknown key {key!r}; CacheColumns caches the ids of the previous layer "
                             "only (see .ids)") from None
        return shards[n], position

    def compute(self, ev):
        return tuple(ev.child(inputs).value(self.inner) for inputs in self.place(ev)[0])

    def leaf_token(self, ev):
        return combine(*(ev.child(inputs).token(self.inner) for inputs in self.place(ev)[0]))

    def kind_token(self):
        return combine("shard", Symbolic().token(self.inner))

    def shards(self):
        """``{id: shard number}`` (``persist`` gives each shard to one task)."""
        return {key: n for key, (n, _) in Evaluation({}).value(self.table)[0].items()}


class Pick(Node):
    """The entry's value in its cached shard; the token is ``inner``'s (caches are transparent)."""

    __slots__ = ("cached", "inner", "salt")
    transparent = True

    def __init__(self, name, cached, inner):
        super().__init__(name, (cached, inner))
        self.cached, self.inner = cached, inner  # cached: Cached(name, Shard, ShardStore)
        self.salt = combine("pick", cached.salt)

    def deps(self):
        shard = self.cached.inner
        return (self.cached, shard.table, shard.key)

    def compute(self, ev):
        return ev.value(self.cached)[self.cached.inner.place(ev)[1]]


class ShardStore(Store):
    """A store of shards (tuples of values) in ``store``, a persistent store whose ``set`` may take
    ``each=True`` (then its serializer judges the values one by one, as ``HDF5Store``'s). Shards read
    or written here are kept in this process's RAM budget."""

    def __init__(self, store):
        self.store, self.persistent = store, store.persistent
        self._each = "each" in inspect.signature(store.set).parameters
        self._ram = MemoryStore(uid=self.token)

    @property
    def token(self):
        return combine("shards", self.store.token)

    def get(self, field, token):
        value = self._ram.get(field, token)
        if value is MISSING:
            value = self.store.get(field, token)
            if value is not MISSING:
                self._ram.set(field, token, value)
        return value

    def contains(self, field, token):
        return self._ram.contains(field, token) or self.store.contains(field, token)

    def set(self, field, token, value):
        error = self.store.set(field, token, value, each=True) if self._each else self.store.set(field, token, value)
        self._ram.set(field, token, value)
        return error

    def clear(self):
        """Forget the shards kept in RAM (the store keeps them)."""
        self._ram.clear()

    def __reduce__(self):
        return ShardStore, (self.store,)

    def __repr__(self):
        return f"ShardStore({self.store!r})"


class CacheColumns(CacheLayer):
    """Cache ``names`` on disk in shards of ids (connectome's ``CacheColumns``), for many small
    entries: one HDF5 file per shard instead of one per entry.

    The previous layer's ``ids`` are sorted and cut into shards. Reading one id loads (or computes
    and stores) its whole shard, and keeps it in RAM for the other ids of the shard. Field tokens
    are unchanged, and a shard is stored under the combined token of its entries, so editing the
    code or a parameter still invalidates it. ``persist`` gives each shard to one task.

    Parameters
    ----------
    index : str or None
        connectome's index folder; accepted for compatibility and not used (tokens address entries).
    storage : str, os.PathLike or Store
        The cache root of the shards: a folder or an fsspec URL, as for ``CacheToDisk`` (also
        ``storage_options`` and ``local``), or a persistent :class:`~connectome_dask.cache.store.Store`
        (then ``serializer``, ``compression``, ``storage_options`` and ``local`` are its own).
    serializer : optional
        A :mod:`connectome_dask.serializers` policy (default: native HDF5 types only); it judges
        each value of a shard.
    names : str or list of str
        Fields to cache (required; an empty list caches nothing).
    shard_size : None, int or float
        None: one shard for all ids; an int n > 1: n consecutive sorted ids; a float f:
        ``ceil(f * len(ids))`` ids. ``1`` raises ``ValueError``.
    verbose, labels : optional
        Accepted for connectome compatibility.
    impure : bool
        Allow caching fields that depend on an ``@impure`` function (else ``ValueError``).
    compression : {None, "gzip", "lzf"} or an hdf5plugin filter

    Raises
    ------
    DependencyError
        At construction, if the previous layer has no ``ids``, a cached field needs more than the
        key, or one of its inputs is not provided.
    ValueError
        On access, for a key that is not in ``ids``.

    Examples
    --------
    >>> import tempfile
    >>> from connectome_dask import CacheColumns, Source, meta
    >>> class Labels(Source):
    ...     @meta
    ...     def ids():
    ...         return list(range(10))
    ...     def label(i):
    ...         return i % 3
    >>> ds = Labels() >> CacheColumns.simple("label", root=tempfile.mkdtemp(), shard_size=4)
    >>> [ds.label(i) for i in range(10)]  # 3 shard files: ids 0-3, 4-7, 8-9
    [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    """

    def __init__(self, index, storage, serializer, names, *, verbose=False, shard_size=None, labels=None,
                 impure=False, compression=None, storage_options=None, local=None):
        if names is None:
            raise ValueError("CacheColumns: name the fields to cache (an empty list caches nothing)")
        super().__init__(names, impure)
        for name in self._names:
            check_field_name(name, "CacheColumns")
        if shard_size is not None and (isinstance(shard_size, bool) or shard_size == 1 or shard_size <= 0
                                       or not isinstance(shard_size, (int, float))):
            raise ValueError(f"CacheColumns: shard_size must be None, an int > 1 or a fraction, got {shard_size!r}")
        storage = _root_store("CacheColumns", storage, compression=compression, serializer=serializer,
                              storage_options=storage_options, local=local)
        self._store, self._shards = storage, ShardStore(storage)
        self._shard_size, self._args = shard_size, (index, storage, None)
        self._options = dict(verbose=verbose, shard_size=shard_size, labels=labels)

    @classmethod
    def simple(cls, *names, root, shard_size=None, serializer=None, compression=None, storage_options=None,
               local=None):
        """``CacheColumns.simple('label', 'spacing', root='cache/', shard_size=100)``: the short
        form, shards stored under ``root``."""
        return cls(None, root, serializer, names, shard_size=shard_size, compression=compression,
                   storage_options=storage_options, local=local)

    def _prepare(self, prev):
        ids = prev.fields.get("ids")
        for name in self._cached_names(prev):  # shards are computed whole: every input must be there now
            missing = sorted({m.name for m in prev.fields[name].missing if not m.soft})
            if missing:
                raise DependencyError(f"CacheColumns: the cached field {name!r} needs {missing}, which the "
                                      "previous layers do not provide; add a layer that provides them or do not "
                                      "cache the field")
        inputs = {n.name for name in self._cached_names(prev) for n in walk([prev.fields[name]])
                  if isinstance(n, Input)}
        if ids is None or inputs - {"id"}:
            raise DependencyError("CacheColumns needs a previous layer with an 'ids' field and a single "
                                  f"key input 'id' (found inputs {sorted(inputs)}); put it after a Source")
        super()._prepare(prev)

    def _new_store(self):
        return self._shards

    def _nodes(self, prev, store):
        table = Table("shards", _cut, [prev.fields["ids"], Const("shard_size", self._shard_size)],
                      layer="CacheColumns")
        return {name: Pick(name, Cached(name, Shard(name, table, prev.fields[name]), store), prev.fields[name])
                for name in self._cached_names(prev)}

    def __reduce__(self):
        return _columns, (self._args, sorted(self._names), self._impure, self._options)

    def __repr__(self):
        return f"CacheColumns({', '.join(sorted(self._names))})"


def _columns(args, names, impure, options):
    return CacheColumns(*args, names, impure=impure, **options)
