"""Retrieval: Hits and the retriever protocol, the Analyzer, BM25 / TfIdf (native inverted index),
DenseIndex (CPU / CUDA kernels) and Hybrid fusion. Knows nothing of generation, RAG, stores or services.

The public names are re-exported at the top (``import ragcore as rc; rc.BM25``).
"""
