"""Module-level layers and a writer script for the object-storage tests (importable by worker processes
and by the subprocesses the tests start)."""

import json
import sys
import time

import numpy as np

from connectome_dask import CacheToDisk, Source, meta


def log_call(path, tag):
    with open(path, "a") as f:
        f.write(tag + "\n")


class Volumes(Source):
    _log: str
    _n: int = 6
    _side: int = 16

    @meta
    def ids(_n):
        return [f"v{i:02d}" for i in range(_n)]

    def image(key, _log, _side):
        log_call(_log, "image")
        return np.random.default_rng(int(key[1:])).random((_side, _side, _side), dtype=np.float32)

    def meta(key, _log):
        log_call(_log, "meta")
        return {"id": key, "spacing": (1.0, 1.0, 2.5), "index": int(key[1:])}


def pipeline(log, root, n=6, side=16, **options):
    """Volumes >> CacheToDisk of ``image`` and ``meta`` under ``root`` (``options``: storage_options, local)."""
    return Volumes(log=log, n=n, side=side) >> CacheToDisk.simple("image", "meta", root=root, **options)


def expected_image(key, side=16):
    return np.random.default_rng(int(key[1:])).random((side, side, side), dtype=np.float32)


def main():
    """``python s3_layers.py JSON``: read every entry of ``ids`` of a pipeline (computing and storing the
    misses), after waiting for the start time; the options come as JSON (what a worker would get)."""
    job = json.loads(sys.argv[1])
    ds = pipeline(job["log"], job["root"], n=job["n"], side=job["side"], storage_options=job["storage_options"])
    if job.get("ready"):
        open(job["ready"], "w").close()
    while time.time() < job.get("start", 0):
        time.sleep(0.001)
    for key in job["ids"]:
        assert np.array_equal(ds.image(key), expected_image(key, job["side"]))
        assert ds.meta(key)["index"] == int(key[1:])
    print("ok")


if __name__ == "__main__":
    main()
