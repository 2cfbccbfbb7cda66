"""The cache on object storage: a real S3 endpoint (moto's server on 127.0.0.1) reached through s3fs,
and fsspec's ``memory://`` file system for the fast cases. User functions count their calls in a file
(they run in dask workers and subprocesses too)."""

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
import warnings

import numpy as np
import pytest

from connectome_dask import CacheColumns, Source, meta
from connectome_dask.cache import remote
from connectome_dask.cache.hdf5 import HDF5Store
from connectome_dask.cache.remote import LIST_MIN, RemoteStore
from connectome_dask.cache.root import MARKER
from connectome_dask.cache.store import MISSING, as_store, local
from connectome_dask.exceptions import CacheWarning, SerializationError, StoreError
from connectome_dask.layers.columns import ShardStore
from connectome_dask.serializers import NumpySerializer
from connectome_dask.testing import TOKENS, VALUES, StoreTests

import boto3  # the test extra installs boto3, moto[server] and s3fs
import fsspec
import s3fs
import s3_layers
from s3_layers import expected_image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="session")
def endpoint():
    """moto's S3 server on a free port of 127.0.0.1, for the whole session."""
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in KEYS}
    os.environ.update(KEYS)  # no lookup of credentials anywhere else (no instance metadata service)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def client_of(endpoint, service="s3", **keys):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1", **keys)


@pytest.fixture
def bucket(endpoint):
    name = f"t-{uuid.uuid4().hex[:12]}"
    client_of(endpoint).create_bucket(Bucket=name)
    return name


def options(endpoint, key="testing", secret="testing"):
    return {"endpoint_url": endpoint, "key": key, "secret": secret}


def objects(endpoint, bucket, prefix=""):
    """{key: bytes} of every object under ``prefix`` (boto3, not the code under test)."""
    s3 = client_of(endpoint)
    found = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in found}


def entry_keys(endpoint, bucket, prefix="cache/"):
    return sorted(k for k in objects(endpoint, bucket, prefix) if k.endswith(".h5"))


