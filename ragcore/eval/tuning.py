"""Tuning BM25 ("training the retriever"): grid search of k1, b and the variant on a seeded split of
the judged queries, scored on the held-out part.

Example
-------
>>> import ragcore as rc                                                    # doctest: +SKIP
>>> res = rc.tune_bm25("../shared/data/msmarco-5k", metric="ndcg@10")       # doctest: +SKIP
>>> res.best_params, res.test_best, res.test_default                        # doctest: +SKIP
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from .._deprecation import renamed_keywords
from ..retrieval.analysis import Analyzer
from .datasets import BeirData, load_beir
from .metrics import evaluate, parse_metric
from ..retrieval.sparse import BM25

DEFAULT_PARAMS = {"method": "lucene", "k1": 1.5, "b": 0.75}


@dataclass
class TuneResult:
    """What :func:`tune_bm25` found.

    ``best_params`` maximise ``metric`` on the ``train`` queries; ``test_best`` and ``test_default`` are
    the scores of those parameters and of the defaults (k1=1.5, b=0.75, lucene) on the held-out ``test``
    queries, which played no part in the choice. ``grid`` holds every configuration's train score.
    """

    metric: str
    best_params: Dict[str, Union[str, float]]
    train_best: float
    test_best: float
    test_default: float
    train: List[str] = field(default_factory=list)
    test: List[str] = field(default_factory=list)
    grid: List[Dict[str, Union[str, float]]] = field(default_factory=list)


def split_queries(qids: Sequence[str], test_fraction: float = 0.5, seed: int = 0):
    """Seeded split of query ids -> (train, test), both sorted; the same inputs give the same split."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    ids = sorted(qids)
    if len(ids) < 2:
        raise ValueError(f"need at least 2 judged queries to split, got {len(ids)}")
    order = np.random.default_rng(seed).permutation(len(ids))
    n_test = min(len(ids) - 1, max(1, round(len(ids) * test_fraction)))
    test = sorted(ids[i] for i in order[:n_test])
    train = sorted(ids[i] for i in order[n_test:])
    return train, test


@renamed_keywords(show_progress="progress")
def tune_bm25(dataset: Union[str, os.PathLike, BeirData], metric: str = "ndcg@10", *,
              k1: Sequence[float] = (0.5, 0.9, 1.2, 1.5, 2.0), b: Sequence[float] = (0.3, 0.5, 0.75, 0.9),
              methods: Sequence[str] = ("lucene",), analyzer: Optional[Analyzer] = None,
              test_fraction: float = 0.5, seed: int = 0, threads: Optional[int] = None,
              progress: bool = False) -> TuneResult:
    """Grid-search BM25 parameters on a seeded train split of the judged queries; score on the rest.

    ``threads`` is passed to indexing and search; ``progress`` shows a tqdm bar over the grid
    (``show_progress=`` is a deprecated alias).
    """
    name, k = parse_metric(metric)
    data = dataset if isinstance(dataset, BeirData) else load_beir(dataset)
    qids = [q for q in data.queries if data.qrels.get(q)]
    train, test = split_queries(qids, test_fraction, seed)
    texts, ids = list(data.corpus.values()), list(data.corpus)
    an = analyzer if analyzer is not None else Analyzer(stopwords="english", stemmer="english")

    def score(params, queries):
        bm25 = BM25(k1=params["k1"], b=params["b"], method=params["method"], analyzer=an)
        bm25.index(texts, ids=ids, threads=threads)
        hits = bm25.search([data.queries[q] for q in queries], k=k, threads=threads)
        qrels = {q: data.qrels[q] for q in queries}  # the other split's queries are not missing, just elsewhere
        return evaluate(hits, qrels, [metric], query_ids=queries).mean[metric]

    grid = [{"method": m, "k1": float(x), "b": float(y)} for m, x, y in itertools.product(methods, k1, b)]
    if not grid:
        raise ValueError("empty parameter grid")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(grid), desc="tuning", unit="config")
    for params in grid:
        params["train"] = score(params, train)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    best = max(grid, key=lambda p: p["train"])  # first of equals: grid order
    best_params = {key: best[key] for key in ("method", "k1", "b")}
    return TuneResult(metric=metric, best_params=best_params, train_best=best["train"],
                      test_best=score(best_params, test), test_default=score(DEFAULT_PARAMS, test),
                      train=train, test=test, grid=grid)
