"""Cost of loading a 1M-document BM25 index, and of the always-on validation of its arrays.

Builds (once, cached under ``--dir``) a synthetic corpus of ``--docs`` documents of 30-70 tokens drawn
from a Zipf(1) vocabulary of ``--vocab`` words, indexes and saves it, then measures, median of
``--repeats`` after one warm-up, with the files in the page cache:

- ``load``: ``BM25.load(path, mmap=True, verify=False)`` (what the always-on validation adds to);
- ``load (baseline)``: the same with another ragcore tree (``--baseline DIR``, e.g. a copy of the tree
  before the validation), in a subprocess;
- ``validation``: ``ragcore._core._testing.validate_sparse_arrays`` alone over the mapped arrays;
- ``read``: reading every byte of the index's files with ``numpy.fromfile`` (warm: from the page cache);
- ``load verify=True``: ``BM25.load(path, mmap=True, verify=True)`` (CRC-32 of every file).

Usage::

    python bench/bench_load.py [--docs 1000000] [--baseline /path/to/old/tree] [--out bench/results/x.txt]

A benchmark, not a test: it prints a small table (and writes it to ``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

LOAD_SNIPPET = """
import json, sys, time
import ragcore as rc
path, repeats = sys.argv[1], int(sys.argv[2])
rc.BM25.load(path, mmap=True, verify=False)  # warm-up
times = []
for _ in range(repeats):
    t = time.perf_counter(); rc.BM25.load(path, mmap=True, verify=False); times.append(time.perf_counter() - t)
print(json.dumps({"file": rc.__file__, "times": times}))
"""


def corpus(n_docs: int, vocab: int, seed: int = 0, batch: int = 50_000):
    """Documents as text: 30-70 tokens each, token ranks ~ Zipf(1) over `vocab` words."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    cdf = np.cumsum(p / p.sum())
    words = np.array([f"w{i}" for i in range(vocab)], dtype=object)
    for start in range(0, n_docs, batch):
        n = min(batch, n_docs - start)
        lens = rng.integers(30, 71, size=n)
        ranks = np.minimum(np.searchsorted(cdf, rng.random(int(lens.sum()))), vocab - 1)
        toks = words[ranks]
        ends = np.cumsum(lens)
        for b, e in zip(ends - lens, ends):
            yield " ".join(toks[b:e])


def build(path: Path, n_docs: int, vocab: int) -> None:
    import ragcore as rc

    if (path / "manifest.json").exists():
        return
    t = time.perf_counter()
    bm25 = rc.BM25(analyzer=rc.Analyzer(stopwords=None, stemmer=None))
    bm25.index(corpus(n_docs, vocab), batch_size=50_000)
    bm25.save(path)
    print(f"built and saved {n_docs} documents in {time.perf_counter() - t:.1f} s -> {path}", file=sys.stderr)


def timed(fn, repeats: int):
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def load_in(tree: str, path: Path, repeats: int):
    env = dict(os.environ, PYTHONPATH=tree)
    r = subprocess.run([sys.executable, "-c", LOAD_SNIPPET, str(path), str(repeats)], capture_output=True, text=True,
                       env=env, cwd=tree, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])["times"]


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        name = platform.processor() or "unknown CPU"
    return f"{name}, {os.cpu_count()} logical cores, Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--vocab", type=int, default=100_000)
    ap.add_argument("--dir", default="/tmp/ragcore_bench_load")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--baseline", help="a ragcore tree (with its built _core) to time the same load with")
    ap.add_argument("--out", help="also write the table here")
    args = ap.parse_args()

    import ragcore as rc
    from ragcore import _core
    from ragcore.retrieval import sparse
    from ragcore.io import storage

    path = Path(args.dir) / f"bm25_{args.docs}"
    build(path, args.docs, args.vocab)
    files = sorted(p for p in path.iterdir() if p.is_file())
    total = sum(p.stat().st_size for p in files)
    manifest, arrays = storage.load_index(path, mmap=True, verify=False)
    meta = manifest["meta"]
    n_post = int(arrays["post_docs"].shape[0])
    threads = sparse._ALL_THREADS

    rows = []

    def row(name, times, note=""):
        rows.append((name, statistics.median(times) * 1e3, min(times) * 1e3, max(times) * 1e3, note))

    if args.baseline:
        row("load mmap, verify=False (baseline)", load_in(args.baseline, path, args.repeats),
            f"tree {args.baseline}")
    here = str(Path(rc.__file__).resolve().parents[1])
    row("load mmap, verify=False", load_in(here, path, args.repeats), "validation included")
    validate = _core._testing.validate_sparse_arrays
    row("validation alone", timed(lambda: validate(arrays, meta["n_docs"], meta["params"]["method"], threads),
                                  args.repeats),
        f"{threads} threads")
    row("read every byte (np.fromfile, warm)", timed(lambda: [np.fromfile(p, np.uint8) for p in files], args.repeats),
        "page cache -> memory")
    row("load mmap, verify=True (CRC-32)", timed(lambda: rc.BM25.load(path, mmap=True, verify=True), args.repeats))

    lines = [
        f"# bench/bench_load.py --docs {args.docs} --vocab {args.vocab} --repeats {args.repeats}",
        f"machine: {machine()}",
        f"index: {meta['n_docs']} documents, {meta['n_terms']} terms, {n_post} postings, "
        f"{total / 2**20:.1f} MiB in {len(files)} files",
        "",
        f"{'what':40s} {'median ms':>10s} {'min':>9s} {'max':>9s}  note",
    ]
    lines += [f"{n:40s} {m:10.2f} {lo:9.2f} {hi:9.2f}  {note}" for n, m, lo, hi, note in rows]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