@contextlib.contextmanager
def s3_requests(monkeypatch):
    """The S3 operations s3fs sends in the block, as a list of (operation, Range or None)."""
    calls = []
    original = s3fs.S3FileSystem._call_s3

    async def recording(self, method, *args, **kwargs):
        calls.append((method, kwargs.get("Range")))
        return await original(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", recording)
    yield calls
    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", original)


def cache_warnings(record):
    return [str(w.message) for w in record if issubclass(w.category, CacheWarning)]


# --- memory:// : the store's behaviour without a server ------------------------------------------------------------

def test_a_url_root_has_the_layout_of_a_local_root_and_its_files_read_as_local_entries(counter, tmp_path):
    url = f"memory://{uuid.uuid4().hex}/cache"
    ds = s3_layers.pipeline(counter.path, url)
    local = s3_layers.pipeline(counter.path, str(tmp_path / "local"))
    for key in ("v01", "v04"):
        assert np.array_equal(ds.image(key), expected_image(key))
        assert ds.meta(key) == {"id": key, "spacing": (1.0, 1.0, 2.5), "index": int(key[1:])}
        local.image(key), local.meta(key)
    assert counter.count("image") == 4 and counter.count("meta") == 4
    fs, base = fsspec.core.url_to_fs(url)
    remote_files = {p[len(base) + 1:]: fs.cat_file(p) for p in fs.find(base)}
    local_files = {os.path.relpath(os.path.join(d, f), tmp_path / "local"): os.path.join(d, f)
                   for d, _, files in os.walk(tmp_path / "local") for f in files}
    assert set(remote_files) == set(local_files) and MARKER in remote_files and len(remote_files) == 5
    assert remote_files[MARKER] == open(local_files[MARKER], "rb").read()
    # an object copied with ordinary tools into a local root is an entry there
    copy = tmp_path / "copied"
    for name, data in remote_files.items():
        os.makedirs(os.path.dirname(copy / name), exist_ok=True)
        (copy / name).write_bytes(data)
    fresh = s3_layers.pipeline(counter.path, str(copy))
    assert fresh.meta("v04")["spacing"] == (1.0, 1.0, 2.5) and np.array_equal(fresh.image("v01"), expected_image("v01"))
    again = s3_layers.pipeline(counter.path, url)
    assert np.array_equal(again.image("v04"), expected_image("v04"))
    assert counter.count() == 8  # every read after the first was a hit


def test_values_keep_their_types_through_a_url_root():
    store = RemoteStore(f"memory://{uuid.uuid4().hex}/c")
    values = {"a": np.arange(12, dtype=np.int16).reshape(3, 4), "b": (1, "two", None, 3.5, b"\0x"),
              "c": {1: [np.float32(2.5)], "k": np.zeros(0)}, "d": np.datetime64("2026-01-02", "D")}
    for i, value in enumerate(values.values()):
        assert store.set("f", f"t{i}", value) is None
    fresh = RemoteStore(store.root)
    assert fresh.get("f", "t1") == values["b"] and type(fresh.get("f", "t1")) is tuple
    assert fresh.get("f", "t2")[1][0] == np.float32(2.5) and list(fresh.get("f", "t2")) == [1, "k"]
    assert np.array_equal(fresh.get("f", "t0"), values["a"]) and fresh.get("f", "t0").dtype == np.int16
    assert fresh.get("f", "t3") == values["d"] and fresh.get("f", "nope") is MISSING


def test_roots_are_checked_and_routed(tmp_path):
    fs = fsspec.filesystem("memory")
    prefix = f"/{uuid.uuid4().hex}"
    fs.pipe_file(f"{prefix}/notes.txt", b"not a cache")
    with pytest.raises(StoreError, match="not a connectome_dask cache"):
        RemoteStore(f"memory://{prefix}")
    fs.pipe_file(f"{prefix}/other/{MARKER}", b'{"format": "zarr"}')
    with pytest.raises(StoreError, match="not a connectome_dask cache marker"):
        RemoteStore(f"memory://{prefix}/other")
    # a root whose marker was deleted but which holds only entries gets its marker back
    store = RemoteStore(f"memory://{prefix}/kept")
    store.set("image", "abc", np.ones(3))
    fs.rm_file(f"{prefix}/kept/{MARKER}")
    assert RemoteStore(f"memory://{prefix}/kept").get("image", "abc").sum() == 3 and fs.exists(f"{prefix}/kept/{MARKER}")
    assert isinstance(as_store(f"file://{tmp_path}/plain"), HDF5Store)
    assert isinstance(as_store(str(tmp_path / "plain")), HDF5Store)
    with pytest.raises(ValueError, match="local= is for a URL root"):
        s3_layers.pipeline("log", str(tmp_path / "plain"), local=str(tmp_path / "copy"))
    with pytest.raises(StoreError, match="cannot open the cache root"):
        RemoteStore("nosuchprotocol://bucket/x")


def test_a_large_entry_is_read_in_ranges_and_each_byte_is_fetched_once(monkeypatch):
    monkeypatch.setattr(remote, "GET_BYTES", 1 << 16)
    monkeypatch.setattr(remote, "BLOCK_BYTES", 1 << 12)
    store = RemoteStore(f"memory://{uuid.uuid4().hex}/c")
    big = np.random.default_rng(0).random(300_000)  # 2.4 MB: a first GET of 64 KiB, then ranges
    parts = {"x": big, "y": [np.arange(50_000), "text", (big[:10_000],)]}
    store.set("f", "big", big), store.set("f", "parts", parts)
    size = store.fs.size(store.path("f", "big"))
    fetched = []
    original = type(store.fs).cat_file

    def cat_file(fs, path, start=None, end=None, **kw):
        data = original(fs, path, start=start, end=end, **kw)
        fetched.append(len(data))
        return data

    monkeypatch.setattr(type(store.fs), "cat_file", cat_file)
    assert np.array_equal(store.get("f", "big"), big)
    assert len(fetched) > 2 and max(fetched) < 2 << 16 and sum(fetched) < size + 3 * (1 << 12)
    fetched.clear()
    got = store.get("f", "parts")
    assert np.array_equal(got["x"], big) and np.array_equal(got["y"][0], np.arange(50_000))
    assert got["y"][1] == "text" and np.array_equal(got["y"][2][0], big[:10_000])


def test_the_local_copy_serves_hits_after_the_root_lost_them(counter, tmp_path):
    url = f"memory://{uuid.uuid4().hex}/cache"
    fs, base = fsspec.core.url_to_fs(url)
    writer = s3_layers.pipeline(counter.path, url, local=str(tmp_path / "node1"))
    writer.image("v00"), writer.meta("v00")  # misses: written to the root and to node1's copy
    assert counter.count() == 2 and len([p for p in fs.find(base) if p.endswith(".h5")]) == 2
    assert len(list(HDF5Store(str(tmp_path / "node1")).entries())) == 2
    reader = s3_layers.pipeline(counter.path, url, local=str(tmp_path / "node2"))
    assert np.array_equal(reader.image("v00"), expected_image("v00")) and reader.meta("v00")["index"] == 0
    assert counter.count() == 2 and len(list(HDF5Store(str(tmp_path / "node2")).entries())) == 2
    fs.rm(base, recursive=True)  # the root is gone: node2's copy still has the entries
    again = s3_layers.pipeline(counter.path, url, local=str(tmp_path / "node2"))
    assert np.array_equal(again.image("v00"), expected_image("v00")) and counter.count() == 2


def test_cache_columns_on_a_url_root(counter):
    url = f"memory://{uuid.uuid4().hex}/cols"

    class Labels(Source):
        _log: str

        @meta
        def ids():
            return list(range(10))

        def label(i, _log):
            s3_layers.log_call(_log, "label")
            return (i % 3, f"n{i}")

    first = Labels(log=counter.path) >> CacheColumns.simple("label", root=url, shard_size=4)
    assert [first.label(i) for i in range(10)] == [(i % 3, f"n{i}") for i in range(10)]
    fresh = Labels(log=counter.path) >> CacheColumns.simple("label", root=url, shard_size=4)
    assert fresh.label(9) == (0, "n9") and counter.count() == 10
    fs, base = fsspec.core.url_to_fs(url)
    assert len([p for p in fs.find(base) if p.endswith(".h5")]) == 3  # shards of ids 0-3, 4-7, 8-9


def _truncate_object(store, field, token):
    """Damage an entry as a half-finished copy or a bad tool would: its object cut to half its bytes."""
    path = store.path(field, token)
    data = store.fs.cat_file(path)
    store.fs.pipe_file(path, data[:len(data) // 2])
    return True


def _denied(*args, **kwargs):
    raise PermissionError(13, "Access Denied")


class TestRemoteStoreOnMemory(StoreTests):
    """The conformance suite on fsspec's memory:// file system (its entries live in this process only)."""

    def make_store(self, tmp_path):
        return RemoteStore(f"memory://{uuid.uuid4().hex}/cache")

    corrupt = staticmethod(_truncate_object)

    def break_writes(self, store, monkeypatch):
        monkeypatch.setattr(store.fs, "pipe_file", _denied)
        return True

    def test_entries_live_in_this_process(self, store):
        assert store.persistent is False and RemoteStore(f"s3://{uuid.uuid4().hex}/x", create=False).persistent


class TestRemoteStoreWithALocalCopy(TestRemoteStoreOnMemory):
    """The same, every entry also kept in a node-local folder (so entries outlive the process there): the
    copy must not hide a corrupt entry's replacement or a failed write."""

    def make_store(self, tmp_path):
        return RemoteStore(f"memory://{uuid.uuid4().hex}/cache", local=tmp_path / "copy")

    def corrupt(self, store, field, token):
        os.unlink(store._copy.path(field, token))  # the node lost its copy; the root's object is damaged
        return _truncate_object(store, field, token)

    def test_entries_live_in_this_process(self, store):
        assert store.persistent is True  # in the local copy


class TestShardStoreOnAURL(StoreTests):
    """CacheColumns' store over a URL root whose serializer takes arrays only: it judges each value of a shard."""

    def make_store(self, tmp_path):
        return ShardStore(RemoteStore(f"memory://{uuid.uuid4().hex}/cache", serializer=NumpySerializer()))

    def values(self):
        return [(value,) for value in VALUES if isinstance(value, np.ndarray)] + [(np.arange(3), np.ones(2))]

    def corrupt(self, store, field, token):
        return _truncate_object(store.store, field, token)

    def break_writes(self, store, monkeypatch):
        monkeypatch.setattr(store.store.fs, "pipe_file", _denied)
        return True

    def test_the_serializer_judges_each_value_of_a_shard(self, store):
        with pytest.raises(SerializationError):
            store.set("f", TOKENS[0], (np.arange(3), "not an array"))
        assert store.get("f", TOKENS[0]) is MISSING


# --- a real S3 endpoint ------------------------------------------------------------------------------------------

def test_eager_misses_then_hits_on_s3_with_one_request_per_access(endpoint, bucket, counter, monkeypatch):
    url = f"s3://{bucket}/cache"
    ds = s3_layers.pipeline(counter.path, url, storage_options=options(endpoint))
    with s3_requests(monkeypatch) as calls:
        assert np.array_equal(ds.image("v02"), expected_image("v02"))
    assert [c[0] for c in calls] == ["get_object", "put_object"]  # a miss: one GET, one PUT, no LIST or HEAD
    assert counter.count() == 1 and len(entry_keys(endpoint, bucket)) == 1
    fresh = s3_layers.pipeline(counter.path, url, storage_options=options(endpoint))
    with s3_requests(monkeypatch) as calls:
        assert np.array_equal(fresh.image("v02"), expected_image("v02"))
    assert [c[0] for c in calls] == ["get_object"] and counter.count() == 1
    assert fresh.meta("v03")["index"] == 3 and s3_layers.pipeline(counter.path, url, storage_options=options(
        endpoint)).meta("v03") == {"id": "v03", "spacing": (1.0, 1.0, 2.5), "index": 3}
    assert counter.count() == 2


def test_a_miss_costs_one_request(endpoint, bucket, monkeypatch):
    store = RemoteStore(f"s3://{bucket}/cache", storage_options=options(endpoint))
    with s3_requests(monkeypatch) as calls:
        assert not store.contains("image", "abc")
        assert store.get("image", "abc") is MISSING
    assert [c[0] for c in calls] == ["get_object", "get_object"]


def test_missing_lists_a_field_once_for_many_tokens_and_counts_the_local_copy(endpoint, bucket, monkeypatch,
                                                                                tmp_path):
    store = RemoteStore(f"s3://{bucket}/cache", storage_options=options(endpoint), local=tmp_path / "copy")
    tokens = [f"{i:x}{i:031x}" for i in range(LIST_MIN)]
    store.set("image", tokens[0], np.zeros(3))
    other = RemoteStore(f"s3://{bucket}/cache", storage_options=options(endpoint))
    other.set("image", tokens[1], np.ones(3))  # not in this store's local copy
    other.set("meta", tokens[2], np.ones(3))  # another field
    store._copy.set("image", tokens[3], np.ones(3))  # only in the local copy: a get serves it from there
    with s3_requests(monkeypatch) as calls:
        assert store.missing("image", tokens) == set(tokens) - set(tokens[:2]) - {tokens[3]}
        assert store.missing("image", tokens[:LIST_MIN - 1]) is None  # fewer: a GET each is cheaper
    assert [c[0] for c in calls] == ["list_objects_v2"]
    with s3_requests(monkeypatch) as calls:
        assert store.missing("nothing", tokens) == set(tokens)
    assert "get_object" not in [c[0] for c in calls] and len(calls) <= 3  # s3fs: LIST, HEAD, LIST

    def denied(*args, **kwargs):
        raise PermissionError("Access Denied")

    monkeypatch.setattr(store.fs, "find", denied)
    assert store.missing("image", tokens) is None  # a denied LIST: each entry is looked up


def test_persist_lists_each_field_once_and_computes_missing_entries_without_a_get(endpoint, bucket, counter,
                                                                                   cluster, caplog):
    """Requests counted by the server (it logs every request, from the workers too)."""
    url = f"s3://{bucket}/cache"
    ds = s3_layers.pipeline(counter.path, url, n=20, storage_options=options(endpoint))
    ds.image("v00")  # stored here, before persist: one entry of one field is there
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        report = ds.persist(cluster, progress=False)
    requests = server_requests(caplog, bucket)
    assert (report.computed, report.cached, report.failed) == (20, 0, {})  # v00's meta was missing
    assert counter.count("image") == 20 and counter.count("meta") == 20
    assert len([r for r in requests if r[0] == "PUT" and r[1].endswith(".h5")]) == 39
    gets = [r[1] for r in requests if r[0] == "GET" and r[1].endswith(".h5")]
    assert len(gets) == 1 and gets[0].startswith(f"/{bucket}/cache/image/")  # the one entry there: a hit
    listed = [r[2] for r in requests if r[2]]
    assert set(listed) == {"cache/image", "cache/meta"} and len(listed) <= 3  # s3fs lists an empty field twice
    caplog.clear()
    fresh = s3_layers.pipeline(counter.path, url, n=20, storage_options=options(endpoint))
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        again = fresh.persist(cluster, progress=False)
    requests = server_requests(caplog, bucket)
    assert (again.computed, again.cached) == (0, 20) and counter.count() == 40
    assert len([r for r in requests if r[0] == "GET" and r[1].endswith(".h5")]) == 40  # hits are read (verified)
    assert not [r for r in requests if r[0] == "PUT"]


def server_requests(caplog, bucket):
    """``(method, path, LIST prefix or None)`` of the requests moto's server logged for ``bucket``."""
    found = []
    for record in caplog.records:
        match = re.search(r"(GET|PUT|HEAD|POST|DELETE) (/[^ ?]*)(\?[^ ]*)? HTTP", record.getMessage())
        if match and match.group(2).startswith(f"/{bucket}"):
            query = urllib.parse.parse_qs((match.group(3) or "?")[1:])
            listed = query.get("prefix", [None])[0] if "list-type" in query else None
            found.append((match.group(1), match.group(2), listed and listed.rstrip("/")))
    return found


def test_publish_is_create_only_and_an_existing_object_is_another_writers_success(endpoint, bucket):
    store = RemoteStore(f"s3://{bucket}/cache", storage_options=options(endpoint))
    assert store.set("image", "abc", np.zeros(4)) is None
    key = "cache/image/a/abc.h5"
    before = objects(endpoint, bucket)[key]
    other = RemoteStore(f"s3://{bucket}/cache", storage_options=options(endpoint))
    assert other.set("image", "abc", np.ones(4)) is None  # S3 refused the PUT (If-None-Match: *): not an error
    assert objects(endpoint, bucket)[key] == before and other.get("image", "abc").sum() == 0


@pytest.mark.parametrize("damage", ["truncated", "bit flipped", "empty"])
def test_a_damaged_object_is_a_miss_with_one_warning_and_is_replaced(endpoint, bucket, counter, damage):
    url = f"s3://{bucket}/cache"
    ds = s3_layers.pipeline(counter.path, url, storage_options=options(endpoint))
    for key in ("v00", "v01"):
        ds.image(key)
    s3 = client_of(endpoint)
    for key in entry_keys(endpoint, bucket):
        data = bytearray(objects(endpoint, bucket)[key])
        if damage == "truncated":
            data = data[:len(data) // 2]
        elif damage == "bit flipped":
            data[len(data) - 5000] ^= 0x10  # inside the array's bytes
        else:
            data = b""
        s3.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    fresh = s3_layers.pipeline(counter.path, url, storage_options=options(endpoint))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for key in ("v00", "v01"):
            assert np.array_equal(fresh.image(key), expected_image(key))
    messages = cache_warnings(record)
    assert len(messages) == 1 and "corrupt" in messages[0] and "field 'image'" in messages[0]
    assert counter.count("image") == 4  # recomputed ...
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        again = s3_layers.pipeline(counter.path, url, storage_options=options(endpoint))
        assert np.array_equal(again.image("v01"), expected_image("v01"))
    assert counter.count("image") == 4 and not cache_warnings(record)  # ... and replaced


def test_persist_on_a_cluster_whose_workers_write_to_the_bucket_with_credentials_from_their_environment(
        endpoint, bucket, counter, monkeypatch, cluster):
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # the client: the same environment as the workers
    url = f"s3://{bucket}/cache"
    ds = s3_layers.pipeline(counter.path, url)
    report = ds.persist(cluster, progress=False)
    assert (report.computed, report.cached, report.failed) == (6, 0, {})
    assert counter.count("image") == 6 and counter.count("meta") == 6
    assert len(entry_keys(endpoint, bucket)) == 12
    fresh = s3_layers.pipeline(counter.path, url)
    assert fresh.persist(cluster, progress=False).cached == 6
    assert all(np.array_equal(fresh.image(k), expected_image(k)) for k in fresh.ids) and counter.count() == 12


def test_delayed_on_a_cluster_with_credentials_in_storage_options(endpoint, bucket, counter, cluster):
    url = f"s3://{bucket}/lazy"
    ds = s3_layers.pipeline(counter.path, url, storage_options=options(endpoint))
    lazy = ds.image.delayed("v05")
    assert np.array_equal(cluster.compute(lazy).result(), expected_image("v05"))
    assert counter.count("image") == 1 and len(entry_keys(endpoint, bucket, "lazy/")) == 1  # stored by a worker
    assert np.array_equal(cluster.compute(ds.image.delayed("v05")).result(), expected_image("v05"))
    assert counter.count("image") == 1


def test_four_processes_writing_overlapping_entries(endpoint, bucket, tmp_path):
    """Four writers start at the same instant, each on 4 of 8 ids, every id shared by two of them."""
    url, log = f"s3://{bucket}/cache", str(tmp_path / "calls.txt")
    ids = [f"v{i:02d}" for i in range(8)]
    start = time.time() + 3
    jobs = [subprocess.Popen([sys.executable, os.path.join(HERE, "s3_layers.py"), json.dumps(
        {"log": log, "root": url, "n": 8, "side": 32, "storage_options": options(endpoint), "start": start,
         "ids": [ids[(2 * w + j) % 8] for j in range(4)]})], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, HERE]))) for w in range(4)]
    outputs = [job.communicate(timeout=120) for job in jobs]
    assert [job.returncode for job in jobs] == [0] * 4, outputs
    assert all(out.strip() == "ok" and "Warning" not in err for out, err in outputs), outputs
    with open(log) as f:
        calls = f.read().split()
    assert 8 <= calls.count("image") <= 16  # each id computed by one or both of its writers
    assert len(entry_keys(endpoint, bucket)) == 16
    store = RemoteStore(url, storage_options=options(endpoint))
    for field, token, *_ in store.entries():
        assert store.problem(field, token) is None


class _Proxy:
    """A TCP proxy to the S3 endpoint that counts the bytes clients send (to kill a writer mid-upload)."""

    def __init__(self, target, threshold):
        host, port = target.rsplit("/", 1)[1].split(":")
        self.target, self.threshold, self.sent = (host, int(port)), threshold, 0
        self.reached = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source, sink, upload):
        try:
            while True:
                data = source.recv(1 << 16)
                if not data:
                    break
                sink.sendall(data)
                if upload:
                    self.sent += len(data)
                    if self.sent > self.threshold:
                        self.reached.set()
                        time.sleep(0.05)  # slow the upload down: the writer is killed during it
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def close(self):
        self.server.close()


