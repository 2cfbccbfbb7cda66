"""Dataset layers: ``Filter``, ``CheckIds``, ``Merge``, ``Join`` (+ ``JoinMode``), ``GroupBy``.

They change which entries a pipeline has, never how an entry is computed, so every field keeps
its token and its cache entries (``routing``). What they need from the whole dataset — the
filtered ids, which dataset owns a key, the join and group tables — is a :class:`Table` node:
computed once per pipeline object and process, and one shared task in a dask graph. ``Merge``
reads its datasets' ids when it is built (connectome does the same); the others read the ids
lazily, on first use.
"""

import enum
import hashlib
import inspect

from ..exceptions import DependencyError, DuplicateKeys, FieldError, HashError, InvalidArgument, UnknownKey
from ..hashing import combine, fingerprint, tokenize
from ..nodes import Call, Const, Input, Missing, raw_inputs, walk
from ..plan import Plan, _broken
from ..routing import Gather, Group, Guard, Scope, Switch, Table
from .base import CallableLayer, Layer

__all__ = ["Filter", "CheckIds", "Merge", "Join", "JoinMode", "GroupBy"]


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


def _where(ids, flags):
    return tuple(key for key, keep in zip(ids, flags) if keep)


def _sorted_keys(table):
    return tuple(sorted(table))


def _as_tuple(*values):
    return values


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
        return Plan(fields, prev.metas | {self._keys}, prev.persistent, prev.virtual, prev.dropped,
                    prev.backward + (dict,), prev.broken + tuple(_broken("Filter", {self._keys: node})))

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
        return Plan(fields, prev.metas, prev.persistent, None, prev.dropped, prev.backward + (dict,), prev.broken)

    def __repr__(self):
        return "CheckIds()"


def _no_backward(layer):
    def back(nodes):
        if nodes:
            raise FieldError(f"{layer}: {sorted(nodes)} cannot be passed back through {layer}; decorate the part "
                             f"of the pipeline after it")
        return nodes

    return back


def _datasets(layers, layer):
    if not layers:
        raise TypeError(f"{layer}() needs at least one dataset")
    for item in layers:
        if not isinstance(item, CallableLayer):
            raise TypeError(f"{layer}: {item!r} is not a dataset (a Source or a chain starting with one)")
    return [item._plan() for item in layers]


class Merge(CallableLayer):
    """Concatenate datasets: each key is routed to the dataset that owns it.

    The datasets must share exactly one property (meta field), their keys field (``ids``), and
    no key may be in two of them. The merged ``ids`` is the sorted union; the fields are the ones
    every dataset has. A merged field keeps the token of its dataset's field, so caches are
    shared with the unmerged pipelines. The ids are read when the ``Merge`` is built.

    Examples
    --------
    >>> from connectome_dask import Merge, Source, meta
    >>> class SiteA(Source):
    ...     @meta
    ...     def ids():
    ...         return ["a1", "a2"]
    ...     def site(key):
    ...         return "A"
    >>> class SiteB(Source):
    ...     @meta
    ...     def ids():
    ...         return ["b1"]
    ...     def site(key):
    ...         return "B"
    >>> both = Merge(SiteA(), SiteB())
    >>> both.ids, both.site("b1")
    (('a1', 'a2', 'b1'), 'B')
    """

    def __init__(self, *layers):
        plans = _datasets(layers, "Merge")
        metas = [p.metas for p in plans]
        if any(m != metas[0] for m in metas):
            raise ValueError(f"Merge: all datasets must have the same properties (meta fields); got "
                             f"{[sorted(m) for m in metas]}")
        if len(metas[0]) != 1:
            what = "no properties" if not metas[0] else f"several properties {sorted(metas[0])}"
            raise ValueError(f"Merge: the datasets have {what}; Merge needs exactly one, the keys field (ids)")
        (keys,) = metas[0]
        route, duplicated = {}, set()
        for index, layer in enumerate(layers):
            for key in getattr(layer, keys):
                if key in route:
                    duplicated.add(key)
                route[key] = index
        if duplicated:
            raise DuplicateKeys(f"Merge: the ids {sorted(duplicated, key=repr)[:10]} are in several datasets; "
                                "make them unique (e.g. prefix them with a Transform of id and ids)")
        self._layers, self._keys, self._route = layers, keys, route

    def _connect(self, prev):
        plans = [layer._plan() for layer in self._layers]
        route = Const("route", self._route, what="the routing table of Merge")
        common = set.intersection(*[set(p.fields) for p in plans]) - {self._keys}
        fields = {name: Switch(name, route, [p.fields[name] for p in plans], "Merge") for name in sorted(common)}
        fields[self._keys] = Const(self._keys, tuple(sorted(self._route)), what="the ids of Merge")
        return Plan(fields, {self._keys}, {"id", self._keys}, None, (), (_no_backward("Merge"),))

    def __repr__(self):
        inner = "".join(f"    {layer!r},\n" for layer in self._layers)
        return f"Merge(\n{inner})"


