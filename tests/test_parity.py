"""connectome parity, spec §11 items 1–38, written as a connectome user writes them."""

import inspect
import pickle
import warnings
from typing import Callable

import cloudpickle
import numpy as np
import pytest

import connectome_dask as connectome
from connectome_dask import (Apply, Chain, Function, LazyChain, Mixin, Output, Source, Transform, chained, impure,
                             inverse, meta, optional, positional)
from connectome_dask.exceptions import DependencyError, FieldError, GraphError


class Ones(Source):
    @meta
    def ids():
        return [1, 2, 3]

    def image(i):
        return np.full((4, 4), i)

    def mask(i):
        return np.eye(4) * i


# 1-3: Sources, keys, metas ------------------------------------------------------------------------

def test_source_fields_ids_and_dir():
    ds = Ones()
    assert dir(ds) == ["id", "ids", "image", "mask"]
    assert ds.ids == [1, 2, 3] and type(ds.ids) is list
    assert ds.id(7) == 7 and ds.id("not in ids") == "not in ids"
    np.testing.assert_array_equal(ds.image(2), np.full((4, 4), 2))
    assert isinstance(ds, Source) and isinstance(ds, connectome.CallableLayer)


def test_any_public_argument_is_the_key():
    class Named(Source):
        def image(mask):  # named like another field: still the key
            return mask * 2

        def mask(mask):
            return mask

    assert Named().image(3) == 6

    class TwoNames(Source):  # each function names the key as it likes
        def a(i):
            return i

        def b(j):
            return j

    assert (TwoNames().a(1), TwoNames().b(2)) == (1, 2)

    with pytest.raises(FieldError, match="several key arguments"):
        class TwoKeys(Source):
            def a(i, j):
                return i

    with pytest.raises(FieldError):
        class DefinesId(Source):
            def id(i):
                return i


def test_meta_depends_on_parameters_and_is_recomputed(counter):
    class Counted(Source):
        _n: int = 2

        @meta
        def ids(_n):
            counter("ids")
            return tuple(range(_n))

        def value(i):
            return i

    ds = Counted(n=3)
    assert ds.ids == (0, 1, 2) and ds.ids == (0, 1, 2)
    assert counter.count("ids") == 2


# 4-6: parameters ------------------------------------------------------------------------------------

def test_local_parameters_are_hidden_shared_and_computed_once(counter):
    class Boxed(Source):
        def _box(i):
            counter("box")
            return i, i + 2

        def image(i, _box):
            return list(range(10))[_box[0]:_box[1]]

        def mask(i, _box):
            return _box

    ds = Boxed()
    assert "_box" not in dir(ds)
    with pytest.raises(AttributeError):
        ds._box
    with pytest.raises(FieldError):
        ds._compile("_box")
    assert ds._compile(["image", "mask"])(1) == ([1, 2], (1, 3))
    assert counter.count("box") == 1


def test_external_parameters_and_signature():
    class Scaled(Source):
        _factor: float
        _offset: int = 3
        _prefix = "p"
        _f: Callable = abs

        def value(i, _factor, _offset, _prefix, _f):
            return (_f(i) * _factor + _offset, _prefix)

    assert str(inspect.signature(Scaled)) == "(*, offset=3, prefix='p', f=<built-in function abs>, factor)"
    assert Scaled(factor=2).value(-1) == (5, "p")
    with pytest.raises(TypeError):
        Scaled()
    with pytest.raises(TypeError):
        Scaled(factor=1, unknown=2)
    with pytest.raises(TypeError):
        Scaled(1)

    class Zoom(Transform):
        _factor: int

        def image(image, _factor):
            return image * _factor

    assert Zoom(2).image(3) == 6 and Zoom(factor=3).image(1) == 3


def helper_outside(x):
    return x


def test_callable_defaults_need_an_annotation():
    with pytest.warns(UserWarning):
        class Warns(Source):
            _f = helper_outside  # without an annotation: a parameter *function* of the key

            def value(x, _f):
                return _f

    assert Warns().value(3) == 3

    with warnings.catch_warnings():
        warnings.simplefilter("error")

        class Fine(Source):
            _f: Callable = helper_outside

            def value(i, _f):
                return _f(i)

    assert Fine().value(4) == 4


# 7-13: transforms and declaration forms ---------------------------------------------------------------

