"""ragcore._cuda (the CUDA dense store) against numpy brute force.

Without a GPU only the first tests run: the module imports (when it was built), ``device_count()``
is 0 without raising, and a store cannot be made (a clear RuntimeError). With a GPU:

- exact oracle: integer-valued vectors, whose inner products are exact in float32 (and whose
  entries are exact in float16 / bfloat16), so every dtype and every kernel path (streaming for
  nq <= 8, tiled / tensor cores above) must return *exactly* ``np.argsort(-scores, kind="stable")``:
  same ids, same scores, ties broken by the lower row id -- and such scores tie a lot;
- float oracle: random unit vectors, scores within float32-level tolerance of the float64 scores of
  the stored (rounded) rows, ids equal except at near-ties;
- tombstones, k > live rows, growth over several adds, the chunk / segment merges (small limits),
  NaN and -inf scores, input validation, threads, and the zero-copy path with CuPy.
"""
from __future__ import annotations

import functools
import importlib.util
import threading

import numpy as np
import pytest
from reference import round_to

SIZES = (1, 3, 97, 1000, 70000)
KS = (1, 10, 100, 1024)
NQS = (1, 7, 1000)
DTYPES = ("float32", "float16", "bfloat16")
INT_DIM = 27  # not a multiple of 4 or 8: rows are padded on the device


def _cuda_module():
    try:
        spec = importlib.util.find_spec("ragcore._cuda")
    except ImportError:
        return None
    if spec is None:
        return None
    import ragcore._cuda as mod

    return mod


@pytest.fixture(scope="module")
def cu(cuda_device):
    """ragcore._cuda with a device (conftest's cuda_device: the tests using it are marked gpu)."""
    return cuda_device


# ------------------------------------------------------------------------------ helpers


def exact_topk(scores: np.ndarray, k: int, live: np.ndarray | None = None) -> np.ndarray:
    """Top-k ids of exact scores (nq, n), best first, ties by the lower id, -1 padded (no NaN)."""
    nq, n = scores.shape
    cols = np.arange(n) if live is None else np.flatnonzero(live)
    out = np.full((nq, k), -1, np.int64)
    kk = min(k, len(cols))
    if kk == 0:
        return out
    for q0 in range(0, nq, 128):
        block = scores[q0:q0 + 128][:, cols]
        kth = -np.partition(-block, kk - 1, axis=1)[:, kk - 1]
        for j in range(block.shape[0]):
            cand = np.flatnonzero(block[j] >= kth[j])
            order = np.lexsort((cand, -block[j, cand]))[:kk]
            out[q0 + j, :kk] = cols[cand[order]]
    return out


@functools.lru_cache(maxsize=None)
def int_data(n: int):
    rng = np.random.default_rng(1000 + n)
    x = rng.integers(-2, 3, size=(n, INT_DIM)).astype(np.float32)
    q = rng.integers(-2, 3, size=(max(NQS), INT_DIM)).astype(np.float32)
    return x, q


@functools.lru_cache(maxsize=None)
def int_oracle(n: int, nq: int):
    x, q = int_data(n)
    scores = q[:nq] @ x.T  # small integers: exact in float32
    return scores, exact_topk(scores, max(KS))


_stores: dict = {}


def int_store(cu, dtype: str, n: int):
    key = (dtype, n)
    if key not in _stores:
        s = cu.DenseStore(INT_DIM, dtype, 0)
        s.add(int_data(n)[0])
        _stores[key] = s
    return _stores[key]


def check_exact(idx, sc, scores, want, k):
    nq = scores.shape[0]
    assert idx.shape == (nq, k) and sc.shape == (nq, k)
    assert idx.dtype == np.int64 and sc.dtype == np.float32
    np.testing.assert_array_equal(idx, want[:, :k])
    valid = want[:, :k] >= 0
    expect = np.where(valid, np.take_along_axis(scores, np.maximum(want[:, :k], 0), 1), -np.inf)
    np.testing.assert_array_equal(sc, expect.astype(np.float32))


