"""The same pipeline on an explicit ``distributed.LocalCluster``: persist, then compute through Dask.

    python examples/02_local_cluster.py [CACHE_ROOT]

Any ``distributed.Client`` works the same way: ``Client("tcp://scheduler:8786")`` after ``dask scheduler`` and
``dask worker`` on your nodes (with the cache root on a shared file system), or a dask-jobqueue cluster.
"""

import importlib.util
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from distributed import Client, LocalCluster  # noqa: E402

from connectome_dask import CacheToDisk, Chain  # noqa: E402
from mri import MRI, Crop, Normalize, Zoom  # noqa: E402

if __name__ == "__main__":
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(tempfile.mkdtemp(), "cache")
    pipeline = Chain(MRI(), Zoom(), Normalize(), Crop(), CacheToDisk.simple("image", "mask", root=root))
    dashboard = ":0" if importlib.util.find_spec("bokeh") else None
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=dashboard) as cluster, \
            Client(cluster) as client:
        print("dashboard:", client.dashboard_link if dashboard else "install bokeh to get the dashboard")
        print(pipeline.persist(client))
        images = client.compute(pipeline.to_dask("image")).result()  # loads from the cache on the workers
        print(f"{len(images)} images of shape {images[0].shape} computed through dask")
