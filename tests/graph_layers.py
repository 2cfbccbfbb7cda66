"""Module-level layers used by the graph tests (importable by worker processes)."""

import os

import numpy as np

from connectome_dask import Source, Transform, impure, meta


def log_call(path, tag):
    with open(path, "a") as f:
        f.write(tag + "\n")


class Volumes(Source):
    _log: str

    @meta
    def ids():
        return [f"v{i}" for i in range(6)]

    def image(key, _log):
        log_call(_log, "image")
        return np.arange(16, dtype=np.float32).reshape(4, 4) + int(key[1:])

    def mask(key):
        return (np.arange(16).reshape(4, 4) % 2).astype(bool)


class Crop(Transform):
    __inherit__ = True
    _log: str

    def _box(image, _log):
        log_call(_log, "box")
        return (1, 3)

    def image(image, _box):
        return image[_box[0]:_box[1]]

    def mask(mask, _box):
        return mask[_box[0]:_box[1]]


class Noise(Transform):
    __inherit__ = True

    @impure
    def _seed():
        return int.from_bytes(os.urandom(4), "little")

    def image(image, _seed):
        return image + np.random.default_rng(_seed).random()

    def mask(mask, _seed):
        return _seed


class Fails(Transform):
    __inherit__ = True

    def image(image):
        raise ZeroDivisionError(f"cannot process image of sum {image.sum()}")
