"""Top-k search invariants (hypothesis) for BM25 and TF-IDF: order, ties, padding, filters, threads."""
from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ragcore as rc
from reference import METHODS, RefBM25, RefTfIdf, assert_hits_match

WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta"]
UNKNOWN = "unknownzz"
KINDS = list(METHODS) + ["tfidf", "tfidf-sublinear"]


def make(kind, **kw):
    if kind == "tfidf":
        return rc.TfIdf(**kw), RefTfIdf()
    if kind == "tfidf-sublinear":
        return rc.TfIdf(sublinear_tf=True, **kw), RefTfIdf(sublinear_tf=True)
    return rc.BM25(method=kind, **kw), RefBM25(method=kind)


@st.composite
def corpora(draw, max_docs=40):
    """Documents drawn from a small pool, so exact duplicates (exact score ties) are common."""
    doc = st.lists(st.sampled_from(WORDS), max_size=6)
    pool = draw(st.lists(doc, min_size=1, max_size=6))
    pool[0] = pool[0] or [WORDS[0]]  # at least one non-empty document: average length > 0
    picks = draw(st.lists(st.integers(0, len(pool) - 1), min_size=1, max_size=max_docs))
    docs = [list(pool[0])] + [list(pool[i]) for i in picks[1:]]
    return docs


queries_st = st.lists(st.lists(st.sampled_from(WORDS + [UNKNOWN]), max_size=4), min_size=1, max_size=5)


def check_own_invariants(hits, docs, n_q, k, allowed=None):
    """Invariants of a top-k result that need no reference scores (``allowed``: the filter mask)."""
    k = min(k, len(docs))  # k is capped at the collection size
    assert hits.indices.shape == (n_q, k) and hits.scores.shape == (n_q, k)
    assert hits.indices.dtype == np.int64 and hits.scores.dtype == np.float32
    assert hits.indices.flags.c_contiguous and hits.scores.flags.c_contiguous
    keys = [tuple(sorted(Counter(d).items())) for d in docs]  # identical bags of words score identically
    for qi in range(n_q):
        idx, sc = hits.indices[qi], hits.scores[qi]
        valid = idx >= 0
        m = int(valid.sum())
        assert valid[:m].all() and not valid[m:].any(), f"-1 padding must be at the end: {idx.tolist()}"
        assert np.isneginf(sc[m:]).all() and np.isfinite(sc[:m]).all()
        assert np.all(np.diff(sc[:m]) <= 0), f"scores not non-increasing: {sc.tolist()}"
        for j in range(m - 1):
            if sc[j] == sc[j + 1]:
                assert idx[j] < idx[j + 1], f"tie not broken by lower doc index: {idx.tolist()} {sc.tolist()}"
        returned = idx[:m].tolist()
        pos = {d: p for p, d in enumerate(returned)}
        for g in returned:
            for d in range(g):
                if keys[d] == keys[g] and (allowed is None or allowed[d]):
                    assert d in pos and pos[d] < pos[g], (
                        f"doc {d} is an exact duplicate of doc {g} and has a lower index, so it must rank "
                        f"before it: {returned}")


@given(docs=corpora(), queries=queries_st, k=st.integers(1, 45), kind=st.sampled_from(KINDS))
def test_topk_invariants_and_reference(docs, queries, k, kind):
    eng, ref = make(kind)
    eng.index(docs)
    ref.index(docs)
    hits = eng.search(queries, k=k)
    check_own_invariants(hits, docs, len(queries), k)
    assert_hits_match(hits, [ref.get_scores(q) for q in queries], [ref.matching(q) for q in queries], k, what=kind)


@given(docs=corpora(), queries=queries_st, k=st.integers(1, 45), kind=st.sampled_from(KINDS))
def test_threads_and_batching_are_deterministic(docs, queries, k, kind):
    eng, _ = make(kind)
    eng.index(docs)
    base = eng.search(queries, k=k, threads=1)
    for other in (eng.search(queries, k=k, threads=2), eng.search(queries, k=k)):
        np.testing.assert_array_equal(base.indices, other.indices)
        np.testing.assert_array_equal(base.scores, other.scores)
    for qi, q in enumerate(queries):
        one = eng.search([q], k=k, threads=2)
        np.testing.assert_array_equal(one.indices[0], base.indices[qi])
        np.testing.assert_array_equal(one.scores[0], base.scores[qi])


