"""Shipping code to workers: what is hashed by value travels by value, and is checked on arrival.

A task function that runs user code (``graph.Runner``, ``persist.PersistBatch``) pickles as one
*payload*: cloudpickle bytes of its arguments in which

* the user's own modules (not installed, not the standard library: the rule of
  :mod:`connectome_dask.hashing.code`) are registered with ``cloudpickle.register_pickle_by_value``
  for the dump, so their functions and classes travel by value, and
* a module object reached as a global (``import helpers; helpers.clip(x)``) travels as a stand-in
  module holding only the attributes the fingerprints hashed (``code.reached_names``).

So neither the scheduler nor the workers import the user's modules, and a worker that imported a
module before the user edited it cannot run its stale copy. The payload is built once per task
function object (a graph's tasks share their functions) and each process thaws a payload once
(memo by digest).

Second line: the payload carries the client's identity of every ``Call`` node's code (the token
its keys were computed from, and the by-reference tags it reached, e.g. ``numpy@2.1``). Before a
thawed task function first runs in a process it recomputes them; on a mismatch — code that
travels by reference, such as an installed package upgraded while a worker kept the old version
imported — it raises :class:`~connectome_dask.exceptions.StaleCodeError` naming the module, before
anything is computed or stored. Code hashed under an override (``is_stable``, ``is_unstable``, ``unstable_module``) is
not checked: overrides are the client's settings only.
"""

import functools
import hashlib
import io
import pickle
import sys
import threading
import types
import warnings

import cloudpickle

from .exceptions import CacheWarning, StaleCodeError
from .hashing.code import identify, reached_names
from .hashing.installed import user_module
from .nodes import Call, kind_token, walk

__all__ = ["Shipped", "freeze", "thaw"]

_LOCK = threading.Lock()
_THAWED = {}
_MEMO = 256


class Shipped:
    """Mixin of task functions: pickle as a payload; check the code before the first run."""

    __slots__ = ("_payload", "_expected")

    def _args(self):
        """The constructor arguments."""
        raise NotImplementedError

    def _roots(self):
        """The nodes whose code the task runs."""
        raise NotImplementedError

    def __reduce__(self):
        payload = getattr(self, "_payload", None)
        if payload is None:
            payload = self._payload = freeze(type(self), self._args(), [_identity(n) for n in _calls(self._roots())])
        return thaw, (payload,)

    def _check(self):
        """Raise :class:`StaleCodeError` if this process would run other code than the client hashed."""
        expected = getattr(self, "_expected", None)
        if expected:
            _compare(_calls(self._roots()), expected)
            self._expected = ()


def _calls(roots):
    return [n for n in walk(roots, inner=True) if isinstance(n, Call)]


def _identity(node, here=False):
    """``(token or None if not checkable, by-reference tags)`` of a call's code: on the client the
    token its keys were computed from (memoized on the node, and pickled with it), ``here`` the
    token of the code this process runs."""
    token = node.kind_token() if here or node.leaf else kind_token(node)
    if getattr(node.func, "__connectome_token__", None) is not None:
        return token, frozenset()
    _, refs, overridden = identify(node.func)
    return (None if overridden else token), refs


def _compare(calls, expected):
    if len(calls) != len(expected):
        raise StaleCodeError(f"the task's code differs from the code the client hashed ({len(calls)} functions "
                             f"here, {len(expected)} on the client): restart the workers (`client.restart()`)")
    for node, (token, refs) in zip(calls, expected):
        if token is None:
            continue
        here, here_refs = _identity(node, here=True)
        if here != token:
            theirs, ours = sorted(t for _, t in refs - here_refs), sorted(t for _, t in here_refs - refs)
            modules = sorted({m for m, _ in refs ^ here_refs}) or [getattr(node.func, "__module__", "?")]
            detail = f": the client hashed {', '.join(theirs)}, this process has {', '.join(ours)}" if theirs else ""
            raise StaleCodeError(
                f"field {node.name!r}: this process runs code of module {', '.join(map(repr, modules))} that "
                f"differs from the code the client hashed{detail}. The workers imported it before it changed: "
                "restart them (`client.restart()`, or restart the `dask worker` processes) and run again. "
                "Nothing was computed or stored")


