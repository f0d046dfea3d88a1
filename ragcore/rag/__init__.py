"""RAG: retrieve -> prompt with numbered sources -> generate -> citations, and the generator adapters.

The public names are re-exported at the top (``import ragcore as rc; rc.BM25``).
"""
