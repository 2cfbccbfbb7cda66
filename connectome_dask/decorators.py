"""Field decorators and argument annotations: ``meta``, ``impure``, ``inverse``, ``optional``,
``positional``, ``files``, ``Output`` and ``Function``.

A decorator wraps a function in a small marker object; ``declare`` unwraps the stack into the
flags of a ``FieldSpec``. Order rules are checked when the decorator is applied, i.e. while the
class body runs: ``positional`` must be innermost (``TypeError``) and needs an argument
(``ValueError``); ``meta`` and ``optional`` must be outermost (``ValueError``). ``optional``
over ``inverse`` is a ``GraphError`` raised when the layer is instantiated.
"""

import inspect

__all__ = ["meta", "impure", "inverse", "optional", "positional", "files", "Output", "Function"]


class Decorator:
    """A marker around a field function. ``flag`` names the ``FieldSpec`` flag it sets."""

    __slots__ = ("__wrapped__",)
    flag = None
    outermost = False

    def __init__(self, func):
        if not callable(func):
            raise TypeError(f"@{type(self).__name__.lower()} expects a function, got {type(func).__name__}")
        if isinstance(func, Decorator) and func.outermost and not self.outermost:
            raise ValueError(
                f"@{type(func).__name__.lower()} must be the outermost decorator; "
                f"move it above @{type(self).__name__.lower()}"
            )
        self.__wrapped__ = func

    def __call__(self, *args, **kwargs):
        return self.__wrapped__(*args, **kwargs)

    def __repr__(self):
        return f"{type(self).__name__.lower()}({self.__wrapped__!r})"

    def __eq__(self, other):
        return type(self) is type(other) and self.__wrapped__ == other.__wrapped__

    def __hash__(self):
        return hash((type(self), self.__wrapped__))

    def __reduce__(self):
        return type(self), (self.__wrapped__,)


class Meta(Decorator):
    """``@meta``: a dataset-level property (like ``ids``), evaluated on attribute access.

    >>> from connectome_dask import Source, meta
    >>> class Letters(Source):
    ...     @meta
    ...     def ids():
    ...         return ["a", "b"]
    ...     def upper(key):
    ...         return key.upper()
    >>> Letters().ids
    ['a', 'b']
    """

    __slots__ = ()
    flag = "meta"
    outermost = True


class Optional(Decorator):
    """``@optional``: drop the field silently when its inputs are not available.

    >>> from connectome_dask import Source, Transform, optional
    >>> class Plain(Source):
    ...     def image(i):
    ...         return i
    >>> keep = Transform(image=lambda image: image, spacing=optional(lambda spacing: spacing))
    >>> dir(Plain() >> keep)
    ['id', 'image']
    """

    __slots__ = ()
    flag = "optional"
    outermost = True


class Impure(Decorator):
    """``@impure``: non-deterministic (augmentation); recomputed on every call, shared within one.

    >>> import random
    >>> from connectome_dask import Transform, impure
    >>> noisy = Transform(value=lambda value, _shift: value + _shift, _shift=impure(random.random))
    >>> noisy.value(0) != noisy.value(0)
    True
    """

    __slots__ = ()
    flag = "impure"


class Inverse(Decorator):
    """``@inverse``: the backward function of a field, used by ``_decorate``/``_wrap``/``_loopback``.

    >>> from connectome_dask import Transform, inverse
    >>> class Double(Transform):
    ...     def value(value):
    ...         return value * 2
    ...     @inverse
    ...     def value(value):
    ...         return value / 2
    >>> Double()._wrap(lambda x: x + 10, "value")(1)  # (1 * 2 + 10) / 2
    6.0
    """

    __slots__ = ()
    flag = "inverse"


class Positional(Decorator):
    """``@positional``: the first argument is the previous field named like this function, so one
    function can serve several fields (``mask = image``).

    >>> from connectome_dask import Transform, positional
    >>> class Flip(Transform):
    ...     @positional
    ...     def image(x):
    ...         return x[::-1]
    ...     mask = image
    >>> Flip().mask("abc")
    'cba'
    """

    __slots__ = ()
    flag = "positional"

    def __init__(self, func):
        if isinstance(func, Decorator):
            raise TypeError("@positional must be the innermost decorator (directly above the function)")
        super().__init__(func)
        if not _parameters(func):
            raise ValueError(f"@positional needs a function with at least one argument, got {func!r}")


