"""Deterministic tokens of values: parameters, entry keys, constants.

``tokenize(value)`` hashes a canonical byte encoding of ``value`` with blake2b (16 bytes, hex).
The encoding is ours, not dask's, so a dask upgrade never invalidates a cache. It depends only on
content and type: never on ``id()``, memory addresses, ``PYTHONHASHSEED``, set or dict iteration
order (dicts and sets are encoded in a canonical sorted order), or the process.

Supported: None, bool, int (any size), float, complex, str, bytes, bytearray, tuple, list, dict,
set, frozenset, slice, range, ``pathlib`` paths, numpy arrays (dtype, shape, bytes; object arrays
element-wise) and scalars, enums, dataclasses, ``functools.partial``, functions and classes
(through :func:`~connectome_dask.hashing.code.fingerprint`), modules (the user's by value,
installed ones by name and version), and objects with a ``__dask_tokenize__`` or
``__connectome_token__`` method. Anything else must be registered with :data:`normalize_token`;
otherwise :class:`HashingError` — never a random token (a false miss) nor a partial one (a stale
hit). Inside a code fingerprint (a global, closure cell or default of user code) such an object is
hashed the way pickle sees it instead (``code`` module).

Equal keys, one token: a NumPy scalar hashes as the Python scalar it equals exactly (``np.int64(3)``
as ``3``, ``np.float32(0.5)`` and ``np.float64(0.5)`` as ``0.5``, ``np.str_("a")`` as ``"a"``,
``np.True_`` as ``True``), so keys from ``np.arange`` or a pandas column name the same entries as
Python ones. Python scalars of different types stay apart although ``3 == 3.0 == True``: code sees
them differently (``f"{key}"`` gives ``3``, ``3.0``, ``True``), so one must not be served the other's
value. An enum member hashes as its class (its qualified name and content: editing the class gives
new tokens, two classes never share them) and its value.
"""

import dataclasses
import enum
import functools
import hashlib
import pathlib
import types
import typing

from ..exceptions import HashingError

__all__ = ["tokenize", "combine", "normalize_token", "digest"]


def digest(data):
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def combine(*parts):
    """The token of an ordered sequence of tokens or strings (one Merkle step)."""
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


class _Registry:
    """``@normalize_token.register(MyType)``: a function mapping instances to a tokenizable value."""

    def __init__(self):
        self._handlers = {}

    def register(self, cls, func=None):
        if func is None:
            return lambda f: self.register(cls, f)
        for c in cls if isinstance(cls, tuple) else (cls,):
            self._handlers[c] = func
        return func

    def lookup(self, cls):
        for c in cls.__mro__:
            handler = self._handlers.get(c)
            if handler is not None:
                return handler
        return None


normalize_token = _Registry()


@normalize_token.register(__import__("logging").Logger)
def _logger(logger):
    return ("logging.Logger", logger.name)


# class machinery that has no token of its own: dataclass fields (not their annotated type: annotations
# are not hashed), slots, cached properties, type variables
normalize_token.register(functools.cached_property, lambda value: ("cached_property", value.func))
normalize_token.register(types.MemberDescriptorType, lambda value: ("slot", value.__name__))
normalize_token.register(types.MappingProxyType, dict)
normalize_token.register(type(dataclasses.MISSING), lambda value: "MISSING")
normalize_token.register(dataclasses.Field, lambda f: (
    f.name, f.default, f.default_factory, f.init, f.repr, f.hash, f.compare, f.metadata, f.kw_only,
    getattr(f._field_type, "name", None)))
_PARAMS = type(dataclasses.dataclass(type("_Probe", (), {})).__dataclass_params__)
normalize_token.register(_PARAMS, lambda p: tuple((s, getattr(p, s)) for s in _PARAMS.__slots__))
normalize_token.register(typing.TypeVar, lambda v: (v.__name__, v.__bound__, v.__constraints__, v.__covariant__,
                                                    v.__contravariant__))


def tokenize(value, *, what=None):
    """A deterministic hex token of ``value``; ``what`` names it in a ``HashingError``."""
    t = type(value)
    if t is str:
        return digest(b"s" + value.encode("utf-8", "surrogatepass"))
    if t is int:
        return digest(b"i%d" % value)
    if t.__module__ == "numpy":
        scalar = _python_scalar(value)
        if scalar is not None:
            return tokenize(scalar, what=what)
    out = []
    _encode(value, out, what, set())
    return digest(b"".join(out))


def _encode(obj, out, what, active):
    t = type(obj)
    if obj is None:
        out.append(b"N")
    elif t is bool:
        out.append(b"T" if obj else b"F")
    elif t is int:
        out.append(b"i%d;" % obj)
    elif t is float:
        out.append(b"f" + obj.hex().encode() + b";")
    elif t is complex:
        out.append(b"c" + obj.real.hex().encode() + b"," + obj.imag.hex().encode() + b";")
    elif t is str:
        data = obj.encode("utf-8", "surrogatepass")
        out.append(b"s%d:" % len(data) + data)
    elif t in (bytes, bytearray):
        out.append(b"y%d:" % len(obj) + bytes(obj))
    elif t in (tuple, list, dict, set, frozenset):
        _container(obj, out, what, active)
    else:
        _other(obj, out, what, active)


