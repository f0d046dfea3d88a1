"""DenseIndex on the CPU against numpy brute force: every dtype, both kernel paths (scan / blocked),
every instruction set this CPU runs (AVX-512 / AVX2 / scalar), odd sizes for the SIMD tails, threads, deletes, ids,
persistence, and bad input (clear error, index unchanged)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import ragcore as rc
from ragcore import _core

ISAS = _core._testing.dense_isas()  # every kernel set this CPU runs (avx512, avx2, scalar)


@pytest.fixture(params=ISAS)
def isa(request):
    _core._testing.dense_set_isa(request.param)
    yield request.param
    _core._testing.dense_set_isa("auto")


def unit(rng, n, dim):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def stored(index):
    """What the index holds, as float64 rows (the oracle scores these exactly)."""
    return index.vectors().astype(np.float64)


def oracle(rows, queries, k, deleted=None):
    s = queries.astype(np.float64) @ rows.T
    if deleted is not None:
        s[:, deleted] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]  # stable: ties -> lower index
    return order, np.take_along_axis(s, order, 1)


def check(hits, rows, queries, k, deleted=None, atol=1e-5):
    idx, sc = oracle(rows, queries, k, deleted)
    live = rows.shape[0] - (0 if deleted is None else int(np.count_nonzero(deleted)))
    kk = min(k, live)
    assert hits.indices.shape == (len(queries), min(k, max(live, 1))) and hits.indices.dtype == np.int64
    assert hits.scores.dtype == np.float32
    np.testing.assert_allclose(hits.scores[:, :kk], sc[:, :kk], atol=atol, rtol=0)
    got, want = hits.indices[:, :kk], idx[:, :kk]
    if not np.array_equal(got, want):
        # equal ids except where two scores are within float rounding of each other
        bad = got != want
        gs = np.take_along_axis(queries.astype(np.float64) @ rows.T, np.where(got >= 0, got, 0), 1)
        assert np.allclose(gs[bad], sc[:, :kk][bad], atol=atol), "different ids at distinct scores"
    assert (hits.indices[:, kk:] == -1).all() and np.isneginf(hits.scores[:, kk:]).all()


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
@pytest.mark.parametrize("n,dim", [(1, 1), (3, 7), (97, 33), (1000, 384), (70000, 16)])
def test_matches_numpy(isa, dtype, n, dim):
    rng = np.random.default_rng(n * 31 + dim)
    index = rc.DenseIndex(dim, dtype=dtype, device="cpu").add(unit(rng, n, dim))
    rows = stored(index)
    for nq in (1, 3, 4, 9, 13, 26):  # 1, 3: scan path; then blocked: partial tiles, whole ones + a tail
        q = unit(rng, nq, dim)
        for k in (1, 10, 100):
            check(index.search(q, k=k, threads=2), rows, q, k)


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
@pytest.mark.parametrize("path", [1, 2])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_paths_threads_deletes(isa, dtype, path, threads):
    rng = np.random.default_rng(7)
    n, dim = 40000, 24
    index = rc.DenseIndex(dim, metric="ip", dtype=dtype, device="cpu").add(rng.standard_normal((n, dim)))
    dele = rng.random(n) < 0.3
    index.delete(np.flatnonzero(dele))
    rows = stored(index)
    q = rng.standard_normal((5, dim)).astype(np.float32)
    data = index._data[:n]
    aux = None if index._aux is None else index._aux[:n]
    for k in (1, 17, 300):
        idx, sc = _core._testing.dense_search_path(data, aux, index._deleted[:n], q, k, threads, path)
        check(rc.Hits(idx, sc), rows, q, k, deleted=dele, atol=2e-5)


def test_ties_go_to_lower_index(isa):
    v = np.zeros((50, 8), np.float32)
    v[:, 0] = 1.0
    index = rc.DenseIndex(8, metric="ip", device="cpu").add(v)
    for q in (np.eye(8, dtype=np.float32)[:1], np.repeat(np.eye(8, dtype=np.float32)[:1], 6, 0)):
        hits = index.search(q, k=10)
        assert (hits.indices == np.arange(10)).all()


def test_int8_exact_wrt_stored_rows_on_clustered_data(isa):
    # near-duplicates: the int8 query-quantisation estimate cannot separate them, the bound must
    rng = np.random.default_rng(3)
    base = unit(rng, 20, 64)
    x = np.repeat(base, 200, 0) + 0.01 * rng.standard_normal((4000, 64)).astype(np.float32)
    index = rc.DenseIndex(64, dtype="int8", device="cpu").add(x)
    rows = stored(index)
    q = base[:3] + 0.005 * rng.standard_normal((3, 64)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    for nq in (1, 3):
        check(index.search(q[:nq], k=50), rows, q[:nq], 50)


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
@pytest.mark.parametrize("metric", ["cosine", "ip"])
def test_near_duplicates_are_ordered_exactly(isa, dtype, metric):
    # rows 1e-4 apart: bf16 (the AMX path's candidate scores, 8 significant bits) and int8 estimates cannot
    # order them; the exact re-scoring must. ip: norms from 0.01 to 100 (the bound scales with |x|).
    rng = np.random.default_rng(11)
    base = unit(rng, 8, 96)
    x = np.repeat(base, 150, 0) + 1e-4 * rng.standard_normal((1200, 96)).astype(np.float32)
    if metric == "ip":
        x *= np.exp(rng.uniform(np.log(0.01), np.log(100), (1200, 1))).astype(np.float32)
    index = rc.DenseIndex(96, metric=metric, dtype=dtype, device="cpu").add(x)
    rows = stored(index)
    q = np.repeat(base[:2], 20, 0) + 1e-3 * rng.standard_normal((40, 96)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    for nq in (1, 5, 40):       # scan path, then batches (one partial and two query groups)
        for k in (1, 30):
            check(index.search(q[:nq], k=k, threads=2), rows, q[:nq], k, atol=1e-5 * (100 if metric == "ip" else 1))


def test_amx_isa_errors_and_listing():
    isas = _core._testing.dense_isas()
    assert isas[-1] == "scalar" and len(set(isas)) == len(isas)
    if "amx" not in isas:
        with pytest.raises(ValueError, match="AMX|x86"):
            _core._testing.dense_set_isa("amx")


def test_cosine_normalises_and_ip_does_not():
    x = np.array([[3.0, 0.0], [1.0, 1.0]], np.float32)
    cos = rc.DenseIndex(2, device="cpu").add(x)
    ip = rc.DenseIndex(2, metric="ip", device="cpu").add(x)
    q = np.array([1.0, 1.0], np.float32)
    assert cos.search(q, k=2).indices.tolist() == [[1, 0]]
    np.testing.assert_allclose(cos.search(q, k=2).scores, [[1.0, np.sqrt(0.5)]], rtol=1e-6)
    assert ip.search(q, k=2).indices.tolist() == [[0, 1]]
    np.testing.assert_allclose(ip.search(q, k=2).scores, [[3.0, 2.0]], rtol=1e-6)


def test_ids_deletes_and_len():
    rng = np.random.default_rng(1)
    x = unit(rng, 10, 4)
    index = rc.DenseIndex(4, device="cpu").add(x[:6], ids=[f"d{i}" for i in range(6)])
    index.add(x[6:], ids=[f"d{i}" for i in range(6, 10)])
    assert len(index) == 10 and index.ntotal == 10
    assert index.search(x[7], k=1).ids.tolist() == [["d7"]]
    assert index.delete(["d7", "d2"]) == 2
    assert len(index) == 8 and index.ntotal == 10
    hits = index.search(x, k=10)
    assert not np.isin(hits.indices, [2, 7]).any()
    assert (hits.indices[:, 8:] == -1).all()
    with pytest.raises(KeyError, match="d7"):
        index.delete("d7")
    with pytest.raises(KeyError, match="nope"):
        index.delete(["d1", "nope"])
    assert len(index) == 8  # nothing deleted by the failed call
    with pytest.raises(ValueError, match="already in the index"):
        index.add(x[:1], ids=["d1"])
    with pytest.raises(ValueError, match="pass ids="):
        index.add(x[:1])
    plain = rc.DenseIndex(4, device="cpu").add(x)
    assert plain.search(x[:1], k=1).ids is None
    assert plain.delete([0, 3]) == 2
    with pytest.raises(KeyError, match="row 10"):
        plain.delete(10)


def test_add_in_many_pieces_equals_one_add():
    rng = np.random.default_rng(2)
    x = unit(rng, 3000, 12)
    one = rc.DenseIndex(12, dtype="int8", device="cpu").add(x)
    many = rc.DenseIndex(12, dtype="int8", device="cpu")
    for s in range(0, 3000, 777):
        many.add(x[s:s + 777])
    q = unit(rng, 5, 12)
    a, b = one.search(q, k=20), many.search(q, k=20)
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.scores, b.scores)


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_roundtrip(tmp_path, dtype, mmap):
    rng = np.random.default_rng(4)
    x = unit(rng, 500, 20)
    index = rc.DenseIndex(20, dtype=dtype, device="cpu").add(x, ids=list(range(100, 600)))
    index.delete([105, 333])
    index.save(tmp_path / "d")
    back = rc.DenseIndex.load(tmp_path / "d", mmap=mmap, device="cpu")
    assert (back.dim, back.metric, back.dtype, len(back), back.ntotal) == (20, "cosine", dtype, 498, 500)
    q = unit(rng, 4, 20)
    a, b = index.search(q, k=30), back.search(q, k=30)
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.scores, b.scores)
    assert b.ids[0, 0] == a.ids[0, 0]
    # a loaded (mapped, read-only) index still takes adds and deletes, without touching the files
    back.add(x[:2], ids=[1, 2])
    back.delete([1, 106])
    assert len(back) == 498 and rc.DenseIndex.load(tmp_path / "d").ntotal == 500
    assert rc.retrieval.dense.load(tmp_path / "d", device="cpu").dtype == dtype


def test_load_rejects_other_kinds_and_corruption(tmp_path):
    rc.BM25().index(["a b", "c"]).save(tmp_path / "bm25")
    with pytest.raises(ValueError, match="bm25"):
        rc.DenseIndex.load(tmp_path / "bm25")
    index = rc.DenseIndex(4, device="cpu").add(np.eye(4, dtype=np.float32))
    index.save(tmp_path / "d")
    with open(tmp_path / "d" / "vectors.bin", "r+b") as f:
        f.seek(3)
        f.write(b"\x7f")
    with pytest.raises(ValueError, match="(?i)crc|checksum"):
        rc.DenseIndex.load(tmp_path / "d", verify=True)


def test_bad_input_is_rejected_and_index_unchanged():
    rng = np.random.default_rng(5)
    index = rc.DenseIndex(8, device="cpu").add(unit(rng, 10, 8))
    before = index.vectors().copy()
    bad_nan = unit(rng, 3, 8)
    bad_nan[1, 2] = np.nan
    bad_inf = unit(rng, 3, 8)
    bad_inf[2, 0] = np.inf
    cases = [
        (unit(rng, 3, 7), ValueError, "dimension 7, expected 8"),
        (bad_nan, ValueError, "row 1 has NaN"),
        (bad_inf, ValueError, "row 2 has NaN or infinite"),
        (np.ones((3, 8), np.int64), TypeError, "dtype int64"),
        (np.asfortranarray(unit(rng, 3, 8)), ValueError, "C-contiguous"),
        (unit(rng, 6, 16)[:, ::2], ValueError, "C-contiguous"),
        (np.zeros((2, 8), np.float32), ValueError, "zero norm"),
        (np.ones((2, 2, 8), np.float32), ValueError, r"shape \(n, 8\)"),
        ([["a"] * 8], TypeError, "dtype"),
    ]
    for vectors, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            index.add(vectors)
        with pytest.raises(exc, match=msg.replace("vectors", "queries")):
            index.search(vectors)
    with pytest.raises(ValueError, match="got 2 ids for 3 vectors"):
        index.add(unit(rng, 3, 8), ids=["a", "b"])
    for k, exc in ((0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(exc, match="k must"):
            index.search(unit(rng, 1, 8), k=k)
    with pytest.raises(ValueError, match="threads must be between 1 and 4096"):
        index.search(unit(rng, 1, 8), threads=0)
    assert index.ntotal == 10 and np.array_equal(index.vectors(), before)


def test_constructor_errors():
    with pytest.raises(ValueError, match="dim must be >= 1"):
        rc.DenseIndex(0)
    with pytest.raises(TypeError, match="dim must be an int"):
        rc.DenseIndex(3.0)
    with pytest.raises(ValueError, match="metric"):
        rc.DenseIndex(3, metric="l2")
    with pytest.raises(ValueError, match="dtype"):
        rc.DenseIndex(3, dtype="float64")
    with pytest.raises(ValueError, match="GPU only"):
        rc.DenseIndex(3, dtype="bfloat16", device="cpu")
    with pytest.raises(ValueError, match="device"):
        rc.DenseIndex(3, device="tpu")
    with pytest.raises(ValueError, match="float16's range"):
        rc.DenseIndex(2, metric="ip", dtype="float16", device="cpu").add(np.array([[1e6, 0]], np.float32))


@pytest.mark.skipif(rc.cuda_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="device='cuda'.*(no CUDA GPU|without its CUDA)"):
        rc.DenseIndex(8, device="cuda")
    assert rc.DenseIndex(8).device == "cpu"  # auto falls back


def test_empty_index_and_k_capped_at_live_rows():
    index = rc.DenseIndex(4, device="cpu")
    hits = index.search(np.ones(4, np.float32), k=3)
    assert hits.indices.tolist() == [[-1]] and np.isneginf(hits.scores).all()
    index.add(np.eye(4, dtype=np.float32)[:3])
    assert index.search(np.ones((5, 4), np.float32), k=10**9).indices.shape == (5, 3)  # no 12 GB allocation
    index.delete([1])
    assert index.search(np.ones((5, 4), np.float32), k=3).indices.tolist() == [[0, 2]] * 5
    assert index.search(np.empty((0, 4), np.float32), k=3).indices.shape == (0, 2)


def test_isa_switch_errors():
    with pytest.raises(ValueError, match="unknown instruction set"):
        _core._testing.dense_set_isa("avx9")


def test_testing_knobs_are_private():
    # the forced path, the instruction-set override and the probes live in _core._testing only; which set
    # runs (dense_isa) stays public
    for name in ("dense_search_path", "dense_set_isa", "dense_isas", "read_probe", "validate_sparse_arrays"):
        assert hasattr(_core._testing, name) and not hasattr(_core, name)
    assert _core.dense_isa() == _core._testing.dense_isas()[0]
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(TypeError):
        _core.dense_search(x, None, None, x, 1, 1, path=1)
    assert _core.dense_search(x, None, None, x, 1)[0].ravel().tolist() == [0, 1, 2, 3]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), dim=st.integers(1, 40), nq=st.integers(1, 6), k=st.integers(1, 40),
       dtype=st.sampled_from(["float32", "float16", "int8"]), seed=st.integers(0, 2**31 - 1),
       dup=st.booleans())
def test_topk_invariants(n, dim, nq, k, dtype, seed, dup):
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, size=(n, dim)).astype(np.float32)  # small integers: many exact ties
    if dup:
        x[n // 2:] = x[: n - n // 2]
    index = rc.DenseIndex(dim, metric="ip", dtype=dtype, device="cpu").add(x)
    q = rng.integers(-2, 3, size=(nq, dim)).astype(np.float32)
    hits = index.search(q, k=k, threads=2)
    rows = stored(index)
    idx, sc = oracle(rows, q, k)
    kk = min(k, n)
    np.testing.assert_allclose(hits.scores[:, :kk], sc[:, :kk], rtol=1e-5, atol=1e-4)
    if dtype != "int8":  # integer data: exact float sums, so ties are exact and must go to the lower index
        assert np.array_equal(hits.indices[:, :kk], idx[:, :kk])
    assert (np.diff(hits.scores[:, :kk], axis=1) <= 0).all()
    assert (hits.indices[:, kk:] == -1).all()
