"""``Chain``, ``LazyChain`` and ``chained``: composition of layers.

``Chain(a, b, c)`` connects ``a``, then ``b`` to ``a``'s plan, then ``c``; nested chains connect
exactly like the flat chain. ``a >> b`` is ``Chain(a, b)``, so ``a >> b >> c`` nests (connectome
does the same; only a flat ``Chain`` slices layer by layer).
"""

import inspect

from .base import CallableLayer, Layer
from ..plan import OPEN

__all__ = ["Chain", "LazyChain", "chained"]


def _fold(layers, prev):
    for layer in layers:
        prev = layer._connect(prev)
    return prev


def _prepare_all(layers, prev):
    """Run construction-time checks of every layer against the plan of the layers before it."""
    for i, layer in enumerate(layers):
        if i or prev is not None:
            upstream = _fold(layers[:i], prev if prev is not None else OPEN)
            layer._prepare(upstream)


class Chain(CallableLayer):
    """Layers applied one after another: ``Chain(source, zoom, crop)`` is ``source >> zoom >> crop``.

    >>> from connectome_dask import Chain, Transform
    >>> pipeline = Chain(Transform(x=lambda x: x + 1), Transform(x=lambda x: x * 10))
    >>> pipeline.x(1), len(list(pipeline[1:]._layers))
    (20, 1)
    """

    def __init__(self, *layers):
        if not layers:
            raise TypeError("Chain() needs at least one layer")
        for layer in layers:
            if not isinstance(layer, Layer):
                raise TypeError(f"Chain: {layer!r} is not a layer")
        self._layers = layers
        if any(type(layer)._prepare is not Layer._prepare for layer in layers[1:]):
            _prepare_all(layers, None)

    def _connect(self, prev):
        head = self._layers[0]
        if prev is OPEN and not isinstance(head, CallableLayer):
            raise AttributeError(f"the head of a chain must be a callable layer, not {type(head).__name__}")
        return _fold(self._layers, prev)

    def _prepare(self, prev):
        _prepare_all(self._layers, prev)

    @property
    def _label(self):
        return "Chain"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Chain(*self._layers[index])
        if isinstance(index, int) and not isinstance(index, bool):
            return self._layers[index]
        raise ValueError(f"a chain is indexed by an int or a slice, not {type(index).__name__}")

    def __reduce__(self):
        return _chain, self._layers

    def __repr__(self):
        if len(self._layers) == 2:
            return f"{self._layers[0]!r} >> {self._layers[1]!r}"
        inner = ",\n".join("    " + repr(layer).replace("\n", "\n    ") for layer in self._layers)
        return f"Chain(\n{inner}\n)"

    def _filter(self, predicate, *args):
        """A new chain of the layers for which ``predicate(layer, *args)`` holds (recursively)."""
        return self._rebuild(lambda layer: predicate(layer, *args), predicate, args, False)

    def _filterfalse(self, predicate, *args):
        return self._rebuild(lambda layer: not predicate(layer, *args), predicate, args, True)

    def _drop_cache(self):
        from .cache import CacheLayer

        return self._filterfalse(lambda layer: isinstance(layer, CacheLayer))

    def _rebuild(self, keep, predicate, args, negate):
        layers = []
        for layer in self._layers:
            if isinstance(layer, Chain):
                sub = layer._filterfalse(predicate, *args) if negate else layer._filter(predicate, *args)
                layers.append(sub)
            elif keep(layer):
                layers.append(layer)
        return Chain(*layers)


def _chain(*layers):
    return Chain(*layers)


class LazyChain(Layer):
    """Layers that are spliced into the chain they are appended to (they need a previous layer)."""

    def __init__(self, *layers):
        if not layers:
            raise TypeError("LazyChain() needs at least one layer")
        self._layers = layers

    def _connect(self, prev):
        return _fold(self._layers, prev)

    def _prepare(self, prev):
        _prepare_all(self._layers, prev)

    def __reduce__(self):
        return LazyChain, self._layers

    def __repr__(self):
        return f"LazyChain({', '.join(map(repr, self._layers))})"


def chained(*layers, lazy=False):
    """Class decorator: ``Cls(*args)`` returns ``Chain(Cls(*args), *layers)`` (or a ``LazyChain``).

    >>> from connectome_dask import Source, Transform, chained
    >>> @chained(Transform(value=lambda value: -value))
    ... class Numbers(Source):
    ...     def value(i):
    ...         return i
    >>> Numbers().value(3)
    -3
    """

    def decorator(cls):
        def __new__(_, *args, **kwargs):
            head = cls(*args, **kwargs)
            return LazyChain(head, *layers) if lazy else Chain(head, *layers)

        namespace = {"__new__": __new__, "__doc__": cls.__doc__, "__module__": cls.__module__,
                     "__qualname__": cls.__qualname__, "__wrapped__": cls}
        try:
            namespace["__signature__"] = inspect.signature(cls)
        except (TypeError, ValueError):
            pass
        return type(cls.__name__, (), namespace)

    return decorator
