"""Training reads from the cache: a PyTorch DataLoader over ``to_torch`` vs a hand-written h5py Dataset.

The 64 volumes of the ``disk`` case (64x128x128 float32 image + bool mask) are cached once per machine
with ``CacheToDisk.simple('image', 'mask')`` (a folder under the temp dir); both sides read the same
entry files. connectome_dask: ``pipeline.to_torch(['image', 'mask'])`` on a new pipeline object. raw:
the ``Dataset`` a user writes by hand, ``h5py.File(path, 'r')`` and ``f['value'][()]`` per entry file,
its paths listed in setup (``HashDigest`` gives each entry's token, the file's name).

Each loader is ``DataLoader(dataset, batch_size=4, num_workers=w)`` (``persistent_workers`` when
``w > 0``, the default start method, fork on Linux). The first epoch (worker start, the first access of
each worker) is timed apart; then ``EPOCHS`` epochs are timed together: samples/s over all of them.
``cpu_ms_per_sample`` is the CPU time of the loader's process and its workers over all epochs, worker
start included, per sample: the cost of the software, which the load of other jobs on the machine
changes far less than the wall-clock rates. Reads come from the page cache, so they measure the
software, not the disk. Both sides run with the fixed malloc thresholds of ``common.steady_allocator``
(without them, which side faults its 4 MB arrays in afresh on every read depends on the process's
history: 10 to 45,000 page faults per 5 epochs).
"""

import gc
import json
import os
import resource
import tempfile
import time

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from common import args, report, steady_allocator, volumes_folder
import pipelines

EPOCHS = 5
BATCH = 4
FIELDS = ("image", "mask")


def cached(data, root):
    c = pipelines.load("connectome_dask")
    return pipelines.volumes("connectome_dask", data) >> c.CacheToDisk.simple(*FIELDS, root=root)


def prepare(data, n, refresh):
    """The cache root and ``[(image path, mask path)]`` in id order, filled and listed once per machine,
    and again with ``refresh`` (the connectome_dask side: a change of the hashing gives new entries, which
    are then computed here, not in the timed loop, and listed for the raw side, which runs after it)."""
    folder = os.path.join(tempfile.gettempdir(), "cdask-bench-torch", str(n))
    root, index = os.path.join(folder, "cache"), os.path.join(folder, "index.json")
    if refresh or not os.path.exists(index):
        from connectome_dask import HashDigest
        from connectome_dask.cache.hdf5 import HDF5Store

        pipeline = cached(data, root)
        digest = pipeline._drop_cache() >> HashDigest(list(FIELDS))
        store, paths = HDF5Store(root), []
        for key in pipeline.ids:
            pipeline.image(key), pipeline.mask(key)  # computed and stored (a hit when already there)
            paths.append([store.path(field, getattr(digest, field)(key)[0]) for field in FIELDS])
        assert all(os.path.exists(p) for pair in paths for p in pair)
        with open(index + ".tmp", "w") as f:
            json.dump(paths, f)
        os.replace(index + ".tmp", index)
    with open(index) as f:
        return root, [tuple(pair) for pair in json.load(f)]


class H5Dataset(Dataset):
    """The hand-written loader: one h5py file per field and entry, opened in ``__getitem__``."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        image_path, mask_path = self.paths[i]
        with h5py.File(image_path, "r") as f:
            image = f["value"][()]
        with h5py.File(mask_path, "r") as f:
            mask = f["value"][()]
        return image, mask


def epoch(loader):
    count = 0
    for image, mask in loader:
        count += len(image)
    return count


def cpu_seconds():
    """User + system CPU time of this process and of its children that have exited."""
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))


def measure(dataset, workers):
    """(samples/s of the timed epochs, samples/s of the first epoch, CPU ms per sample over all epochs)."""
    cpu = cpu_seconds()
    loader = DataLoader(dataset, batch_size=BATCH, num_workers=workers, persistent_workers=workers > 0)
    start = time.perf_counter()
    first = epoch(loader)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    count = sum(epoch(loader) for _ in range(EPOCHS))
    seconds = time.perf_counter() - start
    del loader  # stops and joins the persistent workers: their CPU time is counted now
    gc.collect()
    return count / seconds, first / first_s, (cpu_seconds() - cpu) / (first + count) * 1e3


def main():
    a = args(("connectome_dask", "raw"))
    steady_allocator()  # the same malloc thresholds on both sides (see common.py), inherited by forked workers
    torch.set_num_threads(1)  # the collate's copies; the same on both sides
    n = 8 if a.quick else 64
    data = volumes_folder(n)
    root, paths = prepare(data, n, refresh=a.lib == "connectome_dask")
    if a.lib == "raw":
        dataset = H5Dataset(paths)
    else:
        dataset = cached(data, root).to_torch(list(FIELDS))
    image, mask = dataset[n - 1]
    assert np.array_equal(image, pipelines.read_image(data, pipelines.volume_ids(data)[-1])) and mask.dtype == bool
    result = {}
    for workers in (2, 0):
        steady, first, cpu = measure(dataset, workers)
        result[f"samples_per_s_{workers}_workers"] = steady
        result[f"first_epoch_samples_per_s_{workers}_workers"] = first
        result[f"cpu_ms_per_sample_{workers}_workers"] = cpu
    report(result, a.json)


if __name__ == "__main__":
    main()
