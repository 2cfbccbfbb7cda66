"""Hop 1, declare: a class body becomes a frozen :class:`~connectome_dask.spec.LayerSpec`.

``class Crop(Transform): ...`` runs its body in a :class:`Body` namespace that remembers every
assignment in order (one name may appear twice: a forward and an ``@inverse`` function).
:class:`LayerMeta` then hands that history to :func:`read_body`, one pure function that
classifies each entry:

* public callables are fields, ``_x`` callables are local parameters;
* ``_x: T``, ``_x: T = v`` and non-callable ``_x = v`` are external parameters, which become
  keyword arguments of the constructor (``_root`` → ``root``);
* ``staticmethod``/``classmethod`` stay plain class attributes;
* everything else is a declaration error with connectome's exception type.

The spec is stored on the class as ``__layer_spec__``; the metaclass does nothing else (no
generated ``__init__``). Mixins keep their raw body (``__layer_body__``), which classes that
list them copy into their own. No dask import here.
"""

import inspect
import warnings

from .decorators import Decorator, Function, Output, unwrap
from .exceptions import FieldError, GraphError
from .spec import REQUIRED, Arg, ExternalSpec, FieldSpec, LayerSpec

__all__ = ["Body", "LayerMeta", "FieldFunction", "read_body", "read_inline"]

_IGNORED = {
    "__module__", "__qualname__", "__doc__", "__annotations__", "__firstlineno__",
    "__static_attributes__", "__classcell__", "__orig_bases__", "__type_params__",
    "__annotate__", "__annotate_func__", "__annotations_cache__",
}
_DUNDERS = {"source": set(), "transform": {"__inherit__", "__exclude__"},
            "split": {"__inherit__", "__exclude__", "__split__"},
            "mixin": {"__inherit__", "__exclude__", "__split__"}}


class Body(dict):
    """A class namespace that keeps the history of assignments (duplicates included)."""

    def __init__(self):
        super().__init__()
        self.history = []

    def __setitem__(self, key, value):
        self.history.append((key, value))
        super().__setitem__(key, value)


class LayerMeta(type):
    """Reads layer class bodies. Bases: exactly one of Source/Transform/Split/Mixin, plus mixins."""

    @classmethod
    def __prepare__(mcls, name, bases, **kwargs):
        return Body()

    def __new__(mcls, name, bases, namespace, **kwargs):
        if kwargs.pop("_root", False):  # the library's own base classes
            return super().__new__(mcls, name, bases, dict(namespace), **kwargs)
        base, mixins = _split_bases(name, bases)
        history = list(getattr(namespace, "history", namespace.items()))
        annotations = dict(namespace.get("__annotations__", {}))
        qualname = namespace.get("__qualname__", name)
        items, annotations, owners = _merge_mixins(name, qualname, history, annotations, mixins)

        attrs = {k: namespace[k] for k in ("__module__", "__qualname__", "__doc__") if k in namespace}
        attrs.setdefault("__doc__", None)
        for key, value in items:
            if isinstance(value, (staticmethod, classmethod)) and not key.startswith("_"):
                attrs[key] = value
        if base._kind == "mixin":
            attrs["__layer_body__"] = (tuple(items), annotations, owners)
            functions = {}
            for key, value in items:
                func, flags = unwrap(value)
                if not key.startswith("_") and not flags.get("inverse") and _is_callable(value):
                    functions.setdefault(key, func.func if isinstance(func, Function) else func)
        else:
            spec = attrs["__layer_spec__"] = read_body(base._kind, name, items, annotations, owners)
            functions = {f.name: f.func for f in spec.fields}
        for key, func in functions.items():
            if key not in attrs:
                attrs[key] = FieldFunction(key, func)
        return super().__new__(mcls, name, (base,), attrs, **kwargs)


class FieldFunction:
    """A field's function kept on its class, as connectome does: ``A.x`` is the declared function
    (so it pickles by reference and can be called directly), ``a.x`` the instance's field."""

    __slots__ = ("name", "func")

    def __init__(self, name, func):
        self.name, self.func = name, func

    def __get__(self, layer, owner=None):
        if layer is None:
            return self.func
        return type(layer).__getattr__(layer, self.name)

    def __connectome_token__(self):  # the function itself is hashed with the layer's spec
        return "field-function:" + self.name


