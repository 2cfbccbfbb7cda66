"""``pipeline.persist(client)``: fill every cache layer of a pipeline in parallel with dask.

Coarse tasks: each evaluates, for a batch of entries (one entry when there are few, more when
there are thousands, a whole shard for ``CacheColumns``), every requested ``Cached`` node of an
entry in one :class:`~connectome_dask.evaluate.Evaluation`, so upstream work shared by several
cached fields runs once, a store that already holds an entry is not recomputed, and nothing
upstream of a hit runs. Workers write HDF5 entries straight into the shared root (atomic publish), and a task
returns only a short status, so the client holds no arrays. Tasks are keyed
``f"{fields}-{token}"`` (the fields' names, then a token of the batch's entries), so the
dashboard groups them by field.

The task catches the user's exception and returns it; a task lost with its worker is retried by
dask, and if it still fails its id is reported as failed with that error. After the call
``computed + cached + len(failed)`` is the number of ids.
"""

import dataclasses
import sys

from .allocator import restore as restore_heap, reuse_freed_memory
from .evaluate import Evaluation
from .exceptions import PersistError
from .hashing import combine, tokenize
from .nodes import Cached, Call, Input, static_token, walk

__all__ = ["persist", "PersistReport", "PersistJob", "PersistBatch", "cached_nodes"]


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


class PersistBatch:
    """Task function: fill the caches of ``targets`` for a batch of entries; a status per entry."""

    __slots__ = ("targets",)

    def __init__(self, targets):
        self.targets = targets

    def __call__(self, keys):
        reuse_freed_memory()  # see connectome_dask.allocator
        return [self.entry(key) for key in keys]

    def entry(self, key):
        ev = Evaluation({"id": key})
        try:
            missing = [n for n in self.targets if not isinstance(n, Cached) or not n.is_stored(ev)]
            for node in missing:
                ev.value(node)  # a routing node fills the caches of the entries it routes to
        except Exception as e:  # noqa: BLE001 - the user's error is reported per id
            return _Failure(_picklable(e))
        return "computed" if _computed(ev) else "cached"

    def __reduce__(self):
        return PersistBatch, (self.targets,)


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
        return node.binding.token
    return combine(*sorted({n.binding.token for n in walk(node.routed(), inner=True) if isinstance(n, Cached)}))


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
    result(timeout=None)
        Wait for every future and return the :class:`PersistReport` (or raise
        :class:`~connectome_dask.exceptions.PersistError`, as the blocking call would).
    """

    def __init__(self, client, futures, batches, errors):
        self.client, self.futures, self.batches, self._errors = client, futures, batches, errors
        self._restored = False

    def result(self, timeout=None):
        _wait(self.client, self.futures, timeout)
        finished = [f for f in self.futures if f.status == "finished"]
        statuses = dict(zip([f.key for f in finished], self.client.gather(finished)))
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


def batches_of(ids, targets, workers):
    """Entries per task: one each for few ids (heavy entries balance best), enough per task to keep
    the scheduler's per-task cost small for many ids, and whole shards for ``CacheColumns``."""
    size = max(1, len(ids) // (max(workers, 1) * 50))
    sharded = [n for n in targets if hasattr(getattr(n, "binding", None), "shards")]
    if sharded:
        index, _ = sharded[0].binding.shards()
        groups = {}
        for key in ids:
            groups.setdefault(index.get(key), []).append(key)
        return list(groups.values())
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def _finish(report, errors):
    if report.failed and errors == "raise":
        first = next(iter(report.failed.items()))
        raise PersistError(f"{report}; first failure: id {first[0]!r}: {type(first[1]).__name__}: {first[1]}. "
                           "Fix the field or pass errors='report'; see the .report attribute", report)
    return report


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
    batches = batches_of(ids, targets, len(client.scheduler_info().get("workers", ())) or 1)
    prefix = "-".join(names) or "persist"
    structure = combine(*(combine(n.name, _store_token(n)) for n in targets))
    keys = [f"{prefix}-{combine(structure, *(tokenize(i, what='an entry key') for i in b))}" for b in batches]
    futures = client.map(PersistBatch(tuple(targets)), batches, key=keys, pure=False) if batches else []
    job = PersistJob(client, futures, batches, errors)
    if not wait:
        return job
    try:
        _progress(client, futures, [len(b) for b in batches], progress)
    except KeyboardInterrupt:
        client.cancel(futures)
        raise
    return job.result()


def _wait(client, futures, timeout=None, bar=None, sizes=None):
    """Wait for ``futures`` of ``client`` (which need not be the default client)."""
    from distributed import as_completed

    size_of = dict(zip((f.key for f in futures), sizes or ()))
    for future in as_completed(futures, loop=client.loop, timeout=timeout):
        if bar is not None:
            bar.update(size_of.get(future.key, 1))


def _progress(client, futures, sizes, enabled):
    if not enabled or not futures:
        return _wait(client, futures)
    from tqdm.auto import tqdm

    with tqdm(total=sum(sizes), desc="persist", unit="entry", file=sys.stderr) as bar:
        _wait(client, futures, bar=bar, sizes=sizes)
