"""ragcore: the retrieval engine of a RAG system, native and fast.

Example
-------
>>> import ragcore as rc
>>> bm25 = rc.BM25().index(["the cat sat", "a dog barked", "cats and dogs"])
>>> hits = bm25.search("cat", k=2)
>>> hits.indices.tolist()
[[0, -1]]
"""
from ._version import __version__

try:
    from . import _core  # noqa: F401  (the compiled engine; everything below needs it)
except ImportError as _e:  # tests/test_packaging.py runs this in a subprocess
    from ._missing_core import explain as _explain

    raise ImportError(_explain(__file__, _e)) from None
from .retrieval.analysis import Analyzer
from .eval import datasets
from .eval.datasets import get_retrieval_score
from .models.generation import Generator, export_generator
from .eval.metrics import Evaluation, bleu, citation_recall, evaluate, rouge_l
from .retrieval.dense import DenseIndex, cuda_available
from .models.encoder import Encoder, export_encoder
from .retrieval.hits import Hits
from .retrieval.hybrid import DenseRetriever, Hybrid
from .retrieval.protocol import Retriever
from .rag.pipeline import RAG, Answer, CallableGenerator, Source, Support, TransformersGenerator, retrieve_context
from .retrieval.sparse import BM25, TfIdf
from .eval.tuning import tune_bm25


__all__ = ["Analyzer", "Retriever", "BM25", "TfIdf", "DenseIndex", "DenseRetriever", "Generator", "export_generator", "RAG", "Answer", "Source", "Support", "CallableGenerator", "TransformersGenerator",
           "retrieve_context", "Encoder", "export_encoder", "Hybrid", "Hits", "evaluate", "Evaluation", "datasets", "get_retrieval_score", "bleu", "rouge_l",
           "citation_recall", "tune_bm25", "cuda_available", "__version__"]
