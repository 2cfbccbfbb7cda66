"""The layer protocol and the user-facing objects of a pipeline.

``Layer``          anything that connects: ``_connect(prev_plan) -> Plan``; ``_prepare(prev_plan)``
                   runs construction-time checks of layers that need their inputs (caches, Filter).
``CallableLayer``  a layer with fields of its own: attribute access compiles fields, ``dir``
                   lists them, ``layer(key)`` gives an :class:`Instance`, ``_decorate`` runs a
                   function on processed data and maps its outputs back through the inverses.
``Field``          a compiled field: a function of the pipeline's raw inputs (sorted by name),
                   with ``.delayed(...)`` for lazy dask access.

The plan of a callable layer is built once, lazily, and validated on first use (connectome's
lazy global validation): building a chain never fails because of a missing input.
"""

import inspect

from ..evaluate import Evaluation
from ..exceptions import FieldError, InvalidArgument, UnknownField
from ..nodes import Call, Item, raw_inputs
from ..plan import OPEN

__all__ = ["Layer", "CallableLayer", "Field", "Instance", "as_names"]


class Layer:
    """Base class of every layer."""

    def _connect(self, prev):
        raise NotImplementedError

    def _prepare(self, prev):
        """Checks against the previous layers' plan when this layer is put into a chain."""

    def __rshift__(self, other):
        from .chain import Chain

        return Chain(self, other)

    @property
    def _label(self):
        return type(self).__name__


class CallableLayer(Layer):
    """A layer whose fields can be called: ``layer.field(...)``, ``layer._compile(names)``."""

    def _plan(self):
        memo = self.__dict__.get("_memo")
        if memo is None:
            memo = self.__dict__["_memo"] = {"plan": self._connect(OPEN), "fields": {}}
        return memo["plan"].validate()

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_memo", None)
        return state

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(f"{self._label} has no attribute {name!r}")
        try:
            field = self._compile(name)
        except FieldError as e:
            raise AttributeError(str(e)) from None
        return field() if field._is_property else field

    def __dir__(self):
        plan = self._plan()
        return sorted(plan.fields)

    def _compile(self, names):
        """A function computing the field ``names`` (a str) or the tuple of fields ``names``."""
        single = isinstance(names, str)
        if not single:
            if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
                raise TypeError(f"_compile expects a field name or a list/tuple of names, got {names!r}")
            names = tuple(names)
        plan = self._plan()
        fields = self.__dict__["_memo"]["fields"]
        field = fields.get(names)
        if field is None:
            nodes = tuple(_field_node(plan, n, self._label) for n in ((names,) if single else names))
            is_property = single and names in plan.metas
            field = fields[names] = Field(nodes, names, owner=self, is_property=is_property)
        return field

    def __call__(self, *args, **kwargs):
        return Instance(self, args, kwargs)

    def _decorate(self, inputs, outputs=None, final=None):
        """A decorator: ``func`` runs on the processed ``inputs``; its ``outputs`` go back through
        every layer's inverse; the result is a function of the raw inputs returning ``final``."""
        in_names, out_names = as_names(inputs), as_names(outputs if outputs is not None else inputs)
        final = final if final is not None else (outputs if outputs is not None else inputs)
        for what, names in (("inputs", in_names), ("outputs", out_names)):
            if len(set(names)) != len(names):
                raise ValueError(f"_decorate: duplicate names in {what}: {names}")
        plan = self._plan()
        in_nodes = []
        for name in in_names:
            node = plan.get(name)
            if node is None:
                raise UnknownField(f"{self._label}: _decorate needs the input {name!r}, which is not a field; "
                                   f"available: {sorted(plan.fields)}")
            in_nodes.append(node)

        def decorator(func):
            call = Call(getattr(func, "__name__", "decorated"), func, in_nodes)
            single_out = isinstance(outputs if outputs is not None else inputs, str)
            nodes = {out_names[0]: call} if single_out else {n: Item(n, call, i) for i, n in enumerate(out_names)}
            for back in reversed(plan.backward):
                nodes = back(nodes)
            final_names = as_names(final)
            missing = [n for n in final_names if n not in nodes]
            if missing:
                raise FieldError(f"_decorate: final names {missing} are not among the outputs {out_names}")
            return Field(tuple(nodes[n] for n in final_names), final if isinstance(final, str) else tuple(final_names))

        return decorator

    def persist(self, client=None, *, ids=None, fields=None, errors="raise", wait=True, progress=True, ram=False):
        """Fill the cache layers of the pipeline in parallel with dask; see :func:`connectome_dask.persist.persist`."""
        from ..persist import persist

        return persist(self, client, ids=ids, fields=fields, errors=errors, wait=wait, progress=progress, ram=ram)

    def to_dask(self, fields=None, ids=None):
        """Many fields × many ids as one dask collection; see :func:`connectome_dask.collection.to_dask`."""
        from ..collection import to_dask

        return to_dask(self, fields, ids)

    def to_torch(self, fields, ids=None, *, as_dict=False, shuffle=False, seed=0, rank=None, world_size=None,
                 batch_size=1):
        """A PyTorch dataset of fields × ids read through the caches; see :mod:`connectome_dask.training`."""
        from ..training import to_torch

        return to_torch(self, fields, ids, as_dict=as_dict, shuffle=shuffle, seed=seed, rank=rank,
                        world_size=world_size, batch_size=batch_size)

    def _wrap(self, func, inputs, outputs=None, final=None):
        return self._decorate(inputs, outputs, final)(func)

    def _loopback(self, func, inputs, outputs=None):
        """A layer whose fields are ``func``'s outputs after the backward pass."""
        from .declared import Transform
        from ..decorators import Function

        outputs = outputs if outputs is not None else inputs
        out_names = as_names(outputs)
        compiled = self._decorate(inputs, outputs)(func)
        fields = {}
        for i, name in enumerate(out_names):
            one = Field((compiled._nodes[i],), name)
            fields[name] = Function(one, *one._inputs)
        return Transform(**fields)


