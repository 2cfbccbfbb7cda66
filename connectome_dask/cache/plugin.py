"""``RamCache``: the ``distributed`` worker plugin that holds a worker's RAM cache.

A worker process has one RAM :class:`~connectome_dask.cache.memory.Budget` (by default a quarter of
the worker's memory limit, ``connectome_dask.ram-budget``) and one table of the stores its tasks
reached (``store.local``; no pipeline object lives on a worker to hold them). The plugin holds both
for the worker's life, and ``teardown`` empties the stores. Register it
with ``client.register_plugin(RamCache())``; :func:`~connectome_dask.cache.memory.ram_usage` does.
Importing this module imports ``distributed``; ``import connectome_dask`` never does.
"""

from distributed.diagnostics.plugin import WorkerPlugin

from . import memory, store

__all__ = ["RamCache"]


class RamCache(WorkerPlugin):
    """Holds the worker's RAM budget and stores; sizes the budget by the worker's memory limit."""

    name = "connectome_dask.ram"
    idempotent = True

    def setup(self, worker):
        self.budget, self.stores = memory.budget(), store._HELD
        self.budget.memory, self.budget._setting = memory.memory(worker), None  # fractions of the worker's limit

    def teardown(self, worker):
        self.budget.clear()
        self.stores.clear()
