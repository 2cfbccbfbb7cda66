"""Data stamps: editing a raw file named by a ``@files`` function invalidates exactly the cached
fields of that entry computed from it; touching or copying it does not (connectome_dask.stamps)."""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from connectome_dask import CacheToDisk, CacheToRam, Source, files, impure, stamps
from connectome_dask.exceptions import FieldError, MissingFile
from stamps_layers import Notes, Quick, Remote, Series, scans, write

TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(autouse=True)
def _private_user_index(tmp_path, monkeypatch):
    monkeypatch.setenv("CONNECTOME_DASK_STAMPS", str(tmp_path / "user-stamps"))  # no ~/.cache in tests


@pytest.fixture
def raw(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    for i in range(3):
        write(root / f"s{i}.bin", bytes([i]) * 1000)
    return str(root)


def calls(log):
    with open(log) as f:
        return sorted(f.read().split())


def fill(ds):
    return {key: (ds.image(key).tobytes(), ds.label(key)) for key in ds.ids}


def test_editing_one_file_invalidates_that_entry_only(raw, counter, cache_root):
    ds = scans(raw, counter.path, cache_root)
    fill(ds)
    assert calls(counter.path) == sorted([f"image:s{i}.bin" for i in range(3)] + [f"label:s{i}" for i in range(3)])
    counter.reset()
    keys = {key: (ds.image.delayed(key).key, ds.label.delayed(key).key) for key in ds.ids}
    write(os.path.join(raw, "s1.bin"), b"edited")
    fresh = scans(raw, counter.path, cache_root)  # a new pipeline object: what a rerun sees
    values = fill(fresh)
    assert calls(counter.path) == ["image:s1.bin"]  # not the label of s1, nothing of s0 and s2
    assert values["s1"][0] == b"edited"
    assert fresh.image.delayed("s1").key != keys["s1"][0]
    assert fresh.label.delayed("s1").key == keys["s1"][1]
    assert [fresh.image.delayed(k).key for k in ("s0", "s2")] == [keys[k][0] for k in ("s0", "s2")]
    counter.reset()
    fill(ds)  # the first pipeline object sees the edit too (the stamp is checked on every call)
    assert calls(counter.path) == []


def test_touch_and_identical_copy_keep_the_cache(raw, counter, cache_root):
    ds = scans(raw, counter.path, cache_root)
    fill(ds)
    counter.reset()
    path = os.path.join(raw, "s0.bin")
    time.sleep(0.01)
    os.utime(path)  # touch: new mtime and ctime
    shutil.copyfile(os.path.join(raw, "s2.bin"), path + ".copy")
    os.replace(path + ".copy", os.path.join(raw, "s2.bin"))  # the same bytes in a new file (new inode)
    assert fill(scans(raw, counter.path, cache_root)) == fill(ds)
    assert calls(counter.path) == []


def test_an_edit_with_its_mtime_restored_is_detected(raw, counter, cache_root):
    ds = scans(raw, counter.path, cache_root)
    fill(ds)
    counter.reset()
    path = os.path.join(raw, "s0.bin")
    before = os.stat(path)
    with open(path, "r+b") as f:  # one byte, same size
        f.seek(500)
        f.write(b"\xff")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert ds.image("s0")[500] == 255
    assert calls(counter.path) == ["image:s0.bin"]


def test_a_folder_source(tmp_path, counter, cache_root):
    root = tmp_path / "series"
    for key in ("a", "b"):
        (root / key / "dicom").mkdir(parents=True)
        for i in range(3):
            write(root / key / "dicom" / f"{i}.dcm", f"{key}{i}".encode())
    ds = Series(root=str(root), log=counter.path) >> CacheToDisk.simple("volume", root=cache_root)
    assert [ds.volume(k) for k in ds.ids] == [b"a0a1a2", b"b0b1b2"]
    counter.reset()
    os.utime(root / "a" / "dicom" / "1.dcm")  # touched: kept
    assert ds.volume("a") == b"a0a1a2" and calls(counter.path) == []
    write(root / "b" / "dicom" / "1.dcm", b"B1")  # a nested file edited: b only
    assert [ds.volume(k) for k in ds.ids] == [b"a0a1a2", b"b0B1b2"]
    assert calls(counter.path) == ["volume:b"]
    counter.reset()
    write(root / "a" / "dicom" / "3.dcm", b"a3")  # a file added
    assert ds.volume("a") == b"a0a1a2a3"
    os.rename(root / "a" / "dicom" / "3.dcm", root / "a" / "dicom" / "4.dcm")  # renamed: same bytes, new name
    assert ds.volume("a") == b"a0a1a2a3"
    assert calls(counter.path) == ["volume:a", "volume:a"]


def test_an_external_dataset_names_its_files_with_a_method(tmp_path, counter, cache_root):
    notes = tmp_path / "notes"
    notes.mkdir()
    for key in ("a", "b"):
        write(notes / f"{key}.txt", key.encode())
    ds = Notes(str(notes), counter.path) >> CacheToDisk.simple("text", root=cache_root)
    assert [ds.text(k) for k in ds.ids] == ["a", "b"]
    counter.reset()
    write(notes / "b.txt", b"B")
    assert [ds.text(k) for k in ds.ids] == ["a", "B"]
    assert calls(counter.path) == ["text:b"]


def test_through_a_merge_only_the_edited_entry_changes(tmp_path, counter, cache_root):
    from connectome_dask import Merge
    from stamps_layers import Scans

    sites = []
    for site in ("a", "b"):
        (tmp_path / site).mkdir()
        for i in range(2):
            write(tmp_path / site / f"{site}{i}.bin", f"{site}{i}".encode())
        sites.append(Scans(root=str(tmp_path / site), log=counter.path))
    merged = Merge(*sites) >> CacheToDisk.simple("image", root=cache_root)
    keys = {k: merged.image.delayed(k).key for k in merged.ids}
    assert [merged.image(k).tobytes() for k in merged.ids] == [b"a0", b"a1", b"b0", b"b1"]
    counter.reset()
    write(tmp_path / "b" / "b0.bin", b"B0")
    changed = {k for k in merged.ids if merged.image.delayed(k).key != keys[k]}
    assert changed == {"b0"}
    assert [merged.image(k).tobytes() for k in merged.ids] == [b"a0", b"a1", b"B0", b"b1"]
    assert calls(counter.path) == ["image:b0.bin"]


def test_a_missing_file_names_the_source_the_key_and_the_path(raw, counter, cache_root):
    ds = scans(raw, counter.path, cache_root)
    missing = os.path.join(raw, "s9.bin")
    with pytest.raises(MissingFile) as info:
        ds.image("s9")
    message = str(info.value)
    assert "Scans" in message and "'s9'" in message and missing in message
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(MissingFile):
        ds.image.delayed("s9")
    assert ds.label("s9") == "S9"  # a field that reads no file does not need it
    assert calls(counter.path) == ["label:s9"]


def test_stat_and_none_stamps(tmp_path, counter, cache_root):
    write(tmp_path / "a.bin", b"0123")
    ds = Quick(root=str(tmp_path), log=counter.path) >> CacheToDisk.simple("image", root=cache_root)
    assert ds.image("a") == b"0123"
    key = ds.image.delayed("a").key
    path = tmp_path / "a.bin"
    before = os.stat(path)
    write(path, b"4567")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert ds.image.delayed("a").key == key  # "stat" reads nothing: same size and mtime, same stamp
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1000))
    assert ds.image("a") == b"4567" and ds.image.delayed("a").key != key

    class Unstamped(Source):
        @files(stamp="none")
        def _path(key):
            return f"/nowhere/{key}.bin"

        def name(_path):
            return os.path.basename(_path)

    cached = Unstamped() >> CacheToDisk.simple("name", root=cache_root)
    assert cached.name("x") == "x.bin"  # no stamp: the file is never looked at


