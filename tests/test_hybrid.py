"""Hybrid fusion (RRF, weighted) against a pure-Python oracle, and DenseRetriever with fakes."""
from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

import ragcore
import ragcore.retrieval.hybrid as hybrid_mod
from ragcore import BM25, Hits, TfIdf
from ragcore.retrieval.hybrid import DenseRetriever, Hybrid, fuse

try:
    from hypothesis import given, strategies as st
except ImportError:  # pragma: no cover
    given = None


# ------------------------------------------------------------------------------------------- helpers
def make_hits(rows, ids=None, k=None):
    """``rows``: per query a list of (index, score), best first -> Hits padded to ``k``."""
    k = max([len(r) for r in rows] + [0]) if k is None else k
    idx = np.full((len(rows), k), -1, np.int64)
    sc = np.full((len(rows), k), -np.inf, np.float32)
    for q, row in enumerate(rows):
        for c, (i, s) in enumerate(row):
            idx[q, c], sc[q, c] = i, s
    table = None
    if ids is not None:
        table = np.empty(len(ids), dtype=object)
        table[:] = list(ids)
    return Hits(idx, sc, table)


def _norm_oracle(scores, how):
    if how == "none":
        return list(scores)
    if how == "minmax":
        lo, hi = min(scores), max(scores)
        return [(s - lo) / (hi - lo) if hi - lo > 0 else 1.0 for s in scores]
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    return [(s - mean) / std if std > 0 else 0.0 for s in scores]


def oracle(hits_list, k, fusion="rrf", weights=None, rrf_k=60.0, normalization="minmax"):
    """Dict-based fusion, one query at a time -> per query (all fused scores, top-k [(index, score)])."""
    weights = [1.0] * len(hits_list) if weights is None else [float(w) for w in weights]
    out = []
    for q in range(hits_list[0].indices.shape[0]):
        fused = {}
        for r, h in enumerate(hits_list):
            row = [(int(i), float(s)) for i, s in zip(h.indices[q], h.scores[q]) if i >= 0]
            if fusion == "rrf":
                contrib = [(i, weights[r] / (rrf_k + rank)) for rank, (i, _) in enumerate(row, start=1)]
            else:
                norm = _norm_oracle([s for _, s in row], normalization) if row else []
                contrib = [(i, weights[r] * v) for (i, _), v in zip(row, norm)]
            for i, c in contrib:
                fused[i] = fused.get(i, 0.0) + c
        ranked = sorted(fused.items(), key=lambda t: (-np.float32(t[1]), t[0]))[:k]
        out.append((fused, ranked))
    return out


def check_invariants(h, k):
    assert h.indices.dtype == np.int64 and h.scores.dtype == np.float32
    assert h.indices.shape == h.scores.shape and h.indices.shape[1] == k
    for idx, sc in zip(h.indices, h.scores):
        n = int((idx >= 0).sum())
        assert (idx[:n] >= 0).all() and (idx[n:] == -1).all(), "padding only at the end"
        assert np.isneginf(sc[n:]).all() and np.isfinite(sc[:n]).all()
        assert len(set(idx[:n].tolist())) == n, "no document twice"
        for a in range(n - 1):
            assert sc[a] >= sc[a + 1]
            if sc[a] == sc[a + 1]:
                assert idx[a] < idx[a + 1], "ties go to the lower index"


def assert_matches(got, expected, k, exact=True):
    check_invariants(got, k)
    assert got.indices.shape[0] == len(expected)
    for q, (fused, ranked) in enumerate(expected):
        n = len(ranked)
        assert (got.indices[q, n:] == -1).all()
        want_scores = np.array([s for _, s in ranked], np.float32)
        if exact:
            assert got.indices[q, :n].tolist() == [i for i, _ in ranked]
            np.testing.assert_array_equal(got.scores[q, :n], want_scores)
        else:  # z-scores: sums in another order may differ in the last bits, so near-ties may swap
            np.testing.assert_allclose(got.scores[q, :n], want_scores, rtol=1e-5, atol=1e-5)
            for pos, i in enumerate(got.indices[q, :n].tolist()):
                assert i in fused and abs(fused[i] - ranked[pos][1]) <= 1e-5 * max(1.0, abs(fused[i]))


