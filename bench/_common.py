"""Helpers shared by the benchmark scripts: this project's data sets, nDCG with pytrec_eval, the machine.

The engines, timing, memory figures and synthetic corpora live in ``ragcore.bench`` (``ragcore bench``);
the scripts here call it.
"""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = REPO.parent / "shared" / "data"   # ../shared/data relative to the project root
BEIR_SETS = ("msmarco-5k", "dbpedia-5k")

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
    """ragcore.bench's description of the machine (CPU, cores, memory, OS, versions, load average)."""
    from ragcore.bench._machine import machine_info as info

    m = info()
    m["platform"] = m["os"]
    return m
