"""Which ``distributed.Client`` runs a batch job.

``resolve_client(None)`` follows ``dask.compute``: the current default client if there is one,
else the *embedded local default*: a ``distributed.LocalCluster`` of worker **processes**, one
per core with one thread each, started on first use, reused by later calls and closed at exit.
Processes, not threads, because h5py serialises every HDF5 call of a process behind one lock
and numpy releases the GIL only partly (measured: 2 threads gave no speedup reading HDF5, 2
processes 1.9×). ``distributed`` is imported here, lazily, never at package import.

How the workers start (:func:`start_method`, Linux): a process that has started no thread of its
own (connectome_dask's helper threads aside), the first ``persist`` of a script, forks them (``fork``: ~0.2 s, and they inherit its imports,
so a worker's first task imports nothing); any other process (a notebook or a test session that
already ran dask work, a script with threads) has them forked by a clean single-threaded fork
server (``forkserver``: ~1 s), because a child forked from a process with dask's thread pools can
hang at start-up (in our test suite about one run in ten). The fork server is started before this
process imports ``distributed`` and preloads, besides the script (``__main__``, as multiprocessing
does), ``distributed`` and the heavy modules this process already imported (:data:`PRELOAD`), so
that they are imported once, while the scheduler starts. Workers that dask restarts later (after
a crash) are spawned, dask's default, never forked from a process full of threads.

A script that would start the cluster from its top level outside ``if __name__ == "__main__":``
is refused with :class:`~connectome_dask.exceptions.MainGuardError` before any worker starts: a
spawned or fork-server worker imports the script again and would run that line too.
"""

import ast
import atexit
import contextlib
import inspect
import logging
import os
import sys
import threading
import warnings

__all__ = ["resolve_client", "embedded_client", "embedded_workers", "close_embedded", "start_method", "QUIET_WORKERS",
           "PRELOAD"]

#: dask settings the embedded cluster starts with: no statistical profiler (it samples every thread
#: 100 times a second for a dashboard the cluster does not have) and event-loop health checks once a
#: second instead of 50 times (measured on 2 cores, idle: the scheduler's process 8.8 % of a core ->
#: 2.7 %, each worker 3.3 % -> 1.3 %). For your own small ``LocalCluster``:
#: ``with dask.config.set(QUIET_WORKERS): cluster = LocalCluster(...)``.
QUIET_WORKERS = {"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "1s"}

#: modules the fork server imports before it forks workers: ``distributed`` always, the others when the
#: calling process has imported them (a worker then starts with them imported instead of importing them
#: on its first task). Only modules whose import starts no Python thread (numpy's OpenBLAS threads are
#: native and fork-aware): the fork server must stay safe to fork.
PRELOAD = ("distributed", "numpy", "scipy.ndimage", "h5py", "pandas", "nibabel")

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
    does not change what ``dask.compute`` uses. Workers from the fork server, spawned ones and
    restarted ones import the script's module again (see :func:`start_method`): guard the script's
    work with ``if __name__ == "__main__":``, as for any dask or multiprocessing program
    (:class:`~connectome_dask.exceptions.MainGuardError` otherwise).

    Returns
    -------
    distributed.Client
    """
    with _lock:
        client = _embedded.get("client")
        if client is not None and client.status == "running":
            return client
        workers = embedded_workers()
        _check_main_guard()
        method = start_method()
        if method == "forkserver":
            _start_fork_server()
        from distributed import Client, LocalCluster

        with _worker_settings(method):
            # no dashboard; the scheduler's HTTP server (metrics) on a free port, not on 8787,
            # which stays free for the user's own cluster's dashboard
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, silence_logs=40,
                                   dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"})
        client = Client(cluster, set_as_default=False)
        _embedded.update(client=client, cluster=cluster)
        atexit.unregister(close_embedded)  # registered after distributed's own exit handlers: runs before them
        atexit.register(close_embedded)
        return client


def embedded_workers():
    """The embedded cluster's worker processes: ``CONNECTOME_DASK_WORKERS`` if set (a whole number
    >= 1), else one per core. Any other value raises :class:`~connectome_dask.exceptions.ConfigError`
    (a ``ValueError``) before anything starts: a cluster of no workers would wait for them forever."""
    raw = os.environ.get("CONNECTOME_DASK_WORKERS", "").strip()
    if not raw:
        return os.cpu_count() or 1
    try:
        workers = int(raw)
    except ValueError:
        workers = 0
    if workers < 1:
        from .exceptions import ConfigError

        raise ConfigError(f"CONNECTOME_DASK_WORKERS={raw!r}: set it to the number of worker processes of the "
                          "embedded cluster, a whole number >= 1 (e.g. CONNECTOME_DASK_WORKERS=4), or unset it "
                          f"for one per core ({os.cpu_count() or 1} here)")
    return workers


def start_method():
    """How the embedded cluster starts its worker processes: ``CONNECTOME_DASK_START_METHOD``
    (``fork``, ``forkserver`` or ``spawn``) if set; else, on Linux, ``fork`` in a process with no
    thread but the main one and connectome_dask's own (named ``connectome_dask-*``, which a forked
    child never uses: it starts its own) and ``forkserver`` otherwise (see the module docstring);
    dask's setting (``spawn``) elsewhere."""
    method = os.environ.get("CONNECTOME_DASK_START_METHOD")
    if method:
        if method not in ("fork", "forkserver", "spawn"):
            from .exceptions import ConfigError

            raise ConfigError(f"CONNECTOME_DASK_START_METHOD={method!r}: set it to fork, forkserver or spawn, or "
                              "unset it for the default (see connectome_dask.cluster)")
        return method
    if not sys.platform.startswith("linux"):
        return None
    main = threading.main_thread()
    ours = all(t is main or t.name.startswith("connectome_dask-") for t in threading.enumerate())
    return "fork" if ours else "forkserver"


