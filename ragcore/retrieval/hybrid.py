"""Hybrid retrieval: fusion of several retrievers' rankings, and a text front end for dense indexes.

* :class:`Hybrid` asks every retriever for its top ``max(depth, k)`` documents per query and fuses the
  lists, by reciprocal rank fusion (Cormack, Clarke & Buettcher, "Reciprocal rank fusion outperforms
  Condorcet and individual rank learning methods", SIGIR 2009) or by a weighted sum of normalised scores
  (Fox & Shaw 1994, "CombSUM", with min-max normalisation as in Lee 1997).
* :func:`fuse` does the same on :class:`~ragcore.Hits` already computed.
* :class:`DenseRetriever` wraps a dense index and a text encoder so that dense search takes text queries,
  like the sparse retrievers; it plugs into :class:`Hybrid`.

A retriever is what :class:`~ragcore.Retriever` states: ``search(queries, k=10, *, threads=None,
filter=None)`` returning :class:`~ragcore.Hits`, and ``len()``; both classes here are retrievers. Documents
are identified by their index, so all the retrievers fused must index the same corpus in the same order.

Example
-------
>>> import ragcore as rc
>>> docs = ["the cat sat on the mat", "a dog barked at the cat", "cats and dogs play", "the quick brown fox"]
>>> ids = ["a", "b", "c", "d"]
>>> hybrid = rc.Hybrid([rc.BM25().index(docs, ids=ids), rc.TfIdf().index(docs, ids=ids)])
>>> hits = hybrid.search(["cat dog", "fox"], k=3)
>>> hits.ids.tolist()
[['b', 'a', None], ['d', None, None]]
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, List, Optional, Sequence

import numpy as np

from .._validate import check_int as _check_int
from .._validate import threads as _threads
from .hits import Hits

__all__ = ["Hybrid", "DenseRetriever", "fuse", "FUSIONS", "NORMALIZATIONS"]

FUSIONS = ("rrf", "weighted")
NORMALIZATIONS = ("minmax", "zscore", "none")

_PAD = np.iinfo(np.int64).max  # padding sorts after every document index
_NONE = np.uint64(np.iinfo(np.uint64).max)  # no group: ranks after every fused score
_SIGN = np.uint32(0x80000000)
_MAGNITUDE = np.uint32(0x7FFFFFFF)


# ----------------------------------------------------------------------------------------- validation
def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, choices))}")
    return value


def _check_rrf_k(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"rrf_k must be a number, got {type(value).__name__} ({value!r})")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"rrf_k must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_weights(weights: Any, n: int) -> np.ndarray:
    """``None`` -> ones; else n finite numbers >= 0, not all 0 -> float64 (n,)."""
    if weights is None:
        return np.ones(n, dtype=np.float64)
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
        raise TypeError(f"weights must be a sequence of numbers, got {type(weights).__name__}")
    weights = list(weights.tolist() if isinstance(weights, np.ndarray) else weights)
    if len(weights) != n:
        raise ValueError(f"got {len(weights)} weights for {n} retrievers")
    for i, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, numbers.Real):
            raise TypeError(f"weights[{i}] must be a number, got {type(w).__name__} ({w!r})")
        if math.isnan(w) or math.isinf(w):
            raise ValueError(f"weights[{i}] must be finite, got {w!r}")
        if w < 0:
            raise ValueError(f"weights[{i}] must be >= 0, got {w!r}")
    out = np.asarray(weights, dtype=np.float64)
    if not out.any():
        raise ValueError(f"weights are all 0: {weights}")
    return out


def _as_hits(h: Any, which: int) -> Hits:
    """Validate a retriever's result: 2-D int indices and float scores of one shape."""
    if not (hasattr(h, "indices") and hasattr(h, "scores")):
        raise TypeError(f"retriever {which} returned {type(h).__name__}, expected ragcore.Hits")
    ind, sc = np.asarray(h.indices), np.asarray(h.scores)
    if ind.ndim != 2 or sc.shape != ind.shape:
        raise ValueError(f"retriever {which} returned indices of shape {ind.shape} and scores of shape "
                         f"{sc.shape}; expected two equal shapes (n_queries, k)")
    if ind.dtype.kind not in "iu":
        raise TypeError(f"retriever {which} returned indices of dtype {ind.dtype}, expected int64")
    if sc.dtype.kind != "f":
        raise TypeError(f"retriever {which} returned scores of dtype {sc.dtype}, expected float32")
    return Hits(ind.astype(np.int64, copy=False), sc, getattr(h, "_id_table", None))


