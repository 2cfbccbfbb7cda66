"""``connectome-dask cache ROOT COMMAND`` (or ``python -m connectome_dask cache ...``): inspect and
clean an HDF5 cache root: a folder or a URL (``s3://bucket/prefix``: credentials and options from the
environment, e.g. ``AWS_*`` or fsspec's ``FSSPEC_S3_ENDPOINT_URL``).

Commands: ``list`` (entries and bytes per field), ``verify`` (read every entry, check its checksum,
say why a bad one is bad; ``--remove`` deletes them), ``delete`` (by field and/or age; ``--dry-run``).
Listing touches only directory entries (``os.scandir``), so it stays fast on 100,000 entries.
In a folder root every command works inside the root only: it lists regular files in the root's own field and fan-out
folders, never follows a symbolic link (a linked field or fan-out folder is skipped; a link or FIFO at
an entry's name is a bad entry for ``verify`` and removed as itself, never its target), and unlinks
through folders opened without following links. ``delete`` removes the temporary files of killed
writers (older than an hour) that match its ``--field`` and ``--older-than``.
Never imports dask. Exit codes: 0 ok (also after ``verify --remove`` removed every bad entry),
1 bad entries left, 2 a usage error, an unknown field or a folder that is not a cache root.
"""

import argparse
import datetime
import json
import os
import sys
import time

from ..exceptions import StoreError
from .hdf5 import HDF5Store, _open_root, _read
from .remote import RemoteStore, is_url

__all__ = ["main", "parser"]

_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}


def _age(text):
    """Seconds since the epoch before which entries are 'older': a date or a duration (3w, 30d, 12h, 45m)."""
    number, unit = text[:-1], text[-1:].lower()
    if unit in _UNITS and number.replace(".", "", 1).isdigit():
        return time.time() - float(number) * _UNITS[unit]
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (3w, 30d, 12h, 45m, 10s) nor a date (2026-01-31)") from None


def plural(count, noun, many=None):
    """``1 entry``, ``2 entries``."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def parser(prog=None):
    """The argument parser of ``cache``; ``prog`` is how the user called it."""
    prog = prog or f"{_program()} cache"
    top = argparse.ArgumentParser(
        prog=prog, description="Inspect and clean a connectome_dask HDF5 cache root (no dask needed).",
        epilog="Exit codes: 0 ok, 1 bad entries left by verify, 2 usage error, unknown field or not a cache root. "
               f"Example: {prog} ./cache delete --field image --older-than 30d --dry-run")
    top.add_argument("root", help="the cache root: the folder or URL given to CacheToDisk (holds connectome_dask.json)")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = sub.add_parser("list", help="entries and bytes per field", description="Count the entries and "
                             "bytes of every field, from directory entries only (fast on 100,000 entries).")
    listing.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    verify = sub.add_parser("verify", help="read every entry and check its checksum",
                            description="Read every entry and check its checksum; print each bad entry with "
                            "the reason. Exit 1 if bad entries are left.")
    verify.add_argument("--remove", action="store_true",
                        help="delete the bad entries (they are recomputed on next use); exit 0 when all are gone")
    delete = sub.add_parser("delete", help="remove entries by field and/or age",
                            description="Remove entries. Choose --all, or --field and/or --older-than (both: "
                            "entries matching both). Temporary files of killed writers (older than an hour) that match go too.")
    delete.add_argument("--all", action="store_true", help="every entry of the root")
    delete.add_argument("--field", metavar="NAME", help="only entries of this field (an unknown field is an error)")
    delete.add_argument("--older-than", type=_age, metavar="AGE",
                        help="only entries written before AGE: a duration (3w, 30d, 12h, 45m) or a date (2026-01-31)")
    delete.add_argument("--dry-run", action="store_true", help="print what would be removed, remove nothing")
    return top


def _program():
    """``connectome-dask`` when run by the entry point, else ``python -m connectome_dask``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name.startswith("connectome-dask") else "python -m connectome_dask"


def main(argv=None, prog=None):
    args = parser(prog).parse_args(argv)
    if is_url(args.root) and not args.root.startswith("file://"):
        try:
            store = RemoteStore(args.root, create=False)
            store._open_root(create=False)
        except (StoreError, OSError) as e:
            print(e, file=sys.stderr)
            return 2
        return {"list": _list, "verify": _verify, "delete": _delete}[args.command](store, args)
    args.root = args.root[len("file://"):] if is_url(args.root) else args.root
    if not os.path.isdir(args.root):
        print(f"{args.root}: no such cache root (a folder given to CacheToDisk)", file=sys.stderr)
        return 2
    try:
        store = HDF5Store(args.root, create=False)
        _open_root(store.root)
    except (StoreError, FileNotFoundError) as e:
        print(e, file=sys.stderr)
        return 2
    return {"list": _list, "verify": _verify, "delete": _delete}[args.command](store, args)