def test_declaration_errors():
    with pytest.raises(FieldError, match="stamp must be one of"):
        files(lambda key: key, stamp="mtime")
    with pytest.raises(FieldError, match="both @files and @impure"):
        class Bad(Source):
            @impure
            @files
            def _path(key):
                return key


def test_fsspec_urls(tmp_path, counter, cache_root):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/stamps-test/a.bin", b"one")
    fs.pipe("/stamps-test/b.bin", b"two")
    ds = Remote(url="memory://stamps-test", log=counter.path) >> CacheToDisk.simple("data", root=cache_root)
    assert [ds.data(k) for k in "ab"] == [b"one", b"two"]
    counter.reset()
    fs.pipe("/stamps-test/a.bin", b"ONE")  # a new object, same size
    fs.pipe("/stamps-test/b.bin", b"two")  # rewritten with the same bytes
    assert [ds.data(k) for k in "ab"] == [b"ONE", b"two"]
    assert calls(counter.path) == ["data:memory://stamps-test/a.bin"]
    with pytest.raises(MissingFile, match="memory://stamps-test/c.bin"):
        ds.data("c")
    fs.rm("/stamps-test", recursive=True)


def test_object_store_identities_are_used_when_given():
    class Store:  # what s3fs / gcsfs report: the backend's content identity, nothing is read
        def unstrip_protocol(self, path):
            return "s3://" + path

        def open(self, *args, **kwargs):
            raise AssertionError("an object with an ETag is not read")

    one = stamps._object_token(Store(), "b/k", {"size": 3, "ETag": '"abc"'}, "content", None)
    assert one == stamps._object_token(Store(), "b/other", {"size": 3, "ETag": "abc"}, "content", None)
    assert one != stamps._object_token(Store(), "b/k", {"size": 3, "ETag": '"abd"'}, "content", None)


