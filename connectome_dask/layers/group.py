"""``GroupBy``: entries grouped by the value of fields, one new entry per group."""

from ..nodes import Call, Input
from ..plan import Plan
from ..routing import Gather, Group, Table
from .base import Layer
from .dataset import argument_names, check_pure, dataset_ids, field_nodes, hash_key, no_backward, sorted_keys

__all__ = ["GroupBy"]


def _as_tuple(*values):
    return values


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
        fields = {"id": Input("id"), "ids": Table("ids", sorted_keys, [table], layer="GroupBy")}
        for name, node in prev.fields.items():
            if name not in fields:
                fields[name] = node if name in prev.metas else Group(name, table, node, "GroupBy")
        metas = (prev.metas - {"id"}) | {"ids"}
        return Plan(fields, metas=metas, persistent={"id", "ids"}, backward=(no_backward("GroupBy"),),
                    broken=prev.broken)

    def __repr__(self):
        return f"GroupBy({self._by!r})"
