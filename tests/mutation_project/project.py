"""The pipeline of the mutation corpus: one field per way user code reaches its helpers."""
import functools

import helpers
import helpers as h
import pkg
import pkg.sub
from connectome_dask import CacheToDisk, Source, Transform, meta
from helpers import Config, clip

HALF = functools.partial(helpers.scale, factor=0.5)
NORMALIZER = helpers.Normalizer()


def make_adder(k):
    def add(x):
        return x + k
    return add


ADD = make_adder(7)


class Data(Source):
    _config: Config = Config()
    _fn: object = None

    @meta
    def ids():
        return [1, 2]

    def body(id):
        return id * 2 + 1

    def constant(id):
        return id + 5

    def closure(id):
        return ADD(id)

    def from_import(id):
        return clip(id)

    def default_arg(id):
        return helpers.scale(id)

    def kwdefault(id):
        return helpers.kwscale(id)

    def module_func(id):
        return helpers.outer(id)

    def module_const(id):
        return id + helpers.THRESHOLD

    def alias(id):
        return h.swap(id, 1)

    def subpackage(id):
        return pkg.sub.g(id)

    def pkg_const(id):
        return id + pkg.CONST

    def reexport(id):
        return helpers.lift(id)

    def via_sub(id):
        return helpers.through_sub(id)

    def method(id):
        return NORMALIZER.apply(id)

    def new_instance(id):
        return helpers.Normalizer().apply(id)

    def inherited(id):
        return helpers.Child().f(id)

    def abstract(id):
        return helpers.Square().area(id)

    def enum_value(id):
        return id + helpers.Mode.A.value

    def decorated(id):
        return helpers.doubled(id)

    def partial(id):
        return HALF(id)

    def table(id):
        return helpers.TABLE["a"] + id

    def weights(id):
        return float(helpers.WEIGHTS.sum()) + id

    def steps(id):
        return helpers.STEPS[1](id)

    def label(id):
        return helpers.LABEL + str(id)

    def config(id, _config):
        return id * _config.gain

    def lam(id, _fn):
        return _fn(id)

    def stable(id):
        return id * 10


class Shift(Transform):
    __inherit__ = True

    def upstream(body):
        return body + 1


def pipeline(root):
    return Data(fn=lambda x: x + 1) >> Transform(__inherit__=True, scaled=helpers.Scaler(3)) >> Shift() >> CacheToDisk(
        root, FIELDS)


FIELDS = ["body", "constant", "closure", "from_import", "default_arg", "kwdefault", "module_func", "module_const",
          "alias", "subpackage", "pkg_const", "reexport", "via_sub", "method", "new_instance", "inherited", "abstract",
          "enum_value", "decorated", "partial", "table", "weights", "steps", "label", "config", "lam", "stable",
          "scaled", "upstream"]