def test_a_writer_killed_mid_upload_leaves_no_object(endpoint, bucket, counter):
    proxy = _Proxy(endpoint, threshold=1 << 20)
    url = f"s3://{bucket}/cache"
    RemoteStore(url, storage_options=options(endpoint))  # the root's marker, written directly
    code = ("import sys, numpy as np; from connectome_dask.cache.remote import RemoteStore; "
            f"store = RemoteStore({url!r}, storage_options={options(proxy.url)!r}); "
            "store.set('image', 'killed', np.random.default_rng(0).random(2_000_000))")  # 16 MB: one PUT
    writer = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        assert proxy.reached.wait(60), "the upload did not start"
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(10)
    finally:
        proxy.close()
    assert writer.returncode == -signal.SIGKILL
    time.sleep(0.3)  # the server sees the connection close
    assert entry_keys(endpoint, bucket) == []
    store = RemoteStore(url, storage_options=options(endpoint))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a miss, not a corrupt entry
        assert store.get("image", "killed") is MISSING


@pytest.fixture
def read_only(endpoint, bucket):
    """Credentials that may read the bucket but not write it (moto enforcing IAM policies)."""
    iam = client_of(endpoint, "iam")
    keys = {}
    for user, actions in (("reader", ["s3:GetObject", "s3:ListBucket"]), ("admin", ["s3:*"])):
        name = f"{user}-{uuid.uuid4().hex[:6]}"
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        keys[user] = options(endpoint, key["AccessKeyId"], key["SecretAccessKey"])

    def enforce(count):
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=count, method="POST",
                                                      headers={"Content-Type": "text/plain"}))

    enforce(b"0")
    try:
        yield keys
    finally:
        enforce(b"inf")


