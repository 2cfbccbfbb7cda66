"""`persist` on one engine: keys of this call only, a report that counts what is really stored, crash
isolation, typed errors for bad input. Real LocalCluster processes; user calls counted through files."""

import contextlib
import importlib
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
import warnings

import numpy as np
import pytest

from connectome_dask import CacheToDisk, CacheToRam, Source, Transform
from connectome_dask.cache.hdf5 import HDF5Store
from connectome_dask.exceptions import (CacheWarning, ConfigError, InvalidArgument, NothingToPersist,
                                        PersistError)
from persist_layers import Crashing, Crop, Normalize, Scans, pipeline

pytestmark = pytest.mark.cluster

MODULE = textwrap.dedent("""
    import os
    import time
    from connectome_dask import CacheToDisk, Source, meta

    FACTOR = {factor}

    class Numbers(Source):
        _log: str

        @meta
        def ids():
            return [f"n{{i}}" for i in range(6)]

        def value(key, _log):
            with open(_log, "a") as f:
                f.write(f"value {{FACTOR}}\\n")
            time.sleep(0.2)
            if os.path.exists(f"{{_log}}.{{key}}.broken"):  # a fault outside the code: the same keys
                raise ValueError(f"broken {{key}}")
            return FACTOR * int(key[1:])

    def pipeline(log, root):
        return Numbers(log=log) >> CacheToDisk.simple("value", root=root)
""")


@pytest.fixture
def edited(tmp_path, monkeypatch):
    """``edit(factor, broken)``: the helper module on disk, (re)written and imported again."""
    name = f"numbers_{uuid.uuid4().hex[:8]}"
    monkeypatch.syspath_prepend(str(tmp_path))

    def edit(factor=2):
        (tmp_path / f"{name}.py").write_text(MODULE.format(factor=factor))
        shutil.rmtree(tmp_path / "__pycache__", ignore_errors=True)
        importlib.invalidate_caches()
        module = sys.modules.get(name)
        return importlib.reload(module) if module else importlib.import_module(name)

    yield edit
    sys.modules.pop(name, None)


def test_a_held_job_never_answers_a_later_call(client, counter, cache_root, edited):
    module = edited(factor=2)
    job = module.pipeline(counter.path, cache_root).persist(client, wait=False)
    again = module.pipeline(counter.path, cache_root).persist(client, wait=False)  # the same pipeline, meanwhile
    module = edited(factor=3)  # the workers imported nothing; the code travels with the tasks
    report = module.pipeline(counter.path, cache_root).persist(client, progress=False)
    assert (report.computed, report.cached, report.failed) == (6, 0, {})
    assert {f.key for f in job.futures}.isdisjoint(f.key for f in again.futures)
    first, second = job.result(timeout=60), again.result(timeout=60)
    assert first.computed + first.cached == 6 and second.computed + second.cached == 6 and first.computed >= 1
    with open(counter.path) as f:
        lines = f.read().split("\n")
    assert lines.count("value 3") == 6  # the edited pipeline's work, reported by its own call
    assert lines.count("value 2") == first.computed + second.computed  # each call reported only its own work
    assert [module.pipeline(counter.path, cache_root).value(k) for k in ("n1", "n5")] == [3, 15]
    assert open(counter.path).read().count("value") == lines.count("value 2") + 6  # read back, not computed
    report = module.pipeline(counter.path, cache_root).persist(client, progress=False)
    assert (report.computed, report.cached) == (0, 6)


def test_a_held_persist_error_never_answers_a_later_call(client, counter, cache_root, edited):
    module = edited(factor=2)
    open(f"{counter.path}.n2.broken", "w").close()
    with pytest.raises(PersistError) as held:
        module.pipeline(counter.path, cache_root).persist(client, progress=False)
    assert list(held.value.report.failed) == ["n2"] and held.value.report.computed == 5
    os.unlink(f"{counter.path}.n2.broken")  # fixed; `held` (and its traceback's frames) still alive
    report = module.pipeline(counter.path, cache_root).persist(client, progress=False)
    assert (report.computed, report.cached, report.failed) == (1, 5, {})
    assert module.pipeline(counter.path, cache_root).value("n2") == 4


