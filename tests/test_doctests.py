"""The examples in the docstrings run and print what they say."""
import doctest
import importlib

import pytest

MODULES = ["ragcore", "ragcore.analysis", "ragcore.dense", "ragcore.encoder", "ragcore.evaluation", "ragcore.hits", "ragcore.hybrid", "ragcore.generators", "ragcore.llm_graph", "ragcore.pipeline",
           "ragcore.sparse", "ragcore.storage"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0, f"{name} has no docstring examples"
    assert res.failed == 0, f"{res.failed} docstring example(s) of {name} failed"
