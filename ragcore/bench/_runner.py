"""The orchestration of ``ragcore.bench.run``: check the arguments, prepare the data, start one process
per (engine, thread count), gather the rows, add the ratios, write the report."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .. import _validate
from . import _machine as M
from ._data import SYNTHETIC_QUERIES, prepare, resolve
from ._dense import DENSE
from ._sparse import SPARSE

MODES = ("sparse", "dense")
REGISTRY = {"sparse": SPARSE, "dense": DENSE}
#: what each mode measures when no engines are named (the dense variants are there to be named)
DEFAULT_ENGINES = {"sparse": ("ragcore-bm25", "ragcore-tfidf", "bm25s", "bm25s-numba", "tantivy", "rank_bm25",
                              "sklearn"),
                   "dense": ("ragcore-dense", "faiss", "numpy")}
ALIASES = {"sparse": {"ragcore": ("ragcore-bm25", "ragcore-tfidf")}, "dense": {"ragcore": ("ragcore-dense",)}}
#: the ragcore engine each family's rows are compared with
REFERENCE = {"bm25": "ragcore-bm25", "tfidf": "ragcore-tfidf", "dense": "ragcore-dense"}
CALLS = ("single", "batch")
INPUTS = ("text", "tokens")


def _tuple(name: str, value, allowed: Optional[Sequence[str]] = None) -> Tuple:
    vals = (value,) if isinstance(value, (str, int)) else tuple(value)
    if not vals:
        raise ValueError(f"{name}: give at least one value")
    if allowed is not None:
        bad = [v for v in vals if v not in allowed]
        if bad:
            raise ValueError(f"unknown {name} {bad[0]!r}; choose from {', '.join(allowed)}")
    return tuple(dict.fromkeys(vals))


def select_engines(engines, modes) -> Dict[str, List[str]]:
    """{mode: [engine keys]}: the named engines (aliases expanded) of each mode, or each mode's defaults."""
    if engines is None:
        return {m: list(DEFAULT_ENGINES[m]) for m in modes}
    names = _tuple("engine", engines)
    out: Dict[str, List[str]] = {m: [] for m in modes}
    every = sorted({*SPARSE, *DENSE, "ragcore"})
    for name in names:
        if not isinstance(name, str) or name not in every:
            raise ValueError(f"unknown engine {name!r}; choose from {', '.join(every)}")
        hits = [m for m in modes if name in REGISTRY[m] or name in ALIASES[m]]
        if not hits:
            other = "dense" if name in DENSE else "sparse"
            raise ValueError(f"{name} is a {other} engine: add the {other} mode"
                             + (" (--dense)" if other == "dense" else ""))
        for m in hits:
            out[m] += [e for e in ALIASES[m].get(name, (name,)) if e not in out[m]]
    return out


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (a None in sys.modules blocks it)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _figures(cls, mode: str, threads: int, ks, calls, inputs, filter_fraction) -> List[Dict]:
    if threads > 1 and not cls.multithread:
        return []
    ins = ("vectors",) if mode == "dense" else inputs
    figs = [{"k": k, "call": c, "input": i, "filter": None} for k in ks for c in calls for i in ins
            if c == "single" or cls.batch]
    if filter_fraction and cls.has_filter and "batch" in calls:
        figs += [{"k": k, "call": "batch", "input": "tokens" if mode == "sparse" else "vectors",
                  "filter": filter_fraction} for k in ks]
    return figs


