"""connectome_dask.allocator: freed arrays are reused while persist tasks run, and not after."""

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap settings")

SCRIPT = textwrap.dedent("""
    import concurrent.futures, json, sys
    sys.path.insert(0, sys.argv[1])
    import persist_layers
    from connectome_dask import allocator

    # in a task thread, as on a dask worker (other threads allocate from other glibc arenas)
    task_thread = concurrent.futures.ThreadPoolExecutor(1)
    mapped_arrays = lambda: task_thread.submit(persist_layers.mapped_arrays).result()
    mapped = {"start": mapped_arrays()}
    allocator.reuse_freed_memory()
    allocator.reuse_freed_memory()  # idempotent
    mapped["reuse"] = mapped_arrays()
    mapped["restored"] = allocator.restore()
    mapped["after"] = mapped_arrays()
    mapped["restored_again"] = allocator.restore()
    print(json.dumps(mapped))
""")


def run(env):
    import json
    import os

    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # a nanny here sets them
    out = subprocess.run([sys.executable, "-c", SCRIPT, os.path.dirname(__file__)], capture_output=True,
                         text=True, check=True, env={**inherited, **env})
    return json.loads(out.stdout)


def test_a_worker_started_like_dask_reuses_then_restores():
    mapped = run({"MALLOC_TRIM_THRESHOLD_": "65536"})  # what dask's nanny sets for its workers
    assert mapped["start"] >= 15  # of 20 arrays: mapped afresh, unmapped when freed
    assert mapped["reuse"] <= 1
    assert mapped["restored"] is True and mapped["restored_again"] is False
    assert mapped["after"] >= 15


def test_a_process_with_adaptive_settings_is_left_alone():
    mapped = run({})
    assert mapped["restored"] is False  # reuse_freed_memory changed nothing
    assert mapped["reuse"] <= 1 and mapped["after"] <= 1  # glibc adapts by itself
