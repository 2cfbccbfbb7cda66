"""The client side of one ``persist`` call: its tasks submitted, their results gathered into a
:class:`PersistReport`, and the :class:`PersistJob` that ``persist(..., wait=False)`` returns.

Crash isolation lives here (:class:`_Run`): a task lost with its worker (``KilledWorker``) is run
again one entry per task, and an entry lost again once more alone, so only the entry that kills its
worker fails. A task that finished but whose result was lost with a dying worker before it reached
the client (or whose result distributed cannot fetch within ``RESULT_TIMEOUT``: it can wait forever
for a result whose worker died during the fetch) is run again; its entries, stored, count as cached.
Workers' warnings about entries they could not store are given again on the client, once per
cause; an error report says what to do (:func:`_advice`: a module missing on the workers or the
scheduler, a worker that died, a root that cannot be written, or the field).
The tasks themselves and what they fill are :mod:`connectome_dask.persist`'s.
"""

import dataclasses
import os
import sys
import warnings

from .allocator import restore as restore_heap
from .exceptions import CacheWarning, PersistError
from .hashing import combine
from .progress import Tally

__all__ = ["PersistReport", "PersistJob"]

RESULT_TRIES = 3  # a task whose result is lost with its worker is run again, at most this many times
RESULT_TIMEOUT = 10  # seconds to fetch a finished task's result (a few bytes) before it counts as lost
_LOST = object()


@dataclasses.dataclass
class PersistReport:
    """What one :func:`persist` call did, counted in ids (each id once, however often it was asked).

    Every id is counted once in ``computed``, ``cached`` or ``failed`` — except an id whose
    requested fields are all cached in RAM only and were computed now: it is counted in ``in_ram``
    only.

    Attributes
    ----------
    computed : int
        Ids for which this call wrote a persistent entry (``CacheToDisk``, ``CacheColumns``).
    cached : int
        Ids whose persistent entries were all stored already (read back valid: a corrupt entry is
        recomputed and counted ``computed``).
    failed : dict
        ``{id: exception}``: the user's original exception, the store's error for an entry that
        could not be written (read-only or full root; also warned with ``CacheWarning``), or the
        ``KilledWorker`` of an entry whose computation killed its worker. An id with one failing
        field is failed; its other fields may be stored.
    in_ram : int
        Ids for which this call put a value into a worker's RAM cache (``CacheToRam`` of a field no
        persistent cache holds; see ``ram=`` of :func:`persist`). RAM is per worker process: a
        later call may fill it again on another worker, so it is never counted ``computed``.

    Examples
    --------
    >>> print(PersistReport(computed=3, cached=1))
    persist: 3 computed, 1 already cached, 0 failed
    >>> print(PersistReport(cached=4, in_ram=4))
    persist: 0 computed, 4 already cached, 0 failed, 4 filled in RAM
    """

    computed: int = 0
    cached: int = 0
    failed: dict = dataclasses.field(default_factory=dict)
    in_ram: int = 0

    def __str__(self):
        ram = f", {self.in_ram} filled in RAM" if self.in_ram else ""
        return f"persist: {self.computed} computed, {self.cached} already cached, {len(self.failed)} failed{ram}"


class PersistJob:
    """What ``persist(..., wait=False)`` returns at once.

    Attributes
    ----------
    futures : list of distributed.Future
        One future per batch of entries; use them with ``distributed.wait``,
        ``distributed.progress`` or ``distributed.as_completed``. (Entries of a batch lost with a
        dying worker are run again by :meth:`result`, one per task.)

    Methods
    -------
    result(timeout=None, progress=False)
        Wait for every future (drawing a progress bar if asked) and return the
        :class:`PersistReport` of this call (or raise :class:`~connectome_dask.exceptions.PersistError`,
        as the blocking call would).
    """

    def __init__(self, client, run, futures, batches, report, errors):
        self.client, self._run, self.futures, self.batches = client, run, futures, batches
        self._report, self._errors, self._done = report, errors, None

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
        if self._done is None:
            report = dataclasses.replace(self._report, failed=dict(self._report.failed))
            unstored = {}
            self._run.collect(self.futures, self.batches, report, unstored, timeout, progress)
            if self.futures:
                try:
                    self.client.run(restore_heap)  # the workers' start-up heap settings
                except Exception:  # noqa: BLE001 - best effort: a worker may be gone
                    pass
            _warn(unstored)
            self._done = report
        return _finish(self._done, self._errors)