def test_keys_are_the_same_in_another_process(raw, counter, cache_root):
    ds = scans(raw, counter.path, cache_root)
    here = [ds.image.delayed(k).key for k in ds.ids]
    script = textwrap.dedent(f"""
        from stamps_layers import scans
        ds = scans({raw!r}, {counter.path!r}, {cache_root!r})
        print(" ".join(ds.image.delayed(k).key for k in ds.ids))
    """)
    env = {**os.environ, "PYTHONHASHSEED": "123", "PYTHONPATH": os.pathsep.join([TESTS, os.environ["PYTHONPATH"]])}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == here


def test_the_index_is_kept_in_the_cache_root_or_else_per_user(raw, counter, cache_root, tmp_path):
    time.sleep(stamps.RACY_NS / 1e9 + 0.1)  # files as old as real data: their digests are remembered
    ds = scans(raw, counter.path, cache_root)
    fill(ds)
    records = glob.glob(os.path.join(cache_root, ".stamps", "*", "*"))
    assert len(records) == 3
    from connectome_dask.cache.hdf5 import HDF5Store

    listed = {field for field, *_ in HDF5Store(cache_root).entries()}
    assert listed == {"image", "label"}  # the index is not a field of the cache
    from stamps_layers import Scans

    stamps._MEMO.clear()
    in_ram = Scans(root=raw, log=counter.path) >> CacheToRam()  # no cache root
    in_ram.image("s0")
    assert len(glob.glob(str(tmp_path / "user-stamps" / "*" / "*"))) == 1


CONCURRENT = textwrap.dedent("""
    import json, os, sys, time
    from connectome_dask import stamps
    digests = []
    original = stamps._digest_local
    stamps._digest_local = lambda *a: digests.append(1) or original(*a)
    paths, index, go = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
    while not os.path.exists(go):
        time.sleep(0.001)
    tokens = [stamps.stamp(p, index=index) for p in paths]
    print(json.dumps({"tokens": tokens, "digests": len(digests)}))
""")


def test_four_processes_stamp_one_index(tmp_path):
    paths = []
    for i in range(200):
        paths.append(str(tmp_path / f"f{i:03d}.bin"))
        write(paths[-1], os.urandom(2000 + i))
    index, go = str(tmp_path / "index"), str(tmp_path / "go")
    time.sleep(stamps.RACY_NS / 1e9 + 0.1)

    def start():
        return subprocess.Popen([sys.executable, "-c", CONCURRENT, ",".join(paths), index, go],
                                stdout=subprocess.PIPE, text=True)

    procs = [start() for _ in range(4)]
    time.sleep(0.5)
    open(go, "w").close()
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    expected = [stamps.stamp(p, index=str(tmp_path / "other-index")) for p in paths]
    assert all(r["tokens"] == expected for r in results)
    assert not glob.glob(os.path.join(index, "*", "*.tmp"))
    records = glob.glob(os.path.join(index, "*", "*"))
    assert len(records) == len(paths)
    for record in records:  # every record is whole and true
        with open(record) as f:
            signature, token, path = f.read().split("\n")
        st = os.stat(path)
        assert signature == f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino}"
        assert stamps.combine("content", token) == expected[paths.index(path)]
    late = start()
    with open(go, "a"):
        pass
    assert json.loads(late.communicate(timeout=60)[0]) == {"tokens": expected, "digests": 0}  # read, not hashed