def test_class_and_inline_transforms():
    class Combine(Transform):
        def image(image, mask):
            return image + mask

    ds = Ones() >> Combine()
    np.testing.assert_array_equal(ds.image(1), np.full((4, 4), 1) + np.eye(4))
    inline = Transform(image=lambda image, _k: image * _k, _k=lambda: 10, __inherit__="mask")
    assert dir(Ones() >> inline) == ["id", "ids", "image", "mask"]
    assert inline.image(2) == 20
    with pytest.raises(TypeError):
        Transform(lambda x: x)
    with pytest.raises(TypeError):
        Transform(image=1)
    assert repr(Transform(a=lambda a: a, b=lambda b: b)) == "Transform(a, b)"


def test_inherit_and_exclude():
    assert dir(Ones() >> Transform(__inherit__=True)) == ["id", "ids", "image", "mask"]
    assert dir(Ones() >> Transform(__inherit__=["image"])) == ["id", "ids", "image"]
    assert dir(Ones() >> Transform(__exclude__="image")) == ["id", "ids", "mask"]
    with pytest.raises(ValueError):
        Transform(__inherit__=True, __exclude__="a")
    for bad in (False, 1, (1, 2)):
        with pytest.raises(TypeError):
            class Bad(Transform):
                __inherit__ = bad
    with pytest.raises(TypeError):
        class BadExclude(Transform):
            __exclude__ = 3

    class Clash(Transform):
        __inherit__ = ["image"]

        def image(image):
            return image

    with pytest.raises(GraphError):
        Clash()
    with pytest.raises(RuntimeError):
        class SourceInherit(Source):
            __inherit__ = True


def test_standalone_inherited_names_are_hidden_identities():
    t = Transform(__inherit__=True, b=lambda a: a + 1)
    assert t.anything(5) == 5
    assert dir(t) == ["a", "b"]  # `a` is read by a field of the layer, so it shows


def test_output_annotation_and_function_binding():
    class WithOutput(Transform):
        def image(image):
            return image + 1

        def both(image: Output, image_raw: Output):
            return image, image_raw

        def image_raw(image):
            return image

    assert WithOutput().both(1) == (2, 1)
    f = Transform(total=Function(lambda x, y, z: (x, y, z), "b", "a", z="c"))
    assert f.total(a=1, b=2, c=3) == (2, 1, 3)
    assert str(inspect.signature(f.total)) == "(a, b, c)"


def test_static_and_class_methods_and_forbidden_attributes():
    class Helpers(Source):
        @staticmethod
        def double(x):
            return 2 * x

        @classmethod
        def name(cls):
            return cls.__name__

        def value(i):
            return Helpers.double(i)

    assert Helpers.double(2) == 4 and Helpers().double(3) == 6 and Helpers.name() == "Helpers"
    assert Helpers().value(5) == 10 and dir(Helpers()) == ["id", "value"]
    for body in ("x = 1", "x: int", "@property\n    def x(i): return i", "@staticmethod\n    def _x(): return 1"):
        with pytest.raises(FieldError):
            exec(f"class Bad(Source):\n    {body}\n", {"Source": Source})


def test_declaration_errors():
    with pytest.raises(ValueError):
        class Default(Source):
            def x(i, j=1):
                return i

    for signature in ("*args", "**kwargs", "i, *, k"):
        with pytest.raises(TypeError):
            exec(f"class Star(Source):\n    def x({signature}):\n        return 1\n", {"Source": Source})
    with pytest.raises(TypeError):
        class Twice(Source):
            def x(i):
                return 1

            def x(i):  # noqa: F811
                return 2

    class TwiceForward(Transform):
        def x(x):
            return 1

        def x(x):  # noqa: F811
            return 2

    with pytest.raises(GraphError):
        TwiceForward()
    with pytest.raises(RuntimeError):
        class Dunder(Source):
            __foo__ = 1

    class Cycle(Transform):
        def _a(_b):
            return 1

        def _b(_a):
            return 2

        def x(_a):
            return _a

    with pytest.raises(GraphError):
        Cycle()


def test_undefined_parameter_fails_on_first_use():
    class Undefined(Transform):
        def x(x, _missing):
            return x

    layer = Undefined()  # no error yet
    with pytest.raises(DependencyError):
        layer.x(1)


# 16-17: mixins ------------------------------------------------------------------------------------------

class Shared(Mixin):
    _scale: int = 2

    def _scaled(image, _scale):
        return image * _scale

    @meta
    def count(ids):
        return len(ids)


