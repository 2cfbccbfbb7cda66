"""``Apply(**{name: func})``: apply a one-argument function to named fields; everything else,
forward and backward, passes through unchanged."""

from dataclasses import replace

from ..nodes import Call
from ..plan import _broken
from .base import CallableLayer

__all__ = ["Apply"]


class Apply(CallableLayer):
    """``Apply(image=np.flip)`` flips ``image`` and keeps every other field.

    >>> from connectome_dask import Apply
    >>> Apply(x=abs).x(-3)
    3
    """

    def __init__(self, *args, **funcs):
        if args:
            raise TypeError("Apply takes keyword arguments only: Apply(field=function, ...)")
        for name, func in funcs.items():
            if not callable(func):
                raise TypeError(f"Apply: {name}={func!r} is not callable")
        self._funcs = funcs

    def _connect(self, prev):
        fields = dict(prev.fields)
        own = {name: Call(name, func, [prev.request(name, self._label)], layer=self._label)
               for name, func in self._funcs.items()}
        fields.update(own)
        virtual = None
        if prev.virtual is not None:
            upstream, funcs = prev.virtual, self._funcs
            virtual = lambda name: None if name in funcs else upstream(name)  # noqa: E731
        return replace(prev, fields=fields, metas=prev.metas - own.keys(), persistent=prev.persistent - own.keys(),
                       virtual=virtual, backward=prev.backward + (dict,),
                       broken=prev.broken + tuple(_broken(self._label, own)))

    def __reduce__(self):
        return _apply, (self._funcs,)

    def __repr__(self):
        return f"Apply({', '.join(self._funcs)})"


def _apply(funcs):
    return Apply(**funcs)