def _start_fork_server():
    """Start multiprocessing's fork server now, preloading :data:`PRELOAD`, so that it imports them
    while this process imports ``distributed`` and starts the scheduler."""
    import multiprocessing
    from multiprocessing import forkserver

    preload = ["__main__"] + [m for m in PRELOAD if m == "distributed" or m in sys.modules]
    multiprocessing.get_context("forkserver").set_forkserver_preload(preload)
    forkserver.ensure_running()


def _check_main_guard():
    """Raise :class:`~connectome_dask.exceptions.MainGuardError` if the calling script runs this
    at its top level outside ``if __name__ == "__main__":`` and the workers would import it again."""
    if os.environ.get("CONNECTOME_DASK_START_METHOD") == "fork":  # the user's choice: never spawned
        return
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    line, frame = None, inspect.currentframe()
    while frame is not None:  # the outermost line of the script's top level that led here
        if frame.f_code.co_name == "<module>" and frame.f_globals is getattr(main, "__dict__", None):
            line = frame.f_lineno
        frame = frame.f_back
    if line is None or not path or not os.path.isfile(path):
        return
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_main_test(node.test) and node.lineno <= line <= node.end_lineno:
            return
    from .exceptions import MainGuardError

    raise MainGuardError(
        f"{path}, line {line}: persist starts the embedded cluster from the top level of the script, outside "
        f"`if __name__ == \"__main__\":`. Workers from a fork server, spawned workers and every worker dask "
        f"restarts import the script again and would run that line too. Put the script's work under `if __name__ == \"__main__\":` (as for any dask or "
        f"multiprocessing program).")


def _is_main_test(test):
    """Whether ``test`` is ``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s.id for s in sides if isinstance(s, ast.Name)]
    constants = [s.value for s in sides if isinstance(s, ast.Constant)]
    return names == ["__name__"] and constants == ["__main__"]


@contextlib.contextmanager
def _worker_settings(method):
    """Dask settings while the embedded cluster starts: the start ``method`` and :data:`QUIET_WORKERS`."""
    import dask

    settings = dict(QUIET_WORKERS)
    if method is not None:
        settings["distributed.worker.multiprocessing-method"] = method
    with dask.config.set(settings), warnings.catch_warnings():
        # with fork, Python >= 3.12 warns that forking a process with threads may deadlock the child: the
        # only threads then are the cluster's own event loop, started for this (see the module docstring)
        warnings.filterwarnings("ignore", message=r".*use of fork\(\) may lead to deadlocks", category=DeprecationWarning)
        yield


def close_embedded():
    """Shut the embedded cluster down (also registered to run at interpreter exit); the next
    :func:`embedded_client` call starts a new one."""
    with _lock:
        client, cluster = _embedded.pop("client", None), _embedded.pop("cluster", None)
    pending = sum(f.status == "pending" for f in client.futures.values()) if client is not None else 0
    if pending:
        # ``persist(wait=False)`` not waited for: its tasks are lost with the cluster; the scheduler's
        # own error about them (it cannot reschedule at interpreter exit) is replaced by this warning
        warnings.warn(f"closing the embedded cluster with {pending} task(s) not finished (a "
                      "persist(wait=False) whose job.result() was not waited for); their entries are not "
                      "stored", RuntimeWarning, stacklevel=2)
        logging.getLogger("distributed.scheduler").setLevel(logging.CRITICAL)
    for obj in (client, cluster):
        if obj is not None:
            try:
                obj.close()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass
