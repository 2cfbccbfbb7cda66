"""The store interface behind every cache layer.

A store maps ``(field, token)`` to a value: ``field`` is the field name (layout, listing,
messages), ``token`` the hex Merkle token of the computation. Stores travel to dask workers, so
they pickle as their configuration, never with open handles or locks.
"""

import abc
import os

__all__ = ["Store", "MISSING", "as_store", "DictStore"]


class _Missing:
    def __repr__(self):
        return "MISSING"

    def __reduce__(self):
        return "MISSING"


MISSING = _Missing()


class Store(abc.ABC):
    #: whether entries outlive the process (``persist`` counts only these as computed)
    persistent = False

    @abc.abstractmethod
    def get(self, field, token):
        """The stored value, or ``MISSING`` (a corrupt entry is a miss too)."""

    @abc.abstractmethod
    def set(self, field, token, value):
        """Store ``value``; storing the same token twice is harmless. Returns ``None`` when the value
        is stored, else the error that kept it from being stored (after warning once per cause)."""

    def contains(self, field, token):
        return self.get(field, token) is not MISSING


class DictStore(Store):
    """A store over a plain dict (no bounds; for tests and user-provided mappings)."""

    def __init__(self, mapping=None):
        self.mapping = {} if mapping is None else mapping

    def get(self, field, token):
        return self.mapping.get((field, token), MISSING)

    def set(self, field, token, value):
        self.mapping[field, token] = value

    def contains(self, field, token):
        return (field, token) in self.mapping


def as_store(obj, **options):
    """The store for ``obj``: a ``Store`` is itself; a ``str`` or path is an ``HDF5Store`` root, an
    fsspec URL (``s3://bucket/prefix``, ``memory://...``) a ``RemoteStore`` root (``options``:
    ``storage_options``, ``local``, ``compression``, ``serializer``, ``layer``; see
    :func:`~connectome_dask.cache.remote.open_root`); a ``dict`` (or any mutable mapping) becomes a
    ``DictStore``."""
    if isinstance(obj, Store):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        from .remote import open_root

        return open_root(obj if isinstance(obj, str) else os.fspath(obj), **options)
    if hasattr(obj, "__getitem__") and hasattr(obj, "__setitem__"):
        return DictStore(obj)
    raise TypeError(f"cannot use {type(obj).__name__} as a cache store; pass a folder, a URL, a dict or a Store")
