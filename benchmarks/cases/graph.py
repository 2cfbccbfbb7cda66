"""Pipelines as dask graphs: build time and end-to-end time (sync scheduler) for 1,000 and 10,000
ids x 3 fields (value, other, third) of the cheap Source + 3 Transforms.

connectome_dask: the bulk collection (``bulk_collection``) computed with ``dask.compute``, and
``ds.value.delayed(id)`` for one key at a time. raw: the same functions as a hand-written dict graph
run by ``dask.get`` and as hand-written ``dask.delayed`` (8 tasks per id in both; at 10,000 ids
only with ``--slow``: it takes minutes).

Scaling of one ``Delayed`` per id (``value`` only, 1,000 and 10,000 ids, build + compute per id):
``delayed_value_us_per_id_N`` is ``dask.compute(*[ds.value.delayed(k) for k in ids],
scheduler="sync")`` for connectome_dask and the same four functions chained with plain
``dask.delayed`` for raw; ``to_dask_value_us_per_id_N`` is ``ds.to_dask("value", ids)``;
``one_task_delayed_us_per_id_N`` (raw) is dask's own floor for that call: one hand-made ``Delayed``
of one task per id, computed without optimization (nothing to cull)."""

import time

import dask
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from dask.task_spec import Task, TaskRef

from common import args, not_available, report
import pipelines

FIELDS = ("value", "other", "third")


def bulk_collection(ds, fields, ids):
    """The one call of connectome_dask's bulk API: a dask collection of ``fields`` x ``ids`` that
    ``dask.compute`` turns into one ``tuple(fields)`` per id."""
    return ds.to_dask(list(fields), ids)


def hand_graph(ids):
    graph, keys = {}, []
    for i in ids:
        outs = []
        for field, calls in pipelines.RAW_CHEAP.items():
            arg = i
            for step, func in enumerate(calls):
                key = f"{field}-{step}-{i}"
                graph[key] = Task(key, func, arg)
                arg = TaskRef(key)
            outs.append(arg.key)
        keys.append(outs)
    return graph, keys


def hand_delayed(ids):
    out = []
    for i in ids:
        fields = []
        for calls in pipelines.RAW_CHEAP.values():
            value = i
            for func in calls:
                value = dask.delayed(func)(value)
            fields.append(value)
        out.append(fields)
    return out


def hand_delayed_value(ids):
    out = []
    for i in ids:
        value = i
        for func in pipelines.RAW_CHEAP["value"]:
            value = dask.delayed(func)(value)
        out.append(value)
    return out


def one_task_delayed(ids):
    """dask's floor: one hand-made single-task ``Delayed`` per id (key and graph written directly)."""
    out = []
    for i in ids:
        key = f"value-{i}"
        graph = HighLevelGraph.from_collections(key, {key: Task(key, pipelines.raw_value, i)}, dependencies=())
        out.append(Delayed(key, graph, layer=key))
    return out


def scaling(lib, sizes):
    """Per-id cost of computing one Delayed per id together (the ``value`` field), at each size."""
    out = {}
    for n in sizes:
        ids = list(range(n))
        want = [pipelines.raw_value(i) for i in ids]
        if lib == "raw":
            runs = {"delayed_value": lambda: dask.compute(*hand_delayed_value(ids), scheduler="sync"),
                    "one_task_delayed": lambda: dask.compute(*one_task_delayed(ids), scheduler="sync",
                                                             optimize_graph=False)}
        else:
            ds = pipelines.cheap(lib, n)
            ds.ids
            runs = {"delayed_value": lambda: dask.compute(*[ds.value.delayed(k) for k in ids], scheduler="sync"),
                    "to_dask_value": lambda: ds.to_dask("value", ids).compute(scheduler="sync")}
        for name, run in runs.items():
            start = time.perf_counter()
            result = run()
            out[f"{name}_us_per_id_{n}"] = (time.perf_counter() - start) / n * 1e6
            assert list(result) == want, name
    return out


def _field(field, i):
    for func in pipelines.RAW_CHEAP[field]:
        i = func(i)
    return i


def measure(build, compute, n, check):
    """{build_us_per_task, build_us_per_id, us_per_id}; ``build() -> (obj, n_tasks)``."""
    start = time.perf_counter()
    obj, tasks = build()
    built = time.perf_counter()
    result = compute(obj)
    end = time.perf_counter()
    check(result)
    return {"build_us_per_task": (built - start) / tasks * 1e6, "build_us_per_id": (built - start) / n * 1e6,
            "us_per_id": (end - start) / n * 1e6}


def main():
    a = args(("connectome_dask", "raw"))
    sizes = (1000,) if a.quick else (1000, 10000)
    out = {}
    dask.compute(dask.delayed(abs)(-1), scheduler="sync")  # warm up dask itself

    def add(prefix, n, metrics):
        out.update({f"{prefix}{k}_{n}": v for k, v in metrics.items()})

    for n in sizes:
        ids = list(range(n))
        want = [tuple(_field(f, i) for f in FIELDS) for i in ids]

        def check(result):
            assert [tuple(r) for r in result] == want

        if a.lib == "raw":
            def graph():
                g, keys = hand_graph(ids)
                return (g, keys), len(g)

            add("", n, measure(graph, lambda gk: dask.get(*gk), n, check))

            def delayed():
                d = hand_delayed(ids)
                return d, 8 * n

            if n <= 1000 or a.slow:  # minutes at 10,000 ids: it grows worse than linearly
                add("delayed_", n, measure(delayed, lambda d: dask.compute(*d, scheduler="sync"), n, check))
            continue
        ds = pipelines.cheap(a.lib, n)
        ds.ids  # the id listing is the pipeline's, not the graph's

        def bulk():
            collection = bulk_collection(ds, FIELDS, ids)
            return collection, len(dict(collection.__dask_graph__()))

        try:
            add("", n, measure(bulk, lambda c: dask.compute(c, scheduler="sync")[0], n, check))
        except Exception as error:  # the bulk API is not there (yet)
            out[f"us_per_id_{n}"] = not_available(error)
    # one key at a time: build + compute of one Delayed per id (value only)
    ids = list(range(200 if a.quick else 1000))
    if a.lib == "raw":
        one = lambda i: hand_delayed([i])[0][0].compute(scheduler="sync")  # noqa: E731
    else:
        ds = pipelines.cheap(a.lib, len(ids))
        one = lambda i: ds.value.delayed(i).compute(scheduler="sync")  # noqa: E731
    try:
        start = time.perf_counter()
        values = [one(i) for i in ids]
        out["one_key_us"] = (time.perf_counter() - start) / len(ids) * 1e6
        assert values == [pipelines.raw_value(i) for i in ids]
    except Exception as error:
        out["one_key_us"] = not_available(error)
    out.update(scaling(a.lib, (200, 1000) if a.quick else (1000, 10000)))
    report(out, a.json)


if __name__ == "__main__":
    main()
