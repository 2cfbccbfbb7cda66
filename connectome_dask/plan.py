"""Hop 2, plan: connect layers into a :class:`Plan`, the nodes of every output field.

A layer is connected to the plan of the layers before it (``layer._connect(prev) -> Plan``);
a chain folds its layers from the :data:`OPEN` plan, whose every name is a raw ``Input``
(that is how transform-only pipelines get "the minimal raw inputs"). Connection rules:

1. an argument ``x`` of a Transform field reads ``prev``'s field ``x`` (``Missing`` if absent);
2. ``__inherit__``/``__exclude__`` pass previous fields through; against an open plan the
   allowed names stay *virtual* (callable identities, hidden from ``dir``) unless a field of
   the layer reads them;
3. *persistent* names — a Source's ``id`` and ``@meta`` fields — pass through every Transform;
4. everything else of ``prev`` is dropped (consistency);
5. an ``@optional`` field whose inputs are missing is dropped; so is a field whose missing
   inputs all are dropped optionals. Other missing inputs make the layer *broken*, and the
   first ``dir``/access of the pipeline raises ``DependencyError`` (:meth:`Plan.validate`).

Each layer also appends its *backward* step (``dict name -> node`` in, same out) used by
``_decorate``: an ``@inverse`` applies, an inherited name passes unchanged, anything else is a
``FieldError``.
"""

from collections.abc import Callable
from dataclasses import dataclass

from .exceptions import DependencyError, FieldError, GraphError
from .nodes import Cached, Call, Const, Input, Missing, walk
from .stamps import Files

__all__ = ["Plan", "OPEN", "connect_source", "connect_transform", "check_cycles"]


@dataclass(frozen=True, eq=False, repr=False, slots=True)
class Plan:
    """The output fields of a pipeline prefix, as nodes; a layer derives its plan from the previous
    one with ``dataclasses.replace``. Printable: one line per node (what computes it, from what,
    and which fields it is).

    Attributes
    ----------
    fields : dict
        Field name -> node.
    metas : frozenset
        The ``@meta`` fields (functions of parameters only, like ``ids``).
    persistent : frozenset
        Names every Transform passes through (a Source's ``id`` and metas).
    virtual : callable or None
        ``name -> node or None`` for names not in ``fields`` (raw inputs of a transform-only plan).
    dropped : frozenset
        ``@optional`` fields dropped for missing inputs.
    backward : tuple
        One step per layer for ``_decorate``: ``dict name -> node`` in, same out.
    broken : tuple
        ``(layer, field, missing names)`` of the fields whose inputs are missing.
    """

    fields: dict
    metas: frozenset = frozenset()
    persistent: frozenset = frozenset()
    virtual: Callable | None = None
    dropped: frozenset = frozenset()
    backward: tuple = ()
    broken: tuple = ()

    def __post_init__(self):
        for name, kind in (("metas", frozenset), ("persistent", frozenset), ("dropped", frozenset),
                           ("backward", tuple), ("broken", tuple)):
            object.__setattr__(self, name, kind(getattr(self, name)))

    def get(self, name):
        node = self.fields.get(name)
        if node is None and self.virtual is not None:
            node = self.virtual(name)
        return node

    def request(self, name, layer):
        """The node of ``name`` for a consumer ``layer``, or a ``Missing`` placeholder."""
        node = self.get(name)
        return node if node is not None else Missing(name, layer, soft=name in self.dropped)

    def validate(self):
        for layer, field, missing in self.broken:
            raise DependencyError(
                f"{layer}: the field {field!r} needs {sorted(missing)}, which the previous layers do not "
                "provide. Add a layer that provides it, inherit it (__inherit__), or mark the field @optional."
            )
        return self

    def __repr__(self):
        roots = {}
        for name, node in self.fields.items():
            roots.setdefault(node, []).append(f"{name} [meta]" if name in self.metas else name)
        names, seen, rows = {}, {}, []
        for node in walk(list(roots)):
            if node not in roots and isinstance(node, (Input, Const)):
                continue
            name = node_label(node)
            seen[name] = n = seen.get(name, 0) + 1
            names[node] = name if n == 1 else f"{name}#{n}"  # two layers of one class
            rows.append((_expression(node, names), ", ".join(roots.get(node, ()))))
        width = max((len(e) for e, f in rows if f), default=0)
        lines = [f"    {e.ljust(width)}  -> {f}" if f else f"    {e}" for e, f in rows]
        if self.virtual is not None:
            lines.append("    (any other name: a raw input)")
        return "\n".join(["Plan(", *lines, ")"])


def node_label(node):
    """How printed plans and tasks name a node: ``Layer.name`` (``Crop._box``), else its name."""
    if isinstance(node, Cached):
        return f"cached {node_label(node.inner)}"
    layer = getattr(node, "layer", None) or getattr(node, "label", None)
    return f"{layer}.{node.name}" if isinstance(layer, str) else node.name


def _argument(node, names):
    if isinstance(node, Input):
        return node.name
    if isinstance(node, Const):
        value = repr(node.value)
        return f"{node.name}={value if len(value) <= 40 else value[:37] + '...'}"
    return names[node]


def _expression(node, names):
    """One line of a printed plan: what computes ``node``, from what."""
    if isinstance(node, Input):
        return f"input {node.name!r}"
    if isinstance(node, Const):
        return _argument(node, names)
    args = ", ".join(_argument(d, names) for d in node.deps())
    if isinstance(node, Cached):
        return f"cache({args}) in {node.binding!r}"
    kind = "" if type(node) is Call else f"{type(node).__name__} "
    if getattr(node, "impure", False):
        kind = "impure " + kind
    return f"{kind}{names[node]}({args})"


