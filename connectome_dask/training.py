"""PyTorch datasets over a pipeline's fields: ``pipeline.to_torch(fields, ids=None, ...)``.

Imported only by ``to_torch`` (``import connectome_dask`` never imports torch).

* :class:`TorchDataset`, the map-style form: ``len()`` is the number of ids and item ``i`` is the
  fields of ``ids[i]`` (one field: its value; several: a tuple; ``as_dict=True``: a dict), computed
  by the eager path, ``pipeline._compile(fields)(ids[i])``. So an item reads the pipeline's caches
  the way an eager call does: a disk entry is opened, read into one new array and closed (no HDF5
  handle outlives a read, so nothing is open when DataLoader workers fork), a miss is computed and
  stored. Values are returned as computed (numpy stays numpy; torch's collate makes tensors).
* :class:`TorchEpochs`, the iterable form (``shuffle=True`` or ``rank``/``world_size``): each epoch
  is a permutation of the ids seeded by ``(seed, epoch)``, padded by wrap-around to a multiple of
  ``world_size`` and split by rank (``ids[rank::world_size]`` of the permutation, equal counts per
  rank), then split by DataLoader worker in chunks of ``batch_size`` dealt round-robin, which is
  the order in which the DataLoader takes batches from its workers: the loader yields the rank's
  sequence in order, and ``state_dict(samples)`` / ``load_state_dict`` resume it mid-epoch. The
  epoch and the resume position live in a shared-memory tensor, so ``set_epoch`` reaches
  persistent workers too.

Both pickle small: cloudpickle bytes of the pipeline (its layers' configuration, never their
compiled plans, RAM stores or values), the ids and the options, so they travel to ``spawn`` and
``forkserver`` workers even when the pipeline holds lambdas or classes from ``__main__``. ``to_torch``
compiles the fields and hashes the code of the cached ones: a forked worker inherits that work, a
spawned one does it again when it unpickles the dataset.

What is cached where: a DataLoader worker is a process of its own, so a ``CacheToRam`` in the
pipeline is per worker: empty in a ``spawn``/``forkserver`` worker, a copy-on-write copy of the
parent's under ``fork``, filled by that worker's reads only and gone when the worker exits (every
epoch unless ``persistent_workers=True``). Disk caches are shared by every process.
"""

import cloudpickle
import numpy as np

try:
    import torch
    from torch.utils.data import Dataset, IterableDataset, get_worker_info
except ImportError as e:  # pragma: no cover - the message is the point
    raise ModuleNotFoundError("pipeline.to_torch needs PyTorch: pip install 'connectome_dask[torch]'") from e

from .evaluate import Evaluation
from .exceptions import InvalidArgument
from .layers.base import as_names
from .nodes import Cached, walk

__all__ = ["TorchDataset", "TorchEpochs", "to_torch"]


class TorchDataset(Dataset):
    """A map-style ``torch.utils.data.Dataset`` of a pipeline's fields, made by ``pipeline.to_torch``.

    Item ``i`` is the fields of ``ids[i]`` as the eager call ``pipeline._compile(fields)(ids[i])``
    gives them (``as_dict=True``: a dict by field name). See the module docstring for how it reads
    caches and what it pickles.

    Examples
    --------
    >>> import numpy as np
    >>> from torch.utils.data import DataLoader
    >>> from connectome_dask import Source, meta
    >>> class Squares(Source):
    ...     @meta
    ...     def ids():
    ...         return [1, 2, 3]
    ...     def image(key):
    ...         return np.full((2, 2), key ** 2, np.float32)
    ...     def label(key):
    ...         return key % 2
    >>> data = Squares().to_torch(["image", "label"])
    >>> len(data), data[1][0].tolist(), data[1][1]
    (3, [[4.0, 4.0], [4.0, 4.0]], 0)
    >>> images, labels = next(iter(DataLoader(data, batch_size=3)))
    >>> images.shape, labels.tolist()
    (torch.Size([3, 2, 2]), [1, 0, 1])
    >>> Squares().to_torch("label", as_dict=True)[0]
    {'label': 1}
    """

    def __init__(self, pipeline, fields, ids=None, *, as_dict=False):
        self._pipeline, self._fields, self._as_dict = pipeline, fields, as_dict
        self._ids = tuple(pipeline.ids if ids is None else ids)
        field = self._field = pipeline._compile(fields)  # unknown fields fail here, not in a worker
        self._keyed = field._inputs == ("id",)  # else each id is a dict of raw inputs (as in to_dask)
        if self._ids:  # hash the code of cached fields here once: forked workers inherit the tokens
            key = self._ids[0]
            ev = Evaluation({"id": key} if self._keyed else dict(key))
            for node in walk(field._nodes):
                if isinstance(node, Cached):
                    ev.token(node)

    def _get(self, key):
        value = self._field(key) if self._keyed else self._field(**key)
        if self._as_dict:
            return {self._fields: value} if isinstance(self._fields, str) else dict(zip(self._fields, value))
        return value

    def __getitem__(self, i):
        return self._get(self._ids[i])

    def __len__(self):
        return len(self._ids)

    @property
    def ids(self):
        """The entry keys, in item order."""
        return self._ids

    def __reduce__(self):
        config = (TorchDataset, (self._pipeline, self._fields, self._ids), {"as_dict": self._as_dict})
        return _unpickle, (cloudpickle.dumps(config),)

    def __repr__(self):
        return f"{type(self).__name__}({self._fields!r}, {len(self)} ids)"


