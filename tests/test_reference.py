"""Self-checks of the pure-Python oracles in reference.py against bm25s, scikit-learn and PyStemmer.

These do not import ragcore: if one fails, the oracle (not the engine) is wrong.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import make_corpus
from reference import (
    METHODS,
    STOPWORDS_EN,
    RefBM25,
    RefTfIdf,
    analyze,
    assert_row_matches,
    assert_scores_close,
    expected_topk,
    idf,
)


@pytest.fixture(scope="module")
def bm25s():
    return pytest.importorskip("bm25s")


def _as_row(ref_scores, matching, k):
    """Turn reference scores into a (indices, scores) top-k row with the engine's padding."""
    top = expected_topk(ref_scores, matching, k)
    pad = k - len(top)
    return (np.concatenate([top, np.full(pad, -1, np.int64)]),
            np.concatenate([ref_scores[top], np.full(pad, -np.inf)]).astype(np.float32))


def test_stopwords_are_lucene_33(bm25s):
    from bm25s.stopwords import STOPWORDS_EN as BM25S_EN

    assert len(STOPWORDS_EN) == 33
    assert STOPWORDS_EN == frozenset(BM25S_EN)


@pytest.mark.parametrize("n,df", [(10, 1), (10, 5), (10, 6), (10, 10), (1, 1), (3, 2)])
def test_idf_formulas(n, df):
    assert idf("lucene", df, n) == pytest.approx(math.log(1 + (n - df + 0.5) / (df + 0.5)))
    assert idf("robertson", df, n) == pytest.approx(max(0.0, math.log((n - df + 0.5) / (df + 0.5))))
    assert idf("atire", df, n) == pytest.approx(math.log(n / df))
    assert idf("bm25l", df, n) == pytest.approx(math.log((n + 1) / (df + 0.5)))
    assert idf("bm25+", df, n) == pytest.approx(math.log((n + 1) / df))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n_docs", [1, 3, 97, 1000])
@pytest.mark.parametrize("params", [dict(k1=1.5, b=0.75, delta=0.5), dict(k1=0.9, b=0.4, delta=1.0)])
def test_ref_bm25_equals_bm25s(method, n_docs, params, bm25s):
    c = make_corpus(n_docs, seed=4242 + n_docs)
    ref = RefBM25(method=method, **params).index(c.tokens)
    peer = bm25s.BM25(method=method, **params)
    peer.index(c.tokens, show_progress=False)
    assert ref.vocabulary_size == len({t for d in c.tokens for t in d})
    for q in c.queries:
        r = ref.get_scores(q)
        p = peer.get_scores(q)
        assert_scores_close(r, p, rtol=1e-5, what=f"{method} {q}")
        # the comparison helper accepts the oracle's own top-k against bm25s's scores
        idx, sc = _as_row(r, ref.matching(q), 10)
        assert_row_matches(idx, sc, p, ref.matching(q), 10, what=f"{method} {q}")


def test_duplicate_query_tokens_count_twice():
    c = make_corpus(97, seed=1)
    for method in METHODS:
        ref = RefBM25(method=method).index(c.tokens)
        w = c.vocab[3]
        np.testing.assert_allclose(ref.get_scores([w, w]), 2 * ref.get_scores([w]))


def test_row_helper_detects_wrong_rankings():
    ref = np.array([1.0, 3.0, 2.0, 2.0, 0.0])
    matching = np.array([True, True, True, True, False])
    with pytest.raises(AssertionError):  # only 4 matching docs: must be 4 hits
        assert_row_matches([1, 2, 3, -1], np.array([3, 2, 2, -np.inf], np.float32), ref, matching, 4)
    assert_row_matches([1, 3, 2, 0], np.array([3, 2, 2, 1], np.float32), ref, matching, 4)  # tie permuted: ok
    with pytest.raises(AssertionError):  # wrong order beyond ties
        assert_row_matches([2, 1, 3, 0], np.array([3, 2, 2, 1], np.float32), ref, matching, 4)
    with pytest.raises(AssertionError):  # non-matching doc returned
        assert_row_matches([1, 2, 3, 4, 0], np.array([3, 2, 2, 1, 0], np.float32), ref, matching, 5)
    with pytest.raises(AssertionError):  # bad padding
        assert_row_matches([1, 2, 3, 0, -1], np.array([3, 2, 2, 1, 0], np.float32), ref, matching, 5)
    with pytest.raises(AssertionError):  # wrong scores
        assert_row_matches([1, 2], np.array([3, 2.1], np.float32), ref, matching, 2)


@pytest.mark.parametrize("sublinear_tf", [False, True])
@pytest.mark.parametrize("smooth_idf", [True, False])
@pytest.mark.parametrize("n_docs", [1, 3, 97, 1000])
@pytest.mark.requires("sklearn")
def test_ref_tfidf_equals_sklearn(sublinear_tf, smooth_idf, n_docs):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    c = make_corpus(n_docs, seed=4242 + n_docs)
    vec = TfidfVectorizer(analyzer=lambda toks: toks, sublinear_tf=sublinear_tf, smooth_idf=smooth_idf)
    D = vec.fit_transform(c.tokens)
    Q = vec.transform(c.queries)
    expected = cosine_similarity(Q, D)
    ref = RefTfIdf(sublinear_tf=sublinear_tf, smooth_idf=smooth_idf).index(c.tokens)
    assert ref.vocabulary_size == len(vec.vocabulary_)
    for qi, q in enumerate(c.queries):
        assert_scores_close(ref.get_scores(q), expected[qi], rtol=1e-9)


@pytest.mark.requires("Stemmer")
def test_ref_analyzer_equals_bm25s_tokenize_and_pystemmer(bm25s):
    import Stemmer

    texts = ["The Quick brown foxes are JUMPING over the lazy dogs; it's 2024 and naïve café-goers run.",
             "Running runners ran; a stemmer's test: generously, generations, university"]
    stem = Stemmer.Stemmer("english")
    got = [analyze(t, stopwords="english", stemmer="english") for t in texts]
    peer = bm25s.tokenize(texts, stopwords="en", stemmer=stem, return_ids=False, show_progress=False)
    assert got == peer
    assert "the" not in got[0] and "jump" in got[0]
