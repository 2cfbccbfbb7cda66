"""Which ``distributed.Client`` runs a batch job.

``resolve_client(None)`` follows ``dask.compute``: the current default client if there is one,
else the *embedded local default*: a ``distributed.LocalCluster`` of worker **processes**, one
per core with one thread each, started on first use, reused by later calls and closed at exit.
Processes, not threads, because h5py serialises every HDF5 call of a process behind one lock
and numpy releases the GIL only partly (measured: 2 threads gave no speedup reading HDF5, 2
processes 1.9×). On Linux the workers are started by a fork server (see :func:`start_method`): a
clean single-threaded process that forks them, so they never inherit the threads and locks of
the calling process. Forking from the calling process itself (``fork``) starts them in ~0.1 s
instead of ~1 s, with its imports, but a process that already ran dask work has thread pools
that a forked child cannot use: in the test suite such a child hung during start-up (about one
run in ten), and a worker restarted after a crash is forked from a process full of threads.
``distributed`` is imported here, lazily, never at package import.
"""

import atexit
import contextlib
import os
import sys
import threading
import warnings

__all__ = ["resolve_client", "embedded_client", "close_embedded", "start_method", "QUIET_WORKERS"]

#: dask settings the embedded cluster starts with: no statistical profiler (it samples every thread
#: 100 times a second for a dashboard the cluster does not have) and event-loop health checks once a
#: second instead of 50 times (measured on 2 cores, idle: the scheduler's process 8.8 % of a core ->
#: 2.7 %, each worker 3.3 % -> 1.3 %). For your own small ``LocalCluster``:
#: ``with dask.config.set(QUIET_WORKERS): cluster = LocalCluster(...)``.
QUIET_WORKERS = {"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "1s"}

_lock = threading.Lock()
_embedded = {}


def resolve_client(client=None):
    """The client a batch job runs on: ``client`` itself, else the current default client, else
    the embedded local cluster's (see the module docstring).

    Parameters
    ----------
    client : distributed.Client, optional

    Returns
    -------
    distributed.Client
    """
    if client is not None:
        return client
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return embedded_client()


def embedded_client():
    """The embedded local cluster's client, started on first use and reused afterwards.

    A ``distributed.LocalCluster`` of worker processes (``CONNECTOME_DASK_WORKERS``, default one per
    core) with one thread each and no dashboard. Its client is not made the default client, so it
    does not change what ``dask.compute`` uses. Workers import the script's module again (unless
    ``CONNECTOME_DASK_START_METHOD=fork``): guard the script's work with
    ``if __name__ == "__main__":``, as for any dask or multiprocessing program.

    Returns
    -------
    distributed.Client
    """
    with _lock:
        client = _embedded.get("client")
        if client is not None and client.status == "running":
            return client
        from distributed import Client, LocalCluster

        workers = int(os.environ.get("CONNECTOME_DASK_WORKERS", os.cpu_count() or 1))
        with _worker_settings():
            # no dashboard; the scheduler's HTTP server (metrics) on a free port, not on 8787,
            # which stays free for the user's own cluster's dashboard
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, silence_logs=40,
                                   dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"})
        client = Client(cluster, set_as_default=False)
        _embedded.update(client=client, cluster=cluster)
        return client


def start_method():
    """How the embedded cluster starts its worker processes: ``CONNECTOME_DASK_START_METHOD``
    (``fork``, ``forkserver`` or ``spawn``) if set, else ``forkserver`` on Linux and dask's
    setting (``spawn``) elsewhere. ``fork`` is the fastest start, and safe only in a process that
    has not started threads of its own (no dask or distributed work before the first ``persist``)."""
    method = os.environ.get("CONNECTOME_DASK_START_METHOD")
    if method:
        if method not in ("fork", "forkserver", "spawn"):
            raise ValueError(f"CONNECTOME_DASK_START_METHOD={method!r}: use fork, forkserver or spawn")
        return method
    return "forkserver" if sys.platform.startswith("linux") else None


@contextlib.contextmanager
def _worker_settings():
    """Dask settings while the embedded cluster starts: the start method and :data:`QUIET_WORKERS`."""
    import dask

    settings = dict(QUIET_WORKERS)
    method = start_method()
    if method is not None:
        settings["distributed.worker.multiprocessing-method"] = method
    with dask.config.set(settings), warnings.catch_warnings():
        # with CONNECTOME_DASK_START_METHOD=fork, Python >= 3.12 warns that forking a process with
        # threads may deadlock the child (see the module docstring): the user chose it
        warnings.filterwarnings("ignore", message=r".*use of fork\(\) may lead to deadlocks", category=DeprecationWarning)
        yield


@atexit.register
def close_embedded():
    """Shut the embedded cluster down (also registered to run at interpreter exit); the next
    :func:`embedded_client` call starts a new one."""
    with _lock:
        client, cluster = _embedded.pop("client", None), _embedded.pop("cluster", None)
    for obj in (client, cluster):
        if obj is not None:
            try:
                obj.close()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass
