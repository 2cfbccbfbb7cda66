"""``pipeline.persist(client)``: fill the cache layers of a pipeline in parallel with dask.

One engine. The tasks are :mod:`connectome_dask.batches`' :class:`~connectome_dask.batches.Batches`:
one task per batch of entries (see :func:`batches_of`; a whole shard for ``CacheColumns``), a
:class:`~connectome_dask.graph.Runner` evaluating every cached node to fill of an entry in one
:class:`~connectome_dask.evaluate.Evaluation` (shared upstream work runs once, nothing upstream
of a hit runs), plus the shared tasks of the static nodes the batch needs, keyed as ``.delayed``
keys them. A task's key is ``f"{fields}-{token}"``: the token combines the task keys of the cached
nodes it fills for each of its entries (Merkle tokens and store salts: an edited pipeline never
shares a key with the old one) and a nonce drawn per call, so a call is never answered by the
futures of an earlier one (a ``PersistJob`` still held, or a ``PersistError`` whose traceback
holds them). Releasing futures instead cannot reach futures the user holds, and saves nothing: a
second persist of 2,000 cheap ids on 2 workers took 817 ms (median of 7) with the nonce, 832 ms with
fixed keys.
The stamps of ``@files`` functions are computed on the client while the keys are made, once per
call, and shipped with each batch (:mod:`connectome_dask.stamps`).

A true report. Each entry is evaluated under :func:`connectome_dask.cache.cached.recording`: the
task returns, per entry, what its cached calls did — persistent entries written, found, or not
stored (and why) — so ``computed`` counts ids whose persistent entries this call wrote, an entry
the store could not write fails its id with the store's error (and the warning is given again on
the client, once per cause), a corrupt entry is recomputed and counted computed, and a RAM cache
is never mistaken for stored work (``in_ram``). A RAM cache that holds the same value as a
persistent cache of the chain (``CacheToDisk >> CacheToRam``, or below it) is passed through,
not filled (``ram=True`` fills it): workers keep no RAM no one asked for.

Crash isolation. A task lost with its worker (a segfault or ``os.abort()`` in a field: dask gives
up with ``KilledWorker``) is run again one entry per task, so only the entry that kills its
worker fails (:mod:`connectome_dask.jobs`, the client side of a call). Tasks report, at most every
half second, how many of their entries are done
(:mod:`connectome_dask.progress`).
"""

import time
import uuid

from .allocator import reuse_freed_memory
from .cache.cached import recording as outcomes
from .exceptions import InvalidArgument, NothingToPersist
from .batches import Batch, Batches
from .jobs import PersistJob, PersistReport, _Run
from .nodes import Cached, Input, walk
from .progress import PROGRESS_TOPIC, REPORT_EVERY, reporter

__all__ = ["persist", "PersistReport", "PersistJob", "PersistBatch", "cached_nodes", "batches_of", "PROGRESS_TOPIC"]


class PersistBatch(Batch):
    """Task function: fill the caches of a batch of entries; per entry ``(status, in_ram, error,
    field)``, ``status`` one of ``"computed"``, ``"cached"``, ``"ram"`` (only RAM filled),
    ``"failed"`` (``error``: the user's) or ``"unstored"`` (``error``: the store's, for ``field``).

    It pickles with the user's code by value and checks it before its first run in a process
    (:mod:`connectome_dask.shipping`): a stale worker raises ``StaleCodeError`` for the whole batch.
    A module the pipeline needs and a worker lacks fails the task with an error naming the module and
    the worker (:class:`~connectome_dask.shipping.Unloadable`)."""

    __slots__ = ()

    def __call__(self, entries, misses, *rest):
        self._check()
        reuse_freed_memory()  # see connectome_dask.allocator
        report, statuses, shards = reporter(), [], {}
        sharded = [n.name for n in self.node.items if _sharded(n)]
        last = time.monotonic()
        for values, miss in zip(entries, misses):
            statuses.append(self._status(values, miss, rest, sharded, shards))
            if report is not None and len(statuses) < len(entries) and time.monotonic() - last >= REPORT_EVERY:
                report(len(statuses))
                last = time.monotonic()
        return statuses

    def _status(self, values, misses, rest, sharded, shards):
        with outcomes() as log:
            try:
                self.entry(values, misses, rest)
            except Exception as e:  # noqa: BLE001 - the user's error is reported per id
                return ("failed", False, _picklable(e), None)
        ram = any(o.status == "stored" and not o.persistent for o in log)
        found = [o for o in log if o.persistent]
        for o in found:
            if o.status == "unstored":
                return ("unstored", ram, _picklable(o.error), o.field)
            shards.setdefault(o.field, o.status)
        states = [o.status for o in found]
        # a CacheColumns shard is loaded or computed once per batch: its other entries inherit that
        states += [shards[n] for n in sharded if n in shards and all(o.field != n for o in found)]
        if "stored" in states:
            return ("computed", ram, None, None)
        return ("cached" if states or not ram else "ram", ram, None, None)


def _picklable(error):
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(error).__name__}: {error}")


def _persistent(node):
    """Whether a ``Cached`` node's store outlives the process (``Store.persistent``)."""
    return node.store.persistent


def _sharded(node):
    """Whether ``node`` caches the shards of a ``CacheColumns`` field."""
    return isinstance(node, Cached) and hasattr(node.inner, "shards")


def _identity(node):
    """Whether a ``Cached`` node caches a raw input (``id``): nothing to compute, nothing to cache."""
    while isinstance(node, Cached):
        node = node.inner
    return isinstance(node, Input)


def cached_nodes(pipeline, fields=None, ram=False):
    """``(cached field names, target nodes, bypassed nodes)``: the nodes ``persist`` evaluates per
    entry (``Cached`` nodes, dependencies first, then the routing nodes whose datasets hold caches of
    their own) and the RAM caches it passes through (those holding what a persistent cache of the
    same chain holds, unless ``ram``). Raises :class:`~connectome_dask.exceptions.NothingToPersist`
    for a name that is not a cached field, or if nothing persistent is left to fill."""
    plan = pipeline._plan()
    caches = {name: _caches(node) for name, node in plan.fields.items() if name != "ids"}
    available = sorted(name for name, found in caches.items() if found)
    if fields is None:
        names = available
    else:
        names = [fields] if isinstance(fields, str) else list(fields)
        unknown = [n for n in names if not caches.get(n)]
        if unknown:
            what = "not fields of the pipeline" if any(n not in plan.fields for n in unknown) else "not cached"
            raise NothingToPersist(f"persist: {unknown} are {what}; the cached fields are {available or 'none'}. "
                                   "Name some of those in fields=, or put a CacheToDisk after the fields to fill")
    reachable = walk([plan.fields[n] for n in names])
    every = [n for n in walk(reachable, inner=True) if isinstance(n, Cached) and not n.missing and not _identity(n)]
    bypass = set() if ram else _redundant(every)
    targets = [n for n in reachable if isinstance(n, Cached) and not n.missing and "id" in _inputs(n)
               and not _identity(n) and n not in bypass]
    inner = {}  # routing nodes (Merge, Join, GroupBy, Split) with caches inside: evaluated per entry
    for node in reachable:
        found = [n for n in walk(node.routed(), inner=True) if isinstance(n, Cached) and not n.missing]
        if found:
            inner[node] = found
    filled = [n for n in targets if n not in bypass] + [n for f in inner.values() for n in f if n not in bypass]
    if not any(_persistent(n) for n in filled) and not (ram and filled):
        held = sorted({n.name for n in filled}) or available
        raise NothingToPersist(
            f"persist: nothing to persist in {names or 'the pipeline'}: "
            + (f"{held} are cached in RAM only (CacheToRam), which each worker fills as it computes. Put a "
               "CacheToDisk after them, or pass ram=True to fill the workers' RAM caches anyway"
               if held else "the pipeline has no cache layer; put a CacheToDisk after the fields to fill"))
    names = {n.name for n in filled}
    return sorted(names), targets + list(inner), frozenset(bypass)


def _caches(node):
    """The ``Cached`` nodes (outside identity ones) that evaluating ``node`` reaches."""
    return [n for n in walk([node], inner=True) if isinstance(n, Cached) and not n.missing and not _identity(n)]


