"""Issue 15's Python-side items: model folders cannot run code, retrievers answer from one snapshot,
encoder folders stay inside themselves and are checksummed, k and inner products are bounded."""
import json
import threading

import numpy as np
import pytest

import ragcore as rc
from ragcore.models.generation import Generator

# ---------------------------------------------------------------------------------------------------
# 1. chat templates render in jinja2's sandbox

_EVIL = "{{ cycler.__init__.__globals__.os.popen('touch %s').read() }}"
_MSGS = [{"role": "user", "content": "hi"}]


def _generator_with_template(folder):
    g = Generator.__new__(Generator)  # the template logic only: no ONNX model needed
    g._template = Generator._read_template(folder)
    return g


@pytest.mark.parametrize("where", ["chat_template.jinja", "tokenizer_config.json"])
def test_chat_template_cannot_run_code(tmp_path, where):
    pytest.importorskip("jinja2")
    marker = tmp_path / "pwned"
    template = _EVIL % marker
    if where == "chat_template.jinja":
        (tmp_path / where).write_text(template, encoding="utf-8")
    else:
        (tmp_path / where).write_text(json.dumps({"chat_template": template}), encoding="utf-8")
    g = _generator_with_template(tmp_path)
    with pytest.raises(ValueError, match="unsafe"):
        g.apply_chat_template(_MSGS)
    assert not marker.exists()


def test_sandboxed_template_still_renders(tmp_path):
    pytest.importorskip("jinja2")
    (tmp_path / "chat_template.jinja").write_text(
        "{% for m in messages %}[{{ m['role'] }}] {{ m.content }}\n{% if loop.index == 2 %}{% break %}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}>{% endif %}", encoding="utf-8")
    g = _generator_with_template(tmp_path)
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "user", "content": "x"}]
    assert g.apply_chat_template(msgs) == "[system] s\n[user] u\n>"
    (tmp_path / "chat_template.jinja").write_text("{{ raise_exception('no system role') }}", encoding="utf-8")
    with pytest.raises(ValueError, match="no system role"):
        _generator_with_template(tmp_path).apply_chat_template(msgs)
    (tmp_path / "chat_template.jinja").write_text("{% for %}", encoding="utf-8")
    with pytest.raises(ValueError, match="chat template failed"):
        _generator_with_template(tmp_path).apply_chat_template(msgs)


# ---------------------------------------------------------------------------------------------------
# 5. one snapshot per search: re-indexing / adding / deleting threads never mix two states

def _run_threads(targets, seconds=3.0):
    """Run the targets (each called with the stop event) for ``seconds``; re-raise what any raised."""
    stop, raised = threading.Event(), []

    def guard(fn):
        try:
            fn(stop)
        except BaseException as e:  # noqa: BLE001 - reported on the test's thread
            raised.append(e)
            stop.set()

    threads = [threading.Thread(target=guard, args=(fn,)) for fn in targets]
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    if raised:
        raise raised[0]


def _two_corpora(n=400):
    a = [f"w{i} filler text" for i in range(n)]
    b = [f"w{(i + 7) % n} other words" for i in range(n)]
    ids_a, ids_b = [f"A{i}" for i in range(n)], [f"B{i}" for i in range(n)]
    text = dict(zip(ids_a, a)) | dict(zip(ids_b, b))
    return (a, ids_a), (b, ids_b), text


@pytest.mark.parametrize("cls", [rc.BM25, rc.TfIdf])
def test_search_while_reindexing_never_mixes_corpora(cls):
    (a, ids_a), (b, ids_b), text = _two_corpora()
    r = cls().index(a, ids=ids_a)
    errors, checked = [], [0]

    def reindex(stop):
        flip = False
        while not stop.is_set():
            r.index(b if flip else a, ids=ids_b if flip else ids_a, threads=1)
            flip = not flip

    def search(stop, seed=0):
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            terms = [f"w{int(t)}" for t in rng.integers(0, 400, 8)]
            hits = r.search(terms, k=3, threads=1, filter=None)
            for term, row in zip(terms, hits.ids):
                for doc_id in row:
                    if doc_id is not None and term not in text[doc_id].split():
                        errors.append((term, doc_id))
            checked[0] += len(terms)

    _run_threads([reindex] + [lambda stop, s=s: search(stop, s) for s in range(3)])
    assert checked[0] > 100
    assert not errors, f"{len(errors)} hits labelled with the other corpus's ids, e.g. {errors[:3]}"