def _unpickle(config, state=None):
    cls, args, kwargs = cloudpickle.loads(config)
    return cls(*args, **kwargs) if state is None else cls(*args, **kwargs, _state=state)


class TorchEpochs(IterableDataset):
    """An iterable ``torch.utils.data.IterableDataset`` of a pipeline's fields, made by
    ``pipeline.to_torch(fields, shuffle=True, seed=0, ...)``, for the epoch loop.

    Each epoch yields this rank's share of a permutation of the ids (``len()`` items, the same count on
    every rank); DataLoader workers split it so that the loader yields it in order when ``batch_size``
    is the loader's. Call ``set_epoch(epoch)`` before each epoch (as with ``DistributedSampler``);
    ``state_dict(samples)`` after ``samples`` items of the current iteration, and ``load_state_dict``
    in a new run, resume mid-epoch in the same order.

    Examples
    --------
    >>> from torch.utils.data import DataLoader
    >>> from connectome_dask import Source, meta
    >>> class Numbers(Source):
    ...     @meta
    ...     def ids():
    ...         return list(range(10))
    ...     def value(key):
    ...         return key
    >>> epochs = Numbers().to_torch("value", shuffle=True, seed=0, rank=1, world_size=2, batch_size=2)
    >>> len(epochs), [int(v) for batch in DataLoader(epochs, batch_size=2) for v in batch]
    (5, [6, 7, 5, 0, 1])
    >>> state = epochs.state_dict(samples=2)  # two items of epoch 0 consumed
    >>> again = Numbers().to_torch("value", shuffle=True, seed=0, rank=1, world_size=2, batch_size=2)
    >>> again.load_state_dict(state)
    >>> [int(v) for batch in DataLoader(again, batch_size=2) for v in batch]
    [5, 0, 1]
    """

    def __init__(self, pipeline, fields, ids=None, *, as_dict=False, shuffle=True, seed=0, rank=None,
                 world_size=None, batch_size=1, _state=None):
        self._items = TorchDataset(pipeline, fields, ids, as_dict=as_dict)
        self.shuffle, self.seed, self.batch_size = bool(shuffle), seed, batch_size
        self.rank, self.world_size = _ranks(rank, world_size)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgument(f"to_torch: batch_size must be a positive int (the DataLoader's), got {batch_size!r}")
        if not isinstance(seed, int) or seed < 0:
            raise InvalidArgument(f"to_torch: seed must be a non-negative int, got {seed!r}")
        # [epoch, position in the epoch]: shared memory, seen by persistent workers, fork or spawn
        self._state = torch.zeros(2, dtype=torch.int64).share_memory_() if _state is None else _state

    def _order(self, epoch):
        """Indices of the ids this rank yields in ``epoch``, in order."""
        n, world = len(self._items), self.world_size
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        return np.resize(order, -(-n // world) * world)[self.rank::world]

    def __iter__(self):
        epoch, position = self._state.tolist()
        order = self._order(epoch)[position:]
        info = get_worker_info()
        if info is not None and info.num_workers > 1:  # chunks of batch_size, dealt round-robin
            chunks = np.arange(len(order)) // self.batch_size
            order = order[chunks % info.num_workers == info.id]
        items, ids = self._items, self._items.ids
        for i in order.tolist():
            yield items._get(ids[i])

    def __len__(self):
        n = len(self._items)
        return -(-n // self.world_size)

    def set_epoch(self, epoch):
        """Iterate ``epoch`` next (from its start, unless ``load_state_dict`` set a position in it)."""
        if epoch != self.epoch:
            self._state[0], self._state[1] = epoch, 0

    def state_dict(self, samples=0):
        """The resume point after ``samples`` items of the current iteration (of this rank)."""
        epoch, position = self._state.tolist()
        return {"epoch": epoch, "position": position + samples, "seed": self.seed, "shuffle": self.shuffle,
                "rank": self.rank, "world_size": self.world_size, "ids": len(self._items)}

    def load_state_dict(self, state):
        """Continue where ``state_dict`` was taken: the rest of that epoch, in the same order."""
        mine = {"seed": self.seed, "shuffle": self.shuffle, "rank": self.rank, "world_size": self.world_size,
                "ids": len(self._items)}
        other = {k: state.get(k) for k in mine}
        if other != mine:
            raise InvalidArgument(f"to_torch: the state {other} was taken on another dataset ({mine}); "
                                  "resume with the same ids, seed, shuffle, rank and world_size")
        self._state[0], self._state[1] = state["epoch"], state["position"]

    @property
    def epoch(self):
        return int(self._state[0])

    def __reduce__(self):
        items = self._items
        kwargs = {"as_dict": items._as_dict, "shuffle": self.shuffle, "seed": self.seed, "rank": self.rank,
                  "world_size": self.world_size, "batch_size": self.batch_size}
        config = (TorchEpochs, (items._pipeline, items._fields, items.ids), kwargs)
        return _unpickle, (cloudpickle.dumps(config), self._state)  # the state by torch: shared memory

    def __repr__(self):
        return (f"TorchEpochs({self._items._fields!r}, {len(self._items)} ids, rank {self.rank} of "
                f"{self.world_size}, epoch {self.epoch})")


def _ranks(rank, world_size):
    """``(rank, world_size)``: the given ones, else ``torch.distributed``'s, else ``(0, 1)``."""
    if rank is None and world_size is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1
    if rank is None or world_size is None:
        raise InvalidArgument(f"to_torch: give both rank and world_size or neither, got rank={rank!r}, "
                              f"world_size={world_size!r}")
    if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
        raise InvalidArgument(f"to_torch: rank must be an int in [0, world_size), got rank={rank!r}, "
                              f"world_size={world_size!r}")
    return rank, world_size


def to_torch(pipeline, fields, ids=None, *, as_dict=False, shuffle=False, seed=0, rank=None, world_size=None,
             batch_size=1):
    """A PyTorch dataset of a pipeline's fields (``pipeline.to_torch(...)``).

    Parameters
    ----------
    pipeline : CallableLayer
    fields : str or list of str
        One field name (each item is its value) or a list (each item is a tuple in that order).
    ids : iterable, optional
        Entry keys, in item order. Default: ``pipeline.ids``. A transform-only pipeline takes dicts of
        raw inputs instead (as ``to_dask``).
    as_dict : bool
        Items as ``{field: value}`` dicts.
    shuffle, seed, rank, world_size, batch_size
        With ``shuffle=True`` or an explicit ``rank`` and ``world_size``: the iterable form (see
        :class:`TorchEpochs`); ``batch_size`` is the DataLoader's, which keeps the loader's order
        the rank's order with several workers.

    Returns
    -------
    TorchDataset or TorchEpochs
    """
    if not isinstance(fields, str):
        fields = list(as_names(fields, "to_torch", "fields"))  # validated (a list of names, no repeats)
    if not shuffle and rank is None and world_size is None:
        return TorchDataset(pipeline, fields, ids, as_dict=as_dict)
    return TorchEpochs(pipeline, fields, ids, as_dict=as_dict, shuffle=shuffle, seed=seed, rank=rank,
                       world_size=world_size, batch_size=batch_size)
