"""Dense top-k search: ragcore.DenseIndex against faiss-cpu IndexFlatIP and numpy, in one run.

Collections of random unit vectors (fixed seed), 384 dimensions, 100k and 1M rows; queries are other
random unit vectors. For each engine: one query per call ("batch 1", a stream of single queries) and
1000 queries in one call ("batch 1000"), k = 10 and 100, one thread and all threads. Figures: queries/s
(median of repeats after a warm-up), GB/s (bytes of the collection read per second: rows x bytes per
row x queries/s, the roofline of batch 1) and GFLOP/s (2 x rows x dim x queries/s, the roofline of
batches), beside the machine's streaming read bandwidth and its sgemm peak (numpy's BLAS), measured in
the same run. Recall@10 of float16 / int8 against exact float32 is reported on the random vectors and,
when the ONNX encoder is available, on real embeddings of the project's BEIR samples (msmarco-5k + dbpedia-5k
passages, their judged queries), with nDCG@10 of BM25, dense and hybrid (RRF, weighted) there.

    python bench/bench_dense.py                  # 100k and 1M (about 15 minutes on 2 cores)
    python bench/bench_dense.py --sizes 100000   # quicker
    python bench/bench_dense.py --quick          # smoke run (20k rows, few repeats)

Thread counts: ragcore takes `threads=`; faiss `faiss.omp_set_num_threads`; numpy's BLAS
`threadpoolctl.threadpool_limits`. One thread means one thread for every engine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]   # bench helpers; the in-tree ragcore
from _common import DATA_DIR, machine_info  # noqa: E402
from ragcore import bench  # noqa: E402
from ragcore.bench._data import unit_vectors as unit  # noqa: E402
from ragcore.bench._dense import DENSE as DENSE_ENGINES  # noqa: E402
from ragcore.bench._timing import median_time  # noqa: E402

DIM = 384
SWEEP = (0.1, 0.2, 0.3, 0.5, 1.0)  # BM25's fusion weight against dense's 1 (real-embedding part)


# ---------------------------------------------------------------------------------------------
# machine references


def read_bandwidth(threads, nbytes=1 << 30, repeats=5):
    from ragcore import _core

    a = np.ones(nbytes // 8, np.uint64)
    t = median_time(lambda: _core._testing.read_probe(a, threads), repeats)
    return nbytes / t / 1e9


def sgemm_peak(threads, repeats=5):
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((1000, DIM), dtype=np.float32)
    b = rng.standard_normal((DIM, 20000), dtype=np.float32)
    c = np.empty((1000, 20000), np.float32)
    with threadpool_limits(threads):
        t = median_time(lambda: np.matmul(a, b, out=c), repeats)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / t / 1e9


# ---------------------------------------------------------------------------------------------
# the engines are ragcore.bench's (ragcore-dense and its variants, faiss, numpy); only the probe is here

NAMES = {"ragcore-dense": "ragcore float32", "ragcore-dense-prefilter": "ragcore float32+int8 prefilter",
         "ragcore-dense-float16": "ragcore float16", "ragcore-dense-int8": "ragcore int8",
         "faiss": "faiss IndexFlatIP", "numpy": "numpy matmul+argpartition"}


class ReadProbe:
    """Not an engine: one streaming read of the float32 rows per "query" (ragcore's read_probe), timed right
    after the batch-1 rows of the same size, so their GB/s has a bandwidth reference measured beside them."""
    name = "(read probe: the float32 rows, streamed once)"
    single_only = True

    def build(self, x):
        self.x = x
        self.bytes_per_row = 4 * x.shape[1]

    def search(self, q, k, threads):
        from ragcore import _core

        _core._testing.read_probe(self.x, threads)
        return None, None


def recall_at(ids, truth, k=10):
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(ids, truth)]))


# ---------------------------------------------------------------------------------------------


def run_size(n, args, all_threads, rows_out):
    """ragcore.bench.run on n random unit vectors: one process per (engine, thread count), one query per call
    (a short stream) and batches of --batch queries (two runs: each its own query count), then the read probe."""
    engines = list(NAMES) if not args.no_numpy else [e for e in NAMES if e != "numpy"]
    print(f"\n== {n:,} x {DIM}", flush=True)
    n_single = args.single_queries if n <= 200_000 else max(args.single_queries // 4, 5)
    common = dict(engines=engines, k=(10, 100), threads=sorted({1, all_threads}), modes=("dense",), vectors="random",
                  dim=DIM, n_queries=args.batch, repeats=args.repeats, min_time=0, plots=False,
                  log=lambda m: print("  " + m, flush=True))
    rows = bench.run(f"synthetic:{n}", None, calls=("single",), min_queries=n_single, max_time=args.single_time,
                     **common)
    rows += bench.run(f"synthetic:{n}", None, calls=("batch",), min_queries=args.batch, max_time=1e9, **common)
    for r in rows:
        if r["engine"] == "ragcore-dense-prefilter" and r["call"] == "batch" and dense_isa() not in ("avx512", "amx"):
            continue   # the prefilter's batches take their own path with AMX / AVX-512 VNNI only
        eng = DENSE_ENGINES[r["engine"]]
        qps = r["qps"]
        rows_out.append(dict(n=n, engine=NAMES[r["engine"]], threads=r["threads"], k=r["k"],
                             batch=1 if r["call"] == "single" else r["n_queries"], qps=qps,
                             gbps=qps * n * eng.bytes_per_row(DIM) / 1e9, gflops=qps * 2 * n * DIM / 1e9,
                             recall10=r["recall@10"], build_s=r["build_s"], peak_rss_bytes=r["peak_rss_bytes"]))
        print(f"  {rows_out[-1]['engine']:32s} t={r['threads']} k={r['k']:3d} batch {rows_out[-1]['batch']:<5d}"
              f"{qps:10.1f} q/s {rows_out[-1]['gbps']:6.1f} GB/s", flush=True)
    probe = ReadProbe()
    probe.build(unit(np.random.default_rng(42), n, DIM))
    for threads in sorted({1, all_threads}):
        t = median_time(lambda: probe.search(None, 10, threads), args.repeats)
        rows_out.append(dict(n=n, engine=probe.name, threads=threads, k=10, batch=1, qps=1 / t,
                             gbps=n * probe.bytes_per_row / t / 1e9, gflops=2 * n * DIM / t / 1e9,
                             recall10=float("nan")))


def run_gpu(n, args, rows_out):
    """GPU rows (only with a GPU and ragcore's CUDA module): ragcore device="cuda" (float32, float16,
    bfloat16) against CuPy matmul + argpartition and, if importable, faiss-gpu GpuIndexFlatIP; GB/s
    beside the device's read bandwidth measured with a CuPy reduction."""
    import ragcore as rc

    if not rc.cuda_available():
        return None
    try:
        import cupy as cp
    except ImportError:
        cp = None
    rng = np.random.default_rng(42)
    x = unit(rng, n, DIM)
    queries = unit(np.random.default_rng(7), 1000, DIM)
    ref = {}
    if cp is not None:
        big = cp.ones(1 << 28, cp.float32)

        def sync(fn):
            def run():
                fn()
                cp.cuda.Device().synchronize()
            return run

        t = median_time(sync(lambda: big.sum()), 5)
        ref["hbm_read_gbps"] = big.nbytes / t / 1e9
        del big
    engines = []
    for dtype in ("float32", "float16", "bfloat16"):
        idx = rc.DenseIndex(DIM, metric="ip", dtype=dtype, device="cuda").add(x)
        engines.append((f"ragcore cuda {dtype}", {"float32": 4, "float16": 2, "bfloat16": 2}[dtype] * DIM,
                        lambda q, k, idx=idx: idx.search(q, k=k)))
        if dtype == "float32":
            idx32 = idx
    if cp is not None:
        # zero-copy: CuPy queries in, CuPy results out, like the CuPy rows (which copy their queries in too)
        def ragcore_cupy(q, k):
            out = idx32.search(cp.asarray(q), k=k)
            cp.cuda.Device().synchronize()
            return out
        engines.append(("ragcore cuda float32, CuPy in/out", 4 * DIM, ragcore_cupy))
        xd = cp.asarray(x)

        def cupy_search(q, k):
            s = cp.asarray(q) @ xd.T
            part = cp.argpartition(-s, k - 1, axis=1)[:, :k]
            ps = cp.take_along_axis(s, part, 1)
            order = cp.argsort(-ps, axis=1)
            out = cp.take_along_axis(part, order, 1)
            cp.cuda.Device().synchronize()
            return out
        engines.append(("cupy matmul+argpartition", 4 * DIM, cupy_search))
    try:
        import faiss

        res = faiss.StandardGpuResources()
        gidx = faiss.GpuIndexFlatIP(res, DIM)
        gidx.add(x)
        engines.append(("faiss-gpu GpuIndexFlatIP", 4 * DIM, lambda q, k: gidx.search(q, k)))
    except Exception:
        pass
    for name, bpr, fn in engines:
        for k in (10, 100):
            for batch in (1, 1000):
                qs = queries[:batch]
                t = median_time(lambda: fn(qs, k), args.repeats)
                qps = batch / t
                rows_out.append(dict(n=n, engine=name, threads="gpu", k=k, batch=batch, qps=qps,
                                     gbps=qps * n * bpr / 1e9, gflops=qps * 2 * n * DIM / 1e9, recall10=float("nan")))
                print(f"  {name:28s} k={k:3d} batch {batch:4d} {qps:10.1f} q/s {rows_out[-1]['gbps']:7.1f} GB/s "
                      f"{rows_out[-1]['gflops']:8.1f} GFLOP/s", flush=True)
    return ref


def real_embeddings(args):
    """On the project's BEIR samples (_common.DATA_DIR) with the ONNX encoder: recall@10 of float16 / int8 against exact float32, and
    nDCG@10 of BM25, dense, and their hybrids (RRF and weighted)."""
    try:
        import ragcore as rc

        enc = rc.Encoder.load(quantized=False)
    except Exception as e:  # no encoder: say so in the report
        return {"skipped": f"no encoder: {e}"}
    out = {"sets": {}}
    all_x, all_q = [], []
    for name in ("msmarco-5k", "dbpedia-5k"):
        root = DATA_DIR / name
        if not root.exists():
            continue
        corpus, queries, qrels = rc.datasets.load_beir(root)
        doc_ids, texts = list(corpus), list(corpus.values())
        qids = [q for q in queries if q in qrels]
        t0 = time.perf_counter()
        x = enc.encode(texts, batch_size=64)
        q = enc.encode([queries[i] for i in qids], batch_size=64)
        enc_s = time.perf_counter() - t0
        all_x.append(x)
        all_q.append(q)
        bm25 = rc.BM25(analyzer=rc.Analyzer(stopwords="english", stemmer="english")).index(texts, ids=doc_ids)
        dense_index = rc.DenseIndex(x.shape[1], device="cpu").add(x, ids=doc_ids)
        dense = rc.DenseRetriever(dense_index, enc)
        qtexts = [queries[i] for i in qids]
        res = {"docs": len(texts), "judged_queries": len(qids), "encode_s": enc_s}
        for label, retriever in (("BM25", bm25), ("dense", dense),
                                 ("hybrid rrf", rc.Hybrid([bm25, dense], fusion="rrf")),
                                 ("hybrid weighted", rc.Hybrid([bm25, dense], fusion="weighted"))):
            hits = retriever.search(qtexts, k=100)
            res[label] = rc.evaluate(hits, qrels, ["ndcg@10", "recall@100"], query_ids=qids).mean
        # the fusion weight: BM25 at w against dense at 1, over the same two depth-100 lists
        from ragcore.retrieval.hybrid import fuse

        hb, hd = bm25.search(qtexts, k=100), dense.search(qtexts, k=100)
        res["sweep"] = {f"{fusion} {w:g}": rc.evaluate(fuse([hb, hd], k=100, fusion=fusion, weights=[w, 1.0]),
                                                       qrels, ["ndcg@10"], query_ids=qids).mean["ndcg@10"]
                        for fusion in ("rrf", "weighted") for w in SWEEP}
        out["sets"][name] = res
        print(f"  {name}: " + ", ".join(f"{k} {v['ndcg@10']:.4f}" for k, v in res.items() if isinstance(v, dict) and 'ndcg@10' in v),
              flush=True)
    if not all_x:
        return {"skipped": "the BEIR samples (msmarco-5k, dbpedia-5k) are not there"}
    x, q = np.concatenate(all_x), np.concatenate(all_q)
    exact = rc.DenseIndex(x.shape[1], dtype="float32", device="cpu").add(x)
    truth = exact.search(q, k=10).indices
    out["recall"] = {"docs": len(x), "queries": len(q)}
    for dtype in ("float16", "int8", "float32+int8 prefilter"):
        idx = rc.DenseIndex(x.shape[1], dtype=dtype.split("+")[0], device="cpu",
                            prefilter="int8" if "prefilter" in dtype else None).add(x)
        out["recall"][dtype] = {
            "recall10_batch": recall_at(idx.search(q, k=10).indices, truth),
            "recall10_single": recall_at(np.concatenate([idx.search(q[i:i + 1], k=10).indices
                                                         for i in range(len(q))]), truth)}
    return out


def dense_isa() -> str:
    from ragcore import _core

    return _core.dense_isa()


def write_report(res, out_dir: Path, stem: str):
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(res, indent=1))
    m = res["machine"]
    lines = ["# Dense top-k search: ragcore vs faiss-cpu vs numpy\n",
             f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPUs, {m['ram_gib']} GiB, L3 {m.get('l3_cache') or '?'}; "
             f"ragcore's kernels: {res.get('ragcore_isa', '?')}; load average at start "
             f"{', '.join(f'{v:.2f}' for v in m['loadavg_at_start'])}. Command: `{res['command']}`. "
             f"Total {res['seconds']:.0f} s.\n",
             "Machine references measured in this run: streaming read "
             + ", ".join(f"{v:.1f} GB/s ({t} thread{'s' if t != '1' else ''})" for t, v in res["read_gbps"].items())
             + "; sgemm (numpy BLAS, 1000x384 @ 384x20000) "
             + ", ".join(f"{v:.1f} GFLOP/s ({t} thread{'s' if t != '1' else ''})" for t, v in res["sgemm_gflops"].items())
             + ".\n" if res["read_gbps"] else ""]
    if res.get("gpu"):
        lines.append(f"GPU: device read bandwidth (CuPy sum of 1 GiB) {res['gpu'].get('hbm_read_gbps', float('nan')):.0f} GB/s; "
                     "rows with threads = gpu, whose ratio column is against CuPy matmul + argpartition.\n")
    for n in sorted({r["n"] for r in res["rows"]}):
        lines.append(f"\n## {n:,} x {DIM}, random unit vectors\n")
        lines.append("| engine | threads | k | batch | queries/s | GB/s | GFLOP/s | recall@10 vs float32 | x faiss (GPU: x CuPy) |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        rows = [r for r in res["rows"] if r["n"] == n]
        for r in rows:
            peer = "cupy" if r["threads"] == "gpu" else "faiss"   # GPU rows: against CuPy
            ref = next((f for f in rows if f["engine"].startswith(peer) and f["threads"] == r["threads"]
                        and f["k"] == r["k"] and f["batch"] == r["batch"]), None)
            ratio = f"{r['qps'] / ref['qps']:.2f}" if ref else ""
            probe = r["engine"].startswith("(")
            gflops = "" if probe else f"{r['gflops']:.1f}"
            recall = "" if np.isnan(r["recall10"]) else f"{r['recall10']:.4f}"
            lines.append(f"| {r['engine']} | {r['threads']} | {r['k']} | {r['batch']} | {r['qps']:,.1f} | "
                         f"{r['gbps']:.1f} | {gflops} | {recall} | {'' if probe else ratio} |")
    re_ = res.get("real_embeddings", {})
    lines.append("\n## Real embeddings (all-MiniLM-L6-v2, ragcore.Encoder float32) on the BEIR samples (msmarco 5k and dbpedia 5k subsets)\n")
    if "skipped" in re_:
        lines.append(f"Skipped: {re_['skipped']}\n")
    elif re_:
        rec = re_["recall"]
        lines.append(f"Recall@10 against exact float32 ({rec['docs']:,} passages of both sets, "
                     f"{rec['queries']} judged queries):\n")
        lines.append("| dtype | recall@10 (one query per call) | recall@10 (batch) |")
        lines.append("|---|---|---|")
        for dt in ("float16", "int8", "float32+int8 prefilter"):
            if dt in rec:
                lines.append(f"| {dt} | {rec[dt]['recall10_single']:.4f} | {rec[dt]['recall10_batch']:.4f} |")
        lines.append("\nQuality (BM25: English stopwords + Snowball stemming; hybrid: BM25 + dense, depth 100):\n")
        lines.append("| set | retriever | nDCG@10 | recall@100 |")
        lines.append("|---|---|---|---|")
        for name, r in re_["sets"].items():
            for label in ("BM25", "dense", "hybrid rrf", "hybrid weighted"):
                lines.append(f"| {name} | {label} | {r[label]['ndcg@10']:.4f} | {r[label]['recall@100']:.4f} |")
        sets = {k: v for k, v in re_["sets"].items() if "sweep" in v}
        if sets:
            lines.append("\nnDCG@10 of the hybrid by BM25's weight (dense's is 1; `weights=[w, 1]`); *transfer*: the "
                         "fusion and weight that score best on the other set, applied to this one (no tuning "
                         "on the set's own queries):\n")
            lines.append("| set | fusion | " + " | ".join(f"w={w:g}" for w in SWEEP) + " | dense | transfer |")
            lines.append("|---|---|" + "---|" * (len(SWEEP) + 2))
            for name, r in sets.items():
                others = [v["sweep"] for k, v in sets.items() if k != name]
                pick = max(others[0], key=others[0].get) if others else None
                for fusion in ("rrf", "weighted"):
                    cells = " | ".join(f"{r['sweep'][f'{fusion} {w:g}']:.4f}" for w in SWEEP)
                    tr = (f"{pick}: {r['sweep'][pick]:.4f}" if pick and pick.startswith(fusion) else "")
                    lines.append(f"| {name} | {fusion} | {cells} | {r['dense']['ndcg@10']:.4f} | {tr} |")
    (out_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print(f"\nwrote {out_dir / (stem + '.md')}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--single-queries", type=int, default=40, help="queries of the batch-1 stream (100k), at least")
    ap.add_argument("--single-time", type=float, default=1.0, help="seconds of one batch-1 stream, at most")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--no-numpy", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-quality", action="store_true", help="skip the real-embedding recall / nDCG part")
    ap.add_argument("--gpu-only", action="store_true",
                    help="only the GPU rows (on a lent GPU machine: tools/device_check.sh); implies --no-quality")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--stem", default="dense")
    ap.add_argument("--isa", default="auto",
                    help="force ragcore's kernel set (amx, avx512, avx2, scalar): e.g. avx512 on an AMX machine "
                         "measures what AVX-512 CPUs without AMX run")
    args = ap.parse_args()
    if args.isa != "auto":
        from ragcore import _core

        _core._testing.dense_set_isa(args.isa)
        os.environ["RAGCORE_DENSE_ISA"] = args.isa   # ragcore.bench's engine processes set it too
    if args.quick:
        args.sizes, args.repeats, args.single_queries, args.batch, args.single_time = "20000", 2, 10, 200, 0.2
    all_threads = len(os.sched_getaffinity(0))
    t_start = time.perf_counter()
    res = {"machine": machine_info(), "command": "python bench/bench_dense.py " + " ".join(sys.argv[1:]),
           "read_gbps": {}, "sgemm_gflops": {}, "rows": [], "ragcore_isa": dense_isa()}
    if args.gpu_only:
        args.no_quality = True
    for t in sorted({1, all_threads}) if not args.gpu_only else ():
        res["read_gbps"][str(t)] = read_bandwidth(t)
        res["sgemm_gflops"][str(t)] = sgemm_peak(t)
    print("read GB/s", res["read_gbps"], "sgemm GFLOP/s", res["sgemm_gflops"], flush=True)
    for n in [int(s) for s in args.sizes.split(",")] if not args.gpu_only else ():
        run_size(n, args, all_threads, res["rows"])
    res["gpu"] = {}
    for n in [int(s) for s in args.sizes.split(",")]:
        ref = run_gpu(n, args, res["rows"])
        if ref is not None:
            res["gpu"] = ref
    if args.gpu_only and not res["rows"]:
        sys.exit("--gpu-only: no GPU rows (ragcore.cuda_available() is False: no GPU, or ragcore built without nvcc)")
    res["real_embeddings"] = real_embeddings(args) if not args.no_quality else {"skipped": "--no-quality"}
    res["seconds"] = time.perf_counter() - t_start
    write_report(res, Path(args.out), args.stem + ("-quick" if args.quick else ""))


if __name__ == "__main__":
    main()
