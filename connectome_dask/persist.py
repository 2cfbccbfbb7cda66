"""``pipeline.persist(client)``: fill every cache layer of a pipeline in parallel with dask.

Coarse tasks: each evaluates, for a batch of entries (see :func:`batches_of`; a whole shard for
``CacheColumns``), every requested ``Cached`` node of an entry in one
:class:`~connectome_dask.evaluate.Evaluation`, so upstream work shared by several cached fields
runs once, a store that already holds an entry is not recomputed, and nothing upstream of a hit
runs. A task on a worker reports, at most every half second, how many of its entries are done
(:mod:`connectome_dask.progress`), so the progress bar moves per entry. Workers
write HDF5 entries straight into the shared root (atomic publish), and a task returns only a short
status per entry, so the client holds no arrays. Tasks are keyed
``f"{fields}-{token}"`` (the fields' names, then a token of the batch's entries), so the
dashboard groups them by field. The stamps of ``@files`` functions are computed here, once per
call, and shipped with each batch (:mod:`connectome_dask.stamps`): workers do not hash raw files.

The task catches the user's exception and returns it; a task lost with its worker is retried by
dask, and if it still fails its id is reported as failed with that error. After the call
``computed + cached + len(failed)`` is the number of ids.
"""

import dataclasses
import time

from .allocator import restore as restore_heap, reuse_freed_memory
from .evaluate import Evaluation
from .exceptions import PersistError
from .hashing import combine, tokenize
from .nodes import Cached, Call, Input, static_token, walk
from .progress import PROGRESS_TOPIC, REPORT_EVERY, Tally, reporter
from .shipping import Shipped
from .stamps import recording, shipped

__all__ = ["persist", "PersistReport", "PersistJob", "PersistBatch", "cached_nodes", "batches_of", "PROGRESS_TOPIC"]



@dataclasses.dataclass
class PersistReport:
    """What :func:`persist` did, counted in ids.

    ``computed + cached + len(failed)`` is the number of ids requested, also when a worker died.

    Attributes
    ----------
    computed : int
        Ids for which something was computed and stored in this call.
    cached : int
        Ids whose requested cached fields were all stored already.
    failed : dict
        ``{id: exception}``: the user's original exception (or the error that lost the task). An id
        with one failing field is failed; its other fields may still be stored.

    Examples
    --------
    >>> report = PersistReport(computed=3, cached=1)
    >>> print(report)
    persist: 3 computed, 1 already cached, 0 failed
    """

    computed: int = 0
    cached: int = 0
    failed: dict = dataclasses.field(default_factory=dict)

    def __str__(self):
        return f"persist: {self.computed} computed, {self.cached} already cached, {len(self.failed)} failed"


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error):
        self.error = error


class PersistBatch(Shipped):
    """Task function: fill the caches of ``targets`` for a batch of entries; a status per entry.

    It pickles with the user's code by value and checks it before its first run in a process
    (:mod:`connectome_dask.shipping`): a stale worker raises ``StaleCodeError`` for the whole batch.
    A module the pipeline needs and a worker lacks fails the task with an error naming the module and
    the worker (:class:`~connectome_dask.shipping.Unloadable`), instead of breaking the worker's
    connection to the scheduler."""

    __slots__ = ("targets",)

    def __init__(self, targets):
        self.targets = targets

    def _args(self):
        return (self.targets,)

    def _roots(self):
        return self.targets

    def __call__(self, keys, stamps=None):
        self._check()
        reuse_freed_memory()  # see connectome_dask.allocator
        report, statuses = reporter(), []
        last = time.monotonic()
        with shipped(stamps):  # the client's stamps of the raw files (connectome_dask.stamps)
            for key in keys:
                statuses.append(self.entry(key))
                if report is not None and len(statuses) < len(keys) and time.monotonic() - last >= REPORT_EVERY:
                    report(len(statuses))
                    last = time.monotonic()
        return statuses

    def entry(self, key):
        ev = Evaluation({"id": key})
        try:
            missing = [n for n in self.targets if not isinstance(n, Cached) or not n.is_stored(ev)]
            for node in missing:
                ev.value(node)  # a routing node fills the caches of the entries it routes to
        except Exception as e:  # noqa: BLE001 - the user's error is reported per id
            return _Failure(_picklable(e))
        return "computed" if _computed(ev) else "cached"


