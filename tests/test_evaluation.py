"""Retrieval metrics against pytrec_eval (trec_eval's definitions) and hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ragcore as rc
from ragcore.eval.metrics import evaluate, parse_metric

# the oracle: trec_eval's definitions (pip install pytrec-eval-terrier); the hand-computed tests need none
needs_trec = pytest.mark.requires("pytrec_eval")

DOCS = [f"d{i}" for i in range(12)]
KS = (1, 3, 5, 10)
OURS_TO_TREC = {"ndcg": "ndcg_cut_{k}", "recall": "recall_{k}", "precision": "P_{k}", "map": "map_cut_{k}"}


@st.composite
def runs_and_qrels(draw):
    qids = [f"q{i}" for i in range(draw(st.integers(1, 5)))]
    qrels = {}
    for q in qids:
        judged = draw(st.dictionaries(st.sampled_from(DOCS), st.integers(0, 3), max_size=8))
        if draw(st.booleans()) or judged:
            qrels[q] = judged
    run = {}
    for q in qids + ["unjudged"]:
        if draw(st.booleans()):
            # few distinct scores: ties are common (trec_eval breaks them by document id, descending)
            run[q] = draw(st.dictionaries(st.sampled_from(DOCS), st.integers(0, 3).map(float), max_size=12))
    return run, qrels


def trec(run, qrels, measures):
    import pytrec_eval

    return pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)


@needs_trec
@pytest.mark.slow
@settings(max_examples=150, deadline=None, derandomize=True)
@given(data=runs_and_qrels())
def test_equals_pytrec_eval_per_query_and_mean(data):
    run, qrels = data
    names = [f"{m}@{k}" for m in OURS_TO_TREC for k in KS] + ["mrr@1000"]
    measures = {"ndcg_cut." + ",".join(map(str, KS)), "recall." + ",".join(map(str, KS)),
                "P." + ",".join(map(str, KS)), "map_cut." + ",".join(map(str, KS)), "recip_rank"}
    ref = trec(run, qrels, measures)
    got = evaluate(run, qrels, names, missing="ignore")
    # without mrr@1000 the deepest cut is 10 < the run length: only the top of each run is ranked
    shallow = evaluate(run, qrels, names[:-1], missing="ignore")
    for qid, vals in shallow.per_query.items():
        for name, v in vals.items():
            assert v == got.per_query[qid][name], (qid, name)
    assert set(got.per_query) == set(ref)
    for qid, vals in ref.items():
        for name in names:
            m, k = parse_metric(name)
            key = "recip_rank" if m == "mrr" else OURS_TO_TREC[m].format(k=k)
            assert got.per_query[qid][name] == pytest.approx(vals[key], abs=1e-9), (qid, name)
    for name in names:
        m, k = parse_metric(name)
        key = "recip_rank" if m == "mrr" else OURS_TO_TREC[m].format(k=k)
        expected = float(np.mean([v[key] for v in ref.values()])) if ref else 0.0
        assert got.mean[name] == pytest.approx(expected, abs=1e-9)
    # missing="zero": judged queries without a run count as 0
    zero = evaluate(run, qrels, names)
    judged = {q for q, j in qrels.items() if j}
    assert zero.n_missing == sum(1 for q in judged if q not in run)
    assert set(zero.per_query) == judged
    for qid in judged:
        if qid not in run:
            assert all(v == 0.0 for v in zero.per_query[qid].values())


def test_hand_computed():
    qrels = {"q": {"a": 2, "b": 0, "c": 1}}
    run = {"q": {"x": 3.0, "a": 2.0, "b": 1.0, "c": 0.5}}
    ev = evaluate(run, qrels, ["precision@2", "recall@4", "mrr@10", "mrr@1", "hit_rate@1", "hit_rate@2",
                               "map@4", "ndcg@4"])
    m = ev.mean
    assert m["precision@2"] == 0.5 and m["recall@4"] == 1.0
    assert m["mrr@10"] == 0.5 and m["mrr@1"] == 0.0
    assert m["hit_rate@1"] == 0.0 and m["hit_rate@2"] == 1.0
    assert m["map@4"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert m["ndcg@4"] == pytest.approx(dcg / idcg)


def test_hits_with_query_ids():
    bm25 = rc.BM25().index(["red fox", "blue whale", "red whale"], ids=["a", "b", "c"])
    hits = bm25.search(["red", "whale"], k=2)
    ev = evaluate(hits, {"q1": {"a": 1, "c": 1}, "q2": {"b": 1}}, ["recall@2", "mrr@2"], query_ids=["q1", "q2"])
    assert ev.mean["recall@2"] == pytest.approx((1.0 + 1.0) / 2)
    with pytest.raises(ValueError, match="query_ids"):
        evaluate(hits, {"q1": {"a": 1}}, "mrr@2")
    with pytest.raises(ValueError, match="no document ids"):
        evaluate(rc.BM25().index(["x y"]).search("x"), {"q": {}}, "mrr@2", query_ids=["q"])


@pytest.mark.parametrize("bad", ["ndcg", "ndcg@0", "ndcg@-1", "f1@10", "", 3])
def test_bad_metric_names(bad):
    with pytest.raises(ValueError):
        evaluate({"q": {"a": 1.0}}, {"q": {"a": 1}}, [bad])


def test_bad_runs_and_qrels():
    with pytest.raises(ValueError, match="not an integer grade"):
        evaluate({"q": {"a": 1.0}}, {"q": {"a": "1"}}, "mrr@1")
    with pytest.raises(ValueError, match="not a number"):
        evaluate({"q": {"a": float("nan")}}, {"q": {"a": 1}}, "mrr@1")
    with pytest.raises(TypeError):
        evaluate([("q", "a", 1.0)], {"q": {"a": 1}}, "mrr@1")
    with pytest.raises(ValueError, match="missing"):
        evaluate({"q": {"a": 1.0}}, {"q": {"a": 1}}, "mrr@1", missing="drop")


@pytest.mark.requires("pytrec_eval", "Stemmer")
def test_shared_data_bm25_equals_pytrec_eval(shared_data):
    from ragcore.io.corpus import iter_corpus, load_qrels, load_queries

    folder = shared_data / "msmarco-5k"
    docs = list(iter_corpus(folder))
    queries = load_queries(folder)
    qrels = load_qrels(folder)
    bm25 = rc.BM25(analyzer=rc.Analyzer(stopwords="english", stemmer="english"))
    bm25.index([t for _, t in docs], ids=[d for d, _ in docs])
    qids = list(queries)
    hits = bm25.search([queries[q] for q in qids], k=100)
    names = ["ndcg@10", "recall@100", "precision@10", "map@100", "mrr@100"]
    got = evaluate(hits, qrels, names, query_ids=qids, missing="ignore")
    run = {q: {d: float(s) for d, s in zip(hits.ids[i], hits.scores[i]) if d is not None} for i, q in enumerate(qids)}
    ref = trec(run, qrels, {"ndcg_cut.10", "recall.100", "P.10", "map_cut.100", "recip_rank"})
    keys = ["ndcg_cut_10", "recall_100", "P_10", "map_cut_100", "recip_rank"]
    for name, key in zip(names, keys):
        assert got.mean[name] == pytest.approx(np.mean([v[key] for v in ref.values()]), abs=1e-9)


@pytest.mark.requires("pytrec_eval", "Stemmer")
def test_load_beir_and_get_retrieval_score(shared_data):
    data = rc.datasets.load_beir(shared_data / "msmarco-5k")
    assert len(data.corpus) == 5000 and len(data.queries) == 50
    assert all(isinstance(g, int) for judged in data.qrels.values() for g in judged.values())
    an = rc.Analyzer(stopwords="english", stemmer="english")
    got = rc.get_retrieval_score(rc.BM25(analyzer=an), data, ["ndcg@10", "recall@100"])
    # the same thing by hand, scored by pytrec_eval
    bm25 = rc.BM25(analyzer=an).index(list(data.corpus.values()), ids=list(data.corpus))
    qids = [q for q in data.queries if q in data.qrels]
    hits = bm25.search([data.queries[q] for q in qids], k=100)
    run = {q: {d: float(s) for d, s in zip(hits.ids[i], hits.scores[i]) if d is not None} for i, q in enumerate(qids)}
    ref = trec(run, data.qrels, {"ndcg_cut.10", "recall.100"})
    assert got["ndcg@10"] == pytest.approx(np.mean([v["ndcg_cut_10"] for v in ref.values()]), abs=1e-9)
    assert got["recall@100"] == pytest.approx(np.mean([v["recall_100"] for v in ref.values()]), abs=1e-9)


def test_load_beir_rejects_duplicate_ids(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q", "text": "x"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\ta\t1\n")
    with pytest.raises(ValueError, match="duplicate document id 'a'"):
        rc.datasets.load_beir(tmp_path)
