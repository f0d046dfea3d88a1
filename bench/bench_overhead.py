"""Per-call cost of issue 15's hardening on the search path, against the tree before it, in one run.

Each search now reads one snapshot of the index (one attribute load), the bindings take a reference to
every query string they view, and threads/k are range-checked. This script times BM25 search one query
per call (the path where per-call overhead shows most) and in one batch, one thread, with two builds of
ragcore alternating in subprocesses: the current tree and another one (``--baseline DIR``, a built tree
of an earlier commit). Medians of ``--repeats`` runs; the ratio is current / baseline time.

    python bench/bench_overhead.py --baseline /tmp/ragcore-c3d08ac --data DIR_WITH_BEIR_SET
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
import ragcore as rc
from ragcore.io.corpus import iter_corpus, load_queries
data = sys.argv[1]
texts = [text for _, text in iter_corpus(data)]
queries = list(load_queries(data).values())
an = rc.Analyzer(stopwords="english", stemmer="english")
bm25 = rc.BM25(analyzer=an).index(texts, ids=[str(i) for i in range(len(texts))])
bm25.search(queries, k=10, threads=1)
rounds = int(sys.argv[2])
out = {}
t = time.perf_counter()
for _ in range(rounds):
    for q in queries:
        bm25.search(q, k=10, threads=1)
out["one_per_call_us"] = (time.perf_counter() - t) / (rounds * len(queries)) * 1e6
batch = queries * rounds
t = time.perf_counter()
bm25.search(batch, k=10, threads=1)
out["batch_us"] = (time.perf_counter() - t) / len(batch) * 1e6
print(json.dumps(out))
"""


def run(tree: str, data: str, rounds: int) -> dict:
    env = dict(os.environ, PYTHONPATH=tree)
    r = subprocess.run([sys.executable, "-c", CHILD, data, str(rounds)], env=env, capture_output=True, text=True, check=True,
                       cwd="/")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="a built ragcore tree of an earlier commit")
    ap.add_argument("--data", required=True, help="a BEIR folder (corpus.jsonl, queries.jsonl)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=200, help="passes over the queries per timed run")
    a = ap.parse_args()
    here = str(Path(__file__).resolve().parents[1])
    res = {"current": [], "baseline": []}
    for _ in range(a.repeats):  # alternate, so drifts of a shared machine hit both alike
        res["current"].append(run(here, a.data, a.rounds))
        res["baseline"].append(run(a.baseline, a.data, a.rounds))
    print(f"{'path':<22}{'baseline us/query':>20}{'current us/query':>20}{'ratio':>8}")
    for key, name in (("one_per_call_us", "one query per call"), ("batch_us", "one batch")):
        b = statistics.median(r[key] for r in res["baseline"])
        c = statistics.median(r[key] for r in res["current"])
        print(f"{name:<22}{b:>20.2f}{c:>20.2f}{c / b:>8.3f}")


if __name__ == "__main__":
    main()
