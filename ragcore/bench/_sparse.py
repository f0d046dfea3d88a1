"""Sparse engine adapters: ragcore BM25 / TF-IDF, bm25s (numpy, numba), tantivy, rank_bm25, scikit-learn.

An adapter is created with an analyzer kind ('plain' | 'en'), a thread count and a work folder, and offers
  build(texts)            the timed build (analysis included)
  save() -> (bytes, note) size on disk after saving into the work folder, or an in-RAM estimate (note says)
  load(texts)             reopen the index saved in the work folder (RAM-only engines rebuild, untimed)
  prep(queries)           pre-tokenize / pre-parse the queries, outside the timed path
  text(qs, k), tok(ts, k) one call for a list of queries -> list of index arrays (best first)
  text1(q, k), tok1(t, k) one query per call
  filtered(ts, k, mask)   where has_filter: batch search restricted to a boolean document mask
``batch`` says whether a batch is one native call ("native"), a Python loop / thread pool ("emulated"),
or not offered (None).
"""
from __future__ import annotations

import pickle
import re
from concurrent.futures import ThreadPoolExecutor
from typing import List, Tuple

import numpy as np

from ..retrieval.analysis import ENGLISH_STOPWORDS
from ._machine import dir_bytes

K1, B = 1.5, 0.75
_TOKEN_RE = re.compile(r"(?u)\b\w\w+\b")
_STOP = frozenset(ENGLISH_STOPWORDS)


def py_analyzer(kind: str):
    """A callable str -> list[str]: 'plain' (lowercase + \\w\\w+) or 'en' (+ Lucene stopwords + Snowball):
    ragcore.Analyzer's rules, for the pure-Python peers."""
    if kind == "plain":
        return lambda text: _TOKEN_RE.findall(text.lower())
    import Stemmer

    stem = Stemmer.Stemmer("english").stemWords
    return lambda text: stem([t for t in _TOKEN_RE.findall(text.lower()) if t not in _STOP])


def topk_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores of each row (best first); scores: (n_queries, n_docs)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


class Engine:
    """The interface every adapter (sparse and dense) offers; see the module docstring."""

    key = "?"
    mode = "sparse"
    family = "bm25"          # which engines are compared with each other (the ratio's ragcore engine)
    max_docs = None          # larger corpora are skipped, with skip_reason
    skip_reason = ""
    multithread = True       # False: no all-thread figures (pure Python)
    batch = "native"         # native | emulated | None
    tok_kind = "tokens"      # what the pre-tokenized path passes
    has_filter = False
    requires: Tuple[Tuple[str, str], ...] = ()   # (module, pip name) pairs

    @classmethod
    def requirements(cls, analyzer: str) -> List[Tuple[str, str]]:
        """(module, pip package) pairs this engine needs with ``analyzer``."""
        return list(cls.requires) + ([("Stemmer", "PyStemmer")] if analyzer == "en" and cls.mode == "sparse" else [])

    def __init__(self, analyzer: str, threads: int, workdir=None):
        self.analyzer, self.threads, self.workdir = analyzer, threads, workdir

    def set_threads(self, threads: int) -> None:
        self.threads = threads

    def load(self, data):
        self.build(data)

    def prep(self, qs):
        return qs

    def text1(self, q, k):
        return self.text([q], k)[0]

    def tok1(self, t, k):
        return self.tok([t], k)[0]

    def quality_run(self, qs, k=10):
        """Top-k for quality figures (untimed): the batch path unless an engine needs care."""
        return self.text(qs, k)

    def filtered(self, ts, k, mask):
        raise NotImplementedError


class RagcoreBM25(Engine):
    key = "ragcore-bm25"
    has_filter = True

    def _make(self):
        from .. import Analyzer

        self.an = Analyzer(stopwords="english", stemmer="english") if self.analyzer == "en" else Analyzer()
        return self._model()

    def _model(self):
        from .. import BM25

        return BM25(k1=K1, b=B, method="lucene", analyzer=self.an)

    def build(self, texts):
        self.m = self._make()
        self.m.index(texts, threads=self.threads)

    def save(self):
        self.m.save(str(self.workdir / "index"))
        return dir_bytes(self.workdir / "index"), "on disk"

    def load(self, texts):
        self.m = type(self._make()).load(str(self.workdir / "index"))

    def text1(self, q, k):
        return self.m.search(q, k=k, threads=self.threads).indices[0]   # a str: one query

    def prep(self, qs):
        return [self.an(q) for q in qs]

    def text(self, qs, k):
        return list(self.m.search(qs, k=k, threads=self.threads).indices)

    tok = text  # list[list[str]] is taken as pre-tokenized

    def filtered(self, ts, k, mask):
        return list(self.m.search(ts, k=k, threads=self.threads, filter=mask).indices)


class RagcoreTfIdf(RagcoreBM25):
    key = "ragcore-tfidf"
    family = "tfidf"
    max_docs = 200_000
    skip_reason = "TF-IDF rows only up to 200k documents (the scikit-learn peer scores densely)"
    has_filter = False

    def _model(self):
        from .. import TfIdf

        return TfIdf(analyzer=self.an)


class Bm25s(Engine):
    key = "bm25s"
    backend = "numpy"
    tok_kind = "token ids"
    has_filter = True
    requires = (("bm25s", "bm25s"),)

    def __init__(self, analyzer, threads, workdir=None):
        super().__init__(analyzer, threads, workdir)
        import bm25s

        self.bm25s = bm25s
        self.stop = "en" if analyzer == "en" else None
        if analyzer == "en":
            import Stemmer

            self.stemmer = Stemmer.Stemmer("english")
        else:
            self.stemmer = None
        self.set_threads(threads)

    def set_threads(self, threads):
        # numpy backend: 0 = sequential loop, n > 1 = ThreadPoolExecutor; numba: 1 = serial kernel, n = prange
        self.threads = threads
        self.nt = (0 if self.backend == "numpy" else 1) if threads == 1 else threads

    def _tokenize(self, texts, ids):
        return self.bm25s.tokenize(texts, stopwords=self.stop, stemmer=self.stemmer, return_ids=ids,
                                   show_progress=False)

    def build(self, texts):
        self.m = self.bm25s.BM25(k1=K1, b=B, method="lucene", backend=self.backend)
        self.m.index(self._tokenize(texts, True), show_progress=False)

    def save(self):
        self.m.save(str(self.workdir / "index"), show_progress=False)
        return dir_bytes(self.workdir / "index"), "on disk"

    def load(self, texts):
        self.m = self.bm25s.BM25.load(str(self.workdir / "index"), backend=self.backend, show_progress=False)

    def prep(self, qs):
        return [self.m.get_tokens_ids(t) for t in self._tokenize(qs, False)]   # index token ids

    def _retrieve(self, qs, k, mask=None):
        # bm25s 0.3.16 cannot take a query with no known term: for id queries it substitutes the id of its
        # empty token, which lies outside the index (ValueError on numpy, out-of-bounds read on numba), and
        # it detects the query type from the first query only. Such queries get an empty row here instead.
        keep = [i for i, q in enumerate(qs) if q]
        if len(keep) < len(qs):
            out = [np.empty(0, np.int64)] * len(qs)
            if keep:
                for i, r in zip(keep, self._retrieve([qs[i] for i in keep], k, mask)):
                    out[i] = r
            return out
        k = min(k, self.m.scores["num_docs"])  # bm25s refuses k > documents; the others return fewer
        return list(self.m.retrieve(qs, k=k, n_threads=self.nt, show_progress=False, return_as="documents",
                                    weight_mask=mask))

    def text(self, qs, k):
        return self._retrieve(self._tokenize(qs, False), k)

    def tok(self, ts, k):
        return self._retrieve(ts, k)

    def quality_run(self, qs, k=10):
        # bm25s fills a row with score-0 documents when fewer than k match; drop those (others return none)
        toks = self._tokenize(qs, False)
        keep = [i for i, t in enumerate(toks) if t]   # see _retrieve
        out = [np.empty(0, np.int64)] * len(qs)
        if keep:
            res = self.m.retrieve([toks[i] for i in keep], k=min(k, self.m.scores["num_docs"]), n_threads=self.nt,
                                  show_progress=False)
            for i, d, s in zip(keep, res.documents, res.scores):
                out[i] = d[s > 0]
        return out

    def filtered(self, ts, k, mask):
        # weight_mask multiplies the scores: 0 removes a document (it can still fill a row with score 0)
        return self._retrieve(ts, k, mask.astype(np.float32))


class Bm25sNumba(Bm25s):
    key = "bm25s-numba"
    backend = "numba"
    requires = (("bm25s", "bm25s"), ("numba", "numba"))


_QUERY_SYNTAX = re.compile(r"[^\w\s]")