# ------------------------------------------------------------------------------ hand-computed cases
def test_rrf_hand_computed():
    a = make_hits([[(7, 3.0), (2, 2.0), (5, 1.0)]])
    b = make_hits([[(5, 0.9), (9, 0.8), (7, 0.7)]])
    h = fuse([a, b], k=4)
    # 7: 1/61 + 1/63 and 5: 1/63 + 1/61 tie -> lower index first; 2 and 9: 1/62 each
    assert h.indices.tolist() == [[5, 7, 2, 9]]
    np.testing.assert_array_equal(h.scores, np.float32([[1 / 61 + 1 / 63, 1 / 61 + 1 / 63, 1 / 62, 1 / 62]]))
    assert h.scores.dtype == np.float32 and h.ids is None


def test_rrf_weights_and_constant():
    a = make_hits([[(0, 1.0), (1, 0.5)]])
    b = make_hits([[(1, 1.0), (0, 0.5)]])
    h = fuse([a, b], k=2, weights=[2, 1])
    assert h.indices.tolist() == [[0, 1]]
    np.testing.assert_allclose(h.scores[0], [2 / 61 + 1 / 62, 2 / 62 + 1 / 61], rtol=1e-7)
    h0 = fuse([a, b], k=2, rrf_k=0)
    np.testing.assert_allclose(h0.scores[0], [1 + 1 / 2, 1 + 1 / 2])
    assert h0.indices.tolist() == [[0, 1]]
    # a zero weight keeps that retriever's documents in the union, at 0 from it
    hz = fuse([a, make_hits([[(4, 1.0)]])], k=3, weights=[1, 0])
    assert hz.indices.tolist() == [[0, 1, 4]]
    assert hz.scores[0, 2] == 0


def test_weighted_minmax_hand_computed():
    a = make_hits([[(0, 10.0), (1, 5.0), (2, 0.0)]])
    b = make_hits([[(2, 1.0), (3, 0.5)]])
    h = fuse([a, b], k=5, fusion="weighted", weights=[0.5, 0.5])
    # a: 0 -> 1, 1 -> 0.5, 2 -> 0; b: 2 -> 1, 3 -> 0
    assert h.indices.tolist() == [[0, 2, 1, 3, -1]]
    np.testing.assert_array_equal(h.scores, np.float32([[0.5, 0.5, 0.25, 0.0, -np.inf]]))


def test_weighted_single_and_equal_scores_normalise_to_one():
    a = make_hits([[(3, 42.0)], [(1, 2.0), (0, 2.0)]])
    b = make_hits([[(1, 7.0), (3, 1.0)], [(2, -1.0)]])
    h = fuse([a, b], k=3, fusion="weighted")
    assert h.indices.tolist() == [[1, 3, -1], [0, 1, 2]]  # 3: 1 + 0, 1: 0 + 1 -> tie
    np.testing.assert_array_equal(h.scores, np.float32([[1.0, 1.0, -np.inf], [1.0, 1.0, 1.0]]))


def test_weighted_zscore_and_none():
    a = make_hits([[(0, 3.0), (1, 1.0)]])
    b = make_hits([[(1, 5.0), (2, 2.0), (0, -1.0)]])
    z = fuse([a, b], k=3, fusion="weighted", normalization="zscore")
    # a: +1, -1; b: mean 2, std sqrt(6): 1 -> 3/sqrt6, 2 -> 0, 0 -> -3/sqrt6
    r6 = 3 / math.sqrt(6)
    assert z.indices.tolist() == [[1, 2, 0]]
    np.testing.assert_allclose(z.scores[0], [r6 - 1, 0.0, 1 - r6], rtol=1e-6, atol=1e-7)
    raw = fuse([a, b], k=3, fusion="weighted", normalization="none", weights=[1, 2])
    assert raw.indices.tolist() == [[1, 2, 0]]
    np.testing.assert_array_equal(raw.scores[0], np.float32([11.0, 4.0, 1.0]))


def test_ties_go_to_lower_index():
    # every document ranked once at the same rank by one of three retrievers: all tie
    hs = [make_hits([[(d, 1.0)]]) for d in (9, 4, 6)]
    h = fuse(hs, k=3)
    assert h.indices.tolist() == [[4, 6, 9]]
    assert len(set(h.scores[0].tolist())) == 1
    hw = fuse(hs, k=2, fusion="weighted")
    assert hw.indices.tolist() == [[4, 6]]
    # negative zero and zero are the same score
    n = fuse([make_hits([[(5, -0.0)]]), make_hits([[(2, 0.0)]])], k=2, fusion="weighted", normalization="none")
    assert n.indices.tolist() == [[2, 5]]