# --------------------------------------------------------------------------------------------- fusion
def _normalize(scores: np.ndarray, valid: np.ndarray, how: str) -> np.ndarray:
    """Per row, normalise the valid scores (float64 (nq, k)); padding gets 0."""
    s = scores.astype(np.float64)
    if how == "none":
        out = s
    elif how == "minmax":
        with np.errstate(invalid="ignore", divide="ignore"):
            lo = np.where(valid, s, np.inf).min(axis=1, keepdims=True, initial=np.inf)
            hi = np.where(valid, s, -np.inf).max(axis=1, keepdims=True, initial=-np.inf)
            span = hi - lo
            out = np.where(span > 0, (s - lo) / np.where(span > 0, span, 1.0), 1.0)
    else:  # zscore (population standard deviation)
        with np.errstate(invalid="ignore", divide="ignore"):
            n = valid.sum(axis=1, keepdims=True)
            mean = np.where(valid, s, 0.0).sum(axis=1, keepdims=True) / np.maximum(n, 1)
            std = np.sqrt(np.where(valid, (s - mean) ** 2, 0.0).sum(axis=1, keepdims=True) / np.maximum(n, 1))
            out = np.where(std > 0, (s - mean) / np.where(std > 0, std, 1.0), 0.0)
    return np.where(valid, out, 0.0)


def _check_ids(hits: List[Hits], ref: int) -> None:
    """Every id a retriever gives to a document it returned must be the reference table's id for it."""
    table = hits[ref]._id_table
    n_ref = len(table)
    for r, h in enumerate(hits):
        valid = h.indices >= 0
        idx = h.indices[valid]
        if idx.size and int(idx.max()) >= n_ref:
            bad = int(idx.max())
            raise ValueError(f"the retrievers index different corpora: retriever {r} returned document {bad}, "
                             f"but retriever {ref} has only {n_ref} ids")
        other = h._id_table
        if other is None or other is table or r == ref:
            continue
        mine, theirs = other[idx], table[idx]
        same = mine == theirs
        if not isinstance(same, np.ndarray):  # numpy could not compare elementwise (mixed types)
            same = np.fromiter((a == b for a, b in zip(mine.tolist(), theirs.tolist())), bool, idx.size)
        if not same.all():
            j = int(np.flatnonzero(~same)[0])
            raise ValueError(f"the retrievers index different corpora: document {int(idx[j])} is {mine[j]!r} "
                             f"for retriever {r} but {theirs[j]!r} for retriever {ref}")


