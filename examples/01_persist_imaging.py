"""The main job: preprocess real MRI volumes in parallel into an HDF5 cache, read them back, look at them.

    python examples/01_persist_imaging.py [CACHE_ROOT] [--png PATH] [--phantoms | --folder FOLDER]

The pipeline (``examples/mri.py``)::

    MRI()  >>  Zoom()  >>  Normalize()  >>  Crop()  >>  CacheToDisk.simple("image", "mask", "spacing")  >>  CacheToRam()
    nibabel's   2 mm        zero mean,       96x96x64     one HDF5 file per entry and field                   per process
    sample MRI  voxels      foreground mask

``pipeline.persist()`` fills the disk cache on the embedded local cluster (one worker process per core;
``CONNECTOME_DASK_WORKERS=n`` overrides) with a progress bar. Then a new pipeline object reads every entry
back from disk, then from RAM, and the timings are printed; a PNG montage of processed slices is written
(default ``examples/output/montage.png``). Run it twice: the second run computes nothing. The raw files
of every entry are stamped (``@files`` in ``mri.py``): copy the sample folder, edit one file, and the
next run with ``--folder`` recomputes only the entries read from it.
"""

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # mri.py and montage.py; the worker processes inherit this path

from connectome_dask import CacheToDisk, CacheToRam, Chain  # noqa: E402
import montage  # noqa: E402
from mri import FILES, MRI, Crop, Normalize, Zoom, sample_folder  # noqa: E402

FIELDS = ("image", "mask", "spacing")


def build(root, folder):
    """The pipeline. A flat ``Chain`` (rather than ``>>``) so that ``pipeline[1:]`` is the transforms."""
    return Chain(MRI(folder=folder), Zoom(), Normalize(), Crop(), CacheToDisk.simple(*FIELDS, root=root), CacheToRam())


def describe(pipeline, folder):
    if folder is None:
        return f"{len(pipeline.ids)} generated head phantoms (install nibabel for the real MRI volumes)"
    import nibabel

    files = {key.split("-t")[0] for key in pipeline.ids}
    return f"{len(pipeline.ids)} MRI volumes from {len(files)} sample files shipped with nibabel {nibabel.__version__}"


def read(pipeline, field):
    """Read ``field`` of every entry; returns (seconds per entry, bytes read)."""
    start, size = time.perf_counter(), 0
    for key in pipeline.ids:
        size += getattr(getattr(pipeline, field)(key), "nbytes", 0)
    return (time.perf_counter() - start) / len(pipeline.ids), size


def plain_h5py(root, field):
    """Read ``field`` of every entry with plain h5py, keeping the values as CacheToRam does: (seconds per entry, bytes)."""
    import h5py
    from connectome_dask.cache.hdf5 import HDF5Store

    paths = [path for name, _, path, _, _ in HDF5Store(root).entries() if name == field]
    start, kept = time.perf_counter(), []
    for path in paths:
        with h5py.File(path, "r") as f:
            kept.append(f["value"][()])
    return (time.perf_counter() - start) / len(paths), sum(v.nbytes for v in kept)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", nargs="?", default=os.path.join(HERE, "output", "cache"), help="the cache root")
    parser.add_argument("--png", default=os.path.join(HERE, "output", "montage.png"), help="where to write the montage")
    parser.add_argument("--phantoms", action="store_true", help="use generated phantoms even if nibabel is installed")
    parser.add_argument("--folder", help="a folder holding (copies of) nibabel's sample files to read instead")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    folder = args.folder or (None if args.phantoms else sample_folder())
    pipeline = build(args.root, folder)
    print(describe(pipeline, folder))
    print(f"cache root: {os.path.abspath(args.root)}")

    start = time.perf_counter()
    report = pipeline.persist()  # all ids, every cached field, in parallel, with a progress bar
    print(f"{report} in {time.perf_counter() - start:.1f} s (including the start of the local cluster)")
    start = time.perf_counter()
    again = pipeline.persist(progress=False)
    print(f"again: {again} in {time.perf_counter() - start:.2f} s")

    fresh = build(args.root, folder)  # a new pipeline object: an empty RAM cache in this process
    start = time.perf_counter()
    fresh.spacing(fresh.ids[0])  # the first access hashes the code of the pipeline, once per process
    print(f"first access (hashes the pipeline's code once): {time.perf_counter() - start:.2f} s")
    hits = []
    for field in FIELDS:
        seconds, size = read(fresh, field)
        rate = f", {size / seconds / len(fresh.ids) / 1e9:.1f} GB/s" if size else ""
        hits.append(f"{field} {seconds * 1e6:.0f} µs{rate}")
    print(f"disk cache hits per entry: {'; '.join(hits)}")
    seconds, size = plain_h5py(args.root, "image")  # the floor: the same files, read the same way
    print(f"  plain h5py on the same image files: {seconds * 1e6:.0f} µs, {size / seconds / len(fresh.ids) / 1e9:.1f} GB/s "
          "(each value lands in new memory, kept by CacheToRam; benchmarks/cases/disk.py reads 4 MB volumes "
          "into reused memory)")
    repeats = 20
    seconds = sum(read(fresh, field)[0] for _ in range(repeats) for field in FIELDS)
    print(f"RAM cache hits: {seconds / (len(FIELDS) * repeats) * 1e6:.1f} µs per field")

    key = fresh.ids[0]
    uncached = pipeline._drop_cache()  # the same pipeline without its cache layers: computes
    same = all(np.array_equal(getattr(fresh, f)(key), getattr(uncached, f)(key)) for f in FIELDS)
    print(f"cached values equal a fresh computation ({key}): {same}")

    firsts = {}
    for key in fresh.ids:
        firsts.setdefault(key.split("-t")[0], key)
    shown = list(firsts.values())[:8]
    os.makedirs(os.path.dirname(os.path.abspath(args.png)), exist_ok=True)
    titles = [key if folder is None else f"{key}\n{FILES[key.split('-t')[0]]}" for key in shown]
    backend = montage.save(args.png, [fresh.image(k) for k in shown], [fresh.mask(k) for k in shown], titles)
    print(f"montage of {len(shown)} processed slices ({backend}): {os.path.abspath(args.png)}")

    print("inspect the cache:")
    print(f"  python -m connectome_dask cache {args.root} list")
    print(f"  python -m connectome_dask cache {args.root} verify")
    print("  or open any entry with h5py: see README.md, 'The cache on disk'")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0 if same and not report.failed else 1


if __name__ == "__main__":  # persist starts worker processes, which import this file: guard the job
    sys.exit(main())
