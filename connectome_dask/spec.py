"""Frozen, pure-data descriptions of declared layers.

``declare.read_body`` turns a class body into a :class:`LayerSpec`; ``plan`` turns a
``LayerSpec`` plus parameter values into graph nodes. Nothing here computes or imports
dask: a spec is printable and comparable, which is the debugging story of hop 1.

An argument of a field function resolves to one of these ``Arg.kind`` values:

======== =====================================================================
key      the entry key of a Source (any public argument name in a Source)
prev     the previous layer's field ``target`` (in an inverse: the value coming back)
param    a local or external parameter ``_name`` of this layer
output   this layer's own output ``target`` (``x: Output``)
part     the ``__part__`` descriptor of a ``Split``
======== =====================================================================
"""

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Arg", "FieldSpec", "ExternalSpec", "LayerSpec", "REQUIRED"]


class _Required:
    def __repr__(self):
        return "REQUIRED"

    def __reduce__(self):
        return "REQUIRED"


REQUIRED = _Required()


@dataclass(frozen=True)
class Arg:
    kind: str  # key | prev | param | output | part
    target: str
    keyword: str | None = None  # bind as keyword argument (``Function(f, c='x')``)


@dataclass(frozen=True)
class FieldSpec:
    name: str
    func: Callable
    args: tuple[Arg, ...]
    meta: bool = False
    optional: bool = False
    impure: bool = False
    inverse: bool = False
    stamp: str | None = None  # ``@files``: how the returned files are stamped (``stamps.MODES``)

    def __repr__(self):
        flags = [f for f in ("meta", "optional", "impure", "inverse") if getattr(self, f)]
        flags += [f"files({self.stamp})"] if self.stamp else []
        args = ", ".join(f"{a.kind}:{a.target}" for a in self.args)
        return f"{' '.join('@' + f for f in flags)}{' ' if flags else ''}{self.name}({args})"


@dataclass(frozen=True)
class ExternalSpec:
    name: str  # with the underscore: ``_root``
    default: Any = REQUIRED

    @property
    def argument(self):
        return self.name[1:]


@dataclass(frozen=True)
class LayerSpec:
    kind: str  # source | transform | split
    name: str
    fields: tuple[FieldSpec, ...] = ()  # forward public fields, body order
    params: tuple[FieldSpec, ...] = ()  # local parameter functions ``_x``
    inverses: tuple[FieldSpec, ...] = ()
    externals: tuple[ExternalSpec, ...] = ()
    inherit: Any = None  # None | True | frozenset of names
    exclude: frozenset | None = None
    split: FieldSpec | None = None
    deferred: tuple[tuple[type, str], ...] = field(default=())  # errors raised at instantiation

    def __repr__(self):
        lines = [f"LayerSpec({self.kind} {self.name})"]
        for title, items in (("fields", self.fields), ("params", self.params), ("inverses", self.inverses)):
            lines += [f"  {title[:-1]} {item!r}" for item in items]
        lines += [f"  external {e.name}={e.default!r}" for e in self.externals]
        if self.inherit is not None:
            lines.append(f"  inherit {self.inherit!r}")
        if self.exclude is not None:
            lines.append(f"  exclude {sorted(self.exclude)!r}")
        return "\n".join(lines)
