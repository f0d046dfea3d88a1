"""Tuning BM25 on a seeded query split: the split, the choice, the held-out scores, the CLI."""
from __future__ import annotations

import json

import pytest

import ragcore as rc
from ragcore.cli import main
from ragcore.eval.tuning import split_queries


def test_split_is_seeded_disjoint_and_complete():
    qids = [f"q{i}" for i in range(11)]
    train, test = split_queries(qids, 0.4, seed=3)
    assert (train, test) == split_queries(list(reversed(qids)), 0.4, seed=3)  # input order does not matter
    assert set(train) | set(test) == set(qids) and not set(train) & set(test)
    assert len(test) == 4
    assert split_queries(qids, 0.4, seed=4) != (train, test)
    with pytest.raises(ValueError):
        split_queries(qids, 1.0)
    with pytest.raises(ValueError):
        split_queries(["only"], 0.5)


def _data():
    corpus = {f"d{i}": t for i, t in enumerate([
        "red apples and green apples", "a red car on the road", "green fields and trees",
        "apples grow on trees", "the road to the fields", "a car full of apples"])}
    queries = {"q1": "red apples", "q2": "green trees", "q3": "car road", "q4": "apples trees", "q5": "fields"}
    qrels = {"q1": {"d0": 2, "d5": 1}, "q2": {"d2": 1, "d3": 1}, "q3": {"d1": 2, "d4": 1},
             "q4": {"d3": 2, "d0": 1}, "q5": {"d2": 1, "d4": 1}}
    return rc.datasets.BeirData(corpus, queries, qrels)


def test_best_is_the_train_argmax_and_test_scores_are_held_out():
    data = _data()
    an = rc.Analyzer()
    res = rc.tune_bm25(data, "ndcg@3", k1=(0.5, 1.5), b=(0.25, 0.75), analyzer=an, test_fraction=0.4, seed=1)
    assert len(res.grid) == 4 and res.train_best == max(p["train"] for p in res.grid)

    def score(params, queries):
        bm25 = rc.BM25(k1=params["k1"], b=params["b"], method=params["method"], analyzer=an)
        bm25.index(list(data.corpus.values()), ids=list(data.corpus))
        hits = bm25.search([data.queries[q] for q in queries], k=3)
        return rc.evaluate(hits, {q: data.qrels[q] for q in queries}, "ndcg@3", query_ids=queries).mean["ndcg@3"]

    assert res.train_best == pytest.approx(score(res.best_params, res.train))
    assert res.test_best == pytest.approx(score(res.best_params, res.test))
    assert res.test_default == pytest.approx(score({"method": "lucene", "k1": 1.5, "b": 0.75}, res.test))


def test_cli_tune_saves_the_best_index(tmp_path, capsys):
    data = _data()
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": d, "text": t}) for d, t in data.corpus.items()))
    (folder / "queries.jsonl").write_text("\n".join(json.dumps({"_id": q, "text": t}) for q, t in data.queries.items()))
    rows = [f"{q}\t{d}\t{g}" for q, j in data.qrels.items() for d, g in j.items()]
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    out = tmp_path / "idx"
    assert main(["tune", str(folder), "--metric", "ndcg@3", "--k1", "0.5", "1.5", "--b", "0.75",
                 "--stemmer", "none", "-o", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    # the oracle: the library's tuning with the CLI's defaults (english stopwords, seed 0, half held out)
    res = rc.tune_bm25(folder, "ndcg@3", k1=(0.5, 1.5), b=(0.75,), analyzer=rc.Analyzer(stopwords="english"))
    best = res.best_params
    assert f"best on train: method={best['method']} k1={best['k1']:g} b={best['b']:g}" in printed
    assert f"held-out ndcg@3: best {res.test_best:.4f}" in printed
    loaded = rc.BM25.load(out)
    assert len(loaded) == 6 and (loaded.method, loaded.k1, loaded.b) == (best["method"], best["k1"], best["b"])
