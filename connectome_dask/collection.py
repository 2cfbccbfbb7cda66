"""Lazy dask access to pipeline fields.

* ``pipeline.<field>.delayed(*args)`` → a ``dask.delayed.Delayed`` for one entry;
* ``pipeline.to_dask(fields, ids)`` → :class:`Entries`, one dask collection holding a single
  low-level graph for many fields × many ids (thousands of separate ``Delayed`` objects merge
  their graphs in superlinear time; one graph does not). ``Entries.compute()`` gives a list with
  one item per id: the value of ``fields`` if it is a name, else a tuple in the order of ``fields``.
  ``Entries.to_delayed()`` gives one ``Delayed`` per id, all sharing the graph.

Both work with ``dask.compute``, ``client.compute`` and every scheduler.
"""

import dask
from dask.base import DaskMethodsMixin
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from dask.task_spec import Task, TaskRef

from .graph import Pack, Structure, build, shared
from .hashing import combine

__all__ = ["delayed", "Entries", "to_dask"]


def _structure(field):
    """The boundary analysis of a compiled field, memoized on the owning pipeline; its tasks are
    also cut where several fields of the pipeline's plan meet (``graph.shared``)."""
    owner = field._owner
    memo = owner.__dict__.get("_memo") if owner is not None else None
    if memo is None:
        return Structure(field._nodes)
    structures = memo.setdefault("structures", {})
    structure = structures.get(field._names)
    if structure is None:
        cut = memo.get("shared")
        if cut is None:
            cut = memo["shared"] = shared(owner._plan().fields.values())
        structure = structures[field._names] = Structure(field._nodes, cut)
    return structure


def _pack(*values):
    return values


def delayed(field, inputs):
    """A ``dask.delayed.Delayed`` computing ``field`` for one set of raw ``inputs``.

    Reached as ``pipeline.<field>.delayed(*args, **kwargs)``, which takes exactly the arguments of
    the eager call. The key is ``f"{field}-{token}"``: the same for the same code, parameters and
    inputs in every process (a field behind a cache layer gets its own key, also starting with the
    field name, for the task that loads or computes through the cache).

    Parameters
    ----------
    field : Field
        A compiled field (``pipeline.image`` or ``pipeline._compile([...])``).
    inputs : dict
        The raw inputs by name (``{"id": key}`` for a pipeline with a Source).

    Returns
    -------
    dask.delayed.Delayed

    Examples
    --------
    >>> from connectome_dask import Source, Transform
    >>> class Numbers(Source):
    ...     def value(i):
    ...         return i + 0.5
    >>> pipeline = Numbers() >> Transform(value=lambda value: value * 2)
    >>> lazy = pipeline.value.delayed(3)
    >>> lazy.key.startswith("value-"), lazy.compute(), pipeline.value(3)
    (True, 7.0, 7.0)
    >>> lazy.key == pipeline.value.delayed(3).key
    True
    """
    structure = _structure(field)
    graph, (keys,) = build(structure, [inputs])
    if isinstance(field._names, str):
        key = keys[0]
    else:
        key = f"{'-'.join(field._names)}-{combine(*keys)}"
        graph[key] = Task(key, _pack, *map(TaskRef, keys))
    return FieldDelayed(key, HighLevelGraph.from_collections(key, graph, dependencies=()), layer=key)


class FieldDelayed(Delayed):
    """The ``Delayed`` of a field: its graph holds only the tasks of its key, so there is nothing
    to cull. (``Delayed``'s own optimization culls the merged graph once per layer, with all the
    requested keys: quadratic for thousands of values computed together.)"""

    __slots__ = ()

    @staticmethod
    def __dask_optimize__(dsk, keys, **kwargs):
        return dsk


class Entries(DaskMethodsMixin):
    """Many fields of many entries as one dask collection, made by :func:`to_dask`.

    It holds one low-level graph for all entries, so building and computing it stays linear in the
    number of ids. ``compute()`` (or ``dask.compute``, ``client.compute``) gives a list with one item
    per id: the value when one field name was asked for, else a tuple in the order of the fields.
    ``to_delayed()`` gives one ``Delayed`` per id, sharing the graph; ``len()`` is the number of ids.
    """

    __slots__ = ("_graph", "_keys", "_single", "_name")

    def __init__(self, graph, keys, single, name):
        self._graph, self._keys, self._single, self._name = graph, keys, single, name

    def __dask_graph__(self):
        return self._graph

    def __dask_keys__(self):
        return self._keys

    def __dask_layers__(self):
        return (self._name,)

    def __dask_tokenize__(self):
        return self._name

    def __dask_postcompute__(self):
        return _finalize, (self._single,)

    def __dask_postpersist__(self):
        return _rebuild, (self._keys, self._single, self._name)

    __dask_scheduler__ = staticmethod(dask.threaded.get)

    @staticmethod
    def __dask_optimize__(dsk, keys, **kwargs):
        return dsk

    def __len__(self):
        return len(self._keys)

    def to_delayed(self):
        """One ``Delayed`` per entry (a tuple of fields, or one value), all sharing this graph."""
        return [Delayed(keys[0], self._graph, layer=self._name) for keys in self._keys]

    def __repr__(self):
        return f"Entries({self._name}, {len(self._keys)} entries)"


def _finalize(results, single):
    return [r[0] for r in results]


def _rebuild(graph, keys, single, name):
    return Entries(graph, keys, single, name)


def to_dask(pipeline, fields=None, ids=None):
    """Many fields × many entries as one dask collection (``pipeline.to_dask(...)``).

    Parameters
    ----------
    pipeline : CallableLayer
    fields : str or list of str, optional
        One field name (each item of the result is its value) or a list (each item is a tuple).
        Default: every field except metas and ``id``, sorted by name.
    ids : iterable, optional
        Entry keys. Default: ``pipeline.ids``. A transform-only pipeline takes a list of dicts of
        raw inputs instead.

    Returns
    -------
    Entries
        Shared work (a ``_box`` used by two fields, the same entry asked twice) runs once.

    Examples
    --------
    >>> import dask
    >>> from connectome_dask import Source, meta
    >>> class Words(Source):
    ...     @meta
    ...     def ids():
    ...         return ["to", "dask"]
    ...     def upper(key):
    ...         return key.upper()
    ...     def size(key):
    ...         return len(key)
    >>> entries = Words().to_dask(["upper", "size"])
    >>> entries
    Entries(upper-size-..., 2 entries)
    >>> dask.compute(entries)[0]
    [('TO', 2), ('DASK', 4)]
    >>> Words().to_dask("size", ids=["graph"]).compute(scheduler="sync")
    [5]
    >>> from connectome_dask import Transform
    >>> Transform(double=lambda x: 2 * x).to_dask("double", ids=[{"x": 1}, {"x": 2}]).compute()
    [2, 4]
    """
    single = isinstance(fields, str)
    if fields is None:
        plan = pipeline._plan()
        fields = [n for n in sorted(plan.fields) if n not in plan.metas and n != "id"]
    names = (fields,) if single else tuple(fields)
    field = pipeline._compile(list(names))
    if ids is None:
        ids = pipeline.ids
    if field._inputs == ("id",):
        entries = [{"id": i} for i in ids]
    else:
        entries = [dict(i) for i in ids]
    nodes = field._nodes
    structure = Structure(nodes if single else (Pack(nodes),))
    graph, keys = build(structure, entries)
    name = f"{'-'.join(names)}-{combine(*(k for ks in keys for k in ks))}"
    return Entries(HighLevelGraph.from_collections(name, graph, dependencies=()), keys, single, name)