def test_padding_and_k_beyond_union():
    a = make_hits([[(1, 2.0), (0, 1.0)], [], [(3, 1.0)]], k=4)
    b = make_hits([[(0, 5.0)], [], [(3, 1.0)]], k=2)
    h = fuse([a, b], k=6)
    assert h.indices.tolist() == [[0, 1, -1, -1, -1, -1], [-1] * 6, [3, -1, -1, -1, -1, -1]]
    assert np.isneginf(h.scores[0, 2:]).all() and np.isneginf(h.scores[1]).all()
    check_invariants(h, 6)
    # k larger than all the candidate columns together
    h1 = fuse([a, b], k=50)
    assert h1.indices.shape == (3, 50) and h1.indices[0, :2].tolist() == [0, 1]
    # a retriever with no columns at all, and no queries at all
    empty = Hits(np.empty((3, 0), np.int64), np.empty((3, 0), np.float32))
    assert fuse([empty], k=2).indices.tolist() == [[-1, -1]] * 3
    assert fuse([empty, b], k=1).indices.tolist() == [[0], [-1], [3]]
    none = Hits(np.empty((0, 5), np.int64), np.empty((0, 5), np.float32))
    assert fuse([none, none], k=4).indices.shape == (0, 4)


def test_k_truncates_and_partial_sort_agrees_with_full():
    rng = np.random.default_rng(3)
    hs = []
    for _ in range(3):
        rows = [[(int(i), float(s)) for i, s in zip(rng.permutation(40)[:25], np.sort(rng.integers(0, 5, 25))[::-1])]
                for _ in range(7)]
        hs.append(make_hits(rows))
    for fusion in ("rrf", "weighted"):
        full = fuse(hs, k=75, fusion=fusion)
        for k in (1, 3, 10, 39, 40):
            part = fuse(hs, k=k, fusion=fusion)
            np.testing.assert_array_equal(part.indices, full.indices[:, :k])
            np.testing.assert_array_equal(part.scores, full.scores[:, :k])


# ----------------------------------------------------------------------------- random, vs the oracle
if given is not None:
    @st.composite
    def hits_lists(draw):
        n_docs = draw(st.integers(1, 30))
        nq = draw(st.integers(0, 4))
        score = st.one_of(st.sampled_from([-2.0, -0.5, 0.0, 0.25, 1.0, 3.5]),
                          st.floats(-1e3, 1e3, allow_nan=False, width=32))
        out = []
        for _ in range(draw(st.integers(1, 4))):
            k = draw(st.integers(0, 12))
            rows = []
            for _ in range(nq):
                m = draw(st.integers(0, min(k, n_docs)))
                docs = draw(st.permutations(range(n_docs)))[:m]
                scores = sorted(draw(st.lists(score, min_size=m, max_size=m)), reverse=True)
                rows.append(list(zip(docs, scores)))
            out.append(make_hits(rows, k=k))
        return out

    weights_st = st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 0.3]), min_size=4, max_size=4).filter(any)

    @given(hits_lists(), st.integers(1, 15), st.sampled_from([0.0, 1.0, 2.5, 60.0]),
           st.one_of(st.none(), weights_st))
    def test_rrf_matches_oracle(hs, k, rrf_k, weights):
        weights = None if weights is None else weights[:len(hs)] if any(weights[:len(hs)]) else None
        got = fuse(hs, k=k, rrf_k=rrf_k, weights=weights)
        assert_matches(got, oracle(hs, k, "rrf", weights, rrf_k), k)

    @given(hits_lists(), st.integers(1, 15), st.sampled_from(["minmax", "none", "zscore"]),
           st.one_of(st.none(), weights_st))
    def test_weighted_matches_oracle(hs, k, normalization, weights):
        weights = None if weights is None else weights[:len(hs)] if any(weights[:len(hs)]) else None
        got = fuse(hs, k=k, fusion="weighted", weights=weights, normalization=normalization)
        want = oracle(hs, k, "weighted", weights, normalization=normalization)
        assert_matches(got, want, k, exact=normalization != "zscore")


