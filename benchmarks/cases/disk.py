"""Disk cache of 64 volumes (64x128x128 float32 + bool mask): populate, read back, bytes on disk.

A library's pipeline is ``volumes >> CacheToDisk.simple('image', 'mask', root=...)``; the read pass
uses a NEW pipeline object on the same root, so no RAM state helps. raw: the same two fields computed
with the same calls, each array written and read with plain h5py, one file per field x entry (the
layout of the cache). All reads come from the page cache, so they measure the software, not the disk.
Both sides release each entry's arrays at the same points and run with the same fixed malloc
thresholds (``common.steady_allocator``), so page faults from glibc's heap trimming do not depend
on which library happened to free a large block first; ``populate_page_faults`` shows the median
count of the populate loops (the first run's also holds one-off costs: the first HDF5 file of the
process, lazily imported modules).
Populate runs three times into fresh roots, after ``os.sync()`` (so the write-back of earlier runs,
also of other processes, does not land inside a measurement); the median is reported. Where
``/dev/shm`` is writable, ``populate_tmpfs_s`` repeats populate with the roots in RAM: on this VM's
ext4 the same raw h5py populate varies up to 2x between runs (journal and write-back in the kernel),
so the tmpfs figure isolates what the library adds to the same HDF5 writes.
"""

import functools
import os
import shutil
import statistics
import tempfile

import h5py
import numpy as np

from common import args, folder_bytes, page_faults, report, steady_allocator, timed, volumes_folder
import pipelines


def raw_write(out, name, key, array):
    with h5py.File(os.path.join(out, f"{name}-{key}.h5"), "w") as f:
        f.create_dataset(name, data=array)


def raw_fill(data, key, out):
    """One entry, holding and releasing its arrays where ``lib_fill`` does: both fields live until
    the entry is done, nothing survives into the next one. (A value kept across iterations, as a
    loop variable does, pins the top of glibc's heap: the freed arrays are then reused instead of
    being returned to the kernel and faulted in again, ~80,000 page faults less for 64 entries.
    That is an accident of the loop's shape, not a cost of the cache, so both sides have the same.)"""
    image = pipelines.read_image(data, key)
    raw_write(out, "image", key, image)
    mask = pipelines.read_mask(data, key)
    raw_write(out, "mask", key, mask)
    return image, mask


def raw_populate(data, keys, out):
    for key in keys:
        raw_fill(data, key, out)


def raw_read(keys, out):
    for key in keys:
        for name in ("image", "mask"):
            with h5py.File(os.path.join(out, f"{name}-{key}.h5"), "r") as f:
                f[name][()]


def cached(lib, data, root):
    return pipelines.volumes(lib, data) >> pipelines.load(lib).CacheToDisk.simple("image", "mask", root=root)


def lib_fill(ds, key):
    return ds.image(key), ds.mask(key)


def lib_populate(ds):
    for key in ds.ids:
        lib_fill(ds, key)


TMPFS = "/dev/shm"


def populated(a, data, keys, folder):
    """``(median seconds, median page faults, the last root)`` of populating fresh roots under
    ``folder`` (three runs, one with ``--quick``), each after ``os.sync()``. Page faults are counted
    around the populate loop only: the library's import and the pipeline's construction (done
    before, once per run) are not populating."""
    faults, times = [], []
    for run in range(1 if a.quick else 3):
        out = os.path.join(folder, f"cache{run}")
        os.sync()
        if a.lib == "raw":
            os.makedirs(out)
            call = functools.partial(raw_populate, data, keys, out)
        else:
            call = functools.partial(lib_populate, cached(a.lib, data, out))
        before = page_faults()
        seconds, _ = timed(call)
        faults.append(page_faults() - before)
        times.append(seconds)
    return statistics.median(times), statistics.median(faults), out


def main():
    a = args()
    steady_allocator()
    data = volumes_folder(8 if a.quick else 64)
    keys = pipelines.volume_ids(data)
    raw_bytes = sum(pipelines.read_image(data, k).nbytes + pipelines.read_mask(data, k).nbytes for k in keys)
    work = tempfile.mkdtemp(prefix="cdask-bench-disk-")
    memory = tempfile.mkdtemp(prefix="cdask-bench-disk-", dir=TMPFS) if os.access(TMPFS, os.W_OK) else None
    try:
        populate, faults, out = populated(a, data, keys, work)
        result = {"populate_s": populate}
        if memory is not None:  # the same in RAM: the library's cost without the file system's noise
            result["populate_tmpfs_s"] = populated(a, data, keys, memory)[0]
        if a.lib == "raw":
            read, _ = timed(raw_read, keys, out)
        else:
            again = cached(a.lib, data, out)
            read, _ = timed(lib_populate, again)
            key = keys[-1]
            assert np.array_equal(again.image(key), pipelines.read_image(data, key))
            assert np.array_equal(again.mask(key), pipelines.read_mask(data, key))
        report({**result, "read_MBps": raw_bytes / read / 1e6, "bytes_ratio": folder_bytes(out) / raw_bytes,
                "populate_page_faults": faults}, a.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if memory is not None:
            shutil.rmtree(memory, ignore_errors=True)


if __name__ == "__main__":
    main()
