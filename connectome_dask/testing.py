"""The store conformance suite: prove that a :class:`~connectome_dask.cache.store.Store` keeps the contract.

Subclass :class:`StoreTests` in a pytest module and say how to make your store; pytest collects
the inherited tests::

    from connectome_dask.testing import StoreTests

    class TestMyStore(StoreTests):
        def make_store(self, tmp_path):
            return MyStore(tmp_path / "entries")

        def corrupt(self, store, field, token):  # optional: damage one stored entry
            path = store.path(field, token)
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0xFF
            path.write_bytes(bytes(data))
            return True

Each test gets a fresh ``tmp_path``. Override :meth:`StoreTests.values` when the store holds
other kinds of values (the suite's ``ShardStore`` tests use tuples). This module imports pytest
(like ``zarr.testing``); ``import connectome_dask`` does not import it.
"""

import concurrent.futures
import datetime
import decimal
import os
import pathlib
import pickle
import random
import subprocess
import sys
import uuid
import warnings

import cloudpickle
import numpy as np
import pytest

from .cache.store import MISSING
from .exceptions import CacheWarning

__all__ = ["StoreTests", "VALUES", "TOKENS", "same"]

#: tokens as the cache makes them: 32 hex digits
TOKENS = [f"{i:032x}" for i in range(64)]

#: the value kinds the cache stores natively (``HDF5Store`` without a serializer)
VALUES = [
    None, True, False, 0, -7, 2**100, -(2**70), 1.5, float("inf"), 2j, "", "héllo\x00world", b"", b"\x00\xff",
    (), [], {}, (1, [2, {3: (4, "x")}]), {2: "int key", "b": 2, None: 3, (1, "x"): 4, 2.5: 5, False: 6},
    np.arange(12, dtype=np.int16).reshape(3, 4), np.zeros((2, 0), np.float32), np.array(["ab", "c"]),
    np.array([b"x", b"yz"]), np.array([True, False]), np.float32(1.5), np.int8(-3), np.bool_(True), np.array(4.0),
    np.array(["2020-01-01"], dtype="datetime64[D]"), np.arange(10)[::3],
    {"image": np.ones((2, 2), np.float64), "meta": ("spacing", [1.0, 1.0])},
    datetime.date(2020, 1, 2), datetime.datetime(2020, 1, 2, 3, 4, 5, 6),
    datetime.datetime(2020, 1, 2, 3, 4, tzinfo=datetime.timezone(datetime.timedelta(hours=-5, minutes=-30))),
    datetime.time(23, 59, 59, 999999), datetime.time(8, tzinfo=datetime.timezone.utc),
    datetime.timedelta(days=-3, seconds=5, microseconds=1), datetime.timedelta.max, decimal.Decimal("-1.10E-3"),
    decimal.Decimal("NaN"), pathlib.PurePosixPath("/data/ct"), pathlib.PureWindowsPath(r"C:\data\ct"),
    pathlib.Path("rel/ative"), uuid.UUID("12345678-1234-5678-1234-567812345678"),
    np.datetime64("2020-01-01T01:02:03.5"), np.datetime64("NaT", "s"), np.timedelta64(-5, "ms"),
    np.array([["2020-01", "NaT"]], "datetime64[M]"),
    {datetime.date(2020, 1, 1): [decimal.Decimal(1), uuid.UUID(int=1)]},
]


