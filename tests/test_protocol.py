"""The retriever protocol (rc.Retriever): every retriever has ``search(queries, k=10, *, threads=None,
filter=None) -> Hits`` and ``len()``, and the same filter means the same thing everywhere.

Each retriever runs through the same checks: the signature, batch and single queries, filters by ids and
by mask against an oracle (the unfiltered full ranking restricted to the allowed documents; for dense
retrievers also a numpy brute force over the stored rows; for Hybrid, each part's restricted ranking
fused), empty and full filters, deletes (dense), threads, and bad input.
"""
from __future__ import annotations

import inspect
import warnings
import zlib

import numpy as np
import pytest

import ragcore as rc
from ragcore.retrieval.hybrid import fuse

N_DOCS, DIM = 41, 16
_rng = np.random.default_rng(1616)
VOCAB = [f"w{i}" for i in range(30)]
DOCS = [" ".join(_rng.choice(VOCAB, size=int(_rng.integers(3, 7)))) for _ in range(N_DOCS)]
IDS = [f"doc-{(i * 17) % N_DOCS}" for i in range(N_DOCS)]  # not in index order
VECS = _rng.standard_normal((N_DOCS, DIM)).astype(np.float32)
TEXT_QUERIES = ["w1 w2", "w3", "w4 w5 w6 w7", "w29 w0", "nothing here"]
VEC_QUERIES = _rng.standard_normal((5, DIM)).astype(np.float32)


class WordEncoder:
    """Deterministic fake encoder: the sum of a fixed random vector per word (seeded by the word)."""

    dim = DIM

    def encode(self, texts, batch_size=64):
        out = np.zeros((len(texts), DIM), np.float32)
        for r, t in enumerate(texts):
            for w in t.split():
                out[r] += np.random.default_rng(zlib.crc32(w.encode())).standard_normal(DIM).astype(np.float32)
            if not out[r].any():
                out[r, 0] = 1.0  # no word: a fixed direction (cosine needs a nonzero vector)
        return out


def _dense(dtype="float32", prefilter=None, ids=True):
    return rc.DenseIndex(DIM, dtype=dtype, device="cpu", prefilter=prefilter).add(VECS, ids=IDS if ids else None)


def _dense_retriever(ids=True):
    enc = WordEncoder()
    index = rc.DenseIndex(DIM, device="cpu").add(enc.encode(DOCS), ids=IDS if ids else None)
    return rc.DenseRetriever(index, enc)


def _ids(ids):
    return IDS if ids else None


# name -> (build(ids: bool) -> retriever, queries); the same corpus in the same order everywhere
CASES = {
    "bm25": (lambda ids: rc.BM25().index(DOCS, ids=_ids(ids)), TEXT_QUERIES),
    "tfidf": (lambda ids: rc.TfIdf().index(DOCS, ids=_ids(ids)), TEXT_QUERIES),
    "dense-float32": (lambda ids: _dense("float32", ids=ids), VEC_QUERIES),
    "dense-float16": (lambda ids: _dense("float16", ids=ids), VEC_QUERIES),
    "dense-int8": (lambda ids: _dense("int8", ids=ids), VEC_QUERIES),
    "dense-prefilter-int8": (lambda ids: _dense("float32", prefilter="int8", ids=ids), VEC_QUERIES),
    "dense-retriever": (_dense_retriever, TEXT_QUERIES),
    "hybrid-rrf": (lambda ids: rc.Hybrid([rc.BM25().index(DOCS, ids=_ids(ids)), _dense_retriever(ids)],
                                         fusion="rrf", depth=7), TEXT_QUERIES),
    "hybrid-weighted": (lambda ids: rc.Hybrid([rc.BM25().index(DOCS, ids=_ids(ids)),
                                               rc.TfIdf().index(DOCS, ids=_ids(ids))],
                                              fusion="weighted", weights=[0.7, 0.3], depth=9), TEXT_QUERIES),
}


@pytest.fixture(params=sorted(CASES))
def case(request):
    return request.param


def build(name, ids=True):
    make, queries = CASES[name]
    return make(ids), queries


