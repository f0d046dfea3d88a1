"""The ragcore command: index a JSONL corpus / BEIR folder, search it, the demo, and its errors."""
from __future__ import annotations

import importlib.util
import json
import sys

import pytest

import ragcore as rc
from ragcore.cli import main

DOCS = [
    {"_id": "d1", "title": "Cats", "text": "The cat sat on the mat."},
    {"_id": "d2", "title": "Dogs", "text": "A dog barked at the mailman."},
    {"_id": "d3", "title": "", "text": "Cats and dogs can live together."},
]


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in DOCS) + "\n")
    return path


def test_index_and_search(corpus, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", str(corpus), "-o", str(out), "-q", "--stemmer", "none"]) == 0
    loaded = rc.BM25.load(out)
    assert len(loaded) == 3 and loaded.ids.tolist() == ["d1", "d2", "d3"]
    # the CLI index equals the library's on the same text (title + " " + text)
    ref = rc.BM25(analyzer=rc.Analyzer(stopwords="english")).index(
        [f"{d['title']} {d['text']}" if d["title"] else d["text"] for d in DOCS])
    hits, ref_hits = loaded.search("cat dog", k=3), ref.search("cat dog", k=3)
    assert hits.indices.tolist() == ref_hits.indices.tolist()
    capsys.readouterr()
    assert main(["search", str(out), "cats", "-k", "2"]) == 0
    printed = capsys.readouterr().out
    assert "d1" in printed and "rank" in printed


def test_index_beir_folder_tfidf(corpus, tmp_path):
    folder = tmp_path / "beir"
    folder.mkdir()
    corpus.rename(folder / "corpus.jsonl")
    out = tmp_path / "idx"
    assert main(["index", str(folder), "-o", str(out), "-q", "--retriever", "tfidf", "--stemmer", "none"]) == 0
    assert isinstance(rc.retrieval.sparse.load(out), rc.TfIdf)


def test_demo_answers_from_python_docs(capsys):
    pytest.importorskip("Stemmer")
    assert main(["demo", "--question", "What does the with statement do?", "-k", "3", "--retrieve-only"]) == 0
    printed = capsys.readouterr().out
    assert "[1]" in printed and "with" in printed.lower()


def test_errors_exit_2(tmp_path, capsys):
    assert main(["search", str(tmp_path / "missing"), "q"]) == 2
    assert "not a ragcore index" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "ok"}\n{not json}\n')
    assert main(["index", str(bad), "-o", str(tmp_path / "x"), "-q", "--stemmer", "none"]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err
    assert not (tmp_path / "x").exists()


def test_duplicate_ids_rejected(tmp_path, capsys):
    path = tmp_path / "dup.jsonl"
    path.write_text(json.dumps(DOCS[0]) + "\n" + json.dumps(DOCS[0]) + "\n")
    assert main(["index", str(path), "-o", str(tmp_path / "x"), "-q", "--stemmer", "none"]) == 2
    assert "duplicate id 'd1'" in capsys.readouterr().err


def _beir(tmp_path):
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in DOCS) + "\n")
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "cat on a mat"}\n{"_id": "q2", "text": "dogs"}\n')
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\td2\t1\nq2\td3\t1\n")
    return folder


def test_eval_compares_configurations(tmp_path, capsys):
    folder = _beir(tmp_path)
    out = tmp_path / "out"
    assert main(["eval", str(folder), "--k1", "0.9", "1.5", "--b", "0.75", "--stemmer", "none",
                 "--metrics", "ndcg@10,recall@2", "-o", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "bm25-lucene-k1=0.9-b=0.75" in printed and "bm25-lucene-k1=1.5-b=0.75" in printed
    means = json.loads((out / "metrics.json").read_text())
    per_query = json.loads((out / "per_query.json").read_text())
    assert set(means) == set(per_query) == {"bm25-lucene-k1=0.9-b=0.75", "bm25-lucene-k1=1.5-b=0.75"}
    if importlib.util.find_spec("matplotlib") is not None:   # without it: test_eval_without_matplotlib
        assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the CLI's figures are rc.evaluate's on the same run
    data = rc.datasets.load_beir(folder)
    bm25 = rc.BM25(k1=0.9, analyzer=rc.Analyzer(stopwords="english")).index(list(data.corpus.values()),
                                                                           ids=list(data.corpus))
    hits = bm25.search([data.queries[q] for q in ("q1", "q2")], k=100)
    ev = rc.evaluate(hits, data.qrels, ["ndcg@10", "recall@2"], query_ids=["q1", "q2"])
    assert means["bm25-lucene-k1=0.9-b=0.75"] == pytest.approx(ev.mean)


def test_eval_without_matplotlib(tmp_path, capsys, monkeypatch):
    """The plot is optional: without matplotlib, eval -o writes its JSON, names the extra, exits 0."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib raises ImportError
    folder = _beir(tmp_path)
    out = tmp_path / "out"
    assert main(["eval", str(folder), "--stemmer", "none", "--metrics", "ndcg@10", "-o", str(out), "-q"]) == 0
    captured = capsys.readouterr()
    assert 'pip install "ragcore[plot]"' in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "per_query.json"]
    assert set(json.loads((out / "metrics.json").read_text())["bm25-lucene-k1=1.5-b=0.75"]) == {"ndcg@10"}
    assert "plot.png" not in captured.out and "metrics.json" in captured.out


def test_eval_errors(tmp_path, capsys):
    folder = _beir(tmp_path)
    assert main(["eval", str(folder), "--metrics", "ndcg@0", "-q"]) == 2
    assert "k must be >= 1" in capsys.readouterr().err
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nzz\td1\t1\n")
    assert main(["eval", str(folder), "-q", "--stemmer", "none"]) == 2
    assert "no query" in capsys.readouterr().err
