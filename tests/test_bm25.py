"""rc.BM25 against the pure-Python oracle (reference.py) and against bm25s given the same tokens."""
from __future__ import annotations

import functools

import numpy as np
import pytest

import ragcore as rc
from conftest import make_corpus
from reference import (
    METHODS,
    RefBM25,
    analyze,
    assert_hits_match,
    assert_row_matches,
    assert_scores_close,
)

PARAMS = [
    dict(k1=1.5, b=0.75, delta=0.5),
    dict(k1=0.9, b=0.4, delta=1.0),
    dict(k1=2.0, b=1.0, delta=0.0),
    dict(k1=1.2, b=0.0, delta=0.25),
]
PARAM_IDS = ["default", "k0.9-b0.4-d1", "k2-b1-d0", "k1.2-b0"]


@functools.lru_cache(maxsize=None)
def _ref(n_docs: int, method: str, k1: float, b: float, delta: float):
    c = make_corpus(n_docs, seed=4242 + n_docs)
    ref = RefBM25(k1=k1, b=b, method=method, delta=delta).index(c.tokens)
    scores = [ref.get_scores(q) for q in c.queries]
    matching = [ref.matching(q) for q in c.queries]
    return ref, scores, matching


def ref_for(c, method, p):
    return _ref(len(c), method, p["k1"], p["b"], p["delta"])


# ------------------------------------------------------------------------------ vs the python oracle
@pytest.mark.parametrize("params", PARAMS, ids=PARAM_IDS)
@pytest.mark.parametrize("method", METHODS)
def test_get_scores_vs_reference(corpus, method, params):
    bm25 = rc.BM25(method=method, **params).index(corpus.tokens)
    ref, scores, _ = ref_for(corpus, method, params)
    for q, expected in zip(corpus.queries, scores):
        got = bm25.get_scores(q)
        assert got.dtype == np.float32 and got.shape == (len(corpus),)
        assert_scores_close(got, expected, what=f"{method} {params} query {q}")


@pytest.mark.parametrize("params", PARAMS, ids=PARAM_IDS)
@pytest.mark.parametrize("method", METHODS)
def test_search_vs_reference(corpus, method, params):
    bm25 = rc.BM25(method=method, **params).index(corpus.tokens)
    _, scores, matching = ref_for(corpus, method, params)
    for k in sorted({1, 10, len(corpus), len(corpus) + 3}):
        hits = bm25.search(corpus.queries, k=k)
        assert_hits_match(hits, scores, matching, k, what=f"{method} {params} k={k}")


@pytest.mark.parametrize("method", METHODS)
def test_default_parameters_are_lucene_1_5_0_75(corpus97, method):
    c = corpus97
    bm25 = rc.BM25().index(c.tokens)
    ref = RefBM25().index(c.tokens)  # k1=1.5, b=0.75, lucene
    for q in c.queries:
        assert_scores_close(bm25.get_scores(q), ref.get_scores(q))
    if method != "lucene":  # the variants really differ on this corpus (guards against ignoring `method`)
        other = rc.BM25(method=method).index(c.tokens)
        assert any(not np.allclose(other.get_scores(q), bm25.get_scores(q), rtol=1e-3) for q in c.queries)