def fuse(hits: Sequence[Any], k: int = 10, *, fusion: str = "rrf", weights: Optional[Sequence[float]] = None,
         rrf_k: float = 60, normalization: str = "minmax") -> Hits:
    """Fuse the rankings of several retrievers over the same queries and corpus into the top ``k``.

    Parameters
    ----------
    hits : sequence of Hits
        One :class:`~ragcore.Hits` per retriever, all with the same number of query rows (their ``k`` may
        differ). A document must not appear twice in one row.
    k : int, default 10
        Documents per query in the result.
    fusion : {"rrf", "weighted"}
        ``"rrf"``: reciprocal rank fusion (Cormack, Clarke & Buettcher 2009),
        ``score(d) = sum_r w_r / (rrf_k + rank_r(d))`` with ranks starting at 1 (the column in the row, so
        the retriever's own tie order is kept) over the retrievers that returned ``d``.
        ``"weighted"``: ``score(d) = sum_r w_r * norm_r(d)``, the scores of each retriever's list normalised
        per query; a retriever that did not return ``d`` contributes 0.
    weights : sequence of float, optional
        One weight >= 0 per retriever, not all 0 (default: 1 each). Not rescaled: ``[0.7, 0.3]`` gives a
        convex combination, ``[2, 1]`` the same ranking with doubled scores.
    rrf_k : float, default 60
        The RRF constant (60 in Cormack et al.); larger flattens the head of each ranking.
    normalization : {"minmax", "zscore", "none"}
        Weighted fusion only. ``"minmax"``: ``(s - min) / (max - min)`` over the returned list, to [0, 1];
        a list of one document, or of equal scores, gives 1.0. ``"zscore"``: ``(s - mean) / std``
        (population std over the returned list; 0 when the std is 0), so a missing document's 0 counts as
        an average score. ``"none"``: raw scores, for retrievers on comparable scales (a missing document
        still counts 0, which favours it when scores can be negative).

    Returns
    -------
    Hits
        ``indices`` int64 and ``scores`` (the fused scores, float32) of shape (n_queries, k), best first,
        over the union of the documents returned; equal fused scores (compared in float32, as returned)
        go to the lower document index; ``-1`` / ``-inf`` pad rows whose union has fewer than ``k``
        documents. The id table is that of the first input that has one; ids are checked for consistency:
        a document returned with an id different from that table's raises ``ValueError``.

    Examples
    --------
    >>> import numpy as np
    >>> from ragcore import Hits
    >>> from ragcore.retrieval.hybrid import fuse
    >>> a = Hits(np.array([[7, 2, 5]]), np.array([[3.0, 2.0, 1.0]], np.float32))
    >>> b = Hits(np.array([[5, 9, 7]]), np.array([[0.9, 0.8, 0.7]], np.float32))
    >>> fused = fuse([a, b], k=4)           # 7: 1/61 + 1/63, 5: 1/63 + 1/61, then 2 (1/62) and 9 (1/62)
    >>> fused.indices.tolist()
    [[5, 7, 2, 9]]
    >>> fuse([a, b], k=2, fusion="weighted").indices.tolist()  # 7: 1 + 0, 5: 0 + 1: tie, lower index first
    [[5, 7]]
    """
    k = _check_int("k", k, 1)
    fusion = _check_choice("fusion", fusion, FUSIONS)
    normalization = _check_choice("normalization", normalization, NORMALIZATIONS)
    rrf_k = _check_rrf_k(rrf_k)
    if isinstance(hits, Hits) or not isinstance(hits, (list, tuple)):
        raise TypeError(f"hits must be a list of Hits (one per retriever), got {type(hits).__name__}")
    if not hits:
        raise ValueError("nothing to fuse: the list of hits is empty")
    hits = [_as_hits(h, r) for r, h in enumerate(hits)]
    w = _check_weights(weights, len(hits))
    nq = hits[0].indices.shape[0]
    for r, h in enumerate(hits):
        if h.indices.shape[0] != nq:
            raise ValueError(f"retriever {r} returned {h.indices.shape[0]} query rows, retriever 0 returned {nq}")
    ref = next((r for r, h in enumerate(hits) if h._id_table is not None), None)
    table = None if ref is None else hits[ref]._id_table
    if table is not None:
        _check_ids(hits, ref)

    widths = [h.indices.shape[1] for h in hits]
    width = sum(widths)
    if nq == 0 or width == 0:
        return Hits(np.full((nq, k), -1, np.int64), np.full((nq, k), -np.inf, np.float32), table)
    top_idx = max(int(h.indices.max(initial=-1)) for h in hits)
    if top_idx >= (_PAD - width) // width:
        raise ValueError(f"document index {top_idx} is too large to fuse ({width} candidates per query)")

    # 1. one int64 key per (query, retriever, column): index * width + column (padding: _PAD), and the
    #    contribution of each column (RRF: w_r / (rrf_k + rank), the same for every query)
    key = np.empty((nq, width), np.int64)
    src = np.empty(width, np.int32)
    col_val = np.empty(width, np.float64) if fusion == "rrf" else None
    val = np.empty((nq, width), np.float64) if fusion == "weighted" else None
    off = 0
    for r, h in enumerate(hits):
        cols = slice(off, off + widths[r])
        part = key[:, cols]
        np.multiply(h.indices, width, out=part)
        part += np.arange(off, off + widths[r], dtype=np.int64)
        pad = h.indices < 0
        np.copyto(part, _PAD, where=pad)
        src[cols] = r
        if fusion == "rrf":
            col_val[cols] = w[r] / (rrf_k + np.arange(1, widths[r] + 1, dtype=np.float64))
        else:
            valid = ~pad
            if not np.isfinite(h.scores[valid]).all():
                raise ValueError(f"retriever {r} returned a non-finite score for a document (index >= 0); "
                                 "weighted fusion needs finite scores")
            val[:, cols] = w[r] * _normalize(h.scores, valid, normalization)
        off += widths[r]

    # 2. group equal documents per row: sort each row's keys (unique, so a plain sort is deterministic;
    #    within a group the columns, hence the retrievers, stay in order) and sum each group
    key.sort(axis=1)
    valid = key != _PAD
    idx, col = np.divmod(key, width)
    srcs = src[col]
    vals = col_val[col] if fusion == "rrf" else np.take_along_axis(val, col, axis=1)
    same = idx[:, 1:] == idx[:, :-1]
    same &= valid[:, 1:]
    dup = same & (srcs[:, 1:] == srcs[:, :-1])
    if dup.any():
        q, c = np.argwhere(dup)[0]
        raise ValueError(f"retriever {int(srcs[q, c])} returned document {int(idx[q, c])} twice for query {int(q)}")
    start = np.ones((nq, width), dtype=bool)
    np.logical_not(same, out=start[:, 1:])  # each row starts a group: groups never span two rows
    starts = np.flatnonzero(start)
    sums = np.add.reduceat(vals.ravel(), starts)  # at most one term per retriever, summed in retriever order

    # 3. per row, rank the groups by fused score (float32, as returned), ties by the lower index: one uint64
    #    key per group, (order-preserving bits of -score) << 32 | column, the columns being in index order
    scores = sums.astype(np.float32)
    scores += np.float32(0.0)  # -0.0 -> +0.0, so that equal scores have equal bits
    bits = scores.view(np.uint32)
    desc = np.where(bits >= _SIGN, bits, ~bits & _MAGNITUDE).astype(np.uint64)  # smaller = better
    group_key = (desc << np.uint64(32)) | (starts % width).astype(np.uint64)
    group_key[~valid.ravel()[starts]] = _NONE  # the padding's group
    rank_key = np.full((nq, width), _NONE, np.uint64)
    rank_key.ravel()[starts] = group_key
    if k < width:
        rank_key = np.partition(rank_key, k - 1, axis=1)[:, :k]
    rank_key.sort(axis=1)
    empty = rank_key == _NONE
    top = (rank_key & np.uint64(0xFFFFFFFF)).astype(np.intp)
    top[empty] = 0
    hi = (rank_key >> np.uint64(32)).astype(np.uint32)
    out_scores = np.where(hi >= _SIGN, hi, ~hi & _MAGNITUDE).view(np.float32)
    out_scores[empty] = -np.inf
    out_idx = np.take_along_axis(idx, top, axis=1)
    out_idx[empty] = -1
    if top.shape[1] < k:  # fewer candidate columns than k
        extra = k - top.shape[1]
        out_idx = np.concatenate([out_idx, np.full((nq, extra), -1, np.int64)], axis=1)
        out_scores = np.concatenate([out_scores, np.full((nq, extra), -np.inf, np.float32)], axis=1)
    return Hits(np.ascontiguousarray(out_idx), np.ascontiguousarray(out_scores), table)