class _Run:
    """The tasks of one call. A task lost with its worker (``KilledWorker``) is run again one entry
    per task; an entry lost again is run once more alone, when nothing else runs (a task queued on a
    worker that another entry kills is lost with it), and fails only if it kills its worker then."""

    def __init__(self, client, batches_, name, nonce):
        self.client, self.batches, self.name, self.nonce = client, batches_, name, nonce

    def submit(self, batches, report, nonce=None):
        """Futures and the batches they run (entries whose key cannot be made fail here)."""
        entries = [[{"id": k} for k in b] for b in batches]
        graph, tasks, errors = self.batches.build(entries, nonce or self.nonce, self.name)
        for (b, i), error in errors.items():
            report.failed[batches[b][i]] = error
        run = [(key, [batches[b][i] for i in kept]) for b, (key, kept) in enumerate(tasks) if key is not None]
        if not run:
            return [], []
        futures = self.client.get(graph, [key for key, _ in run], sync=False)
        return futures, [entries for _, entries in run]

    def collect(self, futures, batches, report, unstored, timeout, progress):
        tally = Tally(self.client, futures, [len(b) for b in batches]) if progress and futures else None
        try:
            lost = self._gather(futures, batches, report, unstored, timeout, tally, split=True)
            for n, (old, key) in enumerate(lost):
                alone, parts = self.submit([[key]], report, nonce=combine(self.nonce, "alone", str(n)))
                if tally is not None:
                    tally.replace(old, {f.key: 1 for f in alone})
                for _, error in self._gather(alone, parts, report, unstored, timeout, tally, split=False):
                    report.failed[key] = error
        finally:
            if tally is not None:
                tally.close()

    def _gather(self, futures, batches, report, unstored, timeout, tally, split):
        """Count the results of ``futures`` as they finish; ``[(task key, id)]`` of single entries lost
        with their worker (``split``: a lost batch is first run again one entry per task)."""
        from distributed import KilledWorker, as_completed

        entries = {f.key: b for f, b in zip(futures, batches)}
        lost, tries = [], {}
        done = as_completed(futures, loop=self.client.loop, timeout=timeout)

        def rerun(old, parts, nonce=None):
            """Run ``parts`` (lists of ids) instead of the task ``old``; the new futures."""
            more, parts = self.submit(parts, report, nonce)
            if tally is not None:
                tally.replace(old, {f.key: len(part) for f, part in zip(more, parts)})
            entries.update((f.key, part) for f, part in zip(more, parts))
            for f in more:
                done.add(f)
            return more

        for future in done:
            batch = entries.pop(future.key)
            result, error = _outcome(future)
            if result is _LOST:
                n = tries.get(future.key, 0) + 1
                if n <= RESULT_TRIES:  # run it again (its entries are stored: they count as cached)
                    tries.update((f.key, n) for f in rerun(future.key, [batch], combine(future.key, "again")))
                    continue
                error = RuntimeError(f"the result of task {future.key} was lost with its worker {n - 1} times")
            elif error is None:
                for key, status in zip(batch, result):
                    _count(report, unstored, key, status)
            if isinstance(error, KilledWorker) and split:
                if len(batch) == 1:
                    lost.append((future.key, batch[0]))
                else:
                    rerun(future.key, [[key] for key in batch])
                continue
            if error is not None and not split:
                lost.append((future.key, error))
                continue
            for key in batch if error is not None else ():
                report.failed[key] = error
            if tally is not None:
                tally.set(future.key, len(batch))
        return lost


def _count(report, unstored, key, status):
    state, ram, error, field = status
    report.in_ram += ram
    if state == "computed":
        report.computed += 1
    elif state == "cached":
        report.cached += 1
    elif state in ("failed", "unstored"):
        report.failed[key] = error
        if state == "unstored":
            unstored.setdefault((field, type(error).__name__, getattr(error, "errno", None)), []).append(error)


def _warn(unstored):
    """The workers' warnings about entries they could not store, once per cause, on the client."""
    for (field, _, _), errors in unstored.items():
        warnings.warn(f"persist: {len(errors)} entr{'y' if len(errors) == 1 else 'ies'} of field {field!r} could "
                      f"not be stored ({type(errors[0]).__name__}: {errors[0]}); their ids are reported as failed. "
                      "Make the cache root writable (or free space) and persist again", CacheWarning,
                      stacklevel=_user_level())


def _user_level():
    """The ``stacklevel`` of a warning given here that points at the user's code calling the package."""
    package = os.path.dirname(os.path.abspath(__file__))
    level, frame = 2, sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(package + os.sep):
        level, frame = level + 1, frame.f_back
    return level


def _outcome(future):
    """``(result, None)`` of a task that finished, ``(None, error)`` of one that failed, and
    ``(_LOST, None)`` if its result was lost with a dying worker before it reached the client (the
    future is pending again, or finished again, or its result cannot be fetched: distributed can wait
    forever for a result whose worker died while it was being fetched)."""
    if future.status in ("pending", "lost"):
        return _LOST, None
    try:
        if future.status == "finished":
            return future.result(timeout=RESULT_TIMEOUT), None
        error = future.exception(timeout=RESULT_TIMEOUT)
    except TimeoutError:
        return _LOST, None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - a cancelled future raises here (CancelledError); a lost one too
        if future.status in ("pending", "lost", "finished"):
            return _LOST, None
        error = e
    return (_LOST, None) if error is None else (None, error)


def _finish(report, errors):
    if report.failed and errors == "raise":
        key, error = next(iter(report.failed.items()))
        raise PersistError(f"{report}; first failure: id {key!r}: {type(error).__name__}: {error}. "
                           f"{_advice(error)}; pass errors='report' to get the report instead, or see the "
                           ".report attribute", report)
    return report


def _advice(error):
    """What to do about a failed entry: the environment (a module missing where the task ran, a
    worker that died, a root that cannot be written) or the field."""
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
    if any(type(e).__name__ == "KilledWorker" for e in chain):
        return ("The worker process died while computing this entry (a crash in native code, os.abort() or "
                "running out of memory): compute it alone in a process (pipeline.<field>(id)) to see why")
    if any(isinstance(e, OSError) for e in chain):
        return "The entry could not be stored: make the cache root writable (or free space)"
    return "Fix the field"
