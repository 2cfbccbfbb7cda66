"""What every case shares: import paths, arguments, timing and the result line.

A case prints one JSON object (``--json``) of metrics: numbers, or a string "not available: ..."
for a metric the library cannot give (an API that does not exist yet), which the harness shows as is.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # benchmarks/
ROOT = os.path.dirname(HERE)  # the repository: connectome_dask as checked out
for path in (ROOT, HERE):
    if path not in sys.path:
        sys.path.insert(1, path)

LIBS = ("connectome_dask", "connectome", "raw")


def args(libs=LIBS):
    parser = argparse.ArgumentParser()
    parser.add_argument("--lib", required=True, choices=libs)
    parser.add_argument("--json", action="store_true", help="print one JSON line (for run.py)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--slow", action="store_true", help="also the measurements that take minutes "
                        "(run.py asks for them on its first repeat only)")
    return parser.parse_args()


def per_call(func, items, repeat=5):
    """Median seconds per call of ``func(item)`` over ``repeat`` passes through ``items``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for item in items:
            func(item)
        times.append((time.perf_counter() - start) / len(items))
    return statistics.median(times)


def timed(func, *a, **kw):
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = func(*a, **kw)
    return time.perf_counter() - start, result


def not_available(error):
    return f"not available: {type(error).__name__}: {error}".splitlines()[0][:200]


def volumes_folder(n):
    """The deterministic input volumes, generated once per machine into the temp folder."""
    import pipelines

    return pipelines.make_volumes(os.path.join(tempfile.gettempdir(), "cdask-bench-volumes", str(n)), n)


def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def report(result, as_json):
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:36s} {value:.4g}" if isinstance(value, float) else f"{key:36s} {value}")