def test_a_bucket_that_denies_writes_computes_warns_once_and_returns_the_error(
        endpoint, bucket, counter, read_only, cluster):
    url = f"s3://{bucket}/denied"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ds = s3_layers.pipeline(counter.path, url, storage_options=read_only["reader"])
        for key in ("v00", "v01"):
            assert np.array_equal(ds.image(key), expected_image(key)) and ds.meta(key)["index"] == int(key[1:])
    messages = cache_warnings(record)
    assert len(messages) == 1 and "cannot" in messages[0] and url in messages[0], messages
    assert counter.count() == 4
    store = RemoteStore(url, storage_options=read_only["reader"], create=False)
    with pytest.warns(CacheWarning, match="cannot write to the cache root"):
        assert isinstance(store.set("image", "abc", np.zeros(3)), PermissionError)
    report = ds.persist(cluster, errors="report", progress=False)
    assert report.computed + report.cached + len(report.failed) == 6 and report.cached == 0
    admin = RemoteStore(url, storage_options=read_only["admin"], create=False)
    assert list(admin.entries()) == []  # nothing was stored
    assert ds.persist(cluster, errors="report", progress=False).cached == 0


def test_a_missing_bucket_computes_with_one_warning(endpoint, counter):
    url = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/cache"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ds = s3_layers.pipeline(counter.path, url, storage_options=options(endpoint))
        for key in ("v00", "v01"):
            assert np.array_equal(ds.image(key), expected_image(key)) and ds.meta(key)["index"] == int(key[1:])
    messages = cache_warnings(record)
    assert len(messages) == 1 and url in messages[0] and counter.count() == 4, messages


