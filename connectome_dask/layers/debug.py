"""``HashDigest``: show the identity (the Merkle token) of fields, to debug cache sharing.

Each named field becomes a tuple ``(value?, node_hash, pickled_hash, digest?)``: the value if
``return_value``, the field's token for that entry (hex ``str``) and the same token as ``bytes``,
and ``algorithm(pickled_hash).digest()`` if an ``algorithm`` is given. Equal digests mean equal
computations, so two pipelines that give the same digest for a field share its cache entries.

The layer is built from :class:`Digest` nodes, leaves whose value is computed from the token of the
field they wrap (``Evaluation.token``), not from its value: the field itself is evaluated only with
``return_value=True``. A ``Digest`` depends on the raw inputs of the field (so a dask task gets
them) and, with ``return_value``, on the field; its own token is the field's token plus the
algorithm and the layout, so a digest is itself a deterministic computation (dask keys, caches).
"""

import hashlib

from ..evaluate import Symbolic
from ..exceptions import FieldError, HashingError, InvalidArgument, UnknownAlgorithm
from ..hashing import combine, fingerprint
from ..nodes import Input, Node, walk
from ..plan import Plan, _broken
from .base import CallableLayer, as_names

__all__ = ["HashDigest", "Digest"]


class Digest(Node):
    """``(value?, token, token bytes, digest?)`` of ``inner`` for the entry being evaluated."""

    __slots__ = ("inner", "algorithm", "identity", "return_value", "inputs")
    leaf = True

    def __init__(self, name, inner, algorithm, identity, return_value):
        super().__init__(name, (inner,))
        self.inner, self.algorithm, self.identity, self.return_value = inner, algorithm, identity, return_value
        self.inputs = tuple(sorted((n for n in walk([inner]) if isinstance(n, Input)), key=lambda n: n.name))

    def deps(self):
        # the raw inputs the token needs; the field itself only when its value is returned
        return (*self.inputs, self.inner) if self.return_value else self.inputs

    def compute(self, ev):
        out = (ev.value(self.inner),) if self.return_value else ()
        token = ev.token(self.inner)
        pickled = bytes.fromhex(token)
        out += (token, pickled)
        if self.algorithm is not None:
            out += (_hasher(self.algorithm)(pickled).digest(),)
        return out

    def leaf_token(self, ev):
        return combine("digest", ev.token(self.inner), self.identity, str(self.return_value))

    def kind_token(self):
        return combine("digest", Symbolic().token(self.inner), self.identity, str(self.return_value))

    def __repr__(self):
        return f"Digest({self.name!r}, {self.inner!r})"


def _hasher(algorithm):
    if isinstance(algorithm, str):
        return lambda data: hashlib.new(algorithm, data)
    return algorithm


def _check_algorithm(algorithm):
    """The token identifying ``algorithm`` (validated: a ``hashlib`` name or a callable)."""
    if algorithm is None:
        return "none"
    if isinstance(algorithm, str):
        try:
            hashlib.new(algorithm)
        except ValueError:
            raise UnknownAlgorithm(
                f"HashDigest: unknown hash algorithm {algorithm!r}; use a hashlib name such as "
                f"{sorted(hashlib.algorithms_guaranteed)} or a constructor such as hashlib.sha256"
            ) from None
        identity = "name:" + algorithm.lower()
    elif callable(algorithm):
        try:
            identity = "callable:" + fingerprint(algorithm)
        except HashingError as e:
            raise HashingError(f"HashDigest: the algorithm {algorithm!r} has no deterministic identity: {e}") from None
    else:
        raise InvalidArgument(f"HashDigest: algorithm must be a hashlib name (e.g. 'sha256') or a constructor "
                              f"(e.g. hashlib.sha256), not {type(algorithm).__name__}")
    try:
        digest = _hasher(algorithm)(b"").digest()
    except TypeError:
        raise InvalidArgument(f"HashDigest: {algorithm!r} has no fixed-size digest() (e.g. shake_128 needs a "
                              "length); pass a constructor whose objects have .digest(), e.g. hashlib.sha256") from None
    if not isinstance(digest, bytes):
        raise InvalidArgument(f"HashDigest: {algorithm!r}(data).digest() must return bytes, "
                              f"not {type(digest).__name__}")
    return identity


