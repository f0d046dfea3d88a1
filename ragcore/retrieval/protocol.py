"""The retriever protocol: what every retriever of ragcore is, stated once.

``rc.BM25``, ``rc.TfIdf``, ``rc.DenseIndex``, ``rc.DenseRetriever`` and ``rc.Hybrid`` all satisfy it,
and :class:`~ragcore.Hybrid` fuses any objects that do.
"""
from __future__ import annotations

from typing import Any, Optional, Protocol, runtime_checkable

from .hits import Hits

__all__ = ["Retriever"]


@runtime_checkable
class Retriever(Protocol):
    """A retriever: ``search(queries, k=10, *, threads=None, filter=None) -> Hits`` and ``len()``.

    ``search``
        ``queries``: one query or a batch (text for the sparse retrievers, :class:`~ragcore.DenseRetriever`
        and :class:`~ragcore.Hybrid`; float vectors for :class:`~ragcore.DenseIndex`). The result has one
        row per query (one row for a single query), best first, ties to the lower document index.

        ``k``: an int >= 1 (``TypeError`` for another type, a bool included; ``ValueError`` for < 1);
        results per query, the width capped at the number of documents; ``-1`` / ``-inf`` / ``None``
        pad (:class:`~ragcore.Hits`) where fewer documents qualify.

        ``threads``: None (every core this process may use) or an int in 1..``MAX_THREADS`` (``TypeError``
        / ``ValueError`` otherwise). Results do not depend on it. A fused retriever passes it to each
        part.

        ``filter``: None, or the documents a search may return, applied before top-k: the result
        equals the unfiltered ranking restricted to the allowed documents (a filter that allows fewer
        than ``k`` gives padding; one that allows nothing gives only padding). Either

        * a mask: a numpy bool array or a list / tuple of bool, one per document (its length is the
          range of ``Hits.indices``: ``len(retriever)``; for a dense index with deletes, the rows
          stored, ``DenseIndex.ntotal``); a wrong length -> ``ValueError``; or
        * the allowed ids, any other iterable (list, tuple, set, numpy int / str / object array): the
          caller's ids when the index was given ids, document indices (int) when not. Order and
          duplicates do not matter; an empty one allows nothing. An id the index never held ->
          ``ValueError`` (a mistyped id must not silently remove every document); the id of a
          deleted document is accepted and matches nothing; an id of the wrong type (a float, None,
          an int where the ids are str) -> ``TypeError``.

        A mapping (Mongo-style operators filter a Collection, not a retriever), a str or bytes (wrap
        one id in a list), a number, or a float array -> ``TypeError``. A fused retriever
        (:class:`~ragcore.Hybrid`) filters each part, then fuses.

    ``len(retriever)``
        The number of (live) documents: deleted ones are not counted.

    Examples
    --------
    >>> import ragcore as rc
    >>> bm25 = rc.BM25().index(["red fox", "blue fox"])
    >>> isinstance(bm25, rc.Retriever), len(bm25)
    (True, 2)
    >>> bm25.search(["fox", "red"], k=2, threads=1, filter=[1]).indices.tolist()
    [[1, -1], [-1, -1]]
    """

    def search(self, queries: Any, k: int = 10, *, threads: Optional[int] = None, filter: Any = None) -> Hits:
        """Top-k documents per query (see the class docstring)."""
        ...

    def __len__(self) -> int:
        """Number of live documents."""
        ...
