"""``External`` and ``ExternalBase``: a plain object as a layer.

The object's public methods become fields computed from the previous layer's fields named by
``inputs`` (called ``method(*inputs)``); its properties become metas (properties of the dataset,
like a Source's ``ids``); class and static methods, private names and plain attributes are skipped
unless listed explicitly. ``inherit`` names pass through from the previous layer, and so do its
persistent fields (a Source's ``id`` and metas), as through a ``Transform``.

Identity (cache keys)
---------------------
A member's token is its name plus, by default, the fingerprint of the object's class (by value for
the user's own code: editing any method of the class changes every token) and the object's
attributes by content, the way pickle sees them (another root folder is another cache key). An
attribute that pickle refuses (a lock, an open file) is a ``HashingError``; pass ``marker`` to
identify such state:
``marker(name)`` returns any value that hashes by content (e.g. a version string), and replaces
the class and attributes in the token. Members are resolved and hashed when the layer is first
connected; later changes of the object are not seen by tokens.

Differences from connectome (quirks fixed): ``layer.id`` and ``dir(layer)`` work on the wrapper
(connectome forwards every attribute to the object, so ``ext.id`` fails, and ``dir`` of an
``ExternalBase`` recurses forever); the default identity distinguishes methods and object state
(connectome's is the class alone, so all methods of all instances share one hash); static methods
are skipped as documented (connectome makes them fields); wrong ``fields``/``properties`` names are
a :class:`~connectome_dask.exceptions.FieldError`; ``marker`` is called as ``marker(name)``; and
the layers pickle.
"""

import functools
import inspect
import types
import weakref

from ..exceptions import FieldError, GraphError, HashingError, InvalidArgument
from ..decorators import Files as FilesMarker
from ..hashing import combine, fingerprint, tokenize
from ..hashing.code import content
from ..nodes import Call
from ..stamps import Files, Reads
from ..plan import Plan, _broken
from .base import CallableLayer, _compile, as_names

__all__ = ["External", "ExternalBase", "MethodField"]

_PROPERTIES = (property, functools.cached_property)
_MISSING = object()


class _Config:
    """What an ``External`` was built with (one attribute, so that the state of an ``ExternalBase``
    subclass, which is the object itself, is its own attributes only)."""

    __slots__ = ("obj", "inputs", "fields", "properties", "inherit", "marker")

    def __init__(self, obj, inputs, fields, properties, inherit, marker):
        self.obj, self.marker = obj, marker
        self.inputs = as_names(inputs, "External", "inputs")
        self.fields = None if fields is None else as_names(fields, "External", "fields")
        self.properties = None if properties is None else as_names(properties, "External", "properties")
        self.inherit = as_names(inherit, "External", "inherit")
        if marker is not None and not callable(marker):
            raise InvalidArgument(f"External: marker must be a callable marker(name), not {type(marker).__name__}")

    def __getstate__(self):
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state):
        for name, value in state.items():
            setattr(self, name, value)


class _Member:
    """A method (called with the inputs) or property of the wrapped object; ``token`` identifies it."""

    __slots__ = ("obj", "name", "token", "is_property")

    def __init__(self, obj, name, token, is_property):
        self.obj, self.name, self.token, self.is_property = obj, name, token, is_property

    def __call__(self, *args):
        obj = self.obj  # an ExternalBase's own lookup would wrap its methods as fields: not needed here
        value = object.__getattribute__(obj, self.name) if isinstance(obj, ExternalBase) else getattr(obj, self.name)
        return value if self.is_property else value(*args)

    def __connectome_token__(self):
        return self.token

    def __reduce__(self):
        return _Member, (self.obj, self.name, self.token, self.is_property)

    @property
    def __name__(self):
        return self.name


def _stamped(cls):
    """``(name, Files decorator)`` of the ``@files`` methods of ``cls``: the raw files of an entry,
    whose stamps enter the token of every field of the object."""
    found = ((name, inspect.getattr_static(cls, name)) for name in dir(cls) if not _machinery(cls, name))
    return [(name, raw) for name, raw in found if isinstance(raw, FilesMarker)]


def _machinery(cls, name):
    """Whether ``name`` of ``cls`` comes from the layer classes (``_compile``, ``persist``, ...)."""
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass in ExternalBase.__mro__
    return False