def _split_bases(name, bases):
    kinds = [b for b in bases if getattr(b, "_is_base", False) and b.__dict__.get("_is_base")]
    if len(kinds) != 1:
        listed = ", ".join(b.__name__ for b in kinds) or "none"
        raise TypeError(
            f"layer {name!r} must derive from exactly one of Source, Transform, Split or Mixin "
            f"(found: {listed}); reuse declarations through mixins"
        )
    base, mixins = kinds[0], []
    for b in bases:
        if b is base:
            continue
        if "__layer_spec__" in getattr(b, "__dict__", {}):
            raise TypeError(f"{name!r}: layer {b.__name__!r} is concrete and cannot be subclassed; use a Mixin")
        if "__layer_body__" not in getattr(b, "__dict__", {}):
            raise TypeError(f"{name!r}: base {b.__name__!r} is not a Mixin; only mixins may be listed beside {base.__name__}")
        mixins.append(b)
    if "__layer_spec__" in base.__dict__:
        raise TypeError(f"{name!r}: layer {base.__name__!r} is concrete and cannot be subclassed")
    return base, mixins


def _merge_mixins(name, qualname, history, annotations, mixins):
    """Concatenate the class body with its mixins' bodies; a name defined twice is a RuntimeError."""
    items = [(k, v) for k, v in history if k != "__annotations__"]
    owners = {k: qualname for k, _ in items}
    own_names = {k for k, _ in items if k not in _IGNORED} | set(annotations)
    seen = {n: name for n in own_names}
    for mixin in mixins:
        body, mix_annotations, mix_owners = mixin.__dict__["__layer_body__"]
        names = {k for k, _ in body if k not in _IGNORED} | set(mix_annotations)
        for n in sorted(names):
            if n in seen:
                raise RuntimeError(
                    f"{name!r}: {n!r} is defined both in {seen[n]!r} and in mixin {mixin.__name__!r}; "
                    "rename one of them"
                )
            seen[n] = mixin.__name__
        items += [(k, v) for k, v in body if k not in _IGNORED]
        owners.update({k: mix_owners.get(k, mixin.__qualname__) for k, _ in body})
        annotations.update(mix_annotations)
    return items, annotations, owners


def read_body(kind, name, items, annotations, owners=None):
    """Classify the ``(name, value)`` items of a class body into a ``LayerSpec``."""
    owners = owners or {}
    fields, params, inverses, externals, deferred = [], [], [], [], []
    inherit = exclude = split = None
    seen = {}
    for key, value in items:
        if key.startswith("__") and key.endswith("__"):
            if key in _IGNORED:
                continue
            if key not in _DUNDERS[kind]:
                raise RuntimeError(f"{kind.title()} {name!r}: unknown magic name {key!r}")
            if key == "__inherit__":
                inherit = _names(value, "__inherit__", name, allow_true=True)
            elif key == "__exclude__":
                exclude = _names(value, "__exclude__", name)
            else:
                split = _field(kind, name, key, value)
            continue
        private = key.startswith("_")
        if isinstance(value, (staticmethod, classmethod, property)):
            if private or isinstance(value, property):
                raise FieldError(
                    f"{name!r}: {key!r} is a {type(value).__name__}; layers accept only public "
                    "static/class methods (fields are plain functions without self)"
                )
            continue
        if key in annotations and not private:
            raise FieldError(f"{name!r}: public names cannot be annotated ({key!r}); annotate only _parameters")
        if private and (key in annotations or not _is_callable(value)):
            if key in annotations and callable(value) and _defined_inside(value, owners.get(key)):
                warnings.warn(f"{name!r}: the default of {key!r} is a callable defined in the class body; "
                              "it is used as a constant parameter value, not as a function", UserWarning, stacklevel=4)
            externals.append(ExternalSpec(key, value))
            continue
        if not _is_callable(value):
            raise FieldError(
                f"{name!r}: public attribute {key!r} = {value!r} is not a function; "
                "fields are functions, constants must be _private parameters"
            )
        if private and not isinstance(value, (Decorator, Function)) and not _defined_inside(value, owners.get(key)):
            warnings.warn(f"{name!r}: {key!r} is a callable defined outside of the class body; it is used as a "
                          f"parameter function. To pass it as a value, annotate it: `{key}: Callable = ...`",
                          UserWarning, stacklevel=4)
        spec = _field(kind, name, key, value)
        if spec.inverse:
            if spec.optional:
                deferred.append((GraphError, f"{name!r}: @optional cannot decorate the inverse function {key!r}"))
            inverses.append(spec)
            continue
        if key in seen:
            if kind == "source":
                raise TypeError(f"Source {name!r}: {key!r} is defined twice")
            deferred.append((GraphError, f"{name!r}: {key!r} is defined twice; each field needs one forward function"))
        seen[key] = True
        (params if private else fields).append(spec)
    for key in annotations:
        if key not in {k for k, _ in items}:
            if not key.startswith("_"):
                raise FieldError(f"{name!r}: public names cannot be annotated ({key!r}); annotate only _parameters")
            externals.append(ExternalSpec(key, REQUIRED))
    if inherit is not None and exclude is not None:
        raise ValueError(f"{name!r}: __inherit__ and __exclude__ cannot be used together")
    if kind == "source":
        _check_key_names(name, fields, params)
    defined = {f.name for f in fields}
    clash = sorted(defined & inherit) if isinstance(inherit, frozenset) else []
    if clash:
        deferred.append((GraphError, f"{name!r}: {clash} are both inherited and defined; drop them from __inherit__"))
    externals.sort(key=lambda e: e.default is REQUIRED)  # defaults first, then required (as connectome)
    return LayerSpec(kind, name, tuple(fields), tuple(params), tuple(inverses), tuple(externals),
                     inherit, exclude, split, tuple(deferred))


