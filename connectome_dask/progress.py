"""Progress of running ``persist`` tasks, per entry.

A task on a dask worker reports how many of its entries are done as ``Worker.log_event`` events on
:data:`PROGRESS_TOPIC` (``[task key, entries done]``, at most every :data:`REPORT_EVERY` seconds);
the blocking ``persist`` subscribes to the topic and draws the entries done on a tqdm bar
(terminal or notebook), so the bar, its rate and its ETA move per entry, not per task.
"""

import sys
import threading

__all__ = ["PROGRESS_TOPIC", "REPORT_EVERY", "reporter", "Tally"]

PROGRESS_TOPIC = "connectome_dask.persist"  # events ``[task key, entries done]``
REPORT_EVERY = 0.5  # seconds


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


class Tally:
    """Entries done per task of one blocking persist, drawn on a tqdm bar (terminal or notebook)."""

    def __init__(self, client, futures, sizes):
        from tqdm.auto import tqdm

        self.sizes = {f.key: size for f, size in zip(futures, sizes)}
        self.done, self.lock = dict.fromkeys(self.sizes, 0), threading.Lock()
        self.bar = tqdm(total=sum(sizes), desc="persist", unit="entry", file=sys.stderr)
        _tallies.update(dict.fromkeys(self.sizes, self))
        client.subscribe_topic(PROGRESS_TOPIC, _route)  # kept: events of cancelled tasks may still come

    def set(self, key, done):
        with self.lock:
            grown = min(done, self.sizes[key]) - self.done[key]
            if grown > 0:
                self.done[key] += grown
                self.bar.update(grown)

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
