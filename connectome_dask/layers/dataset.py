"""Dataset layers that select entries: ``Filter`` and ``CheckIds``; and what every dataset layer
(these, ``merge``, ``group``, ``split``) shares.

Dataset layers change which entries a pipeline has, never how an entry is computed, so every
field keeps its token and its cache entries (``routing``). What they need from the whole dataset —
the filtered ids, which dataset owns a key, the join and group tables — is a :class:`Table` node:
computed once per pipeline object and process, and one shared task in a dask graph.
"""

import hashlib
import inspect
from dataclasses import replace

from ..exceptions import DependencyError, FieldError, HashError, InvalidArgument
from ..hashing import combine, tokenize
from ..nodes import Call, Missing, raw_inputs, walk
from ..plan import _broken
from ..routing import Gather, Guard, Table
from .base import Layer

__all__ = ["Filter", "CheckIds"]


def argument_names(func, layer):
    """The field names a predicate-like function reads: its plain arguments."""
    if not callable(func):
        raise TypeError(f"{layer}: {func!r} is not callable; pass a function whose arguments name fields")
    names = []
    for p in inspect.signature(func).parameters.values():
        if p.kind is not p.POSITIONAL_OR_KEYWORD:
            raise ValueError(f"{layer}: argument {p.name!r} of {func!r} is {p.kind.description}; all arguments "
                             "must be plain (positional-or-keyword) field names")
        if p.default is not p.empty:
            raise ValueError(f"{layer}: argument {p.name!r} of {func!r} has a default value; arguments name "
                             "fields of the previous layer and cannot have defaults")
        names.append(p.name)
    return names


def field_nodes(prev, names, layer):
    """The previous layer's nodes for ``names``; ``DependencyError`` if some are missing."""
    missing = [n for n in names if n not in prev.fields]
    if missing:
        raise DependencyError(f"{layer}: the previous layer does not provide {missing}; available fields: "
                              f"{sorted(prev.fields)}")
    return [prev.fields[n] for n in names]


def dataset_ids(prev, layer):
    """The ``ids`` node of a previous layer that is a dataset; ``DependencyError`` otherwise."""
    ids = prev.fields.get("ids")
    if ids is None or prev.virtual is not None or raw_inputs([ids]):
        raise DependencyError(f"{layer}: the previous layer is not a dataset with `ids`; put {layer} after a "
                              "Source, or a chain starting with one")
    return ids


def check_pure(node, layer):
    impure = sorted({n.name for n in walk([node], inner=True) if getattr(n, "impure", False)})
    if impure:
        raise HashError(f"{layer}: the entries it selects would depend on the impure {impure}, which change on "
                        "every evaluation; use pure fields only")


def hash_key(values):
    """The key of several str values: sha256 over their sha256 digests (as connectome, so group and
    join ids stay the same); other values hash by their canonical token."""
    if all(isinstance(v, str) for v in values):
        return hashlib.sha256(b"".join(hashlib.sha256(v.encode()).digest() for v in values)).hexdigest()
    return hashlib.sha256(tokenize(tuple(values)).encode()).hexdigest()


def sorted_keys(table):
    return tuple(sorted(table))


def no_backward(layer):
    def back(nodes):
        if nodes:
            raise FieldError(f"{layer}: {sorted(nodes)} cannot be passed back through {layer}; decorate the part "
                             f"of the pipeline after it")
        return nodes

    return back


def _where(ids, flags):
    return tuple(key for key, keep in zip(ids, flags) if keep)


class _Membership:
    """``Filter.keep`` / ``Filter.drop`` predicate: whether ``id`` is (not) in a set."""

    def __init__(self, ids, keep):
        self.ids, self.keep = frozenset(ids), keep

    def __call__(self, id):  # noqa: A002 - the argument names the field
        return (id in self.ids) == self.keep

    def __connectome_token__(self):
        return combine("keep" if self.keep else "drop", tokenize(sorted(self.ids, key=repr)))


