"""Hop 4c, persist's tasks: a graph of batches of entries that fill the caches of a pipeline.

``persist`` runs :class:`Batches`: one task per batch of entries (a :class:`Batch`: the ``Runner``
of all the nodes to fill, called once per entry), everything of an entry fused as below a
``Cached`` node, plus the shared tasks of the static boundaries it needs (keyed as in
:mod:`connectome_dask.graph`). A batch task's key combines the task keys (``graph.task_key``) of
the nodes it fills, for each of its entries, with the caller's nonce (which also stands for
``@impure`` leaves). The stores of the nodes it fills are asked once,
for all entries, which of them they miss (``Store.missing``: a listing, where one is cheaper than a
lookup per entry); each task gets its entries' misses, which its caches compute without a lookup.
"""

import collections
from contextlib import nullcontext

from dask.task_spec import DataNode, Task, TaskRef

from .evaluate import Evaluation
from .graph import Pack, Runner, Structure, _KeyTokens, _trivial, build, task_key
from .hashing import combine
from .nodes import Cached, Input, static_token, walk
from .stamps import recording

__all__ = ["Filling", "Batch", "Batches"]


class Filling(Evaluation):
    """The evaluation of an entry by ``persist``: the ``Cached`` nodes of ``bypass`` are passed
    through (the node they wrap is evaluated: a RAM cache that holds what a disk cache holds is not
    filled), and the entries ``(field, token)`` of ``misses`` are known to be missing (their caches
    compute them without a lookup)."""

    __slots__ = ("bypass", "misses")

    def __init__(self, inputs, bypass=frozenset(), misses=frozenset()):
        super().__init__(inputs)
        self.bypass, self.misses = bypass, misses

    def _spawn(self, inputs):
        return Filling(inputs, self.bypass, self.misses)

    def value(self, node):
        while node in self.bypass:
            node = node.inner
        return Evaluation.value(self, node)

    def look(self, field, token):
        return (field, token) not in self.misses


class Batch(Runner):
    """A :class:`Runner` of one ``node`` for every entry of a batch: ``task(entries, misses, *deps,
    stamps)``, ``entries`` a list of tuples of raw input values (in the order of ``inputs``),
    ``misses`` the entries ``(field, token)`` known to be missing, a set per entry. Each entry is
    one call of the ``Runner`` in its own :class:`Filling` evaluation; :meth:`entry` says what the
    task returns for it (``persist`` subclasses it: what the entry's cached calls did)."""

    __slots__ = ("bypass",)

    def __init__(self, node, inputs, deps, stamped=False, bypass=frozenset()):
        super().__init__(node, inputs, deps, stamped)
        self.bypass = frozenset(bypass)

    def _args(self):
        return (*super()._args(), self.bypass)

    def __call__(self, entries, misses, *rest):
        self._check()
        return [self.entry(values, miss, rest) for values, miss in zip(entries, misses)]

    def entry(self, values, misses, rest):
        return self._run(Filling(dict(zip(self.inputs, values)), self.bypass, misses), rest)

    def __repr__(self):
        return f"batch({self.node.name})"


