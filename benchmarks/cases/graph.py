"""Graph build and end-to-end time per id (sync scheduler), 1,000 and 10,000 ids x 3 fields.

connectome_dask's ``to_dask`` against the same functions as a hand-written dict graph run by
``dask.get`` (the "raw" side) and, at 1,000 ids, hand-written ``dask.delayed``."""

import time

import dask
from dask.task_spec import Task, TaskRef

from common import args, report
import pipelines


def hand_graph(n):
    graph = {}
    for i in range(n):
        graph[f"value-0-{i}"] = Task(f"value-0-{i}", pipelines.value, i)
        for step, f in enumerate((pipelines.plus, pipelines.times, pipelines.minus), 1):
            graph[f"value-{step}-{i}"] = Task(f"value-{step}-{i}", f, TaskRef(f"value-{step - 1}-{i}"))
        graph[f"other-{i}"] = Task(f"other-{i}", pipelines.plus, i)
        graph[f"third-{i}"] = Task(f"third-{i}", pipelines.minus, i)
    return graph, [[f"value-3-{i}", f"other-{i}", f"third-{i}"] for i in range(n)]


def main():
    a = args()
    sizes = (1000,) if a.quick else (1000, 10000)
    out = {}
    dask.compute(dask.delayed(abs)(-1), scheduler="sync")  # warm up dask itself
    for n in sizes:
        start = time.perf_counter()
        if a.lib == "raw":
            graph, keys = hand_graph(n)
            built = time.perf_counter()
            dask.get(graph, keys)
            tasks = len(graph)
        else:
            ds = pipelines.cheap(a.lib, n)
            ids = ds.ids
            collection = ds.to_dask(["value", "other", "third"], ids)
            built = time.perf_counter()
            collection.compute(scheduler="sync")
            tasks = len(dict(collection.__dask_graph__()))
        end = time.perf_counter()
        out[f"build_us_per_task_{n}"] = (built - start) / tasks * 1e6
        out[f"us_per_id_{n}"] = (end - start) / n * 1e6
    if a.lib == "raw":
        start = time.perf_counter()
        values = [dask.delayed(pipelines.minus)(dask.delayed(pipelines.times)(dask.delayed(pipelines.plus)(
            dask.delayed(pipelines.value)(i)))) for i in range(1000)]
        dask.compute(*values, scheduler="sync")
        out["delayed_us_per_id_1000"] = (time.perf_counter() - start) / 1000 * 1e6
    report(out)


main()