def test_dense_search_while_adding_and_deleting():
    """Each add and delete is seen whole: a writer adds 6 near-copies of every anchor in one call and
    deletes them in one call, so a search for an anchor sees 0 or 6 of them, never a part."""
    dim, rng = 16, np.random.default_rng(0)
    anchors = rng.standard_normal((50, dim)).astype(np.float32)
    anchors /= np.linalg.norm(anchors, axis=1, keepdims=True)
    vec = {f"a{i}": anchors[i] for i in range(50)}
    index = rc.DenseIndex(dim, device="cpu").add(anchors, ids=list(vec))
    errors, checked = [], [0]

    def write(stop):
        j = 0
        while not stop.is_set():
            x = np.repeat(anchors, 6, axis=0) + 1e-3 * np.random.default_rng(j).standard_normal((300, dim))
            x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
            ids = [f"n{j}-{i}" for i in range(300)]
            vec.update(zip(ids, x))
            index.add(x, ids=ids)
            index.delete(ids)
            j += 1

    def search(stop, seed):
        r = np.random.default_rng(seed)
        while not stop.is_set():
            picks = r.integers(0, 50, 4)
            hits = index.search(anchors[picks], k=7, threads=1)
            for p, row_ids, row_scores in zip(picks, hits.ids, hits.scores):
                copies = sum(1 for i in row_ids if i.startswith("n"))
                if copies not in (0, 6) or f"a{p}" not in row_ids:
                    errors.append(("partial", p, list(row_ids)))
                for doc_id, s in zip(row_ids, row_scores):
                    if abs(float(vec[doc_id] @ anchors[p]) - s) > 1e-4:
                        errors.append(("score", p, doc_id, s))
            checked[0] += 1

    _run_threads([write] + [lambda stop, s=s: search(stop, s) for s in range(3)])
    assert checked[0] > 50
    assert not errors, errors[:3]
    assert len(index) == 50


# ---------------------------------------------------------------------------------------------------
# 8. model folders: the files a config names stay inside the folder (the encoder's are in test_encoder.py)

@pytest.mark.parametrize("name", ["/etc/hostname", "../model.onnx", "a/../../model.onnx"])
def test_generator_files_stay_inside_the_folder(tmp_path, name):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tokenizers")
    from ragcore.models import generator_export as G
    folder = tmp_path / "gen"
    folder.mkdir()
    (tmp_path / "model.onnx").write_bytes(b"x")
    (folder / G.CONFIG).write_text(json.dumps({"format": G.FORMAT, "format_version": G.FORMAT_VERSION,
                                               "files": {name: {"bytes": 1}}}))
    with pytest.raises(ValueError, match="outside the folder"):
        Generator(folder)


