"""Module-level datasets for the dataset-layer tests (importable by worker processes).

``_log`` names a file that every call of a counted field appends a line to, so calls are
counted across processes."""

from connectome_dask import Source, Split, Transform, impure, meta


def log_call(path, tag):
    if path:
        with open(path, "a") as f:
            f.write(tag + "\n")


class Scans(Source):
    """Scans of patients: the left side of joins, the dataset of filters and groups."""

    _log: str = ""

    @meta
    def ids():
        return ["s3", "s1", "s2", "s4"]

    def patient(key):
        return {"s1": "p1", "s2": "p2", "s3": "p1", "s4": "p3"}[key]

    def side(key):
        return {"s1": "L", "s2": "L", "s3": "R", "s4": "R"}[key]

    def size(key, _log):
        log_call(_log, f"size:{key}")
        return int(key[1:]) * 10

    @impure
    def noise(key):
        import random

        return random.random()


class Records(Source):
    """Clinical records: the right side of joins."""

    @meta
    def ids():
        return ["r1", "r2", "r5"]

    def patient(key):
        return {"r1": "p1", "r2": "p2", "r5": "p5"}[key]

    def age(key):
        return {"r1": 40, "r2": 50, "r5": 70}[key]


class SiteA(Source):
    _log: str = ""

    @meta
    def ids():
        return ["a2", "a1"]

    def value(key, _log):
        log_call(_log, f"value:{key}")
        return "A" + key

    def only_a(key):
        return 1


class SiteB(Source):
    _log: str = ""

    @meta
    def ids():
        return ["b1"]

    def value(key, _log):
        log_call(_log, f"value:{key}")
        return "B" + key


class Double(Transform):
    __inherit__ = True
    _log: str = ""

    def value(value, _log):
        log_call(_log, f"double:{value}")
        return value * 2


class Slices(Split):
    """Each scan into ``size // 10`` slices; ``_prefix`` is a parameter used by ``__split__``."""

    __inherit__ = ["patient"]
    _prefix: str = "-"

    def __split__(id, size, _prefix):
        for i in range(size // 10):
            yield f"{id}{_prefix}{i}", i

    def index(__part__):
        return __part__

    def slice_size(size, __part__):
        return size + __part__
