#!/usr/bin/env python
"""Sparse retrieval benchmark: ragcore BM25 / TF-IDF against bm25s (numpy, numba), tantivy, rank_bm25
and scikit-learn, on the BEIR samples in ../shared/data and a synthetic Zipf corpus.

Every (dataset, engine, analyzer) runs in fresh subprocesses: one with all threads that builds the index
(build time, peak RSS, size on disk, nDCG@10) and measures the all-thread figures, one with every thread
knob at 1 (env vars + API arguments) that reopens the index and measures the one-thread figures.
Results: <out>/sparse.json and <out>/sparse.md.  See bench/README.md.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]   # bench helpers; the in-tree ragcore

import _common as C  # noqa: E402
from _sparse_engines import ALIASES, ENGINES  # noqa: E402

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMBA_NUM_THREADS", "RAYON_NUM_THREADS", "RAGCORE_NUM_THREADS")
BM25_PEERS = ("bm25s-numba", "tantivy")   # ragcore-bm25's ratio is against the faster of these
TFIDF_PEERS = ("sklearn",)
FILTER_KEY = "k10/batch/tok/filter50%"


def speed_keys(engine_cls, multi: bool, quick: bool = False) -> list[str]:
    """The measurements of one engine at one thread count: k x call mode x query input (+ filter)."""
    if multi and not engine_cls.multithread:
        return []
    keys = [f"k{k}/{mode}/{inp}" for k in ((10,) if quick else (10, 100)) for mode in ("single", "batch")
            for inp in ("text", "tok") if mode == "single" or engine_cls.batch]
    return keys + ([FILTER_KEY] if engine_cls.has_filter and not quick else [])


# ------------------------------------------------------------------------------------------------
# worker: runs in its own process


def worker(spec: dict) -> dict:
    """Build (timed) or reopen one index, then run spec["runs"] = [[threads, [figure keys]], ...]."""
    out = {"engine": spec["engine"], "analyzer": spec["analyzer"], "speed": {}}
    if spec["kind"] == "beir":
        doc_ids, texts, qids, queries, qrels = C.load_beir(spec["dataset"], spec.get("max_docs"))
    else:
        texts, queries = C.load_zipf(Path(spec["data"]))
    cls = ENGINES[spec["engine"]]
    threads0 = spec["runs"][0][0]
    eng = cls(spec["analyzer"], threads0, Path(spec["workdir"]))
    if spec["build"]:
        cls(spec["analyzer"], threads0).build(texts[:200])  # warm-up: imports, JIT compilation
        gc.collect()
        rss0, hwm_ok = C.rss_bytes(), C.reset_peak_rss()
        t0 = time.perf_counter()
        eng.build(texts)
        out["build_s"] = time.perf_counter() - t0
        peak = C.peak_rss_bytes()
        out.update(build_threads=threads0, rss_before_build=rss0, peak_rss=peak,
                   build_rss_delta=peak - rss0 if hwm_ok else None,
                   ru_maxrss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        out["index_bytes"], out["index_note"] = eng.save()
        log(f"    build {out['build_s']:.2f} s, peak RSS {peak / 2**20:.0f} MiB, "
            f"index {out['index_bytes'] / 2**20:.1f} MiB ({out['index_note']})")
    else:
        eng.load(texts)
    tok = eng.prep(queries)
    if spec["quality"]:
        res = eng.quality_run(queries)
        out["ndcg10"] = C.ndcg10([[doc_ids[i] for i in r if i >= 0] for r in res], qids, qrels)
        log(f"    nDCG@10 {out['ndcg10']:.4f}")
    mask = np.random.default_rng(7).random(len(texts)) < 0.5
    for threads, keys in spec["runs"]:
        eng.set_threads(threads)
        for key in keys:
            k, mode, inp = key.split("/")[:3]
            k = int(k[1:])
            base = queries if inp == "text" else tok
            if key == FILTER_KEY:
                run = lambda qs: eng.filtered(qs, k, mask)  # noqa: E731
            elif mode == "batch":
                run = (lambda qs: eng.text(qs, k)) if inp == "text" else (lambda qs: eng.tok(qs, k))
            else:
                one = eng.text1 if inp == "text" else eng.tok1
                run = lambda qs: [one(q, k) for q in qs]  # noqa: E731
            r = C.time_queries(run, base, spec["repeats"], spec["min_queries"], spec["min_time"],
                               spec["max_time"])
            out["speed"][f"t{'1' if threads == 1 else 'all'}/{key}"] = r
            log(f"    {threads} thr {key:<26} {r['qps']:>10.0f} q/s  ({r['n_queries']} queries, "
                f"cpu {r['cpu_util']:.2f})")
    return out


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_worker(spec: dict, tmp: Path) -> dict:
    env = dict(os.environ)
    env.update({v: str(max(t for t, _ in spec["runs"])) for v in THREAD_ENV})
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    spec_path = tmp / f"spec-{time.monotonic_ns()}.json"
    spec_path.write_text(json.dumps(spec))
    try:
        p = subprocess.run([sys.executable, __file__, "--_worker", str(spec_path)], env=env, cwd=HERE.parent,
                           stdout=subprocess.PIPE, text=True, timeout=spec["timeout"])
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {spec['timeout']} s"}
    if p.returncode != 0:
        return {"error": f"worker exited with {p.returncode} (see its stderr above)"}
    return json.loads(p.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------
# orchestration


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=None,
                    help="comma list of msmarco-5k,dbpedia-5k,zipf-100k,zipf-1m (default: all present)")
    ap.add_argument("--engines", default=None, help="comma list of " + ",".join(ENGINES)
                    + " ('ragcore' = both ragcore engines; default: all importable)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 2k-document sets, k=10 only, 1 repeat, one process per engine")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per figure (median; default 3)")
    ap.add_argument("--out", default=str(HERE / "results"), help="output folder (sparse.json, sparse.md)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="'all threads' count")
    ap.add_argument("--zipf-queries", type=int, default=None, help="synthetic queries (default 1000)")
    ap.add_argument("--min-queries", type=int, default=None, help="queries per timed run (default 1000)")
    ap.add_argument("--max-time", type=float, default=None, help="...or seconds per timed run (default 1)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds allowed to one worker process")
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def available_engines() -> list[str]:
    names = []
    for key in ENGINES:
        mod = {"ragcore-bm25": "ragcore", "ragcore-tfidf": "ragcore", "bm25s-numba": "numba",
               "rank_bm25": "rank_bm25", "sklearn": "sklearn"}.get(key, key)
        try:
            __import__(mod)
            if mod == "ragcore":
                import ragcore
                ragcore.BM25  # noqa: B018  -- the extension must be built, not just the package
            names.append(key)
        except Exception as e:  # noqa: BLE001
            log(f"engine {key} unavailable: {type(e).__name__}: {e}")
    return names


def main(argv=None) -> None:
    a = parse_args(argv)
    if a._worker:
        print(json.dumps(worker(json.loads(Path(a._worker).read_text()))))
        return
    quick = a.quick
    settings = dict(repeats=a.repeats or (1 if quick else 3), min_queries=a.min_queries or (100 if quick else 1000),
                    min_time=0.01 if quick else 0.2, max_time=a.max_time or (0.1 if quick else 1.0),
                    timeout=a.timeout)
    present = [d for d in C.BEIR_SETS if (C.DATA_DIR / d / "corpus.jsonl").exists()]
    datasets = a.datasets.split(",") if a.datasets else (present[:1] + ["zipf-100k"] if quick
                                                          else present + list(C.ZIPF_SETS))
    for ds in datasets:
        if ds not in C.ZIPF_SETS and ds not in present:
            sys.exit(f"dataset {ds!r} is neither one of {list(C.ZIPF_SETS)} nor a BEIR folder in {C.DATA_DIR} "
                     f"(present: {present})")
    if a.engines:
        engines = [e for x in a.engines.split(",") for e in ALIASES.get(x.strip(), [x.strip()])]
        bad = [e for e in engines if e not in ENGINES]
        if bad:
            sys.exit(f"unknown engines {bad}; choose from {list(ENGINES)}")
    else:
        engines = available_engines()
    n_zq = a.zipf_queries or (200 if quick else 1000)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="ragcore-bench-"))   # zipf data and indexes; removed at the end
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` removes it on kill too
    report = {"machine": C.machine_info(), "settings": {**settings, "threads_all": a.threads, "quick": quick,
              "zipf_queries": n_zq, "datasets": datasets, "engines": engines}, "datasets": {}, "rows": []}
    try:
        import ragcore
        report["machine"]["versions"]["ragcore"] = getattr(ragcore, "__version__", "in-tree")
    except Exception:  # noqa: BLE001
        pass
    log(f"machine: {report['machine']['cpu']}, {report['machine']['usable_cpus']} cpus, "
        f"{report['machine']['ram_gib']} GiB; engines: {', '.join(engines)}; datasets: {', '.join(datasets)}")
    t_start = time.perf_counter()
    try:
        for ds in datasets:
            spec0 = {"dataset": ds, **settings}
            if ds in C.ZIPF_SETS:
                n_docs = (C.ZIPF_QUICK if quick else C.ZIPF_SETS)[ds]
                d = tmp / ds
                d.mkdir()
                t0 = time.perf_counter()
                C.write_zipf(d, n_docs, n_zq)
                log(f"[{ds}] generated {n_docs:,} documents, {n_zq} queries in {time.perf_counter() - t0:.1f} s")
                spec0.update(kind="zipf", data=str(d))
                analyzers, n_q = [("plain", True)], n_zq
            else:   # a BEIR folder
                max_docs = 2000 if quick else None
                _, texts, qids, _, qrels = C.load_beir(ds, max_docs)
                n_docs, n_q = len(texts), len(qids)
                spec0.update(kind="beir", max_docs=max_docs)
                # the quality analyzer gets every figure; the plain one gets build + nDCG@10 only
                analyzers = [("en", True)] + ([] if quick else [("plain", False)])
            report["datasets"][ds] = {"n_docs": n_docs, "n_queries": n_q, "kind": spec0["kind"]}
            if spec0["kind"] == "beir":
                report["datasets"][ds]["n_judged"] = sum(q in qrels for q in qids)
            for analyzer, speed in analyzers:
                for key in engines:
                    cls = ENGINES[key]
                    row = {"dataset": ds, "engine": key, "analyzer": analyzer, "speed": {},
                           "batch": cls.batch, "tok_kind": cls.tok_kind}
                    report["rows"].append(row)
                    if cls.max_docs and n_docs > cls.max_docs:
                        row["skipped"] = cls.skip_reason
                        log(f"[{ds}] {key} ({analyzer}): skipped -- {cls.skip_reason}")
                        continue
                    workdir = tmp / f"{ds}-{key}-{analyzer}"
                    workdir.mkdir()
                    runs = [[a.threads, speed_keys(cls, True, quick) if speed else []],
                            [1, speed_keys(cls, False, quick) if speed else []]]
                    # normal: all threads + build in one process, one thread in another (env knobs at 1);
                    # quick: both in one process (a smoke test, not a measurement)
                    jobs = [runs] if quick else [[runs[0]]] + ([[runs[1]]] if speed else [])
                    for i, job in enumerate(jobs):
                        log(f"[{ds}] {key} ({analyzer} analyzer), {'/'.join(str(t) for t, _ in job)} thread(s)"
                            f"{' + build' if i == 0 else ''}  [{time.perf_counter() - t_start:.0f} s]")
                        spec = {**spec0, "engine": key, "analyzer": analyzer, "build": i == 0, "runs": job,
                                "workdir": str(workdir), "quality": i == 0 and spec0["kind"] == "beir"}
                        res = run_worker(spec, tmp)
                        if "error" in res:
                            row.setdefault("errors", []).append(f"{job[0][0]} thr: {res['error']}")
                            log(f"    ERROR: {res['error']}")
                            if i == 0:
                                break
                            continue
                        row["speed"].update(res.pop("speed"))
                        row.update(res)
                    shutil.rmtree(workdir, ignore_errors=True)
            write_report(report, out_dir, t_start, final=ds == datasets[-1])   # partial results survive a kill
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"done in {report['total_s']:.0f} s: {out_dir / 'sparse.md'}, {out_dir / 'sparse.json'}")


def write_report(report: dict, out_dir: Path, t_start: float, final: bool) -> None:
    from _sparse_report import markdown
    report["total_s"] = time.perf_counter() - t_start
    report["complete"] = final
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    add_ratios(report)
    (out_dir / "sparse.json").write_text(json.dumps(report, indent=1))
    (out_dir / "sparse.md").write_text(markdown(report))


def add_ratios(report: dict) -> None:
    """ragcore / fastest peer for every speed figure: BM25 vs bm25s-numba/tantivy, TF-IDF vs sklearn."""
    ratios = []
    for rc_key, peers in (("ragcore-bm25", BM25_PEERS), ("ragcore-tfidf", TFIDF_PEERS)):
        for row in report["rows"]:
            if row["engine"] != rc_key or not row["speed"]:
                continue
            others = [r for r in report["rows"] if r["engine"] in peers and r["dataset"] == row["dataset"]
                      and r["analyzer"] == row["analyzer"]]
            for key, val in row["speed"].items():
                cand = [(r["speed"][key]["qps"], r["engine"]) for r in others if key in r["speed"]]
                if cand:
                    best = max(cand)
                    ratios.append({"dataset": row["dataset"], "analyzer": row["analyzer"], "engine": rc_key,
                                   "figure": key, "ragcore_qps": val["qps"], "peer": best[1],
                                   "peer_qps": best[0], "ratio": val["qps"] / best[0]})
    report["ratios"] = ratios


if __name__ == "__main__":
    main()
