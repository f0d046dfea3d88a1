"""The data a benchmark runs on: a BEIR folder, a JSONL corpus with a queries file, or a synthetic corpus.

The parent process checks the source (clear errors before any engine starts), writes what the workers need
into the run's work folder (a synthetic corpus, dense vectors, exact top-10 for recall) and hands the
workers a JSON spec; each worker reads the data again in its own process (:func:`load_texts`,
:func:`load_vectors`).
"""
from __future__ import annotations

import math
import os
import re
from itertools import islice
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

SYNTHETIC_QUERIES = 1000
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([km]?)\s*$", re.IGNORECASE)


def parse_size(text) -> int:
    """``"10k"`` -> 10000, ``"1m"`` -> 1000000, ``"2500"`` -> 2500 (>= 1), else ValueError."""
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        n = int(text)
    else:
        m = _SIZE.match(str(text))
        if not m:
            raise ValueError(f"synthetic size {text!r}: expected a count such as 10k, 100k, 1m or 5000")
        n = int(round(float(m.group(1)) * {"": 1, "k": 1000, "m": 1_000_000}[m.group(2).lower()]))
    if n < 1:
        raise ValueError(f"synthetic size must be >= 1 document, got {text!r}")
    return n


def resolve(data, queries=None, qrels=None, split: str = "test") -> Dict:
    """Check the source and describe it: ``{"kind", "name", ...paths}`` (JSON-serialisable).

    ``data``: a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, optional ``qrels/<split>.tsv``), a JSONL
    corpus file (``queries`` then required, ``qrels`` optional), or ``"synthetic:<size>"``.
    """
    if isinstance(data, str) and data.startswith("synthetic:"):
        if queries is not None or qrels is not None:
            raise ValueError("a synthetic corpus brings its own queries (and has no judgements): "
                             "leave out queries and qrels")
        n = parse_size(data.split(":", 1)[1])
        return {"kind": "synthetic", "name": f"synthetic-{data.split(':', 1)[1].strip().lower()}", "n_docs": n}
    if data is None:
        raise ValueError("no data: give a BEIR folder, a JSONL corpus with its queries, or a synthetic size")
    p = Path(os.fspath(data)).absolute()   # the engine processes run in another folder
    if not p.exists():
        raise FileNotFoundError(f"data not found: {p} does not exist (a BEIR folder or a JSONL corpus file)")
    if p.is_dir():
        if not any((p / f).is_file() for f in ("corpus.jsonl", "corpus.jsonl.gz")):
            raise FileNotFoundError(f"{p} is not a BEIR folder: it has no corpus.jsonl")
        qpath = Path(os.fspath(queries)).absolute() if queries is not None else p
        qrel_path = Path(os.fspath(qrels)).absolute() if qrels is not None else p / "qrels" / f"{split}.tsv"
        src = {"kind": "beir", "name": p.name, "corpus": str(p), "queries": str(qpath)}
    else:
        if queries is None:
            raise ValueError(f"{p} is a corpus file: give its queries too (--queries q.jsonl, "
                             "one {\"_id\": ..., \"text\": ...} per line)")
        qpath = Path(os.fspath(queries)).absolute()
        qrel_path = Path(os.fspath(qrels)).absolute() if qrels is not None else None
        src = {"kind": "jsonl", "name": p.stem, "corpus": str(p), "queries": str(qpath)}
    if qrels is not None and not qrel_path.is_file():
        raise FileNotFoundError(f"qrels not found: {qrel_path} does not exist")
    src["qrels"] = str(qrel_path) if qrel_path is not None and qrel_path.is_file() else None
    return src


