"""``Merge`` and ``Join`` (+ ``JoinMode``): datasets combined into one.

``Merge`` routes each key to the dataset that owns it (it reads its datasets' ids when it is built,
as connectome does); ``Join`` pairs the entries of two datasets on key columns, its table read
lazily on first use. Fields keep their tokens (``routing``), so caches are shared with the
datasets on their own.
"""

import enum

from ..exceptions import DuplicateKeys, UnknownKey
from ..hashing import combine, fingerprint
from ..nodes import Call, Const, Input
from ..plan import Plan
from ..routing import Gather, Scope, Switch, Table
from .base import CallableLayer
from .dataset import check_pure, dataset_ids, hash_key, no_backward

__all__ = ["Merge", "Join", "JoinMode"]


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
        return Plan(fields, metas={self._keys}, persistent={"id", self._keys}, backward=(no_backward("Merge"),))

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
        return Plan(fields, metas={"ids"}, persistent={"id", "ids"}, backward=(no_backward("Join"),))

    def __repr__(self):
        return f"Join(on={self._on!r}, how={self._mode.value!r})"
