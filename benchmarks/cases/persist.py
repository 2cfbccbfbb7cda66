"""Cache population of the 64-volume dataset: volumes >> Zoom >> Normalize >> Crop >>
CacheToDisk.simple('image', 'mask'), each run into a fresh root.

* every lib: ``serial_s``, one process filling the cache id by id (raw: the same calls + h5py writes);
* raw and connectome: a fork ``multiprocessing.Pool(2)`` doing the same by hand (the best a connectome
  user does; for raw, what this machine allows right now);
* connectome_dask: ``ds.persist()`` on the embedded default (``speedup_persist_embedded``: the first call of
  the process, what ``python my_script.py`` gets: it starts the fork server and the workers, and the process
  computes entries itself until they are up; again into a new root; and once more on a restarted embedded cluster whose start is timed
  apart, ``embedded_startup_s``: fresh workers, as in the LocalCluster's cold run),
  ``ds.persist(client)`` on a 2-worker process ``LocalCluster`` (start-up timed apart; cold = the
  workers' first run, then warm; then on one started with ``cluster.QUIET_WORKERS``, ``_quiet``),
  and persist's per-id cost on the cheap pipeline with 10,000 ids; the cost of shipping the user's
  code by value with each task (``ship_*``).
Each parallel run is paired with a serial run of the same lib into a fresh root just before it (this
VM's CPU time per unit of work drifts by +-30 % within minutes), and its speedup is that serial time
divided by the parallel time; ``serial_s`` is the median of the serial runs.
"""

import multiprocessing
import os
import shutil
import statistics
import tempfile
import time

import h5py
import numpy as np

from common import args, not_available, report, steady_allocator, timed, volumes_folder
import pipelines

_FORKED = {}  # what the pool's children inherit


def raw_fill(data, out, key):
    for name, array in zip(("image", "mask"), pipelines.raw_preprocess(data, key)):
        with h5py.File(os.path.join(out, f"{name}-{key}.h5"), "w") as f:
            f.create_dataset(name, data=array)


def lib_fill(ds, key):
    ds.image(key), ds.mask(key)


def _forked_fill(key):
    _FORKED["fill"](key)


def fork_pool(fill, keys):
    _FORKED["fill"] = fill
    with multiprocessing.get_context("fork").Pool(2) as pool:
        for _ in pool.imap_unordered(_forked_fill, keys, chunksize=1):
            pass


def check(lib, data, root, key):
    """The stored entry is the raw computation."""
    ds = pipelines.preprocessing(lib, data, root)
    image, mask = pipelines.raw_preprocess(data, key)
    assert np.allclose(ds.image(key), image) and np.array_equal(ds.mask(key), mask)