def prepare(src: Dict, workdir: Path, *, modes, vectors: str, dim: int, n_queries: int, seed: int,
            log: Callable[[str], None]) -> Dict:
    """Check and count the data, write the synthetic corpus and the dense vectors; returns the spec's
    ``data`` part plus ``info`` (counts, what the vectors are)."""
    from ..io.corpus import iter_corpus, load_qrels, load_queries

    spec = dict(src)
    info: Dict = {"name": src["name"], "kind": src["kind"]}
    encoder = None
    if "dense" in modes and vectors == "random" and src["kind"] != "synthetic":
        raise ValueError("random vectors are for a synthetic corpus only: real data is encoded with rc.Encoder")
    if "dense" in modes and vectors != "random":
        encoder = _encoder(src, vectors, log)
    if src["kind"] == "synthetic":
        n = src["n_docs"]
        info.update(n_docs=n, n_queries=n_queries, n_judged=0)
        if "sparse" in modes or encoder is not None:
            write_zipf(workdir, n, n_queries, seed=seed)
            spec["text_dir"] = str(workdir)
    else:
        queries = load_queries(src["queries"])   # ValueError naming file:line for a query without an id
        if not queries:
            raise ValueError(f"{src['queries']}: no queries")
        n_docs = sum(1 for _ in iter_corpus(src["corpus"]))   # checks every line, ids included
        if not n_docs:
            raise ValueError(f"{src['corpus']}: no documents")
        qrels = load_qrels(src["qrels"]) if src["qrels"] else {}
        judged = sum(1 for q in queries if qrels.get(q))
        info.update(n_docs=n_docs, n_queries=len(queries), n_judged=judged)
        if src["qrels"] and not judged:
            log(f"note: no query of {src['queries']} has judgements in {src['qrels']}: no nDCG@10")
    if "dense" in modes:
        spec["vectors_dir"] = str(workdir)
        info["vectors"] = _write_vectors(src, spec, workdir, encoder, dim, n_queries, seed, log)
    return {"spec": spec, "info": info}


# ---------------------------------------------------------------------------------------------
# synthetic corpus


def zipf_vocab_bytes(vocab_size: int) -> np.ndarray:
    """(vocab_size, 5) uint8: the word of rank r (0-based) is "w" + 4 base-26 letters of r (e.g. "waaab")."""
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

    Token ranks follow p(r) ~ r^-exponent over ``vocab_size`` words, Poisson(mean_len) tokens per document
    (at least 1); queries have 2-6 distinct terms with ranks log-uniform over 100..10,000. Vectorised, seeded.
    """
    rng = np.random.default_rng(seed)
    vocab = zipf_vocab_bytes(vocab_size)
    cdf = np.cumsum(np.arange(1, vocab_size + 1, dtype=np.float64) ** -exponent)
    cdf /= cdf[-1]
    with open(Path(path_dir) / "corpus.txt", "wb") as f:
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
        terms: List[int] = []
        while len(terms) < m:
            r = int(round(math.exp(rng.uniform(lo, hi))))  # 1-based rank
            if r not in terms:
                terms.append(r)
        lines.append(" ".join(vocab[r - 1].tobytes().decode() for r in terms))
    (Path(path_dir) / "queries.txt").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------
# what a worker reads


def load_texts(spec: Dict, max_docs: Optional[int] = None) -> Tuple[List[str], List[str], List[str], List[str], Dict]:
    """(doc_ids, texts, query_ids, query_texts, qrels) of the spec's source; text = title + " " + text."""
    if spec["kind"] == "synthetic":
        d = Path(spec["text_dir"])
        texts = (d / "corpus.txt").read_text().split("\n")[:-1][:max_docs]
        queries = (d / "queries.txt").read_text().split("\n")[:-1]
        return [str(i) for i in range(len(texts))], texts, [f"q{i}" for i in range(len(queries))], queries, {}
    from ..io.corpus import iter_corpus, load_qrels, load_queries

    docs = list(islice(iter_corpus(spec["corpus"]), max_docs))
    queries = load_queries(spec["queries"])
    qrels = load_qrels(spec["qrels"]) if spec.get("qrels") else {}
    return [d for d, _ in docs], [t for _, t in docs], list(queries), list(queries.values()), qrels