@contextlib.contextmanager
def unwritable(root):
    """``root`` (a cache root already created) where no entry can be written: read-only for a user;
    for root (to whom permissions mean nothing), a read-only tmpfs mounted there, else a file where the
    field's folder would go."""
    if os.geteuid() != 0:
        os.chmod(root, 0o555)
        try:
            yield "chmod"
        finally:
            os.chmod(root, 0o755)
        return
    files = [e.path for e in os.scandir(root) if e.is_file()]  # the marker
    data = {os.path.basename(path): open(path, "rb").read() for path in files}
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", root], capture_output=True).returncode == 0:
        try:
            for name, content in data.items():
                with open(os.path.join(root, name), "wb") as f:
                    f.write(content)
            subprocess.run(["mount", "-o", "remount,ro", root], check=True, capture_output=True)
            yield "read-only mount"
        finally:
            subprocess.run(["umount", root], check=True, capture_output=True)
        return
    with open(os.path.join(root, "image"), "w"):
        pass
    try:
        yield "a file in the way"
    finally:
        os.unlink(os.path.join(root, "image"))


def test_an_unwritable_root_fails_every_id_and_warns_on_the_client(client, counter, cache_root):
    HDF5Store(cache_root)  # the root exists, with its marker
    ds = Scans(log=counter.path) >> CacheToDisk.simple("image", root=cache_root)
    with unwritable(cache_root) as how, warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        report = ds.persist(client, errors="report", progress=False)
    assert (report.computed, report.cached, len(report.failed)) == (0, 0, 8), how
    assert all(isinstance(e, OSError) for e in report.failed.values())
    ours = [w for w in seen if issubclass(w.category, CacheWarning)]
    assert len(ours) == 1 and "8 entries of field 'image' could not be stored" in str(ours[0].message)
    assert counter.count("image") == 8
    report = ds.persist(client, progress=False)  # writable again: every entry computed now
    assert (report.computed, report.cached) == (8, 0)
    with pytest.raises(PersistError, match="could not be stored|writable"), pytest.warns(CacheWarning):
        with unwritable(cache_root):
            (Scans(log=counter.path) >> CacheToDisk.simple("mask", root=cache_root)).persist(client, progress=False)


def test_a_full_disk_counts_what_is_stored(client, counter, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (the unwritable-root test covers write failures)")
    root = str(tmp_path / "small")
    os.makedirs(root)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", root], capture_output=True).returncode:
        pytest.skip("mount is not permitted here")
    try:
        big = Scans(log=counter.path) >> Transform(__inherit__=True, image=lambda image: np.resize(image, 2 ** 15))
        ds = big >> CacheToDisk.simple("image", root=root)  # 128 KiB entries: a few fit
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            report = ds.persist(client, errors="report", progress=False)
        stored = sum(1 for _ in HDF5Store(root).entries())
        assert report.computed == stored and 0 < stored < 8 and len(report.failed) == 8 - stored
        assert all(getattr(e, "errno", None) == 28 for e in report.failed.values())  # ENOSPC
        assert sum(issubclass(w.category, CacheWarning) for w in seen) == 1
    finally:
        subprocess.run(["umount", root], check=True, capture_output=True)


def test_a_second_persist_of_a_pipeline_ending_in_a_ram_cache(empty_ram, counter, cache_root):
    client = empty_ram  # the RAM caches of the workers hold nothing of earlier tests
    ram = CacheToRam()  # every field, as connectome users write it: `id` is not one to cache
    ds = pipeline(counter.path, cache_root) >> Crop(log=counter.path) >> ram
    first = ds.persist(client, progress=False)
    assert (first.computed, first.cached, first.in_ram, first.failed) == (8, 0, 8, {})
    second = ds.persist(client, progress=False)
    assert (second.computed, second.cached, second.failed) == (0, 8, {}) and second.in_ram <= 8
    assert counter.count("crop") == 8 + second.in_ram  # an entry found in a worker's RAM is not computed
    assert counter.count("normalize") == 8  # the disk cache below was read

    def fields():
        from connectome_dask.cache.memory import budget

        return sorted({field for _, field, _ in budget().order})

    # the cropped image is cached in RAM only; not `mask`, which the disk cache below holds, nor `id`
    assert set(sum(client.run(fields).values(), [])) == {"image"}
    assert ds.id("s03") == "s03" and "id" not in fields()  # nor by the eager path


def test_a_crashing_entry_fails_alone(counter, cache_root):
    import dask
    from distributed import Client, LocalCluster

    ds = Crashing(log=counter.path) >> CacheToDisk.simple("value", root=cache_root)
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                         silence_logs=50) as cluster, Client(cluster, set_as_default=False) as client:
        report = ds.persist(client, errors="report", progress=False)
        assert list(report.failed) == ["c17"] and report.computed + report.cached == 39, {
            key: f"{type(e).__name__}: {e}" for key, e in report.failed.items()}
        assert type(report.failed["c17"]).__name__ == "KilledWorker"
        assert sum(1 for _ in HDF5Store(cache_root).entries()) == 39  # what the report counts is stored
        with pytest.raises(PersistError, match="died while computing"):
            ds.persist(client, progress=False)
        again = ds.persist(client, ids=[k for k in ds.ids if k != "c17"], progress=False)
        assert (again.computed, again.cached, again.failed) == (0, 39, {})