def check_approx(idx, sc, true, k, tol, live=None):
    """Scores within tol of the true ones; sorted; complete up to near-ties; ids equal elsewhere."""
    nq, n = true.shape
    live = np.ones(n, bool) if live is None else live
    nv = min(k, int(live.sum()))
    assert idx.shape == (nq, k) and sc.shape == (nq, k)
    assert (idx[:, nv:] == -1).all() and np.isneginf(sc[:, nv:]).all()
    if nv == 0:
        return
    vi, vs = idx[:, :nv], sc[:, :nv]
    assert (vi >= 0).all() and (vi < n).all() and live[vi].all()
    assert all(len(np.unique(r)) == nv for r in vi)
    t = np.take_along_axis(true, vi, 1)
    np.testing.assert_allclose(vs, t, rtol=0, atol=tol)
    d = np.diff(vs, axis=1)
    assert (d <= 0).all(), "scores not sorted best first"
    assert (np.diff(vi, axis=1)[d == 0] > 0).all(), "equal scores not ordered by the lower id"
    tl = np.where(live, true, -np.inf)
    want = exact_topk(tl, min(nv + 1, int(live.sum())))  # one more: the last slot's neighbour
    kth = np.take_along_axis(tl, want[:, nv - 1:nv], 1)[:, 0]
    assert (t >= kth[:, None] - 2 * tol).all(), "a returned row is clearly below the k-th best"
    for j in range(nq):
        must = np.flatnonzero(tl[j] > kth[j] + 2 * tol)
        assert np.isin(must, vi[j]).all(), "a row clearly above the k-th best is missing"
        ws = tl[j, want[j]]
        gap = np.minimum(np.abs(np.diff(ws, prepend=np.inf)), np.abs(np.diff(ws, append=-np.inf)))
        clear = (gap > 2 * tol)[:nv]  # ids must agree wherever no other row is within 2 tol
        np.testing.assert_array_equal(vi[j][clear], want[j][:nv][clear])


def unit_rows(rng, n, dim):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


TOL = {"float32": 1e-5, "float16": 3e-5, "bfloat16": 6e-5}


# ------------------------------------------------------------------- without a GPU too
def test_module_imports_when_built():
    mod = _cuda_module()
    if mod is None:
        pytest.skip("ragcore._cuda is not built (no CUDA compiler when ragcore was built)")
    for name in ("device_count", "device_name", "DenseStore"):
        assert hasattr(mod, name)
    assert mod.MAX_K == 1024


def test_device_count_never_raises():
    mod = _cuda_module()
    if mod is None:
        pytest.skip("ragcore._cuda is not built")
    n = mod.device_count()
    assert isinstance(n, int) and n >= 0


def test_no_gpu_is_a_clear_error():
    mod = _cuda_module()
    if mod is None:
        pytest.skip("ragcore._cuda is not built")
    if mod.device_count() > 0:
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        mod.DenseStore(8, "float32")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        mod.DenseStore(8, "float16", 0)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        mod.device_name(0)


def test_constructor_arguments_checked_before_the_device():
    mod = _cuda_module()
    if mod is None:
        pytest.skip("ragcore._cuda is not built")
    with pytest.raises(ValueError, match="float64"):
        mod.DenseStore(8, "float64")
    with pytest.raises(ValueError, match="dim must be >= 1, got 0"):
        mod.DenseStore(0, "float32")


# ---------------------------------------------------------------------- exact oracle
@pytest.mark.parametrize("nq", NQS)
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_exact_against_stable_argsort(cu, dtype, n, k, nq):
    store = int_store(cu, dtype, n)
    scores, want = int_oracle(n, nq)
    idx, sc = store.search(int_data(n)[1][:nq], k)
    check_exact(idx, sc, scores, want, k)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nq", (1, 7, 300))
@pytest.mark.parametrize("limits", [(5000, 2048, 0), (4096, 300, 128), (1000, 64, 100), (129, 17, 7)],
                         ids=["chunk5000", "seg300-qb128", "seg64-qb100", "tiny"])
def test_chunk_and_segment_merges(cu, dtype, nq, limits):
    """Small limits: many chunks, many segments (multi-level merges), several query blocks."""
    n = 70000 if limits[0] >= 1000 else 3000
    s = cu.DenseStore(INT_DIM, dtype, 0)
    s.add(int_data(n)[0])
    s._set_limits(*limits)
    scores, want = int_oracle(n, nq)
    for k in (1, 100, 1024):
        idx, sc = s.search(int_data(n)[1][:nq], k)
        check_exact(idx, sc, scores, want, k)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nq", (1, 7, 1000))
