"""Code fingerprints: the identity of a function or class for cache keys.

Two ways to identify code:

* **by reference** — ``module.qualname`` plus the version of the distribution that ships the
  module (the Python version for the standard library and builtins). Used for code that cannot
  change without a reinstall: builtins, C functions, numpy ufuncs, and functions/classes whose
  module file lives in the standard library or in a ``site-packages``/``dist-packages`` folder,
  and this library's own code (identified by its version, also in an editable install): the
  rules of :mod:`.installed`.
* **by value** — everything else: ``__main__``, notebooks, closures, lambdas, and the user's
  own importable modules (a ``mymod.py`` next to a script, a project under development, an
  editable install). This fixes connectome's stale caches after editing an importable module.

A by-value fingerprint covers the bytecode and constants (recursively through nested code, the
docstring dropped), argument and variable names, the function's ``__name__``, defaults, keyword
defaults, a non-empty ``__dict__``, closure cell values, and the globals the code actually uses
(``LOAD_GLOBAL``-like instructions, recursively through nested code: the globals cloudpickle ships
with a function), each by value or by reference by the
same rules; recursion between functions and classes is handled with back-references. It never
includes the file name, line numbers, the line table, the qualname or the class a function is
defined in, annotations, memory addresses, or anything hash-seed dependent (frozenset constants
are sorted). Classes by value: their bases and sorted ``__dict__`` (not their name), minus the
caches Python adds at run time (``__slotnames__`` when an instance is pickled, the ABC caches),
so a class hashes the same before and after its instances are pickled or ``isinstance``-checked.

**Modules.** A global that is one of the user's own modules (``import helpers; helpers.clip(x)``,
``helpers.THRESHOLD``, ``pkg.sub.f``) is hashed by value: the module's attributes whose names the
code mentions (``co_names``, recursively — an over-approximation), each by the usual rules, so a
submodule reached as ``pkg.sub`` is hashed the same way. The names hashed per module are recorded
(:func:`reached_names`): :mod:`connectome_dask.shipping` ships exactly those attributes to workers.
Installed modules are hashed by name and version.

**Other objects** reached from code (a callable instance used as a field, the bound object of a
method, an instance in a global, a closure or a default) are hashed the way pickle sees them:
their ``__reduce_ex__(4)`` (class, arguments, state), recursively, by the same rules. An object
that pickle refuses is a :class:`HashingError` naming where it was found; nothing is ever
identified by its type or ``repr`` alone (a partial key).

Overrides: ``is_stable(obj)`` forces by-reference, ``is_unstable(obj)`` by-value,
``unstable_module(name)`` a whole module by value; a by-reference class may define
``__getversion__()`` to add a version tag.
"""

import dis
import sys
import threading
import types
import weakref

from .installed import _UNSTABLE_MODULES, _is_installed, reference, unstable_module  # noqa: F401 - re-exported
from .tokenize import _encode, combine, digest
from ..exceptions import HashingError

__all__ = ["fingerprint", "identify", "content", "reached_names", "is_stable", "is_unstable", "HASH_SCHEME",
           "reference", "unstable_module"]

HASH_SCHEME = 3  # 3: NumPy scalars hash as the Python scalars they equal; enums by class name + value
_PREFIX = f"py{sys.version_info[0]}.{sys.version_info[1]}/scheme{HASH_SCHEME}"
_FORCED = weakref.WeakKeyDictionary()
_CODE_MEMO = {}
_NAMES_MEMO = {}
_LOCAL = threading.local()
_REACHED = {}  # module name -> names of its attributes hashed by value


def is_stable(obj):
    """Decorator: hash ``obj`` by reference (``module.qualname`` + version). Returns ``obj``."""
    _FORCED[obj] = "stable"
    return obj


def is_unstable(obj):
    """Decorator: hash ``obj`` by value. Returns ``obj``."""
    _FORCED[obj] = "unstable"
    return obj