def test_results_lost_with_a_worker_before_they_are_gathered_are_not_failures(counter, cache_root):
    """The tasks of a ``wait=False`` job finished; a worker dies holding their results before the job
    is asked for them: its entries are stored, so the report counts them, none failed."""
    import signal
    import time

    from distributed import Client, LocalCluster

    ds = pipeline(counter.path, cache_root)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=50) as cluster, Client(cluster, set_as_default=False) as client:
        job = ds.persist(client, wait=False)
        deadline = time.monotonic() + 60
        while not all(f.status == "finished" for f in job.futures) and time.monotonic() < deadline:
            time.sleep(0.02)
        holders = {w for ws in client.who_has(job.futures).values() for w in ws}
        victim = sorted(holders)[0]
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        report = job.result(progress=False, timeout=60)
        assert report.failed == {} and report.computed + report.cached == 8
        assert sum(1 for field, *_ in HDF5Store(cache_root).entries() if field == "image") == 8


def test_a_corrupt_entry_is_recomputed_not_counted_cached(client, counter, cache_root):
    ds = pipeline(counter.path, cache_root)
    ds.persist(client, progress=False)
    path = next(p for field, _, p, _, _ in HDF5Store(cache_root).entries() if field == "image")
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) - 100)
        f.write(b"\xff" * 50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)
        report = ds.persist(client, progress=False)
    assert (report.computed, report.cached) == (1, 7) and counter.count("normalize") == 9
    assert ds.persist(client, progress=False).cached == 8


def test_fields_that_are_not_cached_raise_before_anything_runs(counter, cache_root):
    ds = pipeline(counter.path, cache_root)
    with pytest.raises(NothingToPersist, match=r"\['imgae'\] are not fields.*\['image', 'mask'\]") as info:
        ds.persist(fields=["imgae"])
    assert isinstance(info.value, ValueError)
    with pytest.raises(NothingToPersist, match=r"\['id'\] are not cached"):
        ds.persist(fields="id")
    with pytest.raises(NothingToPersist, match="no cache layer"):
        Scans(log=counter.path).persist()
    with pytest.raises(NothingToPersist, match=r"RAM only.*ram=True"):
        (Scans(log=counter.path) >> CacheToRam()).persist()
    assert counter.count() == 0


def test_ids_are_validated_and_counted_once(client, counter, cache_root):
    ds = pipeline(counter.path, cache_root)
    with pytest.raises(InvalidArgument, match=r"ids\[1\] is \['s01', 's02'\], a list"):
        ds.persist(client, ids=["s00", ["s01", "s02"]], progress=False)
    with pytest.raises(InvalidArgument, match="one str"):
        ds.persist(client, ids="s01", progress=False)
    assert counter.count() == 0  # nothing ran
    report = ds.persist(client, ids=["s01", "s02", "s01", "s02", "s01"], progress=False)
    assert (report.computed, report.cached, report.failed) == (2, 0, {}) and counter.count("normalize") == 2


@pytest.mark.parametrize("value", ["0", "-1", "abc", "2.5"])
def test_a_bad_worker_count_is_a_typed_error_not_a_hang(value, counter, cache_root, monkeypatch):
    from connectome_dask.cluster import close_embedded

    close_embedded()  # the embedded cluster starts afresh, reading the variable
    monkeypatch.setenv("CONNECTOME_DASK_WORKERS", value)
    with pytest.raises(ConfigError, match=f"CONNECTOME_DASK_WORKERS='{value}'.*whole number >= 1") as info:
        pipeline(counter.path, cache_root).persist(progress=False)
    assert isinstance(info.value, ValueError) and counter.count() == 0