def test_mixins():
    class Scaler(Transform, Shared):
        __inherit__ = True

        def image(_scaled):
            return _scaled

    class MoreShared(Mixin, Shared):
        def extra(image):
            return image

    ds = Ones() >> Scaler(scale=3)
    np.testing.assert_array_equal(ds.image(1), np.full((4, 4), 3))
    assert not issubclass(Scaler, Shared)
    class WithMore(Transform, MoreShared):
        __inherit__ = True

        def image(_scaled):
            return _scaled

    assert "extra" in dir(Ones() >> WithMore()) and (Ones() >> WithMore()).image(1)[0, 0] == 2
    with pytest.raises(RuntimeError):
        Shared()
    with pytest.raises(RuntimeError):
        class Conflict(Transform, Shared):
            _scale: int = 3
    with pytest.raises(TypeError):
        class TwoBases(Source, Transform):
            pass
    with pytest.raises(TypeError):
        class NotMixin(Source, int):
            pass
    with pytest.raises(TypeError):
        class SubConcrete(Ones):
            pass
    with pytest.raises(TypeError):
        class NoMixinBase(Shared):
            pass
    with pytest.raises(RuntimeError):
        Source()
    assert Ones.__doc__ is None and issubclass(Ones, Source)


# 18-22: compiled functions -------------------------------------------------------------------------------

def test_compiled_signatures_are_sorted_raw_inputs():
    t = Transform(z=lambda zeta, alpha, mid: (alpha, mid, zeta))
    assert str(inspect.signature(t.z)) == "(alpha, mid, zeta)"
    assert t.z(1, 2, 3) == (1, 2, 3)
    assert str(inspect.signature(Ones().image)) == "(id)"


def test_compile_instances_and_errors():
    ds = Ones()
    image, mask = ds._compile(("image", "mask"))(2)
    assert image[0, 0] == 2 and mask[0, 0] == 2
    with pytest.raises(FieldError):
        ds._compile("nope")
    with pytest.raises(TypeError):
        ds._compile(3)
    with pytest.raises(AttributeError):
        ds.nope
    inst = ds(3)
    assert inst.id == 3 and inst["image"][0, 0] == 3
    assert [x[0, 0] for x in inst["image", "mask"]] == [3, 3]
    assert dir(inst) == dir(ds)


def test_user_exceptions_propagate_unchanged():
    class Boom(Exception):
        pass

    class Fails(Source):
        def value(i):
            raise Boom(i)

    with pytest.raises(Boom) as info:
        Fails().value(5)
    assert info.value.args == (5,)


def test_compiled_fields_pickle():
    from parity_layers import Pets, pipeline

    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)):
        field = loads(dumps(pipeline.name))
        assert field("pet1") == "PET1!"
        assert loads(dumps(Pets())).size("abc") == 3
    local = Ones() >> Transform(image=lambda image: image + 1)
    clone = cloudpickle.loads(cloudpickle.dumps(local))
    np.testing.assert_array_equal(clone.image(1), local.image(1))
    assert clone.image.delayed(1).key == local.image.delayed(1).key


# 24-30: chains ----------------------------------------------------------------------------------------------

def test_chains_nesting_consistency_and_persistence():
    a, b, c = Ones(), Transform(__inherit__=True, image=lambda image: image + 1), Transform(mask=lambda mask: -mask)
    flat, nested = Chain(a, b, c), (a >> b) >> c
    assert dir(flat) == dir(nested) == ["id", "ids", "mask"]  # consistency: c drops image
    np.testing.assert_array_equal(flat.mask(2), nested.mask(2))
    with pytest.raises(TypeError):
        Chain()
    assert isinstance(flat[0], Source) and isinstance(flat[1:], Chain) and flat[-1] is c
    assert nested[1] is c
    with pytest.raises(ValueError):
        flat["x"]
    redefined = Ones() >> Transform(ids=meta(lambda ids: ids[:1]), total=meta(lambda ids: len(ids)))
    assert redefined.ids == [1] and redefined.total == 3  # `total` reads the previous layer's ids
    assert "total" not in dir(redefined >> Transform(__inherit__=["image"]))


def test_missing_inputs_fail_lazily_for_the_whole_chain():
    broken = Ones() >> Transform(x=lambda nothing: nothing)
    with pytest.raises(DependencyError):
        broken.ids
    with pytest.raises(DependencyError):
        dir(broken)


def test_transform_only_pipelines_take_minimal_raw_inputs():
    crop = Transform(__inherit__=True, _box=lambda image: (0, 1), image=lambda image, _box: image[_box[0]:_box[1]],
                     mask=lambda mask, _box: mask[_box[0]:_box[1]])
    chain = crop >> Transform(__inherit__=True)
    assert str(inspect.signature(chain.mask)) == "(image, mask)"
    assert chain.mask(image=[1, 2], mask=[3, 4]) == [3]