def test_tombstones(cu, dtype, nq):
    n = 1000
    x, q = int_data(n)
    s = cu.DenseStore(INT_DIM, dtype, 0)
    s.add(x)
    scores = q[:nq] @ x.T
    rng = np.random.default_rng(7)
    dead = rng.random(n) < 0.3
    dead[exact_topk(scores[:1], 5)[0]] = True  # the best rows of query 0
    s.set_deleted(np.flatnonzero(dead).astype(np.int64))
    s.set_deleted(np.flatnonzero(dead)[:10].astype(np.int64))  # again: idempotent
    assert s.size == n
    for k in (1, 10, 1024):
        idx, sc = s.search(q[:nq], k)
        assert not dead[idx[idx >= 0]].any()
        check_exact(idx, sc, scores, exact_topk(scores, k, ~dead), k)
    s.set_deleted(np.arange(n, dtype=np.int64))
    idx, sc = s.search(q[:nq], 10)
    assert (idx == -1).all() and np.isneginf(sc).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_k_larger_than_live_rows_and_empty(cu, dtype):
    s = cu.DenseStore(5, dtype, 0)
    idx, sc = s.search(np.ones((3, 5), np.float32), 4)
    assert (idx == -1).all() and np.isneginf(sc).all() and idx.shape == (3, 4)
    s.add(np.eye(5, dtype=np.float32)[:3])
    for nq in (1, 20):
        idx, sc = s.search(np.ones((nq, 5), np.float32), 1024)
        assert (idx[:, :3] == [0, 1, 2]).all() and (sc[:, :3] == 1).all()
        assert (idx[:, 3:] == -1).all() and np.isneginf(sc[:, 3:]).all()
    idx, sc = s.search(np.zeros((0, 5), np.float32), 7)
    assert idx.shape == (0, 7) and sc.shape == (0, 7)


