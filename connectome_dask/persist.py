"""``pipeline.persist(client)``: fill every cache layer of a pipeline in parallel with dask.

One task per entry: it evaluates every requested ``Cached`` node of that entry in one
:class:`~connectome_dask.evaluate.Evaluation`, so upstream work shared by several cached fields
runs once, a store that already holds an entry is not recomputed, and nothing upstream of a hit
runs. Workers write HDF5 entries straight into the shared root (atomic publish), and a task
returns only a short status, so the client holds no arrays. Tasks are keyed
``f"{fields}-{token}"`` (the fields' names, then the entry's Merkle token), so the dashboard
groups them by field.

The task catches the user's exception and returns it; a task lost with its worker is retried by
dask, and if it still fails its id is reported as failed with that error. After the call
``computed + cached + len(failed)`` is the number of ids.
"""

import dataclasses
import sys

from .evaluate import Evaluation
from .exceptions import PersistError
from .hashing import combine, tokenize
from .nodes import Cached, Call, Input, walk

__all__ = ["persist", "PersistReport", "PersistJob", "cached_nodes"]


@dataclasses.dataclass
class PersistReport:
    """``computed``: ids computed and stored now; ``cached``: ids already stored;
    ``failed``: {id: exception}."""

    computed: int = 0
    cached: int = 0
    failed: dict = dataclasses.field(default_factory=dict)

    def __str__(self):
        return f"persist: {self.computed} computed, {self.cached} already cached, {len(self.failed)} failed"


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error):
        self.error = error


class PersistEntry:
    """Task function: fill the caches of ``targets`` for one entry; returns a status."""

    __slots__ = ("targets",)

    def __init__(self, targets):
        self.targets = targets

    def __call__(self, key):
        ev = Evaluation({"id": key})
        try:
            missing = [n for n in self.targets if not n.binding.contains(n.name, ev.token(n))]
            for node in missing:
                ev.value(node)
        except Exception as e:  # noqa: BLE001 - the user's error is reported per id
            return _Failure(_picklable(e))
        computed = any(isinstance(n, Call) for n in ev.values)
        return "computed" if computed else "cached"

    def __reduce__(self):
        return PersistEntry, (self.targets,)


def _picklable(error):
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(error).__name__}: {error}")


def cached_nodes(pipeline, fields=None):
    """``(field names, Cached nodes)`` that ``persist`` fills, dependencies first."""
    plan = pipeline._plan()
    names = list(plan.fields) if fields is None else [fields] if isinstance(fields, str) else list(fields)
    for name in names:
        if name not in plan.fields:
            raise ValueError(f"persist: {name!r} is not a field of the pipeline; fields: {sorted(plan.fields)}")
    targets = [n for n in walk([plan.fields[n] for n in names]) if isinstance(n, Cached)]
    targets = [n for n in targets if n.missing == frozenset() and "id" in _inputs(n)]
    return sorted({n.name for n in targets}), targets


def _inputs(node):
    return {n.name for n in walk([node]) if isinstance(n, Input)}


class PersistJob:
    """What ``persist(..., wait=False)`` returns: ``.futures`` and ``.result(timeout)``."""

    def __init__(self, client, futures, ids, errors):
        self.client, self.futures, self.ids, self._errors = client, futures, ids, errors

    def result(self, timeout=None):
        from distributed import wait

        wait(self.futures, timeout=timeout)
        finished = [f for f in self.futures if f.status == "finished"]
        statuses = dict(zip([f.key for f in finished], self.client.gather(finished)))
        report = PersistReport()
        for key, future in zip(self.ids, self.futures):
            _count(report, key, future, statuses)
        return _finish(report, self._errors)


def _count(report, key, future, statuses):
    if future.key in statuses:
        status = statuses[future.key]
        if isinstance(status, _Failure):
            report.failed[key] = status.error
        elif status == "computed":
            report.computed += 1
        else:
            report.cached += 1
    else:
        try:
            error = future.exception()
        except BaseException as e:  # noqa: BLE001 - cancelled futures raise here
            error = e
        report.failed[key] = error if error is not None else RuntimeError(f"task {future.key} {future.status}")


def _finish(report, errors):
    if report.failed and errors == "raise":
        first = next(iter(report.failed.items()))
        raise PersistError(f"{report}; first failure: id {first[0]!r}: {type(first[1]).__name__}: {first[1]}. "
                           "Fix the field or pass errors='report'; see the .report attribute", report)
    return report


def persist(pipeline, client=None, *, ids=None, fields=None, errors="raise", wait=True, progress=True):
    """Fill the caches of ``pipeline`` for ``ids`` (default: ``pipeline.ids``) and ``fields``
    (default: every cached field) on ``client`` (default: the current client, else an embedded
    local cluster). Returns a :class:`PersistReport`; with ``wait=False`` a :class:`PersistJob`."""
    if errors not in ("raise", "report"):
        raise ValueError(f"persist: errors must be 'raise' or 'report', got {errors!r}")
    names, targets = cached_nodes(pipeline, fields)
    ids = list(pipeline.ids if ids is None else ids)
    from .cluster import resolve_client

    client = resolve_client(client)
    prefix = "-".join(names) or "persist"
    structure = combine(*(combine(n.name, n.binding.token) for n in targets))
    keys = [f"{prefix}-{combine(structure, tokenize(i, what='an entry key'))}" for i in ids]
    task = PersistEntry(tuple(targets))
    futures = client.map(task, ids, key=keys, pure=False) if ids else []
    job = PersistJob(client, futures, ids, errors)
    if not wait:
        return job
    try:
        _progress(futures, progress)
    except KeyboardInterrupt:
        client.cancel(futures)
        raise
    return job.result()


def _progress(futures, enabled):
    from distributed import as_completed

    if not enabled or not futures:
        for _ in as_completed(futures):
            pass
        return
    from tqdm.auto import tqdm

    with tqdm(total=len(futures), desc="persist", unit="entry", file=sys.stderr) as bar:
        for _ in as_completed(futures):
            bar.update(1)