def _computed(ev):
    """Whether an evaluation (or one it routed to) ran a user function for its entry."""
    if any(isinstance(n, Call) and static_token(n) is None for n in ev.values):
        return True
    return any(_computed(child) for _, child in (ev.children or {}).values())


def _picklable(error):
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(error).__name__}: {error}")


def cached_nodes(pipeline, fields=None):
    """``(cached field names, target nodes)``: the ``Cached`` nodes ``persist`` fills, dependencies
    first, then the routing nodes whose datasets hold caches of their own."""
    plan = pipeline._plan()
    names = list(plan.fields) if fields is None else [fields] if isinstance(fields, str) else list(fields)
    for name in names:
        if name not in plan.fields:
            raise ValueError(f"persist: {name!r} is not a field of the pipeline; fields: {sorted(plan.fields)}")
    reachable = walk([plan.fields[n] for n in names])
    targets = [n for n in reachable if isinstance(n, Cached) and not n.missing and "id" in _inputs(n)]
    inner = {}  # routing nodes (Merge, Join, GroupBy, Split) with caches inside: evaluated per entry
    for node in reachable:
        found = [n for n in walk(node.routed(), inner=True) if isinstance(n, Cached) and not n.missing]
        if found:
            inner[node] = found
    names = {n.name for n in targets} | {n.name for found in inner.values() for n in found}
    return sorted(names), targets + list(inner)


def _store_token(node):
    """The token of the stores a target fills (a routing node's: those of its datasets)."""
    if isinstance(node, Cached):
        return node.salt
    return combine(*sorted({n.salt for n in walk(node.routed(), inner=True) if isinstance(n, Cached)}))


def _inputs(node):
    return {n.name for n in walk([node]) if isinstance(n, Input)}


class PersistJob:
    """What ``persist(..., wait=False)`` returns at once.

    Attributes
    ----------
    futures : list of distributed.Future
        One future per batch of entries; use them with ``distributed.wait``,
        ``distributed.progress`` or ``distributed.as_completed``.

    Methods
    -------
    result(timeout=None, progress=False)
        Wait for every future (drawing a progress bar if asked) and return the
        :class:`PersistReport` (or raise :class:`~connectome_dask.exceptions.PersistError`, as the
        blocking call would).
    """

    def __init__(self, client, futures, batches, errors):
        self.client, self.futures, self.batches, self._errors = client, futures, batches, errors
        self._restored = False

    def __repr__(self):
        states = {}
        for future in self.futures:
            states[future.status] = states.get(future.status, 0) + 1
        entries = sum(len(b) for b, f in zip(self.batches, self.futures) if f.status == "finished")
        state = "running" if states.get("pending") else "done"
        tasks = ", ".join(f"{n} {status}" for status, n in sorted(states.items()))
        return (f"<PersistJob {state}: {entries}/{sum(map(len, self.batches))} entries in finished tasks; "
                f"{len(self.futures)} tasks ({tasks or 'none'})>")

    def result(self, timeout=None, progress=False):
        statuses = _collect(self.client, self.futures, [len(b) for b in self.batches], timeout, progress)
        if self.futures and not self._restored:
            self._restored = True
            try:
                self.client.run(restore_heap)  # the workers' start-up heap settings
            except Exception:  # noqa: BLE001 - best effort: a worker may be gone
                pass
        report = PersistReport()
        for batch, future in zip(self.batches, self.futures):
            if future.key in statuses:
                for key, status in zip(batch, statuses[future.key]):
                    _count(report, key, status)
            else:
                error = _error_of(future)
                for key in batch:
                    report.failed[key] = error
        return _finish(report, self._errors)


def _count(report, key, status):
    if isinstance(status, _Failure):
        report.failed[key] = status.error
    elif status == "computed":
        report.computed += 1
    else:
        report.cached += 1


