"""Helpers shared by the benchmarks: data sets, timing, memory, machine description, nDCG.

Nothing here imports an engine; engine adapters live in ``_sparse_engines.py``.
"""
from __future__ import annotations

import gc
import math
import os
import platform
import re
import resource
import statistics
import time
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = REPO.parent / "shared" / "data"   # ../shared/data relative to the project root
BEIR_SETS = ("msmarco-5k", "dbpedia-5k")
ZIPF_SETS = {"zipf-100k": 100_000, "zipf-1m": 1_000_000}
ZIPF_QUICK = {"zipf-100k": 2_000, "zipf-1m": 10_000}

# ---------------------------------------------------------------------------------------------
# data


def load_beir(name: str, max_docs: int | None = None):
    """Return (doc_ids, texts, query_ids, query_texts, qrels) of a BEIR folder; text = title + " " + text.

    All queries are returned (throughput uses them all); nDCG is computed over the judged ones. Read with
    ragcore's own readers (ragcore.io.corpus), which the tests check on these folders.
    """
    from itertools import islice

    from ragcore.io.corpus import iter_corpus, load_qrels, load_queries

    root = DATA_DIR / name
    docs = list(islice(iter_corpus(root), max_docs))  # max_docs None: all
    queries = load_queries(root)
    return [d for d, _ in docs], [t for _, t in docs], list(queries), list(queries.values()), load_qrels(root)


def zipf_vocab_bytes(vocab_size: int) -> np.ndarray:
    """(vocab_size, 5) uint8: word of rank r (0-based) is "w" + 4 base-26 letters of r (e.g. "waaab")."""
    r = np.arange(vocab_size, dtype=np.int64)
    out = np.empty((vocab_size, 5), dtype=np.uint8)
    out[:, 0] = ord("w")
    for pos in range(4, 0, -1):
        out[:, pos] = ord("a") + r % 26
        r //= 26
    return out


def write_zipf(path_dir: Path, n_docs: int, n_queries: int, seed: int = 12345, vocab_size: int = 200_000,
               exponent: float = 1.1, mean_len: float = 60.0, chunk_docs: int = 100_000) -> None:
    """Write corpus.txt (one document per line) and queries.txt of the synthetic Zipf corpus.

    Token ranks follow p(r) ~ r^-exponent over `vocab_size` words, Poisson(mean_len) tokens per document
    (at least 1); queries have 2-6 distinct terms with ranks log-uniform over 100..10,000. Vectorised, seeded.
    """
    rng = np.random.default_rng(seed)
    vocab = zipf_vocab_bytes(vocab_size)
    cdf = np.cumsum(np.arange(1, vocab_size + 1, dtype=np.float64) ** -exponent)
    cdf /= cdf[-1]
    with open(path_dir / "corpus.txt", "wb") as f:
        for start in range(0, n_docs, chunk_docs):
            n = min(chunk_docs, n_docs - start)
            lens = np.maximum(rng.poisson(mean_len, n), 1)
            ranks = np.searchsorted(cdf, rng.random(int(lens.sum())), side="right")
            np.minimum(ranks, vocab_size - 1, out=ranks)
            buf = np.empty((ranks.size, 6), dtype=np.uint8)
            buf[:, :5] = vocab[ranks]
            buf[:, 5] = ord(" ")
            buf[np.cumsum(lens) - 1, 5] = ord("\n")
            f.write(buf.tobytes())
    lo, hi = math.log(100), math.log(10_000)
    lines = []
    for _ in range(n_queries):
        m = int(rng.integers(2, 7))
        terms: list[int] = []
        while len(terms) < m:
            r = int(round(math.exp(rng.uniform(lo, hi))))  # 1-based rank
            if r not in terms:
                terms.append(r)
        lines.append(" ".join(vocab[r - 1].tobytes().decode() for r in terms))
    (path_dir / "queries.txt").write_text("\n".join(lines) + "\n")


def load_zipf(path_dir: Path):
    texts = (path_dir / "corpus.txt").read_text().split("\n")[:-1]
    queries = (path_dir / "queries.txt").read_text().split("\n")[:-1]
    return texts, queries


# ---------------------------------------------------------------------------------------------
# analysis shared by the pure-Python peers (rank_bm25, scikit-learn) -- same rules as ragcore.Analyzer

