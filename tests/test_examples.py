"""The examples and the README's code blocks run as written."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, **kwargs):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=600, **kwargs)


@pytest.mark.slow
def test_main_job_persists_reads_back_and_draws(tmp_path):
    root = tmp_path / "cache"
    out = run("examples/01_persist_imaging.py", str(root))
    assert out.returncode == 0, out.stderr
    assert re.search(r"persist: (\d+) computed, 0 already cached, 0 failed", out.stdout)
    png = os.path.join(ROOT, "examples", "output", "montage.png")
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    again = run("examples/01_persist_imaging.py", str(root))
    assert re.search(r"persist: 0 computed, \d+ already cached", again.stdout), again.stdout
    listing = run("-m", "connectome_dask", "cache", str(root), "list")
    assert "image:" in listing.stdout and "mask:" in listing.stdout


def test_inverse_example():
    out = run("examples/03_inverse.py")
    assert out.returncode == 0, out.stderr
    assert "prediction mapped back to (48, 48, 24)" in out.stdout


@pytest.mark.slow
def test_local_cluster_example(tmp_path):
    out = run("examples/02_local_cluster.py", str(tmp_path / "cache"))
    assert out.returncode == 0, out.stderr
    assert "computed through dask" in out.stdout


def test_readme_python_blocks_run_in_order(tmp_path):
    with open(os.path.join(ROOT, "README.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    assert len(blocks) >= 4
    script = tmp_path / "readme.py"
    body = "\n".join(blocks)
    script.write_text("import os\nos.environ['CONNECTOME_DASK_WORKERS'] = '2'\n" + body)
    out = run(str(script))
    assert out.returncode == 0, out.stderr
    assert "computed" in out.stdout