# ------------------------------------------------------------------------------------------- oracles
def restrict(full, allowed, k, width):
    """The rows of a complete unfiltered ranking ``full`` (Hits of width n) restricted to ``allowed``:
    the first ``k`` allowed documents per row, padded to ``width``."""
    nq = full.indices.shape[0]
    idx = np.full((nq, width), -1, np.int64)
    sc = np.full((nq, width), -np.inf, np.float32)
    for r in range(nq):
        keep = [c for c, d in enumerate(full.indices[r]) if d >= 0 and allowed[d]][:k]
        idx[r, :len(keep)] = full.indices[r, keep]
        sc[r, :len(keep)] = full.scores[r, keep]
    return idx, sc


def numpy_ranking(index, q, allowed, k, width):
    """Exact cosine top-k of a DenseIndex by numpy (float64) over its stored rows, ties to the lower row."""
    rows = index.vectors().astype(np.float64)
    q = np.asarray(q, np.float64).reshape(-1, index.dim)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    scores = q @ rows.T
    idx = np.full((len(q), width), -1, np.int64)
    sc = np.full((len(q), width), -np.inf)
    for r in range(len(q)):
        order = [d for d in np.lexsort((np.arange(rows.shape[0]), -scores[r])) if allowed[d]][:k]
        idx[r, :len(order)], sc[r, :len(order)] = order, scores[r, order]
    return idx, sc


def n_rows(retriever):
    """The length of a filter mask: the documents' index range (a dense index's rows, deleted included)."""
    index = getattr(retriever, "dense_index", retriever)
    return index.ntotal if isinstance(index, rc.DenseIndex) else len(retriever)


def expected(retriever, queries, allowed, k):
    """(indices, scores) a filtered search must return: each part's ranking restricted, then (Hybrid) fused."""
    if isinstance(retriever, rc.Hybrid):
        depth = max(retriever.depth, k)
        parts = [rc.Hits(*expected(p, queries, allowed, depth)) for p in retriever.retrievers]
        width = max(1, min(k, sum(h.indices.shape[1] for h in parts)))
        h = fuse(parts, width, fusion=retriever.fusion, weights=retriever.weights, rrf_k=retriever.rrf_k,
                 normalization=retriever.normalization)
        return h.indices, h.scores
    full = retriever.search(queries, k=n_rows(retriever))
    return restrict(full, allowed, k, width=min(k, max(len(retriever), 1)))


def check_dense_numpy(retriever, queries, allowed, k, hits):
    """A dense retriever's filtered hits against numpy: the same rows, scores within float32 rounding."""
    index = getattr(retriever, "dense_index", retriever)
    if not isinstance(index, rc.DenseIndex):
        return
    q = retriever.encoder.encode(list(queries)) if index is not retriever else queries
    idx, sc = numpy_ranking(index, q, allowed, k, hits.indices.shape[1])
    np.testing.assert_array_equal(hits.indices, idx)
    valid = idx >= 0
    np.testing.assert_allclose(hits.scores[valid], sc[valid], rtol=0, atol=2e-5)
    assert np.isneginf(hits.scores[~valid]).all()


def assert_same(a, b_idx, b_sc, what=""):
    np.testing.assert_array_equal(a.indices, b_idx, err_msg=what)
    np.testing.assert_array_equal(a.scores, b_sc, err_msg=what)


