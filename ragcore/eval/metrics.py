"""Retrieval metrics, with trec_eval's definitions (as pytrec_eval computes them).

``evaluate(run, qrels, metrics)`` scores a run -- ``{qid: {doc_id: score}}`` or a :class:`~ragcore.Hits`
with its query ids -- against graded judgements ``{qid: {doc_id: grade}}``.

Definitions (a document is relevant when its grade >= ``relevance_level``, default 1):

* the run of a query is ranked by score, descending; ties by document id, descending (trec_eval's order);
* ``precision@k`` = relevant in the top k / k (trec_eval ``P.k``);
* ``recall@k`` = relevant in the top k / relevant judged (``recall.k``; 0 when none is relevant);
* ``ndcg@k`` = DCG@k / ideal DCG@k with gain = grade and discount log2(rank + 1), the ideal ranking taken
  from the judgements (``ndcg_cut.k``; 0 when the ideal DCG is 0);
* ``map@k`` = sum of precision@rank at the relevant ranks <= k / relevant judged (``map_cut.k``);
* ``mrr@k`` = 1 / rank of the first relevant document within k, else 0;
* ``hit_rate@k`` = 1 when a relevant document is within k, else 0.

Queries judged in ``qrels`` but absent from the run count as 0 by default (``missing="zero"``, trec_eval's
``-c``); ``missing="ignore"`` leaves them out of the means, as pytrec_eval's output does (a query present
with nothing retrieved is scored, 0). Queries without judgements are never scored; both counts are
reported.

Example
-------
>>> from ragcore.eval.metrics import evaluate
>>> run = {"q1": {"d1": 2.0, "d2": 1.0}}
>>> qrels = {"q1": {"d2": 1}}
>>> evaluate(run, qrels, ["mrr@10", "recall@1"]).mean
{'mrr@10': 0.5, 'recall@1': 0.0}
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

METRICS = ("ndcg", "recall", "precision", "map", "mrr", "hit_rate")
_METRIC_RE = re.compile(r"^(ndcg|recall|precision|map|mrr|hit_rate)@(\d+)$")

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]


@dataclass
class Evaluation:
    """The result of :func:`evaluate`.

    Attributes
    ----------
    mean : dict
        ``{metric: mean over the scored queries}``.
    per_query : dict
        ``{qid: {metric: value}}`` for every scored query.
    n_missing : int
        Judged queries absent from the run (scored 0 unless ``missing="ignore"``).
    n_unjudged : int
        Queries of the run without judgements (not scored).
    """

    mean: Dict[str, float]
    per_query: Dict[str, Dict[str, float]]
    n_missing: int = 0
    n_unjudged: int = 0
    metrics: List[str] = field(default_factory=list)


def parse_metric(name: str) -> Tuple[str, int]:
    """``"ndcg@10"`` -> ``("ndcg", 10)``; ValueError naming the metric otherwise."""
    m = _METRIC_RE.match(name.strip().lower()) if isinstance(name, str) else None
    if not m:
        raise ValueError(f"unknown metric {name!r}; expected one of {', '.join(METRICS)} followed by @k, e.g. 'ndcg@10'")
    k = int(m.group(2))
    if k < 1:
        raise ValueError(f"metric {name!r}: k must be >= 1")
    return m.group(1), k


def _ranked(docs: Mapping[str, float], limit: int) -> List[str]:
    """The first ``limit`` document ids by score descending, ties by id descending (trec_eval's order)."""
    if not docs:
        return []
    keys = list(docs.keys())
    scores = np.fromiter(docs.values(), dtype=np.float64, count=len(keys))
    n = len(keys)
    if n > limit:  # only the documents scoring at least the limit-th best (ties included) can rank
        kth = np.partition(scores, n - limit)[n - limit]
        sel = np.flatnonzero(scores >= kth)
        keys = [keys[i] for i in sel]
        scores = scores[sel]
    ids = np.array(keys)
    # ascending by (score, id), reversed = descending by score, then by id
    return ids[np.lexsort((ids, scores))[::-1][:limit]].tolist()


def _query_metrics(ranked: Sequence[str], judged: Mapping[str, int], wanted: Sequence[Tuple[str, int]],
                   level: int) -> Dict[Tuple[str, int], float]:
    grades = np.array([judged.get(d, 0) for d in ranked], dtype=np.float64)
    rel = grades >= level
    n_rel = sum(1 for g in judged.values() if g >= level)
    ideal = np.sort(np.array([g for g in judged.values() if g > 0], dtype=np.float64))[::-1]
    out = {}
    for name, k in wanted:
        top = rel[:k]
        if name == "precision":
            v = top.sum() / k
        elif name == "recall":
            v = top.sum() / n_rel if n_rel else 0.0
        elif name == "ndcg":
            disc = 1.0 / np.log2(np.arange(2, k + 2))
            g = np.where(grades[:k] > 0, grades[:k], 0.0)
            dcg = float((g * disc[: len(g)]).sum())
            idcg = float((ideal[:k] * disc[: min(k, len(ideal))]).sum())
            v = dcg / idcg if idcg > 0 else 0.0
        elif name == "map":
            ranks = np.flatnonzero(top) + 1
            v = float((np.arange(1, len(ranks) + 1) / ranks).sum() / n_rel) if n_rel else 0.0
        elif name == "mrr":
            hit = np.flatnonzero(top)
            v = 1.0 / (hit[0] + 1) if hit.size else 0.0
        else:  # hit_rate
            v = 1.0 if top.any() else 0.0
        out[(name, k)] = float(v)
    return out


def evaluate(run, qrels: Qrels, metrics: Union[str, Iterable[str]] = ("ndcg@10", "recall@100"), *,
             query_ids: Optional[Sequence[str]] = None, missing: str = "zero",
             relevance_level: int = 1) -> Evaluation:
    """Score a run against judgements with trec_eval's metric definitions (module docstring).

    Parameters
    ----------
    run : dict or Hits
        ``{qid: {doc_id: score}}``, or a :class:`~ragcore.Hits` from a retriever indexed with ids, with
        ``query_ids`` naming its rows.
    qrels : dict
        ``{qid: {doc_id: grade}}`` (int grades; 0 = judged not relevant).
    metrics : str or iterable of str
        Names like ``"ndcg@10"``, ``"recall@100"``, ``"precision@5"``, ``"map@100"``, ``"mrr@10"``,
        ``"hit_rate@5"``.
    missing : {"zero", "ignore"}
        How judged queries absent from the run count in the means.
    relevance_level : int, default 1
        Lowest grade that counts as relevant (binary metrics).
    """
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    if not names:
        raise ValueError("no metrics asked for")
    wanted = [parse_metric(n) for n in names]
    if missing not in ("zero", "ignore"):
        raise ValueError(f"missing must be 'zero' or 'ignore', got {missing!r}")
    run = _as_run(run, query_ids)
    _check_qrels(qrels)
    per_query: Dict[str, Dict[str, float]] = {}
    n_missing = 0
    max_k = max(k for _, k in wanted)
    for qid, judged in qrels.items():
        if not judged:  # no judgement lines: trec_eval does not know the query
            continue
        docs = run.get(qid)
        if docs is None:
            n_missing += 1
            if missing == "zero":
                per_query[qid] = {n: 0.0 for n in names}
            continue
        vals = _query_metrics(_ranked(docs, max_k), judged, wanted, relevance_level)
        per_query[qid] = {n: vals[w] for n, w in zip(names, wanted)}
    n_unjudged = sum(1 for qid in run if not qrels.get(qid))
    mean = {n: (float(np.mean([pq[n] for pq in per_query.values()])) if per_query else 0.0) for n in names}
    return Evaluation(mean=mean, per_query=per_query, n_missing=n_missing, n_unjudged=n_unjudged, metrics=names)


def _as_run(run, query_ids) -> Dict[str, Dict[str, float]]:
    from ..retrieval.hits import Hits

    if isinstance(run, Hits):
        if query_ids is None:
            raise ValueError("evaluating Hits needs query_ids: the query id of each row")
        if len(query_ids) != len(run):
            raise ValueError(f"got {len(query_ids)} query ids for {len(run)} rows of hits")
        ids = run.ids
        if ids is None:
            raise ValueError("these Hits carry no document ids: index with ids=... to evaluate them")
        out: Dict[str, Dict[str, float]] = {}
        for qi, qid in enumerate(query_ids):
            row = {str(d): float(s) for d, s in zip(ids[qi], run.scores[qi]) if d is not None}
            out[str(qid)] = row
        return out
    if not isinstance(run, Mapping):
        raise TypeError(f"run must be a dict {{qid: {{doc_id: score}}}} or Hits, got {type(run).__name__}")
    for qid, docs in run.items():
        if not isinstance(docs, Mapping):
            raise TypeError(f"run[{qid!r}] must be a dict {{doc_id: score}}, got {type(docs).__name__}")
        for d, s in docs.items():
            if isinstance(s, bool) or not isinstance(s, (int, float, np.integer, np.floating)) or math.isnan(s):
                raise ValueError(f"run[{qid!r}][{d!r}] = {s!r} is not a number")
    return run  # type: ignore[return-value]


def _check_qrels(qrels) -> None:
    if not isinstance(qrels, Mapping):
        raise TypeError(f"qrels must be a dict {{qid: {{doc_id: grade}}}}, got {type(qrels).__name__}")
    for qid, judged in qrels.items():
        if not isinstance(judged, Mapping):
            raise TypeError(f"qrels[{qid!r}] must be a dict {{doc_id: grade}}, got {type(judged).__name__}")
        for d, g in judged.items():
            if isinstance(g, bool) or not isinstance(g, (int, np.integer)):
                raise ValueError(f"qrels[{qid!r}][{d!r}] = {g!r} is not an integer grade")


# ---------------------------------------------------------------------------------------------------
# Generation metrics, written here (no dependency) and tested against sacrebleu and rouge-score.

_BLEU_RE = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation and symbols
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # ... unless followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash after a digit
]


