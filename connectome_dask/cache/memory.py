"""The RAM cache of one process (on a dask worker: that worker's): ``MemoryStore`` and the budget.

Every ``MemoryStore`` of a process (one per ``CacheToRam`` layer connected into a chain, plus the
shard tables of ``CacheColumns``) draws on ONE byte :class:`Budget`: the entries of all of them
are kept in one least-recently-used order, and when the bytes held exceed the budget the oldest
entry goes, whichever store holds it. ``size`` (connectome's) bounds the entries per field of one
store on top of that. A hit returns the stored object itself (as connectome: mutating it mutates
the cache). Thread-safe: one lock per budget.

The budget is the dask config value ``connectome_dask.ram-budget`` (environment:
``DASK_CONNECTOME_DASK__RAM_BUDGET``), read whenever a value is stored: bytes (``4000000000``,
``"4 GiB"``), or a fraction of the memory (``0.25`` or ``"25%"``, the default) — the machine's,
or on a ``distributed`` worker, the worker's memory limit. :func:`ram_usage` says what is held,
here or on every worker of a client.

A store's entries are freed with the store: a layer's stores are held by the pipelines built with
it (``store.local``), and a finalizer returns their bytes to the budget. A store pickles as its
name and ``size``, never its entries.
"""

import itertools
import os
import sys
import threading
import uuid
import weakref
from collections import OrderedDict

from ..hashing import combine
from .store import MISSING, Store, current_worker

__all__ = ["MemoryStore", "Budget", "budget", "ram_usage", "sizeof", "check_size"]

CONFIG = "connectome_dask.ram-budget"
DEFAULT = 0.25


def memory(worker=None):
    """The memory a fractional budget is a fraction of: on a ``distributed`` worker (``worker``, or
    the one running this code) with a memory limit, that limit; else the machine's physical memory."""
    worker = current_worker() if worker is None else worker
    limit = getattr(getattr(worker, "memory_manager", None), "memory_limit", None)
    if limit:
        return int(limit)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30


def parse_budget(value, memory):
    """Bytes for a budget setting: an int (bytes), a float in (0, 1] or ``"25%"`` (of ``memory``),
    or a size string (``"4 GiB"``)."""
    try:
        if isinstance(value, str):
            text = value.strip()
            if text.endswith("%"):
                value = float(text[:-1]) / 100
            else:
                from dask.utils import parse_bytes

                return int(parse_bytes(text))
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, float) and 0 < value <= 1:
            return int(value * memory)
        if isinstance(value, int) and value >= 0:
            return value
        raise ValueError
    except (ValueError, TypeError):
        raise ValueError(f"{CONFIG}: {value!r} is not a budget; give bytes (an int or '4 GiB') or a fraction "
                         "of the memory (0.25 or '25%'), e.g. dask.config.set({'" + CONFIG + "': '4 GiB'})") from None


