"""`ragcore bench`: the CLI on a tiny BEIR folder and a tiny synthetic corpus, its outputs, and its errors.

Each engine runs in its own process, so the runs are kept tiny (a few dozen documents, one timed repeat of a
few milliseconds): these tests check what is written, not how fast anything is.
"""
from __future__ import annotations

import json
import random
import sys

import pytest

import ragcore as rc
from ragcore.bench._runner import installed
from ragcore.cli import main

FAST = ["--repeats", "1", "--min-queries", "5", "--min-time", "0", "--max-time", "0.01", "-q"]
WORDS = ("cat dog fish bird horse mouse river mountain forest ocean city village road bridge castle garden "
         "winter summer music paint story dragon engine rocket planet").split()
PEERS = [p for p in ("bm25s", "sklearn") if installed(p)]
ROW_KEYS = {"engine", "mode", "k", "threads", "call", "input", "qps", "build_s", "index_bytes", "peak_rss_bytes",
            "ragcore_speedup"}


def _make_beir(root):
    """40 documents of distinct lengths (no BM25 ties), 6 queries, 5 of them judged (graded: the documents
    that repeat the query's words most)."""
    rng = random.Random(3)
    (root / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": rng.choice(WORDS).title(),
             "text": " ".join(rng.choice(WORDS) for _ in range(i + 4))} for i in range(40)]
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    queries = [{"_id": f"q{i}", "text": f"{WORDS[i]} {WORDS[i + 7]}"} for i in range(6)]
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    lines = []
    for i in range(5):
        count = [f"{d['title']} {d['text']}".lower().split().count(WORDS[i]) for d in docs]
        best = sorted(range(40), key=lambda j: -count[j])[:4]
        lines += [f"q{i}\td{j}\t{2 if r < 2 else 1}" for r, j in enumerate(best)]
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(lines) + "\n")
    return docs, queries


@pytest.fixture(scope="module")
def beir_run(tmp_path_factory):
    """One CLI run on the tiny BEIR folder: ragcore, the installed test peers, and tantivy made missing."""
    root = tmp_path_factory.mktemp("beir")
    docs, queries = _make_beir(root / "tiny")
    out = root / "out"
    mp = pytest.MonkeyPatch()
    mp.setitem(sys.modules, "tantivy", None)   # as if not installed
    capture = []
    mp.setattr(sys, "stderr", _Tee(sys.stderr, capture))
    try:
        code = main(["bench", str(root / "tiny"), "-o", str(out), "--engines", ",".join(["ragcore", *PEERS, "tantivy"]),
                     "--k", "5", "10", "--threads", "1", *FAST])
    finally:
        mp.undo()
    rows = json.loads((out / "results.json").read_text())
    return {"code": code, "out": out, "rows": rows, "stderr": "".join(capture), "folder": root / "tiny",
            "docs": docs, "queries": queries}


class _Tee:
    def __init__(self, stream, sink):
        self.stream, self.sink = stream, sink

    def write(self, s):
        self.sink.append(s)
        return self.stream.write(s)

    def flush(self):
        self.stream.flush()


def test_beir_results_schema(beir_run):
    assert beir_run["code"] == 0
    rows = beir_run["rows"]
    assert isinstance(rows, list) and rows
    for r in rows:
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
        assert r["mode"] == "sparse" and r["k"] in (5, 10) and r["threads"] == 1 and r["qps"] > 0
        assert 0 <= r["ndcg@10"] <= 1
        assert r["call"] in ("single", "batch") and r["input"] == "text"
        if r["call"] == "single":
            assert 0 < r["latency_p50_ms"] <= r["latency_p95_ms"] <= r["latency_p99_ms"]
    engines = {r["engine"] for r in rows}
    assert {"ragcore-bm25", "ragcore-tfidf"} <= engines
    ref = {(r["k"], r["call"]): r["qps"] for r in rows if r["engine"] == "ragcore-bm25"}
    for r in rows:
        if r["family"] == "bm25":
            assert r["ragcore_speedup"] == pytest.approx(ref[(r["k"], r["call"])] / r["qps"])
    out = beir_run["out"]
    report = (out / "report.md").read_text()
    assert "## Sparse retrieval" in report and "Machine:" in report and "ragcore-bm25" in report
    meta = json.loads((out / "meta.json").read_text())
    assert meta["data"]["n_docs"] == 40 and meta["data"]["n_judged"] == 5
    assert meta["machine"]["versions"]["python"]
    if installed("matplotlib"):
        assert (out / "qps.png").stat().st_size > 0 and (out / "latency.png").stat().st_size > 0


def test_report_without_matplotlib(beir_run, tmp_path, monkeypatch):
    from ragcore.bench._report import write

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    meta = json.loads((beir_run["out"] / "meta.json").read_text())
    lines = write(beir_run["rows"], meta, tmp_path)
    assert any('pip install "ragcore[plot]"' in line for line in lines)
    assert json.loads((tmp_path / "results.json").read_text()) == beir_run["rows"]
    assert (tmp_path / "report.md").exists() and not (tmp_path / "qps.png").exists()


