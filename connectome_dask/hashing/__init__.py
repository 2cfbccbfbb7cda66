"""Hashing: code fingerprints and value tokens, the basis of every cache key.

* :func:`fingerprint` identifies code (``code`` module: what is hashed by value, what by
  reference);
* :func:`tokenize` identifies values by content (``tokenize`` module);
* :func:`combine` is one Merkle step over tokens.

``nodes`` builds a field's Merkle token from these: ``H(code fingerprint, parameter tokens,
input tokens)``.
"""

from .code import HASH_SCHEME, fingerprint, is_stable, is_unstable, reference, unstable_module
from .tokenize import combine, normalize_token, tokenize

__all__ = ["fingerprint", "tokenize", "combine", "normalize_token", "unstable_module", "is_stable",
           "is_unstable", "reference", "HASH_SCHEME"]