class Tantivy(Engine):
    key = "tantivy"
    batch = "emulated"
    tok_kind = "pre-parsed Query"
    requires = (("tantivy", "tantivy"),)

    @classmethod
    def requirements(cls, analyzer):
        return list(cls.requires)   # its own stemmer

    def __init__(self, analyzer, threads, workdir=None):
        super().__init__(analyzer, threads, workdir)
        import tantivy

        self.tv = tantivy
        self.field_tok = "rc_en" if analyzer == "en" else "default"

    def _register(self):
        if self.field_tok == "rc_en":  # tantivy's own components, with the Lucene stopwords of the others
            tv = self.tv
            an = (tv.TextAnalyzerBuilder(tv.Tokenizer.simple()).filter(tv.Filter.remove_long(40))
                  .filter(tv.Filter.lowercase()).filter(tv.Filter.custom_stopword(sorted(_STOP)))
                  .filter(tv.Filter.stemmer("english")).build())
            self.ix.register_tokenizer("rc_en", an)

    def build(self, texts):
        tv = self.tv
        path = None if self.workdir is None else self.workdir / "index"   # None: in RAM (warm-up)
        if path is not None:
            path.mkdir(parents=True, exist_ok=True)
        sb = tv.SchemaBuilder()
        sb.add_text_field("body", tokenizer_name=self.field_tok, index_option="freq")  # no positions
        sb.add_integer_field("idx", fast=True)
        self.ix = tv.Index(sb.build(), path=None if path is None else str(path))
        self._register()
        w = self.ix.writer(num_threads=self.threads)
        for i, t in enumerate(texts):
            w.add_document(tv.Document(body=t, idx=i))
        w.commit()
        w.wait_merging_threads()
        self._open()

    def _open(self):
        self.ix.reload()
        self.s = self.ix.searcher()   # one searcher reused: the index is static

    def save(self):
        return dir_bytes(self.workdir / "index"), "on disk (written by the build)"

    def load(self, texts):
        self.ix = self.tv.Index.open(str(self.workdir / "index"))
        self._register()
        self._open()

    def prep(self, qs):
        return [self._parse(q) for q in qs]

    def _parse(self, q):
        # strip query syntax; lowercase so AND/OR/NOT are words (the analyzer lowercases anyway)
        return self.ix.parse_query(_QUERY_SYNTAX.sub(" ", q).lower(), ["body"])

    def _one(self, q, k):
        hits = self.s.search(q, k, count=False).hits
        return np.asarray(self.s.fast_field_values("idx", [a for _, a in hits]), np.int64)  # document index

    def _map(self, fn, items):
        if self.threads == 1 or len(items) == 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(self.threads) as ex:
            return list(ex.map(fn, items, chunksize=16))

    def text1(self, q, k):
        return self._one(self._parse(q), k)

    def tok1(self, q, k):
        return self._one(q, k)

    def text(self, qs, k):
        return self._map(lambda q: self._one(self._parse(q), k), qs)

    def tok(self, ts, k):
        return self._map(lambda q: self._one(q, k), ts)


class RankBM25(Engine):
    key = "rank_bm25"
    max_docs = 20_000
    skip_reason = "rank_bm25 is pure Python (a dict lookup per document per term): up to 20k documents"
    multithread = False
    batch = None
    requires = (("rank_bm25", "rank-bm25"),)

    def build(self, texts):
        from rank_bm25 import BM25Okapi

        self.an = py_analyzer(self.analyzer)
        self.m = BM25Okapi([self.an(t) for t in texts], k1=K1, b=B)

    def save(self):
        return len(pickle.dumps(self.m, protocol=5)), "RAM only (pickled size)"

    def prep(self, qs):
        return [self.an(q) for q in qs]

    def text(self, qs, k):
        return self.tok([self.an(q) for q in qs], k)

    def tok(self, ts, k):
        return [topk_rows(self.m.get_scores(t)[None, :], k)[0] for t in ts]

    def quality_run(self, qs, k=10):
        # documents scoring 0 are no match (the others return none); rank_bm25 scores every document
        out = []
        for t in self.prep(qs):
            s = self.m.get_scores(t)
            top = topk_rows(s[None, :], k)[0]
            out.append(top[s[top] > 0])
        return out


class Sklearn(Engine):
    key = "sklearn"
    family = "tfidf"
    max_docs = 200_000
    skip_reason = RagcoreTfIdf.skip_reason
    chunk = 256   # queries per dense (chunk, n_docs) score block
    requires = (("sklearn", "scikit-learn"),)

    def build(self, texts):
        from sklearn.feature_extraction.text import TfidfVectorizer

        an = py_analyzer(self.analyzer)
        self.vec = TfidfVectorizer(analyzer=lambda x: x if isinstance(x, list) else an(x))
        self.D = self.vec.fit_transform(texts)      # l2-normalised rows: cosine == linear kernel
        self.an = an

    def save(self):
        n = self.D.data.nbytes + self.D.indices.nbytes + self.D.indptr.nbytes + self.vec.idf_.nbytes
        return n + len(pickle.dumps(self.vec.vocabulary_)), "RAM only (matrix + pickled vocabulary)"

    def prep(self, qs):
        return [self.an(q) for q in qs]

    def text(self, qs, k):
        from sklearn.metrics.pairwise import linear_kernel

        out = []
        for i in range(0, len(qs), self.chunk):
            out.extend(topk_rows(linear_kernel(self.vec.transform(qs[i:i + self.chunk]), self.D), k))
        return out

    tok = text   # the analyzer passes token lists through

    def quality_run(self, qs, k=10):
        from sklearn.metrics.pairwise import linear_kernel

        out = []
        for i in range(0, len(qs), self.chunk):
            s = linear_kernel(self.vec.transform(qs[i:i + self.chunk]), self.D)
            out.extend(top[row[top] > 0] for row, top in zip(s, topk_rows(s, k)))
        return out


SPARSE = {c.key: c for c in (RagcoreBM25, Bm25s, Bm25sNumba, Tantivy, RankBM25, RagcoreTfIdf, Sklearn)}
