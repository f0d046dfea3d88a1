"""Sparse retrievers: BM25 (five variants) and TF-IDF, on the native inverted index.

Scores are precomputed per (term, document) at indexing time ("eager" scoring, as in bm25s), so a
query is a sum of impacts over its terms' postings followed by the shared top-k selector.
"""
from __future__ import annotations

import itertools
import math
import os
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from .. import _core
from .._deprecation import deprecated_property, renamed_keywords
from .._validate import MAX_THREADS  # noqa: F401  (re-exported: ragcore.retrieval.sparse.MAX_THREADS)
from .._validate import ALL_THREADS as _ALL_THREADS, check_ids as _check_ids, check_k as _check_k
from .._validate import threads as _threads
from ..io import storage
from ._filter import allowed_mask
from .analysis import Analyzer
from .hits import Hits

Query = Union[str, bytes, Sequence[str]]
Queries = Union[str, bytes, Sequence[Union[str, bytes]], Sequence[Sequence[str]]]

BM25_METHODS = ("robertson", "lucene", "atire", "bm25l", "bm25+")


def _batches(corpus: Iterable, size: int):
    if isinstance(corpus, list):
        for start in range(0, len(corpus), size):
            yield corpus[start:start + size]
        return
    it = iter(corpus)
    while True:
        batch = list(itertools.islice(it, size))
        if not batch:
            return
        yield batch


class _State:
    """One index as a whole: the native index, its arrays, the caller's ids and the analyzer that
    built it. Never changed once made; a retriever swaps in a new one (one attribute assignment, atomic
    under the GIL) and every search reads one state from start to end, so a concurrent ``index()`` can
    never label one corpus's rows with another's ids."""

    __slots__ = ("index", "n_docs", "arrays", "ids", "analyzer", "_id_pos")

    def __init__(self, index, arrays: Optional[dict], ids: Optional[np.ndarray], analyzer: Analyzer) -> None:
        self.index, self.arrays, self.ids, self.analyzer = index, arrays, ids, analyzer
        self.n_docs = 0 if index is None else index.n_docs  # a Python int: read on every search
        self._id_pos: Optional[dict] = None

    def id_pos(self) -> dict:
        """id -> document index (built on first use; a race builds it twice, equal)."""
        pos = self._id_pos
        if pos is None:
            pos = self._id_pos = {v: i for i, v in enumerate(self.ids.tolist())}
        return pos


class _SparseRetriever:
    """Shared machinery of BM25 and TfIdf: indexing, search, persistence.

    Thread safety: searches may run from any number of threads, also while another thread calls
    ``index()``; each search answers from the index as it was when the search began (ids included).
    """

    _kind = ""

    def __init__(self, analyzer: Optional[Analyzer]) -> None:
        if analyzer is None:
            analyzer = Analyzer()
        if not isinstance(analyzer, Analyzer):
            raise TypeError(f"analyzer must be a ragcore.Analyzer, got {type(analyzer).__name__}")
        self.analyzer = analyzer
        self._state = _State(None, None, None, analyzer)

    @property
    def ids(self) -> Optional[np.ndarray]:
        """The caller's document ids (int64 or object array), or None when none were given."""
        return self._state.ids

    # -- subclass hooks -------------------------------------------------------------------
    def _params(self) -> dict:
        raise NotImplementedError

    def _core_params(self) -> tuple:
        """(method, k1, b, delta, sublinear_tf, smooth_idf) for the core."""
        raise NotImplementedError

    # -- indexing -----------------------------------------------------------------------------
    @renamed_keywords(show_progress="progress")
    def index(self, corpus: Iterable[Union[str, bytes, Sequence[str]]], ids: Optional[Sequence] = None, *,
              threads: Optional[int] = None, batch_size: int = 4096, progress: bool = False):
        """Index a corpus, replacing any previous index (kept intact if this raises).

        Parameters
        ----------
        corpus : iterable of str, or of list[str]
            Texts to analyse, or pre-tokenized documents taken as-is (no lowercasing, stopwords or
            stemming). Streamed in batches of ``batch_size``: a generator need not fit in memory as
            Python objects.
        ids : sequence of str or int, optional
            The caller's document ids (unique, one per document); ``Hits.ids`` returns them.
        threads : int, optional
            Threads for analysis and index construction (default: all cores).
        batch_size : int, default 4096
        progress : bool, default False
            Show a tqdm progress bar (documents indexed). ``show_progress=`` is a deprecated alias.

        Returns
        -------
        self
        """
        if isinstance(corpus, (str, bytes)):
            raise TypeError("corpus must be an iterable of documents, got a single str; wrap it in a list")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        nt = _threads(threads)
        id_arr = _check_ids(ids)
        if id_arr is not None and hasattr(corpus, "__len__") and len(corpus) != len(id_arr):
            raise ValueError(f"got {len(id_arr)} ids for {len(corpus)} documents")
        analyzer = self.analyzer
        builder = _core.SparseBuilder(analyzer._core, analyzer.stems)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(corpus) if hasattr(corpus, "__len__") else None, unit="doc", desc="indexing")
        n = 0
        try:
            for batch in _batches(corpus, batch_size):
                builder.add_batch(batch, n, nt)
                if analyzer.stems:
                    words = builder.pending_words()
                    if words:
                        builder.resolve_pending(analyzer.stem_words(words))
                builder.commit_batch(nt)
                n += len(batch)
                if bar is not None:
                    bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()
        if n == 0:
            raise ValueError("the corpus has no documents")
        if id_arr is not None and len(id_arr) != n:
            raise ValueError(f"got {len(id_arr)} ids for {n} documents")
        arrays = builder.finish(*self._core_params(), nt)
        self._install(arrays, n, id_arr, analyzer)
        return self

    def _install(self, arrays: dict, n_docs: int, ids: Optional[np.ndarray],
                 analyzer: Optional[Analyzer] = None) -> None:
        analyzer = self.analyzer if analyzer is None else analyzer
        method, k1, b, delta, sublinear_tf, smooth_idf = self._core_params()
        index = _core.SparseIndex(arrays, n_docs, method, k1, b, delta, sublinear_tf, smooth_idf, analyzer._core,
                                  analyzer.stems)
        if ids is not None and len(ids) != index.n_docs:
            raise ValueError(f"index has {index.n_docs} documents but {len(ids)} ids")
        self._state = _State(index, arrays, ids, analyzer)

    def _set_ids(self, ids: Sequence) -> None:
        """Attach ids to the current index (validated: unique, one per document)."""
        st = self._state
        n = st.n_docs
        arr = _check_ids(ids)
        if len(arr) != n:
            raise ValueError(f"got {len(arr)} ids for {n} documents")
        self._state = _State(st.index, st.arrays, arr, st.analyzer)

    # -- search -------------------------------------------------------------------------------
    def _require(self) -> _State:
        st = self._state
        if st.index is None:
            raise ValueError(f"this {type(self).__name__} is empty: call index() (or load()) first")
        return st

    def __len__(self) -> int:
        """Number of indexed documents (0 before :meth:`index`); a filter mask has this length."""
        return self._state.n_docs

    n_docs = deprecated_property("n_docs", "len(retriever)", len)

    @property
    def vocabulary_size(self) -> int:
        """Number of distinct terms in the index."""
        index = self._state.index
        return 0 if index is None else index.n_terms

    @staticmethod
    def _mask(st: _State, filter: Any) -> np.ndarray:
        return allowed_mask(filter, st.n_docs, st.ids, st.id_pos)

    def search(self, queries: Queries, k: int = 10, *, threads: Optional[int] = None, filter: Any = None) -> Hits:
        """Top-k documents for one query or a batch (the :class:`~ragcore.Retriever` protocol).

        Parameters
        ----------
        queries : str, list of str, or list of list of str
            One query text, a batch of texts, or a batch of pre-tokenized queries (taken as-is).
        k : int, default 10
            Results per query, capped at the number of documents: ``k`` larger than the corpus gives
            ``len(self)`` columns; -1 pads where fewer documents match.
        threads : int, optional
            Threads over queries: None = all cores, 1 = the calling thread only.
        filter : bool mask of length ``len(self)``, or iterable of ids, optional
            Restrict the candidates before top-k: the result is the unfiltered ranking restricted to
            the allowed documents. A numpy bool array or a list of bool, or the allowed ids (the
            caller's ids when ids were given at indexing, document indices otherwise; an id the index
            does not hold raises ``ValueError``). See :class:`~ragcore.Retriever` for every rule.

        Returns
        -------
        Hits
            ``indices`` int64 and ``scores`` float32 of shape (n_queries, min(k, len(self))), best first;
            ties go to the lower document index; only documents containing a query term are returned.

        Examples
        --------
        >>> import ragcore as rc
        >>> bm25 = rc.BM25().index(["red fox", "red dog", "blue fox"], ids=["a", "b", "c"])
        >>> bm25.search("red fox", k=2).ids.tolist()
        [['a', 'b']]
        >>> bm25.search("red fox", k=2, filter=["b", "c"]).ids.tolist()
        [['b', 'c']]
        """
        st = self._state  # one snapshot from start to end
        index = st.index
        if index is None:
            raise ValueError(f"this {type(self).__name__} is empty: call index() (or load()) first")
        if k.__class__ is not int or k < 1:
            k = _check_k(k)
        if k > st.n_docs:  # capped at the collection size: k=10**9 must not allocate 12 GB
            k = st.n_docs
        nt = _ALL_THREADS if threads is None else _threads(threads)
        mask = None if filter is None else self._mask(st, filter)
        if isinstance(queries, (str, bytes)):
            res = index.search_text([queries], k, mask, nt)
            text = True
        else:
            if not isinstance(queries, list):
                if isinstance(queries, (tuple, np.ndarray)):
                    queries = list(queries)
                else:
                    raise TypeError(f"queries must be a str or a list, got {type(queries).__name__}")
            if not queries:
                return Hits(np.empty((0, k), np.int64), np.empty((0, k), np.float32), st.ids)
            text = not isinstance(queries[0], (list, tuple))
            res = (index.search_text if text else index.search_tokens)(queries, k, mask, nt)
        if res.__class__ is list:  # a stemming index met new words: stem them once, then search
            index.add_surface_words(res, st.analyzer.stem_words(res))
            res = index.search_text([queries] if isinstance(queries, (str, bytes)) else queries, k, mask, nt)
        return Hits(res[0], res[1], st.ids)

    def get_scores(self, query: Query) -> np.ndarray:
        """Score of every document for one query (str, or list[str] taken as-is): float32 (n_docs,).

        Documents without any query term score 0, except with bm25l / bm25+ where every document
        gets the non-occurrence part of each query term (as in bm25s).
        """
        st = self._require()
        index = st.index
        if isinstance(query, (str, bytes)):
            res = index.scores_text(query)
            if res.__class__ is list:
                index.add_surface_words(res, st.analyzer.stem_words(res))
                res = index.scores_text(query)
            return res
        if isinstance(query, (list, tuple)):
            return index.scores_tokens(list(query))
        raise TypeError(f"query must be a str or a list of str tokens, got {type(query).__name__}")

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: Union[str, os.PathLike]) -> None:
        """Save to a directory (atomically: a crash never leaves a half-written index)."""
        st = self._require()
        meta = {"params": self._params(), "analyzer": st.analyzer.to_config(),
                "n_docs": st.n_docs, "n_terms": int(st.index.n_terms), "ids": None}
        arrays = {k: np.asarray(v) for k, v in st.arrays.items()}
        # The word -> stem map of a stemming index is not saved: the stems are the vocabulary, and a
        # loaded index stems each new query word once (then caches it), as bm25s stems its queries.
        arrays["surface_data"] = np.empty(0, np.uint8)
        arrays["surface_offsets"] = np.zeros(1, np.int64)
        arrays["surface_term"] = np.empty(0, np.int32)
        if st.ids is not None:
            if st.ids.dtype == object:
                meta["ids"] = "str"
                arrays["ids_data"], arrays["ids_offsets"] = storage.encode_strings(st.ids.tolist())
            else:
                meta["ids"] = "int"
                arrays["ids_int"] = st.ids
        storage.save_index(path, self._kind, meta, arrays)

    @classmethod
    def load(cls, path: Union[str, os.PathLike], *, mmap: bool = True, verify: bool = True):
        """Load an index saved by :meth:`save`.

        Parameters
        ----------
        mmap : bool, default True
            Map the arrays from disk instead of reading them (instant load, shared page cache).
        verify : bool, default True
            Check every file's CRC-32 (reads the files once); sizes are always checked.
        """
        manifest, arrays = storage.load_index(path, kind=cls._kind, mmap=mmap, verify=verify)
        try:
            meta = manifest["meta"]
            obj = cls(**meta["params"], analyzer=Analyzer.from_config(meta["analyzer"]))
            ids = None
            if meta["ids"] == "str":
                ids = np.empty(meta["n_docs"], dtype=object)
                ids[:] = storage.decode_strings(arrays.pop("ids_data"), arrays.pop("ids_offsets"))
            elif meta["ids"] == "int":
                ids = np.asarray(arrays.pop("ids_int"))
            obj._install(arrays, int(meta["n_docs"]), ids)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{os.fspath(path)!r} is not a valid {cls._kind} index: {e}") from e
        return obj


class BM25(_SparseRetriever):
    """Okapi BM25 retriever (native inverted index, eager scoring).

    Parameters
    ----------
    k1 : float, default 1.5
    b : float, default 0.75
    method : {"lucene", "robertson", "atire", "bm25l", "bm25+"}, default "lucene"
        Variants as defined by bm25s (Lù, 2024; after Kamphuis et al., 2020): ``lucene`` uses exact
        document lengths. Given the same tokens, scores equal bm25s's.
    delta : float, default 0.5
        The delta of bm25l and bm25+ (ignored by the others).
    analyzer : Analyzer, optional
        Text analysis; default ``Analyzer()`` (the scikit-learn / bm25s token pattern, lowercased).
        ``Analyzer(stopwords="english", stemmer="english")`` usually ranks better.

    Examples
    --------
    >>> import ragcore as rc
    >>> corpus = ["a cat is a feline", "dogs are loyal", "cats and dogs"]
    >>> bm25 = rc.BM25(analyzer=rc.Analyzer(stopwords="english", stemmer="english"))
    >>> bm25 = bm25.index(corpus, ids=["d1", "d2", "d3"])
    >>> bm25.search("cat", k=2).ids.tolist()
    [['d1', 'd3']]
    """

    _kind = "bm25"

    def __init__(self, k1: float = 1.5, b: float = 0.75, method: str = "lucene", delta: float = 0.5,
                 analyzer: Optional[Analyzer] = None) -> None:
        for name, v in (("k1", k1), ("b", b), ("delta", delta)):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"{name} must be a number, got {type(v).__name__}")
            if not math.isfinite(v):
                raise ValueError(f"{name} must be finite, got {v}")
        if k1 < 0:
            raise ValueError(f"k1 must be >= 0, got {k1}")
        if not 0 <= b <= 1:
            raise ValueError(f"b must be in [0, 1], got {b}")
        if delta < 0:
            raise ValueError(f"delta must be >= 0, got {delta}")
        if method not in BM25_METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(BM25_METHODS)}")
        if method == "bm25l" and k1 == 0 and delta == 0:
            raise ValueError("bm25l with k1=0 and delta=0 scores 0/0; make k1 or delta positive")
        super().__init__(analyzer)
        self.k1, self.b, self.delta, self.method = float(k1), float(b), float(delta), method

    def _params(self) -> dict:
        return {"k1": self.k1, "b": self.b, "method": self.method, "delta": self.delta}

    def _core_params(self) -> tuple:
        return (self.method, self.k1, self.b, self.delta, False, True)

    def __repr__(self) -> str:
        return (f"BM25(k1={self.k1}, b={self.b}, method={self.method!r}, delta={self.delta}, "
                f"analyzer={self.analyzer!r}, n_docs={len(self)})")


