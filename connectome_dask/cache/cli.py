"""``python -m connectome_dask cache ROOT <command>``: inspect and clean an HDF5 cache root.

``list``    entries, bytes, per field (``--json`` for machines)
``verify``  read every entry and check its checksum; ``--remove`` deletes bad ones (exit 1 if any)
``delete``  remove entries: ``--all``, ``--field F``, ``--older-than 2026-01-31 | 30d | 12h``;
            ``--dry-run`` only prints; stale temporary files of killed writers are removed too

Listing touches only directory entries (``os.scandir``), so it stays fast on 100,000 entries.
Never imports dask. Exit codes: 0 ok, 1 bad entries found, 2 usage error or not a cache root.
"""

import argparse
import datetime
import json
import os
import sys
import time

from ..exceptions import StoreError
from .hdf5 import HDF5Store

__all__ = ["main"]


def _age(text):
    """Seconds since the epoch before which entries are 'older': a date or a duration (30d, 12h, 45m)."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(text[:-1]) * units[text[-1]]
    return datetime.datetime.fromisoformat(text).timestamp()


def _parser():
    parser = argparse.ArgumentParser(prog="python -m connectome_dask cache", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list").add_argument("--json", action="store_true")
    verify = sub.add_parser("verify")
    verify.add_argument("--remove", action="store_true")
    delete = sub.add_parser("delete")
    delete.add_argument("--all", action="store_true")
    delete.add_argument("--field")
    delete.add_argument("--older-than", type=_age)
    delete.add_argument("--dry-run", action="store_true")
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    if not os.path.isdir(args.root):
        print(f"{args.root}: no such cache root", file=sys.stderr)
        return 2
    try:
        store = HDF5Store(args.root, create=False)
        from .hdf5 import _open_root

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
        print(f"{summary['root']}: {summary['entries']} entries, {summary['bytes'] / 1e6:.1f} MB")
        for field, info in summary["fields"].items():
            print(f"  {field}: {info['entries']} entries, {info['bytes'] / 1e6:.1f} MB")
    return 0


def _verify(store, args):
    bad = 0
    for field, token, path, _, _ in store.entries():
        if not store.verify(field, token):
            bad += 1
            print(f"bad: {path}")
            if args.remove:
                os.unlink(path)
    print(f"{bad} bad entries" + (" removed" if args.remove and bad else ""))
    return 1 if bad else 0


def _delete(store, args):
    if not (args.all or args.field or args.older_than):
        print("delete: choose --all, --field F and/or --older-than DATE|DURATION", file=sys.stderr)
        return 2
    removed = 0
    for field, _, path, _, mtime in store.entries():
        if (args.field and field != args.field) or (args.older_than and mtime >= args.older_than):
            continue
        removed += 1
        print(f"{'would remove' if args.dry_run else 'removed'} {path}")
        if not args.dry_run:
            os.unlink(path)
    for path in store.temporaries():
        if not args.dry_run and os.path.getmtime(path) < time.time() - 3600:
            os.unlink(path)
    print(f"{removed} entries {'to remove' if args.dry_run else 'removed'}")
    return 0
