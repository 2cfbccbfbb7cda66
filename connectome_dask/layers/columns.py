"""``CacheColumns``: a disk cache for many small entries, stored one HDF5 file per *shard*.

The previous layer's ``ids`` are sorted and cut into shards (``shard_size``: None → one shard;
an int n → n consecutive ids; a float f → ``ceil(f * len(ids))``). Reading one id loads — or
computes and writes — its whole shard: a tuple of the field's values in id order, stored under
the combined token of its entries, so editing the code or parameters still invalidates it. A
loaded shard is kept in a per-process RAM table so the other ids of the shard are served from
memory. Field tokens are unchanged (the node is a ``Cached`` node, transparent to hashing).
"""

import math
import threading

from ..cache.root import check_field_name
from ..cache.store import as_store
from ..cache.cached import cached_call
from ..evaluate import Evaluation
from ..exceptions import DependencyError
from ..hashing import combine
from ..nodes import Cached, Input, walk
from .cache import CacheLayer

__all__ = ["CacheColumns"]

_SHARDS = {}  # (root, field, shard token) -> {id: value}, per process
_SHARDS_LOCK = threading.Lock()


class ShardBinding:
    """The HDF5 store of a ``CacheColumns`` layer plus how its ids are cut into shards."""

    __slots__ = ("store", "shard_size", "ids_node", "token", "_shards")

    def __init__(self, store, shard_size, ids_node):
        self.store, self.shard_size, self.ids_node = store, shard_size, ids_node
        self.token = combine("columns", str(store.root))
        self._shards = None

    def __reduce__(self):
        return ShardBinding, (self.store, self.shard_size, self.ids_node)

    def shards(self):
        """``({id: shard index}, [tuple of ids per shard])``, computed once."""
        if self._shards is None:
            ids = sorted(Evaluation({}).value(self.ids_node))
            size = self.shard_size
            if size is None:
                size = max(len(ids), 1)
            elif isinstance(size, float):
                size = max(1, math.ceil(size * len(ids)))
            groups = [tuple(ids[i:i + size]) for i in range(0, len(ids), size)]
            self._shards = ({k: i for i, group in enumerate(groups) for k in group}, groups)
        return self._shards

    def shard_of(self, key, layer):
        index, groups = self.shards()
        try:
            return groups[index[key]]
        except (KeyError, TypeError):
            raise ValueError(f"{layer}: the key {key!r} is not in ids; CacheColumns only caches the ids "
                             "of the previous layer") from None


class Sharded(Cached):
    """A field cached in shards: computing one entry loads or computes its whole shard."""

    __slots__ = ()

    def _shard(self, ev):
        binding = self.binding
        group = binding.shard_of(ev.value(Input("id")), "CacheColumns")
        evaluations = [Evaluation({"id": k}) for k in group]
        token = combine(*(e.token(self.inner) for e in evaluations))
        return group, evaluations, token

    def is_stored(self, ev):
        _, _, token = self._shard(ev)
        return (self.binding.store.root, self.name, token) in _SHARDS or self.binding.store.contains(self.name, token)

    def compute(self, ev):
        key = ev.value(Input("id"))
        group, evaluations, token = self._shard(ev)
        memo_key = (self.binding.store.root, self.name, token)
        values = _SHARDS.get(memo_key)
        if values is None:
            stored = cached_call(_ShardStore(self.binding.store), self.name, token,
                                 lambda: tuple(key_ev.value(self.inner) for key_ev in evaluations))
            values = dict(zip(group, stored))
            with _SHARDS_LOCK:
                _SHARDS[memo_key] = values
        return values[key]


class _ShardStore:
    """The HDF5 store as a store of shards: a shard is a tuple that the serializer judges item by item."""

    __slots__ = ("store", "persistent")

    def __init__(self, store):
        self.store, self.persistent = store, store.persistent

    def get(self, field, token):
        return self.store.get(field, token)

    def set(self, field, token, value):
        return self.store.set(field, token, value, each=True)


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
    storage : str or os.PathLike
        The cache root of the shards: a folder or an fsspec URL, as for ``CacheToDisk`` (also
        ``storage_options`` and ``local``).
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
        self._store = as_store(storage, compression=compression, serializer=serializer,
                               storage_options=storage_options, local=local, layer="CacheColumns")
        self._shard_size, self._args = shard_size, (index, storage, serializer)
        self._options = dict(verbose=verbose, shard_size=shard_size, labels=labels, compression=compression,
                             storage_options=storage_options, local=local)

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

    def _connect(self, prev):
        plan = super()._connect(prev)
        binding = ShardBinding(self._store, self._shard_size, prev.fields.get("ids"))
        for name in self._cached_names(prev):
            plan.fields[name] = Sharded(name, prev.fields[name], binding)
        return plan

    def _binding(self):
        return None

    def __reduce__(self):
        return _columns, (self._args, sorted(self._names), self._impure, self._options)

    def __repr__(self):
        return f"CacheColumns({', '.join(sorted(self._names))})"


def _columns(args, names, impure, options):
    return CacheColumns(*args, names, impure=impure, **options)