class Filter(Layer):
    """Keep the entries for which ``predicate`` is true.

    The predicate's arguments name fields of the previous layer (``id`` included); the keys field
    (``ids``) becomes the tuple of keys it accepts, in their original order. It is evaluated
    once per pipeline object. Other fields pass through with their tokens, and filtered-out
    entries stay accessible by key (add ``CheckIds`` to forbid that).

    Parameters
    ----------
    predicate : callable
        ``lambda id, label: ...``; plain arguments only, no defaults, no impure fields.
    verbose : bool
        Show a progress bar while the predicate runs over the dataset.
    keys : str
        The keys field to filter (default ``"ids"``).

    Examples
    --------
    >>> from connectome_dask import Filter, Source, meta
    >>> class Numbers(Source):
    ...     @meta
    ...     def ids():
    ...         return ["a", "b", "c"]
    ...     def value(key):
    ...         return {"a": 1, "b": 2, "c": 3}[key]
    >>> (Numbers() >> Filter(lambda value: value % 2 == 1)).ids
    ('a', 'c')
    >>> (Numbers() >> Filter.drop(["a"])).ids
    ('b', 'c')
    """

    def __init__(self, predicate, verbose=False, keys="ids"):
        self._names = argument_names(predicate, "Filter")
        if not self._names:
            raise TypeError("Filter: the predicate takes no arguments; its arguments name the fields it reads, "
                            "e.g. Filter(lambda id, label: label > 0)")
        self._predicate, self._verbose, self._keys = predicate, verbose, keys

    @classmethod
    def keep(cls, ids, verbose=False):
        """A ``Filter`` keeping only the given ``ids`` (an iterable of keys; unknown ones are ignored)."""
        return cls(_Membership(_key_set(ids, "keep"), True), verbose)

    @classmethod
    def drop(cls, ids, verbose=False):
        """A ``Filter`` dropping the given ``ids`` (an iterable of keys)."""
        return cls(_Membership(_key_set(ids, "drop"), False), verbose)

    def _per(self, prev):
        node = Call("predicate", self._predicate, field_nodes(prev, self._names, "Filter"), layer="Filter")
        check_pure(node, "Filter")
        return node

    def _prepare(self, prev):
        self._per(prev)

    def _connect(self, prev):
        per = self._per(prev)
        fields = dict(prev.fields)
        keys = prev.fields.get(self._keys)
        if keys is None:
            node = Missing(self._keys, "Filter")
        else:
            progress = "Filter" if self._verbose else None
            node = Table(self._keys, _where, [keys, Gather("filter", keys, per, progress)], layer="Filter")
        fields[self._keys] = node
        return replace(prev, fields=fields, metas=prev.metas | {self._keys}, backward=prev.backward + (dict,),
                       broken=prev.broken + tuple(_broken("Filter", {self._keys: node})))

    def __repr__(self):
        return f"Filter({', '.join(self._names)})"


def _key_set(ids, how):
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
        raise InvalidArgument(f"Filter.{how}: expects an iterable of ids (e.g. a list of str), got {ids!r}")
    return list(ids)


class CheckIds(Layer):
    """Forbid keys that are not in ``ids``: any field (``id`` included) raises
    :class:`~connectome_dask.exceptions.UnknownKey` (a ``KeyError``) for them. Tokens are unchanged.

    Examples
    --------
    >>> from connectome_dask import CheckIds, Filter, Source, meta
    >>> class Letters(Source):
    ...     @meta
    ...     def ids():
    ...         return ["a", "b"]
    ...     def upper(key):
    ...         return key.upper()
    >>> checked = Letters() >> Filter.keep(["a"]) >> CheckIds()
    >>> checked.upper("a")
    'A'
    >>> checked.upper("b")
    Traceback (most recent call last):
    ...
    connectome_dask.exceptions.UnknownKey: CheckIds: unknown key 'b'; CheckIds allows only the keys in ids
    """

    def _prepare(self, prev):
        dataset_ids(prev, "CheckIds")

    def _connect(self, prev):
        allowed = Table("ids", frozenset, [dataset_ids(prev, "CheckIds")], layer="CheckIds")
        fields = {name: node if name in prev.metas else Guard(name, node, allowed, "CheckIds")
                  for name, node in prev.fields.items()}
        return replace(prev, fields=fields, virtual=None, backward=prev.backward + (dict,))

    def __repr__(self):
        return "CheckIds()"
