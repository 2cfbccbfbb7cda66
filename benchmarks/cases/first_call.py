"""The first ``persist()`` of a process, what ``python my_script.py`` gets (issue 19).

The 64-volume pipeline of ``persist.py`` (volumes >> Zoom >> Normalize >> Crop >> CacheToDisk): a serial
fill into a fresh root, then the process's first ``ds.persist()`` on the embedded cluster (which starts
it), then a second one into another fresh root. Speedups are the serial time divided by each persist
time, in this process. One measurement per process, so ``run.py first_call --repeat N`` gives N fresh
processes; their median is the first-call figure (``persist.py``'s ``speedup_persist_embedded`` is the
same first call, inside a process that ran more before).
"""

import os
import shutil
import tempfile
import time

import numpy as np

from common import args, report, steady_allocator, timed, volumes_folder
import pipelines


def main():
    a = args(libs=("connectome_dask",))
    steady_allocator()
    n = 8 if a.quick else 64
    data = volumes_folder(n)
    keys = pipelines.volume_ids(data)
    pipelines.zoom(np.zeros((8, 8, 8), np.float32), 0.5)  # imports scipy.ndimage outside the timings
    work = tempfile.mkdtemp(prefix="cdask-bench-first-")
    try:
        ds = pipelines.preprocessing(a.lib, data, os.path.join(work, "serial"))
        serial, _ = timed(lambda: [(ds.image(k), ds.mask(k)) for k in keys])
        out = {"serial_s": serial}
        for run in ("first", "warm"):
            start = time.perf_counter()
            result = pipelines.preprocessing(a.lib, data, os.path.join(work, run)).persist(progress=False)
            out[f"{run}_s"] = time.perf_counter() - start
            assert result.computed == n, result
        out["speedup_first_call"] = serial / out["first_s"]
        out["speedup_warm"] = serial / out["warm_s"]
        return report(out, a.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