def _error_of(future):
    try:
        error = future.exception()
    except BaseException as e:  # noqa: BLE001 - cancelled futures raise here
        error = e
    return error if error is not None else RuntimeError(f"task {future.key} {future.status}")


def batches_of(ids, targets, slots):
    """Entries per task, by guided self-scheduling: each batch takes ``1 / (4 * slots)`` of the
    entries left (``slots``: the cluster's worker threads), so the first tasks are big (little
    scheduling per entry: on 2 cores, 64 one-entry tasks took 0.43 s of scheduler CPU per 2.8 s
    persist, these 21 tasks 0.23 s) and the last ones single entries (every slot finishes at about
    the same time). A batch holds at most 8 entries,
    or ``len(ids) / (50 * slots)`` for many ids, so the progress bar moves and ``Ctrl-C`` stops
    the cluster within a few entries. A ``CacheColumns`` shard is one batch, never split.

    Examples
    --------
    >>> [len(b) for b in batches_of(list(range(64)), [], slots=2)]
    [8, 7, 7, 6, 5, 4, 4, 3, 3, 3, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1]
    """
    sharded = [n.inner for n in targets if isinstance(n, Cached) and hasattr(n.inner, "shards")]
    if sharded:
        index = sharded[0].shards()
        groups = {}
        for key in ids:
            groups.setdefault(index.get(key), []).append(key)
        return list(groups.values())
    most = max(8, len(ids) // (50 * slots))
    batches, start = [], 0
    while start < len(ids):
        size = min(most, -(-(len(ids) - start) // (4 * slots)))
        batches.append(ids[start:start + size])
        start += size
    return batches


def _finish(report, errors):
    if report.failed and errors == "raise":
        key, error = next(iter(report.failed.items()))
        raise PersistError(f"{report}; first failure: id {key!r}: {type(error).__name__}: {error}. "
                           f"{_advice(error)}; pass errors='report' to get the report instead, or see the "
                           ".report attribute", report)
    return report


def _advice(error):
    """What to do about a failed entry: the environment (a module missing where the task ran) or the field."""
    chain = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    module = next((e.name for e in chain if isinstance(e, ImportError) and e.name), None)
    if any("deserialization of the task graph" in str(e) for e in chain):
        return (f"Module {module or '?'!r} is not importable on the scheduler, which loads every task: install "
                "connectome_dask and the packages the pipeline uses there too, as on the workers (see docs/clusters.md)")
    if module:
        return (f"Install {module!r} on every worker, or put it on their PYTHONPATH, as on the client "
                "(see docs/clusters.md)")
    return "Fix the field"


def persist(pipeline, client=None, *, ids=None, fields=None, errors="raise", wait=True, progress=True):
    """Fill every cache layer of ``pipeline`` in parallel with dask (``pipeline.persist(...)``).

    Entries already stored are not recomputed and nothing upstream of a stored entry runs, so a
    second call computes nothing. Each task fills, for one entry (or a batch of them, or a
    ``CacheColumns`` shard), every requested cached field: ``CacheToDisk`` and ``CacheColumns``
    entries are written by the workers straight into their roots, and ``CacheToRam`` is filled on
    the worker that computed the entry. One failing entry does not stop the others.

    Parameters
    ----------
    pipeline : CallableLayer
        A pipeline with a Source (ids) and at least one cache layer.
    client : distributed.Client, optional
        Where to run. Default: the current default ``distributed`` client if there is one, else the
        embedded local cluster (:mod:`connectome_dask.cluster`: one worker process per core).
    ids : iterable, optional
        Entry keys to fill. Default: ``pipeline.ids``.
    fields : str or list of str, optional
        Fields whose caches to fill. Default: every cached field.
    errors : {"raise", "report"}
        With ``"raise"``, failed ids raise :class:`~connectome_dask.exceptions.PersistError` after
        every other entry finished (``.report`` holds the report); with ``"report"`` the report
        is returned.
    wait : bool
        ``False`` returns a :class:`PersistJob` at once (no progress bar).
    progress : bool
        Show a progress bar (tqdm: terminal or notebook) while waiting.

    Returns
    -------
    PersistReport or PersistJob

    Raises
    ------
    ValueError
        An unknown field, or a bad ``errors`` value.
    PersistError
        Some ids failed and ``errors="raise"``.

    Examples
    --------
    >>> from distributed import Client, LocalCluster
    >>> from connectome_dask import CacheToDisk, Source, meta
    >>> class Squares(Source):
    ...     @meta
    ...     def ids():
    ...         return [1, 2, 3]
    ...     def value(i):
    ...         return i * i
    >>> import tempfile
    >>> pipeline = Squares() >> CacheToDisk.simple("value", root=tempfile.mkdtemp())
    >>> with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster, \\
    ...         Client(cluster) as client:
    ...     first = pipeline.persist(client, progress=False)
    ...     second = pipeline.persist(client, progress=False)
    >>> print(first, second, sep="\\n")
    persist: 3 computed, 0 already cached, 0 failed
    persist: 0 computed, 3 already cached, 0 failed
    """
    if errors not in ("raise", "report"):
        raise ValueError(f"persist: errors must be 'raise' or 'report', got {errors!r}")
    names, targets = cached_nodes(pipeline, fields)
    ids = list(pipeline.ids if ids is None else ids)
    from .cluster import resolve_client

    client = resolve_client(client)
    batches = batches_of(ids, targets, _slots(client))
    prefix = "-".join(names) or "persist"
    structure = combine(*(combine(n.name, _store_token(n)) for n in targets))
    keys = [f"{prefix}-{combine(structure, *(tokenize(i, what='an entry key') for i in b))}" for b in batches]
    stamped = any(n.stamped for n in walk(targets, inner=True))
    stamps = [[_stamps(targets, b) for b in batches]] if stamped else []
    futures = client.map(PersistBatch(tuple(targets)), batches, *stamps, key=keys, pure=False) if batches else []
    job = PersistJob(client, futures, batches, errors)
    if not wait:
        _accepted(client, futures)
        return job
    try:
        return job.result(progress=progress)
    except KeyboardInterrupt:
        client.cancel(futures)
        raise


def _accepted(client, futures, timeout=10):
    """Return once the scheduler holds the tasks of ``futures`` (or they failed): it accepts a graph
    asynchronously, and a script that exits right after ``persist(wait=False)`` would shut it down
    while it deserializes the graph (an error in the log instead of the warning about unfinished tasks)."""
    deadline = time.monotonic() + timeout
    while futures and futures[-1].status == "pending" and time.monotonic() < deadline:
        try:
            if client.run_on_scheduler(_holds, futures[-1].key):
                return
        except Exception:  # noqa: BLE001 - a scheduler that cannot run it: nothing to wait for
            return
        time.sleep(0.01)


def _holds(key, dask_scheduler=None):
    return key in dask_scheduler.tasks


def _stamps(targets, keys):
    """The stamps of the raw files of ``keys``, computed here once and shipped with their task (a
    missing file travels as its error). Any other error is left to the task, which reports it per id."""
    with recording() as table:
        for key in keys:
            ev = Evaluation({"id": key})
            try:
                for node in targets:
                    ev.token(node)
            except Exception:  # noqa: BLE001 - reported by the task, per id
                pass
    return table


def _slots(client):
    """The cluster's worker threads; 32 while it has no worker yet (an adaptive cluster: fine batches)."""
    return sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values()) or 32


def _collect(client, futures, sizes, timeout=None, progress=False):
    """``{task key: statuses}`` of the ``futures`` of ``client`` (which need not be the default
    client) that finished, fetched as each one finishes; waits for all of them."""
    from distributed import as_completed

    tally = Tally(client, futures, sizes) if progress and futures else None
    statuses = {}
    try:
        for future, result in as_completed(futures, loop=client.loop, timeout=timeout, with_results=True,
                                           raise_errors=False):
            if future.status == "finished":
                statuses[future.key] = result
            if tally is not None:
                tally.set(future.key, tally.sizes[future.key])
    finally:
        if tally is not None:
            tally.close()
    return statuses