def _field_node(plan, name, label):
    if name.startswith("_"):
        raise FieldError(f"{label}: {name!r} is a parameter, not a field; parameters are private")
    node = plan.get(name)
    if node is None:
        if name in plan.dropped:
            raise FieldError(f"{label}: the optional field {name!r} was discarded: its inputs are not available")
        raise FieldError(f"{label}: no field {name!r}; available: {sorted(plan.fields)}")
    return node


def as_names(names, owner=None, what="names"):
    """``names`` (one name or an iterable of them) as a tuple; with ``owner`` (the layer's label for
    errors), validated and without repeats: :class:`InvalidArgument` names ``what`` was wrong."""
    if isinstance(names, str):
        return (names,)
    if owner is None:
        return tuple(names)
    try:
        names = tuple(names)
    except TypeError:
        raise InvalidArgument(f"{owner}: {what} must be a name or a list of names, not {names!r}") from None
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise InvalidArgument(f"{owner}: {what} must be strings, got {bad!r}")
    return tuple(dict.fromkeys(names))


class Field:
    """A compiled field: call it with the pipeline's raw inputs (``ds.image(key)``)."""

    __slots__ = ("_nodes", "_names", "_inputs", "_owner", "_is_property", "__signature__")

    def __init__(self, nodes, names, owner=None, is_property=False):
        self._nodes, self._names, self._owner, self._is_property = nodes, names, owner, is_property
        self._inputs = tuple(raw_inputs(nodes))
        self._is_property = is_property and not self._inputs
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        self.__signature__ = inspect.Signature([inspect.Parameter(n, kind) for n in self._inputs])

    @property
    def __name__(self):
        return self._names if isinstance(self._names, str) else "_".join(self._names)

    def __call__(self, *args, **kwargs):
        names = self._inputs
        if kwargs or len(args) != len(names):
            inputs = self._bind(args, kwargs)
        else:
            inputs = dict(zip(names, args))
        ev = Evaluation(inputs)
        if isinstance(self._names, str):
            return ev.value(self._nodes[0])
        return tuple(ev.value(n) for n in self._nodes)

    def delayed(self, *args, **kwargs):
        """A lazy ``dask.delayed.Delayed`` whose ``.compute()`` equals ``self(*args, **kwargs)``."""
        from ..collection import delayed

        return delayed(self, self._bind(args, kwargs))

    def _bind(self, args, kwargs):
        names = self._inputs
        if not kwargs and len(args) == len(names):
            return dict(zip(names, args))
        if len(args) > len(names):
            raise TypeError(f"{self.__name__}() takes {len(names)} arguments {list(names)}, got {len(args)}")
        inputs = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names:
                raise TypeError(f"{self.__name__}() got an unexpected argument {key!r}; it takes {list(names)}")
            if key in inputs:
                raise TypeError(f"{self.__name__}() got multiple values for argument {key!r}")
            inputs[key] = value
        missing = [n for n in names if n not in inputs]
        if missing:
            raise TypeError(f"{self.__name__}() missing required arguments {missing}")
        return inputs

    def __connectome_token__(self):
        """The static token of this compiled function (used when it is itself a field function)."""
        from ..evaluate import Symbolic
        from ..hashing import combine

        ev = Symbolic()
        return combine("field", *self._inputs, *[ev.token(n) for n in self._nodes])

    def __repr__(self):
        return f"<field {self.__name__}({', '.join(self._inputs)})>"

    def __reduce__(self):
        if self._owner is not None:
            return _compile, (self._owner, self._names)
        return Field, (self._nodes, self._names)


def _compile(layer, names):
    return layer._compile(names)


class Instance:
    """``layer(*args, **kwargs)``: a view with the arguments bound (``inst.image``, ``inst['a', 'b']``)."""

    __slots__ = ("_layer", "_args", "_kwargs")

    def __init__(self, layer, args, kwargs):
        self._layer, self._args, self._kwargs = layer, args, kwargs

    def _get(self, names):
        field = self._layer._compile(names)
        kwargs = {k: v for k, v in self._kwargs.items() if k in field._inputs}
        return field(*self._args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._get(name)
        except FieldError as e:
            raise AttributeError(str(e)) from None

    def __getitem__(self, names):
        return self._get(list(names) if isinstance(names, tuple) else names)

    def __dir__(self):
        return dir(self._layer)
