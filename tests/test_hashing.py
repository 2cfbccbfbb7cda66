"""Hashing rules (DESIGN §4, spec §7.2): what changes a token and what must not."""

import dataclasses
import enum
import functools
import inspect
import os
import pathlib
import subprocess
import sys
import textwrap
import threading

import cloudpickle
import numpy as np
import pytest

from connectome_dask import Source, Transform

from connectome_dask.exceptions import HashingError
from connectome_dask.hashing import combine, fingerprint, is_unstable, normalize_token, tokenize


def check_token(value):
    """Idempotent, and stable over a cloudpickle round trip."""
    token = tokenize(value)
    assert tokenize(value) == token
    assert tokenize(cloudpickle.loads(cloudpickle.dumps(value))) == token
    return token


def make(source, name="f", filename="<generated>", offset=0, namespace=None):
    """Define a function from source text, at a given line offset and file name."""
    namespace = {} if namespace is None else namespace
    code = compile("\n" * offset + textwrap.dedent(source), filename, "exec")
    exec(code, namespace)
    return namespace[name]


# --- values -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    None, True, 0, 1, -(10**40), 1.5, float("nan"), 2j, "", "abc\x00", b"", b"\x00x", bytearray(b"ab"),
    (), [], {}, (1, "a"), [1, [2, (3,)]], {"b": 1, "a": 2}, {1, 2, 3}, frozenset(["x"]), slice(1, 5, 2),
    range(3), pathlib.Path("/data/x.nii"), np.arange(6).reshape(2, 3), np.float32(1.5), np.array(["a", "bc"]),
])
def test_values_are_deterministic(value):
    check_token(value)


def test_types_are_distinguished():
    tokens = [tokenize(v) for v in (1, 1.0, True, "1", b"1", (1,), [1], {1}, np.array(1), np.array([1]))]
    assert len(set(tokens)) == len(tokens)
    assert tokenize(np.int64(1)) == tokenize(1) and tokenize(np.float32(1)) == tokenize(1.0)  # scalars they equal


def test_containers_are_canonical():
    assert tokenize({"a": 1, "b": 2}) == tokenize({"b": 2, "a": 1})
    assert tokenize({3, 1, 2}) == tokenize({2, 3, 1})
    assert tokenize({"a": 1}) != tokenize({"a": 2})


def test_arrays_hash_by_content_dtype_and_shape():
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    assert tokenize(a) == tokenize(a.copy())
    assert tokenize(a[:, ::2]) == tokenize(np.ascontiguousarray(a[:, ::2]))
    assert tokenize(a) != tokenize(a.astype(np.int64))
    assert tokenize(a) != tokenize(a.reshape(4, 3))
    b = a.copy()
    b[1, 1] += 1
    assert tokenize(a) != tokenize(b)
    assert tokenize(np.array([1, "x"], dtype=object)) == tokenize(np.array([1, "x"], dtype=object))


def test_dataclasses_enums_and_partials():
    @dataclasses.dataclass
    class Config:
        size: int
        name: str

    class Mode(enum.Enum):
        A = 1
        B = 2

    assert tokenize(Config(1, "x")) == tokenize(Config(1, "x")) != tokenize(Config(2, "x"))
    assert tokenize(Mode.A) != tokenize(Mode.B)
    assert tokenize(functools.partial(max, 1)) != tokenize(functools.partial(max, 2))


def test_unhashable_objects_raise_a_clear_error_until_registered():
    class Handle:
        def __init__(self, path):
            self.path = path

    with pytest.raises(HashingError, match="parameter 'h' of layer L.*Handle.*register") as info:
        tokenize(Handle("a"), what="parameter 'h' of layer L")
    assert isinstance(info.value, TypeError)
    with pytest.raises(HashingError):
        tokenize(threading.Lock())
    normalize_token.register(Handle, lambda h: h.path)
    assert tokenize(Handle("a")) == tokenize(Handle("a")) != tokenize(Handle("b"))


def test_self_containing_container_raises():
    x = []
    x.append(x)
    with pytest.raises(HashingError, match="contains itself"):
        tokenize(x)


# --- code -------------------------------------------------------------------------------------

