"""Hop 4b, graph: plan nodes for a set of entries → one low-level dask task graph.

Keys
----
A task's key is ``f"{name}-{token}"``: ``name`` is the field or parameter the task computes
(so ``dask.utils.key_split`` shows it on the dashboard) and ``token`` is the node's Merkle token
for that entry (``nodes`` module): the same computation reached through any pipeline object, in
any process, gets the same key, and shared work is deduplicated by dask. Two exceptions:

* a node that shares its token with the computation it wraps but does more — a ``Cached`` node
  loads-or-computes through its store, a ``CheckIds`` guard checks the key — mixes its ``salt``
  into the key (``f"{name}-{combine(token, salt)}"``), distinct from the plain computation's;
* a value depending on an ``@impure`` field must never be shared between evaluations: the impure
  leaf's token is replaced by a per-build nonce, so its keys are unique to one graph (but still
  shared by all tasks of one entry, as in the eager path).

Granularity
-----------
A task per function call is too fine (a dask task costs ~50 µs locally, ~1 ms on distributed).
Tasks are cut at *boundaries* only: the requested fields, ``Cached`` nodes, nodes that need no
entry input (one task for every entry of the graph), and nodes that the regions of several
other tasks need (``_box`` when ``image`` and ``mask`` are separate tasks). Everything between
boundaries is fused into one task that evaluates its region with
:class:`~connectome_dask.evaluate.Evaluation`, which computes a node once however many nodes
of the region need it. Nothing below a ``Cached`` node is cut: a cache hit must not wait for
upstream tasks.

* In bulk graphs (``to_dask``) the fields of one entry are packed into one task (:class:`Pack`),
  so an entry costs one task.
* A ``.delayed`` value is built alone, but it may be computed with values built by other calls:
  its :class:`Structure` is also cut where several fields of the whole plan meet (:func:`shared`),
  so ``image.delayed(k)`` and ``mask.delayed(k)`` computed together share the ``_box`` task of
  that entry, as they share its key. A field that no other field of the plan needs stays one task.

The stamps of ``@files`` nodes (``stamps``) are computed here, once per entry, while the keys are
made; tasks that need them to make a token get the entry's table as their last argument.
The boundary analysis depends only on the plan, so it is done once per set of fields
(:class:`Structure`) and the per-entry cost is one token and one ``Task`` per boundary.


The tasks of ``persist`` (batches of entries) are :mod:`connectome_dask.batches`'.
"""

import uuid
from contextlib import nullcontext

from dask.task_spec import Task, TaskRef

from .evaluate import Evaluation
from .hashing import combine
from .nodes import Cached, Const, Input, Node, static_token, walk
from .plan import node_label
from .shipping import Shipped
from .stamps import recording, shipped

__all__ = ["Structure", "Runner", "build", "shared", "task_key"]


class Runner(Shipped):
    """Task function: evaluate ``node`` from raw input values and the values of boundary ``deps``;
    ``stamped``: the last argument is the entry's :class:`~connectome_dask.stamps.Stamps`.

    It pickles with the user's code by value and checks it before its first run in a process
    (:mod:`connectome_dask.shipping`)."""

    __slots__ = ("node", "inputs", "deps", "stamped")

    def __init__(self, node, inputs, deps, stamped=False):
        self.node, self.inputs, self.deps, self.stamped = node, tuple(inputs), tuple(deps), stamped

    def _args(self):
        return self.node, self.inputs, self.deps, self.stamped

    def _roots(self):
        return (self.node,)

    def __call__(self, *args):
        self._check()
        n = len(self.inputs)
        return self._run(Evaluation(dict(zip(self.inputs, args[:n]))), args[n:])

    def _run(self, ev, rest):
        """``node``'s value in ``ev``, given the values of ``deps`` (and the stamps) in ``rest``."""
        if self.deps:
            ev.values.update(zip(self.deps, rest))
        if self.stamped:
            with shipped(rest[-1]):
                return ev.value(self.node)
        return ev.value(self.node)

    def __repr__(self):
        return f"run({node_label(self.node)})"


def _trivial(node):
    return isinstance(node, (Input, Const))


class Pack(Node):
    """The tuple of several fields of one entry: the single task of an entry in bulk graphs."""

    __slots__ = ("items",)

    def __init__(self, items):
        super().__init__("-".join(n.name for n in items), items)
        self.items = tuple(items)

    def deps(self):
        return self.items

    def compute(self, ev):
        return tuple(ev.value(n) for n in self.items)

    def kind_token(self):
        return "pack"


