"""Module-level layers for the parity tests (stdlib pickle resolves them by reference)."""

import connectome_dask as connectome
from connectome_dask import Output, Source, Transform, meta


class Pets(Source):
    """A tiny dataset."""

    _prefix: str = "pet"

    @meta
    def ids(_prefix):
        return [f"{_prefix}{i}" for i in range(3)]

    def name(key):
        return key.upper()

    def size(key, name: Output):
        return len(name)


class Shout(Transform):
    __inherit__ = True
    _mark: str = "!"

    def name(name, _mark):
        return name + _mark


pipeline = Pets() >> Shout() >> connectome.CacheToRam()
