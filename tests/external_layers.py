"""Module-level objects wrapped by ``External``/``ExternalBase`` in the tests (importable by workers).

``log`` names a file that every call of a counted method appends a line to (calls are counted
across processes)."""

import functools

from connectome_dask.layers.external import ExternalBase


def log_call(path, tag):
    if path:
        with open(path, "a") as f:
            f.write(tag + "\n")


class Table:
    """A plain dataset object, as downstream libraries write them."""

    kind = "table"  # a plain class attribute: not a field, readable through the wrapper

    def __init__(self, rows, log=""):
        self.rows, self.log = rows, log

    @property
    def ids(self):
        return sorted(self.rows)

    @property
    def size(self):
        return len(self.rows)

    def value(self, key):
        log_call(self.log, f"value:{key}")
        return self.rows[key]

    def double(self, key):
        return 2 * self.rows[key]

    def fails(self, key):
        raise LookupError(f"no row {key!r} here")

    def _private(self, key):
        return "private"

    @staticmethod
    def helper():
        return "static"

    @classmethod
    def build(cls):
        return cls({})


class Pair:
    """Methods of two inputs."""

    def both(self, id, image):
        return (id, image)


class Scans(ExternalBase):
    """The subclassing form: attributes (``root``) are part of the cache keys."""

    def __init__(self, root, n=3, properties=None):
        super().__init__(inputs=["id"], inherit=["id"], properties=properties)
        self.root, self.n = root, n

    @property
    def ids(self):
        return [f"s{i}" for i in range(self.n)]

    @functools.cached_property
    def description(self):
        return f"{self.n} scans in {self.root}"

    def path(self, key):
        return f"{self.root}/{key}.nii"

    def size(self, key):
        return int(key[1:]) * 10