class JoinMode(enum.Enum):
    """How ``Join`` treats keys present on one side only."""

    inner = "inner"
    left = "left"
    right = "right"
    outer = "outer"


def _join_mode(how):
    if isinstance(how, JoinMode):
        return how
    if isinstance(how, str):
        try:
            return JoinMode[how.lower()]
        except KeyError:
            raise UnknownKey(f"Join: unknown how={how!r}; use 'inner', 'left', 'right' or 'outer' "
                             "(or a JoinMode)") from None
    raise TypeError(f"Join: how must be a str or a JoinMode, got {how!r}")


def hash_key(values):
    """The key of several str values: sha256 over their sha256 digests (as connectome, so group and
    join ids stay the same); other values hash by their canonical token."""
    if all(isinstance(v, str) for v in values):
        return hashlib.sha256(b"".join(hashlib.sha256(v.encode()).digest() for v in values)).hexdigest()
    return hashlib.sha256(tokenize(tuple(values)).encode()).hexdigest()


def default_key(values):
    """``Join``'s default key: the value itself for one column, else :func:`hash_key`."""
    return values[0] if len(values) == 1 else hash_key(values)


class _ToKey:
    """The new key of an entry from its ``on`` values: ``to_key(tuple of values)``."""

    def __init__(self, to_key):
        self.to_key = to_key

    def __call__(self, *values):
        return self.to_key(values)

    def __connectome_token__(self):
        return combine("to_key", fingerprint(self.to_key))


def _index(ids, keys, side):
    out = {}
    for old, key in zip(ids, keys):
        if key in out:
            raise DuplicateKeys(f"Join: two entries of the {side} dataset ({out[key]['id']!r} and {old!r}) have "
                                f"the key {key!r}; the key function must give one key per entry")
        out[key] = {"id": old}
    return out


def _join_table(left_ids, left_keys, right_ids, right_keys):
    """Every key of either side → (left entry or None, right entry or None)."""
    left, right = _index(left_ids, left_keys, "left"), _index(right_ids, right_keys, "right")
    return {k: (left.get(k), right.get(k)) for k in {**left, **right}}


def _join_ids(how, table):
    """The sorted keys of a join mode; the other keys of the table stay accessible, as connectome."""
    keep = {"inner": lambda l, r: l and r, "left": lambda l, r: l, "right": lambda l, r: r}.get(how)
    return tuple(sorted(k for k, (l, r) in table.items() if keep is None or keep(l, r)))


class Join(CallableLayer):
    """Join two datasets on the values of ``on`` fields.

    The new key of an entry is ``to_key(tuple of its on values)`` (default: the value itself for
    one field, a sha256 hex digest for several); ``ids`` is the sorted tuple of new keys. The
    fields are ``id``, ``ids``, the ``on`` fields and every other field of both sides (the side
    without the key gives None in left/right/outer joins). Each side's fields keep their tokens,
    so caches are shared with the unjoined pipelines. The key table is computed on first use.

    Parameters
    ----------
    left, right : datasets with ``ids``
    on : str or list of str
        Fields of both sides (not ``id``). Other fields may not be in both sides.
    how : {"inner", "left", "right", "outer"} or JoinMode
    to_key : callable, optional
    verbose : bool
        Progress bars while the key table is computed.
    cache : optional
        Accepted for connectome compatibility; the table is kept in RAM.

    Examples
    --------
    >>> from connectome_dask import Join, Source, meta
    >>> class Scans(Source):
    ...     @meta
    ...     def ids():
    ...         return ["s1", "s2"]
    ...     def patient(key):
    ...         return {"s1": "p1", "s2": "p2"}[key]
    ...     def scan(key):
    ...         return "scan of " + key
    >>> class Records(Source):
    ...     @meta
    ...     def ids():
    ...         return ["r1"]
    ...     def patient(key):
    ...         return "p1"
    ...     def age(key):
    ...         return 42
    >>> joined = Join(Scans(), Records(), on="patient", how="left")
    >>> joined.ids, joined.scan("p1"), joined.age("p1"), joined.age("p2")
    (('p1', 'p2'), 'scan of s1', 42, None)
    """

    def __init__(self, left, right, on, *, how="inner", to_key=None, verbose=False, cache=None):
        on = [on] if isinstance(on, str) else list(on)
        if "id" in on:
            raise ValueError("Join: joining on 'id' is not supported; join on fields (the new id is built from "
                             "their values)")
        self._mode = _join_mode(how)
        left_plan, right_plan = _datasets((left, right), "Join")
        missing = sorted({n for n in on if n not in left_plan.fields or n not in right_plan.fields})
        if missing:
            raise ValueError(f"Join: the fields {missing} are not in both datasets")
        for side, plan in (("left", left_plan), ("right", right_plan)):
            dataset_ids(plan, f"Join ({side})")
        plain = [{n for n in p.fields if n not in p.metas and n != "id"} for p in (left_plan, right_plan)]
        conflicts = sorted((plain[0] & plain[1]) - set(on))
        if conflicts:
            raise ValueError(f"Join: both datasets have the fields {conflicts}; rename or drop them on one side "
                             "(e.g. with a Transform) before joining")
        self._left, self._right, self._on = left, right, on
        self._to_key, self._verbose = to_key if to_key is not None else default_key, verbose

    def _connect(self, prev):
        plans = (self._left._plan(), self._right._plan())
        gathers = []
        for side, plan in zip(("left", "right"), plans):
            per = Call("key", _ToKey(self._to_key), [plan.fields[n] for n in self._on], layer="Join")
            check_pure(per, "Join")
            progress = f"Computing {side} join keys" if self._verbose else None
            gathers += [plan.fields["ids"], Gather(f"{side}-keys", plan.fields["ids"], per, progress)]
        table = Table("join", _join_table, gathers, layer="Join")
        ids = Table("ids", _join_ids, [Const("how", self._mode.value), table], layer="Join")
        fields = {"id": Input("id"), "ids": ids}
        for index, plan in enumerate(plans):
            for name, node in plan.fields.items():
                if name in plan.metas or name == "id" or name in fields:
                    continue
                if name in self._on:
                    options = (plans[0].fields[name], plans[1].fields[name])
                else:
                    options = (node, None) if index == 0 else (None, node)
                fields[name] = Scope(name, table, options, "Join")
        return Plan(fields, {"ids"}, {"id", "ids"}, None, (), (_no_backward("Join"),))

    def __repr__(self):
        return f"Join(on={self._on!r}, how={self._mode.value!r})"


