"""Layers for tests/test_torch.py, in a module of their own as a user writes them: DataLoader workers
started by ``spawn`` or ``forkserver`` import it by name (the tests folder is on their PYTHONPATH)."""

import numpy as np

from connectome_dask import CacheToDisk, CacheToRam, Source, meta


class Volumes(Source):
    _n: int = 10
    _calls: str = ""  # a file that gets one line per computed image (calls counted across processes)

    @meta
    def ids(_n):
        return [f"v{i:02d}" for i in range(_n)]

    def image(key, _calls):
        if _calls:
            with open(_calls, "a") as f:
                f.write(f"{key}\n")
        return np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6) * (int(key[1:]) + 1)

    def label(key):
        return int(key[1:]) % 3


def cached(root, n=10, calls=""):
    """Volumes with ``image`` cached on disk at ``root`` and every field in RAM."""
    return Volumes(n=n, calls=calls) >> CacheToDisk(root, ["image"]) >> CacheToRam()


class Big(Source):
    @meta
    def ids():
        return ["a", "b"]

    def volume(key):
        return np.full((64, 64, 64), ord(key), np.float64)  # 2 MiB
