"""The examples in the docstrings run and print what they say."""
import doctest
import importlib

import pytest

MODULES = ["ragcore", "ragcore.retrieval.analysis", "ragcore.retrieval.dense", "ragcore.models.encoder", "ragcore.eval.metrics", "ragcore.retrieval.hits", "ragcore.retrieval.hybrid", "ragcore.rag.generators", "ragcore.models.llm_graph", "ragcore.rag.pipeline", "ragcore.rag.citations",
           "ragcore.retrieval.sparse", "ragcore.retrieval.protocol", "ragcore.io.storage", "ragcore.bench"]


# their examples stem with PyStemmer
STEMMING = {"ragcore.retrieval.analysis", "ragcore.retrieval.sparse"}


@pytest.mark.parametrize("name", [pytest.param(m, marks=pytest.mark.requires("Stemmer")) if m in STEMMING else m
                                  for m in MODULES])
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0, f"{name} has no docstring examples"
    assert res.failed == 0, f"{res.failed} docstring example(s) of {name} failed"
