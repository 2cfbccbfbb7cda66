"""Eager per-call time of ``ds.value(key)`` for a Source + 3 cheap Transforms, and import time.

raw: the same four functions called directly, and ``python -c pass`` for the import floor."""

import os
import statistics
import subprocess
import sys
import time

from common import HERE, ROOT, args, per_call, report
import pipelines


def import_seconds(lib, runs):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, HERE])}
    code = "pass" if lib == "raw" else f"import {lib}"
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    a = args()
    keys = list(range(1000))
    repeat = 5 if a.quick else 30
    if a.lib == "raw":
        call = pipelines.raw_value
    else:
        call = pipelines.cheap(a.lib).value
    assert [call(k) for k in keys] == [pipelines.raw_value(k) for k in keys]
    us = per_call(call, keys, repeat) * 1e6
    report({"us_per_call": us, "import_s": import_seconds(a.lib, 3 if a.quick else 7)}, a.json)


if __name__ == "__main__":
    main()
