"""What a new user meets first: scripts run with ``python script.py`` on the embedded cluster (the missing
``__main__`` guard, the first call, exiting after ``wait=False``), environment errors, progress in logs."""

import os
import re
import subprocess
import sys
import textwrap

import pytest

from persist_layers import pipeline

pytestmark = pytest.mark.cluster

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


def run_script(tmp_path, body, workers=2):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(body))
    env = dict(os.environ, CONNECTOME_DASK_WORKERS=str(workers),
               PYTHONPATH=os.pathsep.join(p for p in (ROOT, TESTS, os.environ.get("PYTHONPATH")) if p))
    env.pop("CONNECTOME_DASK_START_METHOD", None)
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180, env=env,
                          cwd=tmp_path)


def test_a_script_without_the_main_guard_gets_one_clear_error(tmp_path, counter, cache_root):
    out = run_script(tmp_path, f"""
        from persist_layers import pipeline, log_call
        log_call({counter.path!r}, "toplevel")
        pipeline({counter.path!r}, {cache_root!r}).persist()
    """)
    assert out.returncode == 1
    assert "MainGuardError" in out.stderr and 'if __name__ == "__main__":' in out.stderr
    assert "job.py, line 4" in out.stderr
    assert "Nanny" not in out.stderr and "bootstrapping" not in out.stderr
    assert counter.count("toplevel") == 1  # no worker ran the script again
    assert counter.count("normalize") == 0


def test_the_guarded_script_computes_every_entry_once(tmp_path, counter, cache_root):
    # the first call of a process: the script computes entries itself while the workers start; each
    # entry is computed once, by the script or by a worker, and the report counts what happened
    out = run_script(tmp_path, f"""
        from persist_layers import pipeline
        if __name__ == "__main__":
            print(pipeline({counter.path!r}, {cache_root!r}).persist(progress=False))
            print(pipeline({counter.path!r}, {cache_root!r}).persist(progress=False))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["persist: 8 computed, 0 already cached, 0 failed",
                                       "persist: 0 computed, 8 already cached, 0 failed"]
    assert counter.count("normalize") == 8 and counter.count("image") == 8


def test_exiting_after_wait_false_warns_instead_of_a_scheduler_error(tmp_path, counter, cache_root):
    out = run_script(tmp_path, f"""
        from persist_layers import pipeline
        if __name__ == "__main__":
            job = pipeline({counter.path!r}, {cache_root!r}, sleep=0.5).persist(wait=False)
            print(repr(job))
    """)
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"<PersistJob running: 0/8 entries in finished tasks; \d+ tasks \(\d+ pending\)>\n", out.stdout)
    assert "cannot schedule new futures" not in out.stderr and "ERROR" not in out.stderr
    assert "RuntimeWarning: closing the embedded cluster with" in out.stderr and "not stored" in out.stderr


def test_persist_job_repr_counts_entries(client, counter, cache_root):
    job = pipeline(counter.path, cache_root).persist(client, wait=False)
    assert repr(job).startswith("<PersistJob ")
    job.result(timeout=60)
    assert repr(job) == f"<PersistJob done: 8/8 entries in finished tasks; {len(job.futures)} tasks " \
                        f"({len(job.futures)} finished)>"


def test_progress_in_a_log_is_a_line_every_few_seconds(client, counter, cache_root, capsys, monkeypatch):
    # pytest's captured stderr is not a terminal, as in CI logs or under nohup
    from connectome_dask import progress

    monkeypatch.setattr(progress, "LINE_EVERY", 0.3)
    pipeline(counter.path, cache_root, sleep=0.25).persist(client)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) >= 3
    assert all(re.fullmatch(r"persist: \d/8 entries \(\d+ %\), [\d.e+-]+ entries/s, \d+ s", line) for line in lines), lines
    assert lines[-1].startswith("persist: 8/8 entries (100 %)")


MODULE = """
import dataclasses


@dataclasses.dataclass(frozen=True)
class Scale:
    factor: float
"""


def test_a_module_missing_on_the_workers_is_named(tmp_path, cache_root, monkeypatch):
    from distributed import Client, LocalCluster

    from connectome_dask.hashing import installed

    from connectome_dask import CacheToDisk, Source, meta
    from connectome_dask.exceptions import PersistError

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=50) as cluster, Client(cluster, set_as_default=False) as client:
        # an installed package (it travels by reference) that only the client's environment has
        lab_only = tmp_path / "lab_only" / "site-packages"
        lab_only.mkdir(parents=True)
        (lab_only / "scaling.py").write_text(MODULE)
        sys.path.insert(0, str(lab_only))
        monkeypatch.setattr(installed, "_INSTALLED_MEMO", {})  # what is installed is read from sys.path once
        try:
            import scaling

            class Scans(Source):
                _scale: object

                @meta
                def ids():
                    return ["a", "b"]

                def value(key, _scale):
                    return len(key) * _scale.factor

            ds = Scans(scale=scaling.Scale(2.0)) >> CacheToDisk.simple("value", root=cache_root)
            with pytest.raises(PersistError) as info:
                ds.persist(client, progress=False)
        finally:
            sys.path.remove(str(lab_only))
            sys.modules.pop("scaling", None)
    message = str(info.value)
    assert "module 'scaling' is not importable on the worker tcp://" in message
    assert "Install 'scaling' on every worker" in message and "Fix the field" not in message
    assert sorted(info.value.report.failed) == ["a", "b"]


def test_a_scheduler_without_connectome_dask_is_named(tmp_path, cache_root):
    from distributed import Client

    from connectome_dask.exceptions import PersistError

    scheduler_file = tmp_path / "scheduler.json"
    code = "import sys; sys.modules['connectome_dask'] = None; from distributed.cli.dask_scheduler import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "--port", "0", "--dashboard-address", ":0",
                             "--scheduler-file", str(scheduler_file)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import time

        deadline = time.time() + 60
        while not scheduler_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        with Client(scheduler_file=str(scheduler_file), set_as_default=False, timeout=30) as client:
            with pytest.raises(PersistError) as info:
                pipeline(str(tmp_path / "log"), cache_root).persist(client, progress=False)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    message = str(info.value)
    assert "is not importable on the scheduler" in message and "connectome_dask" in message
    assert "Fix the field" not in message