def _forbid_stamping():
    from connectome_dask import stamps

    def refuse(path, *args):
        raise RuntimeError(f"a worker stamped {path}")

    stamps._stamp_one, stamps._allowed = refuse, stamps._stamp_one


def _allow_stamping():
    from connectome_dask import stamps

    stamps._stamp_one = stamps.__dict__.pop("_allowed")


@pytest.mark.cluster
def test_persist_after_editing_3_of_64_files_computes_3_entries(client, tmp_path, counter, cache_root):
    raw = tmp_path / "raw64"
    raw.mkdir()
    for i in range(64):
        write(raw / f"s{i:02d}.bin", bytes([i]) * 4096)
    ds = scans(str(raw), counter.path, cache_root)
    report = ds.persist(client, progress=False)
    assert (report.computed, report.cached, report.failed) == (64, 0, {})
    counter.reset()
    for i in (3, 30, 63):
        write(raw / f"s{i:02d}.bin", b"new" * 1000)
    client.run(_forbid_stamping)  # the stamps come from the client, with the tasks
    try:
        report = scans(str(raw), counter.path, cache_root).persist(client, progress=False)
        assert (report.computed, report.cached, report.failed) == (3, 61, {})
        assert calls(counter.path) == ["image:s03.bin", "image:s30.bin", "image:s63.bin"]
        lazy = ds.image.delayed("s30")
        assert client.compute(lazy).result().tobytes() == b"new" * 1000
        assert calls(counter.path) == ["image:s03.bin", "image:s30.bin", "image:s63.bin"]  # a cache hit
        write(raw / "s30.bin", b"newer")
        assert client.compute(ds.image.delayed("s30")).result().tobytes() == b"newer"
        os.unlink(raw / "s05.bin")
        report = ds.persist(client, ids=["s04", "s05"], errors="report", progress=False)
        assert report.cached == 1 and isinstance(report.failed["s05"], MissingFile)
    finally:
        client.run(_allow_stamping)


@pytest.mark.slow
def test_the_main_example_recomputes_only_the_entries_of_an_edited_scan(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    sys.path.insert(0, os.path.join(os.path.dirname(TESTS), "examples"))
    try:
        from mri import FILES, sample_folder
    finally:
        sys.path.pop(0)
    folder = tmp_path / "scans"
    folder.mkdir()
    stems = {name.split(".")[0] for name in FILES.values()}  # a header and its data file share the stem
    for name in os.listdir(sample_folder()):
        if name.split(".")[0] in stems:
            shutil.copy(os.path.join(sample_folder(), name), folder / name)
    command = [sys.executable, "examples/01_persist_imaging.py", str(tmp_path / "cache"), "--folder", str(folder),
               "--png", str(tmp_path / "montage.png")]
    env = dict(os.environ, CONNECTOME_DASK_WORKERS="2")

    def run():
        out = subprocess.run(command, capture_output=True, text=True, cwd=os.path.dirname(TESTS), env=env, timeout=600)
        assert out.returncode == 0, out.stderr
        return out.stdout

    first = run()
    n = int(re.search(r"^persist: (\d+) computed, 0 already cached", first, re.M).group(1))
    scan = nibabel.load(folder / "anatomical.nii")
    edited = nibabel.Nifti1Image(np.asarray(scan.dataobj) * 2 + 1, scan.affine, scan.header)
    nibabel.save(edited, folder / "anatomical.tmp.nii")
    os.replace(folder / "anatomical.tmp.nii", folder / "anatomical.nii")  # the scan is re-exported
    os.utime(folder / "functional.nii")  # touched only
    assert f"persist: 1 computed, {n - 1} already cached, 0 failed" in run()
