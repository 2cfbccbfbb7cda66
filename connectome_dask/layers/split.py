"""``Split``: one entry becomes several, declared by a class body.

``__split__(id, <fields...>)`` yields ``(new_id, part)`` pairs for each entry of the previous
layer; the layer's fields are functions of the previous fields of the entry that was split and
of the special argument ``__part__``. Each field is a :class:`~connectome_dask.routing.Scope`
evaluated as that entry with its part, so it keeps the token the same computation has anywhere
else. Unlike connectome, ``__split__`` may use ``_parameters``.
"""

from ..exceptions import DependencyError, DuplicateKeys, GraphError
from ..nodes import Input, Missing
from ..plan import Plan, _broken, _Builder, inherits
from ..routing import Gather, Scope, Table
from .dataset import check_pure, no_backward, sorted_keys
from .declared import _Declared

__all__ = ["Split"]


def _split_table(ids, parts):
    table = {}
    for old, pairs in zip(ids, parts):
        for new, part in pairs:
            if new in table:
                raise DuplicateKeys(f"Split: the new id {new!r} is produced twice (from {table[new][0]['id']!r} "
                                    f"and {old!r}); __split__ must give unique ids")
            table[new] = ({"id": old, "__part__": part},)
    return table


class Split(_Declared, _root=True):
    """Split each entry into parts: ``__split__`` yields ``(new_id, part)`` pairs.

    ``id`` and ``ids`` (the sorted new ids) are always provided; the fields declared in the body
    (which may take ``__part__``) and the names passed by ``__inherit__``/``__exclude__`` are the
    other fields.

    Examples
    --------
    >>> from connectome_dask import Source, Split, meta
    >>> class Series(Source):
    ...     @meta
    ...     def ids():
    ...         return ["a", "b"]
    ...     def values(key):
    ...         return [1, 2, 3] if key == "a" else [4]
    >>> class Items(Split):
    ...     def __split__(id, values):
    ...         for i, _ in enumerate(values):
    ...             yield f"{id}-{i}", i
    ...     def value(values, __part__):
    ...         return values[__part__]
    >>> items = Series() >> Items()
    >>> items.ids, items.value("a-2")
    (('a-0', 'a-1', 'a-2', 'b-0'), 3)
    """

    _kind = "split"
    _is_base = True

    def _init(self, spec, values):
        if spec.split is None:
            raise GraphError(f"Split {spec.name!r}: declare __split__(id, ...) yielding (new_id, part) pairs")
        if spec.inverses:
            raise ValueError(f"Split {spec.name!r}: a Split is not reversible; remove the @inverse functions")
        super()._init(spec, values)

    def __new__(cls, *args, **kwargs):
        if cls is Split:
            raise RuntimeError("Split is abstract: subclass it and declare __split__ in the class body")
        return super().__new__(cls)

    def _splitter(self, prev):
        builder = _Builder(self._spec, self._values, prev, self._label)
        splitter = builder.call(self._spec.split)
        missing = sorted(m.name for m in splitter.missing)
        if missing:
            raise DependencyError(f"{self._label}: __split__ reads {missing}, which the previous layer does not "
                                  f"provide; available fields: {sorted(prev.fields)}")
        check_pure(splitter, self._label)
        return builder, splitter

    def _prepare(self, prev):
        self._splitter(prev)

    def _connect(self, prev):
        builder, splitter = self._splitter(prev)
        label = self._label
        ids = prev.fields.get("ids") or Missing("ids", label)
        table = Table("parts", _split_table, [ids, Gather("split", ids, splitter)], layer=label)
        own, _, dropped = builder.outputs()
        fields = {"id": Input("id"), "ids": Table("ids", sorted_keys, [table], layer=label)}
        allowed = inherits(self._spec)
        for name, node in prev.fields.items():
            if name not in fields and name not in own and name not in prev.metas and allowed(name):
                fields[name] = Scope(name, table, (node,), label)
        for name, node in own.items():
            fields[name] = Scope(name, table, (node,), label)
        broken = prev.broken + tuple(_broken(label, {"ids": ids, **own}))
        return Plan(fields, metas={"ids"}, persistent={"id", "ids"}, dropped=dropped, backward=(no_backward(label),),
                    broken=broken)
