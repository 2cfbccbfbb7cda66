"""The cache on S3 (a moto server on 127.0.0.1, in its own process): the 64-volume preprocessing
benchmark (``pipelines.preprocessing``) populated and read back through an ``s3://`` root.

* ``populate_s`` (median of 3 runs, each into a fresh prefix): connectome_dask: ``ds.persist(client)`` on
  a 2-worker process ``LocalCluster`` (``cluster.QUIET_WORKERS``, warmed up by a small persist before, its
  start-up not timed) whose workers write straight to the bucket; raw: a fork ``multiprocessing.Pool(2)``
  computing the same arrays (``pipelines.raw_preprocess``) and writing each with plain h5py into memory and
  one s3fs PUT, one object per field x entry.
* ``read_MBps`` (median of 3 passes over every entry, in this process, after one untimed pass):
  connectome_dask: a NEW pipeline object on the populated root, ``ds.image(k), ds.mask(k)`` for every
  id; raw: one s3fs GET (``cat_file`` of a byte range covering the object) + h5py decode from memory of
  each object. ``read_cat_file_MBps``: the same with a plain ``cat_file(path)``, which s3fs sends as a
  HEAD and a GET (~2x slower on moto: not the floor).
* connectome_dask only: ``local_copy_read_MBps``, the same pass through ``CacheToDisk(..., local=folder)``
  once the copy holds every entry, and ``local_disk_read_MBps``, the same files read through a plain
  ``CacheToDisk`` on that folder (the local-disk store), passes of the two alternating (the median
  of 6 passes each, after one untimed pass each); ``local_copy_vs_local_disk`` is their ratio.
* ``large_read_MBps``: one entry of a 64 MiB array; connectome_dask reads it in ranges (above
  ``GET_BYTES``); ``large_read_one_get_MBps`` reads it with one GET instead; raw: one GET + h5py.
Megabytes are the arrays' bytes (image + mask). The machine's 2 cores run the workers, the server and the
client alike for both libraries.
"""

import io
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid

import h5py
import numpy as np

from common import args, report, steady_allocator, timed, volumes_folder
import pipelines

KEYS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true"}
SERVER = ("import sys; from moto.server import ThreadedMotoServer; "
          "s = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False); s.start(); "
          "print(s.get_host_and_port()[1], flush=True); sys.stdin.read(); s.stop()")
LARGE = np.random.default_rng(0).random(8 << 20)  # one 64 MiB entry: above GET_BYTES
_FORKED = {}


def start_server():
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env={**os.environ, **KEYS})
    return server, f"http://127.0.0.1:{int(server.stdout.readline())}"


def s3fs_of(endpoint):
    import fsspec

    return fsspec.filesystem("s3", endpoint_url=endpoint, key=KEYS["AWS_ACCESS_KEY_ID"],
                             secret=KEYS["AWS_SECRET_ACCESS_KEY"])


def raw_image(name, array):
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_dataset(name, data=array)
    return buffer.getvalue()


def raw_fill(key):
    data, endpoint, prefix = _FORKED["job"]
    fs = s3fs_of(endpoint)
    for name, array in zip(("image", "mask"), pipelines.raw_preprocess(data, key)):
        fs.pipe_file(f"{prefix}/{name}-{key}.h5", raw_image(name, array))


def raw_populate(data, keys, endpoint, prefix):
    _FORKED["job"] = (data, endpoint, prefix)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        for _ in pool.imap_unordered(raw_fill, keys, chunksize=1):
            pass


def raw_read(fs, keys, prefix, whole=False, names=("image", "mask")):
    """Every object with one GET (s3fs sends one for a byte range; ``whole``: plain ``cat_file``, which
    sends a HEAD first), decoded from memory by h5py."""
    for key in keys:
        for name in names:
            path = f"{prefix}/{name}-{key}.h5"
            data = fs.cat_file(path) if whole else fs.cat_file(path, start=0, end=1 << 30)
            with h5py.File(io.BytesIO(data), "r") as f:
                f[name][()]


def lib_read(ds, keys):
    for key in keys:
        ds.image(key), ds.mask(key)


def raw_read_s(runs, *a):
    """Median seconds of reading every object, after one pass that is not timed."""
    raw_read(*a)
    return statistics.median(timed(raw_read, *a)[0] for _ in range(runs))


def lib_read_s(runs, make, keys):
    """Median seconds of reading every entry through a new pipeline ``make()`` (built outside the
    timing), after one pass that is not timed."""
    lib_read(make(), keys)
    return statistics.median(timed(lib_read, make(), keys)[0] for _ in range(runs))


