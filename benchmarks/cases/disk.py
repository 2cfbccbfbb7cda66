"""Disk cache of 64 volumes (64x128x128 float32 + bool mask): populate, read back, bytes on disk.

The raw floor computes the same two fields with the same calls and writes/reads each array with plain
h5py to a file of its own, the layout of the cache (one immutable file per field x key)."""

import os
import shutil
import tempfile
import time

import h5py
import numpy as np

from common import args, report
import pipelines


def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def main():
    a = args()
    n = 8 if a.quick else 64
    data = pipelines.make_volumes(os.path.join(tempfile.gettempdir(), "cdask-bench-volumes", str(n)), n)
    work = tempfile.mkdtemp()
    try:
        raw_bytes = 0
        if a.lib == "raw":
            start = time.perf_counter()
            for i in range(n):
                image = np.load(os.path.join(data, f"{i:03d}.npy"))  # the pipeline's two fields,
                mask = np.load(os.path.join(data, f"{i:03d}.npy")) > 0.5  # computed the same way
                for name, array in (("image", image), ("mask", mask)):  # one file per array, as the cache
                    with h5py.File(os.path.join(work, f"{name}-{i:03d}.h5"), "w") as f:
                        f[name] = array
                raw_bytes += image.nbytes * 5 // 4
            populate = time.perf_counter() - start
            start = time.perf_counter()
            for i in range(n):
                for name in ("image", "mask"):
                    with h5py.File(os.path.join(work, f"{name}-{i:03d}.h5"), "r") as f:
                        f[name][()]
            read = time.perf_counter() - start
            report({"populate_s": populate, "read_MBps": raw_bytes / read / 1e6,
                    "bytes_ratio": folder_bytes(work) / raw_bytes})
            return
        root = os.path.join(work, "cache")
        ds = pipelines.volumes(a.lib, data) >> pipelines.load(a.lib).CacheToDisk.simple("image", "mask", root=root)
        start = time.perf_counter()
        for key in ds.ids:
            image, mask = ds.image(key), ds.mask(key)
            raw_bytes += image.nbytes + mask.nbytes
        populate = time.perf_counter() - start
        again = pipelines.volumes(a.lib, data) >> pipelines.load(a.lib).CacheToDisk.simple("image", "mask", root=root)
        start = time.perf_counter()
        for key in again.ids:
            again.image(key), again.mask(key)
        read = time.perf_counter() - start
        report({"populate_s": populate, "read_MBps": raw_bytes / read / 1e6, "bytes_ratio": folder_bytes(root) / raw_bytes})
    finally:
        shutil.rmtree(work)


main()