def _group_key(value, layer="GroupBy"):
    if isinstance(value, str):
        return value
    if isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value):
        return hash_key(value)
    raise TypeError(f"{layer}: cannot use {value!r} (of type {type(value).__name__}) as a group key; `by` must "
                    "give a str or a tuple of str")


def _group_table(ids, keys):
    groups = {}
    for old, key in zip(ids, keys):
        groups.setdefault(_group_key(key), []).append(old)
    return {key: tuple({"id": old} for old in sorted(members)) for key, members in groups.items()}


class GroupBy(Layer):
    """Group entries by the value of ``by``: one new entry per group.

    The new ``id`` is the group key (a str, or a sha256 hex digest of a tuple of str) and
    ``ids`` the sorted tuple of group keys. Every other field becomes a dict ``{old id: value}``
    over the group's entries, sorted by old id; each value keeps its token, so caches are shared.

    Parameters
    ----------
    by : str, list of str or callable
        A field, several fields (their values form the key), or a function whose arguments
        name fields.

    Examples
    --------
    >>> from connectome_dask import GroupBy, Source, meta
    >>> class Slices(Source):
    ...     @meta
    ...     def ids():
    ...         return ["s1", "s2", "s3"]
    ...     def patient(key):
    ...         return {"s1": "p1", "s2": "p2", "s3": "p1"}[key]
    ...     def number(key):
    ...         return int(key[1])
    >>> grouped = Slices() >> GroupBy("patient")
    >>> grouped.ids, grouped.number("p1")
    (('p1', 'p2'), {'s1': 1, 's3': 3})
    """

    def __init__(self, by):
        if isinstance(by, str):
            self._names, self._func = [by], None
        elif callable(by):
            self._names, self._func = argument_names(by, "GroupBy"), by
        elif isinstance(by, (list, tuple)) and by and all(isinstance(n, str) for n in by):
            self._names, self._func = list(by), _as_tuple
        else:
            raise TypeError(f"GroupBy: `by` must be a field name, a list of field names or a function, got {by!r}")
        self._by = by

    def _per(self, prev):
        dataset_ids(prev, "GroupBy")
        if not set(prev.fields) - {"id", "ids"}:
            raise RuntimeError("GroupBy: the previous layer has no field besides id and ids; there is nothing to "
                               "group")
        nodes = field_nodes(prev, self._names, "GroupBy")
        per = nodes[0] if self._func is None else Call("by", self._func, nodes, layer="GroupBy")
        check_pure(per, "GroupBy")
        return per

    def _prepare(self, prev):
        self._per(prev)

    def _connect(self, prev):
        per = self._per(prev)
        ids = prev.fields["ids"]
        table = Table("groups", _group_table, [ids, Gather("group-keys", ids, per)], layer="GroupBy")
        fields = {"id": Input("id"), "ids": Table("ids", _sorted_keys, [table], layer="GroupBy")}
        for name, node in prev.fields.items():
            if name not in fields:
                fields[name] = node if name in prev.metas else Group(name, table, node, "GroupBy")
        metas = (prev.metas - {"id"}) | {"ids"}
        return Plan(fields, metas, {"id", "ids"}, None, (), (_no_backward("GroupBy"),), prev.broken)

    def __repr__(self):
        return f"GroupBy({self._by!r})"