# ----------------------------------------------------------------------------------------- retrievers
class Hybrid:
    """Fusion of several retrievers over the same corpus: reciprocal rank fusion or a weighted sum.

    Parameters
    ----------
    retrievers : sequence of retrievers
        :class:`~ragcore.Retriever` objects (``rc.BM25``, ``rc.TfIdf``, :class:`DenseRetriever`, another
        ``Hybrid``, ...); any object with ``search(queries, k)`` returning :class:`~ragcore.Hits` is taken
        (it then needs the ``threads`` / ``filter`` keywords only when a search passes them). All must
        index the same corpus in the same order: documents are matched by index (and their ids checked
        when the hits carry ids).
    fusion : {"rrf", "weighted"}, default "rrf"
        See :func:`fuse`. RRF needs no score calibration and is the robust default.
    weights : sequence of float, optional
        One weight >= 0 per retriever, not all 0; default 1 each.
    rrf_k : float, default 60
        The RRF constant of Cormack et al. (2009).
    depth : int, default 100
        Documents asked of each retriever per query (``max(depth, k)``); a document outside every
        retriever's top ``depth`` cannot be returned.
    normalization : {"minmax", "zscore", "none"}, default "minmax"
        Score normalisation of the weighted fusion (per query, per retriever's returned list).

    Examples
    --------
    >>> import ragcore as rc
    >>> docs = ["the cat sat on the mat", "a dog barked at the cat", "cats and dogs play", "the quick brown fox"]
    >>> bm25, tfidf = rc.BM25().index(docs), rc.TfIdf().index(docs)
    >>> hybrid = rc.Hybrid([bm25, tfidf], fusion="rrf")
    >>> hits = hybrid.search("cat dog", k=3)
    >>> hits.indices.tolist()                     # doc 1 first in both, doc 0 second in both
    [[1, 0, -1]]
    >>> [round(float(s), 5) for s in hits.scores[0, :2]]    # 2/61, 2/62
    [0.03279, 0.03226]
    >>> weighted = rc.Hybrid([bm25, tfidf], fusion="weighted", weights=[0.7, 0.3])
    >>> weighted.search(["cat dog", "brown fox"], k=2).indices.tolist()
    [[1, 0], [3, -1]]
    """

    def __init__(self, retrievers: Sequence[Any], fusion: str = "rrf", weights: Optional[Sequence[float]] = None,
                 *, rrf_k: float = 60, depth: int = 100, normalization: str = "minmax") -> None:
        if isinstance(retrievers, (str, bytes)) or not isinstance(retrievers, (list, tuple)):
            raise TypeError(f"retrievers must be a list of retrievers, got {type(retrievers).__name__}")
        if not retrievers:
            raise ValueError("Hybrid needs at least one retriever, got an empty list")
        for i, r in enumerate(retrievers):
            if not callable(getattr(r, "search", None)):
                raise TypeError(f"retrievers[{i}] ({type(r).__name__}) has no search(queries, k) method")
        self.retrievers = list(retrievers)
        self.fusion = _check_choice("fusion", fusion, FUSIONS)
        self.weights = _check_weights(weights, len(self.retrievers))
        self.rrf_k = _check_rrf_k(rrf_k)
        self.depth = _check_int("depth", depth, 1)
        self.normalization = _check_choice("normalization", normalization, NORMALIZATIONS)

    def search(self, queries: Any, k: int = 10, *, threads: Optional[int] = None, filter: Any = None) -> Hits:
        """Top-k fused documents for one query or a batch (the :class:`~ragcore.Retriever` protocol).

        Parameters
        ----------
        queries : str or list of str
            Passed unchanged to every retriever (so each must accept them: text queries for a mix of
            sparse and :class:`DenseRetriever`).
        k : int, default 10
        threads : int, optional
            Passed to each retriever (None: each uses every core); validated here first.
        filter : bool mask or iterable of ids, optional
            Passed to each retriever, which restricts its ranking before its top ``max(depth, k)``; the
            filtered lists are then fused (see :class:`~ragcore.Retriever` for the forms and rules).

        Returns
        -------
        Hits
            Fused scores (float32), best first, ties by the lower index, ``-1`` / ``-inf`` padding when
            fewer than ``k`` documents were retrieved; the ids of the first retriever whose hits carry ids.

        Examples
        --------
        >>> import ragcore as rc
        >>> docs = ["red fox", "red dog", "blue fox"]
        >>> hybrid = rc.Hybrid([rc.BM25().index(docs), rc.TfIdf().index(docs)])
        >>> hybrid.search("red fox", k=3, filter=[1, 2], threads=1).indices.tolist()
        [[1, 2, -1]]
        """
        k = _check_int("k", k, 1)
        kw = _part_kwargs(threads, filter)
        depth = max(self.depth, k)
        hits = [_as_hits(r.search(queries, k=depth, **kw), i) for i, r in enumerate(self.retrievers)]
        k = max(1, min(k, sum(h.indices.shape[1] for h in hits)))  # no more columns than candidates
        return fuse(hits, k, fusion=self.fusion, weights=self.weights, rrf_k=self.rrf_k,
                    normalization=self.normalization)

    def __len__(self) -> int:
        """Number of documents: that of the first retriever (all index the same corpus)."""
        return len(self.retrievers[0])

    def __repr__(self) -> str:
        parts = ", ".join(type(r).__name__ for r in self.retrievers)
        extra = f"rrf_k={self.rrf_k:g}" if self.fusion == "rrf" else f"normalization={self.normalization!r}"
        return (f"Hybrid([{parts}], fusion={self.fusion!r}, weights={self.weights.tolist()}, {extra}, "
                f"depth={self.depth})")


