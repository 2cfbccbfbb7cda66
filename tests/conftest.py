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

    def __dask_tokenize__(self):
        return ("CallCounter", self.path)

    def reset(self):
        open(self.path, "w").close()


@pytest.fixture
def counter(tmp_path):
    return CallCounter(tmp_path / f"calls-{uuid.uuid4().hex}.txt")


@pytest.fixture
def cache_root(tmp_path):
    return os.fspath(tmp_path / "cache")


# Worker processes of the clusters started by the tests must import the test modules (layers
# declared there are pickled by reference, like any importable user module).
_TESTS = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_TESTS, os.environ.get("PYTHONPATH")) if p)


@pytest.fixture(scope="session")
def client():
    """A real 2-process LocalCluster shared by the tests of a session."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=40)
    with Client(cluster, set_as_default=False) as c:
        yield c
    cluster.close()


def _empty_ram():
    from connectome_dask.cache.memory import budget

    budget().clear()
    return len(budget().order)


@pytest.fixture
def empty_ram(client):
    """``client``, with the RAM caches of its workers emptied of what earlier tests left there
    (without ``client.restart()``, whose wait for the workers to come back can time out on a loaded
    machine)."""
    assert sum(client.run(_empty_ram).values()) == 0
    return client
