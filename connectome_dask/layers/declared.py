"""``Source``, ``Transform``, ``Mixin`` — layers declared by a class body (or, for
``Transform``, inline keyword arguments).

The class body is read once by ``declare.LayerMeta`` into ``cls.__layer_spec__``; an instance
holds only that spec and its external parameter values, so it pickles as ``(class, values)``
(the class by reference when importable, by value through cloudpickle otherwise).

Parameter values are frozen when the layer is built (:func:`frozen`): a NumPy array is copied and
made read-only, lists and dicts are copied, so changing the caller's object in place later cannot
change what the layer computes nor what its cache keys (tokens, memoized per node) mean.
"""

import inspect

import numpy as np

from ..declare import LayerMeta, read_inline
from ..plan import check_cycles, connect_source, connect_transform
from ..spec import REQUIRED
from .base import CallableLayer

__all__ = ["Source", "Transform", "Mixin"]


class _Declared(CallableLayer, metaclass=LayerMeta, _root=True):
    _kind = None

    def __init__(self, *args, **kwargs):
        spec = type(self).__layer_spec__
        self._init(spec, _bind_parameters(spec, args, kwargs))

    def _init(self, spec, values):
        for error, message in spec.deferred:
            raise error(message)
        check_cycles(spec, spec.name)
        self._spec, self._values = spec, values

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("__layer_spec__")
        if spec is not None:
            cls.__signature__ = _signature(spec)

    @property
    def _label(self):
        return self._spec.name

    def __reduce__(self):
        return _restore, (type(self), self._values)

    def __repr__(self):
        return f"{self._spec.name}({', '.join(f.name for f in self._spec.fields)})"


def _restore(cls, values):
    layer = cls.__new__(cls)
    layer._init(cls.__layer_spec__, values)
    return layer


class Source(_Declared, _root=True):
    """A dataset: fields are functions of the entry key; ``@meta`` fields describe the whole set.

    >>> from connectome_dask import Source, meta
    >>> class Squares(Source):
    ...     @meta
    ...     def ids():
    ...         return [1, 2, 3]
    ...     def square(i):
    ...         return i * i
    >>> ds = Squares()
    >>> ds.ids, ds.square(3)
    ([1, 2, 3], 9)
    """

    _kind = "source"
    _is_base = True

    def __new__(cls, *args, **kwargs):
        if cls is Source:
            raise RuntimeError("Source is abstract: subclass it and declare fields in the class body")
        return super().__new__(cls)

    def _connect(self, prev):
        return connect_source(self._spec, self._values, self._label)


class Transform(_Declared, _root=True):
    """Fields computed from the previous layer's fields.

    Class form: ``class Zoom(Transform): def image(image, _factor): ...``. Inline form:
    ``Transform(image=lambda image: image * 2, __inherit__=True)``.

    >>> from connectome_dask import Transform
    >>> Transform(double=lambda x: 2 * x).double(21)
    42
    """

    _kind = "transform"
    _is_base = True

    def __init__(self, *args, **kwargs):
        if type(self) is Transform:
            if args:
                raise TypeError("Transform(...) takes only keyword arguments: Transform(name=function, ...)")
            self._inline = kwargs
            self._init(read_inline(kwargs), {})
        else:
            super().__init__(*args, **kwargs)

    def _connect(self, prev):
        return connect_transform(self._spec, self._values, prev, self._label)

    def __reduce__(self):
        if type(self) is Transform:
            return _inline, (self._inline,)
        return super().__reduce__()


def _inline(kwargs):
    return Transform(**kwargs)


class Mixin(metaclass=LayerMeta, _root=True):
    """Reusable declarations: ``class S(Source, M)`` copies the body of ``M`` into ``S``."""

    _kind = "mixin"
    _is_base = True

    def __new__(cls, *args, **kwargs):
        raise RuntimeError(f"{cls.__name__} is a Mixin and cannot be instantiated; list it as a base of a layer")


def _bind_parameters(spec, args, kwargs):
    externals = spec.externals
    if args:
        if len(externals) != 1 or len(args) > 1:
            raise TypeError(f"{spec.name}() takes keyword arguments only ({', '.join(e.argument for e in externals)})"
                            if len(externals) != 1 else f"{spec.name}() takes 1 positional argument")
        name = externals[0].argument
        if name in kwargs:
            raise TypeError(f"{spec.name}() got multiple values for argument {name!r}")
        kwargs = {name: args[0], **kwargs}
    values, missing = {}, []
    for e in externals:
        if e.argument in kwargs:
            values[e.name] = kwargs.pop(e.argument)
        elif e.default is REQUIRED:
            missing.append(e.argument)
        else:
            values[e.name] = e.default
    values = {name: frozen(value) for name, value in values.items()}
    if kwargs:
        raise TypeError(f"{spec.name}() got unexpected arguments {sorted(kwargs)}; "
                        f"it takes {[e.argument for e in externals]}")
    if missing:
        raise TypeError(f"{spec.name}() missing required arguments {missing}")
    return values


def frozen(value, _inside=()):
    """``value`` safe from in-place changes by its caller: NumPy arrays copied and made read-only (also
    inside lists, tuples and dicts, which are copied); other values as they are. (A container that
    holds itself is left as it is: hashing it raises ``HashingError``.)"""
    kind = type(value)
    if isinstance(value, np.ndarray):
        value = np.array(value)  # a copy, of the base class (a memmap's data in memory)
        value.flags.writeable = False
    elif kind in (list, tuple, dict) and id(value) not in _inside:
        inside = (*_inside, id(value))
        if kind is dict:
            value = {key: frozen(item, inside) for key, item in value.items()}
        else:
            value = kind(frozen(item, inside) for item in value)
    return value


def _signature(spec):
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD if len(spec.externals) == 1 else inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter(e.argument, kind, default=inspect.Parameter.empty if e.default is REQUIRED else e.default)
              for e in spec.externals]
    return inspect.Signature(params, __validate_parameters__=False)