class Structure:
    """Boundaries and task functions for computing ``roots`` (one tuple of nodes per entry).

    ``cut``: more nodes to cut at when ``roots`` need them (:func:`shared`), so that tasks built
    by separate calls for other roots of the same plan share them."""

    def __init__(self, roots, cut=frozenset()):
        self.roots = tuple(roots)
        order, self.boundaries = _cut(self.roots, cut)
        self.runners = {}
        for node in self.boundaries:
            inputs, deps = self._region(node)
            stamped = any(n.stamped for n in walk([node], inner=True))
            self.runners[node] = Runner(node, sorted(inputs), deps, stamped)
        self.stamped = any(r.stamped for r in self.runners.values())
        self.impure = any(getattr(n, "impure", False) for n in walk(self.roots, inner=True))
        self.order = _topological([n for n in order if n in self.boundaries], self.runners)

    def _region(self, node):
        """Raw input names and boundary dependencies of the task computing ``node``."""
        inputs, deps, seen = set(), [], set()
        stack = list(node.deps())
        fused = isinstance(node, Cached)
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if isinstance(n, Input):
                inputs.add(n.name)
            elif n in self.boundaries and not fused:
                deps.append(n)
            else:
                stack.extend(n.deps())
        if isinstance(node, Input):
            inputs.add(node.name)
        return inputs, deps


def _cut(roots, cut=frozenset()):
    """``(order, boundaries)`` of the tasks computing ``roots``: ``order`` lists the nodes reachable
    without entering a ``Cached`` node, consumers first; a boundary is a root, a ``Cached`` node, a
    node of ``cut``, a node that needs no entry input (one task for all entries), or a node that the
    regions of several other boundaries need (a task of its own instead of a run in each region).
    Raw inputs and parameters are never cut."""
    order, seen, consumers = [], set(), {}
    stack = [(r, False) for r in reversed(roots)]
    while stack:  # depth-first post-order: dependencies before consumers
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if node in seen:
            continue
        seen.add(node)
        stack.append((node, True))
        if not isinstance(node, Cached):
            for dep in node.deps():
                consumers.setdefault(dep, []).append(node)
                stack.append((dep, False))
    order.reverse()
    boundaries = set(roots) | {n for n in order if isinstance(n, Cached)}
    boundaries |= {n for n in order if not _trivial(n) and (n in cut or static_token(n) is not None)}
    owners = {}  # node -> the boundaries whose task would compute it
    for node in order:
        if node in boundaries:
            continue
        own = set()
        for c in consumers.get(node, ()):
            if c in boundaries:
                own.add(c)
            else:
                own |= owners[c]
        if len(own) > 1 and not _trivial(node):
            boundaries.add(node)
        else:
            owners[node] = own
    return order, boundaries


def shared(roots):
    """The nodes at which tasks are cut when each of ``roots`` (every field of a plan) is computed
    by a task of its own: the roots, and what several of them need. Given as ``cut`` to the
    :class:`Structure` of a few of them, it makes separately built values of one entry share work."""
    return frozenset(_cut(tuple(roots))[1])


def _topological(nodes, runners):
    order, done = [], set()

    def visit(n):
        if n in done:
            return
        done.add(n)
        for d in runners[n].deps:
            visit(d)
        order.append(n)

    for n in nodes:
        visit(n)
    return order


class _KeyTokens(Evaluation):
    """Tokens for task keys: impure leaves get a per-build nonce instead of their value."""

    __slots__ = ("nonce",)

    def __init__(self, inputs, nonce):
        super().__init__(inputs)
        self.nonce = nonce

    def _spawn(self, inputs):
        return _KeyTokens(inputs, self.nonce)

    def leaf_token(self, node):
        if getattr(node, "impure", False):
            return combine("impure", self.nonce, node.kind_token(), *[self.token(a) for a in node.deps()])
        return node.leaf_token(self)


def task_key(node, token):
    salt = node.salt
    return f"{node.name}-{combine(token, salt) if salt else token}"


def build(structure, entries, graph=None):
    """Add the tasks of every entry (a dict of raw inputs) to ``graph``; the root keys per entry."""
    graph = {} if graph is None else graph
    nonce = uuid.uuid4().hex if structure.impure else None
    all_keys = []
    for inputs in entries:
        ev = _KeyTokens(inputs, nonce)
        keys = {}
        with recording() if structure.stamped else nullcontext() as stamps:  # stamped once, here
            for node in structure.order:
                keys[node] = task_key(node, ev.token(node))
        for node in structure.order:
            key = keys[node]
            if key not in graph:
                runner = structure.runners[node]
                args = [_input_arg(inputs[name], graph) for name in runner.inputs]
                args += [TaskRef(keys[d]) for d in runner.deps]
                graph[key] = Task(key, runner, *args, *[stamps] * runner.stamped)
        all_keys.append([keys[r] for r in structure.roots])
    return graph, all_keys


def _input_arg(value, graph):
    """A raw input; a dask collection given as input (``Delayed``) becomes a dependency."""
    keys = getattr(value, "__dask_keys__", None)
    if keys is None or not callable(keys):
        return value
    import dask

    (value,) = dask.optimize(value)
    for key, task in dict(value.__dask_graph__()).items():
        graph.setdefault(key, task)
    key = value.__dask_keys__()
    if isinstance(key, list) and len(key) == 1:
        key = key[0]
    return TaskRef(key)
