"""Per-call time of ``ds.value(key)`` for a Source + 3 cheap Transforms, and import time."""

import subprocess
import statistics
import sys
import time

from common import args, per_call, report
import pipelines


def main():
    a = args()
    number = 2000 if a.quick else 20000
    if a.lib == "raw":
        f = lambda: pipelines.minus(pipelines.times(pipelines.plus(pipelines.value(7))))  # noqa: E731
        report({"us_per_call": per_call(f, number) * 1e6})
        return
    ds = pipelines.cheap(a.lib)
    assert ds.value(7) == ((7 * 2 + 1) * 3) - 1
    us = per_call(lambda: ds.value(7), number) * 1e6
    imports = []
    for _ in range(3 if a.quick else 7):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {a.lib}"], check=True)
        imports.append(time.perf_counter() - start)
    report({"us_per_call": us, "import_s": statistics.median(imports)})


main()