def _child_env(threads: int) -> Dict[str, str]:
    env = dict(os.environ)
    env.update({v: str(threads) for v in M.THREAD_ENV})
    # the children import this very ragcore (a clone or an install alike), not another one on their path
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _run_worker(spec: Dict, tmp: Path, timeout: float) -> Dict:
    path = tmp / f"spec-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(spec))
    try:
        p = subprocess.run([sys.executable, "-m", "ragcore.bench._worker", str(path)], env=_child_env(spec["threads"]),
                           cwd=str(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    if p.returncode != 0 or not p.stdout.strip():
        tail = " | ".join(p.stderr.strip().splitlines()[-3:])
        return {"error": f"its process exited with {p.returncode}: {tail}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def run(data, out_dir=None, engines=None, k=(10,), threads=None, modes=("sparse",), *, queries=None,
        qrels=None, split: str = "test", analyzer: str = "en", vectors: str = "auto", dim: int = 384,
        calls=CALLS, inputs=("text",), filter_fraction: Optional[float] = None, repeats: int = 3,
        min_queries: int = 1000, min_time: float = 0.2, max_time: float = 1.0,
        n_queries: int = SYNTHETIC_QUERIES, seed: int = 12345, timeout: float = 1800, plots: bool = True,
        progress: bool = False, log: Optional[Callable[[str], None]] = None, note: Optional[str] = None) -> List[Dict]:
    """Measure ragcore and the installed peers on ``data``; one row per figure.

    Parameters
    ----------
    data : str or path-like
        A BEIR folder (``corpus.jsonl``, ``queries.jsonl``, optional ``qrels/<split>.tsv``: nDCG@10 where
        there are judgements), a JSONL corpus file (``{"_id", "title", "text"}`` per line; ``queries``
        required), or ``"synthetic:<size>"`` (``10k``, ``100k``, ``1m`` or any count: a seeded corpus of
        Zipfian word frequencies with ``n_queries`` queries drawn from its vocabulary, no judgements).
    out_dir : path, optional
        Where to write ``results.json`` (the rows), ``meta.json``, ``report.md`` and, with matplotlib,
        ``qps.png`` and ``latency.png``. None: write nothing.
    engines : list of str, optional
        Engine names (see :func:`engines`; ``"ragcore"`` = ragcore's engines of each mode). None: every
        default engine of each mode. An engine that is not installed is skipped with a line that says so
        (and what to install); an unknown name raises ValueError.
    k : int or sequence of int, default (10,)
        Result depths, each >= 1.
    threads : int or sequence of int, optional
        Thread counts to measure; None: 1 and every usable CPU.
    modes : sequence of {"sparse", "dense"}, default ("sparse",)
        Dense needs vectors: ``vectors="auto"`` encodes the corpus and queries with ``rc.Encoder`` (untimed)
        and falls back to random unit vectors for a synthetic corpus when no encoder is installed.
    queries, qrels : path, optional
        A queries file (JSONL, ``{"_id", "text"}``) and judgements (TSV) for a corpus file; for a BEIR
        folder they replace the folder's own.
    split : str, default "test"
        The BEIR folder's qrels split.
    analyzer : {"en", "plain"}, default "en"
        Sparse analysis for every engine: ``plain`` lowercases and splits into words of >= 2 characters;
        ``en`` also drops Lucene's English stopwords and stems (Snowball).
    vectors : {"auto", "encoder", "random"}, default "auto"
        Dense vectors: ``random`` only for a synthetic corpus (``dim`` dimensions).
    calls : sequence of {"single", "batch"}
        One query per call (latency percentiles too) and every query in one call.
    inputs : sequence of {"text", "tokens"}, default ("text",)
        Sparse queries as text (analysed in the timed path) and/or pre-tokenized outside it.
    filter_fraction : float, optional
        Also time batches restricted to this random fraction of the documents (engines with a filter).
    repeats, min_queries, min_time, max_time
        Timed runs per figure (the median is reported), and the size of one run: at least ``min_queries``
        queries and ``min_time`` seconds, at most ``max_time`` seconds.
    n_queries, seed : int
        The synthetic corpus's query count and seed.
    timeout : float
        Seconds one engine process may take.
    plots, progress : bool
        Draw the plots (needs ``ragcore[plot]``); show a progress bar (tqdm) and its messages.
    log : callable, optional
        Called with each message (skipped engines, errors, files written).
    note : str, optional
        A line for the report (e.g. the command that ran it).

    Returns
    -------
    list of dict
        One row per (engine, k, threads, call, input): ``engine``, ``mode``, ``k``, ``threads``, ``call``,
        ``input``, ``qps``, ``latency_p50_ms`` / ``p95`` / ``p99`` (single calls), ``build_s``,
        ``index_bytes``, ``peak_rss_bytes``, ``ndcg@10`` (where there are judgements), ``recall@10``
        (dense), ``ragcore_speedup`` (ragcore's qps over this row's in the same setting), and the timings.

    Raises
    ------
    ValueError, TypeError, FileNotFoundError
        Bad arguments or data (a missing folder, a queries file without ids, an unknown engine, ``k=0``),
        before any engine starts. An engine that fails is reported in the log and ``meta.json``, not raised.
    """
    t_start = time.perf_counter()
    modes = _tuple("mode", modes, MODES)
    ks = sorted({_validate.check_k(x) for x in _tuple("k", k)})
    all_threads = M.usable_cpus()
    ths = sorted({1, all_threads} if threads is None else {_validate.threads(t) for t in _tuple("threads", threads)})
    if analyzer not in ("en", "plain"):
        raise ValueError(f"analyzer must be 'en' or 'plain', got {analyzer!r}")
    if vectors not in ("auto", "encoder", "random"):
        raise ValueError(f"vectors must be 'auto', 'encoder' or 'random', got {vectors!r}")
    calls = _tuple("call", calls, CALLS)
    inputs = _tuple("input", inputs, INPUTS)
    if filter_fraction is not None and not 0 < filter_fraction < 1:
        raise ValueError(f"filter_fraction must be between 0 and 1, got {filter_fraction}")
    for name, val, lo in (("repeats", repeats, 1), ("min_queries", min_queries, 1), ("n_queries", n_queries, 1),
                          ("dim", dim, 1)):
        _validate.check_int(name, val, lo)
    if not (min_time >= 0 and max_time > 0):
        raise ValueError(f"min_time must be >= 0 and max_time > 0, got {min_time}, {max_time}")
    chosen = select_engines(engines, modes)
    src = resolve(data, queries, qrels, split)
    out = Path(out_dir) if out_dir is not None else None
    say = log or (lambda msg: None)
    from tqdm.auto import tqdm

    if progress:
        say = (lambda msg, _say=say: (tqdm.write(msg, file=sys.stderr), _say(msg) if log else None))

    machine = M.machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="ragcore-bench-"))
    try:
        prepared = prepare(src, tmp, modes=modes, vectors=vectors, dim=dim, n_queries=n_queries, seed=seed, log=say)
        info = prepared["info"]
        skipped, errors, jobs = [], [], []
        for mode in modes:
            for key in chosen[mode]:
                cls = REGISTRY[mode][key]
                missing = [pip for mod, pip in cls.requirements(analyzer) if not installed(mod)]
                if missing:
                    skipped.append({"engine": key, "mode": mode,
                                    "reason": f"not installed (pip install {' '.join(missing)})"})
                elif cls.max_docs and info["n_docs"] > cls.max_docs:
                    skipped.append({"engine": key, "mode": mode, "reason": cls.skip_reason})
                else:
                    jobs.append((mode, key, cls))
        for s in skipped:
            say(f"skipped {s['engine']}: {s['reason']}")
        timing = {"repeats": repeats, "min_queries": min_queries, "min_time": min_time, "max_time": max_time}
        procs = [(mode, key, cls, t) for mode, key, cls in jobs
                 for t in sorted((t for t in ths if cls.multithread or t == 1), reverse=True)]

        bar = tqdm(total=len(procs), desc="bench", unit="process", disable=not progress)
        results: Dict[Tuple[str, str], List[Dict]] = {}
        for mode, key, cls, t in procs:
            first = (mode, key) not in results
            if not first and results[(mode, key)] is None:
                bar.update(1)
                continue   # its build failed
            wd = tmp / f"{mode}-{key}"
            wd.mkdir(exist_ok=True)
            spec = {"engine": key, "mode": mode, "analyzer": analyzer, "data": prepared["spec"], "workdir": str(wd),
                    "build": first, "threads": t, "quality": first, "timing": timing,
                    "figures": _figures(cls, mode, t, ks, calls, inputs, filter_fraction)}
            bar.set_postfix_str(f"{key}, {t} thread{'s' if t > 1 else ''}")
            res = _run_worker(spec, tmp, timeout)
            bar.update(1)
            if "error" in res:
                errors.append({"engine": key, "mode": mode, "threads": t, "error": res["error"]})
                say(f"error: {key} ({t} thread{'s' if t > 1 else ''}): {res['error']}")
                if first:
                    results[(mode, key)] = None
                continue
            results.setdefault((mode, key), []).append(res)
        bar.close()
        rows = _rows(results, info, analyzer)
        machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
        meta = {"machine": machine, "data": info, "skipped": skipped, "errors": errors,
                "settings": {"modes": list(modes), "k": ks, "threads": ths, "analyzer": analyzer, "calls": list(calls),
                             "inputs": list(inputs), "filter_fraction": filter_fraction, **timing,
                             "engines": {m: chosen[m] for m in modes}},
                "note": note, "total_s": time.perf_counter() - t_start}
        if out is not None:
            from ._report import write

            for line in write(rows, meta, out, plots):
                say(line)
        return rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _rows(results: Dict, info: Dict, analyzer: str) -> List[Dict]:
    """One row per measured figure, with its engine's build, memory and quality figures, then the ratios."""
    rows = []
    for (mode, key), procs in results.items():
        if not procs:
            continue
        cls = REGISTRY[mode][key]
        build = next(p for p in procs if "build" in p)
        shared = {"engine": key, "mode": mode, "family": cls.family, "dataset": info["name"], "n_docs": build["n_docs"],
                  **build["build"], "peak_rss_bytes": build["peak_rss_bytes"], **build.get("quality", {})}
        if mode == "sparse":
            shared["analyzer"] = analyzer
        for p in procs:
            for fig in p["figures"]:
                rows.append({**shared, "threads": p["threads"], "process_peak_rss_bytes": p["peak_rss_bytes"],
                             "batch_kind": cls.batch if fig["call"] == "batch" else None, **fig})
    by = {(r["dataset"], r["engine"], r["k"], r["threads"], r["call"], r["input"], r["filter"]): r for r in rows}
    for r in rows:
        ref = by.get((r["dataset"], REFERENCE[r["family"]], r["k"], r["threads"], r["call"], r["input"], r["filter"]))
        r["ragcore_speedup"] = ref["qps"] / r["qps"] if ref and r["qps"] else None
    return rows
