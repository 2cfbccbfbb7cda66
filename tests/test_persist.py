"""`pipeline.persist(client)`: parallel cache population on real clusters."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from connectome_dask import CacheToDisk, ram_usage
from connectome_dask.exceptions import PersistError
from persist_layers import Churn, Scans, mapped_arrays, pipeline, ram_pipeline

pytestmark = pytest.mark.cluster


def test_persist_fills_the_disk_cache_and_is_idempotent(client, counter, cache_root):
    ds = pipeline(counter.path, cache_root)
    report = ds.persist(client, progress=False)
    assert (report.computed, report.cached, report.failed) == (8, 0, {})
    assert counter.count("image") == 8 and counter.count("mask") == 8
    counter.reset()
    again = pipeline(counter.path, cache_root)
    report = again.persist(client, progress=False)
    assert (report.computed, report.cached) == (0, 8)
    assert counter.count() == 0  # nothing upstream of a hit ran
    for key in again.ids:
        np.testing.assert_array_equal(again.image(key), pipeline(counter.path, cache_root).image(key))
    assert counter.count() == 0
    plain = Scans(log=counter.path)
    np.testing.assert_array_equal(again.mask("s05"), plain.mask("s05"))


def test_subsets_of_ids_and_fields(client, counter, cache_root):
    ds = pipeline(counter.path, cache_root)
    report = ds.persist(client, ids=["s01", "s02"], fields=["mask"], progress=False)
    assert report.computed == 2 and counter.count("mask") == 2 and counter.count("image") == 0
    report = ds.persist(client, ids=["s01", "s02", "s03"], progress=False)
    assert (report.computed, report.cached) == (3, 0)  # s01/s02 still missed their image
    assert counter.count("mask") == 3


def test_failures_are_reported_per_id_and_others_stored(client, counter, cache_root):
    ds = pipeline(counter.path, cache_root, fail=("s02", "s05"))
    report = ds.persist(client, errors="report", progress=False)
    assert report.computed == 6 and report.cached == 0
    assert sorted(report.failed) == ["s02", "s05"]
    assert all(isinstance(e, ValueError) and "bad scan" in str(e) for e in report.failed.values())
    with pytest.raises(PersistError) as info:
        ds.persist(client, progress=False)
    assert isinstance(info.value, RuntimeError)
    assert info.value.report.cached == 6 and sorted(info.value.report.failed) == ["s02", "s05"]


def test_wait_false_returns_futures(client, counter, cache_root):
    from distributed import wait

    job = pipeline(counter.path, cache_root).persist(client, wait=False)
    assert len(job.futures) == 8
    with client.as_current():
        wait(job.futures)
    report = job.result(timeout=60)
    assert report.computed == 8


def _ram_entries(client):
    return sum(usage["entries"] for usage in ram_usage(client).values())


def test_ram_caches_of_disk_cached_fields_are_filled_only_when_asked(empty_ram, counter, cache_root):
    # CacheToDisk >> CacheToRam of the same field: the RAM would hold what the disk holds, on whichever
    # worker computed the entry, for no one; persist passes it through unless ram=True
    client = empty_ram
    ds = ram_pipeline(counter.path, cache_root)
    report = ds.persist(client, progress=False)
    assert (report.computed, report.in_ram) == (8, 0) and _ram_entries(client) == 0
    report = ds.persist(client, progress=False, ram=True)
    assert (report.computed, report.cached, report.in_ram) == (0, 8, 8)
    assert _ram_entries(client) == 8
    assert counter.count("image") == 8  # the RAM was filled from the disk cache


def test_progress_bar_is_drawn(client, counter, cache_root, capsys):
    pipeline(counter.path, cache_root).persist(client)
    err = capsys.readouterr().err
    assert "persist" in err and "8/8" in err


def test_tasks_report_entries_done_while_they_run(client, counter, cache_root):
    # a batch of several slow entries moves the progress bar per entry, not once at its end
    from connectome_dask.batches import Batches
    from connectome_dask.persist import PROGRESS_TOPIC, PersistBatch, cached_nodes

    _, targets, _ = cached_nodes(pipeline(counter.path, cache_root, sleep=0.6))
    seen = []
    client.subscribe_topic(PROGRESS_TOPIC, lambda event: seen.append(tuple(event[1])))
    try:
        task = Batches(targets, PersistBatch).task
        future = client.submit(task, [("s00",), ("s01",), ("s02",)], [frozenset()] * 3, key="batch-3", pure=False)
        assert [status for status, *_ in future.result(timeout=60)] == ["computed"] * 3
        deadline = time.time() + 10
        while len(seen) < 2 and time.time() < deadline:
            time.sleep(0.05)
    finally:
        client.unsubscribe_topic(PROGRESS_TOPIC)
    assert seen == [("batch-3", 1), ("batch-3", 2)]  # the end of the task reports the last one


def test_batches_shrink_towards_the_end_and_stay_few():
    from connectome_dask.persist import batches_of

    for n, slots in ((64, 2), (1000, 2), (10000, 2), (10000, 64), (3, 8)):
        ids = list(range(n))
        sizes = [len(b) for b in batches_of(ids, [], slots)]
        assert sum(batches_of(ids, [], slots), []) == ids
        assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 1
        assert sizes[0] <= max(8, n // (50 * slots))
        assert n < 64 or len(sizes) < n / 2  # not one task per entry


def test_killed_worker_is_survived(client, counter, cache_root, tmp_path):
    marker = str(tmp_path / "died")
    report = pipeline(counter.path, cache_root, die_once=marker).persist(client, errors="report", progress=False)
    assert os.path.exists(marker)
    assert report.failed == {}
    # tasks whose results died with the worker are rerun and find their entries stored
    assert report.computed + report.cached == 8 and report.computed >= 1
    client.wait_for_workers(2, timeout=60)
    again = pipeline(counter.path, cache_root, die_once=marker).persist(client, progress=False)
    assert (again.computed, again.cached) == (0, 8)


def test_embedded_default(counter, cache_root):
    ds = pipeline(counter.path, cache_root)
    report = ds.persist(progress=False)
    assert report.computed == 8
    assert ds.persist(progress=False).computed == 0
    from connectome_dask.cluster import embedded_client

    assert embedded_client().scheduler_info()["services"].get("dashboard") != 8787  # left to the user's cluster


FORKED_STATE = textwrap.dedent("""
    import os, sys, threading, time, types
    from connectome_dask import cluster
    if __name__ == "__main__":  # a module with no file, made after the start: only a forked child has it
        if os.environ.get("START_A_THREAD"):  # a thread of the script's own: forking it would be unsafe
            threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
        sys.modules["only_in_this_process"] = types.ModuleType("only_in_this_process")
        print(sorted(set(cluster.embedded_client().run(lambda: "only_in_this_process" in sys.modules).values())))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork and the fork server are Linux defaults")