def sizeof(value, _depth=0):
    """An estimate of the bytes held by ``value``."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, (bytes, bytearray, str)):
        return len(value)
    if _depth < 4 and isinstance(value, (tuple, list, set, frozenset)):
        return sys.getsizeof(value) + sum(sizeof(v, _depth + 1) for v in value)
    if _depth < 4 and isinstance(value, dict):
        return sys.getsizeof(value) + sum(sizeof(k, _depth + 1) + sizeof(v, _depth + 1) for k, v in value.items())
    return sys.getsizeof(value)


class Budget:
    """Bytes held in RAM by a set of stores, with one LRU order over all their entries.

    ``max_bytes``: a fixed bound; None reads :data:`CONFIG` (a fraction of ``memory``)."""

    def __init__(self, max_bytes=None):
        self.fixed = max_bytes
        self.memory = None  # the base of a fraction, found on first use (see ``memory``)
        self.nbytes = 0
        self.lock = threading.Lock()
        self.order = OrderedDict()  # (store serial, field, token) -> None, least recently used first
        self.tables = {}  # store serial -> that store's {field: OrderedDict token -> (value, nbytes)}
        self._setting = self._bound = None

    @property
    def max_bytes(self):
        if self.fixed is not None:
            return self.fixed
        import dask.config

        setting = dask.config.get(CONFIG, DEFAULT)
        if setting != self._setting:
            if self.memory is None:
                self.memory = memory()
            self._bound, self._setting = parse_budget(setting, self.memory), setting
        return self._bound

    def add(self, store):
        self.tables[store._serial] = store._fields
        weakref.finalize(store, self._forget, store._serial)

    def put(self, serial, field, token, value, size):
        nbytes = sizeof(value)
        bound = self.max_bytes
        if nbytes > bound or size == 0:
            return
        evicted = []  # values released after the lock: freeing one may free a store (its finalizer locks)
        with self.lock:
            table = self.tables.get(serial)
            if table is None:  # the store is being freed
                return
            entries = table.setdefault(field, OrderedDict())
            old = entries.pop(token, None)
            if old is not None:
                self.nbytes -= old[1]
                evicted.append(old)
            entries[token] = (value, nbytes)
            key = (serial, field, token)
            self.order[key] = None
            self.order.move_to_end(key)
            self.nbytes += nbytes
            if size is not None and len(entries) > size:
                evicted.append(self._drop((serial, field, next(iter(entries)))))
            while self.nbytes > bound and self.order:
                evicted.append(self._drop(next(iter(self.order))))

    def _drop(self, key):
        serial, field, token = key
        del self.order[key]
        item = self.tables[serial][field].pop(token)
        self.nbytes -= item[1]
        return item

    def _empty(self, serial, forget):
        """Take every entry of a store out of the order (``forget``: and the store out of the budget)."""
        with self.lock:
            table = self.tables.pop(serial, {}) if forget else self.tables.get(serial, {})
            for field, entries in table.items():
                for token, (_, nbytes) in entries.items():
                    del self.order[serial, field, token]
                    self.nbytes -= nbytes
            released = dict(table)  # freed after the lock
            table.clear()
        del released

    def _forget(self, serial):
        self._empty(serial, forget=True)

    def clear(self, serial=None):
        """Empty one store (its serial), or every store of the budget."""
        for s in (list(self.tables) if serial is None else [serial]):
            self._empty(s, forget=False)

    def usage(self):
        """``{"bytes", "entries", "stores", "budget"}`` of this budget now."""
        return {"bytes": self.nbytes, "entries": len(self.order), "stores": len(self.tables),
                "budget": self.max_bytes}


_BUDGET = Budget()


def budget():
    """The RAM budget of this process, shared by every ``MemoryStore`` made without one."""
    return _BUDGET


_SERIALS = itertools.count()


def check_size(size):
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise ValueError(f"CacheToRam: size must be None or a non-negative int, got {size!r}")
    return size


class MemoryStore(Store):
    """Entries in this process's RAM, in ``budget`` (default: the process's, :func:`budget`).

    ``size``: the entries kept per field (LRU), None for no count bound. ``uid`` names the store
    (a copy unpickled in another process is that process's store of the same name)."""

    def __init__(self, size=None, *, uid=None, budget=None):
        self.size, self.uid = check_size(size), uid or uuid.uuid4().hex
        self._budget = _BUDGET if budget is None else budget
        self._serial = next(_SERIALS)
        self._fields = {}  # field -> OrderedDict token -> (value, nbytes), in the budget's lock
        self._lock, self._order = self._budget.lock, self._budget.order  # the hit path's
        self._budget.add(self)

    @property
    def token(self):
        return combine("ram", self.uid)

    def get(self, field, token):
        entries = self._fields.get(field)
        if entries is None:
            return MISSING
        with self._lock:
            item = entries.get(token)
            if item is None:
                return MISSING
            entries.move_to_end(token)
            self._order.move_to_end((self._serial, field, token))
        return item[0]

    def contains(self, field, token):
        entries = self._fields.get(field)
        return entries is not None and token in entries

    def set(self, field, token, value):
        self._budget.put(self._serial, field, token, value, self.size)

    def clear(self):
        self._budget.clear(self._serial)

    def __len__(self):
        return sum(map(len, self._fields.values()))

    @property
    def nbytes(self):
        return sum(nbytes for entries in self._fields.values() for _, nbytes in entries.values())

    def __reduce__(self):
        return _memory_store, (self.size, self.uid)

    def __repr__(self):
        return f"MemoryStore({self.uid[:8]}: {len(self)} entries, {self.nbytes} bytes)"


def _memory_store(size, uid):
    return MemoryStore(size, uid=uid)


def ram_usage(client=None):
    """Bytes held by the RAM caches: ``{"bytes", "entries", "stores", "budget"}`` of this process,
    or with a ``distributed.Client``, ``{worker address: that dict}`` for every worker (it registers
    the :class:`~connectome_dask.cache.plugin.RamCache` plugin that holds each worker's RAM cache).

    Examples
    --------
    >>> from connectome_dask import CacheToRam, Source, meta, ram_usage
    >>> class Numbers(Source):
    ...     @meta
    ...     def ids():
    ...         return [1, 2]
    ...     def value(i):
    ...         return "x" * 1000
    >>> ds = Numbers() >> CacheToRam()
    >>> before = ram_usage()["bytes"]
    >>> ds.value(1) and ram_usage()["bytes"] - before
    1000
    """
    if client is None:
        return _BUDGET.usage()
    from .plugin import RamCache

    client.register_plugin(RamCache())
    return client.run(_usage)


def _usage():
    return _BUDGET.usage()
