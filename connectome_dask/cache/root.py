"""The cache root: the folder a store owns, its marker file, and the names it holds.

A root is a folder whose marker ``connectome_dask.json`` holds ``{"format": "connectome_dask.hdf5",
"version": 2}``. :func:`_open_root` checks a root or makes a new one (the marker written atomically),
recognises a root whose marker was deleted by its layout (:func:`_is_layout`) and restores the marker,
and turns every root that cannot be one (a file, a folder of other files, a bad marker) into a typed
error saying what to do. :func:`check_field_name` keeps field names to single, visible folder names,
so no entry lives outside its root.
"""

import contextlib
import json
import os
import uuid

from ..exceptions import FieldNameError, StoreError

__all__ = ["ForeignRoot", "MARKER", "check_field_name"]

MARKER = "connectome_dask.json"
VERSION = 2
FORMAT = {"format": "connectome_dask.hdf5", "version": VERSION}
MAX_NAME_BYTES = 255  # a folder name on common file systems


class ForeignRoot(StoreError, FileNotFoundError):
    """The folder holds files that are not a connectome_dask cache."""


_GOOD_NAMES = set()


def check_field_name(name, layer="HDF5Store"):
    """``name`` if it can be the folder of a field in a root, else ``FieldNameError`` (from ``layer``)."""
    if type(name) is str and name in _GOOD_NAMES:
        return name
    problem = _name_problem(name)
    if problem:
        raise FieldNameError(f"{layer}: the field name {name!r} cannot name a folder of the cache root ({problem}); "
                             "cache fields whose names are plain identifiers")
    _GOOD_NAMES.add(name)
    return name


def _name_problem(name):
    """Why ``name`` cannot be the folder of a field, or None."""
    if not isinstance(name, str):
        return f"it is a {type(name).__name__}, not a str"
    if name in ("", ".", "..") or name.startswith("."):
        return "it is empty or starts with '.'"
    if "/" in name or "\\" in name or "\0" in name:
        return "it contains '/', '\\' or a NUL character"
    if name == MARKER:
        return "it is the name of the root's marker file"
    try:
        return None if len(os.fsencode(name)) <= MAX_NAME_BYTES else f"it is longer than {MAX_NAME_BYTES} bytes"
    except UnicodeError:
        return "it cannot be encoded as a file name"


def _scandir(path):
    try:
        return list(os.scandir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


class _Unwritable(StoreError):
    """A new root cannot be created on its file system (``HDF5Store`` then computes without storing)."""

    def __init__(self, root, error):
        super().__init__(f"cannot create the cache root {root} ({error})")
        self.error = error


def _open_root(root):
    """Check (or make) the cache root: ``StoreError`` for what cannot be a root, ``_Unwritable``
    for a new root on a file system that refuses it (the store then computes without storing)."""
    if "\0" in root:
        raise StoreError(f"the cache root {root!r} contains a NUL character; choose a path without one")
    marker = os.path.join(root, MARKER)
    if os.path.isfile(marker):
        _check_marker(root, marker)
        return
    try:
        os.makedirs(root, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        above = next((p for p in _parents(root) if os.path.exists(p) and not os.path.isdir(p)), root)
        raise StoreError(f"cannot use {root} as a cache root: {above} is a file, not a folder; choose a folder "
                         "(new or empty) as the cache root") from None
    except OSError as e:
        raise _Unwritable(root, e) from e
    if not _is_layout(root):
        others = sorted(n for n in os.listdir(root) if not _is_marker_tmp(n))
        if os.path.lexists(marker):
            hint = f"its marker {MARKER} is not a regular file; remove it if the folder is a cache root"
        elif any(name.endswith(".h5") for _, _, names in os.walk(root) for name in names):
            hint = (f"it may be a cache root whose marker {MARKER} is missing: write {json.dumps(FORMAT)} into it "
                    "to keep the cache, or choose an empty or new folder")
        else:
            hint = "choose an empty or new folder as the cache root"
        raise ForeignRoot(f"{root} is not empty and is not a connectome_dask cache (found {others[:5]}); {hint}")
    _write_marker(root)


def _parents(path):
    while os.path.dirname(path) != path:
        yield path
        path = os.path.dirname(path)


def _check_marker(root, marker):
    """Accept a marker of this format (an older version's is upgraded), else ``ForeignRoot``."""
    try:
        with open(marker, "rb") as f:
            text = f.read()
    except OSError as e:
        raise ForeignRoot(f"{root}: unreadable cache marker {MARKER} ({e}); {_marker_fix(root, marker)}") from None
    if marker_version(root, marker, text) < VERSION:  # its entries are misses, replaced as they are recomputed
        _write_marker(root, required=False)


def _marker_fix(root, marker):
    return f"if {root} is a connectome_dask cache, write {json.dumps(FORMAT)} into {marker}; else choose another root"


def marker_version(root, marker, text):
    """The format version of the marker ``text`` (bytes) of ``root``: ``ForeignRoot`` if it is not
    a connectome_dask marker or is of a newer version (module docstring of ``hdf5``: older ones)."""
    try:
        found = json.loads(text)
    except ValueError as e:
        raise ForeignRoot(f"{root}: unreadable cache marker {MARKER} ({e}); {_marker_fix(root, marker)}") from None
    version = found.get("version") if isinstance(found, dict) else None
    if not isinstance(found, dict) or found.get("format") != FORMAT["format"] or type(version) is not int:
        raise ForeignRoot(f"{root}: the marker {MARKER} holds {json.dumps(found)[:100]}, not a connectome_dask "
                          f"cache marker; {_marker_fix(root, marker)}")
    if version > VERSION:
        raise ForeignRoot(f"{root} holds a cache of format {found}, this version reads {FORMAT}; "
                          "use another root or upgrade connectome_dask")
    return version


def _is_marker_tmp(name):
    return name.startswith(f".{MARKER}") and name.endswith(".tmp")


def _is_layout(root):
    """Whether ``root`` holds nothing but this store's layout: ``<field>/<character>/`` folders of
    entries (``<token>.h5``, in the folder of its first character) and writers' temporary files (``.<token>.<random>.tmp``)."""
    for field in _scandir(root):
        if field.name == MARKER or _is_marker_tmp(field.name):
            continue
        prefixes = _scandir(field.path) if field.is_dir(follow_symlinks=False) else []
        if field.name.startswith(".") or not prefixes:
            return False
        for prefix in prefixes:
            if len(prefix.name) != 1 or not prefix.is_dir(follow_symlinks=False):
                return False
            for entry in _scandir(prefix.path):
                name = entry.name
                if not entry.is_file(follow_symlinks=False) or not (
                        (name.endswith(".h5") and name[:1] == prefix.name) or (name[:1] == "." and name.endswith(".tmp"))):
                    return False
    return True


def _write_marker(root, required=True):
    """Write the marker atomically; if that fails: ``_Unwritable`` if ``required`` and no marker is there."""
    marker = os.path.join(root, MARKER)
    tmp = os.path.join(root, f".{MARKER}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(FORMAT, f)
        os.replace(tmp, marker)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if required and not os.path.exists(marker):
            raise _Unwritable(root, e) from e