def fingerprint(obj):
    """A deterministic hex token identifying the code of a callable, class or module."""
    running = current()
    if running is not None:  # nested, e.g. through a value that refers back to code being hashed
        return running.token(obj)
    return identify(obj)[0]


def identify(obj):
    """``(fingerprint, {(module, by-reference tag)} reached, whether an override decided)``: what
    a worker compares with the client's to detect code that is not the code the client hashed."""
    _LOCAL.current = current = _Fingerprinter()
    try:
        return current.token(obj), frozenset(current.refs), current.overridden
    finally:
        _LOCAL.current = None


def content(value, what=None):
    """The token of a value the way code reaches it: like :func:`~.tokenize.tokenize`, and an
    object without a token of its own is hashed the way pickle sees it."""
    running = current()
    if running is not None:
        return running.value(value, what)
    _LOCAL.current = fingerprinter = _Fingerprinter()
    try:
        return fingerprinter.value(value, what)
    finally:
        _LOCAL.current = None


def current():
    """The fingerprint computation running in this thread, if any (values reached from code)."""
    return getattr(_LOCAL, "current", None)


def reached_names(module_name):
    """The attribute names of user module ``module_name`` that fingerprints hashed by value."""
    return _REACHED.get(module_name, ())


def _by_reference(obj):
    """``(by reference?, decided by an override?)``."""
    forced = _FORCED.get(obj) if _weakrefable(obj) else None
    if forced is not None:
        return forced == "stable", True
    if not isinstance(obj, (types.FunctionType, type)):
        return True, False  # builtins, C functions, ufuncs, method descriptors
    qualname = getattr(obj, "__qualname__", "")
    if "<locals>" in qualname or "<lambda>" in qualname:
        return False, False
    module = getattr(obj, "__module__", None)
    return _is_installed(module), module in _UNSTABLE_MODULES


_BUILTIN_TYPES = (types.BuiltinFunctionType, types.BuiltinMethodType, types.MethodDescriptorType,
                  types.WrapperDescriptorType, types.MethodWrapperType, types.ClassMethodDescriptorType)


def _builtin(obj):
    if isinstance(obj, _BUILTIN_TYPES):
        return True
    np = sys.modules.get("numpy")
    return np is not None and isinstance(obj, np.ufunc)


def _weakrefable(obj):
    try:
        weakref.ref(obj)
        return True
    except TypeError:
        return False