def main():
    a = args()
    steady_allocator()  # serial runs reuse freed arrays like the workers do (see common.steady_allocator)
    n = 8 if a.quick else 64
    data = volumes_folder(n)
    keys = pipelines.volume_ids(data)
    pipelines.zoom(np.zeros((8, 8, 8), np.float32), 0.5)  # imports scipy.ndimage outside the timings
    work = tempfile.mkdtemp(prefix="cdask-bench-persist-")

    def root(name):
        return os.path.join(work, name)

    out, serials = {}, []

    def serial():
        """Seconds of one serial fill into a fresh root, kept for ``serial_s``."""
        folder = root(f"serial{len(serials)}")
        if a.lib == "raw":
            os.makedirs(folder)
            seconds, _ = timed(lambda: [raw_fill(data, folder, k) for k in keys])
        else:
            ds = pipelines.preprocessing(a.lib, data, folder)
            seconds, _ = timed(lambda: [lib_fill(ds, k) for k in keys])
            check(a.lib, data, folder, keys[0])
        serials.append(seconds)
        return seconds

    try:
        if a.lib == "raw":
            os.makedirs(root("pool"))
            before = serial()
            seconds, _ = timed(fork_pool, lambda k: raw_fill(data, root("pool"), k), keys)
            out["speedup_fork_pool"] = before / seconds
        elif a.lib == "connectome":
            before = serial()
            ds = pipelines.preprocessing(a.lib, data, root("pool"))
            ds.ids  # the root exists before the fork
            seconds, _ = timed(fork_pool, lambda k: lib_fill(ds, k), keys)
            out["speedup_fork_pool"] = before / seconds
            check(a.lib, data, root("pool"), keys[-1])
        else:
            for run in ("embedded", "embedded_warm", "embedded_restarted"):
                metric = f"speedup_persist_{run}"
                try:
                    before = serial()
                    if run == "embedded_restarted":  # fresh workers, their start timed apart
                        from connectome_dask import cluster

                        cluster.close_embedded()
                        out["embedded_startup_s"], _ = timed(cluster.embedded_client)
                    seconds, result = timed(pipelines.preprocessing(a.lib, data, root(run)).persist, progress=False)
                    assert result.computed == n, result
                    out[metric] = before / seconds
                    check(a.lib, data, root(run), keys[-1])
                except Exception as error:
                    out[metric] = not_available(error)
            cheap_persist(a, "disk_embedded", lambda: c_disk(a, root("cheap_embedded")), None, out)
            shipping_cost(pipelines.preprocessing(a.lib, data, root("shipping")), keys, out)
            try:
                persist_on_cluster(a, data, keys, root, serial, out)
            except Exception as error:
                out["speedup_persist_local_cluster"] = not_available(error)
        out = {"serial_s": statistics.median(serials), **out}
        return report(out, a.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def shipping_cost(ds, keys, out):
    """What sending the user's code by value costs a persist task (``connectome_dask.shipping``): the
    bytes of the task function each task carries (``ship_bytes_per_task``; by reference, as before:
    ``_by_reference``), and the milliseconds to build it (once per call, on the client), to unpickle it
    and to check its code (once per worker)."""
    import pickle

    import cloudpickle

    from connectome_dask import shipping
    from connectome_dask.batches import Batches
    from connectome_dask.persist import PersistBatch, batches_of, cached_nodes

    targets = tuple(cached_nodes(ds)[1])
    out["ship_tasks"] = len(batches_of(keys, targets, slots=2))

    def thawed():
        shipping._THAWED.clear()
        return pickle.loads(payload)

    freeze = [timed(pickle.dumps, Batches(targets, PersistBatch).task) for _ in range(9)]
    payload = freeze[0][1]
    out["ship_bytes_per_task"] = len(payload)
    task = Batches(targets, PersistBatch).task
    out["ship_bytes_per_task_by_reference"] = len(cloudpickle.dumps((PersistBatch, task._args())))
    out["ship_freeze_ms"] = 1e3 * statistics.median(s for s, _ in freeze)
    out["ship_thaw_ms"] = 1e3 * statistics.median(timed(thawed)[0] for _ in range(9))
    out["ship_check_ms"] = 1e3 * statistics.median(timed(thawed()._check)[0] for _ in range(9))


def persist_on_cluster(a, data, keys, root, serial, out):
    """A 2-worker process LocalCluster with dask's default settings, then one started with the
    embedded cluster's ``QUIET_WORKERS`` settings (``_quiet`` metrics)."""
    import dask
    from distributed import Client, LocalCluster

    from connectome_dask.cluster import QUIET_WORKERS

    for suffix, settings in (("", {}), ("_quiet", QUIET_WORKERS)):
        start = time.perf_counter()
        with dask.config.set(settings), LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                                     dashboard_address=":0", silence_logs=40) as cluster, \
                Client(cluster) as client:
            out[f"cluster{suffix}_startup_s"] = time.perf_counter() - start
            for run in ("cold", "warm"):  # cold: the workers' first tasks also import scipy, h5py, ...
                before = serial()
                ds = pipelines.preprocessing(a.lib, data, root(f"cluster{suffix}_{run}"))
                seconds, result = timed(ds.persist, client, progress=False)
                assert result.computed == len(keys), result
                out[f"speedup_persist_local_cluster{suffix}_{run}"] = before / seconds
            check(a.lib, data, root(f"cluster{suffix}_warm"), keys[-1])
            if not suffix:
                for name, cache in (("disk_cluster", lambda: c_disk(a, root("cheap_cluster"))),
                                    ("ram_cluster", lambda: c_ram(a))):
                    cheap_persist(a, name, cache, client, out, ram=name.startswith("ram"))


def c_disk(a, root):
    return pipelines.load(a.lib).CacheToDisk.simple("value", root=root)


def c_ram(a):
    return pipelines.load(a.lib).CacheToRam(["value"])


def cheap_persist(a, name, cache, client, out, ram=False):
    """Per-id cost of persist itself: cheap fields, so the framework is all there is (``ram``: a RAM
    cache only, which persist fills with ``ram=True`` and counts in ``in_ram``)."""
    n, metric = 1000 if a.quick else 10000, f"persist_us_per_cheap_id_{name}"
    try:
        options = {"ram": True} if ram else {}
        seconds, result = timed((pipelines.cheap(a.lib, n) >> cache()).persist, client, progress=False, **options)
        assert (result.in_ram if ram else result.computed) == n, result
        out[metric] = seconds / n * 1e6
    except Exception as error:
        out[metric] = not_available(error)

if __name__ == "__main__":
    main()
