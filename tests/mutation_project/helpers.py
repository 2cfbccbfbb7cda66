"""Helpers of the mutation corpus: the user's own module, imported by the pipeline."""
import abc
import dataclasses
import enum
import functools
import inspect

import numpy as np

from pkg import sub as sub_util
from pkg.sub import lift

THRESHOLD = 3
UNUSED = 1
TABLE = {"a": 1}
WEIGHTS = np.array([1.0, 2.0, 3.0])
LABEL = "x"


def clip(x):
    return min(x, THRESHOLD)


def scale(x, factor=2):
    return x * factor


def kwscale(x, *, factor=2):
    return x * factor


def unrelated(x):
    return x - 1


def inner(x):
    return x + 10


def outer(x):
    return inner(x) * 2


def through_sub(x):
    return sub_util.g(x) + 1


def swap(a, b):
    return a - b


def times(k):
    def deco(f):
        @functools.wraps(f)
        def wrapper(x):
            return f(x) * k
        return wrapper
    return deco


@times(2)
def doubled(x):
    return x + 1


class Normalizer:
    offset = 1

    def apply(self, x):
        return x + self.offset


class Base:
    def f(self, x):
        return x * 3


class Child(Base):
    pass


class Shape(abc.ABC):
    @abc.abstractmethod
    def area(self, x):
        ...


class Square(Shape):
    def area(self, x):
        return x * x


class Mode(enum.Enum):
    A = 1


@dataclasses.dataclass(frozen=True)
class Config:
    gain: int = 2


class Scaler:
    """A callable object used as a field; it holds an attribute pickle handles but vars() hashing did not."""

    def __init__(self, k):
        self.k = k
        self.signature = inspect.signature(scale)

    def __call__(self, id):
        return id * self.k


STEPS = (clip, inner)