class _Fingerprinter:
    """One fingerprint computation: tracks the objects being hashed to resolve cycles, the names
    the code being hashed mentions (for module attributes), the by-reference tags it reached and
    whether an override decided how something was hashed."""

    def __init__(self):
        self.active = {}
        self.names = None  # co_names of the code being hashed; None: not inside code
        self.refs = set()
        self.overridden = False

    def enter(self, obj):
        """A back-reference marker if ``obj`` is being hashed already, else None (and marks it)."""
        key = id(obj)
        if key in self.active:
            return f"cycle{len(self.active) - self.active[key]}"
        self.active[key] = len(self.active)
        return None

    def token(self, obj):
        if isinstance(obj, types.MethodType):
            return combine("method", self.token(obj.__func__), self.value(obj.__self__, "the bound object"))
        if type(obj).__name__ == "partial" and hasattr(obj, "func") and hasattr(obj, "args"):
            return combine("partial", self.token(obj.func), self.value(obj.args, "partial arguments"),
                           self.value(obj.keywords, "partial keywords"))
        if isinstance(obj, (staticmethod, classmethod)):
            return combine(type(obj).__name__, self.token(obj.__func__))
        if isinstance(obj, types.ModuleType):
            return self.module(obj)
        if not isinstance(obj, (types.FunctionType, type)) and not _builtin(obj):
            what = f"the callable {type(obj).__qualname__} instance"
            return combine("instance", self.token(type(obj)), self.value(obj, what))
        by_reference, overridden = _by_reference(obj)
        self.overridden |= overridden
        if by_reference:
            tag = reference(obj)
            self.refs.add((getattr(obj, "__module__", None) or "builtins", tag))
            return digest(f"{_PREFIX}/ref/{tag}".encode())
        cycle = self.enter(obj)
        if cycle is not None:
            return cycle
        try:
            parts = self.function(obj) if isinstance(obj, types.FunctionType) else self.cls(obj)
        finally:
            del self.active[id(obj)]
        return combine(_PREFIX, *parts)

    def module(self, module):
        """A user module by the attributes the code mentions (all public ones outside code);
        an installed one by name and version."""
        name = module.__name__
        if name in _UNSTABLE_MODULES:
            self.overridden = True
        elif _is_installed(name) or name.partition(".")[0] in sys.stdlib_module_names:
            tag = reference(module)
            self.refs.add((name, tag))
            return digest(f"{_PREFIX}/module/{tag}".encode())
        cycle = self.enter(module)
        if cycle is not None:
            return cycle
        try:
            attrs = vars(module)
            names = [n for n in attrs if not n.startswith("__")] if self.names is None else self.names
            names = sorted(n for n in names if n in attrs)
            _REACHED.setdefault(name, set()).update(names)
            parts = ["module"]
            for n in names:
                parts += [n, self.value(attrs[n], f"the attribute {n!r} of module {name!r}")]
        finally:
            del self.active[id(module)]
        return combine(_PREFIX, *parts)

    def value(self, value, what):
        """A token for a value referenced by code (a global, closure cell, default)."""
        if isinstance(value, (types.FunctionType, type, types.MethodType, staticmethod, classmethod,
                              types.ModuleType)):
            return "f" + self.token(value)
        if isinstance(value, property):
            return "p" + combine(*(self.token(f) if f else "-" for f in (value.fget, value.fset, value.fdel)))
        out = []
        _encode(value, out, what, set())
        return digest(b"".join(out))

    def reduced(self, obj, out, what, active):
        """Encode an object that has no token of its own the way pickle sees it."""
        cycle = self.enter(obj)
        if cycle is not None:
            out.append(cycle.encode() + b";")
            return
        try:
            try:
                reduced = obj.__reduce_ex__(4)
            except Exception as e:  # noqa: BLE001 - pickle refuses it: so do we
                t = type(obj)
                raise HashingError(
                    f"cannot hash {what or 'a value'}: a {t.__module__}.{t.__qualname__} that pickle refuses "
                    f"({e}). Register the type with `connectome_dask.hashing.normalize_token.register`, or pass "
                    "what it is made of instead") from e
            if isinstance(reduced, str):  # a module-level singleton, pickled by name
                out.append(b"O" + self.token(type(obj)).encode() + reduced.encode() + b";")
                return
            parts = list(reduced) + [None] * (5 - len(reduced))
            for i in (3, 4):  # list and dict items come as iterators
                if parts[i] is not None:
                    parts[i] = list(parts[i])
            out.append(b"O")
            _encode(tuple(parts), out, what, active)
        finally:
            del self.active[id(obj)]

    def function(self, func):
        code = func.__code__
        parts = ["function", func.__name__, _code_digest(code, func.__doc__)]
        outer, self.names = self.names, _all_names(code)
        try:
            g = func.__globals__
            for name in sorted(_global_names(code)):
                if name in g:
                    parts += [name, self.value(g[name], f"the global {name!r} used by {func.__qualname__}")]
            for name, cell in zip(code.co_freevars, func.__closure__ or ()):
                try:
                    contents = cell.cell_contents
                except ValueError:
                    contents = _EMPTY
                parts += ["cell", name, self.value(contents, f"the closure variable {name!r} of {func.__qualname__}")]
            if func.__defaults__:
                parts += ["defaults", self.value(func.__defaults__, f"the defaults of {func.__qualname__}")]
            if func.__kwdefaults__:
                parts += ["kwdefaults", self.value(func.__kwdefaults__, f"the keyword defaults of {func.__qualname__}")]
            attrs = {k: v for k, v in func.__dict__.items() if k not in ("__wrapped__",)}
            if attrs:
                parts += ["dict", self.value(attrs, f"the attributes of {func.__qualname__}")]
        finally:
            self.names = outer
        return parts

    def cls(self, cls):
        parts = ["class"] + [self.token(b) for b in cls.__bases__]
        outer, self.names = self.names, _class_names(cls)
        try:
            for name in sorted(cls.__dict__):
                if name not in _CLASS_SKIP:
                    what = f"the attribute {name!r} of class {cls.__qualname__}"
                    parts += [name, self.value(cls.__dict__[name], what)]
        finally:
            self.names = outer
        spec = cls.__dict__.get("__layer_spec__")
        if spec is not None:  # a declared layer: its functions live in the spec, not the class dict
            for f in (*spec.fields, *spec.params, *spec.inverses):
                parts += [f.name, self.token(f.func)]
        return parts