def _discover(cls):
    """Public methods and properties of ``cls`` (static/class methods and plain attributes skipped)."""
    methods, props = [], []
    for name in dir(cls):
        if name.startswith("_") or _machinery(cls, name):
            continue
        raw = inspect.getattr_static(cls, name)
        if isinstance(raw, _PROPERTIES):
            props.append(name)
        elif inspect.isfunction(raw):
            methods.append(name)
    return methods, props


def _members(config, label):
    """``(method names, property names)`` of the wrapped object, validated."""
    obj = config.obj
    cls = type(obj)
    methods, props = _discover(cls) if config.fields is None or config.properties is None else ((), ())
    # a name listed explicitly in one list is not taken from the discovered other one
    methods = [n for n in methods if n not in (config.properties or ())] if config.fields is None else config.fields
    props = [n for n in props if n not in (config.fields or ())] if config.properties is None else config.properties
    both = sorted(set(methods) & set(props))
    if both:
        raise FieldError(f"{label}: {both} are listed both in fields= and in properties=; keep each in one")
    for name in methods:
        raw = _static(obj, name, label, "fields")
        if isinstance(raw, _PROPERTIES):
            raise FieldError(f"{label}: {name!r} is a property, not a method; list it in properties=")
        if not callable(getattr(obj, name)):
            raise FieldError(f"{label}: {name!r} is not a method, so it cannot be a field; list it in properties=")
    for name in props:
        raw = _static(obj, name, label, "properties")
        if inspect.isfunction(raw):
            raise FieldError(f"{label}: {name!r} is a method, not a property; list it in fields=")
    own = set(methods) | set(props)
    clash = [n for n in config.inherit if n in own]
    if clash:
        raise GraphError(f"{label}: {clash} are both inherited and defined by the object; "
                         "remove them from inherit= or from the object's fields")
    return methods, props


def _static(obj, name, label, what):
    if name.startswith("_"):
        raise FieldError(f"{label}: {name!r} is private and cannot be listed in {what}=; fields are public names")
    raw = inspect.getattr_static(obj, name, _MISSING)
    if raw is _MISSING:
        raise FieldError(f"{label}: the object has no attribute {name!r} (listed in {what}=)")
    return raw


def _identity(config, label):
    """``identity(name)``: the token of member ``name``."""
    obj, marker = config.obj, config.marker
    if marker is not None:
        def identity(name):
            try:
                value = marker(name)
            except TypeError as e:
                raise InvalidArgument(f"{label}: marker({name!r}) failed ({e}); the marker is called with the "
                                      "field name only") from e
            return combine("external-marker", tokenize(value, what=f"marker({name!r}) of {label}"), name)

        return identity
    code = _class_token(type(obj))
    state = _state(obj, label)
    return lambda name: combine("external", code, state, name)


def _class_token(cls):
    """The fingerprint of ``cls`` (by value for the user's own code)."""
    return fingerprint(cls)


def _state(obj, label):
    """The token of the object's attributes by content, the way pickle sees them."""
    attrs = getattr(obj, "__dict__", None) or {}
    parts = []
    for key in sorted(attrs):
        if key in ("_external", "_memo"):  # the layer's own configuration (ExternalBase)
            continue
        if isinstance(inspect.getattr_static(type(obj), key, None), functools.cached_property):
            continue  # a value the object computed and kept: derived from the rest
        try:
            token = content(attrs[key], f"the attribute {key!r} of {label}")
        except HashingError as e:
            raise HashingError(f"{e}. Or pass `marker=` to External to identify the object's state") from None
        parts += [key, token]
    return combine("state", *parts)


