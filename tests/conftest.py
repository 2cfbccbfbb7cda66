"""Shared fixtures. User functions may run in other processes (dask workers), so calls are
counted through files, never through in-process side effects."""

import os
import uuid

import pytest


class CallCounter:
    """Counts calls across processes: each call appends one line to a file."""

    def __init__(self, path):
        self.path = str(path)
        open(self.path, "a").close()

    def __call__(self, tag="call"):
        with open(self.path, "a") as f:
            f.write(f"{tag}\n")

    def count(self, tag=None):
        with open(self.path) as f:
            lines = f.read().split()
        return len(lines) if tag is None else lines.count(tag)

    def reset(self):
        open(self.path, "w").close()


@pytest.fixture
def counter(tmp_path):
    return CallCounter(tmp_path / f"calls-{uuid.uuid4().hex}.txt")


@pytest.fixture
def cache_root(tmp_path):
    return os.fspath(tmp_path / "cache")
