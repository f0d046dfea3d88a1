"""One engine in its own process: ``python -m ragcore.bench._worker SPEC.json`` prints one JSON line.

The parent sets every thread knob of the environment (``_machine.THREAD_ENV``) to this process's thread
count before it starts; here the engine's own setting and threadpoolctl (when installed) pin it too. The
process builds the index (timed, peak RSS reset just before) and saves it, or reopens the one an earlier
process saved, computes the quality figures (untimed), then times each figure of the spec.
"""
from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from . import _machine as M
from ._timing import time_queries


def engine_class(key: str):
    from ._dense import DENSE
    from ._sparse import SPARSE

    return {**SPARSE, **DENSE}[key]


def _pin_threads(threads: int):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(threads)   # kept alive by the caller


def _quality(eng, spec: Dict, doc_ids, qids, queries, qrels) -> Dict:
    """nDCG@10 (rc.evaluate, trec_eval's definitions) over the judged queries; dense: recall@10 against
    the exact top-10 of the first queries. Untimed."""
    from ..eval.metrics import evaluate

    out: Dict = {}
    judged = [i for i, q in enumerate(qids) if qrels.get(q)]
    if judged:
        batch = queries[judged] if isinstance(queries, np.ndarray) else [queries[i] for i in judged]
        res = eng.quality_run(batch, 10)
        # score 10 - rank keeps each engine's own order (rc.evaluate ranks by score, ties by id)
        run = {qids[i]: {doc_ids[d]: float(10 - r) for r, d in enumerate(np.asarray(row)[:10]) if d >= 0}
               for i, row in zip(judged, res)}
        out["ndcg@10"] = evaluate(run, {qids[i]: qrels[qids[i]] for i in judged}, ["ndcg@10"]).mean["ndcg@10"]
        out["n_judged"] = len(judged)
    if spec["mode"] == "dense":
        from ._data import load_truth

        truth = load_truth(spec["data"])
        got = eng.quality_run(queries[:len(truth)], 10)
        kk = truth.shape[1]
        out["recall@10"] = float(np.mean([len(set(np.asarray(a)[:kk].tolist()) & set(b.tolist())) / kk
                                          for a, b in zip(got, truth)]))
    return out


def run(spec: Dict) -> Dict:
    """Build or reopen one engine's index and measure the figures of ``spec`` (see the runner)."""
    from ._data import load_texts, load_vectors

    threads = spec["threads"]
    if spec["mode"] == "dense" and os.environ.get("RAGCORE_DENSE_ISA"):   # bench/bench_dense.py --isa
        from .. import _core

        _core._testing.dense_set_isa(os.environ["RAGCORE_DENSE_ISA"])
    _pin_threads(threads)   # threadpoolctl's limits stay set after the call
    mode = spec["mode"]
    if mode == "dense":
        doc_ids, data, qids, queries, qrels = load_vectors(spec["data"])
    else:
        doc_ids, data, qids, queries, qrels = load_texts(spec["data"])
    cls = engine_class(spec["engine"])
    workdir = Path(spec["workdir"])
    eng = cls(spec["analyzer"], threads, workdir)
    out: Dict = {"threads": threads, "figures": []}
    if spec["build"]:
        cls(spec["analyzer"], threads).build(data[:200])  # warm-up: imports, JIT compilation, lazy set-up
        gc.collect()
        rss0, hwm_ok = M.rss_bytes(), M.reset_peak_rss()
        t0 = time.perf_counter()
        eng.build(data)
        build_s = time.perf_counter() - t0
        peak = M.peak_rss_bytes()
        index_bytes, note = eng.save()
        out["build"] = {"build_s": build_s, "build_threads": threads, "build_peak_rss_bytes": peak,
                        "build_rss_delta_bytes": peak - rss0 if hwm_ok else None,
                        "index_bytes": index_bytes, "index_note": note}
    else:
        eng.load(data)
    if spec["quality"]:
        out["quality"] = _quality(eng, spec, doc_ids, qids, queries, qrels)
    if mode == "dense":
        rows = list(queries)                 # one query: a (dim,) row
        stack = np.stack                     # a batch: one (n, dim) array, made outside the timed run
    else:
        rows, stack = list(queries), None
    tokens = eng.prep(list(queries)) if mode == "sparse" and any(f["input"] == "tokens" for f in spec["figures"]) else None
    mask = None
    if any(f.get("filter") for f in spec["figures"]):
        frac = next(f["filter"] for f in spec["figures"] if f.get("filter"))
        mask = np.random.default_rng(7).random(len(data)) < frac
    t = spec["timing"]
    for fig in spec["figures"]:
        k, single = fig["k"], fig["call"] == "single"
        base = tokens if fig["input"] == "tokens" else rows
        if fig.get("filter"):
            fn = lambda qs, k=k: eng.filtered(qs, k, mask)  # noqa: E731
        elif single:
            fn = (lambda q, k=k: eng.tok1(q, k)) if fig["input"] == "tokens" else (lambda q, k=k: eng.text1(q, k))
        else:
            fn = (lambda qs, k=k: eng.tok(qs, k)) if fig["input"] == "tokens" else (lambda qs, k=k: eng.text(qs, k))
        r = time_queries(fn, base, single=single, repeats=t["repeats"], min_queries=t["min_queries"],
                         min_time=t["min_time"], max_time=t["max_time"], prepare=None if single else stack)
        out["figures"].append({**fig, **r})
        _log(f"{spec['engine']} t={threads} k={k} {fig['call']} {fig['input']}"
             f"{' filter' if fig.get('filter') else ''}: {r['qps']:,.0f} q/s")
    out["peak_rss_bytes"] = M.peak_rss_bytes()
    out["n_docs"] = len(data)
    return out


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: List[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    print(json.dumps(run(spec)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