class TfIdf(_SparseRetriever):
    """TF-IDF cosine retriever: scores equal scikit-learn's ``TfidfVectorizer`` + ``cosine_similarity``.

    Parameters
    ----------
    sublinear_tf : bool, default False
        Use ``1 + ln(tf)`` instead of ``tf`` (documents and queries), as scikit-learn does.
    smooth_idf : bool, default True
        ``idf = ln((1 + n) / (1 + df)) + 1`` (else ``ln(n / df) + 1``).
    analyzer : Analyzer, optional
        Default ``Analyzer()``: scikit-learn's default tokenization.

    Examples
    --------
    >>> import ragcore as rc
    >>> tfidf = rc.TfIdf().index(["the red fox", "the lazy dog"])
    >>> tfidf.search("red", k=1).indices.tolist()
    [[0]]
    """

    _kind = "tfidf"

    def __init__(self, sublinear_tf: bool = False, smooth_idf: bool = True,
                 analyzer: Optional[Analyzer] = None) -> None:
        for name, v in (("sublinear_tf", sublinear_tf), ("smooth_idf", smooth_idf)):
            if not isinstance(v, bool):
                raise TypeError(f"{name} must be a bool, got {type(v).__name__}")
        super().__init__(analyzer)
        self.sublinear_tf, self.smooth_idf = sublinear_tf, smooth_idf

    def _params(self) -> dict:
        return {"sublinear_tf": self.sublinear_tf, "smooth_idf": self.smooth_idf}

    def _core_params(self) -> tuple:
        return ("tfidf", 0.0, 0.0, 0.0, self.sublinear_tf, self.smooth_idf)

    def __repr__(self) -> str:
        return (f"TfIdf(sublinear_tf={self.sublinear_tf}, smooth_idf={self.smooth_idf}, "
                f"analyzer={self.analyzer!r}, n_docs={len(self)})")


def load(path: Union[str, os.PathLike], *, mmap: bool = True, verify: bool = True) -> _SparseRetriever:
    """Load a saved sparse index of any kind (BM25 or TfIdf), read from its manifest."""
    kind = storage.read_manifest(path).get("kind")
    classes = {cls._kind: cls for cls in (BM25, TfIdf)}
    if kind not in classes:
        raise ValueError(f"{os.fspath(path)!r} is a {kind!r} index, not a sparse one (bm25 or tfidf)")
    return classes[kind].load(path, mmap=mmap, verify=verify)
