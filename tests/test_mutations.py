"""The mutation corpus: edits users make to their code, each classified "must invalidate" or "must
not", applied to real files on disk (a copy of ``tests/mutation_project``) and checked in fresh
processes (``mutation_driver.py``, two batches under different ``PYTHONHASHSEED`` values sharing one
cache root) on the eager path, ``.delayed`` on a 2-worker ``LocalCluster`` whose workers imported the
project before the edits, and ``persist``. Target: 0 wrong — no stale hit, no needless miss.

An edit is ``(name, file, [(old, new), ...], field, invalidates)``: ``old`` occurs once in the file;
``field`` is the field whose key and values are checked. With ``file=None`` the "edit" is code run
after the import (pickling instances, ``isinstance`` calls), which must change nothing.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
H, PR, SUB, PKG = "helpers.py", "project.py", "pkg/sub.py", "pkg/__init__.py"

INVALIDATE = [
    ("field body", PR, [("return id * 2 + 1", "return id * 2 + 2")], "body", True),
    ("field constant", PR, [("return id + 5", "return id + 6")], "constant", True),
    ("closure value", PR, [("make_adder(7)", "make_adder(8)")], "closure", True),
    ("upstream field edited", PR, [("return id * 2 + 1", "return id * 3 + 1")], "upstream", True),
    ("downstream layer edited", PR, [("return body + 1", "return body + 2")], "upstream", True),
    ("parameter value", PR, [("Data(fn=lambda x: x + 1)", "Data(fn=lambda x: x + 1, config=Config(4))")],
     "config", True),
    ("lambda in a parameter", PR, [("Data(fn=lambda x: x + 1)", "Data(fn=lambda x: x + 2)")], "lam", True),
    ("functools.partial argument", PR, [("factor=0.5)", "factor=0.25)")], "partial", True),
    ("helper via from-import", H, [("return min(x, THRESHOLD)", "return min(x, THRESHOLD) - 1")],
     "from_import", True),
    ("global used by a from-imported helper", H, [("THRESHOLD = 3", "THRESHOLD = 0")], "from_import", True),
    ("import m; m.f(): f's body", H, [("return inner(x) * 2", "return inner(x) * 3")], "module_func", True),
    ("import m; m.f(): a function f calls", H, [("return x + 10", "return x + 11")], "module_func", True),
    ("import m; m.CONST", H, [("THRESHOLD = 3", "THRESHOLD = 4")], "module_const", True),
    ("import m as alias; alias.f()", H, [("return a - b", "return b - a")], "alias", True),
    ("argument names of a helper", H, [("def swap(a, b):", "def swap(b, a):")], "alias", True),
    ("default argument of a helper", H, [("def scale(x, factor=2):", "def scale(x, factor=3):")], "default_arg", True),
    ("keyword default of a helper", H, [("def kwscale(x, *, factor=2):", "def kwscale(x, *, factor=5):")],
     "kwdefault", True),
    ("subpackage function pkg.sub.g", SUB, [("return x * 4", "return x * 5")], "subpackage", True),
    ("package constant pkg.CONST", PKG, [("CONST = 5", "CONST = 6")], "pkg_const", True),
    ("function re-exported by the helper module", SUB, [("return x + 100", "return x + 200")], "reexport", True),
    ("submodule reached inside a helper", SUB, [("return x * 4", "return x * 6")], "via_sub", True),
    ("method of a user class (instance global)", H, [("return x + self.offset", "return x - self.offset")],
     "method", True),
    ("class attribute (instance global)", H, [("offset = 1", "offset = 2")], "method", True),
    ("class attribute (instance made in the field)", H, [("offset = 1", "offset = 3")], "new_instance", True),
    ("method of a base class", H, [("return x * 3", "return x * 4")], "inherited", True),
    ("implementation of an abstract method", H, [("return x * x", "return x * x * x")], "abstract", True),
    ("enum member value", H, [("A = 1", "A = 7")], "enum_value", True),
    ("decorator argument (its closure)", H, [("@times(2)", "@times(3)")], "decorated", True),
    ("decorator's wrapper body", H, [("return f(x) * k", "return f(x) * k + 1")], "decorated", True),
    ("decorated function body", H, [("def doubled(x):\n    return x + 1", "def doubled(x):\n    return x + 2")],
     "decorated", True),
    ("dataclass parameter's field default", H, [("gain: int = 2", "gain: int = 3")], "config", True),
    ("module-level dict", H, [('TABLE = {"a": 1}', 'TABLE = {"a": 2}')], "table", True),
    ("module-level numpy array", H, [("np.array([1.0, 2.0, 3.0])", "np.array([1.0, 2.0, 4.0])")], "weights", True),
    ("function inside a module-level tuple", H, [("return x + 10", "return x + 12")], "steps", True),
    ("module-level string", H, [('LABEL = "x"', 'LABEL = "y"')], "label", True),
    ("callable object field: __call__ body", H, [("return id * self.k", "return id * self.k + 1")], "scaled", True),
    ("callable object field: its argument", PR, [("helpers.Scaler(3)", "helpers.Scaler(4)")], "scaled", True),
]

KEEP = [
    ("moving a helper between lines", H, [("def clip(x):\n    return min(x, THRESHOLD)\n\n\n", ""),
                                          ("STEPS = (clip, inner)", "def clip(x):\n    return min(x, THRESHOLD)\n\n\n"
                                                                    "STEPS = (clip, inner)")], "from_import", False),
    ("comment in a helper", H, [("    return min(x, THRESHOLD)", "    # clip at the threshold\n    return min(x, THRESHOLD)")],
     "from_import", False),
    ("docstring of a helper", H, [("def inner(x):\n", 'def inner(x):\n    """Add ten."""\n')], "module_func", False),
    ("module docstring of the helper module", H, [("Helpers of the mutation corpus", "Helpers, edited")],
     "module_const", False),
    ("blank lines in the helper module", H, [("THRESHOLD = 3\n", "\n\n\nTHRESHOLD = 3\n")], "module_const", False),
    ("unrelated function of the same module", H, [("return x - 1", "return x - 2")], "module_func", False),
    ("unrelated constant of the same module", H, [("UNUSED = 1", "UNUSED = 2")], "module_const", False),
    ("new function in the helper module", H, [("STEPS = (clip, inner)", "def added(x):\n    return x\n\n\n"
                                                                        "STEPS = (clip, inner)")], "module_func", False),
    ("annotations of a helper", H, [("def scale(x, factor=2):", "def scale(x: float, factor: int = 2) -> float:")],
     "default_arg", False),
    ("unused function of a subpackage", SUB, [("def unused_sub(x):\n    return x", "def unused_sub(x):\n    return -x")],
     "subpackage", False),
    ("comment in a subpackage", SUB, [("def g(x):\n", "def g(x):\n    # times four\n")], "subpackage", False),
    ("docstring and comment in a field", PR, [("def body(id):\n", 'def body(id):\n        """Odd numbers."""  # comment\n')],
     "body", False),
    ("blank lines in the pipeline module", PR, [("HALF = ", "\n\n\nHALF = ")], "partial", False),
    ("renaming the Source class", PR, [("class Data(Source):", "class Dataset(Source):"),
                                       ("return Data(fn=", "return Dataset(fn=")], "body", False),
    ("unrelated field of the same Source", PR, [("return id * 10", "return id * 11")], "body", False),
    ("identity-like layer inserted", PR, [(">> Shift() >>", ">> Transform(__inherit__=True) >> Shift() >>")],
     "upstream", False),
    ("pickling instances first", None, "import pickle; [pickle.dumps(o) for o in (helpers.Normalizer(), "
     "helpers.Config(), helpers.Square(), helpers.Child(), project.NORMALIZER)]", "method", False),
    ("pickling instances first (dataclass parameter)", None, "import pickle; pickle.dumps(helpers.Config(5))",
     "config", False),
    ("isinstance calls on an ABC", None, "isinstance(helpers.Square(), helpers.Shape); isinstance(1, helpers.Shape); "
     "issubclass(dict, helpers.Shape)", "abstract", False),
    ("another process and PYTHONHASHSEED (nothing edited)", None, "", "table", False),
]

MUTATIONS = INVALIDATE + KEEP


def as_json(mutations):
    return [dict(zip(("name", "file", "edits", "field", "invalidates"), m)) for m in mutations]


def test_the_corpus_is_large_and_well_formed():
    assert len(MUTATIONS) >= 40
    assert len({m[0] for m in MUTATIONS}) == len(MUTATIONS)
    for name, path, edits, field, _ in MUTATIONS:
        if path is not None:
            text = open(os.path.join(HERE, "mutation_project", path)).read()
            assert all(text.count(old) == 1 for old, _ in edits), name


@pytest.mark.slow
@pytest.mark.cluster
def test_mutation_corpus(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(os.path.join(HERE, "mutation_project"), project)
    root = tmp_path / "cache"
    batches = [MUTATIONS[0::2], MUTATIONS[1::2]]
    runs = []
    for seed, batch in zip(("0", "4242"), batches):
        spec = tmp_path / f"mutations-{seed}.json"
        spec.write_text(json.dumps(as_json(batch)))
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONDONTWRITEBYTECODE": "1"}
        out = subprocess.run([sys.executable, os.path.join(HERE, "mutation_driver.py"), str(project), str(root),
                              str(spec)], capture_output=True, text=True, env=env, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first["keys"] == second["keys"]  # another process, another PYTHONHASHSEED
    assert second["baseline_computed"] == {"A": 0, "B": 0}  # ... and the entries the first one stored are hit
    results = first["results"] + second["results"]
    assert len(results) == len(MUTATIONS)
    for r in results:
        if r.get("invalidates"):
            assert r["value_changed"], f"corpus error: {r['name']!r} does not change the value"
    wrong = {r["name"]: r["wrong"] for r in results if r["wrong"]}
    assert not wrong, json.dumps(wrong, indent=1)


UPGRADE = '''
import os, sys
from distributed import Client, LocalCluster
from connectome_dask import CacheToDisk, Source, meta
from connectome_dask.exceptions import PersistError, StaleCodeError

def write(site, version, factor):
    with open(os.path.join(site, "fakepkg", "__init__.py"), "w") as f:
        f.write(f"__version__ = {version!r}\\ndef f(x):\\n    return x * {factor}\\n")

if __name__ == "__main__":
    site, root = sys.argv[1], sys.argv[2]
    sys.path.insert(0, site)
    write(site, "1.0", 2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40,
                      env={"PYTHONPATH": os.pathsep.join([site, os.environ.get("PYTHONPATH", "")])}) as cluster, \\
            Client(cluster) as client:
        client.run(lambda: __import__("fakepkg").__version__)  # the workers import version 1.0
        write(site, "2.0", 3)  # upgraded while they run
        import fakepkg

        class Data(Source):
            @meta
            def ids():
                return [1, 2]

            def value(id):
                return fakepkg.f(id)

        ds = Data() >> CacheToDisk(root, "value")
        try:
            ds.persist(client, progress=False)
        except PersistError as e:
            errors = set(map(type, e.report.failed.values()))
            print("persist", sorted(t.__name__ for t in errors), str(next(iter(e.report.failed.values()))))
        try:
            client.compute(ds.value.delayed(1)).result()
        except StaleCodeError as e:
            print("delayed StaleCodeError")
        print("stored", sorted(f for _, _, fs in os.walk(root) for f in fs))
        print("eager", ds.value(1))
'''


@pytest.mark.cluster
def test_a_worker_that_kept_an_old_package_version_refuses_to_store(tmp_path):
    """The second line: code that travels by reference (an installed package) and was upgraded
    while the workers kept the old version imported: the task raises StaleCodeError and stores
    nothing; the client's own (eager) computation is right."""
    site = tmp_path / "site-packages"
    (site / "fakepkg").mkdir(parents=True)
    root = tmp_path / "cache"
    script = tmp_path / "upgrade.py"
    script.write_text(UPGRADE)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, str(script), str(site), str(root)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    persist = next(line for line in lines if line.startswith("persist"))
    assert "['StaleCodeError']" in persist
    assert "'fakepkg'" in persist and "fakepkg@2.0" in persist and "fakepkg@1.0" in persist
    assert "restart" in persist
    assert "delayed StaleCodeError" in lines
    assert "stored ['connectome_dask.json']" in lines, lines  # the root's metadata file, no entry
    assert "eager 3" in lines