def _list(store, args):
    fields = {}
    for field, _, _, size, _ in store.entries():
        count, total = fields.get(field, (0, 0))
        fields[field] = (count + 1, total + size)
    summary = {"root": store.root, "entries": sum(c for c, _ in fields.values()),
               "bytes": sum(b for _, b in fields.values()),
               "fields": {f: {"entries": c, "bytes": b} for f, (c, b) in sorted(fields.items())}}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"{summary['root']}: {plural(summary['entries'], 'entry', 'entries')}, {summary['bytes'] / 1e6:.1f} MB")
        for field, info in summary["fields"].items():
            print(f"  {field}: {plural(info['entries'], 'entry', 'entries')}, {info['bytes'] / 1e6:.1f} MB")
    return 0


def _problem(store, path, field, token):
    """Why the entry at ``path`` is bad, or None if it reads back with a valid digest."""
    if isinstance(store, RemoteStore):
        return store.problem(field, token)
    try:
        _read(path, field, token, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any unreadable entry is bad; the reason is reported
        return f"{type(e).__name__}: {e}"
    return None


def _what(path):
    """What a file that is not an entry is (never opened, never followed)."""
    return f"a symbolic link to {os.readlink(path)}" if os.path.islink(path) else "not a regular file"


def _remove(store, field, token, path):
    """Delete the file at ``path``: an object of a URL root by its entry's name; in a folder, unlink it
    (``root/<field>/<prefix>/<name>``) without following a symbolic link on the way: the folders are
    opened with ``O_NOFOLLOW`` from the root down, so a folder replaced by a link after the listing is
    refused, and a link at ``path`` is removed itself, never its target. An ``OSError`` (the file
    already gone, such a link) is printed and the command goes on."""
    if isinstance(store, RemoteStore):
        store.delete(field, token)
        return
    root = store.root
    *folders, name = os.path.relpath(path, root).split(os.sep)
    fd = None
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        for folder in folders:
            inner = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
        os.unlink(name, dir_fd=fd)
    except OSError as e:
        print(f"cannot remove {path}: {e}", file=sys.stderr)
    finally:
        if fd is not None:
            os.close(fd)


def _verify(store, args):
    checked, bad = 0, 0
    found = [(field, token, path, _problem(store, path, field, token)) for field, token, path, _, _ in store.entries()]
    found += [(field, token, path, _what(path)) for field, token, path, _, _ in store.files("other")]
    for field, token, path, reason in found:
        checked += 1
        if reason is not None:
            bad += 1
            if args.remove:
                _remove(store, field, token, path)
            print(f"{'removed' if args.remove else 'bad'}: {path}: {reason}")
    removed = " (removed)" if args.remove and bad else ""
    print(f"checked {plural(checked, 'entry', 'entries')}: {plural(bad, 'bad entry', 'bad entries')}{removed}")
    return 1 if bad and not args.remove else 0


def _delete(store, args):
    if not (args.all or args.field or args.older_than):
        print("delete: choose --all, --field NAME and/or --older-than AGE", file=sys.stderr)
        return 2
    entries = list(store.entries()) + list(store.files("other"))
    if args.field and args.field not in {field for field, *_ in entries}:
        known = sorted({field for field, *_ in entries})
        print(f"delete: no field {args.field!r} in {store.root}; its fields: {', '.join(known) or 'none'}",
              file=sys.stderr)
        return 2
    stale = time.time() - 3600  # a temporary file younger than an hour may be a live writer's
    temporaries = [t for t in store.temporaries() if t[4] < stale]
    removed = {"entry": 0, "temporary": 0}
    for kind, files in (("entry", entries), ("temporary", temporaries)):
        for field, token, path, _, mtime in files:
            if (args.field and field != args.field) or (args.older_than and mtime >= args.older_than):
                continue
            print(f"{'would remove' if args.dry_run else 'removed'} {path}")
            if not args.dry_run:
                _remove(store, field, token, path)
            removed[kind] += 1
    temporary = f" and {plural(removed['temporary'], 'temporary file')} of killed writers" if removed["temporary"] else ""
    print(f"{plural(removed['entry'], 'entry', 'entries')}{temporary} {'to remove' if args.dry_run else 'removed'}")
    return 0