def test_the_cache_command_line_on_s3(endpoint, bucket):
    url = f"s3://{bucket}/cache"
    store = RemoteStore(url, storage_options=options(endpoint))
    for token in ("a1", "b2", "c3"):
        store.set("image", token, np.full(100, 1.0))
    store.set("meta", "d4", {"x": 1})
    key = "cache/image/b/b2.h5"
    client_of(endpoint).put_object(Bucket=bucket, Key=key, Body=objects(endpoint, bucket)[key][:300])
    env = dict(os.environ, PYTHONPATH=ROOT, AWS_ENDPOINT_URL=endpoint)

    def cli(*args):
        out = subprocess.run([sys.executable, "-m", "connectome_dask", "cache", *args], capture_output=True,
                             text=True, timeout=60, env=env)
        return out.returncode, out.stdout, out.stderr

    code, out, _ = cli(url, "list", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["entries"] == 4 and summary["fields"]["image"]["entries"] == 3
    code, out, _ = cli(url, "verify")
    assert code == 1 and f"bad: s3://{bucket}/{key}" in out and "checked 4 entries: 1 bad entry" in out
    code, out, _ = cli(url, "verify", "--remove")
    assert code == 0 and key not in objects(endpoint, bucket)
    code, out, _ = cli(url, "delete", "--field", "meta")
    assert code == 0 and "1 entry removed" in out and entry_keys(endpoint, bucket) == [
        "cache/image/a/a1.h5", "cache/image/c/c3.h5"]
    code, _, err = cli(f"s3://{bucket}/nothing", "list")
    assert code == 2 and "no cache root" in err


@pytest.fixture(scope="module")
def cluster(endpoint):
    """A 2-process LocalCluster whose workers have the S3 credentials and endpoint in their environment."""
    from distributed import Client, LocalCluster

    env = {**KEYS, "AWS_ENDPOINT_URL": endpoint, "PYTHONPATH": os.pathsep.join([ROOT, HERE])}
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=40, env=env)
    with Client(cluster, set_as_default=False) as client:
        yield client
    cluster.close()


