"""Cache stores and the hashing overrides connectome users import from ``connectome.cache``.

``unstable_module(name)``, ``is_stable(obj)`` and ``is_unstable(obj)`` override how code is
hashed (see :mod:`connectome_dask.hashing`). The stores behind the cache layers live in the
submodules: ``store`` (the interface), ``memory`` (RAM), ``hdf5`` (disk).
"""

from ..hashing import is_stable, is_unstable, unstable_module

__all__ = ["unstable_module", "is_stable", "is_unstable"]