# Not part of a class's identity: naming and location, typing metadata (annotations are not
# hashed, as for functions), the instance dict/weakref descriptors, and caches Python fills in at
# run time (``__slotnames__`` when an instance is pickled; the ABC caches on ``isinstance``).
# ``__abstractmethods__`` stays: a frozenset of names.
_CLASS_SKIP = frozenset({
    "__module__", "__qualname__", "__doc__", "__dict__", "__weakref__", "__firstlineno__", "__static_attributes__",
    "__annotations__", "__annotate__", "__orig_bases__", "__parameters__", "__layer_spec__", "__signature__",
    "__slotnames__", "_abc_impl", "_abc_registry", "_abc_cache", "_abc_negative_cache", "_abc_negative_cache_version",
})


class _Empty:
    def __dask_tokenize__(self):
        return "empty-cell"


_EMPTY = _Empty()


_GLOBAL_OPS = frozenset(("LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_NAME"))


def _global_names(code):
    """The globals ``code`` reads or writes (recursively through nested code): the names cloudpickle
    ships with a function, not attribute names (``image.shape`` does not use a global ``shape``)."""
    names = _NAMES_MEMO.get(code)
    if names is None:
        names = {i.argval for i in dis.get_instructions(code) if i.opname in _GLOBAL_OPS}
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                names |= _global_names(const)
        names = _NAMES_MEMO[code] = frozenset(names)
    return names


def _all_names(code):
    """Every name ``code`` mentions, attributes included (recursively): what it may reach in a module."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _all_names(const)
    return names


def _class_names(cls):
    """The names the code of a class mentions (its functions, properties, static/class methods)."""
    names = set()
    for value in cls.__dict__.values():
        for f in (value.fget, value.fset, value.fdel) if isinstance(value, property) else (value,):
            f = getattr(f, "__func__", f)
            code = getattr(f, "__code__", None)
            if isinstance(code, types.CodeType):
                names |= _all_names(code)
    return names


def _code_digest(code, doc=None):
    """Digest of a code object's behaviour: bytecode, constants, names; no location info."""
    memo_key = (code, doc)
    cached = _CODE_MEMO.get(memo_key)
    if cached is not None:
        return cached
    consts = list(code.co_consts)
    if doc is not None and consts and consts[0] == doc:
        consts[0] = None
    out = [b"code", code.co_code, repr((code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount,
                                        code.co_flags, code.co_names, code.co_varnames, code.co_freevars,
                                        code.co_cellvars)).encode()]
    for const in consts:
        if isinstance(const, types.CodeType):
            out.append(b"C" + _code_digest(const).encode())
        elif const is Ellipsis:
            out.append(b"...")
        else:
            _encode(const, out, "a code constant", set())
    result = _CODE_MEMO[memo_key] = digest(b"|".join(out))
    return result