@given(docs=corpora(), queries=queries_st, k=st.integers(1, 45), kind=st.sampled_from(KINDS), data=st.data())
def test_filter_equals_brute_force(docs, queries, k, kind, data):
    n = len(docs)
    allowed = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    with_ids = data.draw(st.booleans())
    ids = [f"id{(i * 13) % 101}-{i}" for i in range(n)] if with_ids else None
    eng, ref = make(kind)
    eng.index(docs, ids=ids)
    ref.index(docs)
    scores = [ref.get_scores(q) for q in queries]
    matching = [ref.matching(q) & allowed for q in queries]
    allowed_list = [ids[i] for i in np.flatnonzero(allowed)] if with_ids else np.flatnonzero(allowed).tolist()
    data.draw(st.randoms()).shuffle(allowed_list)  # order of the id list must not matter
    for flt in (allowed, allowed_list):
        hits = eng.search(queries, k=k, filter=flt)
        assert_hits_match(hits, scores, matching, k, what=f"{kind} filter={type(flt).__name__}")
        check_own_invariants(hits, docs, len(queries), k, allowed)
        if with_ids:
            m = hits.indices >= 0
            assert all(hits.ids[m][j] == ids[i] for j, i in enumerate(hits.indices[m]))


def test_all_false_filter_gives_padding():
    bm25 = rc.BM25().index([["alpha"], ["alpha", "beta"]])
    hits = bm25.search(["alpha"], k=3, filter=np.zeros(2, dtype=bool))
    assert (hits.indices == -1).all() and np.isneginf(hits.scores).all()
    hits = bm25.search(["alpha"], k=3, filter=[])
    assert (hits.indices == -1).all()


def test_exact_ties_across_the_k_boundary():
    docs = [["beta"]] * 40 + [["alpha", "beta"]] * 12 + [["alpha", "alpha", "beta"]] * 2 + [["beta"]] * 3
    for kind in KINDS:
        eng, ref = make(kind)
        eng.index(docs)
        ref.index(docs)
        hits = eng.search([["alpha"]], k=10)
        # two docs with tf=2 first, then the 12 tied tf=1 docs by increasing index, cut at k
        assert hits.indices[0].tolist() == [52, 53] + list(range(40, 48)), kind
        assert hits.scores[0, 2] == hits.scores[0, 9] and hits.scores[0, 1] > hits.scores[0, 2], kind
        # 'beta' is in every document: ties broken by index, zero scores (robertson idf clamp) still returned
        for k in (5, 57, 60):
            hits = eng.search("beta", k=k)
            check_own_invariants(hits, docs, 1, k)
            assert_hits_match(hits, [ref.get_scores(["beta"])], [ref.matching(["beta"])], k, what=kind)


@pytest.mark.parametrize("kind", KINDS)
def test_k_larger_than_n_is_capped(kind):
    eng, _ = make(kind)
    eng.index([["alpha", "beta"], ["beta"], ["gamma"]])
    assert eng.search([["beta"]], k=10**9).indices.shape == (1, 3)  # no 12 GB allocation
    hits = eng.search([["beta"], ["gamma", "alpha"]], k=7)
    assert hits.indices.shape == (2, 3)
    assert sorted(hits.indices[0, :2].tolist()) == [0, 1] and (hits.indices[0, 2:] == -1).all()
    assert sorted(hits.indices[1, :2].tolist()) == [0, 2] and (hits.indices[1, 2:] == -1).all()
    assert np.isneginf(hits.scores[:, 2:]).all() and np.isfinite(hits.scores[:, :2]).all()


@pytest.mark.parametrize("kind", KINDS)
def test_k_equals_one(kind, corpus97):
    eng, ref = make(kind)
    eng.index(corpus97.tokens)
    ref.index(corpus97.tokens)
    hits = eng.search(corpus97.queries, k=1)
    assert hits.indices.shape == (len(corpus97.queries), 1)
    assert_hits_match(hits, [ref.get_scores(q) for q in corpus97.queries],
                      [ref.matching(q) for q in corpus97.queries], 1)


