"""``MemoryStore``: the RAM cache of one process (on a dask worker: that worker's).

LRU per field by entry count (connectome's ``size``), and LRU over the whole store by bytes
(``max_bytes``; default ``min(25 % of physical memory, 4 GiB)``) so that a training loop cannot
eat the machine. A hit returns the stored object itself (as connectome: mutating it mutates the
cache). Thread-safe. Pickles as an empty store with the same limits.
"""

import os
import sys
import threading
from collections import OrderedDict

from .store import MISSING, Store

__all__ = ["MemoryStore", "default_max_bytes", "sizeof"]


def default_max_bytes():
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        physical = 16 * 2**30
    return min(physical // 4, 4 * 2**30)


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


class MemoryStore(Store):
    def __init__(self, size=None, max_bytes=None):
        if size is not None and (not isinstance(size, int) or size < 0):
            raise ValueError(f"CacheToRam: size must be None or a non-negative int, got {size!r}")
        self.size = size
        self.max_bytes = default_max_bytes() if max_bytes is None else max_bytes
        self._fields = {}  # field -> OrderedDict token -> (value, nbytes)
        self._order = OrderedDict()  # (field, token) -> None, least recently used first
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, field, token):
        entries = self._fields.get(field)
        if entries is None:
            return MISSING
        with self._lock:
            item = entries.get(token)
            if item is None:
                return MISSING
            entries.move_to_end(token)
            self._order.move_to_end((field, token))
        return item[0]

    def contains(self, field, token):
        entries = self._fields.get(field)
        return entries is not None and token in entries

    def set(self, field, token, value):
        nbytes = sizeof(value)
        if nbytes > self.max_bytes or self.size == 0:
            return
        with self._lock:
            entries = self._fields.setdefault(field, OrderedDict())
            old = entries.pop(token, None)
            if old is not None:
                self._bytes -= old[1]
            entries[token] = (value, nbytes)
            self._order[field, token] = None
            self._order.move_to_end((field, token))
            self._bytes += nbytes
            if self.size is not None and len(entries) > self.size:
                self._drop(field, next(iter(entries)))
            while self._bytes > self.max_bytes and self._order:
                self._drop(*next(iter(self._order)))

    def _drop(self, field, token):
        _, nbytes = self._fields[field].pop(token)
        del self._order[field, token]
        self._bytes -= nbytes

    def clear(self):
        with self._lock:
            self._fields.clear()
            self._order.clear()
            self._bytes = 0

    def __len__(self):
        return len(self._order)

    @property
    def nbytes(self):
        return self._bytes

    def __reduce__(self):
        return MemoryStore, (self.size, self.max_bytes)

    def __repr__(self):
        return f"MemoryStore({len(self)} entries, {self._bytes} bytes)"
