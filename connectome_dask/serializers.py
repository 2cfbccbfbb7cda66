"""Serializers: connectome's names, as policies over the one native HDF5 encoding.

connectome (through tarn) writes JSON, ``.npy`` or pickle files. connectome_dask always writes
HDF5 (see ``cache.encoding``); a serializer only decides *which values are accepted* and *whether
pickle is allowed*:

====================  =========================================================================
(default: None)       every natively encodable value (arrays, numbers, str, bytes, None,
                      tuples/lists/dicts of them); anything else is a ``SerializationError``
JsonSerializer        JSON-like values only (None, bool, int, float, str, lists, str-keyed dicts)
NumpySerializer       numpy arrays; ``compression`` (an int gzip level, or {dtype: level}) applies
DictSerializer(s)     dicts whose values ``s`` accepts
PickleSerializer      anything; what HDF5 cannot encode is pickled (opt-in: unpickling runs code)
ChainSerializer(...)  the first serializer that accepts the value wins; a sequence given as
                      ``serializer`` is chained
====================  =========================================================================
"""

import numpy as np

from .exceptions import SerializationError

__all__ = ["Serializer", "SerializerError", "JsonSerializer", "NumpySerializer", "PickleSerializer",
           "ChainSerializer", "DictSerializer", "as_policy"]


class SerializerError(SerializationError):
    """A serializer cannot save a value."""


class Serializer:
    allow_pickle = False

    def accepts(self, value):
        return True

    def compression(self, value_compression):
        return value_compression

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self):
        return hash(type(self))

    def __repr__(self):
        return f"{type(self).__name__}()"


class NativeSerializer(Serializer):
    """The default: every natively encodable value."""


class JsonSerializer(Serializer):
    def accepts(self, value):
        if value is None or type(value) in (bool, int, float, str):
            return True
        if type(value) is list:
            return all(self.accepts(v) for v in value)
        if type(value) is dict:
            return all(type(k) is str and self.accepts(v) for k, v in value.items())
        return False


class NumpySerializer(Serializer):
    def __init__(self, compression=None):
        self.level = compression

    def accepts(self, value):
        return isinstance(value, np.ndarray) and not value.dtype.hasobject

    def compression(self, value_compression):
        return value_compression if self.level is None else "gzip"


class PickleSerializer(Serializer):
    allow_pickle = True


class DictSerializer(Serializer):
    def __init__(self, serializer):
        self.serializer = serializer

    def accepts(self, value):
        return type(value) is dict and all(self.serializer.accepts(v) for v in value.values())


class ChainSerializer(Serializer):
    def __init__(self, *serializers):
        self.serializers = serializers

    @property
    def allow_pickle(self):
        return any(s.allow_pickle for s in self.serializers)

    def accepts(self, value):
        return any(s.accepts(value) for s in self.serializers)

    def compression(self, value_compression):
        for s in self.serializers:
            value_compression = s.compression(value_compression)
        return value_compression


class _Policy:
    """What an ``HDF5Store`` accepts and whether it may pickle."""

    def __init__(self, serializer):
        self.serializer = serializer
        self.allow_pickle = serializer.allow_pickle

    def check(self, field, value):
        if not self.serializer.accepts(value):
            raise SerializerError(f"field {field!r}: {self.serializer!r} cannot save a value of type "
                                  f"{type(value).__qualname__}; choose another serializer or chain one")

    def compression(self, store_compression):
        return self.serializer.compression(store_compression)


def as_policy(serializer):
    if serializer is None:
        serializer = NativeSerializer()
    elif isinstance(serializer, (list, tuple)):
        serializer = ChainSerializer(*serializer)
    elif not isinstance(serializer, Serializer):
        raise TypeError(f"serializer must be one of connectome_dask.serializers, got {serializer!r}")
    return _Policy(serializer)