NOT_IMPORTABLE = '''
import os, sys
from distributed import Client, LocalCluster
from connectome_dask import CacheToDisk

if __name__ == "__main__":
    project, root = sys.argv[1], sys.argv[2]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=40) as cluster, Client(cluster) as client:
        sys.path.insert(0, project)  # the client only (worker processes copy the sys.path they start with)
        import onlyhere

        print("importable on workers", client.run(lambda: __import__("importlib.util").util.find_spec("onlyhere")
                                                  is not None))
        ds = onlyhere.Data() >> CacheToDisk(root, "value")
        print("persist", ds.persist(client, progress=False))
        print("delayed", client.compute(ds._drop_cache().value.delayed(2)).result())
        print("eager", ds.value(2))
'''


@pytest.mark.cluster
def test_workers_need_not_import_the_users_modules(tmp_path):
    """What is hashed by value travels by value: a pipeline declared in a module only the client can
    import runs on the cluster (persist and ``.delayed``)."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "onlyhere.py").write_text(textwrap.dedent('''
        import helpers_here
        from connectome_dask import Source, meta

        class Data(Source):
            @meta
            def ids():
                return [1, 2, 3]

            def value(id):
                return helpers_here.scale(id) + helpers_here.OFFSET
    '''))
    (project / "helpers_here.py").write_text("OFFSET = 100\n\n\ndef scale(x):\n    return 3 * x\n")
    script = tmp_path / "not_importable.py"
    script.write_text(NOT_IMPORTABLE)
    out = subprocess.run([sys.executable, str(script), str(project), str(tmp_path / "cache")], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("importable on workers") and "True" not in lines[0]
    assert lines[1:] == ["persist persist: 3 computed, 0 already cached, 0 failed", "delayed 106", "eager 106"]