def masks(n, seed):
    rng = np.random.default_rng(seed)
    one = np.zeros(n, bool)
    one[n // 2] = True
    return {"half": rng.random(n) < 0.5, "sparse": rng.random(n) < 0.1, "one": one, "none": np.zeros(n, bool),
            "all": np.ones(n, bool)}


# ------------------------------------------------------------------------------------------- the tests
def test_signature_and_len(case):
    r, _ = build(case)
    assert isinstance(r, rc.Retriever)
    assert len(r) == N_DOCS
    params = inspect.signature(r.search).parameters
    assert list(params) == ["queries", "k", "threads", "filter"]
    assert params["k"].default == 10 and params["k"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    for name in ("threads", "filter"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY and params[name].default is None
    proto = inspect.signature(rc.Retriever.search).parameters
    assert [(p.name, p.kind, p.default) for p in params.values()] == \
        [(p.name, p.kind, p.default) for p in list(proto.values())[1:]]


def test_batch_and_single_queries(case):
    r, queries = build(case)
    batch = r.search(queries, k=4)
    assert batch.indices.shape == batch.scores.shape == (len(queries), 4)
    assert batch.indices.dtype == np.int64 and batch.scores.dtype == np.float32
    for qi in (0, len(queries) - 1):
        one = r.search(queries[qi], k=4)
        assert one.indices.shape == (1, 4)
        np.testing.assert_array_equal(one.indices[0], batch.indices[qi])
        np.testing.assert_allclose(one.scores[0], batch.scores[qi], rtol=1e-6)


@pytest.mark.parametrize("with_ids", [True, False], ids=["ids", "no-ids"])
@pytest.mark.parametrize("k", [1, 5, N_DOCS + 3])
def test_filter_equals_the_restricted_ranking(case, with_ids, k):
    r, queries = build(case, ids=with_ids)
    keys = IDS if with_ids else list(range(N_DOCS))
    for name, allowed in masks(N_DOCS, seed=k).items():
        want_idx, want_sc = expected(r, queries, allowed, k)
        chosen = [keys[i] for i in np.flatnonzero(allowed)][::-1]  # the order of the ids does not matter
        forms = {"bool array": allowed, "bool list": allowed.tolist(), "id list": chosen,
                 "id set": set(chosen), "id array": np.array(chosen, dtype=object if with_ids else np.int64),
                 "ids twice": chosen + chosen[:1]}
        for form, flt in forms.items():
            hits = r.search(queries, k=k, filter=flt)
            assert_same(hits, want_idx, want_sc, f"{case} {name} filter as {form}")
            assert (allowed[hits.indices[hits.indices >= 0]]).all()
            if with_ids:
                ok = hits.indices >= 0
                assert hits.ids[ok].tolist() == [IDS[i] for i in hits.indices[ok]]
                assert all(x is None for x in hits.ids[~ok])
        check_dense_numpy(r, queries, allowed, k, r.search(queries, k=k, filter=allowed))


def test_empty_and_full_filters(case):
    r, queries = build(case)
    full = r.search(queries, k=6)
    for flt in ([], (), set(), np.zeros(N_DOCS, bool), np.array([], dtype=object), [False] * N_DOCS):
        hits = r.search(queries, k=6, filter=flt)
        assert hits.indices.shape == full.indices.shape
        assert (hits.indices == -1).all() and np.isneginf(hits.scores).all(), f"{case} filter={flt!r:.40}"
        assert all(x is None for x in hits.ids.ravel())
    for flt in (np.ones(N_DOCS, bool), list(IDS), [True] * N_DOCS):
        assert_same(r.search(queries, k=6, filter=flt), full.indices, full.scores, f"{case} all documents")


def test_threads_do_not_change_results(case):
    r, queries = build(case)
    allowed = masks(N_DOCS, 3)["half"]
    for flt in (None, allowed):
        a = r.search(queries, k=7, threads=1, filter=flt)
        b = r.search(queries, k=7, threads=None, filter=flt)
        c = r.search(queries, k=7, threads=2, filter=flt)
        for other in (b, c):
            assert_same(other, a.indices, a.scores, f"{case} threads, filter={flt is not None}")


@pytest.mark.parametrize("name", [c for c in sorted(CASES) if c.startswith("dense")])
def test_filter_after_deletes(name):
    r, queries = build(name)
    index = getattr(r, "dense_index", r)
    gone = [IDS[3], IDS[10], IDS[11], IDS[40]]
    index.delete(gone)
    assert len(r) == N_DOCS - 4 and index.ntotal == N_DOCS
    alive = ~np.isin(np.array(IDS), gone)
    for allowed in masks(N_DOCS, 5).values():
        want_idx, want_sc = expected(r, queries, allowed & alive, 8)
        flt_ids = [IDS[i] for i in np.flatnonzero(allowed)]  # deleted ids among them: accepted, never returned
        for flt in (allowed, flt_ids):
            hits = r.search(queries, k=8, filter=flt)
            assert_same(hits, want_idx, want_sc, f"{name} after deletes")
        check_dense_numpy(r, queries, allowed & alive, 8, hits)
    with pytest.raises(ValueError, match=f"shape \\({N_DOCS},\\).*got \\({N_DOCS - 4},\\)"):
        r.search(queries, k=3, filter=np.ones(len(r), bool))  # the mask spans the rows, deleted included
    only_deleted = r.search(queries, k=3, filter=gone)
    assert (only_deleted.indices == -1).all()


def _dict_filter():
    return {"year": {"$gte": 2020}}


BAD_SEARCH = [
    # (keywords, exception, message pattern)
    (dict(k=0), ValueError, "k must be >= 1, got 0"),
    (dict(k=-2), ValueError, "k must be >= 1, got -2"),
    (dict(k="3"), TypeError, "k must be an int, got str"),
    (dict(k=2.0), TypeError, "k must be an int, got float"),
    (dict(k=True), TypeError, "k must be an int, got bool"),
    (dict(threads=0), ValueError, "threads must be between 1 and .*, got 0"),
    (dict(threads=2 ** 31), ValueError, f"threads must be between 1 and .*, got {2 ** 31}"),
    (dict(threads="2"), TypeError, "threads must be an int or None, got str"),
    (dict(filter=np.ones(N_DOCS - 1, bool)), ValueError, f"shape \\({N_DOCS},\\).*got \\({N_DOCS - 1},\\)"),
    (dict(filter=np.ones(N_DOCS + 2, bool)), ValueError, f"shape \\({N_DOCS},\\).*got \\({N_DOCS + 2},\\)"),
    (dict(filter=np.ones((1, N_DOCS), bool)), ValueError, f"shape \\({N_DOCS},\\).*got \\(1, {N_DOCS}\\)"),
    (dict(filter=[True] * 3), ValueError, f"{N_DOCS} entries .*got 3"),
    (dict(filter=np.ones(N_DOCS, np.float32)), TypeError, "dtype float32"),
    (dict(filter=[1.5]), TypeError, "got float"),
    (dict(filter=[None]), TypeError, "got NoneType"),
    (dict(filter=["doc-1", True]), TypeError, "got bool"),
    (dict(filter=[True, "doc-1"]), TypeError, "mixes bools"),
    (dict(filter=["no-such-id"]), ValueError, "unknown id 'no-such-id'"),
    (dict(filter=[3]), TypeError, "must be str like the index's ids, got int"),
    (dict(filter=_dict_filter()), TypeError, "got a dict.*Collection"),
    (dict(filter="doc-1"), TypeError, "got a str.*wrap a single id in a list"),
    (dict(filter=b"doc-1"), TypeError, "got a bytes"),
    (dict(filter=3), TypeError, "got int"),
    (dict(filter=np.array([["doc-1"]], dtype=object)), ValueError, "1-D"),
]


@pytest.mark.parametrize("kw,exc,pattern", BAD_SEARCH, ids=[f"{sorted(kw)[0]}={kw[sorted(kw)[0]]!r:.20}"
                                                           for kw, _, _ in BAD_SEARCH])
def test_bad_input_is_a_clear_error(case, kw, exc, pattern):
    r, queries = build(case)
    before = r.search(queries, k=5)
    with pytest.raises(exc, match=pattern):
        r.search(queries, **{"k": 5, **kw})
    assert_same(r.search(queries, k=5), before.indices, before.scores, "a failed search changes nothing")


@pytest.mark.parametrize("flt,exc,pattern", [
    ([N_DOCS], ValueError, f"document {N_DOCS}, outside \\[0, {N_DOCS}\\)"),
    ([-1], ValueError, f"document -1, outside \\[0, {N_DOCS}\\)"),
    (np.array([0, N_DOCS + 5]), ValueError, f"document {N_DOCS + 5}, outside"),
    (["doc-1"], TypeError, "document indices \\(int\\) when the index has no ids, got str"),
    ([np.float64(1)], TypeError, "document indices \\(int\\).*got float64"),
])
def test_bad_document_indices_without_ids(case, flt, exc, pattern):
    r, queries = build(case, ids=False)
    with pytest.raises(exc, match=pattern):
        r.search(queries, k=3, filter=flt)


def test_int_ids():
    """Int ids: the filter names them (not positions); a str, a bool or an unknown int is refused."""
    int_ids = [1000 + 7 * i for i in range(N_DOCS)]
    for r in (rc.BM25().index(DOCS, ids=int_ids), rc.DenseIndex(DIM, device="cpu").add(VECS, ids=int_ids)):
        queries = TEXT_QUERIES if isinstance(r, rc.BM25) else VEC_QUERIES
        allowed = masks(N_DOCS, 9)["half"]
        want = r.search(queries, k=5, filter=allowed)
        chosen = [int_ids[i] for i in np.flatnonzero(allowed)]
        for flt in (chosen, np.array(chosen), np.array(chosen, np.uint16), [np.int32(x) for x in chosen]):
            assert_same(r.search(queries, k=5, filter=flt), want.indices, want.scores)
        with pytest.raises(ValueError, match="unknown id 3"):
            r.search(queries, k=5, filter=[3])
        with pytest.raises(TypeError, match="must be int like the index's ids, got str"):
            r.search(queries, k=5, filter=["1000"])


def test_empty_dense_index_and_empty_batches():
    index = rc.DenseIndex(DIM, device="cpu")
    hits = index.search(VEC_QUERIES[:2], k=3, filter=np.zeros(0, bool))
    assert (hits.indices == -1).all() and hits.indices.shape == (2, 1)
    with pytest.raises(ValueError, match="shape \\(0,\\)"):
        index.search(VEC_QUERIES[:2], k=3, filter=np.zeros(2, bool))
    bm25, _ = build("bm25")
    assert bm25.search([], k=3, filter=["doc-1"]).indices.shape == (0, 3)
    with pytest.raises(ValueError, match="unknown id"):
        bm25.search([], k=3, filter=["nope"])  # checked even without queries
    dense = _dense_retriever()
    assert dense.search([], k=3, filter=["doc-1"]).indices.shape == (0, 3)
    with pytest.raises(ValueError, match="unknown id"):
        dense.search([], k=3, filter=["nope"])
    with pytest.raises(ValueError, match="threads must be between"):
        dense.search([], k=3, threads=0)


# ------------------------------------------------------------------------------------ the old spellings
def test_n_docs_is_a_deprecated_alias_of_len():
    for r in (rc.BM25().index(DOCS), rc.TfIdf().index(DOCS)):
        with pytest.warns(DeprecationWarning, match=r"n_docs is deprecated; use len\(retriever\)"):
            assert r.n_docs == len(r) == N_DOCS


def test_show_progress_is_a_deprecated_alias_of_progress(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spelling warns about nothing
        quiet = rc.BM25().index(DOCS, progress=False)
    with pytest.warns(DeprecationWarning, match=r"index\(show_progress=\.\.\.\) is deprecated; use progress="):
        old = rc.BM25().index(DOCS, show_progress=False)
    assert_same(old.search(TEXT_QUERIES, k=5), *(lambda h: (h.indices, h.scores))(quiet.search(TEXT_QUERIES, k=5)))
    with pytest.raises(TypeError, match="both show_progress= .* and progress="):
        rc.BM25().index(DOCS, show_progress=True, progress=True)
    assert "progress" in inspect.signature(rc.BM25.index).parameters
    assert "show_progress" not in inspect.signature(rc.BM25.index).parameters
    assert "progress" in inspect.signature(rc.tune_bm25).parameters


def test_tune_bm25_show_progress_alias(monkeypatch):
    import ragcore.eval.tuning as tuning

    def fake_load(path):
        raise RuntimeError("stop")  # the keyword was accepted and mapped before any work

    monkeypatch.setattr(tuning, "load_beir", fake_load)
    with pytest.warns(DeprecationWarning, match=r"tune_bm25\(show_progress=\.\.\.\) is deprecated"):
        with pytest.raises(RuntimeError, match="stop"):
            rc.tune_bm25("somewhere", show_progress=True)