def test_embedded_workers_are_forked_from_a_process_without_threads_else_from_a_fork_server(tmp_path):
    # a process that already ran dask work has threads and pools that a child forked from it cannot
    # use: there the workers come from a clean fork server and share nothing with the script; a script
    # that started no thread (the first persist of `python job.py`) is forked: a fast start, its imports
    script = tmp_path / "state.py"
    script.write_text(FORKED_STATE)
    found = {}
    for method, thread in (("", ""), ("", "1"), ("forkserver", ""), ("fork", "1"), ("frok", "")):
        env = {k: v for k, v in os.environ.items() if k != "CONNECTOME_DASK_START_METHOD"}
        env.update(CONNECTOME_DASK_WORKERS="1", START_A_THREAD=thread)
        if method:
            env["CONNECTOME_DASK_START_METHOD"] = method
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
        found[method, thread] = out.stdout.strip() or out.stderr.strip().splitlines()[-1]
    assert found["", ""] == "[True]" and found["", "1"] == "[False]"
    assert found["forkserver", ""] == "[False]" and found["fork", "1"] == "[True]"
    assert "ConfigError" in found["frok", ""] and "fork, forkserver or spawn" in found["frok", ""]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap settings")
def test_workers_reuse_freed_arrays_while_persist_runs(cache_root):
    # dask starts workers with MALLOC_TRIM_THRESHOLD_ set: each array over 128 KiB is mapped afresh
    # and unmapped when freed; persist tasks reuse freed arrays, and the finished job put the start-up
    # settings back on every worker (test_allocator checks what restoring does). A fresh worker, the
    # task thread: restoring cannot empty the free lists of an arena that already reused memory.
    from distributed import Client, LocalCluster

    from connectome_dask.allocator import restore

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=40) as cluster, Client(cluster, set_as_default=False) as client:
        assert client.submit(mapped_arrays, pure=False).result() >= 15  # of 20
        ds = Churn() >> CacheToDisk.simple("mapped", root=cache_root)
        assert ds.persist(client, progress=False).computed == 4
        assert max(ds.mapped(key) for key in ds.ids) <= 1
        assert set(client.run(restore).values()) == {False}  # nothing left to restore