def _container(obj, out, what, active):
    if id(obj) in active:
        raise HashingError(f"cannot hash {what or 'a value'}: the {type(obj).__name__} contains itself")
    active.add(id(obj))
    try:
        if isinstance(obj, (tuple, list)):
            out.append(b"(%d:" % len(obj) if type(obj) is tuple else b"[%d:" % len(obj))
            for item in obj:
                _encode(item, out, what, active)
        elif isinstance(obj, dict):
            items = sorted(_pieces(k, what, active) + _pieces(v, what, active) for k, v in obj.items())
            out.append(b"{%d:" % len(items) + b"".join(items))
        else:
            items = sorted(_pieces(x, what, active) for x in obj)
            out.append(b"<%d:" % len(items) + b"".join(items))
    finally:
        active.discard(id(obj))


def _pieces(obj, what, active):
    out = []
    _encode(obj, out, what, active)
    data = b"".join(out)
    return b"%d:" % len(data) + data


def _other(obj, out, what, active):
    from .code import current, fingerprint
    from .installed import reference

    t = type(obj)
    handler = normalize_token.lookup(t)
    if handler is not None:
        out.append(b"R" + reference(t).encode() + b":")
        _encode(handler(obj), out, what, active)
        return
    np = _numpy()
    if np is not None and isinstance(obj, (np.ndarray, np.generic)):
        _numpy_value(np, obj, out, what, active)
        return
    custom = getattr(obj, "__connectome_token__", None)
    if custom is not None and not isinstance(obj, type):
        out.append(b"K" + custom().encode())
        return
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, types.MethodType, type,
                        functools.partial)) or (np is not None and isinstance(obj, np.ufunc)):
        out.append(b"F" + fingerprint(obj).encode())
        return
    if isinstance(obj, types.ModuleType):
        out.append(b"M" + fingerprint(obj).encode())
        return
    if isinstance(obj, pathlib.PurePath):
        out.append(b"P")
        _encode(obj.as_posix(), out, what, active)
        return
    if isinstance(obj, enum.Enum):
        out.append(b"E" + t.__qualname__.encode() + b":" + fingerprint(t).encode())
        _encode(obj.value, out, what, active)
        return
    if isinstance(obj, (slice, range)):
        out.append(b"S" if isinstance(obj, slice) else b"G")
        _encode((obj.start, obj.stop, obj.step), out, what, active)
        return
    if dataclasses.is_dataclass(obj):
        out.append(b"D" + fingerprint(t).encode())
        _encode(tuple((f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)), out, what, active)
        return
    if isinstance(obj, (tuple, list, dict, set, frozenset, str, bytes, int, float)):  # subclasses
        out.append(b"X" + fingerprint(t).encode())
        _encode(_builtin_base(obj), out, what, active)
        return
    method = getattr(obj, "__dask_tokenize__", None)
    if method is not None and callable(method):
        out.append(b"Q" + reference(t).encode() + b":")
        _encode(method(), out, what, active)
        return
    fingerprinter = current()
    if fingerprinter is not None:  # a value reached from code: the way pickle sees it
        fingerprinter.reduced(obj, out, what, active)
        return
    raise HashingError(
        f"cannot hash {what or 'a value'} of type {t.__module__}.{t.__qualname__} deterministically. "
        "Pass a value that hashes by content (numbers, strings, tuples, dicts, numpy arrays, paths, "
        "dataclasses), or register the type: "
        "`@connectome_dask.hashing.normalize_token.register(MyType) def _(obj): return <its content>`"
    )


def _builtin_base(obj):
    for base in (bool, int, float, str, bytes, tuple, list, dict, frozenset, set):
        if isinstance(obj, base):
            return base(obj)
    return obj


def _python_scalar(obj):
    """The Python scalar that NumPy scalar ``obj`` equals exactly, else None (datetimes, voids, a
    ``longdouble`` that ``float`` would round)."""
    np = _numpy()
    if not isinstance(obj, (np.bool_, np.number, np.str_, np.bytes_)):
        return None
    if isinstance(obj, (np.longdouble, np.clongdouble)):  # .item() keeps these NumPy types
        value = complex(obj) if isinstance(obj, np.clongdouble) else float(obj)
        return value if type(obj)(value) == obj else None
    return obj.item()


def _numpy_value(np, obj, out, what, active):
    if isinstance(obj, np.generic):
        value = _python_scalar(obj)
        if value is not None:
            _encode(value, out, what, active)
            return
    arr = np.asarray(obj)
    kind = b"a" if isinstance(obj, np.ndarray) else b"g"
    out.append(kind + arr.dtype.str.encode() + b"|" + repr(arr.shape).encode() + b"|")
    if arr.dtype.hasobject:
        _encode([x for x in arr.ravel(order="C").tolist()], out, what, active)
        return
    if arr.dtype.fields is not None:
        out.append(repr(arr.dtype.descr).encode())
    out.append(np.ascontiguousarray(arr).tobytes())


@functools.lru_cache(maxsize=None)
def _numpy_module():
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy is a dependency
        return None
    return numpy


def _numpy():
    return _numpy_module()
