#!/usr/bin/env python
"""Text encoder benchmark: ragcore.Encoder (ONNX float32 and int8, onnxruntime) against sentence-transformers
(torch) on all-MiniLM-L6-v2, in one run.

Speed: sentences/s on the same passages (default: the first 2,000 of ../shared/data/msmarco-5k, text =
title + " " + text; generated text when the folder is absent), same batch size, one thread and all threads
(torch.set_num_threads / onnxruntime intra-op threads, plus the thread variables of the environment, so the
tokenizers' pool follows too), each (engine, thread count) in a fresh process: a warm-up pass over the first
128 passages, then the median of --repeats timed passes. Agreement: min / mean cosine of each engine's
embeddings to sentence-transformers' (and int8 to float32). Quality: nDCG@10 of exact cosine search on the
whole msmarco-5k (every passage and judged query encoded by each engine).

    python bench/bench_encoder.py                 # everything (~15 minutes on 2 cores)
    python bench/bench_encoder.py --quick         # 300 passages, one repeat, no nDCG (~1-2 minutes)

Writes <out>/encoder.md and <out>/encoder.json (default out: bench/results).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]   # bench helpers; the in-tree ragcore

import _common as C  # noqa: E402

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS",
              "RAYON_RS_NUM_CPUS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
ENGINES = ("sentence-transformers", "ragcore-float32", "ragcore-int8")
PEER = "sentence-transformers"
DATASET = "msmarco-5k"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# data


def generated_passages(n: int, seed: int = 0) -> list:
    """Fallback text: sentences of common English words, 5-120 words per passage (fixed seed)."""
    words = ("the of and to in is was for on that with as by at from his it an were are which this be "
             "has or had first one their its new after who they have her she two been other when there all "
             "during into school time may years more most only over city some world would where later up "
             "such used many can state about national out known university united then made team american "
             "under system what work population people century government company water series between "
             "river north south music film called number area members well season war history family").split()
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = min(120, max(5, int(rng.lognormvariate(3.6, 0.6))))
        out.append(" ".join(rng.choice(words) for _ in range(k)).capitalize() + ".")
    return out


def passages(n: int) -> tuple:
    if (C.DATA_DIR / DATASET / "corpus.jsonl").is_file():
        _, texts, _, _, _ = C.load_beir(DATASET, n)
        return texts, f"{DATASET} (first {len(texts):,} passages)"
    return generated_passages(n), f"generated text ({n:,} passages; {C.DATA_DIR / DATASET} not found)"


# ------------------------------------------------------------------------------------------------
# worker: one engine at one thread count, in its own process


def make_encoder(engine: str, threads: int, model_dir: str, batch_size: int):
    """-> encode(list of str) -> float32 (n, 384), L2-normalised."""
    if engine == PEER:
        import torch
        from sentence_transformers import SentenceTransformer
        from ragcore.models.encoder import default_source

        torch.set_num_threads(threads)
        model = SentenceTransformer(str(default_source()), device="cpu")

        def encode(texts):
            with torch.inference_mode():
                return model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                                    show_progress_bar=False)
        return encode
    from ragcore.models.encoder import Encoder

    enc = Encoder.load(model_dir, quantized=engine == "ragcore-int8", threads=threads)
    return lambda texts: enc.encode(texts, batch_size=batch_size)


def worker(spec: dict) -> dict:
    texts, _ = passages(spec["n_texts"])
    encode = make_encoder(spec["engine"], spec["threads"], spec["model_dir"], spec["batch_size"])
    encode(texts[:128])   # warm-up: lazy initialisation, memory arenas, thread pools
    times, cpus = [], []
    for _ in range(spec["repeats"]):
        c0, t0 = time.process_time(), time.perf_counter()
        emb = encode(texts)
        times.append(time.perf_counter() - t0)
        cpus.append((time.process_time() - c0) / times[-1])
    np.save(Path(spec["workdir"]) / f"{spec['engine']}-t{spec['threads']}.npy", emb)
    med = statistics.median(times)
    out = {"sentences_per_s": len(texts) / med, "seconds": med, "times": times, "cpu_util": statistics.median(cpus),
           "n_texts": len(texts)}
    log(f"    {len(texts) / med:8.1f} sentences/s  (median of {[round(t, 2) for t in times]} s, "
        f"cpu {out['cpu_util']:.2f})")
    if spec.get("quality"):
        doc_ids, docs, qids, queries, qrels = C.load_beir(DATASET)
        t0 = time.perf_counter()
        d = encode(docs)
        q = encode(queries)
        top = np.argsort(-(q @ d.T), axis=1, kind="stable")[:, :10]
        out["ndcg10"] = C.ndcg10([[doc_ids[i] for i in row] for row in top], qids, qrels)
        out["quality_docs"] = len(docs)
        log(f"    nDCG@10 {out['ndcg10']:.4f} on {DATASET} ({len(docs):,} passages encoded in "
            f"{time.perf_counter() - t0:.0f} s)")
    return out


def run_worker(spec: dict, tmp: Path) -> dict:
    env = dict(os.environ)
    env.update({v: str(spec["threads"]) for v in THREAD_ENV})
    env["TOKENIZERS_PARALLELISM"] = "true" if spec["threads"] > 1 else "false"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    spec_path = tmp / f"spec-{time.monotonic_ns()}.json"
    spec_path.write_text(json.dumps(spec))
    p = subprocess.run([sys.executable, __file__, "--_worker", str(spec_path)], env=env, cwd=HERE.parent,
                       stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        return {"error": f"worker exited with {p.returncode}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------
# report


def versions() -> dict:
    out = {}
    for dist in ("ragcore", "onnxruntime", "onnx", "tokenizers", "numpy", "torch", "sentence-transformers",
                 "transformers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def agreement(workdir: Path, rows: list) -> dict:
    """min / mean cosine between engines' embeddings of the timed passages (all-threads runs)."""
    emb = {}
    for r in rows:
        f = workdir / f"{r['engine']}-t{r['threads']}.npy"
        if f.is_file() and r["engine"] not in emb:
            emb[r["engine"]] = np.load(f)
    out = {}
    for a, b in ((PEER, "ragcore-float32"), (PEER, "ragcore-int8"), ("ragcore-float32", "ragcore-int8")):
        if a in emb and b in emb:
            cos = np.sum(emb[a].astype(np.float64) * emb[b], axis=1)
            out[f"{b} vs {a}"] = {"min": float(cos.min()), "mean": float(cos.mean()),
                                  "p01": float(np.quantile(cos, 0.01))}
    return out