class TestRemoteStoreOnS3(StoreTests):
    """The conformance suite on the moto S3 endpoint, with IAM enforced: the store writes as a user allowed
    everything; ``break_writes`` gives it the file system of a user allowed to read only (S3 denies its PUTs)."""

    @pytest.fixture(autouse=True)
    def users(self, bucket, read_only):
        self.url, self.users = f"s3://{bucket}/cache", read_only

    def make_store(self, tmp_path):
        return RemoteStore(self.url, storage_options=self.users["admin"])

    corrupt = staticmethod(_truncate_object)

    def break_writes(self, store, monkeypatch):
        monkeypatch.setattr(store, "fs", RemoteStore(self.url, storage_options=self.users["reader"], create=False).fs)
        return True


def test_the_token_names_the_root_and_options_but_no_secret(endpoint, bucket, counter, tmp_path):
    url = f"s3://{bucket}/cache"
    secret, session = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY", "FwoGZXIvYXdzEJr-session"
    opts = dict(options(endpoint, "AKIDUSER1", secret), client_kwargs={"region_name": "us-east-1"},
                config_kwargs={"s3": {"addressing_style": "path"}}, token=session)
    ds = s3_layers.pipeline(counter.path, url, storage_options=opts)
    store = as_store(url, storage_options=opts)
    lazy = ds.image.delayed("v01")
    shown = [repr(store), repr(ds), repr(lazy), str(dict(lazy.__dask_graph__())), store.token,
             str(list(lazy.__dask_graph__()))]
    assert not [text for text in shown if secret in text or session in text]
    assert np.array_equal(lazy.compute(), expected_image("v01")) and counter.count() == 1
    # the same root and options but other secrets: the same store; another root, endpoint, user or copy: another
    rotated = dict(opts, secret="other", token="other-session")
    assert RemoteStore(url, storage_options=rotated, create=False).token == store.token
    assert s3_layers.pipeline(counter.path, url, storage_options=rotated).image.delayed("v01").key == lazy.key
    others = [RemoteStore(f"s3://{bucket}/other", storage_options=opts, create=False),
              RemoteStore(url, storage_options=dict(opts, endpoint_url=endpoint + "/"), create=False),
              RemoteStore(url, storage_options=dict(opts, key="AKIDUSER2"), create=False),
              RemoteStore(url, storage_options=opts, local=tmp_path / "copy", create=False)]
    assert len({store.token, *(other.token for other in others)}) == 5
    assert local(others[2]) is not local(store)  # a reader's and a writer's pipelines in one process stay apart
    assert local(RemoteStore(url, storage_options=opts, create=False)) is local(store)


def test_a_password_in_the_url_is_shown_as_stars():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        store = RemoteStore("http://user:pw-1234@127.0.0.1:9/cache")  # nothing listens on port 9
        assert store.get("f", "0" * 32) is MISSING
    assert repr(store) == "RemoteStore('http://user:***@127.0.0.1:9/cache')"
    messages = cache_warnings(record)
    assert messages and not [m for m in messages if "pw-1234" in m] and "user:***@127.0.0.1:9" in messages[0]
    assert RemoteStore("http://user:other@127.0.0.1:9/cache", create=False).token == store.token
