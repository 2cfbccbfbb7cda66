"""Disk cache of 64 volumes (64x128x128 float32 + bool mask): populate, read back, bytes on disk.

A library's pipeline is ``volumes >> CacheToDisk.simple('image', 'mask', root=...)``; the read pass
uses a NEW pipeline object on the same root, so no RAM state helps. raw: the same two fields computed
with the same calls, each array written and read with plain h5py, one file per field x entry (the
layout of the cache). All reads come from the page cache, so they measure the software, not the disk.
"""

import os
import shutil
import tempfile

import h5py
import numpy as np

from common import args, folder_bytes, report, timed, volumes_folder
import pipelines


def raw_populate(data, keys, out):
    for key in keys:
        for name, array in (("image", pipelines.read_image(data, key)), ("mask", pipelines.read_mask(data, key))):
            with h5py.File(os.path.join(out, f"{name}-{key}.h5"), "w") as f:
                f.create_dataset(name, data=array)


def raw_read(keys, out):
    for key in keys:
        for name in ("image", "mask"):
            with h5py.File(os.path.join(out, f"{name}-{key}.h5"), "r") as f:
                f[name][()]


def cached(lib, data, root):
    return pipelines.volumes(lib, data) >> pipelines.load(lib).CacheToDisk.simple("image", "mask", root=root)


def lib_populate(ds):
    for key in ds.ids:
        ds.image(key), ds.mask(key)


def main():
    a = args()
    data = volumes_folder(8 if a.quick else 64)
    keys = pipelines.volume_ids(data)
    raw_bytes = sum(pipelines.read_image(data, k).nbytes + pipelines.read_mask(data, k).nbytes for k in keys)
    work = tempfile.mkdtemp(prefix="cdask-bench-disk-")
    try:
        out = os.path.join(work, "cache")
        if a.lib == "raw":
            os.makedirs(out)
            populate, _ = timed(raw_populate, data, keys, out)
            read, _ = timed(raw_read, keys, out)
        else:
            populate, _ = timed(lib_populate, cached(a.lib, data, out))
            again = cached(a.lib, data, out)
            read, _ = timed(lib_populate, again)
            key = keys[-1]
            assert np.array_equal(again.image(key), pipelines.read_image(data, key))
            assert np.array_equal(again.mask(key), pipelines.read_mask(data, key))
        report({"populate_s": populate, "read_MBps": raw_bytes / read / 1e6,
                "bytes_ratio": folder_bytes(out) / raw_bytes}, a.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