@pytest.mark.parametrize("fusion", ["rrf", "weighted"])
def test_large_batch_matches_oracle(fusion):
    """1000 queries x depth 100 from three retrievers over 300 documents: many overlaps."""
    rng = np.random.default_rng(11)
    hs = []
    for _ in range(3):
        idx = np.argsort(rng.random((1000, 300)), axis=1)[:, :100].astype(np.int64)
        idx[rng.random(1000) < 0.1, 60:] = -1  # some short lists
        sc = -np.sort(-rng.integers(0, 50, (1000, 100)).astype(np.float32), axis=1)  # many ties
        sc[idx < 0] = -np.inf
        hs.append(Hits(idx, sc))
    got = fuse(hs, k=10, fusion=fusion, weights=[1, 0.5, 2])
    assert_matches(got, oracle(hs, 10, fusion, [1, 0.5, 2]), 10)


# ---------------------------------------------------------------------------------------------- ids
def test_ids_kept_and_checked():
    ids = ["a", "b", "c", "d"]
    a = make_hits([[(0, 1.0), (2, 0.5)]], ids=ids)
    b = make_hits([[(2, 1.0), (3, 0.5)]], ids=list(ids))  # equal table, another object
    h = fuse([a, b], k=3)
    assert h.ids.tolist() == [["c", "a", "d"]]
    # the first retriever that has ids gives the table
    h2 = fuse([make_hits([[(1, 1.0)]]), b], k=2)
    assert h2.ids.tolist() == [["b", "c"]]
    # the same index under another id: different corpora
    other = make_hits([[(2, 1.0)]], ids=["a", "b", "x", "d"])
    with pytest.raises(ValueError, match=r"different corpora.*document 2 is 'x'.*'c'"):
        fuse([a, other], k=2)
    # a document the id table does not cover
    with pytest.raises(ValueError, match="different corpora.*document 9"):
        fuse([a, make_hits([[(9, 1.0)]])], k=2)
    # int ids against str ids
    ints = Hits(np.array([[0]]), np.array([[1.0]], np.float32), np.arange(4, dtype=np.int64))
    with pytest.raises(ValueError, match="different corpora"):
        fuse([a, ints], k=1)
    # a document returned by one retriever only is still checked against the reference table
    with pytest.raises(ValueError, match="different corpora"):
        fuse([a, make_hits([[(1, 1.0)]], ids=["a", "z", "c", "d"])], k=1)


def test_real_retrievers_with_different_id_order():
    docs = ["red fox", "blue fox", "green frog"]
    bm25 = BM25().index(docs, ids=["r", "b", "g"])
    tfidf = TfIdf().index(docs, ids=["b", "r", "g"])
    with pytest.raises(ValueError, match="different corpora"):
        Hybrid([bm25, tfidf]).search("fox", k=2)


# ------------------------------------------------------------------------------------------- errors
class Fixed:
    """A retriever returning fixed Hits; records what it was asked."""

    def __init__(self, hits):
        self.hits, self.calls = hits, []

    def search(self, queries, k=10):
        self.calls.append((queries, k))
        return self.hits


