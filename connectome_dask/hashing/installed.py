"""What is installed: the code hashed by reference, and its identity ``module.qualname@version``.

Code cannot change without a reinstall when its module file lives in the standard library or in a
``site-packages``/``dist-packages`` folder, when it is builtin, or when it is this library's own
(identified by its version, also in an editable install). Everything else — ``__main__``, a
``mymod.py`` next to a script, a project under development, an editable install of it — is the
user's own code: hashed by value (:mod:`.code`) and shipped by value (:mod:`connectome_dask.shipping`).
``unstable_module(name)`` makes an installed module the user's.
"""

import importlib.metadata
import os
import sys
import sysconfig
import types

from ..exceptions import HashingError

__all__ = ["reference", "unstable_module", "user_module"]

_UNSTABLE_MODULES = set()
_INSTALLED_MEMO = {}


def unstable_module(module_name):
    """Hash every function and class of module ``module_name`` by value."""
    _UNSTABLE_MODULES.add(module_name)


def user_module(module_name):
    """Whether ``module_name`` is the user's own importable module (hashed and shipped by value)."""
    return module_name != "__main__" and sys.modules.get(module_name) is not None and not _is_installed(module_name)


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
        if path is None:  # a namespace package: where its folders are; else builtin
            path = next(iter(getattr(module, "__path__", None) or ()), None)
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
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if not isinstance(qualname, str):
        raise HashingError(f"cannot hash {obj!r} by reference: it has no name. Mark the code that uses it with "
                           "`connectome_dask.cache.is_unstable` or pass a value that hashes by content")
    tag = f"{module}.{qualname}@{_version(module)}"
    getversion = getattr(obj, "__getversion__", None) if isinstance(obj, type) else None
    if getversion is not None:
        tag += f"#{getversion()}"
    return tag