@pytest.mark.slow
def test_dask_scheduler_and_worker_processes(counter, cache_root, tmp_path):
    scheduler_file = str(tmp_path / "scheduler.json")
    env = {**os.environ}
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", "0", "--no-dashboard", "--scheduler-file", scheduler_file], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--nthreads", "1",
                                           "--no-dashboard", "--scheduler-file", scheduler_file], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        deadline = time.time() + 60
        while not os.path.exists(scheduler_file) and time.time() < deadline:
            time.sleep(0.2)
        with Client(scheduler_file=scheduler_file, set_as_default=False) as c:
            c.wait_for_workers(2, timeout=60)
            report = pipeline(counter.path, cache_root).persist(c, progress=False)
            assert report.computed == 8
            assert len({w for w in c.scheduler_info()["workers"]}) == 2
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


@pytest.mark.slow
def test_ctrl_c_cancels_and_leaves_the_cache_valid(counter, cache_root, tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from persist_layers import Scans, Normalize
        from connectome_dask import CacheToDisk
        if __name__ == "__main__":
            import signal
            # start like a script run from a shell: the default SIGINT handler, SIGINT not blocked
            # (the test process's own signal state, changed by the tests before, must not leak in)
            inherited = signal.getsignal(signal.SIGINT), sorted(signal.pthread_sigmask(signal.SIG_BLOCK, []))
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
            ds = Scans(log={counter.path!r}, n=40) >> Normalize(log={counter.path!r}, sleep=0.3) \\
                >> CacheToDisk.simple("image", root={cache_root!r})
            print("started", inherited, flush=True)
            ds.persist(progress=False)
    """)
    (tmp_path / "job.py").write_text(script)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "job.py")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "CONNECTOME_DASK_WORKERS": "2"})
    started = proc.stdout.readline().strip()
    assert started.startswith("started"), started
    deadline = time.time() + 60
    while counter.count("normalize") < 4 and time.time() < deadline:
        time.sleep(0.1)
    seen, state = counter.count("normalize"), _signal_state(proc.pid)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    # before the job reset its signal state, 3 of ~20 full-suite runs saw it finish with exit code 0,
    # ignoring the signal (never alone): the message says what it inherited and its threads' masks
    assert proc.returncode != 0 and "KeyboardInterrupt" in err, (proc.returncode, started, seen, state, out,
                                                                 err[-3000:])
    done = counter.count("normalize")
    assert done < 40  # the remaining work was cancelled
    ds = Scans(log=counter.path, n=40) >> pipeline_tail(counter.path, cache_root)
    report = ds.persist(progress=False, errors="raise")
    assert report.computed + report.cached == 40 and report.cached >= 1


def _signal_state(pid):
    """Signal masks of a process and its threads (Linux), for the failure message."""
    found = {}
    for task in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else []:
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                found[task] = {k: v.strip() for k, v in (line.split(":", 1) for line in f)
                               if k in ("Name", "SigBlk", "SigIgn", "SigCgt", "SigPnd", "ShdPnd")}
        except OSError:
            pass
    return found


def pipeline_tail(log, root):
    from connectome_dask import CacheToDisk
    from persist_layers import Normalize

    return Normalize(log=log, sleep=0.3) >> CacheToDisk.simple("image", root=root)
