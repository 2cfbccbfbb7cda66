"""Module-level layers used by the persist tests (importable by worker processes)."""

import os
import time

import numpy as np

from connectome_dask import CacheToDisk, CacheToRam, Source, Transform, meta


def log_call(path, tag):
    with open(path, "a") as f:
        f.write(tag + "\n")


class Scans(Source):
    _log: str
    _n: int = 8

    @meta
    def ids(_n):
        return [f"s{i:02d}" for i in range(_n)]

    def image(key, _log):
        log_call(_log, "image")
        return np.full((8, 8, 8), int(key[1:]), dtype=np.float32)

    def mask(key, _log):
        log_call(_log, "mask")
        return np.arange(512).reshape(8, 8, 8) % (int(key[1:]) + 2) == 0


class Normalize(Transform):
    __inherit__ = True
    _log: str
    _fail: tuple = ()
    _die_once: str = ""
    _sleep: float = 0.0

    def image(image, id, _log, _fail, _die_once, _sleep):
        log_call(_log, "normalize")
        time.sleep(_sleep)
        if id in _fail:
            raise ValueError(f"bad scan {id}")
        if _die_once and id == "s03" and not os.path.exists(_die_once):
            open(_die_once, "w").close()
            os._exit(1)  # the worker process dies mid-task
        return (image - image.mean()) / (image.std() + 1)


def pipeline(log, root, **options):
    return Scans(log=log) >> Normalize(log=log, **options) >> CacheToDisk.simple("image", "mask", root=root)


def ram_pipeline(log, root):
    return pipeline(log, root) >> CacheToRam(["image"])


def mapped_arrays(arrays=20, nbytes=4 << 20):
    """How many of ``arrays`` arrays of ``nbytes``, made and freed one after the other, glibc mapped
    afresh (to unmap them when freed) instead of reusing freed heap memory. Counted with glibc's
    ``mallinfo2`` (bytes in mapped chunks), not page faults: numpy asks for huge pages, so faults
    per array depend on the kernel."""
    import ctypes

    class Mallinfo(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = Mallinfo
    mapped = 0
    for _ in range(arrays):
        before = mallinfo2().hblkhd
        array = np.ones(nbytes // 8)
        mapped += mallinfo2().hblkhd - before >= nbytes
        del array
    return mapped


class Churn(Source):
    """``mapped``: :func:`mapped_arrays` in the process that computes the entry."""

    @meta
    def ids():
        return ["a", "b", "c", "d"]

    def mapped(key):
        return mapped_arrays()


class Crop(Transform):
    """``image[2:6]``, each call logged."""

    __inherit__ = True
    _log: str

    def image(image, _log):
        log_call(_log, "crop")
        return image[2:6]


class Crashing(Source):
    """40 entries; computing ``_crash`` kills the worker process with a segfault."""

    _log: str
    _crash: str = "c17"

    @meta
    def ids():
        return [f"c{i:02d}" for i in range(40)]

    def value(key, _log, _crash):
        if key == _crash:
            import ctypes

            ctypes.string_at(0)  # a segfault in native code
        log_call(_log, "value")
        return np.full(16, int(key[1:]))
