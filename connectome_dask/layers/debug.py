"""``HashDigest``: show the identity (the Merkle token) of fields, for debugging caches.

Each named field becomes ``(value?, node_hash, pickled_hash, digest?)``: the value if
``return_value``, the field's token for that entry (hex str) and its bytes, and a digest of those
bytes if ``algorithm`` is given. Equal digests mean equal computations, so the layer answers
"will these two pipelines share cache entries?".
"""

import hashlib

from ..hashing import combine
from ..nodes import Node
from ..plan import Plan, _broken
from .base import CallableLayer, as_names

__all__ = ["HashDigest"]


class Digest(Node):
    """The token of ``node`` for the entry (plus its value and a digest, as asked)."""

    __slots__ = ("node", "algorithm", "return_value")
    leaf = True

    def __init__(self, name, node, algorithm, return_value):
        super().__init__(name, (node,))
        self.node, self.algorithm, self.return_value = node, algorithm, return_value

    def deps(self):
        return (self.node,)

    def compute(self, ev):
        token = ev.token(self.node)
        out = (ev.value(self.node),) if self.return_value else ()
        out += (token, bytes.fromhex(token))
        if self.algorithm is not None:
            make = self.algorithm if callable(self.algorithm) else lambda data: hashlib.new(self.algorithm, data)
            out += (make(bytes.fromhex(token)).digest(),)
        return out

    def leaf_token(self, ev):
        return combine("digest", ev.token(self.node), repr(self.algorithm), str(self.return_value))

    def kind_token(self):
        return combine("digest", repr(self.algorithm), str(self.return_value))


class HashDigest(CallableLayer):
    """Replace each named field by ``(value?, node_hash, pickled_hash, digest?)``.

    Only the first (the value, with ``return_value=True``) and the last (the digest, with an
    ``algorithm``) positions are meant to be compared; equal digests mean equal computations:
    identity layers, ``Filter``, ``CheckIds``, caches and ``Merge`` routing leave them unchanged;
    parameter values, the key and applied functions change them. Fields not named are dropped,
    except the persistent ones (``id``, the Source's metas).

    Parameters
    ----------
    names : str or list of str
    algorithm : str or callable, optional
        A ``hashlib`` name (``"sha256"``) or constructor (``hashlib.sha256``).
    return_value : bool
        Put the field's value first.

    Examples
    --------
    >>> from connectome_dask import HashDigest, Source, Transform
    >>> class Numbers(Source):
    ...     def value(key):
    ...         return key * 2
    >>> digest = HashDigest("value", "sha256", return_value=True)
    >>> plain = (Numbers() >> digest).value(3)
    >>> through = (Numbers() >> Transform(__inherit__=True) >> digest).value(3)
    >>> plain[0], plain[-1] == through[-1], plain[-1] == (Numbers() >> digest).value(4)[-1]
    (6, True, False)
    """

    def __init__(self, names, algorithm=None, return_value=False):
        if algorithm is not None and not callable(algorithm):
            hashlib.new(algorithm)  # ValueError for an unknown name, now
        self._names, self._algorithm, self._return_value = as_names(names), algorithm, return_value

    def _connect(self, prev):
        fields = {n: node for n, node in prev.fields.items() if n in prev.persistent}
        own = {n: Digest(n, prev.request(n, "HashDigest"), self._algorithm, self._return_value)
               for n in self._names}
        fields.update(own)
        kept = fields.keys() - own.keys()
        return Plan(fields, prev.metas & kept, prev.persistent & kept, None, (), prev.backward + (dict,),
                    prev.broken + tuple(_broken("HashDigest", own)))

    def __repr__(self):
        return f"HashDigest({', '.join(self._names)})"