def _redundant(cached):
    """The RAM caches among ``cached`` in a chain of caches (``Cached(Cached(x))``: one value) that
    also holds a persistent cache."""
    chains = {}
    for node in cached:
        chain = []
        while isinstance(node, Cached):
            chain.append(node)
            node = node.inner
        chains.setdefault(node, set()).update(chain)
    return {n for chain in chains.values() if any(map(_persistent, chain)) for n in chain if not _persistent(n)}


def _inputs(node):
    return {n.name for n in walk([node]) if isinstance(n, Input)}


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
    sharded = [n.inner for n in targets if _sharded(n)]
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


def _entry_keys(ids):
    """The ids as a list, each once; an id that cannot be an entry key raises before any task runs."""
    if isinstance(ids, (str, bytes)):
        raise InvalidArgument(f"persist: ids={ids!r} is one {type(ids).__name__}; pass a list of entry keys, "
                              f"e.g. ids=[{ids!r}]")
    ids = list(ids)
    for i, key in enumerate(ids):
        try:
            hash(key)
        except TypeError:
            raise InvalidArgument(f"persist: ids[{i}] is {key!r}, a {type(key).__name__}, which cannot be an entry "
                                  "key (keys are hashable: str, int, tuple...); pass ids as a flat list of keys"
                                  ) from None
    return list(dict.fromkeys(ids))


def persist(pipeline, client=None, *, ids=None, fields=None, errors="raise", wait=True, progress=True, ram=False):
    """Fill the cache layers of ``pipeline`` in parallel with dask (``pipeline.persist(...)``).

    Entries already stored are not recomputed and nothing upstream of a stored entry runs, so a
    second call computes nothing. Each task fills, for one entry (or a batch of them, or a
    ``CacheColumns`` shard), every requested cached field: ``CacheToDisk`` and ``CacheColumns``
    entries are written by the workers straight into their roots. One failing entry does not stop
    the others, and an entry whose computation kills its worker fails alone.

    RAM caches (``CacheToRam``) live in each worker process. A field cached only in RAM is filled
    on the worker that computes the entry (``report.in_ram``); a RAM cache that holds what a
    persistent cache of its chain holds (``CacheToDisk >> CacheToRam``, or the other way round) is
    passed through, not filled, unless ``ram=True``: it would hold memory on the workers that no one
    reads (read the disk cache where you need the values).

    Parameters
    ----------
    pipeline : CallableLayer
        A pipeline with a Source (ids) and a cache layer.
    client : distributed.Client, optional
        Where to run. Default: the current default ``distributed`` client if there is one, else the
        embedded local cluster (:mod:`connectome_dask.cluster`: one worker process per core).
    ids : iterable, optional
        Entry keys to fill (each counted once). Default: ``pipeline.ids``.
    fields : str or list of str, optional
        Cached fields to fill. Default: every cached field.
    errors : {"raise", "report"}
        With ``"raise"``, failed ids raise :class:`~connectome_dask.exceptions.PersistError` after
        every other entry finished (``.report`` holds the report); with ``"report"`` the report
        is returned.
    wait : bool
        ``False`` returns a :class:`PersistJob` at once (no progress bar).
    progress : bool
        Show a progress bar (tqdm: terminal or notebook) while waiting.
    ram : bool
        Also fill the RAM caches that hold the same values as a persistent cache (see above).

    Returns
    -------
    PersistReport or PersistJob
        What this call did (see :class:`PersistReport`).

    Raises
    ------
    NothingToPersist
        A name in ``fields`` that is not a cached field, or a pipeline with no persistent cache
        (a ``ValueError``; the message lists the cached fields).
    InvalidArgument
        An id that cannot be an entry key (a list...), before any task runs.
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
    names, targets, bypass = cached_nodes(pipeline, fields, ram)
    ids = _entry_keys(pipeline.ids if ids is None else ids)
    from .cluster import resolve_client

    client = resolve_client(client)
    run = _Run(client, Batches(targets, PersistBatch, bypass), "-".join(names), uuid.uuid4().hex)
    report = PersistReport()
    futures, batches = run.submit(batches_of(ids, targets, _slots(client)), report)
    job = PersistJob(client, run, futures, batches, report, errors)
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


def _slots(client):
    """The cluster's worker threads; 32 while it has no worker yet (an adaptive cluster: fine batches)."""
    return sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values()) or 32
