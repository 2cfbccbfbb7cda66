"""The main job: preprocess real MRI volumes in parallel into an HDF5 cache, read them back, look at them.

    python examples/01_persist_imaging.py [CACHE_ROOT]

Source (nibabel's sample MRI) >> Zoom >> Normalize >> Crop >> CacheToDisk >> CacheToRam, persisted on the
embedded local cluster (one worker process per core) with a progress bar; then every entry is read back,
the cache-hit speed is printed, and a PNG montage of processed slices is written to examples/output/.
"""

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from connectome_dask import CacheToDisk, CacheToRam, Chain  # noqa: E402
from mri import MRI, Crop, Normalize, Zoom  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def build(root):
    return Chain(MRI(), Zoom(), Normalize(), Crop(), CacheToDisk.simple("image", "mask", root=root),
                 CacheToRam(["image", "mask"]))


def montage(pipeline, path, n=6):
    """Middle slices of ``n`` processed images, mask contour on top, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = pipeline.ids[:: max(1, len(pipeline.ids) // n)][:n]
    fig, axes = plt.subplots(1, len(ids), figsize=(2.2 * len(ids), 2.4))
    for ax, key in zip(np.atleast_1d(axes), ids):
        image, mask = pipeline.image(key), pipeline.mask(key)
        z = image.shape[2] // 2
        ax.imshow(image[:, :, z].T, cmap="gray", origin="lower")
        ax.contour(mask[:, :, z].T, levels=[0.5], colors="orange", linewidths=0.8)
        ax.set_title(key, fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "output", "cache")
    pipeline = build(root)
    print(f"{len(pipeline.ids)} volumes; cache root: {root}")

    start = time.perf_counter()
    report = pipeline.persist()  # embedded local cluster, progress bar
    print(f"{report} in {time.perf_counter() - start:.1f} s")

    fresh = build(root)  # a new pipeline object: values come from the HDF5 cache
    start = time.perf_counter()
    shapes = {(fresh.image(key).shape, fresh.mask(key).shape) for key in fresh.ids}
    print(f"read back {len(fresh.ids)} images and masks of shapes {shapes} from disk "
          f"in {time.perf_counter() - start:.2f} s")
    start = time.perf_counter()
    for key in fresh.ids:
        fresh.image(key), fresh.mask(key)
    hits = 2 * len(fresh.ids)
    print(f"RAM cache hits: {(time.perf_counter() - start) / hits * 1e6:.1f} µs per field")

    os.makedirs(os.path.join(HERE, "output"), exist_ok=True)
    png = os.path.join(HERE, "output", "montage.png")
    try:
        montage(fresh, png)
        print(f"montage of processed slices: {png}")
    except ImportError:
        print("install matplotlib for the montage (pip install matplotlib)")
    print(f"inspect the cache: python -m connectome_dask cache {root} list")


if __name__ == "__main__":
    main()
