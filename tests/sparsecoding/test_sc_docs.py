"""The runnable examples in the public docstrings."""

import doctest
import importlib

import pytest

MODULES = [
    "sparsecoding",
    "sparsecoding.truncation",
    "sparsecoding.em",
    "sparsecoding.gabor",
    "sparsecoding.parallel",
    "sparsecoding.data",
    "sparsecoding.plot",
    "sparsecoding.io",
    "sparsecoding.cli",
    "sparsecoding.models.bsc",
    "sparsecoding.models.tsc",
    "sparsecoding.models.dsc",
    "sparsecoding.models.mca",
    "sparsecoding.models.mmca",
    "sparsecoding.models.gsc",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