def test_errors():
    ok = Fixed(make_hits([[(0, 1.0)]]))
    with pytest.raises(ValueError, match="at least one retriever"):
        Hybrid([])
    with pytest.raises(TypeError, match="list of retrievers"):
        Hybrid(ok)
    with pytest.raises(TypeError, match=r"retrievers\[1\] \(object\)"):
        Hybrid([ok, object()])
    with pytest.raises(ValueError, match="got 1 weights for 2 retrievers"):
        Hybrid([ok, ok], weights=[1])
    with pytest.raises(ValueError, match=r"weights\[1\] must be >= 0, got -0.5"):
        Hybrid([ok, ok], weights=[1, -0.5])
    with pytest.raises(ValueError, match=r"weights\[0\] must be finite, got nan"):
        Hybrid([ok, ok], weights=[float("nan"), 1])
    with pytest.raises(ValueError, match="finite"):
        Hybrid([ok], weights=[math.inf])
    with pytest.raises(ValueError, match="all 0"):
        Hybrid([ok, ok], fusion="weighted", weights=[0, 0.0])
    with pytest.raises(TypeError, match=r"weights\[0\] must be a number, got str"):
        Hybrid([ok], weights=["1"])
    with pytest.raises(TypeError, match="sequence of numbers"):
        Hybrid([ok], weights=1.0)
    with pytest.raises(ValueError, match="unknown fusion 'max'"):
        Hybrid([ok], fusion="max")
    with pytest.raises(ValueError, match="unknown normalization 'l2'"):
        Hybrid([ok], fusion="weighted", normalization="l2")
    with pytest.raises(ValueError, match="rrf_k must be a finite number >= 0, got -1"):
        Hybrid([ok], rrf_k=-1)
    with pytest.raises(TypeError, match="rrf_k must be a number"):
        Hybrid([ok], rrf_k="60")
    with pytest.raises(ValueError, match="depth must be >= 1, got 0"):
        Hybrid([ok], depth=0)
    hy = Hybrid([ok])
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        hy.search("q", k=0)
    with pytest.raises(ValueError, match="k must be >= 1, got -3"):
        hy.search("q", k=-3)
    with pytest.raises(TypeError, match=r"k must be an int, got float \(1.5\)"):
        hy.search("q", k=1.5)
    with pytest.raises(TypeError, match="k must be an int, got bool"):
        hy.search("q", k=True)
    two_rows = Fixed(make_hits([[(0, 1.0)], [(1, 1.0)]]))
    with pytest.raises(ValueError, match="retriever 1 returned 2 query rows, retriever 0 returned 1"):
        Hybrid([ok, two_rows]).search("q")
    with pytest.raises(TypeError, match="retriever 0 returned list, expected ragcore.Hits"):
        Hybrid([Fixed([[0]])]).search("q")
    bad_shape = Hits(np.zeros((1, 2), np.int64), np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match=r"shape \(1, 2\).*\(1, 3\)"):
        fuse([bad_shape])
    with pytest.raises(TypeError, match="indices of dtype float64"):
        fuse([Hits(np.zeros((1, 2)), np.zeros((1, 2), np.float32))])
    with pytest.raises(ValueError, match="retriever 0 returned document 3 twice for query 1"):
        fuse([make_hits([[(0, 1.0)], [(3, 2.0), (3, 1.0)]])])
    nan = make_hits([[(0, 1.0), (1, float("nan"))]])
    with pytest.raises(ValueError, match="non-finite score"):
        fuse([nan], fusion="weighted")
    assert fuse([nan], k=2).indices.tolist() == [[0, 1]]  # RRF looks at ranks only
    with pytest.raises(ValueError, match="nothing to fuse"):
        fuse([])
    with pytest.raises(TypeError, match="list of Hits"):
        fuse(make_hits([[(0, 1.0)]]))


# -------------------------------------------------------------------------------- Hybrid with retrievers
def test_hybrid_asks_depth_and_passes_queries_unchanged():
    a, b = Fixed(make_hits([[(0, 1.0)]])), Fixed(make_hits([[(1, 1.0)]]))
    queries = ["only query"]
    Hybrid([a, b], depth=5).search(queries, k=10)
    Hybrid([a, b]).search(queries, k=10)
    assert [c[1] for c in a.calls] == [10, 100] and [c[1] for c in b.calls] == [10, 100]
    assert all(c[0] is queries for c in a.calls + b.calls)
    assert "Hybrid([Fixed, Fixed], fusion='rrf'" in repr(Hybrid([a, b]))


@pytest.mark.parametrize("fusion", ["rrf", "weighted"])
def test_bm25_tfidf_hybrid_matches_oracle(corpus97, fusion):
    ids = [f"doc{i}" for i in range(len(corpus97))]
    bm25 = BM25().index(corpus97.texts, ids=ids)
    tfidf = TfIdf().index(corpus97.texts, ids=ids)
    queries = corpus97.query_texts
    hy = Hybrid([bm25, tfidf], fusion=fusion, weights=[0.6, 0.4], depth=20)
    got = hy.search(queries, k=10)
    parts = [bm25.search(queries, k=20), tfidf.search(queries, k=20)]
    assert_matches(got, oracle(parts, 10, fusion, [0.6, 0.4]), 10)
    assert got.ids[0, 0] == ids[got.indices[0, 0]]
    # one query as a str gives the first row of the batch
    one = hy.search(queries[0], k=10)
    np.testing.assert_array_equal(one.indices, got.indices[:1])
    # a Hybrid is a retriever: nesting works
    nested = Hybrid([hy, bm25]).search(queries, k=5)
    check_invariants(nested, 5)