class External(CallableLayer):
    """Wrap a plain object: its public methods are fields of ``inputs``, its properties metas.

    ``External(obj, inputs=["id"])`` turns ``obj.image(key)`` into the field ``image`` of the
    previous layer's ``id`` and the property ``obj.ids`` into the meta ``ids``. Chain it like a
    Source (``External(...) >> Transform(...)``) or after other layers. Attributes that are not
    fields are read from the wrapped object (``ext.root``).

    Parameters
    ----------
    obj : object
        The object to wrap.
    inputs : str or list of str
        The previous layer's fields every method is called with, in order (usually ``["id"]``).
    fields : list of str, optional
        The methods to use (default: every public method; static and class methods are skipped
        unless listed here).
    properties : list of str, optional
        The properties to use as metas (default: every public property); may name plain attributes.
    inherit : list of str, optional
        Fields of the previous layer passed through (e.g. ``["id"]``). Persistent fields of the
        previous layer (a Source's ``id`` and metas) always pass.
    marker : callable, optional
        ``marker(name) -> value`` identifying the code and data behind field ``name`` for cache
        keys; the value must hash by content (a string, a tuple, ...). Default: the fingerprint of
        the object's class and the object's attributes.

    Raises
    ------
    FieldError
        A name in ``fields``/``properties`` that the object lacks, is private or of the other kind.
    GraphError
        A name both inherited and defined by the object.
    DependencyError
        On first use, when the previous layers do not provide the ``inputs``.

    Examples
    --------
    >>> from connectome_dask import Transform
    >>> from connectome_dask.layers.external import External
    >>> class Table:
    ...     def __init__(self, rows):
    ...         self.rows = rows
    ...     @property
    ...     def ids(self):
    ...         return sorted(self.rows)
    ...     def value(self, key):
    ...         return self.rows[key]
    >>> ds = External(Table({"a": 1, "b": 2}), inputs=["id"], inherit=["id"])
    >>> dir(ds), ds.ids, ds.value("b"), ds.rows
    (['id', 'ids', 'value'], ['a', 'b'], 2, {'a': 1, 'b': 2})
    >>> (ds >> Transform(double=lambda value: 2 * value)).double("b")
    4
    """

    def __init__(self, obj, *, inputs, fields=None, properties=None, inherit=(), marker=None):
        self._external = _Config(obj, inputs, fields, properties, inherit, marker)
        _members(self._external, self._label)  # errors now: the object is complete

    def _config(self):
        config = self.__dict__.get("_external")
        if config is None:
            raise GraphError(f"{self._label} is not initialised: call super().__init__(inputs=[...]) in its __init__")
        return config

    @property
    def _label(self):
        config = self.__dict__.get("_external")
        obj = self if config is None else config.obj
        return type(self).__name__ if obj is self else f"External({type(obj).__name__})"

    def _connect(self, prev):
        config, label = self._config(), self._label
        methods, props = _members(config, label)
        identity = _identity(config, label)
        obj = config.obj
        fields = {n: node for n, node in prev.fields.items() if n in prev.persistent}
        for name in config.inherit:  # against an open plan, those no method reads stay virtual (as in a Transform)
            node = prev.fields.get(name) or (prev.get(name) if name in config.inputs else None)
            if node is not None:
                fields[name] = node
        args = [prev.request(name, label) for name in config.inputs]
        reads = [Files(name, _Member(obj, name, identity(name), False), args, layer=label, stamp=raw.stamp)
                 for name, raw in _stamped(type(obj)) if raw.stamp != "none"]  # @files methods (stamps)
        own = {name: Call(name, Reads(_Member(obj, name, identity(name), False), len(args)), args + reads,
                          layer=label) for name in methods}
        own.update({name: Call(name, _Member(obj, name, identity(name), True), [], layer=label) for name in props})
        fields.update(own)
        passed = fields.keys() - own.keys()
        metas = set(props) | (prev.metas & passed)
        persistent = set(props) | (prev.persistent & passed) | ({"id"} & passed & set(config.inherit))

        def back(nodes):
            for name in nodes:
                if name not in passed and name not in config.inherit:
                    raise FieldError(f"{label}: {name!r} is not defined in the backward direction; an External "
                                     "layer only passes back the names it inherits")
            return dict(nodes)

        virtual = None
        unresolved = set(config.inherit) - fields.keys()  # first in a chain, inherit=["id"] is resolved: a dataset
        if prev.virtual is not None and unresolved:
            upstream = prev.virtual
            virtual = lambda name: upstream(name) if name in unresolved else None  # noqa: E731
        return Plan(fields, metas=metas, persistent=persistent, virtual=virtual, backward=prev.backward + (back,),
                    broken=prev.broken + tuple(_broken(label, own)))

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        try:
            return CallableLayer.__getattr__(self, name)
        except AttributeError:
            config = self.__dict__.get("_external")
            if config is None or config.obj is self:
                raise
            value = getattr(config.obj, name, _MISSING)  # connectome reads other attributes from the object
            if value is _MISSING:
                raise
            return value

    def __repr__(self):
        if self.__dict__.get("_external") is None:
            return f"{type(self).__name__}(<not initialised>)"
        return self._label


