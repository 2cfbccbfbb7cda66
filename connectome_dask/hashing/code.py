"""Code fingerprints: the identity of a function or class for cache keys.

Two ways to identify code:

* **by reference** — ``module.qualname`` plus the version of the distribution that ships the
  module (the Python version for the standard library and builtins). Used for code that cannot
  change without a reinstall: builtins, C functions, numpy ufuncs, and functions/classes whose
  module file lives in the standard library or in a ``site-packages``/``dist-packages`` folder,
  and this library's own code (identified by its version, also in an editable install).
* **by value** — everything else: ``__main__``, notebooks, closures, lambdas, and the user's
  own importable modules (a ``mymod.py`` next to a script, a project under development, an
  editable install). This fixes connectome's stale caches after editing an importable module.

A by-value fingerprint covers the bytecode and constants (recursively through nested code, the
docstring dropped), argument and variable names, the function's ``__name__``, defaults, keyword
defaults, a non-empty ``__dict__``, closure cell values, and the globals the code actually uses
(names in ``co_names``, recursively through nested code), each by value or by reference by the
same rules; recursion between functions and classes is handled with back-references. It never
includes the file name, line numbers, the line table, the qualname or the class a function is
defined in, annotations, memory addresses, or anything hash-seed dependent (frozenset constants
are sorted). Classes by value: their bases and sorted ``__dict__`` (not their name).

Overrides: ``is_stable(obj)`` forces by-reference, ``is_unstable(obj)`` by-value,
``unstable_module(name)`` a whole module by value; a by-reference class may define
``__getversion__()`` to add a version tag.
"""

import importlib.metadata
import os
import sys
import sysconfig
import threading
import types
import weakref

from .tokenize import _encode, combine, digest
from ..exceptions import HashingError

__all__ = ["fingerprint", "reference", "unstable_module", "is_stable", "is_unstable", "HASH_SCHEME"]

HASH_SCHEME = 1
_PREFIX = f"py{sys.version_info[0]}.{sys.version_info[1]}/scheme{HASH_SCHEME}"
_UNSTABLE_MODULES = set()
_FORCED = weakref.WeakKeyDictionary()
_CODE_MEMO = {}
_INSTALLED_MEMO = {}
_LOCAL = threading.local()


def unstable_module(module_name):
    """Hash every function and class of module ``module_name`` by value."""
    _UNSTABLE_MODULES.add(module_name)


def is_stable(obj):
    """Decorator: hash ``obj`` by reference (``module.qualname`` + version). Returns ``obj``."""
    _FORCED[obj] = "stable"
    return obj


def is_unstable(obj):
    """Decorator: hash ``obj`` by value. Returns ``obj``."""
    _FORCED[obj] = "unstable"
    return obj


def fingerprint(obj):
    """A deterministic hex token identifying the code of a callable or class."""
    current = getattr(_LOCAL, "current", None)
    if current is not None:  # nested, e.g. through a value that refers back to code being hashed
        return current.token(obj)
    _LOCAL.current = current = _Fingerprinter()
    try:
        return current.token(obj)
    finally:
        _LOCAL.current = None


