"""Evaluation data sets (BEIR format) and scoring a retriever on one.

A BEIR folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``, ``text``)
and ``qrels/<split>.tsv`` (``query-id``, ``corpus-id``, ``score``). Malformed lines raise ``ValueError``
naming the file and line (see :mod:`ragcore.io.corpus`).

Example
-------
>>> import ragcore as rc                                              # doctest: +SKIP
>>> data = rc.datasets.load_beir("../shared/data/msmarco-5k")          # doctest: +SKIP
>>> rc.get_retrieval_score(rc.BM25(), data, ["ndcg@10"])               # doctest: +SKIP
{'ndcg@10': 0.68...}
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, NamedTuple, Union

from ..io.corpus import iter_corpus, load_qrels, load_queries
from .metrics import evaluate, parse_metric


class BeirData(NamedTuple):
    """corpus ``{doc_id: text}`` (title + " " + text), queries ``{qid: text}``, qrels ``{qid: {doc_id: grade}}``."""

    corpus: Dict[str, str]
    queries: Dict[str, str]
    qrels: Dict[str, Dict[str, int]]


def load_beir(folder: Union[str, os.PathLike], split: str = "test") -> BeirData:
    """Load a BEIR folder: ``corpus, queries, qrels = load_beir(folder)``."""
    corpus: Dict[str, str] = {}
    for doc_id, text in iter_corpus(folder):
        if doc_id in corpus:
            raise ValueError(f"{os.fspath(folder)}: duplicate document id {doc_id!r} in the corpus")
        corpus[doc_id] = text
    return BeirData(corpus, load_queries(folder), load_qrels(folder, split=split))


def get_retrieval_score(retriever, dataset: Union[str, os.PathLike, BeirData],
                        metrics: Iterable[str] = ("ndcg@10", "recall@100"), *, missing: str = "zero",
                        threads=None) -> Dict[str, float]:
    """Run a retriever over a data set's judged queries and return the mean of each metric.

    ``retriever`` is anything with ``search(queries, k)`` returning :class:`~ragcore.Hits` with document
    ids; an empty ragcore retriever (``len(retriever) == 0``) is first indexed on the data set's corpus.
    ``dataset`` is a BEIR folder or what :func:`load_beir` returned.
    """
    data = dataset if isinstance(dataset, BeirData) else load_beir(dataset)
    names = list(metrics)
    k = max(parse_metric(n)[1] for n in names)
    if hasattr(retriever, "index") and hasattr(retriever, "__len__") and len(retriever) == 0:
        retriever.index(list(data.corpus.values()), ids=list(data.corpus), threads=threads)
    qids = [q for q in data.queries if q in data.qrels]
    hits = retriever.search([data.queries[q] for q in qids], k=k)
    # judged queries without a text in queries.jsonl cannot be run: they are not scored
    qrels = {q: data.qrels[q] for q in qids}
    return evaluate(hits, qrels, names, query_ids=qids, missing=missing).mean
