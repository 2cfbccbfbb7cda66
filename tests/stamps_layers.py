"""Module-level layers of the stamp tests (importable by worker processes): Sources whose fields
read raw files named by ``@files`` functions. Calls are logged to a file, one line per call."""

import os

import numpy as np

from connectome_dask import CacheToDisk, Source, files, meta


def log_call(path, tag):
    with open(path, "a") as f:
        f.write(tag + "\n")


class Scans(Source):
    """One raw file per entry, ``<root>/<subject>.bin``; the key is named ``subject`` here."""

    _root: str
    _log: str

    @meta
    def ids(_root):
        return sorted(name[:-4] for name in os.listdir(_root) if name.endswith(".bin"))

    @files
    def _path(subject, _root):
        return os.path.join(_root, f"{subject}.bin")

    def image(_path, _log):
        log_call(_log, "image:" + os.path.basename(_path))
        with open(_path, "rb") as f:
            return np.frombuffer(f.read(), np.uint8)

    def label(subject, _log):
        log_call(_log, "label:" + subject)
        return subject.upper()


class Series(Source):
    """One folder per entry: every file under ``<root>/<key>/`` (nested folders too)."""

    _root: str
    _log: str

    @meta
    def ids(_root):
        return sorted(os.listdir(_root))

    @files
    def _folder(key, _root):
        return os.path.join(_root, key)

    def volume(_folder, _log):
        log_call(_log, "volume:" + os.path.basename(_folder))
        parts = []
        for folder, dirs, names in sorted(os.walk(_folder)):
            for name in sorted(names):
                with open(os.path.join(folder, name), "rb") as f:
                    parts.append(f.read())
        return b"".join(parts)


class Quick(Source):
    """``stamp="stat"``: size and mtime only."""

    _root: str
    _log: str

    @files(stamp="stat")
    def _path(key, _root):
        return os.path.join(_root, f"{key}.bin")

    def image(_path, _log):
        log_call(_log, "image:" + os.path.basename(_path))
        with open(_path, "rb") as f:
            return f.read()


class Remote(Source):
    """Raw objects behind an fsspec URL (``memory://`` in the tests)."""

    _url: str
    _log: str

    @files
    def _object(key, _url):
        return f"{_url}/{key}.bin"

    def data(_object, _log):
        import fsspec

        log_call(_log, "data:" + _object)
        with fsspec.open(_object, "rb") as f:
            return f.read()


def scans(root, log, cache):
    return Scans(root=root, log=log) >> CacheToDisk.simple("image", "label", root=cache)


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


from connectome_dask.layers.external import ExternalBase  # noqa: E402


class Notes(ExternalBase):
    """An ``ExternalBase`` dataset: a ``@files`` method names the raw file of an entry."""

    def __init__(self, root, log):
        super().__init__(inputs=["id"], inherit=["id"])
        self.root, self.log = root, log

    @property
    def ids(self):
        return sorted(name[:-4] for name in os.listdir(self.root) if name.endswith(".txt"))

    @files
    def _path(self, key):
        return os.path.join(self.root, f"{key}.txt")

    def text(self, key):
        log_call(self.log, "text:" + key)
        with open(self._path(key)) as f:
            return f.read()