def _installed_path(path):
    roots = _INSTALLED_MEMO.get("roots")
    if roots is None:
        paths = sysconfig.get_paths()
        roots = {os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
        roots |= {os.path.realpath(p) for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")}
        _INSTALLED_MEMO["roots"] = roots = tuple(sorted(roots))
    real = os.path.realpath(path)
    return any(real.startswith(root + os.sep) for root in roots)


def _is_installed(module_name):
    if module_name in _UNSTABLE_MODULES or module_name in (None, "__main__"):
        return False
    if module_name.partition(".")[0] == "connectome_dask":
        return True
    known = _INSTALLED_MEMO.get(module_name)
    if known is None:
        module = sys.modules.get(module_name)
        path = getattr(module, "__file__", None)
        known = module is not None and (path is None or _installed_path(path))
        _INSTALLED_MEMO[module_name] = known
    return known


def _version(module_name):
    top = (module_name or "").partition(".")[0]
    key = ("version", top)
    version = _INSTALLED_MEMO.get(key)
    if version is None:
        version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
        if top not in sys.stdlib_module_names and top != "builtins":
            version = _distribution_version(top)
        _INSTALLED_MEMO[key] = version
    return version


def _distribution_version(top):
    """The version of the distribution shipping module ``top``: its ``__version__``, else the
    distribution of the same name, else a scan of every distribution's top-level names (slow)."""
    version = getattr(sys.modules.get(top), "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version(top)
    except Exception:  # noqa: BLE001 - not a distribution name; scan
        pass
    try:
        dists = importlib.metadata.packages_distributions().get(top, [])
        return ",".join(sorted(f"{d}={importlib.metadata.version(d)}" for d in dists)) or "unknown"
    except Exception:  # noqa: BLE001 - metadata may be broken; the name still identifies it
        return "unknown"


def reference(obj):
    """``module.qualname@version`` of a module, class or function."""
    if isinstance(obj, types.ModuleType):
        return f"{obj.__name__}@{_version(obj.__name__)}"
    module = getattr(obj, "__module__", None) or "builtins"
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", repr(type(obj)))
    tag = f"{module}.{qualname}@{_version(module)}"
    getversion = getattr(obj, "__getversion__", None) if isinstance(obj, type) else None
    if getversion is not None:
        tag += f"#{getversion()}"
    return tag


def _by_reference(obj):
    forced = _FORCED.get(obj) if _weakrefable(obj) else None
    if forced is not None:
        return forced == "stable"
    if not isinstance(obj, (types.FunctionType, type)):
        return True  # builtins, C functions, ufuncs, method descriptors
    qualname = getattr(obj, "__qualname__", "")
    if "<locals>" in qualname or "<lambda>" in qualname:
        return False
    return _is_installed(getattr(obj, "__module__", None))


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
    """One fingerprint computation: tracks the objects being hashed to resolve cycles."""

    def __init__(self):
        self.active = {}

    def token(self, obj):
        if isinstance(obj, types.MethodType):
            return combine("method", self.token(obj.__func__), self.value(obj.__self__, "the bound object"))
        if type(obj).__name__ == "partial" and hasattr(obj, "func") and hasattr(obj, "args"):
            return combine("partial", self.token(obj.func), self.value(obj.args, "partial arguments"),
                           self.value(obj.keywords, "partial keywords"))
        if isinstance(obj, (staticmethod, classmethod)):
            return combine(type(obj).__name__, self.token(obj.__func__))
        if not isinstance(obj, (types.FunctionType, type)) and not _builtin(obj):
            return combine("instance", self.token(type(obj)), self.state(obj))
        if _by_reference(obj):
            return digest(f"{_PREFIX}/ref/{reference(obj)}".encode())
        key = id(obj)
        if key in self.active:
            return f"cycle{len(self.active) - self.active[key]}"
        self.active[key] = len(self.active)
        try:
            parts = self.function(obj) if isinstance(obj, types.FunctionType) else self.cls(obj)
        finally:
            del self.active[key]
        return combine(_PREFIX, *parts)

    def state(self, obj):
        """The token of a callable instance: its own tokenization, else its attributes."""
        what = f"the callable {type(obj).__qualname__} instance"
        try:
            return self.value(obj, what)
        except HashingError:
            if not hasattr(obj, "__dict__"):
                raise
            return self.value(vars(obj), what)

    def value(self, value, what):
        """A token for a value referenced by code (a global, closure cell, default)."""
        if isinstance(value, (types.FunctionType, type, types.MethodType, staticmethod, classmethod)):
            return "f" + self.token(value)
        if isinstance(value, property):
            return "p" + combine(*(self.token(f) if f else "-" for f in (value.fget, value.fset, value.fdel)))
        if isinstance(value, types.ModuleType):
            return "m" + reference(value)
        out = []
        _encode(value, out, what, set())
        return digest(b"".join(out))

    def function(self, func):
        code = func.__code__
        parts = ["function", func.__name__, _code_digest(code, func.__doc__)]
        names = sorted(_global_names(code))
        g = func.__globals__
        for name in names:
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
        return parts

    def cls(self, cls):
        parts = ["class"] + [self.token(b) for b in cls.__bases__]
        skip = {"__module__", "__qualname__", "__doc__", "__dict__", "__weakref__", "__firstlineno__",
                "__static_attributes__", "__layer_spec__", "__signature__"}
        for name in sorted(cls.__dict__):
            if name in skip:
                continue
            value = cls.__dict__[name]
            try:
                parts += [name, self.value(value, f"the attribute {name!r} of class {cls.__qualname__}")]
            except HashingError:
                if not (name.startswith("__") or name.startswith("_member")):
                    raise
                parts += [name, type(value).__qualname__]  # class machinery (dataclass fields, enum maps)
        spec = cls.__dict__.get("__layer_spec__")
        if spec is not None:  # a declared layer: its functions live in the spec, not the class dict
            for f in (*spec.fields, *spec.params, *spec.inverses):
                parts += [f.name, self.token(f.func)]
        return parts


class _Empty:
    def __dask_tokenize__(self):
        return "empty-cell"


_EMPTY = _Empty()


def _global_names(code):
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
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
        else:
            try:
                _encode(const, out, "a code constant", set())
            except HashingError:
                out.append(repr(const).encode())
    result = _CODE_MEMO[memo_key] = digest(b"|".join(out))
    return result
