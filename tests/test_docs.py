"""The documentation runs as written: docstring examples (doctest), and every ``python`` block of the README
and of ``docs/*.md``, plus their ``python -m connectome_dask`` command lines."""

import doctest
import glob
import importlib
import os
import pkgutil
import re
import shlex
import subprocess
import sys

import pytest

import connectome_dask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
MODULES = sorted(m.name for m in pkgutil.walk_packages(connectome_dask.__path__, "connectome_dask.")
                 if not m.name.endswith("__main__"))


def numbered_blocks(page, language):
    """``(line, code)`` of each ``language`` block of ``page``, ``line`` being that of its opening fence."""
    with open(os.path.join(ROOT, page)) as f:
        text = f.read()
    return [(text.count("\n", 0, m.start()) + 1, m.group(1))
            for m in re.finditer(rf"^```{language}\n(.*?)^```", text, re.S | re.M)]


def blocks(page, language):
    return [code for _, code in numbered_blocks(page, language)]


def run(args, cwd, timeout=600):
    """Run ``args`` in the folder ``cwd``, which also holds its temporary files (``tempfile.mkdtemp()`` cache
    roots), so that pytest removes them."""
    env = dict(os.environ, CONNECTOME_DASK_WORKERS="2", TMPDIR=str(cwd), PYTHONPATH=os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)
    assert out.returncode == 0, f"{args}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    return out.stdout


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_every_public_name_is_documented():
    for name in connectome_dask.__all__:
        obj = getattr(connectome_dask, name)
        assert (getattr(obj, "__doc__", None) or "").strip(), f"{name} has no docstring"


def test_there_are_runnable_examples():
    found = sum(doctest.testmod(importlib.import_module(n)).attempted for n in MODULES)
    assert found >= 10


@pytest.mark.parametrize("page", PAGES)
def test_python_blocks_and_cache_commands_run_in_order(page, tmp_path):
    """The page's python blocks, in order, as one interactive session (a notebook), in an empty folder;
    then its ``python -m connectome_dask ...`` command lines against what the blocks created."""
    code = blocks(page, "python")
    commands = [line.split("#")[0].strip() for block in blocks(page, "bash") for line in block.splitlines()
                if line.startswith("python -m connectome_dask")]
    assert code or page != "README.md"
    if code:  # run like a notebook: no __main__ file for the worker processes to re-execute
        session = tmp_path / "session.py"
        session.write_text("\n".join(code))
        run([sys.executable, "-c", f"exec(compile(open({str(session)!r}).read(), {str(session)!r}, 'exec'))"],
            tmp_path)
    for command in commands:
        run([sys.executable, *shlex.split(command)[1:]], tmp_path)


def alone(page, line, code):
    """The test case of one block, named ``page:line``; a block that starts a distributed cluster is marked
    ``cluster``."""
    statements = "\n".join(row.split("#")[0] for row in code.splitlines())
    starts_cluster = ".persist(" in statements or "LocalCluster(" in statements
    return pytest.param(code, id=f"{page}:{line}", marks=[pytest.mark.cluster] if starts_cluster else [])


@pytest.mark.parametrize("code", [alone(page, *block) for page in PAGES for block in numbered_blocks(page, "python")])
def test_each_python_block_runs_alone_as_a_script(code, tmp_path):
    """Each block, as a new user pastes it into a file in an empty folder and runs it: its own interpreter,
    the script as ``__main__`` (so worker processes that import it again see the main guard)."""
    script = tmp_path / "snippet.py"
    script.write_text(code)
    run([sys.executable, str(script)], tmp_path, timeout=180)


def test_readme_example_is_a_script_that_persists_once(tmp_path):
    """The first README block, saved as a script: the first run computes every entry, the second none."""
    script = tmp_path / "example.py"
    script.write_text(blocks("README.md", "python")[0])
    first = run([sys.executable, str(script)], tmp_path)
    assert "persist: 8 computed, 0 already cached, 0 failed\n(64, 64, 32)" in first
    second = run([sys.executable, str(script)], tmp_path)
    assert "persist: 0 computed, 8 already cached, 0 failed" in second


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_point_to_files(page):
    with open(os.path.join(ROOT, page)) as f:
        links = re.findall(r"\]\(([^)#:]+)\)", f.read())
    for link in links:
        assert os.path.exists(os.path.join(ROOT, os.path.dirname(page), link)), f"{page}: broken link {link}"


def test_readme_connectome_names_match_the_package():
    """The names the README says are available exist, and those it says are not yet available do not
    (so the README is updated when they land)."""
    with open(os.path.join(ROOT, "README.md")) as f:
        section = f.read().split("## Coming from connectome", 1)[1].split("\n## ", 1)[0]
    same, rest = section.split("Code written for", 1)
    missing = rest.split("Not available yet:", 1)[1].split("\n\n", 1)[0]
    for name in re.findall(r"`([A-Za-z_][\w.]*)`", same):
        if name.startswith("_") or name.startswith("CacheToRam."):
            owner = connectome_dask.CacheToRam if name.startswith("CacheToRam.") else connectome_dask.Chain
            assert hasattr(owner, name.split(".")[-1]), name
        elif name.startswith("connectome_dask."):
            importlib.import_module(name)
        else:
            assert hasattr(connectome_dask, name), name
    for name in re.findall(r"`(\w+)`", missing):
        assert not hasattr(connectome_dask, name), f"{name} is available now: update the README"