def test_filter_drop_cache_chained_and_lazy_chain(counter):
    pipe = Chain(Ones(), connectome.CacheToRam(), Transform(__inherit__=True))
    assert len(list(pipe._drop_cache()._layers)) == 2
    assert len(list(pipe._filter(lambda layer: isinstance(layer, Source))._layers)) == 1
    assert len(list(pipe._filterfalse(lambda layer: isinstance(layer, Source))._layers)) == 2

    @chained(Transform(__inherit__=True, image=lambda image: image * 0))
    class Zeros(Source):
        def image(i):
            return np.ones(2)

    assert Zeros.__name__ == "Zeros" and list(Zeros().image(1)) == [0, 0]
    lazy = LazyChain(Transform(__inherit__=True), connectome.CacheToRam())
    assert (Ones() >> lazy).image(1)[0, 0] == 1


# 31-37: decorators -----------------------------------------------------------------------------------------

def test_impure_is_shared_within_an_evaluation(counter):
    class Augment(Transform):
        @impure
        def _angle():
            return np.random.rand()

        def image(image, _angle):
            return _angle

        def mask(mask, _angle):
            return _angle

    ds = Ones() >> Augment()
    a, b = ds._compile(["image", "mask"])(1)
    assert a == b and ds.image(1) != ds.image(1)


def test_inverse_and_decorate():
    class Crop(Transform):
        __inherit__ = True

        def _box(image):
            return 1, 3

        def image(image, _box):
            return image[_box[0]:_box[1]]

        @inverse
        def image(image, _box):
            return [None] * _box[0] + list(image) + [None]

    layer = Crop()
    assert "image" in dir(layer) and layer.image([0, 1, 2, 3]) == [1, 2]
    predict = layer._decorate("image")(lambda x: [v * 10 for v in x])
    assert predict([0, 1, 2, 3]) == [None, 10, 20, None]
    assert str(inspect.signature(predict)) == "(image)"
    both = layer._wrap(lambda x: (x, len(x)), "image", ["image", "n"], final="image")
    assert both([0, 1, 2, 3]) == [None, 1, 2, None]  # `n` passes back: the layer inherits everything
    strict = Transform(image=lambda image: image)
    with pytest.raises(FieldError):
        strict._decorate("image")(lambda x: x)  # no inverse and not inherited: the path is broken
    with pytest.raises(ValueError):
        layer._decorate(["image", "image"])
    with pytest.raises(FieldError):
        Chain(Ones(), layer)._decorate("image")(lambda x: x)  # a Source passes nothing back
    chain = Chain(Ones(), layer)
    back = chain[1:]._decorate("image")(lambda x: x)
    assert back(list(range(4))) == [None, 1, 2, None]
    loop = layer._loopback(lambda x: [v + 1 for v in x], "image")
    assert loop.image([0, 1, 2, 3]) == [None, 2, 3, None]


def test_optional_and_positional():
    class Optional(Transform):
        __inherit__ = True

        @optional
        def spacing(spacing):
            return spacing

        @positional
        def image(x):
            return x + 1

        mask = image

    ds = Ones() >> Optional()
    assert "spacing" not in dir(ds)
    with pytest.raises(AttributeError):
        ds.spacing
    with pytest.raises(FieldError):
        ds._compile("spacing")
    assert ds.image(1)[0, 0] == 2 and ds.mask(2)[0, 0] == 3  # aliases read their own previous field
    assert (Optional()).spacing(4) == 4

    with pytest.raises(TypeError):
        positional(impure(lambda x: x))
    with pytest.raises(ValueError):
        positional(lambda: 1)
    with pytest.raises(ValueError):
        impure(meta(lambda x: x))

    class OptionalInverse(Transform):
        @optional
        @inverse
        def x(x):
            return x

    with pytest.raises(GraphError):
        OptionalInverse()


# 38: Apply ---------------------------------------------------------------------------------------------------

def test_apply():
    ds = Ones() >> Apply(image=lambda x: x * 2)
    assert dir(ds) == ["id", "ids", "image", "mask"]
    assert ds.image(1)[0, 0] == 2 and ds.mask(1)[0, 0] == 1
    assert Apply(x=abs).x(-3) == 3
    with pytest.raises(TypeError):
        Apply(abs)
    with pytest.raises(DependencyError):
        (Ones() >> Apply(nope=abs)).image(1)


def test_submodules():
    from connectome_dask import cache, exceptions, serializers

    assert issubclass(exceptions.DependencyError, exceptions.GraphError)
    assert callable(cache.unstable_module) and serializers.PickleSerializer