def _tokenize_13a(line: str) -> List[str]:
    """mteval-v13a tokenization, as sacrebleu's default ``13a`` tokenizer."""
    line = line.rstrip().replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, repl in _BLEU_RE:
        line = pattern.sub(repl, line)
    return line.split()


def _ngrams(tokens: Sequence[str], n: int) -> Dict[Tuple[str, ...], int]:
    out: Dict[Tuple[str, ...], int] = {}
    for i in range(len(tokens) - n + 1):
        g = tuple(tokens[i:i + n])
        out[g] = out.get(g, 0) + 1
    return out


def _check_pairs(hypotheses, references) -> Tuple[List[str], List[str]]:
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise TypeError("hypotheses and references must be lists of str (one reference per hypothesis)")
    hyps, refs = list(hypotheses), list(references)
    if len(hyps) != len(refs):
        raise ValueError(f"got {len(hyps)} hypotheses for {len(refs)} references")
    for what, seq in (("hypothesis", hyps), ("reference", refs)):
        for i, x in enumerate(seq):
            if not isinstance(x, str):
                raise TypeError(f"{what} {i} is {type(x).__name__}, expected str")
    return hyps, refs


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (0-100) with one reference per hypothesis.

    Equals ``sacrebleu.corpus_bleu(hypotheses, [references]).score`` with sacrebleu's default signature
    (13a tokenization, case-sensitive, exponential smoothing, 4-grams; Papineni et al. 2002).

    Examples
    --------
    >>> round(bleu(["the cat sat on the mat"], ["the cat sat on the mat"]), 2)
    100.0
    """
    hyps, refs = _check_pairs(hypotheses, references)
    correct, total = [0] * 4, [0] * 4
    sys_len = ref_len = 0
    for h, r in zip(hyps, refs):
        ht, rt = _tokenize_13a(h), _tokenize_13a(r)
        sys_len += len(ht)
        ref_len += len(rt)
        for n in range(1, 5):
            hg, rg = _ngrams(ht, n), _ngrams(rt, n)
            correct[n - 1] += sum(min(c, rg.get(g, 0)) for g, c in hg.items())
            total[n - 1] += max(0, len(ht) - n + 1)
    if not any(correct):
        return 0.0
    bp = 1.0 if sys_len >= ref_len else (math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0)
    log_sum, smooth = 0.0, 1.0
    for n in range(4):
        if total[n] == 0:
            p = 0.0
        elif correct[n] == 0:  # sacrebleu's "exp" smoothing (mteval-v13a)
            smooth *= 2
            p = 100.0 / (smooth * total[n])
        else:
            p = 100.0 * correct[n] / total[n]
        log_sum += math.log(p) if p > 0 else -9999999999
    return bp * math.exp(log_sum / 4)


_ROUGE_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def _rouge_tokens(text: str) -> List[str]:
    return [t for t in _ROUGE_NON_ALNUM.sub(" ", text.lower()).split() if t]


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure (Lin 2004) of hypothesis/reference pairs, in [0, 1].

    Equals the mean ``fmeasure`` of ``rouge_score.rouge_scorer.RougeScorer(["rougeL"]).score(ref, hyp)``
    (lowercased, non-alphanumerics as separators, no stemming).

    Examples
    --------
    >>> round(rouge_l(["the cat sat"], ["the cat sat on the mat"]), 4)
    0.6667
    """
    hyps, refs = _check_pairs(hypotheses, references)
    if not hyps:
        return 0.0
    total = 0.0
    for h, r in zip(hyps, refs):
        ht, rt = _rouge_tokens(h), _rouge_tokens(r)
        if not ht or not rt:
            continue
        lcs = _lcs(rt, ht)
        p, rc_ = lcs / len(ht), lcs / len(rt)
        total += 2 * p * rc_ / (p + rc_) if p + rc_ > 0 else 0.0
    return total / len(hyps)


def citation_recall(cited: Mapping[str, Iterable[str]], qrels: Qrels, relevance_level: int = 1) -> float:
    """Mean, over judged queries with a relevant document, of |cited ∩ relevant| / |relevant|.

    ``cited`` maps a query id to the document ids an answer cited; a judged query absent from ``cited``
    counts as 0.
    """
    _check_qrels(qrels)
    vals = []
    for qid, judged in qrels.items():
        rel = {d for d, g in judged.items() if g >= relevance_level}
        if not rel:
            continue
        vals.append(len(rel.intersection(cited.get(qid, ()))) / len(rel))
    return float(np.mean(vals)) if vals else 0.0
