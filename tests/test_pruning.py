"""The pruned top-k path (MaxScore-style, phase B galloping lookups) against exhaustive scoring.

Queries mix rare and very common terms on a Zipf corpus large enough that the common terms'
posting lists dwarf the rare ones: that is when search() stops admitting new documents and only
looks the remaining terms up for surviving candidates. Exhaustive scores come from get_scores(),
which adds the same impacts in the same order, so scores must be bitwise equal; they are also
checked against the pure-Python reference.
"""
from __future__ import annotations

import numpy as np
import pytest

import ragcore as rc
from reference import METHODS, RefBM25, RefTfIdf, assert_hits_match


def zipf_corpus(n_docs, vocab, seed, mean_len=30):
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1) ** 1.1
    p /= p.sum()
    lens = rng.poisson(mean_len, n_docs)
    words = np.array([f"w{i}" for i in range(vocab)], dtype=object)
    flat = words[rng.choice(vocab, size=int(lens.sum()), p=p)].tolist()
    bounds = np.concatenate([[0], np.cumsum(lens)])
    return [flat[bounds[i]:bounds[i + 1]] for i in range(n_docs)], words.tolist()


def make_queries(words, rng, n):
    vocab = len(words)
    out = []
    for _ in range(n):
        common = rng.integers(0, 5, size=rng.integers(1, 4))            # very long lists
        rare = rng.integers(vocab // 4, vocab, size=rng.integers(1, 3))   # short lists
        q = [words[i] for i in np.concatenate([rare, common])]
        rng.shuffle(q)
        out.append(q)
    return out


def exhaustive_topk(scores, matched, k, allowed=None):
    ok = matched if allowed is None else matched & allowed
    cand = np.flatnonzero(ok)
    order = cand[np.lexsort((cand, -scores[cand].astype(np.float64)))][:k]
    idx = np.full(k, -1, np.int64)
    sc = np.full(k, -np.inf, np.float32)
    idx[: len(order)] = order
    sc[: len(order)] = scores[order]
    return idx, sc


@pytest.mark.parametrize("kind", list(METHODS) + ["tfidf"])
@pytest.mark.parametrize("k", [1, 3, 10, 100])
def test_pruned_topk_equals_exhaustive(kind, k):
    docs, words = zipf_corpus(1501, 400, seed=7)
    rng = np.random.default_rng(k)
    queries = make_queries(words, rng, 40)
    eng = rc.TfIdf() if kind == "tfidf" else rc.BM25(method=kind)
    eng.index(docs)
    sets = [set(d) for d in docs]
    allowed = rng.random(len(docs)) < 0.6
    for flt in (None, allowed):
        hits = eng.search(queries, k=k, filter=flt, threads=2)
        for qi, q in enumerate(queries):
            scores = eng.get_scores(q)
            matched = np.array([bool(s.intersection(q)) for s in sets])
            idx, sc = exhaustive_topk(scores, matched, k, flt)
            np.testing.assert_array_equal(hits.indices[qi], idx, err_msg=f"{kind} k={k} query {q}")
            np.testing.assert_array_equal(hits.scores[qi], sc)
    ref = RefTfIdf() if kind == "tfidf" else RefBM25(method=kind)
    ref.index(docs)
    hits = eng.search(queries[:10], k=k)
    assert_hits_match(hits, [ref.get_scores(q) for q in queries[:10]], [ref.matching(q) for q in queries[:10]], k,
                      what=kind)


@pytest.mark.parametrize("kind", ["lucene", "bm25+", "tfidf"])
def test_pruned_topk_across_blocks(kind):
    """More than one 32768-document block: thresholds carry over from block to block."""
    docs, words = zipf_corpus(70001, 300, seed=11, mean_len=6)
    rng = np.random.default_rng(3)
    queries = make_queries(words, rng, 25)
    eng = rc.TfIdf() if kind == "tfidf" else rc.BM25(method=kind)
    eng.index(docs)
    sets = [set(d) for d in docs]
    allowed = rng.random(len(docs)) < 0.5
    for k in (1, 10, 100):
        for flt in (None, allowed):
            hits = eng.search(queries, k=k, filter=flt, threads=1)
            for qi, q in enumerate(queries):
                # one query with two threads splits the blocks between them: same result
                one = eng.search([q], k=k, filter=flt, threads=2)
                np.testing.assert_array_equal(one.indices[0], hits.indices[qi])
                np.testing.assert_array_equal(one.scores[0], hits.scores[qi])
                qs = set(q)
                matched = np.array([not s.isdisjoint(qs) for s in sets])
                idx, sc = exhaustive_topk(eng.get_scores(q), matched, k, flt)
                np.testing.assert_array_equal(hits.indices[qi], idx, err_msg=f"{kind} k={k} query {q}")
                np.testing.assert_array_equal(hits.scores[qi], sc)
