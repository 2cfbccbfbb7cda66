"""connectome_dask: connectome-style declarative dataset pipelines, executed and cached with Dask.

Declare a dataset as a ``Source``, process it with ``Transform`` layers chained with ``>>``,
cache fields in RAM (``CacheToRam``) or on disk in HDF5 (``CacheToDisk``), and fill the caches
in parallel on any Dask cluster with ``pipeline.persist(client)``. Cache keys are Merkle hashes
of the code, parameters and entry key, so a cache always matches the code.

``import connectome_dask as connectome`` is all a connectome user changes.
"""

from . import exceptions
from .cache.memory import ram_usage
from .decorators import Function, Output, files, impure, inverse, meta, optional, positional
from .layers.apply import Apply
from .layers.base import CallableLayer, Layer
from .layers.cache import CacheLayer, CacheToDisk, CacheToRam
from .layers.columns import CacheColumns
from .layers.chain import Chain, LazyChain, chained
from .layers.dataset import CheckIds, Filter
from .layers.group import GroupBy
from .layers.merge import Join, JoinMode, Merge
from .layers.debug import HashDigest
from .layers.declared import Mixin, Source, Transform
from .layers.external import External, ExternalBase
from .layers.split import Split

__version__ = "0.1.0"

__all__ = [
    "Source", "Transform", "Mixin", "Chain", "chained", "LazyChain",
    "meta", "impure", "inverse", "optional", "positional", "files", "Output", "Function",
    "Apply", "Layer", "CallableLayer", "exceptions",
    "CacheLayer", "CacheToRam", "CacheToDisk", "CacheColumns",
    "Filter", "CheckIds", "Merge", "Join", "JoinMode", "GroupBy", "Split", "HashDigest",
    "External", "ExternalBase", "ram_usage",
]