_TOKEN_RE = re.compile(r"(?u)\b\w\w+\b")
LUCENE_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there "
    "these they this to was will with".split())


def py_analyzer(kind: str):
    """A callable str -> list[str]: 'plain' (lowercase + \\w\\w+) or 'en' (+ Lucene stopwords + Snowball)."""
    if kind == "plain":
        return lambda text: _TOKEN_RE.findall(text.lower())
    import Stemmer
    stem = Stemmer.Stemmer("english").stemWords
    return lambda text: stem([t for t in _TOKEN_RE.findall(text.lower()) if t not in LUCENE_STOPWORDS])


# ---------------------------------------------------------------------------------------------
# timing and memory


def _cpu() -> float:
    return time.process_time()   # CPU time of every thread of this process, ns resolution


def time_queries(run, base: list, repeats: int, min_queries: int, min_time: float, max_time: float,
                 n_calib: int = 50, seed: int = 0) -> dict:
    """Median throughput of `run(queries)` over `repeats` timed runs.

    A warm-up run and a calibration run on the first `n_calib` queries of `base` come first. The timed
    list is `base` repeated (each pass shuffled, fixed seed) to >= min_queries queries and >= min_time s,
    or cut at max_time s, whichever comes first; a first timed run shorter than min_time / 2 (calibration
    disturbed) re-sizes the list. Returns dict(qps, n_queries, times, cpu_util); cpu_util = process CPU
    time (all threads) / wall time, so ~1 for one busy thread and < 1 when the machine is shared.
    """
    calib = base[:n_calib]
    run(calib)  # warm-up: JIT compilation, page cache, lazy initialisation
    t0 = time.perf_counter()
    run(calib)
    per_query = max(time.perf_counter() - t0, 1e-7) / len(calib)
    rng = np.random.default_rng(seed)
    order = [base[i] for _ in range(64) for i in rng.permutation(len(base))]
    times, cpus, n = [], [], 0
    for attempt in range(repeats + 3):
        if not n:
            n = max(min_queries, math.ceil(min_time / per_query))
            n = max(len(calib), min(n, math.ceil(max_time / per_query)))
            while len(order) < n:
                order += [base[i] for i in rng.permutation(len(base))]
            queries = order[:n]
        gc.collect()
        c0, t0 = _cpu(), time.perf_counter()
        run(queries)
        t = time.perf_counter() - t0
        if not times and t < min_time / 2 and attempt < 3:
            per_query, n = t / n, 0   # calibration was disturbed: size the list again
            continue
        times.append(t)
        cpus.append((_cpu() - c0) / t)
        if len(times) == repeats:
            break
    med = statistics.median(times)
    return {"qps": len(queries) / med, "n_queries": len(queries), "times": times,
            "cpu_util": statistics.median(cpus)}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# quality


def ndcg10(run_ids: list[list[str]], qids: list[str], qrels: dict) -> float:
    """Mean nDCG@10 (pytrec_eval) over the judged queries among qids; a query with no results counts 0.

    Documents get score 10 - rank so trec_eval keeps each engine's own order (no re-sorting of ties).
    """
    import pytrec_eval
    judged = [q for q in qids if q in qrels]
    run = {q: {d: float(10 - r) for r, d in enumerate(ids[:10])}
           for q, ids in zip(qids, run_ids) if ids and q in qrels}
    ev = pytrec_eval.RelevanceEvaluator({q: qrels[q] for q in judged}, {"ndcg_cut.10"})
    per_q = ev.evaluate(run)
    return sum(v["ndcg_cut_10"] for v in per_q.values()) / len(judged)


# ---------------------------------------------------------------------------------------------
# machine


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    l3 = None
    try:
        l3 = Path("/sys/devices/system/cpu/cpu0/cache/index3/size").read_text().strip()
    except OSError:
        pass
    versions = {"python": platform.python_version()}
    for dist in ("ragcore", "numpy", "scipy", "bm25s", "numba", "tantivy", "rank-bm25", "scikit-learn",
                 "PyStemmer", "pytrec-eval-terrier"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    if versions["ragcore"] is None:
        versions["ragcore"] = "in-tree (not installed)"
    return {"cpu": cpu, "l3_cache": l3, "logical_cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "loadavg_at_start": os.getloadavg(),
            "ram_gib": round(mem / 2**30, 1), "platform": platform.platform(), "versions": versions}