class _Pickler(cloudpickle.Pickler):
    """cloudpickle, with user modules reached as globals shipped as stand-ins (hashed attributes only)
    and ``functools.cached_property`` without its lock (Python 3.11 gives it an unpicklable ``RLock``)."""

    def reducer_override(self, obj):
        if isinstance(obj, types.ModuleType) and user_module(obj.__name__):
            attrs = vars(obj)
            state = {n: attrs[n] for n in reached_names(obj.__name__) if n in attrs}
            return _module, (obj.__name__,), state
        if type(obj) is functools.cached_property:
            return _cached_property, (obj.func, obj.attrname)
        return super().reducer_override(obj)


def _module(name):
    return types.ModuleType(name)


def _cached_property(func, name):
    prop = functools.cached_property(func)
    prop.attrname = name
    return prop


def freeze(cls, args, expected):
    """The payload of ``cls(*args)``: user code by value, plus the client's code identities.

    If something in the user's modules cannot be pickled by value, the payload refers to those
    modules by name instead (one :class:`~connectome_dask.exceptions.CacheWarning`): the workers then
    import them, and the check on arrival refuses a stale copy."""
    state = (cls, tuple(args), expected)
    registered = cloudpickle.list_registry_pickle_by_value()
    with _LOCK:
        added = [m for name, m in list(sys.modules.items())
                 if name not in registered and isinstance(m, types.ModuleType) and user_module(name)]
        for module in added:
            cloudpickle.register_pickle_by_value(module)
        try:
            out = io.BytesIO()
            _Pickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(state)
            return out.getvalue()
        except Exception as e:  # noqa: BLE001 - fall back to by-reference, still checked on arrival
            error = e
        finally:
            for module in added:
                cloudpickle.unregister_pickle_by_value(module)
    warnings.warn(f"cannot send the code of your modules {sorted(m.__name__ for m in added)} to the workers by "
                  f"value ({type(error).__name__}: {error}); the workers import them instead, so they must be "
                  "importable there, and a worker holding an older copy refuses to run (restart the workers "
                  "after an edit)", CacheWarning, stacklevel=2)
    return cloudpickle.dumps(state)


def thaw(payload):
    """The task function of a payload (built once per process)."""
    key = hashlib.blake2b(payload, digest_size=16).digest()
    obj = _THAWED.get(key)
    if obj is None:
        try:
            cls, args, expected = pickle.loads(payload)
        except ImportError as error:  # a module missing here: the task fails, the process lives
            return Unloadable(payload, error)
        obj = cls(*args)
        obj._payload, obj._expected = payload, expected
        if len(_THAWED) >= _MEMO:
            _THAWED.clear()
        _THAWED[key] = obj
    return obj


class Unloadable:
    """A task function whose payload needs a module this process cannot import.

    Unpickling never fails (a scheduler or worker that cannot deserialize a task loses its connection
    and is restarted until dask gives up with ``KilledWorker``); calling it raises
    ``ModuleNotFoundError`` naming the module and the process. It pickles as the payload again, so the
    next process tries for itself."""

    __slots__ = ("payload", "error")

    def __init__(self, payload, error):
        self.payload, self.error = payload, error

    def __reduce__(self):
        return thaw, (self.payload,)

    def __call__(self, *args):
        name = getattr(self.error, "name", None) or str(self.error)
        raise ModuleNotFoundError(
            f"module {name!r} is not importable on {_where()}, which cannot load the pipeline's code: install "
            "it there (the same environment as the client), or, if it is your own code, make it importable "
            "on the client so that it travels by value", name=name) from self.error


def _where():
    import socket

    try:
        from distributed import get_worker

        return f"the worker {get_worker().address} (host {socket.gethostname()})"
    except (ImportError, ValueError):
        return f"this process (host {socket.gethostname()})"
