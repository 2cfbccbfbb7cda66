"""``connectome-dask`` / ``python -m connectome_dask``: the command line. One command, ``cache``
(:mod:`connectome_dask.cache.cli`); it never imports dask."""

import argparse
import sys

__all__ = ["main"]


def main(argv=None):
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    from .cache import cli

    argv = sys.argv[1:] if argv is None else list(argv)
    program = cli._program()
    top = argparse.ArgumentParser(prog=program, description="connectome_dask from the command line.",
                                  epilog=f"'{program} cache --help' for the cache commands.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("cache", add_help=False, help="inspect and clean an HDF5 cache root: list, verify, delete")
    if argv[:1] == ["cache"]:
        return cli.main(argv[1:], prog=f"{program} cache")
    top.parse_args(argv)  # prints the help, or the usage error (exit 2)
    return 2


if __name__ == "__main__":
    sys.exit(main())