@pytest.mark.parametrize("kind", KINDS)
def test_empty_and_unknown_queries_give_minus_one(kind):
    eng, _ = make(kind)
    eng.index(["alpha beta", "beta gamma", "gamma"])
    for q in ("", "   ", "x", "!!", "unknownzz", "unknownzz otherzz"):
        hits = eng.search(q, k=3)
        assert hits.indices.tolist() == [[-1, -1, -1]], q
        assert np.isneginf(hits.scores).all()
    hits = eng.search([[], [UNKNOWN], ["alpha"], ["unknownzz", "alpha"]], k=2)
    assert hits.indices.tolist() == [[-1, -1], [-1, -1], [0, -1], [0, -1]]
    hits = eng.search(["", "alpha"], k=2)
    assert hits.indices.tolist() == [[-1, -1], [0, -1]]


@pytest.mark.parametrize("kind", KINDS)
def test_query_forms_and_shapes(kind, corpus97):
    eng, _ = make(kind)
    eng.index(corpus97.texts)
    q = corpus97.query_texts[2]
    a = eng.search(q, k=4)
    b = eng.search([q], k=4)
    c = eng.search([q.split()], k=4)
    for h in (a, b, c):
        assert h.indices.shape == (1, 4) and h.scores.shape == (1, 4)
        assert h.indices.dtype == np.int64 and h.scores.dtype == np.float32
        np.testing.assert_array_equal(h.indices, a.indices)
        np.testing.assert_array_equal(h.scores, a.scores)
    many = eng.search(corpus97.query_texts, k=3)
    assert many.indices.shape == (len(corpus97.query_texts), 3)
    assert many.scores.shape == (len(corpus97.query_texts), 3)


def test_empty_batch_gives_empty_result():
    bm25 = rc.BM25().index(["alpha beta", "beta"])
    hits = bm25.search([], k=3)  # k capped at the 2 documents
    assert hits.indices.shape == (0, 2) and hits.scores.shape == (0, 2)


def test_large_index_single_query_threads_and_reference():
    """A larger index (where an engine may split one query over the collection or prune)."""
    rng = random.Random(7)
    vocab = [f"w{i}" for i in range(3000)]
    weights = [1.0 / (r + 1) for r in range(len(vocab))]
    docs = [rng.choices(vocab, weights=weights, k=rng.randint(1, 12)) for _ in range(20001)]
    queries = [["w0", "w1500"], ["w3", "w77", "w2999", "w1"], ["w12"], ["w0", "w1", "w2"], ["w2500", "w2501"]]
    for method in ("lucene", "bm25+"):
        bm25 = rc.BM25(method=method).index(docs)
        ref = RefBM25(method=method).index(docs)
        ref_scores = [ref.get_scores(q) for q in queries]
        ref_matching = [ref.matching(q) for q in queries]
        for k in (10, 100):
            single = [bm25.search([q], k=k, threads=t) for q in queries for t in (1, 2)]
            for a, b in zip(single[::2], single[1::2]):
                np.testing.assert_array_equal(a.indices, b.indices)
                np.testing.assert_array_equal(a.scores, b.scores)
            hits = bm25.search(queries, k=k, threads=2)
            assert_hits_match(hits, ref_scores, ref_matching, k, what=f"large {method} k={k}")


def test_concurrent_searches_from_python_threads(corpus1000):
    """The GIL is released around kernels: concurrent searches on one index must not share scratch state."""
    from concurrent.futures import ThreadPoolExecutor

    c = corpus1000
    for eng in (rc.BM25(method="bm25l").index(c.tokens), rc.TfIdf().index(c.tokens)):
        expected = [eng.search([q], k=20, threads=1) for q in c.queries]
        jobs = [(qi, t) for _ in range(6) for qi in range(len(c.queries)) for t in (1, 2)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda job: eng.search([c.queries[job[0]]], k=20, threads=job[1]), jobs))
        for (qi, _), h in zip(jobs, results):
            np.testing.assert_array_equal(h.indices, expected[qi].indices)
            np.testing.assert_array_equal(h.scores, expected[qi].scores)