BASE = '''
def f(x, y):
    """A docstring."""
    # a comment
    return helper(x) * 2 + y
'''


def ns():
    return {"helper": make("def helper(v):\n    return v + 1\n", "helper")}


def test_code_changes_change_the_token():
    base = fingerprint(make(BASE, namespace=ns()))
    assert fingerprint(make(BASE.replace("* 2", "* 3"), namespace=ns())) != base  # constant
    assert fingerprint(make(BASE.replace("+ y", "- y"), namespace=ns())) != base  # body
    assert fingerprint(make(BASE.replace("x, y", "x, z").replace("+ y", "+ z"), namespace=ns())) != base
    other = {"helper": make("def helper(v):\n    return v + 2\n", "helper")}
    assert fingerprint(make(BASE, namespace=other)) != base  # a referenced global helper


def test_layout_docstring_comment_file_and_line_do_not_change_the_token():
    base = fingerprint(make(BASE, namespace=ns()))
    assert fingerprint(make(BASE.replace("A docstring.", "Other words."), namespace=ns())) == base
    assert fingerprint(make(BASE.replace("# a comment", "# changed\n\n"), namespace=ns())) == base
    assert fingerprint(make(BASE, filename="/elsewhere/file.py", offset=40, namespace=ns())) == base


def test_closures_defaults_and_kwdefaults():
    def outer(k):
        def f(x):
            return x * k
        return f

    assert fingerprint(outer(2)) == fingerprint(outer(2)) != fingerprint(outer(3))
    assert fingerprint(make("def f(x=1):\n    return x\n")) != fingerprint(make("def f(x=2):\n    return x\n"))
    assert fingerprint(make("def f(*, x=1):\n    return x\n")) != fingerprint(make("def f(*, x=2):\n    return x\n"))


def test_the_enclosing_class_name_does_not_matter():
    def define(name):
        namespace = {}
        exec(f"class {name}:\n    def image(i):\n        return i * 2\n", namespace)
        return namespace[name].__dict__["image"]

    assert fingerprint(define("First")) == fingerprint(define("Second"))


def test_recursion_is_handled():
    namespace = {}
    exec("def even(n):\n    return n == 0 or odd(n - 1)\ndef odd(n):\n    return n != 0 and even(n - 1)\n"
         "class Node:\n    def clone(self):\n        return Node()\n", namespace)
    assert fingerprint(namespace["even"]) == fingerprint(namespace["even"])
    assert fingerprint(namespace["Node"]) == fingerprint(namespace["Node"])
    fact = make("def fact(n):\n    return 1 if n < 2 else n * fact(n - 1)\n", "fact")
    assert len(fingerprint(fact)) == 32


def test_installed_code_is_by_reference_and_can_be_forced_by_value():
    assert fingerprint(os.path.join) == fingerprint(os.path.join)
    assert fingerprint(np.mean) != fingerprint(np.median)
    assert fingerprint(len) != fingerprint(abs)

    wrapper = make("def wrapper(x):\n    return join(x, 'a')\n", "wrapper", namespace={"join": os.path.join})

    before = fingerprint(wrapper)
    is_unstable(os.path.join)
    try:
        assert fingerprint(wrapper) != before  # os.path.join is now hashed by its code
    finally:
        from connectome_dask.hashing.code import _FORCED

        _FORCED.pop(os.path.join, None)
    assert fingerprint(wrapper) == before


def test_mutable_globals_are_hashed_by_current_value():
    namespace = {"TABLE": [1, 2]}
    f = make("def f(x):\n    return TABLE[x]\n", namespace=namespace)
    before = fingerprint(f)
    namespace["TABLE"].append(3)
    assert fingerprint(f) != before


SCRIPT = '''
import sys, numpy as np
from connectome_dask import Source, Transform, meta
from connectome_dask.hashing import fingerprint, tokenize
LOOKUP = {"b": frozenset(["x", "y", "z"]), "a": {1, 2}}
def helper(v):
    return v in {"p", "q", "r"}
class Data(Source):
    @meta
    def ids():
        return ["x", "y"]
    def image(key):
        return helper(key), LOOKUP
ds = Data() >> Transform(image=lambda image: image, __inherit__=True)
print(fingerprint(helper), tokenize(LOOKUP), tokenize(np.arange(4)), ds.image.delayed("x").key)
'''