class Files(Decorator):
    """``@files``: the function returns the raw files an entry reads — a path, a list of paths or a
    folder (every file under it), local or an fsspec URL. Their *stamp* enters the token of every
    field computed from it, so editing a file invalidates exactly the entries that read it
    (:mod:`connectome_dask.stamps`). ``@files(stamp="stat")`` stamps by size and mtime only (reads
    nothing); ``stamp="none"`` turns stamping off. On an ``ExternalBase`` (or ``External`` object),
    a ``@files`` method names the files of an entry for every field of the object.

    >>> import os, tempfile
    >>> from connectome_dask import Source, files
    >>> class Notes(Source):
    ...     _root: str
    ...     @files
    ...     def _path(key, _root):
    ...         return os.path.join(_root, f"{key}.txt")
    ...     def text(_path):
    ...         with open(_path) as f:
    ...             return f.read()
    >>> root = tempfile.mkdtemp()
    >>> with open(os.path.join(root, "a.txt"), "w") as f:
    ...     _ = f.write("hello")
    >>> Notes(root=root).text("a")
    'hello'
    """

    __slots__ = ("stamp",)
    flag = "files"

    def __init__(self, func, stamp="content"):
        from .exceptions import FieldError
        from .stamps import MODES

        if stamp not in MODES:
            raise FieldError(f"@files on {getattr(func, '__name__', func)!r}: stamp must be one of {list(MODES)}, "
                             f"got {stamp!r}")
        super().__init__(func)
        self.stamp = stamp

    def __repr__(self):
        return f"files({self.__wrapped__!r}, stamp={self.stamp!r})"

    def __eq__(self, other):
        return super().__eq__(other) and self.stamp == other.stamp

    def __hash__(self):
        return hash((Files, self.__wrapped__, self.stamp))

    def __reduce__(self):
        return Files, (self.__wrapped__, self.stamp)

    def __get__(self, obj, owner=None):  # a method of an ExternalBase / External object
        return self if obj is None else Files(self.__wrapped__.__get__(obj, owner), self.stamp)

    def __connectome_token__(self):
        from .hashing import combine, fingerprint

        return combine("files", self.stamp, fingerprint(self.__wrapped__))


def files(func=None, *, stamp="content"):
    """``@files`` or ``@files(stamp="content" | "stat" | "none")``; see :class:`Files`."""
    if func is None:
        return lambda f: Files(f, stamp)
    return Files(func, stamp)


meta, optional, impure, inverse, positional = Meta, Optional, Impure, Inverse, Positional


class Output:
    """Annotation: ``def image(image, shape: Output)`` reads this layer's own ``shape``.

    >>> from connectome_dask import Source, Output
    >>> class Sized(Source):
    ...     def name(key):
    ...         return f"entry-{key}"
    ...     def length(key, name: Output):
    ...         return len(name)
    >>> Sized().length(7)
    7
    """


class Function:
    """Bind a callable to explicitly named inputs.

    ``Function(func, 'a', c='b')`` calls ``func(<a>, c=<b>)``; names follow the argument rules
    of class bodies (public names are previous fields or the key, ``_x`` are parameters).

    >>> from connectome_dask import Transform, Function
    >>> Transform(total=Function(lambda x, y: x + y, 'a', y='b')).total(a=1, b=2)
    3
    """

    __slots__ = ("func", "names", "keywords")

    def __init__(self, func, *names, **keywords):
        if not callable(func):
            raise TypeError(f"Function expects a callable, got {type(func).__name__}")
        bad = [n for n in (*names, *keywords.values()) if not isinstance(n, str)]
        if bad:
            raise TypeError(f"Function input names must be strings, got {bad!r}")
        self.func, self.names, self.keywords = func, names, keywords

    def __call__(self, *args, **kwargs):
        return self.func(*args, **kwargs)

    def __repr__(self):
        inner = ", ".join([repr(self.func), *map(repr, self.names), *(f"{k}={v!r}" for k, v in self.keywords.items())])
        return f"Function({inner})"

    def __reduce__(self):
        return _make_function, (self.func, self.names, self.keywords)


def _make_function(func, names, keywords):
    return Function(func, *names, **keywords)


def _parameters(func):
    try:
        return list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return []


def unwrap(value):
    """``(innermost callable, {flag: True})`` for a stack of decorators."""
    flags = {}
    while isinstance(value, Decorator):
        flags[value.flag] = getattr(value, "stamp", True)
        value = value.__wrapped__
    return value, flags
