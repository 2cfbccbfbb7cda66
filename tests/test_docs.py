"""The examples in the docstrings of the public API run as written (doctest)."""

import doctest
import importlib
import pkgutil

import pytest

import connectome_dask

MODULES = sorted(m.name for m in pkgutil.walk_packages(connectome_dask.__path__, "connectome_dask.")
                 if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_every_public_name_is_documented():
    for name in connectome_dask.__all__:
        obj = getattr(connectome_dask, name)
        assert (getattr(obj, "__doc__", None) or "").strip(), f"{name} has no docstring"


def test_there_are_runnable_examples():
    found = sum(doctest.testmod(importlib.import_module(n)).attempted for n in MODULES)
    assert found >= 10