class ExternalBase(External):
    """The subclassing form of :class:`External`: the subclass instance is both the object and the layer.

    Methods taking ``self`` and the ``inputs`` become fields, properties metas; call
    ``super().__init__(inputs=[...])`` in ``__init__`` (before or after setting attributes; without
    it, the first use as a layer raises :class:`~connectome_dask.exceptions.GraphError`).
    Called on the instance itself, methods and properties are plain Python (``ds.square(2)``);
    through a chain, or as ``ds._compile("square")``, they are fields, and ``ds.square`` is both
    (a :class:`MethodField`: ``ds.square.delayed(2)``, pickling and tokens are the field's). The object's attributes
    (e.g. a root folder) are part of the cache keys.

    Parameters
    ----------
    inputs, fields, properties, inherit, marker
        As for :class:`External`.

    Examples
    --------
    >>> from connectome_dask import Transform
    >>> from connectome_dask.layers.external import ExternalBase
    >>> class Squares(ExternalBase):
    ...     def __init__(self, n):
    ...         super().__init__(inputs=["id"], inherit=["id"])
    ...         self.n = n
    ...     @property
    ...     def ids(self):
    ...         return list(range(self.n))
    ...     def square(self, key):
    ...         return key * key
    >>> ds = Squares(3)
    >>> ds.ids, ds.square(2), dir(ds)
    ([0, 1, 2], 4, ['id', 'ids', 'square'])
    >>> (ds >> Transform(__inherit__=True, root=lambda square: square ** 0.5)).root(4)
    4.0
    """

    def __init__(self, *, inputs, fields=None, properties=None, inherit=(), marker=None):
        self._external = _Config(self, inputs, fields, properties, inherit, marker)

    def __getattribute__(self, name):
        value = object.__getattribute__(self, name)
        if type(value) is types.MethodType and name[0] != "_" and value.__self__ is self:
            config = object.__getattribute__(self, "__dict__").get("_external")
            if config is not None and name in _method_names(config):
                return MethodField(self, name, value)
        return value


_DISCOVERED = weakref.WeakKeyDictionary()  # class -> its public method names


def _method_names(config):
    if config.fields is not None:
        return config.fields
    cls = type(config.obj)
    methods = _DISCOVERED.get(cls)
    if methods is None:
        methods = _DISCOVERED[cls] = frozenset(_discover(cls)[0])
    return methods.difference(config.properties or ())


class MethodField:
    """What ``ds.image`` gives on an :class:`ExternalBase`: called, the user's method itself (plain
    Python, the same arguments); as a field, the compiled ``ds._compile("image")``: ``.delayed(...)``
    (arguments as for the method), pickling and the field's token."""

    __slots__ = ("_layer", "_name", "_method")

    def __init__(self, layer, name, method):
        self._layer, self._name, self._method = layer, name, method

    def __call__(self, *args, **kwargs):
        return self._method(*args, **kwargs)

    def _field(self):
        return self._layer._compile(self._name)

    def delayed(self, *args, **kwargs):
        """A lazy ``dask.delayed.Delayed`` of the field; ``.compute()`` equals ``self(*args, **kwargs)``."""
        try:
            values = inspect.signature(self._method).bind(*args, **kwargs).args
        except TypeError as e:
            raise TypeError(f"{self._layer._label}.{self._name}.delayed: {e}") from None
        return self._field().delayed(**dict(zip(self._layer._config().inputs, values)))

    @property
    def __signature__(self):
        return inspect.signature(self._method)

    def __connectome_token__(self):
        return self._field().__connectome_token__()

    def __getattr__(self, name):  # the method's __name__, __func__, __self__, ...; else the field's
        try:
            return getattr(self._method, name)
        except AttributeError:
            return getattr(self._field(), name)

    def __eq__(self, other):
        return type(other) is MethodField and other._layer is self._layer and other._name == self._name

    def __hash__(self):
        return hash((id(self._layer), self._name))

    def __reduce__(self):
        return _compile, (self._layer, self._name)

    def __repr__(self):
        return f"<field {self._name} of {self._layer._label}>"