class Batches:
    """Tasks evaluating ``roots`` for batches of entries: one task per batch, in which everything
    an entry needs is fused (as below a ``Cached`` node: a hit waits for nothing), plus one shared
    task per static boundary the batch needs (a node that needs no entry value, e.g. a routing
    table: the boundary analysis of :class:`Structure`, with the same keys as ``.delayed``'s).
    ``task``: the :class:`Batch` subclass that runs a batch."""

    def __init__(self, roots, task=Batch, bypass=()):
        self.roots = tuple(roots)
        self.pack = Pack(self.roots)
        deps = _static_deps(self.roots)
        self.static = Structure(deps) if deps else None
        stamped = any(n.stamped for n in walk([self.pack], inner=True))
        inputs = sorted({n.name for n in walk([self.pack]) if isinstance(n, Input)})
        self.task = task(self.pack, inputs, deps, stamped, bypass)
        # the nodes whose stores are asked which entries they miss (Store.missing): those filled (below
        # bypassed RAM caches), if the key tokens are the tokens workers see (no @impure leaf: its key
        # token is a nonce) and no other cache of the pipeline has their name (``misses`` name entries
        # by field and token)
        nodes = list(walk([self.pack], inner=True))
        names = collections.Counter(n.name for n in nodes if isinstance(n, Cached))
        impure = any(getattr(n, "impure", False) for n in nodes)
        filled = {_filled(n, self.task.bypass): None for n in self.roots}
        self.filled = () if impure else tuple(n for n in filled if isinstance(n, Cached) and names[n.name] == 1)

    def build(self, batches, nonce, name, graph=None):
        """Add a task per batch (a list of dicts of raw inputs) to ``graph``; its key is
        ``f"{name}-{token}"``, ``token`` combining ``nonce`` and the task keys of the roots for each
        entry (their Merkle tokens, store salts and, for ``@impure`` leaves, ``nonce``). The
        stamps of ``@files`` nodes are computed here, once per batch. An entry whose key cannot be
        made (an unknown key, a missing file) is left out of its task. Returns ``(graph, tasks,
        errors)``: ``tasks`` a ``(key, positions of the entries it runs)`` per batch (``key`` None if
        it runs none), ``errors`` ``{(batch, position): error}``. Each task's second argument holds
        the entries ``(field, token)`` its entries miss (``_misses``), a set per entry."""
        graph = {} if graph is None else graph
        deps = []
        if self.static is not None:
            graph, (deps,) = build(self.static, [{}], graph)
        task, made, errors = self.task, [], {}
        for b, entries in enumerate(batches):
            kept = []  # (position, raw input values, task keys, (field, token) filled) per entry
            with recording() if task.stamped else nullcontext() as stamps:
                for i, inputs in enumerate(entries):
                    ev = _KeyTokens(inputs, nonce)
                    try:
                        keys = [task_key(n, ev.token(n)) for n in self.roots]
                        filled = [(n.name, ev.token(n)) for n in self.filled]
                    except Exception as e:  # noqa: BLE001 - that entry fails, the others run
                        errors[b, i] = e
                        continue
                    kept.append((i, tuple(inputs[n] for n in task.inputs), keys, filled))
            made.append((kept, stamps))
        misses = self._misses(entry[3] for entries, _ in made for entry in entries)
        tasks = []
        for entries, stamps in made:
            key = None
            if entries:
                key = f"{name}-{combine(nonce, *[k for entry in entries for k in entry[2]])}"
                graph[key] = Task(key, task, DataNode(None, [entry[1] for entry in entries]),
                                  DataNode(None, [frozenset(misses.intersection(entry[3])) for entry in entries]),
                                  *map(TaskRef, deps), *[stamps] * task.stamped)
            tasks.append((key, [entry[0] for entry in entries]))
        return graph, tasks, errors

    def _misses(self, filled):
        """The ``(field, token)`` among ``filled`` (one list per entry) that the stores of the filled
        nodes say they miss (``Store.missing``: a listing per field, where one is cheaper)."""
        tokens = {}
        for entry in filled:
            for field, token in entry:
                tokens.setdefault(field, []).append(token)
        found = set()
        for node in self.filled:
            if node.name in tokens:
                found.update((node.name, token) for token in node.store.missing(node.name, tokens[node.name]) or ())
        return found


def _filled(node, bypass):
    """The node that ``persist`` fills for the root ``node``: below the RAM caches it passes through."""
    while node in bypass:
        node = node.inner
    return node


def _static_deps(roots):
    """The static nodes (no entry value needed, not a parameter) that evaluating ``roots`` reaches
    without entering a ``Cached`` node, outermost ones only."""
    found, seen = [], set()
    stack = [d for r in roots if not isinstance(r, Cached) for d in r.deps()]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if static_token(node) is not None:
            if not _trivial(node):
                found.append(node)
        elif not isinstance(node, Cached):
            stack.extend(node.deps())
    return found
