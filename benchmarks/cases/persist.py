"""Cache population of the 64-volume dataset (Zoom + Normalize + Crop, CacheToDisk of image and
mask): serial, by hand with a fork pool (connectome), and with ``persist`` (connectome_dask) on
the embedded default and on a 2-worker LocalCluster; plus persist's per-entry overhead at 10,000
cheap ids."""

import multiprocessing
import os
import shutil
import tempfile
import time

from common import args, report
import pipelines


def serial(ds):
    for key in ds.ids:
        ds.image(key), ds.mask(key)


def _fill(args):
    lib, data, root, key = args
    ds = pipelines.preprocessing(lib, data, root)
    ds.image(key), ds.mask(key)


def main():
    a = args()
    n = 8 if a.quick else 64
    data = pipelines.make_volumes(os.path.join(tempfile.gettempdir(), "cdask-bench-volumes", str(n)), n)
    work = tempfile.mkdtemp()
    root = lambda name: os.path.join(work, name)  # noqa: E731
    try:
        out = {}
        if a.lib == "raw":
            start = time.perf_counter()
            for key in sorted(f[:-4] for f in os.listdir(data)):
                image = pipelines.read_volume(data, key)
                pipelines.crop(pipelines.normalize(pipelines.zoom(image, 0.75)))
                pipelines.crop(pipelines.zoom((image > 0.5).astype("float32"), 0.75) > 0.5)
            report({"serial_s": time.perf_counter() - start})
            return
        start = time.perf_counter()
        serial(pipelines.preprocessing(a.lib, data, root("serial")))
        out["serial_s"] = time.perf_counter() - start
        if a.lib == "connectome":
            ids = pipelines.preprocessing(a.lib, data, root("pool")).ids  # creates the root before forking
            start = time.perf_counter()
            with multiprocessing.get_context("fork").Pool(2) as pool:
                pool.map(_fill, [(a.lib, data, root("pool"), key) for key in ids])
            out["speedup_fork_pool"] = out["serial_s"] / (time.perf_counter() - start)
            report(out)
            return
        start = time.perf_counter()
        report_ = pipelines.preprocessing(a.lib, data, root("embedded")).persist(progress=False)
        out["speedup_persist_embedded"] = out["serial_s"] / (time.perf_counter() - start)
        assert report_.computed == n, report_
        start = time.perf_counter()
        pipelines.preprocessing(a.lib, data, root("embedded_warm")).persist(progress=False)
        out["speedup_persist_embedded_warm"] = out["serial_s"] / (time.perf_counter() - start)
        from distributed import Client, LocalCluster

        start = time.perf_counter()
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=40) as cluster, Client(cluster) as client:
            out["cluster_startup_s"] = time.perf_counter() - start
            for run in ("cold", "warm"):  # cold: the workers' first tasks also import scipy, h5py, ...
                start = time.perf_counter()
                pipelines.preprocessing(a.lib, data, root(f"cluster-{run}")).persist(client, progress=False)
                out[f"speedup_persist_local_cluster_{run}"] = out["serial_s"] / (time.perf_counter() - start)
            cheap_n = 1000 if a.quick else 10000
            c = pipelines.load(a.lib)
            for name, cache in (("ram", c.CacheToRam(["value"])), ("disk", c.CacheToDisk.simple("value", root=root("cheap")))):
                cheap = pipelines.cheap(a.lib, cheap_n) >> cache
                start = time.perf_counter()
                cheap.persist(client, progress=False)
                out[f"persist_us_per_cheap_id_{name}"] = (time.perf_counter() - start) / cheap_n * 1e6
        report(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