def test_jsonl_corpus_with_queries_and_qrels(beir_run, tmp_path, monkeypatch):
    folder, out = beir_run["folder"], tmp_path / "out"
    monkeypatch.chdir(folder)   # relative paths: the engine processes run elsewhere
    assert main(["bench", "--corpus", "corpus.jsonl", "--queries", "queries.jsonl",
                 "--qrels", "qrels/test.tsv", "-o", str(out), "--engines", "ragcore-bm25",
                 "--threads", "1", "--calls", "batch", "--no-plots", *FAST]) == 0
    rows = json.loads((out / "results.json").read_text())
    want = next(r["ndcg@10"] for r in beir_run["rows"] if r["engine"] == "ragcore-bm25")
    assert [(r["engine"], r["call"], r["dataset"]) for r in rows] == [("ragcore-bm25", "batch", "corpus")]
    assert rows[0]["ndcg@10"] == pytest.approx(want, abs=1e-12)


def test_beir_ndcg_is_rc_evaluate(beir_run):
    """nDCG@10 in the results equals rc.evaluate on the same BM25 / TF-IDF searched directly."""
    docs, queries = beir_run["docs"], beir_run["queries"]
    qrels = rc.datasets.load_beir(beir_run["folder"]).qrels
    judged = [q for q in queries if q["_id"] in qrels]
    texts = [f"{d['title']} {d['text']}" for d in docs]
    an = rc.Analyzer(stopwords="english", stemmer="english")
    for engine, model in (("ragcore-bm25", rc.BM25(analyzer=an)), ("ragcore-tfidf", rc.TfIdf(analyzer=an))):
        model.index(texts, ids=[d["_id"] for d in docs])
        hits = model.search([q["text"] for q in judged], k=10)
        want = rc.evaluate(hits, qrels, ["ndcg@10"], query_ids=[q["_id"] for q in judged]).mean["ndcg@10"]
        got = {r["ndcg@10"] for r in beir_run["rows"] if r["engine"] == engine}
        assert len(got) == 1 and got.pop() == pytest.approx(want, abs=1e-12), engine
        assert want > 0.3


@pytest.mark.parametrize("peer", ["bm25s", "sklearn"])
def test_beir_peer_measured(beir_run, peer):
    if not installed(peer):
        pytest.skip(f"{peer} is not installed")
    rows = [r for r in beir_run["rows"] if r["engine"] == peer]
    assert {(r["k"], r["call"]) for r in rows} == {(5, "single"), (5, "batch"), (10, "single"), (10, "batch")}
    if peer == "sklearn":   # TfidfVectorizer + cosine is what rc.TfIdf computes: same ranking, same nDCG
        rc_ndcg = next(r["ndcg@10"] for r in beir_run["rows"] if r["engine"] == "ragcore-tfidf")
        assert rows[0]["ndcg@10"] == pytest.approx(rc_ndcg, abs=1e-9)


def test_missing_engine_is_skipped(beir_run):
    line = "skipped tantivy: not installed (pip install tantivy)"
    assert line in beir_run["stderr"]
    assert line in (beir_run["out"] / "report.md").read_text()
    assert "tantivy" not in {r["engine"] for r in beir_run["rows"]}


def test_synthetic_one_and_all_threads(tmp_path):
    out = tmp_path / "out"
    assert main(["bench", "--synthetic", "300", "--n-queries", "20", "-o", str(out), "--engines", "ragcore-bm25",
                 "--threads", "1", "2", "--calls", "batch", "--no-plots", *FAST]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert {(r["threads"], r["call"]) for r in rows} == {(1, "batch"), (2, "batch")}
    assert all(r["dataset"] == "synthetic-300" and r["n_docs"] == 300 and "ndcg@10" not in r for r in rows)
    assert not (out / "qps.png").exists()


def test_dense_random_vectors_exact(tmp_path):
    out = tmp_path / "out"
    engines = ["ragcore", "numpy"] + (["faiss"] if installed("faiss") else [])
    assert main(["bench", "--synthetic", "400", "--n-queries", "30", "--dense", "--vectors", "random", "--dim", "16",
                 "-o", str(out), "--engines", *engines, "--threads", "1", "--no-plots", *FAST]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert {r["engine"] for r in rows} == {"ragcore-dense", *engines[1:]}
    assert all(r["mode"] == "dense" and r["recall@10"] == 1.0 for r in rows)   # all exact
    assert "random unit vectors" in (out / "report.md").read_text()


def _bad_queries(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"_id": "a", "text": "cat"}\n')
    (tmp_path / "q.jsonl").write_text('{"text": "cat"}\n')
    return ["--corpus", str(tmp_path / "c.jsonl"), "--queries", str(tmp_path / "q.jsonl")], "q.jsonl:1: missing '_id'"


BAD = {
    "missing folder": lambda p: ([str(p / "nope")], "does not exist"),
    "queries without ids": _bad_queries,
    "unknown engine": lambda p: (["--synthetic", "100", "--engines", "lucene9"], "unknown engine 'lucene9'"),
    "k=0": lambda p: (["--synthetic", "100", "--k", "0"], "k must be >= 1"),
    "two sources": lambda p: ([str(p), "--synthetic", "100"], "give one source of data"),
    "synthetic 0": lambda p: (["--synthetic", "0"], "synthetic size must be >= 1"),
    "corpus without queries": lambda p: (["--corpus", str(p / "c.jsonl")], "give its queries too"),
    "dense engine in sparse mode": lambda p: (["--synthetic", "100", "--engines", "faiss"], "add the dense mode"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2(case, tmp_path, capsys):
    (tmp_path / "c.jsonl").write_text('{"_id": "a", "text": "cat"}\n')
    args, message = BAD[case](tmp_path)
    assert main(["bench", *args, "-o", str(tmp_path / "out"), *FAST]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