def load_vectors(spec: Dict) -> Tuple[List[str], np.ndarray, List[str], np.ndarray, Dict]:
    """(doc_ids, document vectors, query_ids, query vectors, qrels): float32 unit rows, read whole into
    this process's memory; the ids without the texts."""
    import json

    from ..io.corpus import load_qrels

    d = Path(spec["vectors_dir"])
    ids = json.loads((d / "ids.json").read_text())
    qrels = load_qrels(spec["qrels"]) if spec.get("qrels") else {}
    return ids["docs"], np.load(d / "docs.npy"), ids["queries"], np.load(d / "queries.npy"), qrels


def load_truth(spec: Dict) -> np.ndarray:
    """Exact top-10 (inner product) of the first queries: the reference of dense recall@10."""
    return np.load(Path(spec["vectors_dir"]) / "truth10.npy")


def unit_vectors(rng: np.random.Generator, n: int, dim: int, chunk: int = 100_000) -> np.ndarray:
    """(n, dim) float32 rows drawn from a normal distribution and L2-normalised."""
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, chunk):
        x = rng.standard_normal((min(chunk, n - s), dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s:s + len(x)] = x
    return out


def exact_top10(x: np.ndarray, q: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """Exact top-10 rows by inner product of each query (numpy, blocked over the rows)."""
    from ._sparse import topk_rows

    k = min(10, len(x))
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.empty((len(q), 0), np.int64)
    for s in range(0, len(x), chunk):
        sc = q @ x[s:s + chunk].T
        top = topk_rows(sc, k)
        best_s = np.concatenate([best_s, np.take_along_axis(sc, top, 1)], 1)
        best_i = np.concatenate([best_i, top + s], 1)
        keep = topk_rows(best_s, k)
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    return best_i


def _encoder(src, vectors: str, log):
    """rc.Encoder.load(), or None where ``vectors="auto"`` falls back to random vectors (synthetic data)."""
    if vectors == "random":
        return None
    from .. import Encoder

    try:
        return Encoder.load()
    except ImportError as e:
        if vectors == "encoder" or src["kind"] != "synthetic":
            raise ImportError(f"dense mode on {src['name']} needs the sentence encoder for its vectors "
                              f"({e}); random vectors are for a synthetic corpus only") from e
        log(f"no sentence encoder ({e}): random unit vectors instead")
        return None


def _write_vectors(src, spec, workdir: Path, enc, dim: int, n_queries: int, seed: int, log) -> str:
    """docs.npy, queries.npy and truth10.npy in workdir; returns what the vectors are, for the report."""
    import time

    if enc is None:
        t0 = time.perf_counter()
        x = unit_vectors(np.random.default_rng(seed + 42), src["n_docs"], dim)
        q = unit_vectors(np.random.default_rng(seed + 7), n_queries, dim)
        what = f"random unit vectors (normal draws, L2-normalised), dim {dim}, seeded"
        doc_ids, qids = [str(i) for i in range(len(x))], [f"q{i}" for i in range(len(q))]
        log(f"dense vectors: {what} ({time.perf_counter() - t0:.1f} s)")
    else:
        doc_ids, texts, qids, qtexts, _ = load_texts(spec)
        t0 = time.perf_counter()
        log(f"dense vectors: encoding {len(texts):,} documents and {len(qtexts):,} queries with rc.Encoder "
            f"(untimed; --vectors random skips it for --synthetic)")
        x = enc.encode(texts, batch_size=64)
        q = enc.encode(qtexts, batch_size=64)
        name = Path(str(enc.path)).name
        what = (f"rc.Encoder ({name}, {'int8' if enc.quantized else 'float32'}), dim {enc.dim}, "
                f"encoded in {time.perf_counter() - t0:.0f} s")
        log(f"dense vectors: {what}")
    import json

    (workdir / "ids.json").write_text(json.dumps({"docs": doc_ids, "queries": qids}))
    np.save(workdir / "docs.npy", np.ascontiguousarray(x, np.float32))
    np.save(workdir / "queries.npy", np.ascontiguousarray(q, np.float32))
    np.save(workdir / "truth10.npy", exact_top10(x, q[:200]))
    return what