def test_hybrid_tiny_corpus_example():
    docs = ["the cat sat on the mat", "a dog barked at the cat", "cats and dogs play", "the quick brown fox"]
    bm25, tfidf = BM25().index(docs, ids=list("abcd")), TfIdf().index(docs, ids=list("abcd"))
    h = Hybrid([bm25, tfidf]).search(["cat dog", "fox", "zebra"], k=3)
    assert h.ids.tolist() == [["b", "a", None], ["d", None, None], [None, None, None]]
    np.testing.assert_allclose(h.scores[0, :2], [2 / 61, 2 / 62], rtol=1e-6)


def test_doctests(monkeypatch):
    for name in ("Hybrid", "DenseRetriever"):  # until ragcore/__init__.py exports them
        monkeypatch.setattr(ragcore, name, getattr(hybrid_mod, name), raising=False)
    res = doctest.testmod(hybrid_mod, optionflags=doctest.ELLIPSIS)
    assert res.attempted >= 10 and res.failed == 0


# ---------------------------------------------------------------------------------------- dense side
class HashEncoder:
    """Deterministic fake encoder: hashed bag of words, L2-normalised; records its calls."""

    def __init__(self, dim=16):
        self.dim, self.calls = dim, []

    def encode(self, texts, batch_size=64):
        self.calls.append((len(texts), batch_size))
        out = np.zeros((len(texts), self.dim), np.float32)
        for r, t in enumerate(texts):
            for w in t.split():
                out[r, sum(map(ord, w)) % self.dim] += 1.0
        n = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(n > 0, n, 1)


class BruteIndex:
    """Fake dense index: exact inner product with numpy, ties by lower index."""

    def __init__(self, dim):
        self.vectors = np.zeros((0, dim), np.float32)
        self.ids = None
        self.search_kw = None

    def add(self, vectors, ids=None):
        self.vectors = np.vstack([self.vectors, vectors])
        if ids is not None:
            self.ids = np.array(list(ids), dtype=object)

    def __len__(self):
        return len(self.vectors)

    def search(self, q, k, **kw):
        self.search_kw = kw
        s = q @ self.vectors.T
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        idx = np.full((len(q), k), -1, np.int64)
        sc = np.full((len(q), k), -np.inf, np.float32)
        idx[:, :top.shape[1]] = top
        sc[:, :top.shape[1]] = np.take_along_axis(s, top, axis=1)
        return Hits(idx, sc, self.ids)


DOCS = ["red fox jumps", "blue whale sings", "green frog jumps high", "red whale", "tiny blue frog", "fox den"]


