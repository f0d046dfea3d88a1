"""save/load round trips and refusal of anything that is not an intact index of the right kind."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import ragcore as rc
from reference import METHODS

STEM_ANALYZER = dict(stopwords="english", stemmer="english")  # needs PyStemmer: its tests say so


def _texts(c):
    # stopwords and inflected forms, so a lost analyzer setting changes results
    extra = ["The runners were running", "a RUNNER runs", "Generously generous generations", "the of and"]
    return [t + " " + extra[i % len(extra)] if i % 3 else t for i, t in enumerate(c.texts)]


def _queries(c):
    return c.query_texts + ["running", "RUNS generation", "the", "runner generously " + c.vocab[0]]


def make_engine(kind, **an):
    analyzer = rc.Analyzer(**an) if an else None
    if kind == "tfidf":
        return rc.TfIdf(analyzer=analyzer)
    if kind == "tfidf-sublinear":
        return rc.TfIdf(sublinear_tf=True, smooth_idf=False, analyzer=analyzer)
    return rc.BM25(method=kind, k1=1.2, b=0.6, delta=0.7, analyzer=analyzer)


def load(kind, path, **kw):
    cls = rc.TfIdf if kind.startswith("tfidf") else rc.BM25
    return cls.load(path, **kw)


def assert_same(a, b, queries, k=7):
    assert len(a) == len(b) and a.vocabulary_size == b.vocabulary_size
    if a.ids is None:
        assert b.ids is None
    else:
        assert list(a.ids) == list(b.ids)
    ha, hb = a.search(queries, k=k), b.search(queries, k=k)
    np.testing.assert_array_equal(ha.indices, hb.indices)
    np.testing.assert_array_equal(ha.scores, hb.scores)
    if ha.ids is None:
        assert hb.ids is None
    else:
        assert ha.ids.tolist() == hb.ids.tolist()
    for q in queries:
        np.testing.assert_array_equal(a.get_scores(q), b.get_scores(q))


KINDS = list(METHODS) + ["tfidf", "tfidf-sublinear"]


@pytest.mark.requires("Stemmer")
@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip(tmp_path, corpus97, kind, mmap):
    eng = make_engine(kind, **STEM_ANALYZER)
    ids = [f"doc/{i}" for i in range(len(corpus97))]
    eng.index(_texts(corpus97), ids=ids)
    eng.save(tmp_path / "idx")
    assert (tmp_path / "idx" / "manifest.json").is_file()
    json.loads((tmp_path / "idx" / "manifest.json").read_text())  # valid JSON
    back = load(kind, tmp_path / "idx", mmap=mmap)
    assert type(back) is type(eng)
    assert_same(eng, back, _queries(corpus97))
    # the analyzer came back with its stemmer and stopwords: text queries behave the same ...
    assert (back.search("running", k=3).indices[0] >= 0).any()
    # ... and so does indexing new text with the loaded object
    back.index(["the cat", "running cats"], ids=["x", "y"])
    h = back.search(["the", "run", "cat"], k=2)
    assert h.indices.tolist() == [[-1, -1], [1, -1], [0, 1]]


@pytest.mark.parametrize("kind", ["lucene", "bm25+", "tfidf"])
def test_round_trip_int_ids_no_ids_and_str_path(tmp_path, corpus1000, kind):
    for ids in (None, [7 * i + 3 for i in range(len(corpus1000))]):
        eng = make_engine(kind)
        eng.index(corpus1000.tokens, ids=ids)
        path = str(tmp_path / f"idx-{ids is None}")  # a str path works as well as a Path
        eng.save(path)
        back = load(kind, path)
        assert_same(eng, back, corpus1000.queries[:8], k=50)
        if ids is not None:
            assert [int(x) for x in back.ids] == ids


def test_round_trip_analyzer_options(tmp_path):
    an = rc.Analyzer(lowercase=False, stopwords=["foo", "bar"], min_token_len=3)
    eng = rc.BM25(analyzer=an).index(["foo bar BAZ xy xyz Qux", "Foo baz qux BAZ", "xyz"])
    eng.save(tmp_path / "i")
    back = rc.BM25.load(tmp_path / "i")
    queries = ["BAZ", "baz", "xyz", "XYZ", "Qux", "qux", "foo", "Foo", "xy", "baz Qux"]
    assert_same(eng, back, queries, k=3)
    back.index(["foo bar xy XYZ"])
    assert back.vocabulary_size == 1  # only "XYZ" survives lowercase=False, the stopwords and min_token_len=3
    assert back.search("XYZ", k=1).indices.tolist() == [[0]]
    assert back.search("xyz", k=1).indices.tolist() == [[-1]]


def test_one_document_index(tmp_path):
    eng = rc.BM25().index(["only one document"])
    eng.save(tmp_path / "one")
    assert_same(eng, rc.BM25.load(tmp_path / "one"), ["document", "none"], k=3)


def test_save_over_existing_index(tmp_path, corpus97, corpus1000):
    path = tmp_path / "idx"
    a = rc.BM25(method="atire").index(corpus1000.texts)
    a.save(path)
    b = rc.BM25(method="bm25l").index(corpus97.texts, ids=[str(i) for i in range(len(corpus97))])
    b.save(path)  # replaces the first index
    back = rc.BM25.load(path)
    assert_same(b, back, corpus97.query_texts)
    b.save(path)  # and again, over an index of the same kind
    assert_same(b, rc.BM25.load(path), corpus97.query_texts)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "idx"]
    assert not leftovers, f"temporary files left next to the index: {leftovers}"


def test_save_over_a_loaded_mmapped_index_keeps_it_valid(tmp_path):
    """Saving writes elsewhere then renames: a live mmap-loaded index must still give its own results.

    Run in a subprocess: an engine that overwrites files in place could crash (SIGBUS) the test run.
    """
    script = textwrap.dedent(f"""
        import numpy as np, ragcore as rc
        path = {str(tmp_path / "idx")!r}
        docs_a = ["alpha beta", "beta gamma", "gamma delta alpha"] * 300
        docs_b = ["zeta eta", "eta theta"] * 10
        a = rc.BM25().index(docs_a); a.save(path)
        live = rc.BM25.load(path, mmap=True)
        before = live.search(["alpha", "gamma"], k=5)
        rc.BM25().index(docs_b).save(path)
        after = live.search(["alpha", "gamma"], k=5)
        assert np.array_equal(before.indices, after.indices) and np.array_equal(before.scores, after.scores)
        assert len(live) == 900 and len(rc.BM25.load(path)) == 20
        print("OK")
    """)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and "OK" in r.stdout, f"rc={r.returncode}\n{r.stdout}\n{r.stderr}"


# ------------------------------------------------------------------------------------- bad indexes
@pytest.fixture
def saved(tmp_path, corpus97):
    pytest.importorskip("Stemmer")
    eng = rc.BM25(method="bm25+", analyzer=rc.Analyzer(**STEM_ANALYZER))
    eng.index(_texts(corpus97), ids=[f"d{i}" for i in range(len(corpus97))])
    path = tmp_path / "idx"
    eng.save(path)
    return path


def _data_files(path: Path):
    files = [p for p in sorted(path.rglob("*")) if p.is_file() and p.name != "manifest.json"]
    assert files, f"no array files next to the manifest in {path}"
    return files


def test_load_missing_directory(tmp_path):
    for cls in (rc.BM25, rc.TfIdf):
        with pytest.raises(ValueError) as info:
            cls.load(tmp_path / "does-not-exist")
        assert "does-not-exist" in str(info.value)


def test_load_random_directory(tmp_path):
    d = tmp_path / "random"
    d.mkdir()
    rng = np.random.default_rng(3)
    (d / "data.bin").write_bytes(rng.bytes(4096))
    (d / "notes.txt").write_text("not an index")
    for cls in (rc.BM25, rc.TfIdf):
        with pytest.raises(ValueError):
            cls.load(d)
    (d / "manifest.json").write_text(json.dumps({"hello": "world"}))
    with pytest.raises(ValueError):
        rc.BM25.load(d)
    (d / "manifest.json").write_bytes(rng.bytes(300))
    with pytest.raises(ValueError):
        rc.BM25.load(d)
    f = tmp_path / "a-file"
    f.write_text("x")
    with pytest.raises(ValueError):
        rc.BM25.load(f)


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("which", ["largest", "each"])
def test_load_truncated_file(saved, which, verify):
    files = _data_files(saved)
    targets = [max(files, key=lambda p: p.stat().st_size)] if which == "largest" else files
    for f in targets:
        original = f.read_bytes()
        if not original:
            continue
        for cut in (1, len(original) // 2, len(original)):
            f.write_bytes(original[: len(original) - cut])
            with pytest.raises(ValueError):  # sizes are checked even without verify
                rc.BM25.load(saved, verify=verify)
        f.write_bytes(original)
    rc.BM25.load(saved)  # intact again


def test_load_truncated_manifest(saved):
    m = saved / "manifest.json"
    text = m.read_bytes()
    m.write_bytes(text[: len(text) // 2])
    with pytest.raises(ValueError):
        rc.BM25.load(saved)


def test_load_missing_file(saved):
    f = max(_data_files(saved), key=lambda p: p.stat().st_size)
    f.unlink()
    with pytest.raises(ValueError):
        rc.BM25.load(saved)


def test_load_flipped_byte_with_verify(saved):
    files = _data_files(saved)
    for f in files:
        original = f.read_bytes()
        if not original:
            continue
        for pos in sorted({0, len(original) // 2, len(original) - 1}):
            data = bytearray(original)
            data[pos] ^= 0x40
            f.write_bytes(bytes(data))
            with pytest.raises(ValueError):
                rc.BM25.load(saved, verify=True, mmap=False)
            with pytest.raises(ValueError):
                rc.BM25.load(saved, verify=True, mmap=True)
        f.write_bytes(original)
    rc.BM25.load(saved, verify=True)


def test_load_tampered_count_in_manifest(saved):
    m = saved / "manifest.json"
    manifest = json.loads(m.read_text())
    # change a count without touching anything else
    def bump(obj):
        if isinstance(obj, dict):
            for key, v in obj.items():
                if key in ("n_docs", "num_docs", "n_documents") and isinstance(v, int):
                    obj[key] = v + 1
                    return True
                if bump(v):
                    return True
        return False

    if not bump(manifest):
        pytest.skip("manifest has no n_docs field to tamper with")
    m.write_text(json.dumps(manifest))
    with pytest.raises(ValueError):
        rc.BM25.load(saved)


def test_load_wrong_kind(tmp_path, corpus97):
    rc.TfIdf().index(corpus97.texts).save(tmp_path / "tfidf")
    rc.BM25().index(corpus97.texts).save(tmp_path / "bm25")
    with pytest.raises(ValueError) as info:
        rc.BM25.load(tmp_path / "tfidf")
    assert "tfidf" in str(info.value).lower() or "tf-idf" in str(info.value).lower(), str(info.value)
    with pytest.raises(ValueError):
        rc.TfIdf.load(tmp_path / "bm25")


def test_copied_index_loads(saved, tmp_path):
    """An index is a self-contained directory: it can be moved/copied (no absolute paths inside)."""
    dst = tmp_path / "elsewhere" / "copy"
    shutil.copytree(saved, dst)
    shutil.rmtree(saved)
    back = rc.BM25.load(dst)
    assert len(back) == 97
