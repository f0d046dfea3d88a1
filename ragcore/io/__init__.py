"""I/O: reading documents, queries and judgements (JSONL, BEIR folders) and the on-disk index format
(sealed manifests, atomic directory swaps, mmap'd arrays, model-folder integrity).

The public names are re-exported at the top (``import ragcore as rc; rc.BM25``).
"""
