"""The same pipeline on an explicit ``distributed.LocalCluster``: persist, then compute through Dask.

    python examples/02_local_cluster.py [CACHE_ROOT] [--workers N]

Any ``distributed.Client`` works the same way: ``Client("tcp://scheduler:8786")`` after ``dask scheduler``
and ``dask worker`` on your nodes (with the cache root on a file system every worker sees; this folder's
code travels with the tasks), or a dask-jobqueue / dask-kubernetes cluster. See docs/clusters.md.
"""

import argparse
import importlib.util
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # mri.py; the worker processes inherit this path

from connectome_dask import CacheToDisk, CacheToRam, Chain  # noqa: E402
from mri import MRI, Crop, Normalize, Zoom  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", nargs="?", help="the cache root (default: a new temporary folder)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    root = args.root or os.path.join(tempfile.mkdtemp(), "cache")

    from distributed import Client, LocalCluster

    pipeline = Chain(MRI(), Zoom(), Normalize(), Crop(),
                     CacheToDisk.simple("image", "mask", root=root), CacheToRam())
    # ":0": the scheduler's web server on any free port; it serves the dashboard if bokeh is installed
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        if importlib.util.find_spec("bokeh"):
            print(f"dashboard: {client.dashboard_link}")
        else:
            print("dashboard: not started (pip install bokeh to get it)")
        print(f"{len(client.scheduler_info()['workers'])} workers; cache root: {root}")

        start = time.perf_counter()
        report = pipeline.persist(client)  # the tasks show up as "image-mask" on the dashboard
        print(f"{report} in {time.perf_counter() - start:.1f} s")

        # Lower level: one dask collection for many fields x ids; the workers load from the cache.
        entries = pipeline.to_dask(["image", "mask"], ids=pipeline.ids)
        start = time.perf_counter()
        values = client.compute(entries).result()  # a list: one (image, mask) tuple per id
        image, mask = values[0]
        print(f"client.compute: {len(values)} (image, mask) pairs of shape {image.shape} "
              f"in {time.perf_counter() - start:.2f} s")

        # One field of one entry, lazily: a dask.delayed.Delayed with a hash-derived key.
        lazy = pipeline.mask.delayed(pipeline.ids[0])
        print(f"{lazy.key}: {client.compute(lazy).result().sum()} foreground voxels")


if __name__ == "__main__":  # the cluster starts worker processes, which import this file: guard the job
    main()