@pytest.mark.parametrize("method", ["lucene", "bm25l"])
def test_duplicate_query_tokens_count_twice(corpus97, method):
    c = corpus97
    bm25 = rc.BM25(method=method).index(c.tokens)
    w = c.vocab[len(c.vocab) // 2]
    np.testing.assert_allclose(bm25.get_scores([w, w]), 2 * bm25.get_scores([w]).astype(np.float64), rtol=1e-5)
    np.testing.assert_allclose(bm25.get_scores(f"{w} {w}"), 2 * bm25.get_scores(w).astype(np.float64), rtol=1e-5)


def test_bm25l_bm25plus_nonoccurrence_for_non_matching_docs(corpus97):
    """get_scores gives non-matching docs the constant non-occurrence part (like bm25s)."""
    c = corpus97
    for method in ("bm25l", "bm25+"):
        bm25 = rc.BM25(method=method).index(c.tokens)
        ref = RefBM25(method=method).index(c.tokens)
        q = [c.vocab[-1], c.vocab[-2]]
        s = bm25.get_scores(q)
        non = ~ref.matching(q)
        assert non.any()
        const = ref.get_scores(q)[non]
        assert np.all(const > 0) and np.ptp(const) == 0
        np.testing.assert_allclose(s[non], const, rtol=1e-5)
        # but search only returns matching documents
        hits = bm25.search([q], k=len(c))
        assert set(hits.indices[0][hits.indices[0] >= 0].tolist()) == set(np.flatnonzero(~non).tolist())


# ---------------------------------------------------------------------------------------- vs bm25s
@pytest.fixture(scope="module")
def bm25s():
    return pytest.importorskip("bm25s")


def _bm25s_scores(peer, q):
    return peer.get_scores(list(q)).astype(np.float64)


@pytest.mark.parametrize("params", PARAMS[:2], ids=PARAM_IDS[:2])
@pytest.mark.parametrize("method", METHODS)
def test_vs_bm25s_same_tokens(corpus, method, params, bm25s):
    peer = bm25s.BM25(method=method, **params)
    peer.index(corpus.tokens, show_progress=False)
    bm25 = rc.BM25(method=method, **params).index(corpus.tokens)
    ref, _, matching = ref_for(corpus, method, params)
    assert bm25.vocabulary_size == len(peer.vocab_dict) - ("" in peer.vocab_dict)
    peer_scores = [_bm25s_scores(peer, q) for q in corpus.queries]
    for q, ps in zip(corpus.queries, peer_scores):
        assert_scores_close(bm25.get_scores(q), ps, what=f"{method} {q}")
    for k in (1, 10, len(corpus) + 1):
        hits = bm25.search(corpus.queries, k=k)
        assert_hits_match(hits, peer_scores, matching, k, what=f"bm25s {method} k={k}")


@functools.lru_cache(maxsize=None)
def _analysed(name, texts, queries):
    """Reference analysis (regex, english stopwords, PyStemmer english), stemming each word once."""
    import Stemmer

    stem = Stemmer.Stemmer("english")
    cache = {}

    def run(t):
        out = []
        for w in analyze(t, stopwords="english"):
            if w not in cache:
                cache[w] = stem.stemWord(w)
            out.append(cache[w])
        return out

    return [run(t) for t in texts], [run(q) for q in queries]


@functools.lru_cache(maxsize=None)
def _matching(name, texts, queries):
    """Per query, the documents holding at least one of its (analysed) terms."""
    doc_tokens, query_tokens = _analysed(name, texts, queries)
    postings = {}
    for i, d in enumerate(doc_tokens):
        for t in set(d):
            postings.setdefault(t, []).append(i)
    out = []
    for q in query_tokens:
        m = np.zeros(len(doc_tokens), dtype=bool)
        for t in set(q):
            m[postings.get(t, [])] = True
        out.append(m)
    return out


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.requires("Stemmer")
def test_shared_data_vs_bm25s(beir, method, bm25s):
    doc_tokens, query_tokens = _analysed(beir.name, tuple(beir.texts), tuple(beir.queries))
    peer = bm25s.BM25(method=method)
    peer.index(doc_tokens, show_progress=False)
    bm25 = rc.BM25(method=method, analyzer=rc.Analyzer(stopwords="english", stemmer="english"))
    bm25.index(beir.texts, ids=beir.doc_ids)
    assert len(bm25) == len(beir.texts)
    assert bm25.vocabulary_size == len({t for d in doc_tokens for t in d})
    peer_scores = [_bm25s_scores(peer, q) if q else np.zeros(len(doc_tokens)) for q in query_tokens]
    matching = _matching(beir.name, tuple(beir.texts), tuple(beir.queries))
    for k in (10, 100):
        hits = bm25.search(beir.queries, k=k)  # raw text queries, analysed by ragcore
        assert_hits_match(hits, peer_scores, matching, k, what=f"{beir.name} {method} k={k}")
        ids = np.asarray(beir.doc_ids, dtype=object)
        mask = hits.indices >= 0
        assert np.array_equal(hits.ids[mask], ids[hits.indices[mask]])
    for qt, qtoks, ps in list(zip(beir.queries, query_tokens, peer_scores))[:10]:
        assert_scores_close(bm25.get_scores(qt), ps, what=f"{beir.name} {method} {qt!r}")
        assert_scores_close(bm25.get_scores(qtoks), ps, what=f"{beir.name} {method} {qtoks!r}")


# ------------------------------------------------------------------------------ input forms & state
@pytest.mark.parametrize("method", ["lucene", "bm25+"])
def test_pretokenized_equals_text_input(corpus, method):
    a = rc.BM25(method=method).index(corpus.tokens)
    b = rc.BM25(method=method).index(corpus.texts)
    assert a.vocabulary_size == b.vocabulary_size and len(a) == len(b)
    for q, qt in zip(corpus.queries, corpus.query_texts):
        np.testing.assert_array_equal(a.get_scores(q), b.get_scores(qt))
    k = min(10, len(corpus))
    h1 = a.search(corpus.queries, k=k)
    for h2 in (b.search(corpus.query_texts, k=k), b.search(corpus.queries, k=k), a.search(corpus.query_texts, k=k)):
        np.testing.assert_array_equal(h1.indices, h2.indices)
        np.testing.assert_array_equal(h1.scores, h2.scores)


@pytest.mark.requires("Stemmer")
def test_pretokenized_tokens_taken_as_is():
    docs = [["The", "A", "x", "Running"], ["the", "running", "xy"], ["zz"]]
    bm25 = rc.BM25(analyzer=rc.Analyzer(stopwords="english", stemmer="english")).index(docs)
    assert bm25.vocabulary_size == 8
    h = bm25.search([["The"], ["x"], ["Running"], ["running"]], k=3)
    assert h.indices[:, 0].tolist() == [0, 0, 0, 1]
    assert (h.indices[:, 1:] == -1).all()
    # a text query is analysed: "The" is a stopword, "Running" -> "run" which no document holds
    h = bm25.search(["The Running"], k=3)
    assert (h.indices == -1).all()


def test_generator_input_and_small_batches_equal_list_input(corpus1000):
    c = corpus1000
    a = rc.BM25().index(c.texts)
    b = rc.BM25().index((t for t in c.texts), batch_size=7)  # many batches, a generator
    d = rc.BM25().index(iter(c.tokens), batch_size=1)
    k = 25
    ha = a.search(c.query_texts, k=k)
    for other in (b, d):
        assert len(other) == len(c) and other.vocabulary_size == a.vocabulary_size
        hb = other.search(c.query_texts, k=k)
        np.testing.assert_array_equal(ha.indices, hb.indices)
        np.testing.assert_allclose(ha.scores, hb.scores, rtol=1e-6)


def test_index_threads_do_not_change_scores(corpus1000):
    c = corpus1000
    a = rc.BM25().index(c.texts, threads=1)
    b = rc.BM25().index(c.texts, threads=2, batch_size=64)
    for q in c.query_texts:
        np.testing.assert_array_equal(a.get_scores(q), b.get_scores(q))


@pytest.mark.parametrize("kind", ["str", "int", "tuple"])
def test_ids_round_trip(corpus97, kind):
    c = corpus97
    n = len(c)
    if kind == "str":
        ids = [f"doc-{i * 7 % n}-{i}" for i in range(n)]
    elif kind == "int":
        ids = [10_000 - 3 * i for i in range(n)]
    else:
        ids = tuple(f"t{i}" for i in range(n))
    bm25 = rc.BM25().index(c.texts, ids=ids)
    assert list(bm25.ids) == list(ids)
    k = n + 2
    hits = bm25.search(c.query_texts, k=k)
    assert hits.ids is not None and hits.ids.shape == (len(c.queries), n) and hits.ids.dtype == object
    for qi in range(len(c.queries)):
        for j in range(n):
            i = hits.indices[qi, j]
            if i < 0:
                assert hits.ids[qi, j] is None
            else:
                assert hits.ids[qi, j] == ids[i]
                if kind != "int":
                    assert isinstance(hits.ids[qi, j], str)


def test_no_ids_gives_none(corpus97):
    bm25 = rc.BM25().index(corpus97.texts)
    assert bm25.ids is None
    assert bm25.search(corpus97.query_texts[0], k=3).ids is None


def test_index_replaces_previous_index(corpus97, corpus1000):
    a, b = corpus1000, corpus97
    bm25 = rc.BM25(method="bm25l").index(a.texts, ids=[f"a{i}" for i in range(len(a))])
    bm25.index(b.texts)
    fresh = rc.BM25(method="bm25l").index(b.texts)
    assert len(bm25) == len(b)
    assert bm25.vocabulary_size == fresh.vocabulary_size == len(set(b.vocab))
    assert bm25.ids is None
    h1, h2 = bm25.search(b.query_texts, k=5), fresh.search(b.query_texts, k=5)
    assert h1.ids is None
    np.testing.assert_array_equal(h1.indices, h2.indices)
    np.testing.assert_array_equal(h1.scores, h2.scores)
    for q in b.query_texts:
        np.testing.assert_array_equal(bm25.get_scores(q), fresh.get_scores(q))
    # a word only in the first corpus is now unknown
    only_a = sorted(set(a.vocab) - set(b.vocab))[0]
    assert (bm25.search(only_a, k=3).indices == -1).all()


def test_len_vocabulary_size(corpus):
    bm25 = rc.BM25().index(corpus.tokens)
    assert len(bm25) == len(corpus)
    assert bm25.vocabulary_size == len({t for d in corpus.tokens for t in d})


def test_one_document_corpus():
    bm25 = rc.BM25(method="lucene").index(["solitary document here"])
    h = bm25.search(["document", "absent"], k=2)  # k is capped at the collection size
    assert h.indices.tolist() == [[0], [-1]]
    ref = RefBM25().index([["solitary", "document", "here"]])
    assert_row_matches(h.indices[0], h.scores[0], ref.get_scores(["document"]), np.array([True]), 1)