def _part_kwargs(threads: Optional[int], filter: Any) -> dict:
    """The keywords a composite retriever passes to its parts: ``threads`` checked here (before any work),
    and only those given, so a part whose ``search`` lacks them still plugs in."""
    if threads is not None:
        _threads(threads)
    return {name: v for name, v in (("threads", threads), ("filter", filter)) if v is not None}


def _texts(queries: Any, what: str) -> List[str]:
    if isinstance(queries, str):
        return [queries]
    if isinstance(queries, bytes) or not isinstance(queries, (list, tuple, np.ndarray)):
        raise TypeError(f"{what} must be a str or a list of str, got {type(queries).__name__}")
    out = list(queries)
    for i, q in enumerate(out):
        if not isinstance(q, str):
            raise TypeError(f"{what}[{i}] must be a str, got {type(q).__name__} ({q!r:.60})")
    return out


def _encode(encoder: Any, texts: List[str], batch_size: int) -> np.ndarray:
    vecs = encoder.encode(texts, batch_size=batch_size)
    # the one documented conversion: encoders should return float32 C-contiguous already (then no copy)
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    if vecs.ndim != 2 or vecs.shape[0] != len(texts):
        raise ValueError(f"encoder returned an array of shape {vecs.shape} for {len(texts)} texts; "
                         f"expected ({len(texts)}, dim)")
    return vecs