def test_dense_retriever_with_fakes():
    enc = HashEncoder()
    index = BruteIndex(enc.dim)
    dense = DenseRetriever(index, enc, batch_size=4)
    assert dense.index(DOCS, ids=[f"d{i}" for i in range(6)]) is dense
    assert enc.calls == [(4, 4), (2, 4)]  # encoded in chunks of batch_size
    assert len(index) == 6
    enc.calls.clear()
    h = dense.search(["red fox jumps", "tiny blue frog"], k=3, threads=1)
    assert enc.calls == [(2, 4)] and index.search_kw == {"threads": 1}  # given keywords only, passed on
    dense.search("fox", k=2)
    assert index.search_kw == {}
    assert h.indices[:, 0].tolist() == [0, 4] and h.ids[0, 0] == "d0"
    one = dense.search("tiny blue frog", k=3)
    np.testing.assert_array_equal(one.indices, h.indices[1:])
    want = np.argsort(-(enc.encode(["red whale"]) @ index.vectors.T), axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(dense.search("red whale", k=3).indices, want)
    assert dense.search([], k=3).indices.shape == (0, 3)
    # k > corpus pads
    assert dense.search("fox", k=8).indices[0, 6:].tolist() == [-1, -1]
    # chunking by another batch size, a generator of texts and a progress bar
    enc2 = HashEncoder()
    DenseRetriever(BruteIndex(enc2.dim), enc2).index((t for t in DOCS), batch_size=5, progress=True)
    assert enc2.calls == [(5, 5), (1, 5)]


def test_dense_retriever_errors():
    enc = HashEncoder()
    with pytest.raises(TypeError, match="has no search"):
        DenseRetriever(object(), enc)
    with pytest.raises(TypeError, match="has no encode"):
        DenseRetriever(BruteIndex(4), object())
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        DenseRetriever(BruteIndex(4), enc, batch_size=0)
    dense = DenseRetriever(BruteIndex(enc.dim), enc).index(DOCS)
    with pytest.raises(TypeError, match=r"queries\[1\] must be a str, got int"):
        dense.search(["ok", 3])
    with pytest.raises(TypeError, match="queries must be a str or a list of str"):
        dense.search(np.float32(1.0))
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        dense.search("fox", k=0)
    with pytest.raises(TypeError, match="single str"):
        dense.index("one document")
    with pytest.raises(ValueError, match="got 2 ids for 6 texts"):
        DenseRetriever(BruteIndex(enc.dim), enc).index(DOCS, ids=["a", "b"])

    class Broken:
        def __init__(self, after):
            self.after, self.n = after, 0

        def encode(self, texts, batch_size=64):
            self.n += 1
            if self.n > self.after:
                return np.zeros((len(texts) + 1, 3), np.float32)
            return np.zeros((len(texts), 3), np.float32)

    index = BruteIndex(3)
    with pytest.raises(ValueError, match=r"shape \(3, 3\) for 2 texts"):
        DenseRetriever(index, Broken(after=2), batch_size=2).index(DOCS)
    assert len(index) == 0, "a failure while encoding leaves the index as it was"
    with pytest.raises(ValueError, match=r"shape \(2, 3\) for 1 texts"):
        DenseRetriever(index, Broken(after=0)).search("fox")


def test_hybrid_sparse_and_dense():
    enc = HashEncoder()
    ids = [f"d{i}" for i in range(len(DOCS))]
    dense = DenseRetriever(BruteIndex(enc.dim), enc).index(DOCS, ids=ids)
    bm25 = BM25().index(DOCS, ids=ids)
    queries = ["red fox", "blue frog", "whale"]
    for fusion in ("rrf", "weighted"):
        got = Hybrid([bm25, dense], fusion=fusion).search(queries, k=4)
        parts = [bm25.search(queries, k=100), dense.search(queries, k=100)]
        assert_matches(got, oracle(parts, 4, fusion), 4)


@pytest.mark.skipif(not hasattr(ragcore, "DenseIndex"), reason="ragcore.DenseIndex not available yet")
def test_dense_retriever_with_real_dense_index():
    enc = HashEncoder(dim=24)
    ids = [f"d{i}" for i in range(len(DOCS))]
    dense = DenseRetriever(ragcore.DenseIndex(enc.dim, metric="cosine"), enc).index(DOCS, ids=ids)
    queries = ["red fox jumps", "tiny blue frog", "whale"]
    h = dense.search(queries, k=3)
    check_invariants(h, 3)
    assert h.indices[:, 0].tolist()[:2] == [0, 4]
    brute = DenseRetriever(BruteIndex(enc.dim), HashEncoder(dim=24)).index(DOCS, ids=ids).search(queries, k=3)
    np.testing.assert_allclose(h.scores, brute.scores, rtol=1e-5, atol=1e-5)
    hy = Hybrid([BM25().index(DOCS, ids=ids), dense]).search(queries, k=4)
    check_invariants(hy, 4)
    assert hy.ids[0, 0] == "d0"


# ---------------------------------------------------------------------------------------- real data
def test_rrf_bm25_tfidf_on_msmarco(shared_data):
    from conftest import load_beir

    from ragcore.io.corpus import load_qrels

    data = load_beir(shared_data, "msmarco-5k")
    qrels = load_qrels(shared_data / "msmarco-5k")
    judged = [(q, t) for q, t in zip(data.query_ids, data.queries) if qrels.get(q)]
    qids, texts = [q for q, _ in judged], [t for _, t in judged]
    bm25 = BM25().index(data.texts, ids=data.doc_ids)
    tfidf = TfIdf().index(data.texts, ids=data.doc_ids)
    names = ["ndcg@10", "recall@100", "mrr@10"]
    scores = {}
    for name, retriever in [("bm25", bm25), ("tfidf", tfidf), ("rrf", Hybrid([bm25, tfidf])),
                            ("weighted", Hybrid([bm25, tfidf], fusion="weighted"))]:
        hits = retriever.search(texts, k=100)
        check_invariants(hits, 100)
        ev = ragcore.evaluate(hits, {q: qrels[q] for q in qids}, names, query_ids=qids)
        assert ev.n_missing == 0 and len(ev.per_query) == len(qids)
        assert all(0.0 <= v <= 1.0 for v in ev.mean.values())
        scores[name] = ev.mean
    assert scores["rrf"]["ndcg@10"] > 0  # no performance assertion beyond "it retrieves something"
    print(scores)
