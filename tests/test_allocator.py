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
    churn_faults = lambda: task_thread.submit(persist_layers.churn_faults).result()
    faults = {"start": churn_faults()}
    allocator.reuse_freed_memory()
    allocator.reuse_freed_memory()  # idempotent
    faults["reuse"] = churn_faults()
    faults["restored"] = allocator.restore()
    faults["after"] = churn_faults()
    faults["restored_again"] = allocator.restore()
    print(json.dumps(faults))
""")


def run(env):
    import json
    import os

    out = subprocess.run([sys.executable, "-c", SCRIPT, os.path.dirname(__file__)], capture_output=True,
                         text=True, check=True, env={**os.environ, **env})
    return json.loads(out.stdout)


ONE_ARRAY = (4 << 20) // 4096  # page faults to touch one fresh 4 MB array


def test_a_worker_started_like_dask_reuses_then_restores():
    faults = run({"MALLOC_TRIM_THRESHOLD_": "65536"})  # what dask's nanny sets for its workers
    assert faults["start"] > 5 * ONE_ARRAY  # (most) arrays mapped afresh
    assert faults["reuse"] < 3 * ONE_ARRAY
    assert faults["restored"] is True and faults["restored_again"] is False
    assert faults["after"] > 5 * ONE_ARRAY


def test_a_process_with_adaptive_settings_is_left_alone():
    faults = run({})
    assert faults["restored"] is False  # reuse_freed_memory changed nothing
    assert faults["reuse"] < 3 * ONE_ARRAY and faults["after"] < 3 * ONE_ARRAY  # glibc adapts by itself