def same(a, b):
    """Equality that also compares types and dtypes, recursively (NaN and NaT equal themselves)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (np.ndarray, np.generic)) and a.dtype.kind in "Mm":  # NaT != NaT: compare the counts
        return a.dtype == b.dtype and np.shape(a) == np.shape(b) and np.asarray(a).tobytes() == np.asarray(b).tobytes()
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, np.generic):
        return a.dtype == b.dtype and a == b
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(map(type, a)) == list(map(type, b)) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b or (a != a and b != b)


_CHILD = """
import pickle, sys
store, read, write, value = pickle.loads(sys.stdin.buffer.read())
seen = store.get("f", read)
error = store.set("f", write, value)
sys.stdout.buffer.write(pickle.dumps((seen, error is None)))
"""


class StoreTests:
    """The contract of a store (``connectome_dask.cache.store.Store``), as pytest tests.

    Define :meth:`make_store`; optionally :meth:`values`, :meth:`corrupt` and :meth:`break_writes`."""

    def make_store(self, tmp_path):
        """A new store; entries under ``tmp_path`` if it keeps files."""
        raise NotImplementedError(f"{type(self).__name__}: define make_store(self, tmp_path) to return the store")

    def values(self):
        """The values the store must give back equal, with their types and dtypes."""
        return list(VALUES)

    def corrupt(self, store, field, token):
        """Damage the stored entry; return False if the store has nothing that can be damaged."""
        return False

    def break_writes(self, store, monkeypatch):
        """Make writes fail as the environment would (read-only, full, denied), e.g. with
        ``monkeypatch``; return False if the store cannot fail to write."""
        return False

    @pytest.fixture
    def store(self, tmp_path):
        return self.make_store(tmp_path)

    def test_get_of_a_missing_entry_is_missing(self, store):
        assert store.get("f", TOKENS[0]) is MISSING
        assert not store.contains("f", TOKENS[0])

    def test_set_get_round_trip(self, store):
        for token, value in zip(TOKENS, self.values()):
            assert store.set("f", token, value) is None, "set returns None when it stored the value"
            assert store.contains("f", token)
            assert same(store.get("f", token), value), value

    def test_set_twice_is_harmless_and_fields_are_separate(self, store):
        value = self.values()[-1]
        assert store.set("a", TOKENS[1], value) is None
        assert store.set("a", TOKENS[1], value) is None
        assert same(store.get("a", TOKENS[1]), value)
        assert store.get("b", TOKENS[1]) is MISSING and not store.contains("b", TOKENS[1])
        assert store.get("a", TOKENS[2]) is MISSING

    def test_missing_names_only_entries_it_does_not_hold(self, store):
        value = self.values()[-1]
        for token in TOKENS[:3]:
            assert store.set("f", token, value) is None
        assert store.set("g", TOKENS[3], value) is None
        for tokens in (TOKENS, TOKENS[:2], []):
            found = store.missing("f", list(tokens))
            assert found is None or set(found) == set(tokens) - set(TOKENS[:3]), found

    def test_pickling_keeps_the_configuration_and_the_entries_of_a_persistent_store(self, store):
        first, second = self.values()[:2]
        store.set("f", TOKENS[3], first)
        copy = pickle.loads(cloudpickle.dumps(store))
        assert type(copy) is type(store) and copy.token == store.token and copy.persistent == store.persistent
        assert copy.set("f", TOKENS[4], second) is None and same(copy.get("f", TOKENS[4]), second)
        if store.persistent:  # one set of entries, whichever copy wrote them
            assert same(copy.get("f", TOKENS[3]), first) and same(store.get("f", TOKENS[4]), second)
            store.set("f", TOKENS[5], first)
            assert same(copy.get("f", TOKENS[5]), first)

    def test_the_persistent_flag_is_honest(self, store):
        """A copy in another process writes an entry: the original sees it iff the store is persistent."""
        assert isinstance(store.persistent, bool)
        first, second = self.values()[:2]
        store.set("f", TOKENS[6], first)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        message = cloudpickle.dumps((store, TOKENS[6], TOKENS[7], second))
        out = subprocess.run([sys.executable, "-c", _CHILD], input=message, capture_output=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr.decode()
        seen, stored = pickle.loads(out.stdout)
        if store.persistent:
            assert same(seen, first) and stored
            assert same(store.get("f", TOKENS[7]), second), \
                "persistent = True, but an entry written in another process is missing"
        else:
            assert store.get("f", TOKENS[7]) is MISSING, "persistent = False, but entries outlive their process"

    def test_concurrent_writers_from_threads(self, store):
        values = [v for v in self.values() if v is not None][:8]
        errors = []

        def work(seed):
            rng = random.Random(seed)
            for _ in range(30):
                i = rng.randrange(len(values))
                error = store.set("t", TOKENS[i], values[i])
                if error is not None:
                    errors.append(error)
                got = store.get("t", TOKENS[i])
                assert got is MISSING or same(got, values[i])

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(work, range(8)))
        assert errors == []
        for i, value in enumerate(values):
            got = store.get("t", TOKENS[i])
            assert got is MISSING or same(got, value)

    def test_a_corrupt_entry_is_a_miss_with_one_warning(self, store):
        value = self.values()[-1]
        for token in TOKENS[8:10]:
            store.set("c", token, value)
        if not all([self.corrupt(store, "c", token) for token in TOKENS[8:10]]):
            pytest.skip(f"{type(self).__name__} defines no corrupt (the store keeps nothing that can be damaged?)")
        fresh = pickle.loads(cloudpickle.dumps(store))  # nothing remembered from the writes
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert fresh.get("c", TOKENS[8]) is MISSING and fresh.get("c", TOKENS[9]) is MISSING
        assert len([w for w in caught if issubclass(w.category, CacheWarning)]) == 1, "one CacheWarning per cause"
        assert fresh.set("c", TOKENS[8], value) is None and same(fresh.get("c", TOKENS[8]), value)

    def test_a_failed_write_returns_the_error_after_one_warning(self, store, monkeypatch):
        first, second = self.values()[:2]
        store.set("w", TOKENS[10], first)
        if not self.break_writes(store, monkeypatch):
            pytest.skip(f"{type(self).__name__} defines no break_writes (the store cannot fail to write?)")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            errors = [store.set("w", TOKENS[11], second), store.set("w", TOKENS[12], second)]
        assert all(isinstance(e, BaseException) for e in errors), "set returns the error that kept the value out"
        assert len([w for w in caught if issubclass(w.category, CacheWarning)]) == 1, "one CacheWarning per cause"
        assert same(store.get("w", TOKENS[10]), first)
        monkeypatch.undo()
        assert pickle.loads(cloudpickle.dumps(store)).get("w", TOKENS[11]) is MISSING, "the failed write left an entry"