def markdown(rep: dict) -> str:
    m = rep["machine"]
    v = ", ".join(f"{k} {x}" for k, x in rep["versions"].items() if x)
    s = rep["settings"]
    lines = [
        "# Text encoder benchmark: all-MiniLM-L6-v2", "",
        f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPUs ({m['logical_cpus']} logical), {m['ram_gib']} GiB RAM, "
        f"{m['platform']}; load average at start {'/'.join(f'{x:.1f}' for x in m['loadavg_at_start'])}, "
        f"at end {'/'.join(f'{x:.1f}' for x in m.get('loadavg_at_end', (0, 0, 0)))}", "",
        f"Versions: {v}", "",
        f"Data: {rep['data']}. Settings: batch size {s['batch_size']}, median of {s['repeats']} timed passes after a "
        f"warm-up, one process per (engine, threads), all threads = {s['threads']}; total run {rep['total_s']:.0f} s."
        + ("" if rep.get("complete") else " **PARTIAL: the run did not finish.**"), "",
        "| engine | threads | sentences/s | ÷ sentence-transformers | CPU use | nDCG@10 (msmarco-5k) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    peer = {r["threads"]: r for r in rep["rows"] if r["engine"] == PEER and "sentences_per_s" in r}
    for r in rep["rows"]:
        if "sentences_per_s" not in r:
            lines.append(f"| {r['engine']} | {r['threads']} | — ({r.get('error', 'skipped')}) | | | |")
            continue
        p = peer.get(r["threads"])
        ratio = f"{r['sentences_per_s'] / p['sentences_per_s']:.2f}×" if p else "—"
        nd = f"{r['ndcg10']:.4f}" if "ndcg10" in r else ""
        lines.append(f"| {r['engine']} | {r['threads']} | {r['sentences_per_s']:,.1f} | {ratio} | "
                     f"{r['cpu_util']:.2f} | {nd} |")
    if rep["agreement"]:
        lines += ["", "**Agreement** (cosine of the embeddings of the timed passages, per passage)", "",
                  "| pair | min | 1st percentile | mean |", "|---|---:|---:|---:|"]
        for k, a in rep["agreement"].items():
            lines.append(f"| {k} | {a['min']:.5f} | {a['p01']:.5f} | {a['mean']:.6f} |")
    lines += ["", "Notes: sentences/s counts the whole `encode` call (tokenization, batching, inference, pooling). "
              "Both sides sort texts by length and pad each batch to its longest text; ragcore truncates at 256 "
              "tokens like sentence-transformers. CPU use = process CPU time / wall time (about the thread count "
              "when the machine is not shared). ragcore-int8: the four dense layers of each block in int8 "
              "(7-bit per-channel weights; calibrated per-channel activation steps for query/key/value, attention "
              "output and FFN input, one scale per token for the FFN output), attention, GELU and LayerNorm in "
              "float32. Agreement compares the embeddings of the timed passages from the all-threads runs.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-texts", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="'all threads'")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--no-quality", action="store_true", help="skip nDCG@10 (encodes all of msmarco-5k per engine)")
    ap.add_argument("--quick", action="store_true", help="300 passages, 1 repeat, no nDCG")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._worker:
        print(json.dumps(worker(json.loads(Path(a._worker).read_text()))))
        return
    if a.quick:
        a.n_texts, a.repeats, a.no_quality = 300, 1, True
    engines = [e for e in a.engines.split(",") if e]
    bad = [e for e in engines if e not in ENGINES]
    if bad:
        ap.error(f"unknown engines {bad}; choose from {ENGINES}")
    import importlib.util
    if PEER in engines and not all(importlib.util.find_spec(m) for m in ("torch", "sentence_transformers")):
        log("sentence-transformers/torch not importable: the peer is skipped")
        engines.remove(PEER)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    from ragcore.models.encoder import export_encoder
    tmp = Path(tempfile.mkdtemp(prefix="bench-encoder-"))
    t_start = time.perf_counter()
    try:
        t0 = time.perf_counter()
        model_dir = str(export_encoder(None, tmp / "model"))
        export_s = time.perf_counter() - t0
        log(f"exported the encoder in {export_s:.1f} s -> {model_dir}")
        _, data_desc = passages(a.n_texts)
        quality = not a.no_quality and (C.DATA_DIR / DATASET / "qrels").is_dir()
        rep = {"machine": C.machine_info(), "versions": versions(), "data": data_desc, "export_s": export_s,
               "settings": {"batch_size": a.batch_size, "repeats": a.repeats, "threads": a.threads,
                            "n_texts": a.n_texts, "quality": quality}, "rows": []}
        for threads in ([1, a.threads] if a.threads > 1 else [1]):
            for engine in engines:
                log(f"[{engine}] {threads} thread(s)  [{time.perf_counter() - t_start:.0f} s]")
                spec = {"engine": engine, "threads": threads, "model_dir": model_dir, "n_texts": a.n_texts,
                        "batch_size": a.batch_size, "repeats": a.repeats, "workdir": str(tmp),
                        "quality": quality and threads == max(1, a.threads)}
                row = {"engine": engine, "threads": threads, **run_worker(spec, tmp)}
                rep["rows"].append(row)
        rep["agreement"] = agreement(tmp, [r for r in rep["rows"] if r["threads"] == a.threads])
        rep["total_s"] = time.perf_counter() - t_start
        rep["complete"] = True
        rep["machine"]["loadavg_at_end"] = os.getloadavg()
        (out_dir / "encoder.json").write_text(json.dumps(rep, indent=1))
        (out_dir / "encoder.md").write_text(markdown(rep))
        log(markdown(rep))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
