"""``ragcore bench``: ragcore measured against the peers that are installed, in one run, on your data.

Sparse peers: bm25s (numpy and numba backends), tantivy, rank_bm25, scikit-learn (TF-IDF); dense peers:
faiss (``IndexFlatIP``) and numpy brute force. Each engine runs in its own process per thread count, so
peak memory and thread settings do not leak between engines; figures are medians of timed repeats after a
warm-up, with no result caches, and the machine is described beside them.

Example
-------
>>> from ragcore import bench
>>> rows = bench.run("synthetic:2k", engines=["ragcore"], k=10, threads=1, repeats=1, max_time=0.05)
>>> sorted({r["engine"] for r in rows}), sorted({r["call"] for r in rows})
(['ragcore-bm25', 'ragcore-tfidf'], ['batch', 'single'])
>>> all(r["qps"] > 0 for r in rows)
True
"""
from __future__ import annotations

from typing import Dict, List

from ._runner import run

__all__ = ["run", "engines"]


def engines() -> Dict[str, List[str]]:
    """Every engine ``run`` knows, by mode (``"ragcore"`` names the ragcore engines of a mode).

    Example
    -------
    >>> from ragcore import bench
    >>> bench.engines()["dense"][:3]
    ['ragcore-dense', 'ragcore-dense-prefilter', 'ragcore-dense-float16']
    """
    from ._runner import REGISTRY

    return {mode: list(reg) for mode, reg in REGISTRY.items()}
