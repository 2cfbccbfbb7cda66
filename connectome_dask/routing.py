"""Routing nodes: fields whose value comes from other entries or other datasets.

``Filter``, ``CheckIds``, ``Merge``, ``Join``, ``GroupBy`` and ``Split`` change which entries
exist, not how an entry is computed. They are built from these nodes:

======== ==========================================================================
Table    a function of the whole dataset (filtered ``ids``, new key → old entries),
         computed once per pipeline object and process, then kept (not pickled).
Gather   the values of a per-entry node for every key of an ``ids`` node, in order.
Switch   the node of the branch that owns the entry (``Merge``), same scope.
Scope    a node evaluated for another entry: ``table[key]`` gives that entry's raw
         inputs (the old id of a ``Join`` side; the old id and part of a ``Split``).
Group    ``{old id: value}`` of a node over the entries of a group (``GroupBy``).
Guard    a node after checking that the key is in ``ids`` (``CheckIds``).
======== ==========================================================================

Tokens route too: a Switch, Scope or Guard is a leaf whose token is the token of the node it
routes to, in the scope it is evaluated in. Tokens are a true Merkle tree (``nodes``), so a
field reached through a routing layer keeps its token, and its cache entries, down to every
field computed from it. Tables and Gathers need no entry value, so they hash once and, in a
dask graph, are one task shared by every entry.
"""

from .evaluate import Symbolic
from .exceptions import UnknownKey
from .hashing import combine, tokenize
from .nodes import Call, Input, Node, static_token, walk

__all__ = ["Table", "Gather", "Switch", "Scope", "Group", "Guard"]

_NONE = object()
_ABSENT = combine("absent")  # the token of a Join side with no entry for the key


class Table(Call):
    """A ``Call`` over the whole dataset whose value is kept once computed (when it is static)."""

    __slots__ = ("_value",)

    def __init__(self, name, func, args, layer=None):
        super().__init__(name, func, args, layer=layer)
        self._value = _NONE

    def compute(self, ev):
        value = self._value
        if value is _NONE:
            value = super().compute(ev)
            if static_token(self) is not None:
                self._value = value
        return value

    def __reduce__(self):
        return Table, (self.name, self.func, self.args, self.layer)


class Gather(Node):
    """``tuple(per(key) for key in keys)``, each ``per`` evaluated as the entry ``key``."""

    __slots__ = ("keys", "per", "progress")

    def __init__(self, name, keys, per, progress=None):
        super().__init__(name, (keys, per))
        self.keys, self.per, self.progress = keys, per, progress

    def deps(self):
        return (self.keys,)

    def routed(self):
        return (self.per,)

    def compute(self, ev):
        keys = ev.value(self.keys)
        if self.progress:
            from tqdm.auto import tqdm

            keys = tqdm(keys, desc=self.progress, unit="entry")
        return tuple(ev.child({"id": key}, keep=False).value(self.per) for key in keys)

    def kind_token(self):
        return combine("gather", Symbolic().token(self.per))


def _unknown(label, key, what):
    return UnknownKey(f"{label}: unknown key {key!r}; {what}")


class Switch(Node):
    """``branches[route[key]]``: the branch that owns the entry, evaluated in the same scope."""

    __slots__ = ("route", "key", "branches", "inputs", "label")
    leaf = True

    def __init__(self, name, route, branches, label):
        self.key = Input("id")
        self.inputs = tuple(n for n in walk(branches) if isinstance(n, Input) and n is not self.key)
        super().__init__(name, (route, self.key, *branches))
        self.route, self.branches, self.label = route, tuple(branches), label

    def deps(self):
        return (self.route, self.key, *self.inputs)

    def routed(self):
        return self.branches

    def branch(self, ev):
        key, route = ev.value(self.key), ev.value(self.route)
        try:
            return self.branches[route[key]]
        except (KeyError, TypeError):
            raise _unknown(self.label, key, "it is in none of the merged datasets (see .ids)") from None

    def compute(self, ev):
        return ev.value(self.branch(ev))

    def leaf_token(self, ev):
        return ev.token(self.branch(ev))

    def kind_token(self):
        symbolic = Symbolic()
        return combine("switch", *[symbolic.token(b) for b in self.branches])


class Scope(Node):
    """The first ``options[i]`` (a node or None) whose entry ``table[key][i]`` (raw inputs, or
    None) exists, evaluated as that entry; None if there is none (the missing side of a join)."""

    __slots__ = ("table", "key", "options", "label")
    leaf = True

    def __init__(self, name, table, options, label):
        self.key = Input("id")
        super().__init__(name, (table, self.key, *[o for o in options if o is not None]))
        self.table, self.options, self.label = table, tuple(options), label

    def deps(self):
        return (self.table, self.key)

    def routed(self):
        return tuple(o for o in self.options if o is not None)

    def target(self, ev):
        key, table = ev.value(self.key), ev.value(self.table)
        try:
            entries = table[key]
        except (KeyError, TypeError):
            raise _unknown(self.label, key, "the keys of this layer are its ids") from None
        for node, inputs in zip(self.options, entries):
            if node is not None and inputs is not None:
                return node, ev.child(inputs)
        return None, None

    def compute(self, ev):
        node, child = self.target(ev)
        return None if node is None else child.value(node)

    def leaf_token(self, ev):
        node, child = self.target(ev)
        return _ABSENT if node is None else child.token(node)

    def kind_token(self):
        symbolic = Symbolic()
        return combine("scope", *[symbolic.token(o) if o is not None else "" for o in self.options])


class Group(Node):
    """``{old id: node}`` over the entries ``table[key]`` (raw inputs of each member)."""

    __slots__ = ("table", "key", "node", "label")
    leaf = True

    def __init__(self, name, table, node, label):
        self.key = Input("id")
        super().__init__(name, (table, self.key, node))
        self.table, self.node, self.label = table, node, label

    def deps(self):
        return (self.table, self.key)

    def routed(self):
        return (self.node,)

    def members(self, ev):
        key, table = ev.value(self.key), ev.value(self.table)
        try:
            return table[key]
        except (KeyError, TypeError):
            raise _unknown(self.label, key, "the keys of this layer are the group keys in its ids") from None

    def compute(self, ev):
        return {inputs["id"]: ev.child(inputs).value(self.node) for inputs in self.members(ev)}

    def leaf_token(self, ev):
        parts = []
        for inputs in self.members(ev):
            parts += [tokenize(inputs["id"]), ev.child(inputs).token(self.node)]
        return combine("group", *parts)

    def kind_token(self):
        return combine("group", Symbolic().token(self.node))


class Guard(Node):
    """``node``, after checking that the key is in ``allowed`` (a static set of keys)."""

    __slots__ = ("node", "allowed", "key", "label")
    leaf = True
    salt = "checked"

    def __init__(self, name, node, allowed, label):
        self.key = Input("id")
        super().__init__(name, (node, allowed, self.key))
        self.node, self.allowed, self.label = node, allowed, label

    def deps(self):
        return (self.node, self.allowed, self.key)

    def check(self, ev):
        key, allowed = ev.value(self.key), ev.value(self.allowed)
        try:
            known = key in allowed
        except TypeError:
            known = False
        if not known:
            raise _unknown(self.label, key, "CheckIds allows only the keys in ids")

    def compute(self, ev):
        self.check(ev)
        return ev.value(self.node)

    def leaf_token(self, ev):
        self.check(ev)
        return ev.token(self.node)

    def kind_token(self):
        return combine("guard", Symbolic().token(self.node))
