"""Graph nodes: what a field is made of once its layers are connected.

A pipeline field is a DAG of nodes. Connecting layers only creates nodes; evaluating them
(``evaluate``) and translating them into dask tasks (``graph``) are separate hops.

======== ==========================================================================
Input    a raw input of the pipeline: the entry key ``id`` of a Source, or a field a
         transform-only pipeline receives. Interned by name.
Const    an external parameter value.
Call     a user function applied to nodes (``impure`` calls are recomputed every time).
Item     ``value[index]`` (one output of a ``_decorate``d function).
Cached   a value looked up in, or computed into, a cache store; transparent to hashing.
Missing  an input that is not available at that place of the pipeline.
======== ==========================================================================

Tokens (the Merkle hash). Every node has a token; equal tokens mean equal computations.
``Const`` hashes its value, ``Call`` hashes ``(fingerprint(func), keyword names, arg tokens)``,
``Cached`` is its inner node's token (caches are transparent). *Leaves* are nodes whose token
depends on a value known only per entry: an ``Input`` (its value), an impure ``Call`` (its
result), a routing node (``routing``: the token of what it routes to). A node is
``combine(kind, *dep tokens)``, a true Merkle tree, so a computation reached through a routing
layer (``Merge``) has the token it has without it, down to every field computed from it. The
part of the tree that needs no entry value is hashed once per pipeline (:func:`static_token`);
per entry, only the nodes between the leaves and the requested node are combined. Field names,
layer names, docstrings and layout never enter a token.
"""

from .cache.cached import cached_call
from .cache.store import local
from .exceptions import DependencyError
from .hashing import combine, fingerprint, tokenize

__all__ = ["Node", "Input", "Const", "Call", "Item", "Cached", "Missing", "static_token", "kind_token", "walk", "raw_inputs"]

_NONE = object()


class Node:
    __slots__ = ("name", "missing", "_shape", "__weakref__")
    leaf = False
    stamped = False  # a leaf whose token is its inputs' and its raw files' (``stamps.Files``)
    transparent = False  # the token is the ``inner`` node's (caches)
    salt = None  # mixed into the task key of a node that shares its token with another task


    def __init__(self, name, deps=()):
        self.name = name
        self._shape = None
        missing = frozenset()
        for dep in deps:
            if dep.missing:
                missing = missing | dep.missing
        self.missing = missing

    def deps(self):
        """The nodes evaluated, in the same scope, to compute this one."""
        return ()

    def routed(self):
        """Nodes a routing node evaluates for other entries or branches (``routing``)."""
        return ()

    def compute(self, ev):
        raise NotImplementedError

    def kind_token(self):
        """The static token of this node itself (not of its inputs)."""
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"


class Input(Node):
    __slots__ = ()
    leaf = True
    _interned = {}

    def __new__(cls, name):
        node = cls._interned.get(name)
        if node is None:
            node = cls._interned[name] = object.__new__(cls)
            Node.__init__(node, name)
        return node

    def __init__(self, name):
        pass

    def __reduce__(self):
        return Input, (self.name,)

    def compute(self, ev):
        try:
            return ev.inputs[self.name]
        except KeyError:
            raise TypeError(f"missing input {self.name!r}") from None

    def leaf_token(self, ev):
        return tokenize(ev.value(self), what=f"the value of input {self.name!r}")


class Const(Node):
    __slots__ = ("value", "what")

    def __init__(self, name, value, what=None):
        super().__init__(name)
        self.value, self.what = value, what or f"parameter {name!r}"

    def compute(self, ev):
        return self.value

    def kind_token(self):
        return tokenize(self.value, what=self.what)

    def __repr__(self):
        return f"Const({self.name!r}={self.value!r})"


class Call(Node):
    __slots__ = ("func", "args", "kwnames", "impure", "layer")

    def __init__(self, name, func, args, kwnames=(), impure=False, layer=None):
        super().__init__(name, args)
        self.func, self.args, self.kwnames = func, tuple(args), tuple(kwnames)
        self.impure, self.layer = impure, layer

    @property
    def leaf(self):
        return self.impure

    def deps(self):
        return self.args

    def compute(self, ev):
        values = [ev.value(a) for a in self.args]
        if self.kwnames:
            n = len(values) - len(self.kwnames)
            return self.func(*values[:n], **dict(zip(self.kwnames, values[n:])))
        return self.func(*values)

    def kind_token(self):
        code = getattr(self.func, "__connectome_token__", None)
        return combine("call", code() if code is not None else fingerprint(self.func), *self.kwnames)

    def leaf_token(self, ev):
        return tokenize(ev.value(self), what=f"the value of impure field {self.name!r}")

    def __repr__(self):
        flag = "impure " if self.impure else ""
        return f"{flag}Call({self.name!r}, {getattr(self.func, '__name__', self.func)!r}, {[a.name for a in self.args]})"