def test_tokens_are_identical_across_processes_and_hash_seeds():
    outputs = set()
    for seed in ("0", "1", "999"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=True)
        outputs.add(out.stdout.strip())
    assert len(outputs) == 1, outputs


def test_user_modules_are_hashed_by_value(tmp_path):
    """connectome serves stale caches after an edit of an importable module; we must not."""
    module = tmp_path / "mymod.py"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import mymod
        print(mymod.ds.image.delayed(1).key)
    """)
    source = textwrap.dedent("""
        from connectome_dask import Source
        class Data(Source):
            def image(i):
                return i * {factor}
        ds = Data()
    """)
    keys = []
    for factor in (2, 2, 3):
        module.write_text(source.format(factor=factor))
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        keys.append(out.stdout.strip())
    assert keys[0] == keys[1] != keys[2]


# --- pipeline tokens ------------------------------------------------------------------------------

def key(pipeline, field="image", entry="k"):
    """The Merkle token of a field for an entry (cache layers add no task key of their own here)."""
    from connectome_dask.evaluate import Evaluation

    return Evaluation({"id": entry}).token(getattr(pipeline, field)._nodes[0])


class Data(Source):
    _scale: float = 1.0

    def image(i, _scale):
        return len(i) * _scale

    def label(i):
        return i.upper()


class Twice(Transform):
    __inherit__ = True

    def image(image):
        return image * 2


def test_pipeline_tokens_change_with_parameters_layers_and_keys():
    base = key(Data() >> Twice())
    assert key(Data(scale=1.0) >> Twice()) == base
    assert key(Data(scale=2.0) >> Twice()) != base  # a parameter
    assert key(Data() >> Twice(), entry="j") != base  # the entry key
    assert key(Data()) != base  # an upstream layer removed
    assert key(Data() >> Twice() >> Transform(image=lambda image: image + 1)) != key(Data() >> Twice())
    array_a = Transform(image=lambda image, _w: image, _w=lambda: np.zeros(3))
    array_b = Transform(image=lambda image, _w: image, _w=lambda: np.ones(3))
    assert key(Data() >> array_a) != key(Data() >> array_b)


def test_identity_like_layers_and_unrelated_fields_do_not_change_tokens():
    base = key(Data() >> Twice())
    assert key(Data() >> Transform(__inherit__=True) >> Twice()) == base
    from connectome_dask import CacheToRam

    assert key(Data() >> CacheToRam() >> Twice()) == base
    assert key(Data() >> Twice() >> CacheToRam(), "label") == key(Data(), "label")


def test_combine_is_order_sensitive():
    assert combine("a", "b") != combine("b", "a")
    assert combine("ab", "c") != combine("a", "bc")


# --- module attributes, runtime class caches, objects reached from code (issue 12) ----------------

MODULE = '''
"""Helpers."""
import abc
import dataclasses
import inspect
import threading

THRESHOLD = 3
LOCK = threading.Lock()


def clip(x):
    return min(x, THRESHOLD)


class Point:
    def __init__(self, x):
        self.x = x


class Slotted:
    __slots__ = ("x",)

    def __init__(self, x):
        self.x = x


class Shape(abc.ABC):
    @abc.abstractmethod
    def area(self):
        ...


@dataclasses.dataclass
class Config:
    gain: int = 2
    names: list = dataclasses.field(default_factory=list)


class Scaler:
    def __init__(self, k):
        self.k = k
        self.signature = inspect.signature(clip)

    def __call__(self, x):
        return x * self.k
'''

CLASS_SCRIPT = '''
import pickle, sys
sys.path.insert(0, sys.argv[1])
import hmod
from connectome_dask.hashing import fingerprint
classes = (hmod.Point, hmod.Slotted, hmod.Shape, hmod.Config)
before = [fingerprint(c) for c in classes]
pickle.dumps([hmod.Point(1), hmod.Slotted(2), hmod.Config()])
isinstance(1, hmod.Shape), issubclass(dict, hmod.Shape)
after = [fingerprint(c) for c in classes]
print(before == after, "__slotnames__" in vars(hmod.Point), *after)
'''


@pytest.fixture
def hmod(tmp_path, monkeypatch):
    (tmp_path / "hmod.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    sys.modules.pop("hmod", None)
    yield importlib.import_module("hmod")
    sys.modules.pop("hmod", None)


def test_module_attributes_are_hashed_by_value(hmod):
    f = make("def f(x):\n    return hmod.clip(x) + hmod.THRESHOLD\n", namespace={"hmod": hmod})
    g = make("def g(x):\n    return hmod.clip(x)\n", "g", namespace={"hmod": hmod})
    before, before_g = fingerprint(f), fingerprint(g)
    hmod.THRESHOLD = 4
    assert fingerprint(f) != before and fingerprint(g) != before_g  # directly, and through clip's global
    hmod.THRESHOLD = 3
    assert fingerprint(f) == before
    hmod.LOCK = threading.Lock()  # not named by the code: not hashed (a lock would be an error)
    assert fingerprint(f) == before
    from connectome_dask.hashing.code import reached_names

    assert {"clip", "THRESHOLD"} <= set(reached_names("hmod")) and "LOCK" not in reached_names("hmod")
    uses_lock = make("def h():\n    return hmod.LOCK\n", "h", namespace={"hmod": hmod})
    with pytest.raises(HashingError, match="'LOCK' of module 'hmod'.*pickle refuses"):
        fingerprint(uses_lock)


def test_installed_modules_stay_by_name_and_version():
    f = make("def f(x):\n    return np.mean(x) + os.sep.count('/')\n", namespace={"np": np, "os": os})
    from connectome_dask.hashing.code import identify

    token, refs, overridden = identify(f)
    assert {tag for _, tag in refs} == {f"numpy@{np.__version__}", f"os@python{sys.version_info[0]}.{sys.version_info[1]}"}
    assert not overridden


def test_class_fingerprints_ignore_caches_python_adds(hmod, tmp_path):
    """Pickling an instance adds ``__slotnames__``; ``isinstance`` fills the ABC caches."""
    out = subprocess.run([sys.executable, "-c", CLASS_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": "7"})
    same, slotnames, *tokens = out.stdout.split()
    assert (same, slotnames) == ("True", "True")
    assert tokens == [fingerprint(c) for c in (hmod.Point, hmod.Slotted, hmod.Shape, hmod.Config)]  # another process


def test_dataclass_fields_are_hashed_by_content(hmod):
    before = fingerprint(hmod.Config)
    field = hmod.Config.__dataclass_fields__["names"]
    field.default_factory = tuple  # only visible in the dataclass machinery
    assert fingerprint(hmod.Config) != before


def test_callable_objects_are_hashed_the_way_pickle_sees_them(hmod):
    assert fingerprint(hmod.Scaler(2)) == fingerprint(hmod.Scaler(2)) != fingerprint(hmod.Scaler(3))
    scaler = hmod.Scaler(2)
    scaler.signature = inspect.signature(hmod.Config)  # an attribute vars()-hashing could not handle
    assert fingerprint(scaler) != fingerprint(hmod.Scaler(2))
    bound = make("def f(x):\n    return P.x + x\n", namespace={"P": hmod.Point(1)})
    assert fingerprint(bound) != fingerprint(make("def f(x):\n    return P.x + x\n", namespace={"P": hmod.Point(2)}))
    locked = hmod.Scaler(2)
    locked.lock = threading.Lock()
    with pytest.raises(HashingError, match="callable Scaler instance.*pickle refuses"):
        fingerprint(locked)


def test_no_partial_keys_for_unhashable_class_attributes_or_external_state():
    from connectome_dask import External

    class Locked:
        lock = threading.Lock()

        def value(self, key):
            return key

    with pytest.raises(HashingError, match="'lock' of class.*Locked.*pickle refuses"):
        fingerprint(Locked)

    class Handle:
        def __init__(self):
            self.handle = threading.Lock()

        def value(self, key):
            return key

    ext = External(Handle(), inputs=["id"])
    from connectome_dask import Source, meta

    class Ids(Source):
        @meta
        def ids():
            return ["a"]

    with pytest.raises(HashingError, match="'handle'.*marker="):
        (Ids() >> ext).value.delayed("a")
