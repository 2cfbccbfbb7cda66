"""Progress of running ``persist`` tasks, per entry.

A task on a dask worker reports how many of its entries are done as ``Worker.log_event`` events on
:data:`PROGRESS_TOPIC` (``[task key, entries done]``, at most every :data:`REPORT_EVERY` seconds);
the blocking ``persist`` subscribes to the topic and draws the entries done on a tqdm bar
(terminal or notebook), so the bar, its rate and its ETA move per entry, not per task. When
stderr is neither a terminal nor a notebook (CI logs, ``nohup``, a pipe), a bar redrawn with
carriage returns would be one endless line: :class:`Lines` prints a line every
:data:`LINE_EVERY` seconds instead, and a last one at the end.
"""

import sys
import threading
import time

__all__ = ["PROGRESS_TOPIC", "REPORT_EVERY", "LINE_EVERY", "reporter", "Tally", "Lines"]

PROGRESS_TOPIC = "connectome_dask.persist"  # events ``[task key, entries done]``
REPORT_EVERY = 0.5  # seconds
LINE_EVERY = 5.0  # seconds between two lines of :class:`Lines`


def reporter():
    """``report(done)`` for the task running in this thread of a dask worker, else None."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    key = worker.get_current_task()
    return lambda done: worker.log_event(PROGRESS_TOPIC, [key, done])


_tallies = {}  # task key -> the Tally of the blocking persist waiting for it


class Lines:
    """A progress bar for logs: ``persist: 12/64 entries (19 %), 3.1 entries/s, 4 s`` every
    :data:`LINE_EVERY` seconds while entries finish, and once more at :meth:`close`."""

    def __init__(self, total, file=None):
        self.total, self.n, self.file = total, 0, file or sys.stderr
        self.start = self.last = time.monotonic()

    def update(self, n):
        self.n += n
        if time.monotonic() - self.last >= LINE_EVERY:
            self._line()

    def close(self):
        self._line()

    def _line(self):
        self.last = time.monotonic()
        seconds = self.last - self.start
        rate = f", {self.n / seconds:.3g} entries/s" if seconds > 0 else ""
        share = f" ({100 * self.n // self.total} %)" if self.total else ""
        print(f"persist: {self.n}/{self.total} entries{share}{rate}, {seconds:.0f} s", file=self.file, flush=True)


def bar(total):
    """A tqdm bar on a terminal or in a notebook, else :class:`Lines`."""
    if not (_isatty(sys.stderr) or "ipykernel" in sys.modules):
        return Lines(total)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="persist", unit="entry", file=sys.stderr)


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Tally:
    """Entries done per task of one blocking persist, drawn on a :func:`bar`."""

    def __init__(self, client, futures, sizes):
        self.sizes = {f.key: size for f, size in zip(futures, sizes)}
        self.done, self.lock = dict.fromkeys(self.sizes, 0), threading.Lock()
        self.bar = bar(sum(sizes))
        _tallies.update(dict.fromkeys(self.sizes, self))
        client.subscribe_topic(PROGRESS_TOPIC, _route)  # kept: events of cancelled tasks may still come

    def set(self, key, done):
        with self.lock:
            if key not in self.sizes:
                return
            grown = min(done, self.sizes[key]) - self.done[key]
            if grown > 0:
                self.done[key] += grown
                self.bar.update(grown)

    def replace(self, key, sizes):
        """Count the entries of the task ``key`` again under the tasks of ``sizes`` (``{key: entries}``)
        that run them again (``persist`` runs the entries of a task lost with its worker one by one)."""
        with self.lock:
            self.bar.update(-self.done.pop(key, 0))
            self.sizes.pop(key, None)
            self.sizes.update(sizes)
            self.done.update(dict.fromkeys(sizes, 0))
        _tallies.pop(key, None)
        _tallies.update(dict.fromkeys(sizes, self))

    def close(self):
        for key in self.sizes:
            _tallies.pop(key, None)
        self.bar.close()


def _route(event):
    """Client-side handler of :data:`PROGRESS_TOPIC` events (runs on the client's event loop)."""
    key, done = event[1]
    tally = _tallies.get(key)
    if tally is not None:
        tally.set(key, done)
