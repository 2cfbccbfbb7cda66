"""``External`` and ``ExternalBase``: a plain object (or class) as a layer.

Public methods become fields computed from the previous layer's fields named by ``inputs``;
``property`` attributes become metas (properties of the dataset); class and static methods are
skipped. A method's token is ``marker(name)`` (default: the object's class fingerprint and its
instance attributes by content, so another root folder or an edited class is another cache key).
"""

import inspect

from ..exceptions import HashingError
from ..hashing import combine, fingerprint, tokenize
from ..nodes import Call
from ..plan import Plan, _broken
from .base import CallableLayer, as_names

__all__ = ["External", "ExternalBase"]


class _Member:
    """A method or property of the wrapped object, identified by ``token`` for hashing."""

    def __init__(self, obj, name, token, is_property):
        self.obj, self.name, self.token, self.is_property = obj, name, token, is_property

    def __call__(self, *args):
        value = getattr(self.obj, self.name)
        return value if self.is_property else value(*args)

    def __connectome_token__(self):
        return self.token


def _default_marker(obj):
    try:
        state = tokenize(vars(obj), what=f"the attributes of {type(obj).__name__}")
    except (HashingError, TypeError):
        state = ""
    identity = combine(fingerprint(type(obj)), state)
    return lambda name: combine(identity, name)


def _members(cls, fields, properties):
    methods, props = [], []
    for name, value in inspect.getmembers(cls):
        if name.startswith("_"):
            continue
        raw = inspect.getattr_static(cls, name)
        if isinstance(raw, property):
            props.append(name)
        elif inspect.isfunction(raw) and not hasattr(CallableLayer, name) and name != "persist":
            methods.append(name)
    if fields is not None:
        methods = [n for n in methods if n in as_names(fields)]
    if properties is not None:
        props = [n for n in props if n in as_names(properties)]
    return methods, props


class External(CallableLayer):
    """Wrap a plain object: its public methods are fields of ``inputs``, its properties metas.

    Parameters
    ----------
    obj : object
    inputs : str or list of str
        The previous fields every method takes, in order (usually ``["id"]``).
    fields, properties : list of str, optional
        Restrict which methods / properties are used.
    inherit : list of str
        Previous fields passed through (e.g. ``["id"]``).
    marker : callable, optional
        ``marker(name)`` → a str identifying the code and data behind ``name``.

    Examples
    --------
    >>> from connectome_dask import External, Transform
    >>> class Table:
    ...     def __init__(self, rows):
    ...         self.rows = rows
    ...     @property
    ...     def ids(self):
    ...         return sorted(self.rows)
    ...     def value(self, key):
    ...         return self.rows[key]
    >>> ds = External(Table({"a": 1, "b": 2}), inputs=["id"], inherit=["id"])
    >>> ds.ids, (ds >> Transform(double=lambda value: 2 * value)).double("b")
    (['a', 'b'], 4)
    """

    def __init__(self, obj, *, inputs, fields=None, properties=None, inherit=(), marker=None):
        self._configure(obj, inputs, fields, properties, inherit, marker)

    def _configure(self, obj, inputs, fields, properties, inherit, marker):
        self._obj, self._inputs = obj, as_names(inputs)
        self._methods, self._properties = _members(type(obj), fields, properties)
        self._inherit, self._marker = as_names(inherit), marker

    def _connect(self, prev):
        marker = self._marker or _default_marker(self._obj)
        label = type(self._obj).__name__
        fields = {n: prev.get(n) for n in self._inherit if prev.get(n) is not None}
        own = {}
        for name in self._methods:
            func = _Member(self._obj, name, str(marker(name)), False)
            own[name] = Call(name, func, [prev.request(i, label) for i in self._inputs], layer=label)
        for name in self._properties:
            own[name] = Call(name, _Member(self._obj, name, str(marker(name)), True), [], layer=label)
        fields.update(own)
        metas = set(self._properties) | (prev.metas & set(fields) - own.keys())
        persistent = metas | ({"id"} & set(fields))
        return Plan(fields, metas, persistent, None, (), prev.backward + (dict,), prev.broken + tuple(_broken(label, own)))

    def __repr__(self):
        return f"External({type(self._obj).__name__}: {', '.join(self._methods + self._properties)})"


class ExternalBase(External):
    """The subclassing form of :class:`External`: methods taking ``self`` and the ``inputs`` are
    fields, properties are metas; call ``super().__init__(inputs=[...])`` in ``__init__``.

    Examples
    --------
    >>> from connectome_dask import ExternalBase
    >>> class Squares(ExternalBase):
    ...     def __init__(self, n):
    ...         self.n = n
    ...         super().__init__(inputs=["id"], inherit=["id"])
    ...     @property
    ...     def ids(self):
    ...         return list(range(self.n))
    ...     def square(self, key):
    ...         return key * key
    >>> ds = Squares(3)
    >>> ds.ids, (ds >> Squares(5)).ids, ds._compile("square")(2)
    ([0, 1, 2], [0, 1, 2, 3, 4], 4)
    """

    def __init__(self, *, inputs, fields=None, properties=None, inherit=(), marker=None):
        self._configure(self, inputs, fields, properties, inherit, marker)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(self._methods + self._properties)})"
