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
from .analysis import Analyzer
from . import datasets
from .datasets import get_retrieval_score
from .generation import Generator, export_generator
from .evaluation import Evaluation, bleu, citation_recall, evaluate, rouge_l
from .dense import DenseIndex, cuda_available
from .encoder import Encoder, export_encoder
from .hits import Hits
from .hybrid import DenseRetriever, Hybrid
from .pipeline import RAG, Answer, CallableGenerator, Source, TransformersGenerator, retrieve_context
from .sparse import BM25, TfIdf
from .tuning import tune_bm25


__all__ = ["Analyzer", "BM25", "TfIdf", "DenseIndex", "DenseRetriever", "Generator", "export_generator", "RAG", "Answer", "Source", "CallableGenerator", "TransformersGenerator",
           "retrieve_context", "Encoder", "export_encoder", "Hybrid", "Hits", "evaluate", "Evaluation", "datasets", "get_retrieval_score", "bleu", "rouge_l",
           "citation_recall", "tune_bm25", "cuda_available", "__version__"]
