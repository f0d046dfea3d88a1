"""Throughput and latency of a search function: warm-up, calibration, medians of timed repeats."""
from __future__ import annotations

import gc
import math
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np


def time_queries(fn: Callable, base: Sequence, *, single: bool, repeats: int, min_queries: int,
                 min_time: float, max_time: float, prepare: Optional[Callable] = None, n_calib: int = 50,
                 seed: int = 0) -> Dict:
    """Median throughput of ``fn`` over ``repeats`` timed runs; per-call latency percentiles when ``single``.

    ``single``: ``fn(query)`` answers one query per call, and each call is timed too; else ``fn(queries)``
    answers a list in one call. A warm-up run and a calibration run on the first ``n_calib`` queries come
    first. The timed list is ``base`` repeated (each pass shuffled, fixed seed) to >= ``min_queries``
    queries and >= ``min_time`` seconds, or cut at ``max_time`` seconds, whichever comes first; a first
    timed run shorter than ``min_time / 2`` (calibration disturbed) sizes the list again.

    Returns ``qps`` (queries / median run time), ``n_queries`` (per timed run), ``times_s`` (every timed
    run), ``cpu_util`` (process CPU time over wall time: ~1 for one busy thread, < 1 on a shared machine)
    and, when ``single``, ``latency_p50_ms`` / ``p95`` / ``p99`` over the calls of every timed run.
    """
    lat: List[float] = []
    if single:
        pc = time.perf_counter

        def run(qs):
            for q in qs:
                t = pc()
                fn(q)
                lat.append(pc() - t)
    else:
        run = fn
    prep = prepare or (lambda qs: qs)
    calib = prep(list(base[:n_calib]))
    run(calib)  # warm-up: JIT compilation, page cache, lazy initialisation
    t0 = time.perf_counter()
    run(calib)
    per_query = max(time.perf_counter() - t0, 1e-7) / len(calib)
    rng = np.random.default_rng(seed)
    order: List = []
    times: List[float] = []
    cpus: List[float] = []
    lats: List[float] = []
    n = 0
    queries: List = []
    timed = calib
    for attempt in range(repeats + 3):
        if not n:
            n = max(min_queries, math.ceil(min_time / per_query))
            n = max(len(calib), min(n, math.ceil(max_time / per_query)))
            while len(order) < n:
                order += [base[i] for i in rng.permutation(len(base))]
            queries = order[:n]
            timed = prep(queries)
        gc.collect()
        lat.clear()
        c0, t0 = time.process_time(), time.perf_counter()
        run(timed)
        t = time.perf_counter() - t0
        if not times and t < min_time / 2 and attempt < 3:
            per_query, n = t / n, 0   # calibration was disturbed: size the list again
            continue
        times.append(t)
        cpus.append((time.process_time() - c0) / t)
        lats += lat
        if len(times) == repeats:
            break
    out = {"qps": len(queries) / statistics.median(times), "n_queries": len(queries), "times_s": times,
           "cpu_util": statistics.median(cpus)}
    if single:
        p = np.percentile(np.asarray(lats), [50, 95, 99]) * 1e3
        out.update(latency_p50_ms=float(p[0]), latency_p95_ms=float(p[1]), latency_p99_ms=float(p[2]))
    return out


def median_time(fn: Callable, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)