# ---------------------------------------------------------------------- float oracle
@pytest.mark.parametrize("nq", NQS)
@pytest.mark.parametrize("n,dim", [(97, 99), (1000, 3), (70000, 384)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_unit_vectors_against_float64(cu, dtype, n, dim, nq):
    rng = np.random.default_rng(n + dim)
    x = unit_rows(rng, n, dim)
    q = unit_rows(rng, nq, dim)
    s = cu.DenseStore(dim, dtype, 0)
    s.add(x)
    true = q.astype(np.float64) @ round_to(x, dtype).astype(np.float64).T
    for k in (1, 100, 1024):
        idx, sc = s.search(q, k)
        check_approx(idx, sc, true, k, TOL[dtype])


@pytest.mark.parametrize("dtype", ("float16", "bfloat16"))
def test_large_queries_on_16_bit_storage(cu, dtype):
    """The tensor-core path scales each query by a power of two: |q| >> 65504 must not overflow."""
    rng = np.random.default_rng(3)
    x = unit_rows(rng, 5000, 64)
    q = unit_rows(rng, 40, 64) * np.float32(1e6)
    s = cu.DenseStore(64, dtype, 0)
    s.add(x)
    true = q.astype(np.float64) @ round_to(x, dtype).astype(np.float64).T
    idx, sc = s.search(q, 50)
    assert np.isfinite(sc).all()
    check_approx(idx, sc, true, 50, TOL[dtype] * 1e6)


# ---------------------------------------------------------------- storage and growth
@pytest.mark.parametrize("dtype", DTYPES)
def test_growth_and_to_host(cu, dtype):
    rng = np.random.default_rng(11)
    parts = [unit_rows(rng, m, 19) for m in (1, 2, 97, 1000, 3000)]
    s = cu.DenseStore(19, dtype, 0)
    assert (s.size, s.dim, s.dtype) == (0, 19, dtype)
    assert s.to_host().shape == (0, 19)
    for p in parts:
        s.add(p)
    s.add(np.zeros((0, 19), np.float32))
    allx = np.concatenate(parts)
    assert s.size == len(allx)
    host = s.to_host()
    assert host.dtype == np.float32 and host.shape == allx.shape
    np.testing.assert_array_equal(host, round_to(allx, dtype))
    one = cu.DenseStore(19, dtype, 0)
    one.add(allx)
    q = unit_rows(rng, 9, 19)
    for a, b in zip(s.search(q, 100), one.search(q, 100)):
        np.testing.assert_array_equal(a, b)


def test_nan_and_inf_scores(cu):
    x = np.array([[np.nan, 0], [1, 0], [-np.inf, 0], [2, 0], [1, 0]], np.float32)
    s = cu.DenseStore(2, "float32", 0)
    s.add(x)
    for nq in (1, 9):  # streaming and tiled kernels
        idx, sc = s.search(np.tile(np.array([[1, 0]], np.float32), (nq, 1)), 6)
        np.testing.assert_array_equal(idx, np.tile([3, 1, 4, 2, 0, -1], (nq, 1)))
        assert (sc[:, :3] == [2, 1, 1]).all() and np.isneginf(sc[:, 3]).all()
        assert np.isnan(sc[:, 4]).all() and np.isneginf(sc[:, 5]).all()


# ------------------------------------------------------------------------ validation
def test_validation(cu):
    s = cu.DenseStore(4, "float32", 0)
    s.add(np.eye(4, dtype=np.float32))
    with pytest.raises(TypeError, match="float32"):
        s.add(np.eye(4))
    with pytest.raises(TypeError, match="ndarray"):
        s.add([[1.0, 0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match=r"\(n, 4\), got \(2, 3\)"):
        s.add(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        s.add(np.zeros((4, 8), np.float32)[:, ::2])
    with pytest.raises(TypeError, match="float32"):
        s.search(np.zeros((1, 4)), 1)
    with pytest.raises(ValueError, match=r"\(n, 4\), got \(4,\)"):
        s.search(np.zeros(4, np.float32), 1)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        s.search(np.zeros((1, 4), np.float32), 0)
    with pytest.raises(ValueError, match="1024.*got 1025"):
        s.search(np.zeros((1, 4), np.float32), 1025)
    with pytest.raises(IndexError, match="4"):
        s.set_deleted(np.array([4], np.int64))
    with pytest.raises(IndexError, match="-1"):
        s.set_deleted(np.array([-1], np.int64))
    with pytest.raises(TypeError, match="int64"):
        s.set_deleted(np.array([1], np.int32))
    with pytest.raises(ValueError, match="device"):
        cu.DenseStore(4, "float32", cu.device_count())
    host = np.zeros((1, 4), np.float32)
    out_i = np.zeros((1, 1), np.int64)
    out_s = np.zeros((1, 1), np.float32)
    with pytest.raises(ValueError, match="device memory"):  # host pointers are refused, not crashed on
        s.search_device(host.ctypes.data, 1, 1, out_i.ctypes.data, out_s.ctypes.data)
    assert isinstance(cu.device_name(0), str) and cu.device_name(0)
    assert "DenseStore" in repr(s)


def test_threads_share_a_store(cu):
    rng = np.random.default_rng(5)
    s = cu.DenseStore(32, "float16", 0)
    s.add(unit_rows(rng, 20000, 32))
    qs = [unit_rows(rng, nq, 32) for nq in (1, 5, 50, 300)]
    want = [s.search(q, 64) for q in qs]
    errors = []

    def work():
        try:
            for _ in range(5):
                for q, (wi, ws) in zip(qs, want):
                    i, sc = s.search(q, 64)
                    np.testing.assert_array_equal(i, wi)
                    np.testing.assert_array_equal(sc, ws)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


# -------------------------------------------------------------------- zero-copy (CuPy)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nq", (1, 7, 1000))
def test_search_device_with_cupy(cu, dtype, nq):
    cp = pytest.importorskip("cupy", reason="CuPy is not installed")
    n = 70000
    s = int_store(cu, dtype, n)
    q = int_data(n)[1][:nq]
    want_i, want_s = s.search(q, 100)
    dq = cp.asarray(q)
    cp.cuda.Device().synchronize()  # the upload ran on the null stream; the non-blocking one does not wait for it
    for stream in (cp.cuda.Stream.null, cp.cuda.Stream(non_blocking=True)):
        with stream:
            out_i = cp.full((nq, 100), -7, dtype=cp.int64)
            out_s = cp.zeros((nq, 100), dtype=cp.float32)
            s.search_device(dq.data.ptr, nq, 100, out_i.data.ptr, out_s.data.ptr, stream.ptr)
            stream.synchronize()
        np.testing.assert_array_equal(cp.asnumpy(out_i), want_i)
        np.testing.assert_array_equal(cp.asnumpy(out_s), want_s)
