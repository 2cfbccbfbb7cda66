"""The one cached call: load → hit, or compute → store → value.

Every cache layer (RAM, HDF5, shards, any :class:`~connectome_dask.cache.store.Store`) reaches its
store through :func:`cached_call`. ``Store.set`` returns ``None`` when the value is stored, or the
error that kept it from being stored (the store has warned, once per cause): a failure to store
never fails the computation that produced the value.

While :func:`recording` is active in the current context (``contextvars``: one per thread and
task), each call appends an :class:`Outcome`, so ``persist`` counts what a call really did —
entries written, entries that were hits, entries that could not be stored and why — instead of
guessing from which functions ran.
"""

import contextlib
import contextvars
import dataclasses

from .store import MISSING

__all__ = ["Outcome", "cached_call", "recording"]

_LOG = contextvars.ContextVar("connectome_dask_outcomes", default=None)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one cached call did. ``status``: ``"hit"``, ``"stored"`` or ``"unstored"`` (then
    ``error`` says why); ``persistent``: the store outlives the process (``Store.persistent``)."""

    field: str
    token: str
    status: str
    persistent: bool
    error: BaseException = None


@contextlib.contextmanager
def recording():
    """Collect the :class:`Outcome` of every cached call made in this context."""
    log = []
    reset = _LOG.set(log)
    try:
        yield log
    finally:
        _LOG.reset(reset)


def cached_call(store, field, token, compute, look=True):
    """``store``'s value for ``(field, token)``, or ``compute()`` stored there. ``look=False``: the
    entry is known to be missing (a listing of the store said so), so it is not looked up."""
    value = store.get(field, token) if look else MISSING
    log = _LOG.get()
    if value is not MISSING:
        if log is not None:
            log.append(Outcome(field, token, "hit", store.persistent))
        return value
    value = compute()
    error = store.set(field, token, value)
    if log is not None:
        log.append(Outcome(field, token, "stored" if error is None else "unstored", store.persistent, error))
    return value
