"""Small, obviously-correct pure-Python oracles for the sparse retrievers, plus comparison helpers.

Nothing here imports ragcore: these are the reference definitions the native core is tested against.

BM25: the five variants exactly as bm25s 0.3.16 defines them (``bm25s/scoring.py``, ``bm25s/__init__.py``),
which follow Kamphuis et al., "Which BM25 Do You Mean? A Large-Scale Reproducibility Study of Scoring
Variants", ECIR 2020:

* N documents, df(t) = number of documents containing t, |d| = number of tokens of d (after stopword
  removal and stemming: whatever the analyzer produced), avgdl = mean |d| over all documents.
* score(q, d) = sum over the query tokens t *with repetition* (a query token given twice counts twice),
  ignoring tokens that are not in the vocabulary, of idf(t) * tfc(tf(t, d), |d|).
* bm25l and bm25+ have tfc(0, .) != 0: a document that does not contain t still gets
  idf(t) * tfc(0, avgdl) (bm25s's "non-occurrence" array, computed with l_d = avgdl).

TF-IDF: scikit-learn's TfidfVectorizer (norm="l2", use_idf=True) followed by cosine_similarity.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

TOKEN_RE = re.compile(r"(?u)\b\w\w+\b")

# Lucene's English stopword list (== bm25s.stopwords.STOPWORDS_EN), 33 words.
STOPWORDS_EN = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there "
    "these they this to was will with".split()
)

METHODS = ("robertson", "lucene", "atire", "bm25l", "bm25+")


def regex_tokens(text: str, lowercase: bool = True, min_token_len: int = 2) -> list[str]:
    """The reference tokenizer: maximal runs of ``\\w`` of at least ``min_token_len`` code points."""
    if lowercase:
        text = text.lower()
    if min_token_len == 2:
        return TOKEN_RE.findall(text)
    return re.findall(r"(?u)\b\w{%d,}\b" % min_token_len, text)


def analyze(text: str, lowercase=True, stopwords=None, stemmer=None, min_token_len=2) -> list[str]:
    """Reference analyzer: regex tokens, then stopwords removed, then each remaining token stemmed."""
    toks = regex_tokens(text, lowercase=lowercase, min_token_len=min_token_len)
    if stopwords is not None:
        stop = STOPWORDS_EN if isinstance(stopwords, str) else frozenset(stopwords)
        toks = [t for t in toks if t not in stop]
    if stemmer is not None:
        if isinstance(stemmer, str):
            import Stemmer  # PyStemmer

            toks = Stemmer.Stemmer(stemmer).stemWords(toks)
        else:
            toks = list(stemmer(toks))
    return toks


# ----------------------------------------------------------------------------------------------- BM25
def idf(method: str, df: int, n: int) -> float:
    if method == "robertson":
        inner = (n - df + 0.5) / (df + 0.5)
        return math.log(max(inner, 1.0))  # bm25s clamps inner < 1 to 1 (idf >= 0)
    if method == "lucene":
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))
    if method == "atire":
        return math.log(n / df)
    if method == "bm25l":
        return math.log((n + 1) / (df + 0.5))
    if method == "bm25+":
        return math.log((n + 1) / df)
    raise ValueError(method)


def tfc(method: str, tf: float, dl: float, avgdl: float, k1: float, b: float, delta: float) -> float:
    norm = 1.0 - b + b * dl / avgdl
    if method in ("robertson", "lucene"):
        return tf / (k1 * norm + tf)
    if method == "atire":
        return tf * (k1 + 1.0) / (tf + k1 * norm)
    if method == "bm25l":
        c = tf / norm
        return (k1 + 1.0) * (c + delta) / (k1 + c + delta)
    if method == "bm25+":
        return (k1 + 1.0) * tf / (k1 * norm + tf) + delta
    raise ValueError(method)


class RefBM25:
    """BM25 over pre-tokenized documents, scored one document at a time in float64."""

    def __init__(self, k1=1.5, b=0.75, method="lucene", delta=0.5):
        self.k1, self.b, self.method, self.delta = float(k1), float(b), method, float(delta)

    def index(self, corpus_tokens: Sequence[Sequence[str]]) -> "RefBM25":
        self.docs = [Counter(d) for d in corpus_tokens]
        self.lens = [len(d) for d in corpus_tokens]
        self.n = len(self.docs)
        self.avgdl = sum(self.lens) / self.n
        df: Counter = Counter()
        for c in self.docs:
            df.update(c.keys())
        self.df = dict(df)
        self.idf = {t: idf(self.method, f, self.n) for t, f in self.df.items()}
        return self

    @property
    def vocabulary_size(self) -> int:
        return len(self.df)

    def score(self, query_tokens: Iterable[str], doc: int) -> float:
        s = 0.0
        tfs, dl = self.docs[doc], self.lens[doc]
        for t in query_tokens:  # duplicates count as many times as they appear
            if t not in self.idf:
                continue
            tf = tfs.get(t, 0)
            if tf == 0:
                if self.method not in ("bm25l", "bm25+"):
                    continue
                s += self.idf[t] * tfc(self.method, 0, self.avgdl, self.avgdl, self.k1, self.b, self.delta)
            else:
                s += self.idf[t] * tfc(self.method, tf, dl, self.avgdl, self.k1, self.b, self.delta)
        return s

    def get_scores(self, query_tokens: Sequence[str]) -> np.ndarray:
        q = list(query_tokens)
        return np.array([self.score(q, d) for d in range(self.n)], dtype=np.float64)

    def matching(self, query_tokens: Sequence[str]) -> np.ndarray:
        """Documents that contain at least one query token (the only ones a search returns)."""
        q = set(query_tokens)
        return np.array([bool(q & c.keys()) for c in self.docs], dtype=bool)


# --------------------------------------------------------------------------------------------- TF-IDF
class RefTfIdf:
    """scikit-learn TfidfVectorizer(norm='l2', use_idf=True) + cosine_similarity, over tokens."""

    def __init__(self, sublinear_tf=False, smooth_idf=True):
        self.sublinear_tf, self.smooth_idf = sublinear_tf, smooth_idf

    def _tf(self, count: int) -> float:
        return 1.0 + math.log(count) if self.sublinear_tf else float(count)

    def _vector(self, tokens: Sequence[str]) -> dict:
        v = {t: self._tf(c) * self.idf[t] for t, c in Counter(tokens).items() if t in self.idf}
        norm = math.sqrt(sum(x * x for x in v.values()))
        return {t: x / norm for t, x in v.items()} if norm > 0 else {}

    def index(self, corpus_tokens: Sequence[Sequence[str]]) -> "RefTfIdf":
        n = len(corpus_tokens)
        df: Counter = Counter()
        for d in corpus_tokens:
            df.update(set(d))
        if self.smooth_idf:  # sklearn: idf = ln((1 + n) / (1 + df)) + 1
            self.idf = {t: math.log((1 + n) / (1 + f)) + 1.0 for t, f in df.items()}
        else:  # idf = ln(n / df) + 1
            self.idf = {t: math.log(n / f) + 1.0 for t, f in df.items()}
        self.docs = [self._vector(d) for d in corpus_tokens]
        self.n = n
        return self

    @property
    def vocabulary_size(self) -> int:
        return len(self.idf)

    def get_scores(self, query_tokens: Sequence[str]) -> np.ndarray:
        q = self._vector(query_tokens)
        return np.array([sum(w * d.get(t, 0.0) for t, w in q.items()) for d in self.docs], dtype=np.float64)

    def matching(self, query_tokens: Sequence[str]) -> np.ndarray:
        q = {t for t in query_tokens if t in self.idf}
        return np.array([bool(q & d.keys()) for d in self.docs], dtype=bool)


# ---------------------------------------------------------------------------------------- comparisons
def expected_topk(ref_scores: np.ndarray, matching: np.ndarray, k: int) -> np.ndarray:
    """Indices of the top-k matching documents by (score descending, document index ascending)."""
    cand = np.flatnonzero(matching)
    scores = np.asarray(ref_scores, dtype=np.float64)[cand]
    order = cand[np.lexsort((cand, -scores))]  # primary key: score descending; then index ascending
    return order[:k].astype(np.int64)


def assert_row_matches(indices, scores, ref_scores, matching, k, rtol=1e-5, what=""):
    """Check one row of a top-k result against reference scores of every document.

    * exactly min(k, #matching) documents are returned, then padding (-1, -inf);
    * the returned documents are distinct and all match the query;
    * the returned scores equal the reference scores of that rank (rtol, plus a tiny atol);
    * rankings are identical modulo ties: the document returned at rank r has (up to the tolerance)
      the reference score of rank r, so only documents with (numerically) tied scores may be permuted;
    * returned scores are non-increasing.
    """
    indices = np.asarray(indices)
    scores = np.asarray(scores)
    ref_scores = np.asarray(ref_scores, dtype=np.float64)
    assert indices.shape == (k,) and scores.shape == (k,), (indices.shape, scores.shape, k)
    n_match = int(np.count_nonzero(matching))
    m = min(k, n_match)
    pre = f"{what}: " if what else ""
    assert np.all(indices[m:] == -1), f"{pre}expected {m} hits then -1 padding, got {indices.tolist()}"
    assert np.all(np.isneginf(scores[m:])), f"{pre}padding scores must be -inf, got {scores[m:].tolist()}"
    got = indices[:m]
    assert np.all(got >= 0), f"{pre}expected {m} hits, got {indices.tolist()} (n_match={n_match})"
    assert len(set(got.tolist())) == m, f"{pre}duplicate documents in {got.tolist()}"
    assert np.all(matching[got]), f"{pre}non-matching document returned: {got.tolist()}"
    exp = expected_topk(ref_scores, matching, k)
    exp_scores = ref_scores[exp]
    scale = float(np.max(np.abs(ref_scores))) if ref_scores.size else 1.0
    atol = 1e-6 * max(scale, 1e-30)
    np.testing.assert_allclose(
        scores[:m].astype(np.float64), exp_scores, rtol=rtol, atol=atol,
        err_msg=f"{pre}scores of the top-{k} differ from the reference",
    )
    np.testing.assert_allclose(
        ref_scores[got], exp_scores, rtol=rtol, atol=atol,
        err_msg=f"{pre}ranking differs beyond ties: got {got.tolist()}, expected {exp.tolist()}",
    )
    assert np.all(np.diff(scores[:m].astype(np.float64)) <= 0), f"{pre}scores not sorted: {scores.tolist()}"


def assert_hits_match(hits, ref_score_rows, matching_rows, k, rtol=1e-5, what=""):
    """``k`` is capped at the number of documents (the width of the reference rows)."""
    if len(ref_score_rows):
        k = min(k, len(ref_score_rows[0]))
    assert hits.indices.shape == (len(ref_score_rows), k)
    for qi, (ref, mt) in enumerate(zip(ref_score_rows, matching_rows)):
        assert_row_matches(hits.indices[qi], hits.scores[qi], ref, mt, k, rtol=rtol, what=f"{what} query {qi}")


def assert_scores_close(got, ref, rtol=1e-5, what=""):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    scale = float(np.max(np.abs(ref))) if ref.size else 1.0
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=1e-6 * max(scale, 1e-30), err_msg=what)


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values as a float32 / float16 / bfloat16 store holds them (round to nearest even), back in
    float32 (the GPU dense store's rows)."""
    x = np.asarray(x, np.float32)
    if dtype == "float32":
        return x.copy()
    if dtype == "float16":
        return x.astype(np.float16).astype(np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    return u.view(np.float32)