def main():
    a = args(("connectome_dask", "raw"))
    steady_allocator()
    data = volumes_folder(8 if a.quick else 64)
    keys = pipelines.volume_ids(data)
    runs = 2 if a.quick else 3
    nbytes = sum(a.nbytes for k in keys for a in pipelines.raw_preprocess(data, k))
    os.environ.update(KEYS)
    server, endpoint = start_server()
    work = tempfile.mkdtemp(prefix="cdask-bench-s3-")
    try:
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
        fs = s3fs_of(endpoint)
        result = {}
        if a.lib == "raw":
            prefixes = [f"bench/raw{run}" for run in range(runs)]
            result["populate_s"] = statistics.median(timed(raw_populate, data, keys, endpoint, p)[0] for p in prefixes)
            result["read_MBps"] = nbytes / raw_read_s(runs, fs, keys, prefixes[-1]) / 1e6
            result["read_cat_file_MBps"] = nbytes / raw_read_s(runs, fs, keys, prefixes[-1], True) / 1e6
            fs.pipe_file("bench/large/large-big.h5", raw_image("large", LARGE))
            result["large_read_MBps"] = LARGE.nbytes / raw_read_s(runs, fs, ["big"], "bench/large", False,
                                                                    ("large",)) / 1e6
        else:
            result.update(lib_case(a, data, keys, endpoint, runs, nbytes, work))
        report(result, a.json)
    finally:
        server.stdin.close()
        server.wait(30)
        shutil.rmtree(work, ignore_errors=True)


def lib_case(a, data, keys, endpoint, runs, nbytes, work):
    import dask
    from distributed import Client, LocalCluster

    from connectome_dask.cluster import QUIET_WORKERS

    options = {"endpoint_url": endpoint}  # the credentials: from the environment, here and on the workers
    out = {}

    def ds_at(root, **extra):
        return pipelines.preprocessing(a.lib, data, root, storage_options=options, **extra)

    with dask.config.set(QUIET_WORKERS), LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                                      dashboard_address=":0", silence_logs=40, env=KEYS) as cluster, \
            Client(cluster) as client:
        small = pipelines.preprocessing(a.lib, volumes_folder(2), "s3://bench/warmup", storage_options=options)
        small.persist(client, progress=False)  # the workers import scipy, s3fs, h5py outside the timings
        roots = [f"s3://bench/cd{run}-{uuid.uuid4().hex[:6]}" for run in range(runs)]
        times = []
        for root in roots:
            seconds, done = timed(ds_at(root).persist, client, progress=False)
            assert done.computed == len(keys), done
            times.append(seconds)
        out["populate_s"] = statistics.median(times)
    image, mask = pipelines.raw_preprocess(data, keys[-1])
    fresh = ds_at(roots[-1])
    assert np.allclose(fresh.image(keys[-1]), image) and np.array_equal(fresh.mask(keys[-1]), mask)
    out["read_MBps"] = nbytes / lib_read_s(runs, lambda: ds_at(roots[-1]), keys) / 1e6
    copy = os.path.join(work, "copy")
    lib_read(ds_at(roots[-1], local=copy), keys)  # fills the copy
    passes = {"local_copy_read_MBps": lambda: ds_at(roots[-1], local=copy),
              "local_disk_read_MBps": lambda: pipelines.preprocessing(a.lib, data, copy)}  # the same files
    times = {metric: [] for metric in passes}
    for _ in range(2 * runs + 1):  # alternating, so that the machine's drift hits both alike
        for metric, make in passes.items():
            times[metric].append(timed(lib_read, make(), keys)[0])
    out.update({metric: nbytes / statistics.median(t[1:]) / 1e6 for metric, t in times.items()})
    out["local_copy_vs_local_disk"] = out["local_copy_read_MBps"] / out["local_disk_read_MBps"]
    out.update(large_entry(runs, endpoint, options))
    return out


def large_entry(runs, endpoint, options):
    """A 64 MiB entry read by the store: in ranges (the default above ``GET_BYTES``), and with one GET."""
    from connectome_dask.cache import remote

    store = remote.RemoteStore("s3://bench/large", storage_options=options)
    store.set("large", "big", LARGE)

    def read():
        assert store.get("large", "big").shape == LARGE.shape

    out = {}
    for metric, threshold in (("large_read_MBps", remote.GET_BYTES), ("large_read_one_get_MBps", 1 << 30)):
        remote.GET_BYTES = threshold
        read()
        out[metric] = LARGE.nbytes / statistics.median(timed(read)[0] for _ in range(runs)) / 1e6
    return out


if __name__ == "__main__":
    main()