def read_inline(kwargs):
    """The spec of ``Transform(name=callable, ...)``."""
    items = []
    for key, value in kwargs.items():
        if key in ("__inherit__", "__exclude__"):
            items.append((key, value))
        elif key.startswith("__"):
            raise RuntimeError(f"Transform: unknown magic name {key!r}")
        elif not _is_callable(value):
            raise TypeError(f"Transform: {key}={value!r} is not callable; inline transforms take functions only")
        else:
            items.append((key, value))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return read_body("transform", "Transform", items, {}, {k: None for k, _ in items})


def _names(value, what, layer, allow_true=False):
    if allow_true and value is True:
        return True
    if isinstance(value, str):
        return frozenset([value])
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    allowed = "True, a field name or a collection of names" if allow_true else "a field name or a collection of names"
    raise TypeError(f"{layer!r}: {what} must be {allowed}, got {value!r}")


def _is_callable(value):
    return isinstance(value, (Decorator, Function)) or callable(value)


def _defined_inside(value, owner):
    if owner is None:
        return True
    func, _ = unwrap(value)
    qualname = getattr(func, "__qualname__", "")
    return qualname.startswith(owner + ".")


def _field(kind, layer, key, value):
    func, flags = unwrap(value)
    if isinstance(func, Function):
        args = tuple(_named_arg(kind, n) for n in func.names)
        args += tuple(_named_arg(kind, n, keyword=k) for k, n in func.keywords.items())
        func = func.func
    else:
        args = _signature_args(kind, layer, key, func, flags.get("positional", False))
    stamp = flags.get("files")
    clash = [f for f in ("meta", "impure", "inverse") if flags.get(f)]
    if stamp and clash:
        raise FieldError(f"{layer!r}: {key!r} is both @files and @{clash[0]}; a @files function returns the paths "
                         "an entry reads: keep it pure and per entry, apart from other fields")
    return FieldSpec(key, func, args, meta=flags.get("meta", False), optional=flags.get("optional", False),
                     impure=flags.get("impure", False), inverse=flags.get("inverse", False), stamp=stamp)


def _named_arg(kind, name, keyword=None):
    if name.startswith("_"):
        return Arg("param", name, keyword)
    return Arg("key" if kind == "source" else "prev", name, keyword)


def _signature_args(kind, layer, key, func, positional):
    try:
        parameters = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError) as e:
        raise TypeError(f"{layer!r}: cannot read the arguments of {key!r} ({func!r}): {e}") from None
    args = []
    for i, p in enumerate(parameters):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.KEYWORD_ONLY):
            raise TypeError(f"{layer!r}: field {key!r} has a {p.kind.description} argument {p.name!r}; "
                            "only plain positional-or-keyword arguments are allowed")
        if p.default is not p.empty:
            raise ValueError(f"{layer!r}: argument {p.name!r} of {key!r} has a default value; "
                             "defaults are not allowed, use an external _parameter instead")
        annotation = p.annotation
        if annotation is Output or annotation == "Output":
            args.append(Arg("output", p.name))
        elif isinstance(annotation, Output):
            raise ValueError(f"{layer!r}: argument {p.name!r} of {key!r} is annotated with an instance; use `Output`")
        elif i == 0 and (positional or p.kind == p.POSITIONAL_ONLY):
            args.append(Arg("key", "id") if kind == "source" else Arg("prev", key))
        elif p.name == "__part__" and kind == "split":
            args.append(Arg("part", p.name))
        elif p.name.startswith("_"):
            args.append(Arg("param", p.name))
        elif kind == "source":
            args.append(Arg("key", p.name))
        else:
            args.append(Arg("prev", p.name))
    return tuple(args)


def _check_key_names(layer, fields, params):
    """Each function of a Source may name the key as it likes (``def title(i)``, ``def pages(key)``);
    one function taking two different key arguments is an error."""
    for f in (*fields, *params):
        names = sorted({a.target for a in f.args if a.kind == "key"})
        if len(names) > 1:
            raise FieldError(f"Source {layer!r}: {f.name!r} takes several key arguments ({names}); a Source "
                             "function receives the entry key once: keep one of them")
    if any(f.name == "id" for f in fields):
        raise FieldError(f"Source {layer!r}: 'id' is the entry key and cannot be defined as a field")
