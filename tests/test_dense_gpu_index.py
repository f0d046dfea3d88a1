"""``DenseIndex(device="cuda")``: the Python layer above the CUDA store (ids, deletes, growth, save /
load, bad input) against a CPU ``DenseIndex`` given the same operations.

Each test runs twice: on a numpy stand-in for ``ragcore._cuda`` (``_fake_cuda``: always, so that the
bookkeeping is checked in CI on machines without a GPU; it is not the CUDA code), and on the real store
when a CUDA GPU is visible (skipped otherwise). Vectors are small integers, so inner products are exact
in float32 and the rows exact in float16 and bfloat16: every backend and dtype must return the CPU's
ids and scores exactly, ties by the lower row.
"""
from __future__ import annotations

import numpy as np
import pytest

import _fake_cuda
import ragcore as rc
import ragcore.retrieval.dense as dense_mod
from ragcore.io import storage
from ragcore.retrieval.hits import Hits

DIM = 27
GPU_DTYPES = ("float32", "float16", "bfloat16")


@pytest.fixture(params=["stand-in", pytest.param("gpu", marks=pytest.mark.gpu)])
def backend(request, monkeypatch):
    if request.param == "stand-in":
        monkeypatch.setattr(dense_mod, "_cuda_module", lambda: _fake_cuda)
    elif not rc.cuda_available():
        pytest.skip(f"no CUDA store to test: {dense_mod._no_cuda_reason()}")
    return request.param


def _vectors(n, seed):
    return np.random.default_rng(seed).integers(-8, 9, size=(n, DIM)).astype(np.float32)


def _pair(dtype):
    """A GPU index and its CPU oracle (float32 rows: the integer rows are exact in every dtype)."""
    return rc.DenseIndex(DIM, metric="ip", dtype=dtype, device="cuda"), rc.DenseIndex(DIM, metric="ip", device="cpu")


def _both(pair, method, *args, **kwargs):
    out = [getattr(ix, method)(*args, **kwargs) for ix in pair]
    if not isinstance(out[0], rc.DenseIndex):  # add returns the index, delete a count
        assert out[0] == out[1]
    return out[0]


def _assert_same_search(gpu, cpu, queries, ks=(1, 7, 1024)):
    assert len(gpu) == len(cpu)
    for k in ks:
        hg, hc = gpu.search(queries, k), cpu.search(queries, k)
        np.testing.assert_array_equal(np.asarray(hg.indices), hc.indices)
        np.testing.assert_array_equal(np.asarray(hg.scores), hc.scores)
        if hc.ids is None:
            assert hg.ids is None
        else:
            assert hg.ids.tolist() == hc.ids.tolist()


@pytest.mark.parametrize("dtype", GPU_DTYPES)
def test_adds_with_ids_equal_the_cpu(backend, dtype):
    pair = _pair(dtype)
    x = _vectors(300, 1)
    for lo, hi in ((0, 1), (1, 120), (120, 300)):
        _both(pair, "add", x[lo:hi], ids=[f"d{i}" for i in range(lo, hi)])
    assert pair[0].device == "cuda" and len(pair[0]) == 300
    _assert_same_search(*pair, _vectors(9, 2))
    _assert_same_search(*pair, x[:5])  # a query equal to a row: many exact ties elsewhere


@pytest.mark.parametrize("dtype", GPU_DTYPES)
def test_delete_then_add_then_delete(backend, dtype):
    # the host's deleted mask must grow with adds (a shorter one broke the second delete)
    pair = _pair(dtype)
    x, q = _vectors(80, 3), _vectors(6, 4)
    _both(pair, "add", x[:50], ids=list(range(50)))
    assert _both(pair, "delete", [3, 49]) == 2
    _both(pair, "add", x[50:52], ids=[50, 51])
    assert _both(pair, "delete", [51, 7]) == 2
    _both(pair, "add", x[52:], ids=list(range(52, 80)))
    assert _both(pair, "delete", 60) == 1
    assert len(pair[0]) == 80 - 5
    _assert_same_search(*pair, q)
    for ix in pair:
        with pytest.raises(KeyError, match="already deleted"):
            ix.delete([0, 51])
        with pytest.raises(KeyError, match="not in the index"):
            ix.delete(80)
    _assert_same_search(*pair, q)  # a refused delete deleted nothing


@pytest.mark.parametrize("dtype", GPU_DTYPES)
def test_index_without_ids_deletes_by_row(backend, dtype):
    pair = _pair(dtype)
    x = _vectors(40, 5)
    _both(pair, "add", x[:20])
    _both(pair, "delete", np.array([0, 19]))
    _both(pair, "add", x[20:])
    _both(pair, "delete", [39, 20])
    _assert_same_search(*pair, _vectors(4, 6), ks=(1, 5, 40))


@pytest.mark.parametrize("dtype", GPU_DTYPES)
def test_save_and_load_after_deletes_and_adds(backend, dtype, tmp_path):
    pair = _pair(dtype)
    x, q = _vectors(70, 7), _vectors(5, 8)
    _both(pair, "add", x[:40], ids=[f"d{i}" for i in range(40)])
    _both(pair, "delete", ["d1", "d2"])
    _both(pair, "add", x[40:], ids=[f"d{i}" for i in range(40, 70)])
    _both(pair, "delete", "d65")
    pair[0].info["note"] = "gpu"
    pair[0].save(tmp_path / "gpu")
    on_gpu = rc.DenseIndex.load(tmp_path / "gpu", device="cuda")
    on_cpu = rc.DenseIndex.load(tmp_path / "gpu", device="cpu")
    # rows are saved in the index's dtype; bfloat16 loads on the CPU as float32 (exact)
    assert on_gpu.dtype == dtype and on_cpu.dtype == ("float32" if dtype == "bfloat16" else dtype)
    _, saved = storage.load_index(tmp_path / "gpu", kind="dense")
    assert saved["vectors"].dtype == {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}[dtype]
    assert on_gpu.info == {"note": "gpu"} and len(on_gpu) == len(on_cpu) == 67
    for loaded in (on_gpu, on_cpu):
        _assert_same_search(loaded, pair[1], q, ks=(1, 10, 70))
        np.testing.assert_array_equal(loaded.vectors(), x)
    # the reloaded GPU index goes on working: add, delete, search
    for ix in (on_gpu, pair[1]):
        ix.add(x[:3] + 1, ids=["n0", "n1", "n2"])
        ix.delete(["n1", "d3"])
    _assert_same_search(on_gpu, pair[1], q, ks=(1, 10, 72))


@pytest.mark.parametrize("dtype", GPU_DTYPES)
def test_filters_equal_the_cpu(backend, dtype):
    # a filter joins the deleted rows on the store: the GPU index must give the CPU index's filtered results
    pair = _pair(dtype)
    x, q = _vectors(90, 15), _vectors(5, 16)
    ids = [f"d{i}" for i in range(90)]
    _both(pair, "add", x[:60], ids=ids[:60])
    _both(pair, "delete", ["d4", "d30", "d59"])
    _both(pair, "add", x[60:], ids=ids[60:])
    rng = np.random.default_rng(17)
    for allowed in (rng.random(90) < 0.4, rng.random(90) < 0.05, np.zeros(90, bool), np.ones(90, bool)):
        chosen = [ids[i] for i in np.flatnonzero(allowed)]
        for flt in (allowed, chosen, allowed.tolist()):
            for k in (1, 7, 90):
                hg, hc = pair[0].search(q, k, filter=flt), pair[1].search(q, k, filter=flt)
                np.testing.assert_array_equal(np.asarray(hg.indices), hc.indices)
                np.testing.assert_array_equal(np.asarray(hg.scores), hc.scores)
                assert hg.ids.tolist() == hc.ids.tolist()
        if not allowed.any():
            assert (np.asarray(pair[0].search(q, 5, filter=allowed).indices) == -1).all()
    _assert_same_search(*pair, q)  # a filtered search leaves the store's deleted rows as they were
    gpu = pair[0]
    with pytest.raises(ValueError, match=r"shape \(90,\).*got \(87,\)"):
        gpu.search(q, 3, filter=np.ones(len(gpu), bool))  # the mask spans the rows, deleted included
    with pytest.raises(ValueError, match="unknown id 'nope'"):
        gpu.search(q, 3, filter=["nope"])
    with pytest.raises(TypeError, match="got a dict"):
        gpu.search(q, 3, filter={"d1": True})
    with pytest.raises(ValueError, match="threads must be between"):
        gpu.search(q, 3, threads=0)  # checked, though the GPU does not use it


def test_vectors_and_repr(backend):
    gpu = rc.DenseIndex(DIM, metric="ip", dtype="float32", device="cuda")
    x = _vectors(10, 9)
    gpu.add(x)
    np.testing.assert_array_equal(gpu.vectors(), x)
    assert repr(gpu) == f"DenseIndex(dim={DIM}, metric='ip', dtype='float32', device='cuda', n=10)"


def test_cosine_normalises_rows_and_queries(backend):
    rng = np.random.default_rng(10)
    x, q = rng.standard_normal((200, DIM)).astype(np.float32), rng.standard_normal((4, DIM)).astype(np.float32)
    gpu = rc.DenseIndex(DIM, device="cuda").add(x * 7)
    cpu = rc.DenseIndex(DIM, device="cpu").add(x)
    hg, hc = gpu.search(q * 0.5, 10), cpu.search(q, 10)
    np.testing.assert_array_equal(np.asarray(hg.indices), hc.indices)
    np.testing.assert_allclose(np.asarray(hg.scores), hc.scores, atol=1e-5)


