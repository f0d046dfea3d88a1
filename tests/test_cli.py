"""The ragcore command: index a JSONL corpus / BEIR folder, search it, the demo, and its errors."""
from __future__ import annotations

import json

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
    assert main(["index", str(folder), "-o", str(out), "-q", "--retriever", "tfidf"]) == 0
    assert isinstance(rc.sparse.load(out), rc.TfIdf)


def test_demo_answers_from_python_docs(capsys):
    pytest.importorskip("Stemmer")
    assert main(["demo", "--question", "What does the with statement do?", "-k", "3"]) == 0
    printed = capsys.readouterr().out
    assert "[1]" in printed and "with" in printed.lower()


def test_errors_exit_2(tmp_path, capsys):
    assert main(["search", str(tmp_path / "missing"), "q"]) == 2
    assert "not a ragcore index" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "ok"}\n{not json}\n')
    assert main(["index", str(bad), "-o", str(tmp_path / "x"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err
    assert not (tmp_path / "x").exists()


def test_duplicate_ids_rejected(tmp_path, capsys):
    path = tmp_path / "dup.jsonl"
    path.write_text(json.dumps(DOCS[0]) + "\n" + json.dumps(DOCS[0]) + "\n")
    assert main(["index", str(path), "-o", str(tmp_path / "x"), "-q"]) == 2
    assert "duplicate id 'd1'" in capsys.readouterr().err
