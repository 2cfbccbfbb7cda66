"""Exceptions and warnings raised by connectome_dask.

One hierarchy rooted at :class:`ConnectomeError`. Where connectome's exception type is part of
its contract, ours is the same class name with the same base (``DependencyError`` is a
``GraphError``; ``FieldError`` is not), and where connectome leaked a builtin type for user
input (``AssertionError``, ``KeyError``) our typed error subclasses that builtin too, so
``except`` clauses written for connectome keep working.

Messages name the layer, the field and what to do about it.
"""

__all__ = [
    "ConnectomeError",
    "FieldError",
    "GraphError",
    "DependencyError",
    "UnknownField",
    "FieldNameError",
    "HashError",
    "HashingError",
    "SerializationError",
    "StorageCorruption",
    "StoreError",
    "PersistError",
    "StaleCodeError",
    "MainGuardError",
    "CacheWarning",
    "InvalidArgument",
    "UnknownKey",
    "DuplicateKeys",
    "UnknownAlgorithm",
    "MissingFile",
    "NothingToPersist",
    "ConfigError",
]


class ConnectomeError(Exception):
    """Base class of every error raised by connectome_dask itself."""


class FieldError(ConnectomeError):
    """A field is unknown, dropped, private or declared wrongly."""


class GraphError(ConnectomeError):
    """A layer or pipeline cannot be assembled (cycles, duplicates, conflicts)."""


class DependencyError(GraphError):
    """A field needs an input that is not available at its place in the pipeline."""


class UnknownField(FieldError, DependencyError):
    """``_decorate``/``_wrap`` name something that is not a field of the layer (a ``FieldError``, as
    in connectome; also the ``DependencyError`` raised before)."""


class FieldNameError(FieldError, ValueError):
    """A field name that cannot name a folder of a disk cache root (``"../x"``, ``"a/b"``, ``""``, NUL, too long)."""


class HashError(ConnectomeError, RuntimeError):
    """A value needed to build the pipeline cannot be hashed (e.g. a predicate over an impure field)."""


class HashingError(ConnectomeError, TypeError):
    """A parameter or key has no deterministic token.

    The message names the layer, the parameter and its type. Register the type with
    :func:`connectome_dask.hashing.normalize_token` or pass a value that hashes by content.
    """


class SerializationError(ConnectomeError, TypeError):
    """A value cannot be encoded by a cache store (names the field and the type)."""


class StorageCorruption(ConnectomeError):
    """A cache entry failed its integrity check."""


class StoreError(ConnectomeError, OSError):
    """A cache root cannot be used (foreign content, wrong format version)."""


class PersistError(ConnectomeError, RuntimeError):
    """``pipeline.persist`` finished with failed ids; ``.report`` holds the full report."""

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report

    def __reduce__(self):
        return type(self), (self.args[0], self.report)


class StaleCodeError(ConnectomeError, RuntimeError):
    """A task would run code that differs from the code the client hashed (a worker that imported a
    module before it changed): nothing is computed or stored. Restart the workers."""


class MainGuardError(ConnectomeError, RuntimeError):
    """A script starts the embedded cluster from its top level without ``if __name__ == "__main__":``."""


class InvalidArgument(ConnectomeError, TypeError, AssertionError):
    """A call got an argument of the wrong kind (connectome raised a bare ``AssertionError``)."""


class UnknownKey(ConnectomeError, KeyError, ValueError):
    """An entry key that the layer does not know (``CheckIds``, ``Merge``, ``Join``, ``GroupBy``,
    ``Split``). A ``KeyError`` and a ``ValueError``, the types connectome raises for these layers."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class DuplicateKeys(ConnectomeError, ValueError, RuntimeError, AssertionError):
    """Two entries would get the same key (``Merge``, ``Join``, ``Split``); a ``ValueError``,
    ``RuntimeError`` and ``AssertionError``, the types connectome raises for these layers."""


class UnknownAlgorithm(ConnectomeError, ValueError, AttributeError):
    """``HashDigest(names, algorithm)`` with a name that ``hashlib`` does not provide. A
    ``ValueError``, and an ``AttributeError`` as connectome raises (it looks the name up in ``hashlib``)."""


class MissingFile(ConnectomeError, FileNotFoundError):
    """A raw file that a ``@files`` function names does not exist (names the layer, the entry and the path)."""


class NothingToPersist(FieldError, ValueError):
    """``persist(fields=...)`` names something that is not a cached field, or the pipeline has no
    persistent cache to fill (the message lists the cached fields)."""


class ConfigError(ConnectomeError, ValueError):
    """An environment variable of connectome_dask has a value it cannot use (the message names the
    variable and what to set)."""


class CacheWarning(UserWarning):
    """A cache could not be used as asked (read-only root, corrupt entry); the value was computed."""
