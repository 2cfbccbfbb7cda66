"""Pipelines shared by the benchmark cases, written once against connectome's API.

``load(lib)`` imports ``connectome`` or ``connectome_dask`` by name, so both libraries run
literally the same class bodies; ``lib == "raw"`` callers use the plain functions below instead.
"""

import importlib
import os

import numpy as np

SHAPE = (64, 128, 128)


def load(lib):
    return importlib.import_module(lib)


# --- cheap fields: framework overhead ------------------------------------------------------------

def value(i):
    return i * 2


def plus(v):
    return v + 1


def times(v):
    return v * 3


def minus(v):
    return v - 1


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


# --- 3D volumes: real preprocessing and disk caches ---------------------------------------------

def make_volumes(folder, n=64, shape=SHAPE):
    """Deterministic smooth-noise volumes and threshold masks, one .npy pair per entry."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        path = os.path.join(folder, f"{i:03d}.npy")
        if not os.path.exists(path):
            coarse = rng.random((shape[0] // 8, shape[1] // 8, shape[2] // 8)).astype(np.float32)
            volume = np.kron(coarse, np.ones((8, 8, 8), np.float32)) + rng.random(shape, np.float32) * 0.1
            np.save(path, volume.astype(np.float32))
    return folder


def read_volume(folder, key):
    return np.load(os.path.join(folder, f"{key}.npy"))


def volumes(lib, folder):
    c = load(lib)

    class Volumes(c.Source):
        _folder: str

        @c.meta
        def ids(_folder):
            return sorted(f[:-4] for f in os.listdir(_folder) if f.endswith(".npy"))

        def image(key, _folder):
            return np.load(os.path.join(_folder, f"{key}.npy"))

        def mask(key, _folder):
            return np.load(os.path.join(_folder, f"{key}.npy")) > 0.5

    return Volumes(folder=folder)


def zoom(image, factor):
    from scipy import ndimage

    return ndimage.zoom(image, factor, order=1)


def normalize(image):
    return (image - image.mean()) / (image.std() + 1e-6)


def crop(image, size=(40, 80, 80)):
    start = [(s - c) // 2 for s, c in zip(image.shape, size)]
    return image[tuple(slice(b, b + c) for b, c in zip(start, size))]


def preprocessing(lib, folder, root=None):
    """Source >> Zoom >> Normalize >> Crop (>> CacheToDisk of image and mask)."""
    c = load(lib)

    class Zoom(c.Transform):
        __inherit__ = True
        _factor: float = 0.75

        def image(image, _factor):
            return zoom(image, _factor)

        def mask(mask, _factor):
            return zoom(mask.astype(np.float32), _factor) > 0.5

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
        pipeline = pipeline >> c.CacheToDisk.simple("image", "mask", root=root)
    return pipeline
