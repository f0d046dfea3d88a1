"""DenseIndex(prefilter="int8"): one-query searches scan int8 codes and re-score under a proven bound (and,
with AVX-512 VNNI but no AMX, so do batches, by vpdpbusd tiles). The oracle is the same index without the
prefilter (the stored rows scored directly): ids and scores must be identical, bit for bit, on every
instruction set, for float32 and float16 rows, cosine and inner product (norms over four orders of
magnitude), near-duplicates, deletes, threads and k, one query and batches; and numpy."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import ragcore as rc
from ragcore import _core

from test_dense import check, stored, unit

ISAS = _core._testing.dense_isas()


@pytest.fixture(params=ISAS)
def isa(request):
    _core._testing.dense_set_isa(request.param)
    yield request.param
    _core._testing.dense_set_isa("auto")


def pair(x, dtype="float32", metric="cosine"):
    plain = rc.DenseIndex(x.shape[1], metric=metric, dtype=dtype, device="cpu").add(x)
    pre = rc.DenseIndex(x.shape[1], metric=metric, dtype=dtype, device="cpu", prefilter="int8").add(x)
    return plain, pre


def same(a, b):
    assert np.array_equal(a.indices, b.indices)
    assert np.array_equal(a.scores, b.scores)


def scanned(index, q, k, threads=1):
    """What the prefilter must return: the plain index's results with the kernel that re-scores its
    candidates, the one-query scan. A batch of the plain float rows returns the same on AMX (which
    re-scores with it too) and on CPUs without AVX-512 VNNI (where the prefilter's batches take the float
    rows' path as well); with AVX-512 VNNI but no AMX the plain batch's matrix-product kernel rounds
    differently, so the reference is the plain scan, one query at a time."""
    q = np.atleast_2d(q)
    if len(q) < 4 or _core.dense_isa() != "avx512":
        return index.search(q, k=k, threads=threads)
    hits = [index.search(q[i], k=k, threads=threads) for i in range(len(q))]
    return rc.Hits(np.concatenate([h.indices for h in hits]), np.concatenate([h.scores for h in hits]))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("n,dim", [(1, 1), (5, 3), (97, 33), (3000, 384), (40000, 24)])
def test_identical_to_the_plain_scan(isa, dtype, n, dim):
    rng = np.random.default_rng(n + dim)
    plain, pre = pair(rng.standard_normal((n, dim)).astype(np.float32), dtype)
    rows = stored(plain)
    for q in unit(rng, 3, dim):
        for k in (1, 10, 150):
            for threads in (1, 2, 3):
                hp, hq = plain.search(q, k=k, threads=threads), pre.search(q, k=k, threads=threads)
                same(hp, hq)
            check(hq, rows, q[None], k)
    qs = unit(rng, 29, dim)  # batches: two whole 12-query tiles and a partial one
    for k in (1, 10, 150):
        for threads in (1, 2):
            hq = pre.search(qs, k=k, threads=threads)
            same(scanned(plain, qs, k), hq)
        check(hq, rows, qs, k)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("metric", ["cosine", "ip"])
def test_near_duplicates_and_wide_norms(isa, dtype, metric):
    # rows 1e-4 apart, which the int8 estimate cannot order; ip: norms from 0.01 to 100
    rng = np.random.default_rng(5)
    base = unit(rng, 8, 96)
    x = np.repeat(base, 150, 0) + 1e-4 * rng.standard_normal((1200, 96)).astype(np.float32)
    if metric == "ip":
        x *= np.exp(rng.uniform(np.log(0.01), np.log(100), (1200, 1))).astype(np.float32)
    plain, pre = pair(x, dtype, metric)
    q = np.repeat(base[:2], 3, 0) + 1e-3 * rng.standard_normal((6, 96)).astype(np.float32)
    for k in (1, 30, 400):
        for nq in (1, 3, 6):  # the scan path (up to three queries per call), then a batch
            same(scanned(plain, q[:nq], k), pre.search(q[:nq], k=k, threads=2))


def test_deletes_ties_and_constant_rows(isa):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5000, 40)).astype(np.float32)
    x[100:200] = x[7]            # exact ties: lower index first
    x[300] = 0.0                 # a zero row (ip): scale 1, codes 0
    plain, pre = pair(x, metric="ip")
    gone = rng.choice(5000, 1500, replace=False)
    plain.delete(gone)
    pre.delete(gone)
    queries = (x[7], rng.standard_normal(40).astype(np.float32), np.zeros(40, np.float32))
    for q in queries + (np.stack(queries + queries),):  # one by one, then as a batch of six
        for k in (1, 50, 5000):
            same(scanned(plain, q, k), pre.search(q, k=k, threads=2))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), dim=st.integers(1, 70), k=st.integers(1, 40), seed=st.integers(0, 2**31),
       spread=st.sampled_from([1e-6, 1e-3, 1.0]))
def test_property_equal_to_plain(n, dim, k, seed, spread):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((1, dim)).astype(np.float32)
    x = (base + spread * rng.standard_normal((n, dim))).astype(np.float32)
    plain, pre = pair(x, metric="ip")
    q = rng.standard_normal(dim).astype(np.float32)
    same(plain.search(q, k=k), pre.search(q, k=k))


def test_batches_and_adds_after_the_prefilter():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3000, 64)).astype(np.float32)
    plain, pre = pair(x[:1000])
    for part in (x[1000:1001], x[1001:3000]):   # grows the codes with the rows
        plain.add(part)
        pre.add(part)
    assert pre.ntotal == 3000 and pre._pre.shape[0] >= 3000
    q = unit(rng, 20, 64)
    same(scanned(plain, q, 7), pre.search(q, k=7))          # blocked path
    same(plain.search(q[:1], k=7), pre.search(q[:1], k=7))  # scan path: the codes


def test_set_prefilter_and_persistence(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2000, 32)).astype(np.float32)
    ids = [f"d{i}" for i in range(2000)]
    plain = rc.DenseIndex(32, dtype="float16", device="cpu").add(x, ids=ids)
    q = unit(rng, 1, 32)
    want = plain.search(q, k=20)
    plain.save(tmp_path / "plain")
    meta = json.loads((tmp_path / "plain" / "manifest.json").read_text())["meta"]
    assert meta["prefilter"] is None
    # adding the prefilter to a loaded, mapped (read-only) index; then save / load it
    back = rc.DenseIndex.load(tmp_path / "plain", device="cpu").set_prefilter("int8")
    assert "prefilter='int8'" in repr(back)
    same(back.search(q, k=20), want)
    back.delete(["d3", "d5"])
    back.save(tmp_path / "pre")
    again = rc.DenseIndex.load(tmp_path / "pre", device="auto")
    assert again.prefilter == "int8" and again.device == "cpu" and isinstance(again._pre, np.memmap)
    assert again.search(q, k=20).ids.tolist() == back.search(q, k=20).ids.tolist()
    again.add(x[:3], ids=["n0", "n1", "n2"])  # copies the mapped rows and codes first
    same(again.search(q, k=20), rc.DenseIndex.load(tmp_path / "pre").add(x[:3], ids=["n0", "n1", "n2"])
         .set_prefilter(None).search(q, k=20))
    # dropping it: no codes saved
    again.set_prefilter(None).save(tmp_path / "dropped")
    assert not list((tmp_path / "dropped").glob("pre_*"))
    assert rc.DenseIndex.load(tmp_path / "dropped").prefilter is None


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="prefilter must be None or 'int8'"):
        rc.DenseIndex(4, device="cpu", prefilter="int4")
    with pytest.raises(ValueError, match="float32 or float16 rows, not dtype='int8'"):
        rc.DenseIndex(4, dtype="int8", device="cpu", prefilter="int8")
    with pytest.raises(ValueError, match="CPU feature"):
        rc.retrieval.dense._check_prefilter("int8", "float32", "cuda")
    index = rc.DenseIndex(4, device="cpu", prefilter="int8").add(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        index.add(np.full((1, 4), np.nan, np.float32))
    assert index.ntotal == 4 and np.array_equal(index._pre[:4], np.eye(4, dtype=np.int8) * 127)
    # the binding checks what it is given
    data, q = index._data[:4], np.eye(4, dtype=np.float32)[:1]
    with pytest.raises(ValueError, match=r"\(4, 4\) float32 aux|\(n, 4\)"):
        _core.dense_search(data, None, None, q, 1, 1, index._pre[:4], None)
    with pytest.raises(ValueError, match=r"C-contiguous \(4, 4\) array"):
        _core.dense_search(data, None, None, q, 1, 1, index._pre[:3], index._pre_aux[:4])
    with pytest.raises(TypeError, match="int8"):
        _core.dense_search(data, None, None, q, 1, 1, index._pre_aux[:4], index._pre_aux[:4])
    # a saved prefilter without its codes is refused on load
    index.save(tmp_path / "d")
    man_path = tmp_path / "d" / "manifest.json"
    man = json.loads(man_path.read_text())
    del man["files"]["pre_codes"]
    man_path.write_text(json.dumps(rc.io.storage.seal_manifest(man)))   # an edit with its checksum recomputed
    with pytest.raises(ValueError, match="not a valid dense index: an int8 prefilter without its"):
        rc.DenseIndex.load(tmp_path / "d")


@pytest.mark.parametrize("fill", [0, 30])   # 30 rows far below: the two rows inside a 16-row SIMD block
@pytest.mark.parametrize("which", ["row", "query"])
def test_the_bound_covers_each_quantisation_error(isa, which, fill):
    # Two rows whose int8 estimates order them wrongly: row 0 is the better one but is estimated at 0,
    # row 1 is estimated above it. Only the row-residual term ("row") or the query-error term ("query")
    # of the bound keeps row 0 a candidate; without it the prefilter would return row 1.
    h = 0.5 / 127 - 1e-6                                       # just under half an int8 step
    if which == "row":
        q = np.array([0.0, 1.0], np.float32)                   # exact in int8
        x = np.array([[1.0, h], [0.5, 0.003]], np.float32)     # codes [127, 0] and [127, 1]
    else:
        q = np.array([1.0, h], np.float32)                     # its second component rounds to 0
        x = np.array([[0.0, 1.0], [0.003, 0.0]], np.float32)   # exact in int8
    far = np.zeros((fill, 2), np.float32)
    far[:, 0 if which == "query" else 1] = -1.0               # scores -1
    x = np.concatenate([x, far])
    plain, pre = pair(x, metric="ip")
    codes, aux = pre._pre[:2], pre._pre_aux[:2]
    est = aux[:, 0] * (np.abs(q).max() / 127) * (codes.astype(np.int32) @ np.rint(q / (np.abs(q).max() / 127)))
    assert est[1] > est[0] and float(x[0] @ q) > float(x[1] @ q)   # the estimates are the wrong way round
    want = plain.search(q, k=1)
    assert want.indices.tolist() == [[0]]
    same(pre.search(q, k=1), want)
    batch = np.repeat(q[None], 5, 0)   # the batch path (vpdpbusd tiles where they run) has the same bound
    same(pre.search(batch, k=1), scanned(plain, batch, 1))


def numpy_prefilter(x):
    """The prefilter's codes and aux in numpy (float64 norms, rounded up by 1e-6), as dense.hpp defines them."""
    xs = x.astype(np.float32)
    amax = np.abs(xs).max(axis=1)
    scale = np.where(amax > 0, amax / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    c = np.clip(np.rint(xs / scale[:, None]), -127, 127)
    hat = c.astype(np.float64) * scale.astype(np.float64)[:, None]
    up = 1.0 + 1e-6
    aux = np.stack([scale, scale.astype(np.float64) * np.abs(c).sum(axis=1) * 0.5 * up,
                    np.sqrt((hat * hat).sum(1)) * up, np.sqrt(((xs - hat) ** 2).sum(1)) * up], 1)
    return c.astype(np.int8), aux.astype(np.float32)


@pytest.mark.parametrize("threads", [1, 3])
def test_codes_match_numpy(threads):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((5000, 37)).astype(np.float32)
    x[0] = 0.0                                   # zero row: scale 1
    x[1] = 1e-30                                 # subnormal-range scales
    x[2] *= 1e30                                 # large values
    x[3, 0], x[3, 1:] = 127.0, np.arange(36) - 17.5  # scale 1 and exact halves: ties to even
    codes, aux = rc.retrieval.dense._prefilter_codes(x, threads)
    want_c, want_a = numpy_prefilter(x)
    assert np.array_equal(codes, want_c)
    np.testing.assert_allclose(aux, want_a, rtol=1e-6, atol=0)
    # float16 rows go through float32 in chunks
    h = x[4:].astype(np.float16)
    codes, aux = rc.retrieval.dense._prefilter_codes(h)
    want_c, want_a = numpy_prefilter(h.astype(np.float32))
    assert np.array_equal(codes, want_c)
    np.testing.assert_allclose(aux, want_a, rtol=1e-6, atol=0)
    with pytest.raises(TypeError, match="float32"):
        _core.dense_prefilter_codes(h)
