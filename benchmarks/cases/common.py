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


def steady_allocator():
    """Fix glibc's malloc thresholds for this process (every library runs this same code).

    By default glibc raises its mmap threshold to the largest block freed so far and returns the top
    of the heap to the kernel once more than twice that is free. Whether a loop of 4 MB arrays is
    faulted in afresh every iteration (~1,300 page faults per entry here, ~0.4 s per 64 entries on
    this VM) or reuses freed memory then depends on which block some import happened to free first,
    not on the code being measured: the same populate loop ran with 9,900 or 92,000 faults.
    Fixed thresholds (arrays up to 32 MB from the heap, trimmed beyond 256 MB free) make every
    library reuse freed memory alike. A no-op where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 256 << 20))


def page_faults():
    """Minor page faults of this process so far (0 where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


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
