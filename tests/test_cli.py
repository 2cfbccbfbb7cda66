"""The cache command line as a user runs it: ``python -m connectome_dask`` and the ``connectome-dask``
entry point, in a subprocess, against a cache root written by the store."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from connectome_dask.cache.hdf5 import HDF5Store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAY = 86400


def cli(*args, program=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    command = [sys.executable, program] if program else [sys.executable, "-m", "connectome_dask"]
    out = subprocess.run(command + [str(a) for a in args], capture_output=True, text=True, timeout=60, env=env)
    return out.returncode, out.stdout, out.stderr


@pytest.fixture
def root(tmp_path):
    """A cache root: 3 ``image`` entries (one 40 days old, one 10 days old) and 1 ``mask`` entry."""
    store = HDF5Store(str(tmp_path / "cache"))
    for i, token in enumerate(("a1", "b2", "c3")):
        store.set("image", token, np.full((4, 4), i, np.float32))
    store.set("mask", "d4", np.zeros(3, bool))
    now = time.time()
    os.utime(store.path("image", "a1"), (now - 40 * DAY, now - 40 * DAY))
    os.utime(store.path("image", "b2"), (now - 10 * DAY, now - 10 * DAY))
    return store


def test_help_lists_every_command_and_option_without_markup():
    code, top, _ = cli("--help")
    assert code == 0 and "cache" in top and "list, verify, delete" in top
    code, cache, _ = cli("cache", "--help")
    assert code == 0
    for text in ("usage: python -m connectome_dask cache", "list ", "verify ", "delete ", "Exit codes"):
        assert text in cache
    code, delete, _ = cli("cache", "root", "delete", "--help")
    assert code == 0 and "--older-than AGE" in delete and "3w" in delete and "--dry-run" in delete
    for text in (top, cache, delete):
        assert "``" not in text and ":func:" not in text


def test_entry_point_name_is_the_program_name(tmp_path):
    program = tmp_path / "connectome-dask"  # what pip writes for the [project.scripts] entry point
    program.write_text("import sys\nfrom connectome_dask.__main__ import main\nsys.exit(main())\n")
    code, out, _ = cli("cache", "--help", program=str(program))
    assert code == 0 and out.startswith("usage: connectome-dask cache")
    code, _, err = cli(program=str(program))
    assert code == 2 and "usage: connectome-dask" in err


def test_no_command_is_a_usage_error():
    code, _, err = cli()
    assert code == 2 and "COMMAND" in err


def test_list_counts_with_plurals(root):
    code, out, _ = cli("cache", root.root, "list")
    assert code == 0
    assert ": 4 entries," in out.splitlines()[0]
    assert "  image: 3 entries," in out and "  mask: 1 entry," in out


def test_verify_counts_entries_and_says_why_one_is_bad(root):
    bad = root.path("image", "c3")
    with open(bad, "r+b") as f:  # a flipped region inside the file: no longer a valid entry
        f.seek(0)
        f.write(b"\0" * 64)
    code, out, _ = cli("cache", root.root, "verify")
    assert code == 1
    assert out.splitlines()[-1] == "checked 4 entries: 1 bad entry"
    line = next(line for line in out.splitlines() if line.startswith("bad: "))
    assert bad in line and line.split(bad + ": ", 1)[1]  # the reason follows the path
    code, out, _ = cli("cache", root.root, "verify", "--remove")
    assert code == 0 and "removed: " + bad in out and out.splitlines()[-1] == "checked 4 entries: 1 bad entry (removed)"
    assert not os.path.exists(bad)
    code, out, _ = cli("cache", root.root, "verify")
    assert code == 0 and out.splitlines()[-1] == "checked 3 entries: 0 bad entries"


def test_delete_of_an_unknown_field_says_so_and_fails(root):
    code, out, err = cli("cache", root.root, "delete", "--field", "imgae")
    assert code == 2 and "no field 'imgae'" in err and "image, mask" in err
    assert len(list(root.entries())) == 4


@pytest.mark.parametrize("age, removed", [("3w", 1), ("30d", 1), ("5d", 2), ("12h", 2), ("2000-01-01", 0)])
def test_ages_in_weeks_days_hours_and_dates(root, age, removed):
    code, out, _ = cli("cache", root.root, "delete", "--field", "image", "--older-than", age, "--dry-run")
    assert code == 0
    assert out.splitlines()[-1] == f"{removed} {'entry' if removed == 1 else 'entries'} to remove"
    assert len(list(root.entries())) == 4  # a dry run


def test_a_bad_age_is_a_usage_error(root):
    code, _, err = cli("cache", root.root, "delete", "--older-than", "3x")
    assert code == 2 and "'3x' is neither a duration" in err


def test_delete_removes_and_counts(root):
    code, out, _ = cli("cache", root.root, "delete", "--older-than", "30d")
    assert code == 0 and out.splitlines()[-1] == "1 entry removed"
    assert sorted(t for _, t, *_ in root.entries()) == ["b2", "c3", "d4"]


def test_a_folder_that_is_not_a_cache_root(tmp_path):
    code, _, err = cli("cache", tmp_path / "missing", "list")
    assert code == 2 and "no such cache root" in err


# --- inside the root only ----------------------------------------------------------------------


@pytest.fixture
def planted(root, tmp_path):
    """Links out of the root: a field folder, a fan-out folder and an entry pointing at files outside,
    each of which would be listed, verified as bad and deleted if followed. Returns the outside files."""
    outside = tmp_path / "outside"
    other = HDF5Store(str(outside / "other"))  # a valid cache elsewhere: what a linked field would list
    other.set("image", "e5", np.ones(2))
    victim = outside / "victim.h5"  # not an entry: verify would remove it if it followed the link
    victim.write_bytes(b"keep me")
    prefix = outside / "prefix"
    prefix.mkdir()
    (prefix / "z9.h5").write_bytes(b"keep me too")
    os.symlink(outside / "other" / "image", os.path.join(root.root, "linked"))
    os.symlink(prefix, os.path.join(root.root, "image", "z"))
    os.symlink(victim, os.path.join(root.root, "image", "a", "a6.h5"))
    os.symlink(victim, os.path.join(root.root, "mask", "d", ".f7.x1.tmp"))
    return [other.path("image", "e5"), str(victim), str(prefix / "z9.h5")]


def test_list_skips_links_out_of_the_root(root, planted):
    code, out, _ = cli("cache", root.root, "list", "--json")
    assert code == 0
    fields = json.loads(out)["fields"]
    assert {field: info["entries"] for field, info in fields.items()} == {"image": 3, "mask": 1}
    assert fields["image"]["bytes"] == sum(size for field, _, _, size, _ in root.entries() if field == "image")


def test_verify_remove_removes_a_link_itself_never_its_target(root, planted):
    link = os.path.join(root.root, "image", "a", "a6.h5")
    code, out, _ = cli("cache", root.root, "verify")
    assert code == 1 and out.splitlines()[-1] == "checked 5 entries: 1 bad entry"
    assert f"bad: {link}: a symbolic link to {planted[1]}" in out
    code, out, _ = cli("cache", root.root, "verify", "--remove")
    assert code == 0 and out.splitlines()[-1] == "checked 5 entries: 1 bad entry (removed)"
    assert not os.path.lexists(link) and all(os.path.exists(p) for p in planted)
    assert open(planted[1], "rb").read() == b"keep me"
    assert len(list(root.entries())) == 4  # the good entries stay


@pytest.mark.parametrize("how", [["--all"], ["--field", "image"], ["--older-than", "0s"]])
def test_delete_never_deletes_through_a_link(root, planted, how):
    code, out, _ = cli("cache", root.root, "delete", *how)
    assert code == 0
    assert all(os.path.exists(p) for p in planted)  # nothing outside the root is touched
    assert not os.path.lexists(os.path.join(root.root, "image", "a", "a6.h5"))  # the link, removed as itself
    assert os.path.islink(os.path.join(root.root, "linked")) and os.path.islink(os.path.join(root.root, "image", "z"))
    assert [f for f, *_ in root.entries()] == (["mask"] if how[0] == "--field" else [])


def test_a_linked_field_is_not_a_field(root, planted):
    code, _, err = cli("cache", root.root, "delete", "--field", "linked")
    assert code == 2 and "no field 'linked'" in err and "image, mask" in err
    assert all(os.path.exists(p) for p in planted)


def stale_temporaries(store, hours):
    """A killed writer's temporary file in each field, ``hours`` old; and a fresh one (a live writer's)."""
    paths = {}
    for field, token in (("image", "a1"), ("mask", "d4"), ("live", "l1")):
        path = os.path.join(store.root, field, token[0], f".{token}.dead.tmp")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"partial")
        if field != "live":
            os.utime(path, (time.time() - hours * 3600,) * 2)
        paths[field] = path
    return paths


def test_delete_honours_field_and_age_for_temporaries(root):
    paths = stale_temporaries(root, hours=5)
    code, out, _ = cli("cache", root.root, "delete", "--field", "mask", "--dry-run")
    assert code == 0 and f"would remove {paths['mask']}" in out
    assert out.splitlines()[-1] == "1 entry and 1 temporary file of killed writers to remove"
    assert all(os.path.exists(p) for p in paths.values())
    code, out, _ = cli("cache", root.root, "delete", "--field", "mask")
    assert out.splitlines()[-1] == "1 entry and 1 temporary file of killed writers removed"
    assert not os.path.exists(paths["mask"]) and os.path.exists(paths["image"]) and os.path.exists(paths["live"])
    code, out, _ = cli("cache", root.root, "delete", "--older-than", "20d")  # the temporary is younger
    assert out.splitlines()[-1] == "1 entry removed" and os.path.exists(paths["image"])
    code, out, _ = cli("cache", root.root, "delete", "--older-than", "4h")
    assert out.splitlines()[-1] == "1 entry and 1 temporary file of killed writers removed"
    assert not os.path.exists(paths["image"])
    code, out, _ = cli("cache", root.root, "delete", "--all")
    assert os.path.exists(paths["live"])  # a writer younger than an hour may still be writing


def test_verify_reports_a_fifo_at_an_entry_without_opening_it(root):
    fifo = root.path("image", "c3")
    os.unlink(fifo)
    os.mkfifo(fifo)  # opening it would block the command forever (cli() times out after 60 s)
    code, out, _ = cli("cache", root.root, "verify")
    assert code == 1 and f"bad: {fifo}: not a regular file" in out
    code, out, _ = cli("cache", root.root, "verify", "--remove")
    assert code == 0 and not os.path.lexists(fifo)
