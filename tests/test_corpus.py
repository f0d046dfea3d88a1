"""Tests of corpus, query and qrels reading (ragcore.io.corpus)."""

import gzip
import json
from pathlib import Path

import pytest

from ragcore.io import corpus
from ragcore.io.corpus import count_lines, iter_corpus, load_qrels, load_queries

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DATASETS = ["msmarco-5k", "dbpedia-5k"]


def _jsonl(records):
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def _write(path, text, gz=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8") if isinstance(text, str) else text
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


DOCS = [
    {"_id": "d1", "title": "Title", "text": "body one"},
    {"_id": "d2", "title": "", "text": "body two"},
    {"_id": "d3", "text": "body three"},
    {"_id": "d4", "title": None, "text": "body four", "metadata": {}},
    {"_id": 5, "title": "T5", "text": ""},
]
EXPECTED = [("d1", "Title body one"), ("d2", "body two"), ("d3", "body three"), ("d4", "body four"),
            ("5", "T5 ")]


def test_title_joining(tmp_path):
    path = _write(tmp_path / "c.jsonl", _jsonl(DOCS))
    assert list(iter_corpus(path)) == EXPECTED
    assert list(iter_corpus(str(path))) == EXPECTED
    assert count_lines(path) == len(DOCS)


def test_custom_fields(tmp_path):
    path = _write(tmp_path / "c.jsonl", _jsonl([{"id": "a", "head": "H", "body": "B"}]))
    assert list(iter_corpus(path, id_field="id", title_field="head", text_field="body")) == [("a", "H B")]


@pytest.mark.parametrize("name", ["c.jsonl.gz", "c.jsonl"])
def test_gzip_detected_by_content(tmp_path, name):
    path = _write(tmp_path / name, _jsonl(DOCS), gz=True)
    assert list(iter_corpus(path)) == EXPECTED
    assert count_lines(path) == len(DOCS)


@pytest.mark.parametrize("name, gz", [("corpus.jsonl", False), ("corpus.jsonl.gz", True)])
def test_beir_folder(tmp_path, name, gz):
    _write(tmp_path / "beir" / name, _jsonl(DOCS), gz=gz)
    assert list(iter_corpus(tmp_path / "beir")) == EXPECTED
    assert count_lines(tmp_path / "beir") == len(DOCS)


def test_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(iter_corpus(tmp_path / "nope.jsonl"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no corpus.jsonl or corpus.jsonl.gz"):
        list(iter_corpus(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError):
        count_lines(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="queries"):
        load_queries(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="qrels"):
        load_qrels(tmp_path / "empty", split="dev")
    with pytest.raises(FileNotFoundError):
        load_qrels(tmp_path / "nope.tsv")


def test_blank_lines_and_bom(tmp_path):
    text = "\ufeff" + _jsonl([DOCS[0]]) + "\n   \n\t\r\n" + _jsonl([DOCS[1]]).replace("\n", "\r\n")
    path = _write(tmp_path / "c.jsonl", text + "  ")
    assert list(iter_corpus(path)) == EXPECTED[:2]
    assert count_lines(path) == 2


@pytest.mark.parametrize("line, problem", [
    ('{"_id": "x", "text": ', "invalid JSON"),
    ('["x", "text"]', "expected a JSON object, got list"),
    ('"just a string"', "expected a JSON object, got str"),
    ('{"text": "t"}', "missing '_id'"),
    ('{"_id": null, "text": "t"}', "missing '_id'"),
    ('{"_id": "", "text": "t"}', "'_id' is empty"),
    ('{"_id": true, "text": "t"}', "'_id' must be a string or an integer, got bool"),
    ('{"_id": [1], "text": "t"}', "'_id' must be a string or an integer, got list"),
    ('{"_id": "x"}', "missing 'text'"),
    ('{"_id": "x", "text": 3}', "'text' must be a string, got int"),
    ('{"_id": "x", "text": "t", "title": 1}', "'title' must be a string, got int"),
])
def test_malformed_line_names_file_and_line(tmp_path, line, problem):
    path = _write(tmp_path / "c.jsonl", _jsonl([DOCS[0]]) + "\n" + _jsonl([DOCS[1], line, DOCS[2]]))
    it = iter_corpus(path)
    assert next(it) == EXPECTED[0] and next(it) == EXPECTED[1]  # streams: earlier records come first
    with pytest.raises(ValueError) as info:
        next(it)
    assert str(info.value).startswith(f"{path}:4: ") and problem in str(info.value)


def test_invalid_utf8(tmp_path):
    path = _write(tmp_path / "c.jsonl", _jsonl([DOCS[0]]).encode() + b'{"_id": "x", "text": "\xff"}\n')
    with pytest.raises(ValueError, match=r"c.jsonl:2: not valid UTF-8"):
        list(iter_corpus(path))


def test_truncated_gzip(tmp_path):
    data = gzip.compress(_jsonl(DOCS * 50).encode())
    path = _write(tmp_path / "c.jsonl.gz", data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        list(iter_corpus(path))
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        count_lines(path)                      # the progress bar's count too (was a raw EOFError)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 8, 64, 1 << 20])
@pytest.mark.parametrize("text", [
    "", "\n", "a", "a\n", "a\nb", "\n\na\n\n", " \n\t\nab\r\n  x  \n", "a\n\n\n\nb\n \n", "aaaa\nbbbbbbbb\ncc",
])
def test_count_lines_across_chunk_boundaries(tmp_path, monkeypatch, chunk, text):
    monkeypatch.setattr(corpus, "_CHUNK", chunk)
    path = _write(tmp_path / "c.txt", text)
    assert count_lines(path) == sum(1 for line in text.split("\n") if line.strip(" \t\r\n\f\v"))


def test_load_queries(tmp_path):
    queries = [{"_id": "q1", "text": "first"}, {"_id": 2, "text": "second", "metadata": {}}]
    _write(tmp_path / "beir" / "queries.jsonl", _jsonl(queries))
    assert load_queries(tmp_path / "beir") == {"q1": "first", "2": "second"}
    assert load_queries(tmp_path / "beir" / "queries.jsonl") == {"q1": "first", "2": "second"}
    dup = _write(tmp_path / "dup.jsonl", _jsonl(queries + [{"_id": "q1", "text": "again"}]))
    with pytest.raises(ValueError, match=r"dup.jsonl:3: duplicate query id 'q1' \(first on line 1\)"):
        load_queries(dup)
    bad = _write(tmp_path / "bad.jsonl", _jsonl(queries + [{"_id": "q3"}]))
    with pytest.raises(ValueError, match=r"bad.jsonl:3: missing 'text'"):
        load_queries(bad)


QRELS = {"q1": {"d1": 1, "d2": 0}, "q2": {"d1": 2}}


@pytest.mark.parametrize("text", [
    "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq2\td1\t2\n",
    "q1\td1\t1\nq1\td2\t0\n\nq2\td1\t2",
    "q1 0 d1 1\nq1 0 d2 0\nq2 0 d1 2\n",
    "query-id corpus-id score\r\nq1  d1  1.0\r\nq1 d2 0\r\nq2 d1 +2\r\n",
])
def test_load_qrels_formats(tmp_path, text):
    assert load_qrels(_write(tmp_path / "q.tsv", text)) == QRELS


def test_load_qrels_beir_folder_and_gzip(tmp_path):
    text = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq2\td1\t2\n"
    _write(tmp_path / "beir" / "qrels" / "test.tsv", text)
    _write(tmp_path / "beir" / "qrels" / "dev.tsv.gz", text, gz=True)
    assert load_qrels(tmp_path / "beir") == QRELS
    assert load_qrels(tmp_path / "beir", split="dev") == QRELS
    with pytest.raises(ValueError, match="plain name"):
        load_qrels(tmp_path / "beir", split="../x")


@pytest.mark.parametrize("row, problem", [
    ("q2\td1\t1.5", "score '1.5' is not an integer"),
    ("q2\td1\tx1", "score 'x1' is not an integer"),
    ("q2\td1\tnan", "score 'nan' is not an integer"),
    ("q2\td1", "expected 3 columns (query-id, corpus-id, score) or 4 (TREC), got 2"),
    ("q2\td1\t1\t2\t3", "expected 3 columns (query-id, corpus-id, score) or 4 (TREC), got 5"),
    ("\td1\t1", "empty query id"),
    ("q1\td2\t1", "duplicate judgement for query 'q1' and document 'd2' (first on line 3)"),
])
def test_load_qrels_errors(tmp_path, row, problem):
    path = _write(tmp_path / "q.tsv", f"query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\n\n{row}\n")
    with pytest.raises(ValueError) as info:
        load_qrels(path)
    assert str(info.value) == f"{path}:5: {problem}"


def test_header_only_on_first_line(tmp_path):
    path = _write(tmp_path / "q.tsv", "q1\td1\t1\nquery-id\tcorpus-id\tscore\n")
    with pytest.raises(ValueError, match=r"q.tsv:2: score 'score' is not an integer"):
        load_qrels(path)


@pytest.mark.parametrize("name", DATASETS)
def test_real_beir_data(name):
    folder = DATA / name
    if not (folder / "corpus.jsonl").is_file():
        pytest.skip(f"evaluation data not found at {folder} (a fresh clone has no ../shared/data)")
    docs = list(iter_corpus(folder))
    assert len(docs) == count_lines(folder) == 5000
    assert len({doc_id for doc_id, _ in docs}) == len(docs)
    assert all(isinstance(text, str) and text for _, text in docs)
    queries = load_queries(folder)
    assert len(queries) == 50 and all(queries.values())
    qrels = load_qrels(folder, split="test")
    with open(folder / "qrels" / "test.tsv", encoding="utf-8") as f:
        n_rows = sum(1 for line in f if line.strip()) - 1  # minus the header
    assert sum(len(v) for v in qrels.values()) == n_rows
    assert set(qrels) <= set(queries)
    assert all(isinstance(s, int) and s >= 0 for v in qrels.values() for s in v.values())


def test_corpus_deeply_nested_line(tmp_path):
    f = tmp_path / "corpus.jsonl"
    deep = "[" * 200000 + "]" * 200000
    f.write_text('{"_id": "1", "text": "fine"}\n{"_id": "2", "text": "x", "meta": ' + deep + "}\n")
    with pytest.raises(ValueError, match=r"corpus.jsonl:2: invalid JSON \(nested too deeply\)"):
        list(iter_corpus(f))