class DenseRetriever:
    """Text queries for a dense index: encode, then search the vectors.

    Parameters
    ----------
    index : dense index
        ``rc.DenseIndex``, or anything with ``search(vectors, k)`` returning :class:`~ragcore.Hits` (and
        ``add(vectors, ids=None)`` for :meth:`index`, ``len()`` for ``len(retriever)``; the ``threads`` /
        ``filter`` keywords are passed only when a search gives them).
    encoder : text encoder
        Anything with ``encode(list_of_str, batch_size=...)`` returning float32 ``(n, dim)``, such as
        ``rc.Encoder``; its vectors must match those the index holds.
    batch_size : int, default 64
        Texts per encoder batch.

    Examples
    --------
    >>> import numpy as np
    >>> import ragcore as rc
    >>> class Letters:                               # a toy encoder: letter counts
    ...     def encode(self, texts, batch_size=64):
    ...         return np.array([[t.count(c) for c in "abc"] for t in texts], np.float32)
    >>> class Exact:                                 # a toy index: inner product, brute force
    ...     def __init__(self): self.vectors = np.zeros((0, 3), np.float32)
    ...     def add(self, vectors, ids=None): self.vectors = np.vstack([self.vectors, vectors])
    ...     def search(self, q, k):
    ...         s = q @ self.vectors.T; top = np.argsort(-s, axis=1, kind="stable")[:, :k]
    ...         return rc.Hits(top, np.take_along_axis(s, top, axis=1))
    >>> dense = rc.DenseRetriever(Exact(), Letters()).index(["aaa", "bbb", "abc"])
    >>> dense.search("bb", k=2).indices.tolist()
    [[1, 2]]
    """

    def __init__(self, index: Any, encoder: Any, *, batch_size: int = 64) -> None:
        if not callable(getattr(index, "search", None)):
            raise TypeError(f"index ({type(index).__name__}) has no search(vectors, k) method")
        if not callable(getattr(encoder, "encode", None)):
            raise TypeError(f"encoder ({type(encoder).__name__}) has no encode(texts, batch_size) method")
        self.dense_index = index
        self.encoder = encoder
        self.batch_size = _check_int("batch_size", batch_size, 1)

    def search(self, queries: Any, k: int = 10, *, threads: Optional[int] = None, filter: Any = None) -> Hits:
        """Encode the queries, then search the index (the :class:`~ragcore.Retriever` protocol).

        Parameters
        ----------
        queries : str or list of str
        k : int, default 10
        threads, filter : optional
            Passed to ``index.search`` when given (``threads`` validated here first); ``filter`` is
            read against the index's ids or rows (see :class:`~ragcore.Retriever`).

        Returns
        -------
        Hits
            ``index.search(vectors, k, threads=threads, filter=filter)``; for no query, (0, k) results
            (the index still checks ``k`` and ``filter`` when it has a ``dim``).

        Examples
        --------
        >>> import numpy as np, ragcore as rc
        >>> class Letters:                               # a toy encoder: counts of a, b, c
        ...     def encode(self, texts, batch_size=64):
        ...         return np.array([[t.count(c) + 0.1 for c in "abc"] for t in texts], np.float32)
        >>> dense = rc.DenseRetriever(rc.DenseIndex(3, device="cpu"), Letters()).index(["aa", "bb", "ab"])
        >>> dense.search("a", k=2).indices.tolist(), dense.search("a", k=2, filter=[1, 2]).indices.tolist()
        ([[0, 2]], [[2, 1]])
        """
        k = _check_int("k", k, 1)
        kw = _part_kwargs(threads, filter)
        texts = _texts(queries, "queries")
        dim = getattr(self.dense_index, "dim", None)
        if texts:
            vecs = _encode(self.encoder, texts, self.batch_size)
        elif isinstance(dim, int):  # no query: the index still checks k and the filter
            vecs = np.empty((0, dim), np.float32)
        else:
            table = getattr(self.dense_index, "ids", None)
            return Hits(np.empty((0, k), np.int64), np.empty((0, k), np.float32), table)
        return self.dense_index.search(vecs, k, **kw)

    def __len__(self) -> int:
        """Number of (live) documents of the index."""
        return len(self.dense_index)

    def index(self, texts: Iterable[str], ids: Optional[Sequence] = None, *, batch_size: Optional[int] = None,
              progress: bool = False) -> "DenseRetriever":
        """Encode documents and add them to the index: ``index.add(vectors, ids=ids)``.

        All texts are encoded first (in chunks of ``batch_size``, with a tqdm bar when ``progress``), then
        added in one call, so a failure while encoding leaves the index as it was.

        Parameters
        ----------
        texts : iterable of str
        ids : sequence, optional
            One id per text, passed to ``index.add``.
        batch_size : int, optional
            Texts per encoder call (default: the retriever's ``batch_size``).
        progress : bool, default False

        Returns
        -------
        self
        """
        bs = self.batch_size if batch_size is None else _check_int("batch_size", batch_size, 1)
        if isinstance(texts, (str, bytes)):
            raise TypeError("texts must be an iterable of str, got a single str; wrap it in a list")
        texts = _texts(list(texts), "texts")
        if ids is not None:
            if isinstance(ids, (str, bytes)) or not hasattr(ids, "__len__"):
                raise TypeError(f"ids must be a sequence, got {type(ids).__name__}")
            if len(ids) != len(texts):
                raise ValueError(f"got {len(ids)} ids for {len(texts)} texts")
        if not texts:
            return self
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), unit="doc", desc="encoding")
        out = None
        try:
            for start in range(0, len(texts), bs):
                chunk = _encode(self.encoder, texts[start:start + bs], bs)
                if out is None:
                    out = np.empty((len(texts), chunk.shape[1]), dtype=np.float32)
                elif chunk.shape[1] != out.shape[1]:
                    raise ValueError(f"encoder returned {chunk.shape[1]} dimensions, then {out.shape[1]}")
                out[start:start + len(chunk)] = chunk
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        self.dense_index.add(out, ids=ids)
        return self

    def __repr__(self) -> str:
        return f"DenseRetriever({type(self.dense_index).__name__}, {type(self.encoder).__name__})"
