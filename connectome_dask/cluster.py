"""Which ``distributed.Client`` runs a batch job.

``resolve_client(None)`` follows ``dask.compute``: the current default client if there is one,
else the *embedded local default*: a ``distributed.LocalCluster`` of worker **processes**, one
per core with one thread each, started on first use, reused by later calls and closed at exit.
Processes, not threads, because h5py serialises every HDF5 call of a process behind one lock
and numpy releases the GIL only partly (measured: 2 threads gave no speedup reading HDF5, 2
processes 1.9×). On Linux the workers are forked from the calling process (see :func:`start_method`):
they start in ~0.1 s instead of ~0.55 s and inherit its imports (scipy, h5py, the user's modules), so
the first ``persist()`` of a script is not spent importing. ``distributed`` is imported here,
lazily, never at package import.
"""

import atexit
import contextlib
import os
import sys
import threading
import warnings

__all__ = ["resolve_client", "embedded_client", "close_embedded", "start_method"]

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
    does not change what ``dask.compute`` uses. Where workers are spawned rather than forked (macOS,
    Windows, ``CONNECTOME_DASK_START_METHOD=spawn``) they import the script's module again: guard
    the script's work with ``if __name__ == "__main__":``.

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
    (``fork``, ``forkserver`` or ``spawn``) if set, else ``fork`` on Linux and dask's setting
    (``spawn``) elsewhere."""
    method = os.environ.get("CONNECTOME_DASK_START_METHOD")
    if method:
        if method not in ("fork", "forkserver", "spawn"):
            raise ValueError(f"CONNECTOME_DASK_START_METHOD={method!r}: use fork, forkserver or spawn")
        return method
    return "fork" if sys.platform.startswith("linux") else None


@contextlib.contextmanager
def _worker_settings():
    """Dask settings while the embedded cluster starts: the start method, no statistical profiler
    (it samples every thread 100 times a second for a dashboard the cluster does not have), and
    event-loop health checks once a second instead of 50 times (measured on 2 cores, idle: the
    scheduler's process 8.8 % of a core -> 2.7 %, each worker 3.3 % -> 1.3 %)."""
    import dask

    settings = {"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "1s"}
    method = start_method()
    if method is not None:
        settings["distributed.worker.multiprocessing-method"] = method
    with dask.config.set(settings), warnings.catch_warnings():
        # Python >= 3.12 warns that forking a process with threads may deadlock the child: the
        # forking thread is the cluster's event loop, the others are idle or wait on it (h5py
        # re-initialises its lock across fork, our HDF5 helper thread is restarted in the child)
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
