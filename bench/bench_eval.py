"""The cost of evaluation itself: ragcore.evaluate against pytrec_eval and ranx, in one run.

A synthetic run of N queries x H hits (random scores, fixed seed) and qrels of 50 graded judgements per
query; metrics ndcg@10, recall@100, map@100, precision@10. Figures: queries scored per second (median of
repeats, after a warm-up), one process, one thread (ranx's numba kernels pinned to one thread too), and
agreement of the means with pytrec_eval.

    python bench/bench_eval.py                      # 10,000 queries x 1,000 hits
    python bench/bench_eval.py --queries 1000       # quicker
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

METRICS = ["ndcg@10", "recall@100", "map@100", "precision@10"]
TREC = {"ndcg@10": ("ndcg_cut.10", "ndcg_cut_10"), "recall@100": ("recall.100", "recall_100"),
        "map@100": ("map_cut.100", "map_cut_100"), "precision@10": ("P.10", "P_10")}
RANX = {"ndcg@10": "ndcg@10", "recall@100": "recall@100", "map@100": "map@100", "precision@10": "precision@10"}


def make(n_queries, hits, seed=0):
    rng = np.random.default_rng(seed)
    run, qrels = {}, {}
    for i in range(n_queries):
        docs = rng.choice(1_000_000, hits + 50, replace=False)
        run[f"q{i}"] = {f"d{d}": float(s) for d, s in zip(docs[:hits], rng.random(hits))}
        judged = np.concatenate([docs[: 25], docs[hits: hits + 25]])  # half of them retrieved
        qrels[f"q{i}"] = {f"d{d}": int(g) for d, g in zip(judged, rng.integers(0, 4, len(judged)))}
    return run, qrels


def timed(fn, repeats):
    fn()  # warm-up (numba compilation for ranx)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--hits", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    import ragcore as rc

    run, qrels = make(args.queries, args.hits)
    rows = {}
    t, ours = timed(lambda: rc.evaluate(run, qrels, METRICS).mean, args.repeats)
    rows["ragcore"] = {"seconds": t, "queries_per_s": args.queries / t, "mean": ours}
    try:
        import pytrec_eval

        measures = {v[0] for v in TREC.values()}

        def trec():
            res = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
            return {m: float(np.mean([r[TREC[m][1]] for r in res.values()])) for m in METRICS}

        t, ref = timed(trec, args.repeats)
        rows["pytrec_eval"] = {"seconds": t, "queries_per_s": args.queries / t, "mean": ref}
    except ImportError:
        ref = None
    try:
        import ranx

        def rx():
            res = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), [RANX[m] for m in METRICS], threads=1)
            return {m: float(res[RANX[m]]) for m in METRICS}

        t, rres = timed(rx, args.repeats)
        rows["ranx"] = {"seconds": t, "queries_per_s": args.queries / t, "mean": rres}
    except ImportError:
        pass
    lines = [f"# Evaluation cost: {args.queries:,} queries x {args.hits:,} hits, metrics {', '.join(METRICS)}", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, one thread; "
             f"median of {args.repeats} after a warm-up (ranx includes building its Qrels/Run objects, "
             "pytrec_eval its evaluator, as a user calls them).", "",
             "| engine | seconds | queries/s | ragcore ÷ engine | max |mean - pytrec_eval| |", "|---|---:|---:|---:|---:|"]
    for name, r in rows.items():
        diff = max(abs(r["mean"][m] - ref[m]) for m in METRICS) if ref else float("nan")
        ratio = rows["ragcore"]["queries_per_s"] / r["queries_per_s"]
        lines.append(f"| {name} | {r['seconds']:.2f} | {r['queries_per_s']:,.0f} | {ratio:.2f}x | {diff:.1e} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.md").write_text(text)
    (out / "eval.json").write_text(json.dumps({"queries": args.queries, "hits": args.hits, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