def test_bad_input_leaves_the_index_as_it_was(backend):
    pair = _pair("float32")
    x, q = _vectors(30, 11), _vectors(3, 12)
    _both(pair, "add", x, ids=[f"d{i}" for i in range(30)])
    gpu = pair[0]
    bad = x[:2].copy()
    bad[1, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gpu.add(bad, ids=["x0", "x1"])
    with pytest.raises(ValueError, match=str(DIM)):
        gpu.add(np.ones((2, DIM + 1), np.float32), ids=["x0", "x1"])
    with pytest.raises(ValueError, match="already in the index"):
        gpu.add(x[:1], ids=["d4"])
    with pytest.raises(ValueError, match="ids"):
        gpu.add(x[:1])
    with pytest.raises(ValueError, match="k"):
        gpu.search(q, 0)
    assert np.asarray(gpu.search(q, 1025).indices).shape == (3, 30)  # k capped at the live rows
    wide = rc.DenseIndex(DIM, device="cuda").add(_vectors(1100, 13))
    with pytest.raises(ValueError, match="1024"):
        wide.search(q, 1025)
    big = rc.DenseIndex(DIM, metric="ip", dtype="float16", device="cuda")
    with pytest.raises(ValueError, match="float16"):
        big.add(np.full((1, DIM), 1e6, np.float32))
    assert len(big) == 0
    _assert_same_search(*pair, q)


def test_hits_ids_of_device_arrays():
    # a GPU search with CuPy queries returns CuPy indices: ids are looked up on the host
    idx = np.array([[2, 0, -1]], np.int64)
    hits = Hits(_fake_cuda.DeviceArray(idx), _fake_cuda.DeviceArray(np.zeros((1, 3), np.float32)),
                np.array(["a", "b", "c"], dtype=object))
    assert hits.ids.tolist() == [["c", "a", None]]


def test_cupy_queries_stay_on_the_device(backend):
    if backend != "gpu":
        pytest.skip("CuPy queries go through the real store only")
    cp = pytest.importorskip("cupy")
    pair = _pair("float32")
    x, q = _vectors(200, 13), _vectors(6, 14)
    _both(pair, "add", x, ids=[f"d{i}" for i in range(200)])
    _both(pair, "delete", ["d5", "d150"])
    for queries in (q, q[0]):
        hg, hc = pair[0].search(cp.asarray(queries), 10), pair[1].search(queries, 10)
        assert isinstance(hg.indices, cp.ndarray) and isinstance(hg.scores, cp.ndarray)
        np.testing.assert_array_equal(cp.asnumpy(hg.indices), hc.indices)
        np.testing.assert_array_equal(cp.asnumpy(hg.scores), hc.scores)
        assert hg.ids.tolist() == hc.ids.tolist()
        allowed = np.arange(200) % 3 == 1
        hg, hc = pair[0].search(cp.asarray(queries), 10, filter=allowed), pair[1].search(queries, 10, filter=allowed)
        np.testing.assert_array_equal(cp.asnumpy(hg.indices), hc.indices)
        np.testing.assert_array_equal(cp.asnumpy(hg.scores), hc.scores)
    with pytest.raises(TypeError, match="float32"):
        pair[0].search(cp.asarray(q, dtype=cp.float64), 10)


@pytest.mark.slow
def test_bench_gpu_rows_run(backend, tmp_path, monkeypatch):
    """bench_dense.py's GPU rows and their report, on the stand-in (the device check runs them for real):
    the code a GPU session runs first must not have rotted unseen."""
    import importlib.util
    from pathlib import Path

    if backend != "stand-in" or importlib.util.find_spec("cupy") is not None:
        pytest.skip("with a GPU (and CuPy), tools/device_check.sh runs these rows on the real store")

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    import bench_dense

    rows = []

    class Args:
        repeats = 1

    bench_dense.run_gpu(1500, Args, rows)
    assert len(rows) == 3 * 2 * 2   # dtypes x k x batch sizes (no CuPy rows without CuPy)
    assert {r["engine"] for r in rows} >= {"ragcore cuda float32", "ragcore cuda float16", "ragcore cuda bfloat16"}
    res = {"machine": bench_dense.machine_info(), "command": "test", "read_gbps": {}, "sgemm_gflops": {},
           "rows": rows, "ragcore_isa": "?", "gpu": {}, "real_embeddings": {"skipped": "test"}, "seconds": 1.0}
    bench_dense.write_report(res, tmp_path, "gpu")
    report = (tmp_path / "gpu.md").read_text()
    assert "| ragcore cuda bfloat16 | gpu | 100 | 1000 |" in report
