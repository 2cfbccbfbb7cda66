"""``python -m connectome_dask cache ROOT ...``: the cache command line (see ``cache.cli``)."""

import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "cache":
        print("usage: python -m connectome_dask cache ROOT {list,verify,delete} ...", file=sys.stderr)
        return 2
    from .cache.cli import main as cache_main

    return cache_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