class HashDigest(CallableLayer):
    """Replace each named field by its identity: ``(value?, node_hash, pickled_hash, digest?)``.

    A debugging layer: equal digests mean equal computations, i.e. shared cache entries. Identity
    layers (``Transform(__inherit__=True)``), ``Filter``, ``CheckIds``, cache layers, ``Merge``
    routing and ``Apply`` of other fields leave a field's digest unchanged; parameter values, the
    key and applied functions change it. Only the first (the value) and the last (the digest)
    positions are meant to be compared; ``node_hash`` is our token (hex ``str``) and
    ``pickled_hash`` its bytes. The field itself is computed only with ``return_value=True``.

    Fields not named are dropped, except the persistent ones (the Source's ``id`` and metas such as
    ``ids``); a named meta stays a property whose value is its digest tuple.

    Parameters
    ----------
    names : str or list of str
        The fields to show.
    algorithm : str or callable, optional
        A ``hashlib`` name (``"sha256"``) or constructor (``hashlib.sha256``): the last item is
        ``algorithm(pickled_hash).digest()``. Without it, the tuple ends with ``pickled_hash``.
    return_value : bool, default False
        Put the field's value first.

    Raises
    ------
    UnknownAlgorithm
        (a ``ValueError`` and ``AttributeError``) for a name ``hashlib`` does not know.
    InvalidArgument
        (a ``TypeError``) for another kind of ``algorithm`` or ``names``.

    Examples
    --------
    >>> import hashlib
    >>> from connectome_dask import Source, Transform
    >>> from connectome_dask.layers.debug import HashDigest
    >>> class Numbers(Source):
    ...     _factor: int = 2
    ...     def value(key, _factor):
    ...         return key * _factor
    >>> digest = HashDigest("value", "sha256", return_value=True)
    >>> plain = (Numbers() >> digest).value(3)
    >>> value, node_hash, pickled_hash, last = plain
    >>> value, last == hashlib.sha256(pickled_hash).digest()
    (6, True)
    >>> (Numbers() >> Transform(__inherit__=True) >> digest).value(3)[-1] == last  # same computation
    True
    >>> (Numbers(factor=3) >> digest).value(3)[-1] == last, (Numbers() >> digest).value(4)[-1] == last
    (False, False)
    """

    def __init__(self, names, algorithm=None, return_value=False):
        self._names = as_names(names, "HashDigest", "field names")
        self._identity = _check_algorithm(algorithm)
        self._algorithm, self._return_value = algorithm, bool(return_value)

    def _connect(self, prev):
        label = self._label
        own, dropped = {}, set()
        for name in self._names:
            node = Digest(name, prev.request(name, label), self._algorithm, self._identity, self._return_value)
            if node.missing and all(m.soft for m in node.missing):
                dropped.add(name)  # a discarded @optional field upstream
            else:
                own[name] = node
        kept = {n: node for n, node in prev.fields.items()
                if n in prev.persistent and n not in own and n not in dropped}
        fields = {**kept, **own}

        def back(nodes):
            for name in nodes:
                if name not in kept:
                    raise FieldError(f"{label}: {name!r} cannot be passed back through HashDigest (it "
                                     "replaces or drops it); decorate the part of the pipeline before it")
            return dict(nodes)

        return Plan(fields, metas=prev.metas & fields.keys(), persistent=prev.persistent & kept.keys(),
                    dropped=dropped, backward=prev.backward + (back,), broken=prev.broken + tuple(_broken(label, own)))

    def __repr__(self):
        return f"HashDigest({', '.join(self._names)})"