def test_generator_file_checksum(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tokenizers")
    from ragcore.models import generator_export as G
    folder = tmp_path / "gen"
    folder.mkdir()
    (folder / G.MODEL_FILE).write_bytes(b"not the model")
    (folder / G.CONFIG).write_text(json.dumps({"format": G.FORMAT, "format_version": G.FORMAT_VERSION,
                                               "files": {G.MODEL_FILE: {"bytes": 13, "sha256": "0" * 64}}}))
    with pytest.raises(ValueError, match="corrupt or was modified"):
        Generator(folder)


# ---------------------------------------------------------------------------------------------------
# 9. k is capped at the collection size; inner products cannot overflow float32

def test_huge_k_is_capped_at_the_collection_size():
    bm25 = rc.BM25().index(["a cat", "a dog", "cat and dog"], ids=["x", "y", "z"])
    hits = bm25.search(["cat", "dog"], k=10**9)
    assert hits.indices.shape == (2, 3) and hits.ids[0].tolist() == ["x", "z", None]
    dense = rc.DenseIndex(2, device="cpu").add(np.eye(2, dtype=np.float32))
    assert dense.search(np.ones(2, np.float32), k=10**9).indices.shape == (1, 2)
    hybrid = rc.Hybrid([bm25, rc.TfIdf().index(["a cat", "a dog", "cat and dog"], ids=["x", "y", "z"])])
    assert hybrid.search("cat", k=10**9).indices.shape[1] <= 6


def test_inner_products_that_could_overflow_are_refused():
    big = np.array([[3e19, -3e19, 0, 0], [0, 0, 0, 0.5]], np.float32)   # finite, products 9e38 > float32 max
    index = rc.DenseIndex(4, metric="ip", device="cpu")
    with pytest.raises(ValueError, match="row 0 has L2 norm .* could overflow float32"):
        index.add(big)
    assert len(index) == 0
    index.add(np.array([[1e17, -1e17, 0, 0], [0, 0, 0, 0.5]], np.float32))
    with pytest.raises(ValueError, match="queries row 0 has L2 norm"):
        index.search(big[:1], k=2)
    hits = index.search(np.array([1e17, 1e17, 0, 1], np.float32), k=2)   # exact scores 0 and 0.5
    assert hits.indices.tolist() == [[1, 0]] and hits.scores.tolist() == [[0.5, 0.0]]


@pytest.mark.parametrize("metric, dtype, value", [("ip", "float32", 3e38), ("ip", "float32", 2e18),
                                                  ("ip", "float32", "row of 9e17"),
                                                  ("cosine", "float32", 2.0), ("cosine", "float16", 1.5),
                                                  ("cosine", "int8", None), ("ip", "int8", None)])
def test_loaded_rows_beyond_the_metric_bound_are_refused(tmp_path, metric, dtype, value):
    """Rows that add() would refuse cannot come in through a file (the checksums recomputed)."""
    from ragcore.io import storage
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    rc.DenseIndex(8, metric=metric, dtype=dtype, device="cpu").add(x).save(tmp_path / "d")
    manifest, arrays = storage.load_index(tmp_path / "d", mmap=False)
    arrays = {k: np.array(v) for k, v in arrays.items()}
    if dtype == "int8":
        arrays["aux"][2, 0] = 1e17 if metric == "ip" else 0.02   # scale * 127 beyond the bound
    elif value == "row of 9e17":                                      # each component fine, the norm not
        arrays["vectors"][2] = 9e17
    else:
        arrays["vectors"][2, 3] = value
    storage.save_index(tmp_path / "bad", "dense", manifest["meta"], arrays)
    for verify in (True, False):
        with pytest.raises(ValueError, match="corrupt index: (vectors|aux) row 2"):
            rc.DenseIndex.load(tmp_path / "bad", verify=verify, device="cpu")
    back = rc.DenseIndex.load(tmp_path / "d", device="cpu")           # the untouched index loads
    assert back.search(x[:1], k=1).indices.tolist() == [[0]]


@pytest.mark.skipif(bool(__import__("os").environ.get("RAGCORE_SANITIZED")), reason="an address-space limit "
                    "cannot run under AddressSanitizer")
def test_inflated_document_count_costs_a_search_nothing(tmp_path):
    """A resealed manifest can declare documents without postings (n_docs is bounded by the arrays only
    when the index has ids); a search's scratch spans the documents with postings, so it neither
    allocates gigabytes nor changes its results."""
    import subprocess
    import sys
    from ragcore.io import storage
    rc.BM25().index(["hello world", "foo bar", "hello foo"]).save(tmp_path / "i")
    m = json.loads((tmp_path / "i" / "manifest.json").read_text())
    m["meta"]["n_docs"] = 2**32 - 2
    (tmp_path / "i" / "manifest.json").write_text(json.dumps(storage.seal_manifest(m)))
    code = (f"import resource; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, resource.RLIM_INFINITY))\n"
            f"import ragcore as rc\nb = rc.BM25.load({str(tmp_path / 'i')!r})\n"
            "h = b.search(['hello', 'foo'], k=5, threads=2)\n"
            "print(len(b), h.indices[:, :3].tolist())\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split(maxsplit=1) == [str(2**32 - 2), "[[0, 2, -1], [1, 2, -1]]\n"]


def test_high_dimensional_inner_product_rows_round_trip(tmp_path):
    index = rc.DenseIndex(40000, metric="ip", device="cpu")
    v = np.zeros((1, 40000), np.float32)
    v[0, 0] = 9e17                                                    # norm 9e17: add() takes it, so must load
    index.add(v).save(tmp_path / "d")
    assert rc.DenseIndex.load(tmp_path / "d", device="cpu").ntotal == 1


@pytest.mark.parametrize("stopwords", [[""], ["x" * 300, "the"]])
def test_every_analyzer_that_indexes_also_saves(tmp_path, stopwords):
    bm25 = rc.BM25(analyzer=rc.Analyzer(stopwords=stopwords)).index(["hello world the", "other words"])
    bm25.save(tmp_path / "i")
    back = rc.BM25.load(tmp_path / "i")
    assert back.search("the hello", k=2).indices.tolist() == bm25.search("the hello", k=2).indices.tolist()


def test_a_users_similar_directory_is_not_taken_for_a_leftover(tmp_path):
    import os
    import time
    rc.BM25().index(["a b c"]).save(tmp_path / "idx")
    mine = tmp_path / ".idx.old-mybackup"
    mine.mkdir()
    (mine / "important.txt").write_text("keep me")
    old = time.time() - 7200
    os.utime(mine / "important.txt", (old, old))
    os.utime(mine, (old, old))
    rc.BM25.load(tmp_path / "idx")
    rc.BM25().index(["d e f"]).save(tmp_path / "idx")
    assert (mine / "important.txt").read_text() == "keep me"
