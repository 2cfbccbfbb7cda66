"""Hop 4a, the eager engine: evaluate nodes in-process, on demand.

``Evaluation(inputs)`` is one evaluation: every node is computed at most once (``values``), so a
shared ``_box`` runs once when ``image`` and ``mask`` are requested together and an impure value
is shared by every field of that evaluation. Evaluation is demand-driven: a ``Cached`` node that
hits its store never asks for its inputs, so nothing upstream of a hit runs. Tokens are computed
only when a cache needs one. User exceptions propagate unchanged.

There is no scheduler and no opcode machinery here: dask does the parallel work (``graph``).
"""

from .hashing import combine
from .nodes import shape

__all__ = ["Evaluation", "evaluate"]

_NONE = object()


class Evaluation:
    __slots__ = ("inputs", "values", "tokens")

    def __init__(self, inputs):
        self.inputs = inputs
        self.values = {}
        self.tokens = {}

    def value(self, node):
        value = self.values.get(node, _NONE)
        if value is _NONE:
            value = self.values[node] = node.compute(self)
        return value

    def token(self, node):
        token = self.tokens.get(node)
        if token is None:
            template, leaves = shape(node)
            if not leaves:
                token = template
            elif len(leaves) == 1 and leaves[0] is node:
                token = self.leaf_token(node)
            else:
                token = combine(template, *[self.token(leaf) for leaf in leaves])
            self.tokens[node] = token
        return token

    def leaf_token(self, node):
        """The token of a leaf (an input's or impure value's); ``graph`` overrides it for keys."""
        return node.leaf_token(self)


def evaluate(nodes, inputs):
    """Values of ``nodes`` (a tuple) for one set of raw ``inputs``, in one evaluation."""
    ev = Evaluation(inputs)
    return tuple(ev.value(n) for n in nodes)
