#!/usr/bin/env python
"""Sparse retrieval benchmark over this project's data sets: ``ragcore.bench.run`` on each, one report.

ragcore BM25 / TF-IDF against bm25s (numpy, numba), tantivy, rank_bm25 and scikit-learn, on the BEIR
samples (msmarco-5k, dbpedia-5k: _common.DATA_DIR) and synthetic Zipf corpora (``ragcore bench --synthetic``). The engines, their
processes, the timing and the memory figures are ragcore.bench's; this script picks the data sets and the
figures (k 10 and 100, one and all threads, single and batch calls, text and pre-tokenized queries, a
filtered batch; on the BEIR sets also the `plain` analyzer's build and nDCG@10) and writes
<out>/sparse.json and <out>/sparse.md.  See bench/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]   # bench helpers; the in-tree ragcore

import _common as C  # noqa: E402
from ragcore import bench  # noqa: E402

ZIPF_SETS = {"zipf-100k": 100_000, "zipf-1m": 1_000_000}
ZIPF_QUICK = {"zipf-100k": 2_000, "zipf-1m": 10_000}
BM25_PEERS = ("bm25s-numba", "tantivy")   # ragcore-bm25's ratio is against the faster of these
TFIDF_PEERS = ("sklearn",)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=None,
                    help="comma list of msmarco-5k,dbpedia-5k,zipf-100k,zipf-1m (default: all present)")
    ap.add_argument("--engines", default=None, help="comma list of " + ",".join(bench.engines()["sparse"])
                    + " ('ragcore' = both ragcore engines; default: all, those not installed skipped)")
    ap.add_argument("--quick", action="store_true", help="smoke test: small zipf set, k=10 only, 1 repeat")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per figure (median; default 3)")
    ap.add_argument("--out", default=str(HERE / "results"), help="output folder (sparse.json, sparse.md)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="'all threads' count")
    ap.add_argument("--zipf-queries", type=int, default=None, help="synthetic queries (default 1000)")
    ap.add_argument("--min-queries", type=int, default=None, help="queries per timed run (default 1000)")
    ap.add_argument("--max-time", type=float, default=None, help="...or seconds per timed run (default 1)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds allowed to one engine process")
    return ap.parse_args(argv)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv=None) -> None:
    a = parse_args(argv)
    quick = a.quick
    timing = dict(repeats=a.repeats or (1 if quick else 3), min_queries=a.min_queries or (100 if quick else 1000),
                  min_time=0.01 if quick else 0.2, max_time=a.max_time or (0.1 if quick else 1.0))
    present = [d for d in C.BEIR_SETS if (C.DATA_DIR / d / "corpus.jsonl").exists()]
    datasets = a.datasets.split(",") if a.datasets else (present[:1] + ["zipf-100k"] if quick
                                                          else present + list(ZIPF_SETS))
    for ds in datasets:
        if ds not in ZIPF_SETS and ds not in present:
            sys.exit(f"dataset {ds!r} is neither one of {list(ZIPF_SETS)} nor a BEIR folder in {C.DATA_DIR} "
                     f"(present: {present})")
    engines = a.engines.split(",") if a.engines else None
    n_zq = a.zipf_queries or (200 if quick else 1000)
    ks = (10,) if quick else (10, 100)
    threads = sorted({1, a.threads})
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="ragcore-bench-sparse-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` removes it on kill too
    report = {"machine": C.machine_info(), "settings": {**timing, "threads": threads, "quick": quick, "k": list(ks),
              "zipf_queries": n_zq, "datasets": datasets, "engines": engines}, "datasets": {}, "rows": [],
              "skipped": [], "errors": []}
    t_start = time.perf_counter()
    try:
        for ds in datasets:
            if ds in ZIPF_SETS:
                data = f"synthetic:{(ZIPF_QUICK if quick else ZIPF_SETS)[ds]}"
                # the quality analyzer gets every figure; on the BEIR sets the plain one gets build + nDCG@10
                passes = [("plain", dict(k=ks, threads=threads, inputs=("text", "tokens"), filter_fraction=0.5))]
            else:
                data = C.DATA_DIR / ds
                passes = [("en", dict(k=ks, threads=threads, inputs=("text", "tokens"), filter_fraction=0.5))]
                if not quick:
                    passes.append(("plain", dict(k=(10,), threads=(max(threads),), calls=("batch",))))
            for analyzer, figures in passes:
                log(f"[{ds}] analyzer {analyzer}  [{time.perf_counter() - t_start:.0f} s]")
                out = tmp / f"{ds}-{analyzer}"
                rows = bench.run(data, out, engines, modes=("sparse",), analyzer=analyzer, n_queries=n_zq,
                                 timeout=a.timeout, plots=False, log=log, **timing, **figures)
                meta = json.loads((out / "meta.json").read_text())
                for r in rows:
                    r["dataset"], r["speed"] = ds, analyzer == passes[0][0]
                report["rows"] += rows
                report["datasets"][ds] = meta["data"]
                report["skipped"] += [{**s, "dataset": ds, "analyzer": analyzer} for s in meta["skipped"]]
                report["errors"] += [{**e, "dataset": ds, "analyzer": analyzer} for e in meta["errors"]]
            write_report(report, out_dir, t_start, final=ds == datasets[-1])   # partial results survive a kill
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"done in {report['total_s']:.0f} s: {out_dir / 'sparse.md'}, {out_dir / 'sparse.json'}")


def write_report(report: dict, out_dir: Path, t_start: float, final: bool) -> None:
    from _sparse_report import markdown

    report["total_s"] = time.perf_counter() - t_start
    report["complete"] = final
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    report["ratios"] = ratios(report["rows"])
    (out_dir / "sparse.json").write_text(json.dumps(report, indent=1))
    (out_dir / "sparse.md").write_text(markdown(report))


def figure_key(r: dict) -> tuple:
    return (r["dataset"], r["analyzer"], r["k"], r["threads"], r["call"], r["input"], r["filter"])


def ratios(rows: list) -> list:
    """ragcore / fastest peer for every speed figure: BM25 vs bm25s-numba/tantivy, TF-IDF vs sklearn."""
    out = []
    for rc_key, peers in (("ragcore-bm25", BM25_PEERS), ("ragcore-tfidf", TFIDF_PEERS)):
        for r in rows:
            if r["engine"] != rc_key:
                continue
            cand = [(p["qps"], p["engine"]) for p in rows if p["engine"] in peers and figure_key(p) == figure_key(r)]
            if cand:
                best = max(cand)
                out.append({"dataset": r["dataset"], "analyzer": r["analyzer"], "engine": rc_key,
                            "figure": figure_key(r)[2:], "ragcore_qps": r["qps"], "peer": best[1],
                            "peer_qps": best[0], "ratio": r["qps"] / best[0]})
    return out


if __name__ == "__main__":
    main()
