"""Pipelines shared by every benchmark case, written once against connectome's API.

Design: ``load(lib)`` imports ``connectome`` or ``connectome_dask`` by name and the builders below
declare their classes against whatever module it returns, so both libraries run literally the same
class bodies (the import swap a connectome user does). The "raw" floor never builds a pipeline; it
calls the module-level functions here, which do exactly what the field bodies do:

* ``cheap``: Source (``value = id * 2``, plus ``other`` and ``third``) >> Plus >> Times >> Minus —
  per-call framework overhead (``RAW_CHEAP`` lists the same functions, field by field);
* ``volumes``: one ``.npy`` file per entry of 64x128x128 float32 smooth noise (``make_volumes``),
  ``image`` = the array, ``mask`` = ``image > 0.5``;
* ``preprocessing``: ``volumes`` >> Zoom >> Normalize >> Crop (>> ``CacheToDisk.simple``).
"""

import importlib
import os

import numpy as np

SHAPE = (64, 128, 128)
ZOOM = 0.75
CROP = (40, 80, 80)


def load(lib):
    return importlib.import_module(lib)


# --- cheap fields: framework overhead ------------------------------------------------------------

def cheap(lib, n=1000):
    c = load(lib)

    class Numbers(c.Source):
        _n: int = n

        @c.meta
        def ids(_n):
            return list(range(_n))

        def value(i):
            return i * 2

        def other(i):
            return i + 2

        def third(i):
            return -i

    class Plus(c.Transform):
        __inherit__ = True

        def value(value):
            return value + 1

        def other(other):
            return other * 2

        def third(third):
            return third - 1

    class Times(c.Transform):
        __inherit__ = True

        def value(value):
            return value * 3

    class Minus(c.Transform):
        __inherit__ = True

        def value(value):
            return value - 1

    return Numbers(n=n) >> Plus() >> Times() >> Minus()


# the same functions, for the raw floor and hand-written dask graphs
def source_value(i):
    return i * 2


def source_other(i):
    return i + 2


def source_third(i):
    return -i


def plus(v):
    return v + 1


def times(v):
    return v * 3


def minus(v):
    return v - 1


def double(v):
    return v * 2


# field -> the calls that make it, source first
RAW_CHEAP = {"value": (source_value, plus, times, minus), "other": (source_other, double), "third": (source_third, minus)}


def raw_value(i):
    return minus(times(plus(source_value(i))))


# --- 3D volumes: real preprocessing and disk caches ---------------------------------------------

def make_volumes(folder, n=64, shape=SHAPE):
    """Deterministic smooth noise (8x upsampled coarse noise + fine noise), one ``.npy`` per entry."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        coarse = rng.random(tuple(s // 8 for s in shape), np.float32)
        fine = rng.random(shape, np.float32)
        path = os.path.join(folder, f"{i:03d}.npy")
        if not os.path.exists(path):
            np.save(path + ".tmp.npy", np.kron(coarse, np.ones((8, 8, 8), np.float32)) + fine * 0.1)
            os.replace(path + ".tmp.npy", path)
    return folder


def volume_ids(folder):
    return sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".npy") and not f.endswith(".tmp.npy"))


def read_image(folder, key):
    return np.load(os.path.join(folder, f"{key}.npy"))


def read_mask(folder, key):
    return read_image(folder, key) > 0.5


def zoom(image, factor):
    from scipy import ndimage

    return ndimage.zoom(image, factor, order=1)


def zoom_mask(mask, factor):
    return zoom(mask.astype(np.float32), factor) > 0.5


def normalize(image):
    return (image - image.mean()) / (image.std() + 1e-6)


def crop(image, size=CROP):
    start = [(s - c) // 2 for s, c in zip(image.shape, size)]
    return image[tuple(slice(b, b + c) for b, c in zip(start, size))]


def raw_preprocess(folder, key):
    """``preprocessing``'s image and mask for one key, without a framework."""
    image = crop(normalize(zoom(read_image(folder, key), ZOOM)))
    mask = crop(zoom_mask(read_mask(folder, key), ZOOM))
    return image, mask


def volumes(lib, folder):
    c = load(lib)

    class Volumes(c.Source):
        _folder: str

        @c.meta
        def ids(_folder):
            return volume_ids(_folder)

        def image(key, _folder):
            return read_image(_folder, key)

        def mask(key, _folder):
            return read_mask(_folder, key)

    return Volumes(folder=folder)


def preprocessing(lib, folder, root=None, **cache_options):
    """``volumes`` >> Zoom >> Normalize >> Crop (>> ``CacheToDisk.simple('image', 'mask', **cache_options)``
    at ``root``)."""
    c = load(lib)

    class Zoom(c.Transform):
        __inherit__ = True
        _factor: float = ZOOM

        def image(image, _factor):
            return zoom(image, _factor)

        def mask(mask, _factor):
            return zoom_mask(mask, _factor)

    class Normalize(c.Transform):
        __inherit__ = True

        def image(image):
            return normalize(image)

    class Crop(c.Transform):
        __inherit__ = True

        def image(image):
            return crop(image)

        def mask(mask):
            return crop(mask)

    pipeline = volumes(lib, folder) >> Zoom() >> Normalize() >> Crop()
    if root is not None:
        pipeline = pipeline >> c.CacheToDisk.simple("image", "mask", root=root, **cache_options)
    return pipeline
