"""Data stamps (``@files``): what checking the raw files of an entry costs.

* ``us_per_file_unchanged``: the stamp of an unchanged file already seen by this process (its stat
  signature matches the remembered one) — raw: one ``os.stat`` of the same file;
* ``us_per_file_unchanged_new_process``: the same in a process that has not seen it (the signature
  is read back from the stamp index) — raw: ``os.stat``;
* ``us_per_entry_persist``: ``persist``'s client-side stamping of 10,000 unchanged entries (the
  entry's token, with the stamp of its file, through a Source and a ``CacheToDisk``) — raw: ``os.stat``;
* ``ms_per_changed_file``: the stamp of a changed 4 MB file (its xxh3-128 digest) — raw: reading it;
  ``ms_per_changed_file_blake3``: the same file through blake3 (one thread), the other candidate.

The files live in the temp folder (made once per machine, then left 2 s to age: a file younger
than ``stamps.RACY_NS`` is hashed every time, on purpose).
"""

import os
import tempfile
import time

from common import args, per_call, report

LIBS = ("connectome_dask", "raw")


def files(n, size, name):
    folder = os.path.join(tempfile.gettempdir(), "cdask-bench-stamps", name)
    paths = [os.path.join(folder, f"{i:05d}.bin") for i in range(n)]
    if not all(os.path.exists(p) for p in paths):
        os.makedirs(folder, exist_ok=True)
        block = os.urandom(size)
        for i, path in enumerate(paths):
            with open(path, "wb") as f:
                f.write(i.to_bytes(8, "little") + block[8:])
    age = time.time() - max(os.stat(p).st_ctime for p in paths)
    if age < 2.1:
        time.sleep(2.1 - age)
    return folder, paths


def read(path):
    with open(path, "rb") as f:
        return len(f.read())


def persist_stamps(folder, ids, index_root):
    from connectome_dask import CacheToDisk, Source, files as marker
    from connectome_dask.batches import Batches
    from connectome_dask.persist import PersistBatch, cached_nodes

    class Raw(Source):
        _folder: str

        @marker
        def _path(key, _folder):
            return os.path.join(_folder, f"{key}.bin")

        def size(_path):
            return os.path.getsize(_path)

    pipeline = Raw(folder=folder) >> CacheToDisk.simple("size", root=index_root)
    _, targets, _ = cached_nodes(pipeline)
    batches = Batches(targets, PersistBatch)
    return lambda: batches.build([[{"id": key} for key in ids]], "nonce", "size")  # keys and stamps, as persist


def blake3_time(paths, repeat):
    """Milliseconds per file for a single-threaded blake3 digest (the choice of xxh3-128 was made on
    this: ~10 GB/s against ~4.5 GB/s on one core); "not available" without the blake3 package."""
    try:
        import blake3
    except ImportError as error:
        from common import not_available

        return not_available(error)

    def digest(path):
        h = blake3.blake3()
        with open(path, "rb", buffering=0) as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.digest()

    return per_call(digest, paths, repeat) * 1e3


def main():
    a = args(LIBS)
    n = 1000 if a.quick else 10_000
    folder, small = files(n, 4096, f"small-{n}")
    _, big = files(4 if a.quick else 16, 4 << 20, "big")
    repeat = 3 if a.quick else 7
    result = {}
    if a.lib == "raw":
        result["us_per_file_unchanged"] = per_call(os.stat, small, repeat) * 1e6
        result["us_per_file_unchanged_new_process"] = result["us_per_file_unchanged"]
        result["us_per_entry_persist"] = result["us_per_file_unchanged"]
        result["ms_per_changed_file"] = per_call(read, big, repeat) * 1e3
    else:
        from connectome_dask import stamps

        index = tempfile.mkdtemp(prefix="cdask-bench-index-")
        for path in small:
            stamps.stamp(path, index=index)  # the first time: every file is hashed into the index
        result["us_per_file_unchanged"] = per_call(lambda p: stamps.stamp(p, index=index), small, repeat) * 1e6

        def new_process(path):
            stamps._MEMO.pop(path, None)  # as in a process that has not seen it
            return stamps.stamp(path, index=index)

        result["us_per_file_unchanged_new_process"] = per_call(new_process, small, repeat) * 1e6
        ids = [os.path.basename(p)[:-4] for p in small]
        run = persist_stamps(folder, ids, tempfile.mkdtemp(prefix="cdask-bench-root-"))
        run()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            run()
            times.append((time.perf_counter() - start) / len(ids))
        result["us_per_entry_persist"] = sorted(times)[len(times) // 2] * 1e6
        os.environ["CONNECTOME_DASK_STAMPS"] = ""  # no index: a changed file is hashed every time

        def changed(path):
            stamps._MEMO.pop(path, None)
            return stamps.stamp(path)

        result["ms_per_changed_file"] = per_call(changed, big, repeat) * 1e3
        result["ms_per_changed_file_blake3"] = blake3_time(big, repeat)  # the other candidate digest
    report(result, a.json)


if __name__ == "__main__":
    main()