OPEN = Plan({}, virtual=Input)


def _broken(label, fields):
    out = []
    for name, node in fields.items():
        hard = [m.name for m in node.missing if not m.soft]
        if hard:
            out.append((label, name, frozenset(hard)))
    return out


class _Builder:
    """Builds the nodes of one spec-based layer against ``prev``."""

    def __init__(self, spec, values, prev, label, key=None):
        self.spec, self.prev, self.label, self.key = spec, prev, label, key
        self.forward = {f.name: f for f in spec.fields}
        self.params = {p.name: p for p in spec.params}
        self.values = values
        self.built, self.requested = {}, set()

    def arg(self, arg, back=None):
        kind, target = arg.kind, arg.target
        if kind == "key":
            return self.key
        if kind == "prev":
            if back is not None:
                node = back.get(target)
                if node is None:
                    raise DependencyError(f"{self.label}: the inverse needs {target!r}, which is not passed back")
                return node
            self.requested.add(target)
            return self.prev.request(target, self.label)
        if kind == "param":
            return self.node(target, self.params.get(target))
        if kind == "output":
            return self.node(target, self.forward.get(target))
        if kind == "part":
            return Input("__part__")
        raise GraphError(f"{self.label}: argument kind {kind!r} is not supported here")

    def node(self, name, spec):
        node = self.built.get(name)
        if node is not None:
            return node
        if name in self.values:
            node = Const(name, self.values[name], what=f"parameter {name[1:]!r} of layer {self.label}")
        elif spec is None:
            node = Missing(name, self.label)
        else:
            node = self.call(spec)
        self.built[name] = node
        return node

    def call(self, spec, back=None):
        args = [self.arg(a, back) for a in spec.args]
        kwnames = tuple(a.keyword for a in spec.args if a.keyword)
        if spec.stamp in ("content", "stat"):
            return Files(spec.name, spec.func, args, kwnames, layer=self.label, stamp=spec.stamp)
        return Call(spec.name, spec.func, args, kwnames, impure=spec.impure, layer=self.label)

    def outputs(self):
        fields, dropped = {}, set()
        for name, spec in self.forward.items():
            node = self.node(name, spec)
            if node.missing and (spec.optional or all(m.soft for m in node.missing)):
                dropped.add(name)
            else:
                fields[name] = node
        metas = {f.name for f in self.spec.fields if f.meta and f.name in fields}
        return fields, metas, dropped


def connect_source(spec, values, label):
    b = _Builder(spec, values, OPEN, label, key=Input("id"))
    own, metas, dropped = b.outputs()
    fields = {"id": Input("id"), **own}

    def back(nodes):
        if nodes:
            raise FieldError(f"{label}: a Source does not pass {sorted(nodes)} back; "
                             "decorate the transform part of the pipeline (e.g. pipeline[1:]._decorate)")
        return nodes

    return Plan(fields, metas=metas, persistent={"id"} | metas, dropped=dropped, backward=(back,),
                broken=_broken(label, own))


def inherits(spec):
    """``allowed(name)``: whether a name not defined by the layer passes through it."""
    own = {f.name for f in spec.fields}
    if spec.inherit is True:
        return lambda name: name not in own
    if spec.inherit is not None:
        return lambda name: name in spec.inherit and name not in own
    if spec.exclude is not None:
        return lambda name: name not in spec.exclude and name not in own
    return lambda name: False


def connect_transform(spec, values, prev, label):
    b = _Builder(spec, values, prev, label)
    own, own_metas, dropped = b.outputs()
    allowed = inherits(spec)
    fields = {}
    for name, node in prev.fields.items():
        if name not in b.forward and (name in prev.persistent or allowed(name)):
            fields[name] = node
    if prev.virtual is not None:
        for name in sorted(b.requested):
            if name not in fields and name not in b.forward and allowed(name):
                fields[name] = prev.get(name)
    fields.update(own)
    passed = fields.keys() - own.keys()
    metas = (prev.metas & passed) | own_metas
    persistent = prev.persistent & passed
    virtual = None
    if prev.virtual is not None and (spec.inherit is not None or spec.exclude is not None):
        upstream = prev.virtual
        virtual = lambda name: upstream(name) if allowed(name) else None  # noqa: E731
    inverses = {f.name: f for f in spec.inverses}

    def back(nodes):
        out = {}
        for name, node in nodes.items():
            if name in inverses:
                out[name] = b.call(inverses[name], back={**nodes, name: node})
            elif allowed(name):
                out[name] = node
            else:
                raise FieldError(f"{label}: {name!r} is not defined in the backward direction; add an "
                                 f"@inverse function {name!r} or inherit it")
        return out

    broken = prev.broken + tuple(_broken(label, own))
    dropped |= {n for n in prev.dropped if allowed(n)}
    return Plan(fields, metas=metas, persistent=persistent, virtual=virtual, dropped=dropped,
                backward=prev.backward + (back,), broken=broken)


def check_cycles(spec, label):
    """``GraphError`` if a field or parameter of the layer depends on itself."""
    deps = {}
    for f in (*spec.fields, *spec.params):
        deps[f.name] = [a.target for a in f.args if a.kind in ("param", "output")]
    state = {}

    def visit(name, path):
        if state.get(name) == 1:
            cycle = " -> ".join(path[path.index(name):] + [name])
            raise GraphError(f"{label}: cyclic dependency {cycle}")
        if state.get(name) == 2 or name not in deps:
            return
        state[name] = 1
        for d in deps[name]:
            visit(d, path + [name])
        state[name] = 2

    for name in deps:
        visit(name, [])
