"""Hop 4a, the eager engine: evaluate nodes in-process, on demand.

``Evaluation(inputs)`` is one evaluation: every node is computed at most once (``values``), so a
shared ``_box`` runs once when ``image`` and ``mask`` are requested together and an impure value
is shared by every field of that evaluation. Evaluation is demand-driven: a ``Cached`` node that
hits its store never asks for its inputs, so nothing upstream of a hit runs. Tokens are computed
only when a cache needs one. User exceptions propagate unchanged.

There is no scheduler and no opcode machinery here: dask does the parallel work (``graph``).
"""

from .hashing import combine
from .nodes import kind_token, static_token

__all__ = ["Evaluation", "Symbolic", "evaluate"]

_NONE = object()


class Evaluation:
    __slots__ = ("inputs", "values", "tokens", "parent", "children")

    def __init__(self, inputs):
        self.inputs = inputs
        self.values = {}
        self.tokens = {}
        self.parent = self.children = None

    def value(self, node):
        value = self.values.get(node, _NONE)
        if value is _NONE:
            if self.parent is not None and static_token(node) is not None:
                value = self.parent.value(node)  # the same in every scope: computed once, at the root
            else:
                value = node.compute(self)
            self.values[node] = value
        return value

    def child(self, inputs, keep=True):
        """The evaluation of another entry (raw ``inputs``) within this one: static values are
        shared; ``keep``: one child per ``inputs`` object, so fields routed to the same entry share
        their work (and impure values) within this evaluation."""
        if not keep:
            ev = self._spawn(inputs)
            ev.parent = self
            return ev
        children = self.children
        if children is None:
            children = self.children = {}
        found = children.get(id(inputs))
        if found is None:
            ev = self._spawn(inputs)
            ev.parent = self
            found = children[id(inputs)] = (inputs, ev)  # holding inputs keeps its id unique
        return found[1]

    def _spawn(self, inputs):
        return Evaluation(inputs)

    def token(self, node):
        token = self.tokens.get(node)
        if token is None:
            token = static_token(node)
            if token is None:
                if node.leaf:
                    token = self.leaf_token(node)
                elif node.transparent:
                    token = self.token(node.inner)
                else:
                    token = combine(kind_token(node), *[self.token(d) for d in node.deps()])
            self.tokens[node] = token
        return token

    def leaf_token(self, node):
        """The token of a leaf (an input's or impure value's); ``graph`` overrides it for keys."""
        return node.leaf_token(self)

    def look(self, field, token):
        """Whether a cache looks the entry ``(field, token)`` up (``persist``'s evaluations know
        entries to be missing)."""
        return True


class Symbolic(Evaluation):
    """Tokens of nodes as functions of their raw inputs, which are named, not valued: the code
    identity of a compiled field used as another layer's function."""

    __slots__ = ()

    def __init__(self):
        super().__init__({})

    def leaf_token(self, node):
        if not node.deps():
            return combine("input", node.name)
        return combine("leaf", node.kind_token(), *[self.token(d) for d in node.deps()])


def evaluate(nodes, inputs):
    """Values of ``nodes`` (a tuple) for one set of raw ``inputs``, in one evaluation."""
    ev = Evaluation(inputs)
    return tuple(ev.value(n) for n in nodes)