class Item(Node):
    __slots__ = ("inner", "index")

    def __init__(self, name, inner, index):
        super().__init__(name, (inner,))
        self.inner, self.index = inner, index

    def deps(self):
        return (self.inner,)

    def compute(self, ev):
        return ev.value(self.inner)[self.index]

    def kind_token(self):
        return combine("item", str(self.index))


class Cached(Node):
    """``inner`` looked up in ``store`` under ``(name, token)``; computed and stored on a miss
    (:func:`~connectome_dask.cache.cached.cached_call`). Every cache layer makes these nodes,
    whatever its store (RAM, HDF5, shards, a third party's ``Store``). Pickled, the node carries
    the store's configuration; unpickled, it uses this process's instance of that store
    (:func:`~connectome_dask.cache.store.local`). The store's token salts the task key.

    A cache hit must cost little more than the store lookup, and the Merkle token of a chain takes
    one hash per node. When the token depends on the entry key alone (every leaf upstream is an
    ``Input``; no impure or routing node) it is memoized per key, for ``str`` and ``int`` keys; with
    ``@files`` leaves too, per key and their tokens (their files are stamped on every call).
    """

    __slots__ = ("inner", "store", "salt", "_tokens", "_stamped")
    transparent = True
    MEMO = 1 << 16  # tokens remembered per node (cleared when full)

    def __init__(self, name, inner, store):
        super().__init__(name, (inner,))
        self.inner, self.store, self.salt = inner, store, store.token
        self._tokens = None  # unknown yet; False: not memoizable; else {entry: (stamp tokens, token)}
        self._stamped = ()

    def deps(self):
        return (self.inner,)

    def compute(self, ev):
        token = self._token(ev)
        return cached_call(self.store, self.name, token, lambda: ev.value(self.inner), ev.look(self.name, token))

    def _token(self, ev):
        tokens = self._tokens
        if tokens is None:
            leaves = [n for n in walk([self.inner], inner=True) if n.leaf]
            same_scope = set(walk([self.inner]))  # not a @files leaf evaluated for other entries
            keyed = all(isinstance(n, Input) or (n.stamped and n in same_scope) for n in leaves)
            self._stamped = tuple(n for n in leaves if n.stamped)
            tokens = self._tokens = {} if keyed else False
        inputs = ev.inputs
        if tokens is False or len(inputs) != 1:
            return ev.token(self)
        (name, value), = inputs.items()
        kind = type(value)
        if kind is not str and kind is not int:
            return ev.token(self)
        entry = (name, kind, value)
        stamps = tuple([ev.token(n) for n in self._stamped]) if self._stamped else None
        found = tokens.get(entry)
        if found is None or found[0] != stamps:
            found = (stamps, ev.token(self))
            if len(tokens) >= self.MEMO:
                tokens.clear()
            tokens[entry] = found
        return found[1]

    def __reduce__(self):
        return _cached, (self.name, self.inner, self.store)  # not the memo

    def __repr__(self):
        return f"Cached({self.name!r}, {self.store!r})"


def _cached(name, inner, store):
    return Cached(name, inner, local(store))


class Missing(Node):
    """An unavailable input. ``soft``: it was an optional field dropped upstream."""

    __slots__ = ("layer", "soft")

    def __init__(self, name, layer, soft=False):
        super().__init__(name)
        self.layer, self.soft = layer, soft
        self.missing = frozenset([self])

    def compute(self, ev):
        raise DependencyError(f"{self.layer}: the input {self.name!r} is not available")

    def kind_token(self):
        return combine("missing", self.name)


def _info(node):
    """``(kind token, static token or None)``, computed once per node."""
    s = node._shape
    if s is None:
        if node.leaf:
            s = (None, None)
        elif node.transparent:
            s = (None, static_token(node.inner))
        else:
            kind = node.kind_token()
            parts = [static_token(d) for d in node.deps()]
            s = (kind, None if None in parts else combine(kind, *parts))
        node._shape = s
    return s


def static_token(node):
    """The token of a node that needs no entry value (no leaf upstream), else None."""
    return _info(node)[1]


def kind_token(node):
    """The memoized :meth:`Node.kind_token` of a non-leaf, non-transparent node."""
    return _info(node)[0]


def walk(roots, inner=False):
    """All nodes reachable from ``roots``, dependencies first (a topological order). ``inner``:
    also through what routing nodes evaluate for other entries (e.g. to find impure ancestors)."""
    order, seen = [], set()
    stack = [(r, False) for r in reversed(list(roots))]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if node in seen:
            continue
        seen.add(node)
        stack.append((node, True))
        deps = (*node.deps(), *node.routed()) if inner else node.deps()
        stack.extend((d, False) for d in reversed(deps) if d not in seen)
    return order


def raw_inputs(roots):
    """The sorted names of the ``Input`` nodes that ``roots`` depend on."""
    return sorted({n.name for n in walk(roots) if isinstance(n, Input)})
