"""The torch-free GGUF reader (ragcore.models._gguf) and the generator export through it.

Oracles: transformers' GGUF loader (the same weights, config, token ids and greedy text) on the default
model and on a tiny random Llama written here with gguf's own writer; llama.cpp's converter (its q/k
row permutation, reproduced here) and llama.cpp's tokenizer (the pre-tokenizer's regexes, then byte-level
BPE by merge rank, in pure Python) for what transformers does differently. Tests that need transformers
or torch skip one by one without them.
"""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf", reason="reading GGUF files needs gguf: pip install 'ragcore[generate]'")
pytest.importorskip("tokenizers", reason="pip install 'ragcore[generate]'")
pytest.importorskip("onnxruntime", reason="pip install 'ragcore[generate]'")
pytest.importorskip("onnx", reason="pip install 'ragcore[generate]'")

from ragcore.models import _gguf  # noqa: E402
from ragcore.models import generation as gm  # noqa: E402
from ragcore.models import generator_export as ge  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _need(*modules):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


# ---------------------------------------------------------------------------------------------------
# a tiny Llama in a GGUF file, written as llama.cpp's converter writes one

L, H, NH, KVH, HD, INTER, CTX = 2, 64, 4, 2, 16, 96, 256
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
USER_DEFINED = ["<think>"]
# (left, right) pairs of byte-level symbols, best first; "Â²" is "²" (bytes C2 B2) spelled byte-level
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("o", "n"), ("e", "r"), ("Ġ", "Ġ"),
          ("ĠĠ", "ĠĠ"), ("Â", "²"), ("Ġ", "Â²"), ("Ċ", "Ċ")]
CHAT = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
        "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def _tiny_vocab():
    table = _gguf._bytes_to_unicode()
    tokens = SPECIALS + [table[b] for b in range(256)] + ["".join(m) for m in MERGES] + USER_DEFINED
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS) - len(USER_DEFINED)) + [4] * len(USER_DEFINED)
    return tokens, types


def _llama_cpp_permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf.py ``LlamaModel.permute``: q/k rows reordered for its rotary layout."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_weights(seed=0, tied=True):
    rng = np.random.default_rng(seed)
    V = len(_tiny_vocab()[0])
    w = {"model.embed_tokens.weight": rng.standard_normal((V, H)).astype(np.float32),
         "model.norm.weight": (1 + 0.1 * rng.standard_normal(H)).astype(np.float32)}
    for i in range(L):
        p = f"model.layers.{i}."
        for n, shape in (("self_attn.q_proj", (NH * HD, H)), ("self_attn.k_proj", (KVH * HD, H)),
                         ("self_attn.v_proj", (KVH * HD, H)), ("self_attn.o_proj", (H, NH * HD)),
                         ("mlp.gate_proj", (INTER, H)), ("mlp.up_proj", (INTER, H)), ("mlp.down_proj", (H, INTER))):
            w[p + n + ".weight"] = (rng.standard_normal(shape) * 1.5 / np.sqrt(shape[1])).astype(np.float32)
        w[p + "input_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(H)).astype(np.float32)
        w[p + "post_attention_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(H)).astype(np.float32)
    if not tied:
        w["lm_head.weight"] = rng.standard_normal((V, H)).astype(np.float32)
    return w


_GGUF_NAMES = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
               "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
               "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def write_tiny_gguf(path, weights, *, quant="Q8_0", pre="smollm", meta=None, extra_tensors=(), drop=(),
                    tokenizer_model="gpt2", merges=None):
    """``weights`` (Hugging Face names) as llama.cpp's converter writes them: renamed, q/k permuted,
    projections and embedding quantized (``quant``), norms float32, the head float16. Returns the weights
    the file holds, dequantized, under Hugging Face's names and order (what a reader must give back)."""
    qtype = getattr(gguf.GGMLQuantizationType, quant)
    tokens, types = _tiny_vocab()
    w = gguf.GGUFWriter(str(path), "llama")
    kv = {"llama.block_count": L, "llama.context_length": CTX, "llama.embedding_length": H,
          "llama.feed_forward_length": INTER, "llama.attention.head_count": NH, "llama.attention.head_count_kv": KVH,
          "llama.rope.freq_base": 10000.0, "llama.attention.layer_norm_rms_epsilon": 1e-5,
          "llama.rope.dimension_count": HD, "llama.vocab_size": len(tokens), "tokenizer.ggml.model": tokenizer_model,
          "tokenizer.ggml.pre": pre, "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
          "tokenizer.ggml.padding_token_id": 2, "tokenizer.ggml.add_bos_token": False, "tokenizer.chat_template": CHAT,
          **(meta or {})}
    for key, value in kv.items():
        add = (w.add_bool if isinstance(value, bool) else w.add_string if isinstance(value, str)
               else w.add_float32 if isinstance(value, float) else w.add_uint32)
        add(key, value)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([" ".join(m) for m in MERGES] if merges is None else merges)
    held = {}
    for name, arr in weights.items():
        if name in drop:
            continue
        if name.startswith("model.layers."):
            i, rest = name[len("model.layers."):].split(".", 1)
            stem = rest.rsplit(".", 1)[0]
            gname = f"blk.{i}.{_GGUF_NAMES[stem]}.weight"
            if stem == "self_attn.q_proj":
                arr = _llama_cpp_permute(arr, NH)
            elif stem == "self_attn.k_proj":
                arr = _llama_cpp_permute(arr, KVH)
        else:
            gname = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                     "lm_head.weight": "output.weight"}[name]
        if arr.ndim == 1:
            w.add_tensor(gname, arr.astype(np.float32))
            back = arr.astype(np.float32)
        elif gname == "output.weight":
            w.add_tensor(gname, arr.astype(np.float16))
            back = arr.astype(np.float16).astype(np.float32)
        else:
            q = gguf.quants.quantize(arr, qtype)
            w.add_tensor(gname, q, raw_dtype=qtype)
            back = gguf.quants.dequantize(q, qtype).reshape(arr.shape)
        held[name] = back
    for gname, arr in extra_tensors:
        w.add_tensor(gname, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # the reader undoes the permutation: the Hugging Face layout of the quantized values
    for name in list(held):
        if name.endswith("q_proj.weight"):
            held[name] = _unpermute_ref(held[name], NH)
        elif name.endswith("k_proj.weight"):
            held[name] = _unpermute_ref(held[name], KVH)
    return held


def _unpermute_ref(w, n_head):
    """The inverse of :func:`_llama_cpp_permute` found by applying it to row indices."""
    rows = _llama_cpp_permute(np.arange(w.shape[0]), n_head)
    out = np.empty_like(w)
    out[rows] = w
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(path, the weights it holds in Hugging Face's layout) of a tiny tied Llama GGUF."""
    path = tmp_path_factory.mktemp("tiny") / "tiny-llama.gguf"
    return path, write_tiny_gguf(path, tiny_weights())


# ---------------------------------------------------------------------------------------------------
# the reader on the tiny model


@pytest.mark.parametrize("n_head", [1, 2, 3, 9])
def test_unpermute_inverts_llama_cpp(n_head):
    w = np.random.default_rng(n_head).standard_normal((n_head * 8, 5)).astype(np.float32)
    np.testing.assert_array_equal(_gguf._unpermute(_llama_cpp_permute(w, n_head), n_head), w)
    assert not np.array_equal(_llama_cpp_permute(w, n_head), w)


@pytest.mark.parametrize("quant", ["Q8_0", "Q4_0", "F16"])
@pytest.mark.parametrize("tied", [True, False])
def test_tiny_weights_and_spec(tmp_path, quant, tied):
    path = tmp_path / "t.gguf"
    held = write_tiny_gguf(path, tiny_weights(tied=tied), quant=quant)
    reader = _gguf.open_reader(path)
    spec = _gguf.decoder_spec(reader)
    got = _gguf.load_weights(reader, spec)
    assert sorted(got) == sorted(held)
    for name, arr in held.items():
        np.testing.assert_array_equal(got[name], arr, err_msg=name)
        assert got[name].dtype == np.float32 and got[name].flags.c_contiguous
    V = len(_tiny_vocab()[0])
    assert {k: spec[k] for k in ("num_layers", "num_heads", "num_kv_heads", "head_dim", "max_positions", "tied",
                                 "hidden_size", "intermediate_size", "vocab_size", "bos_token_id", "eos_token_ids")} == \
        {"num_layers": L, "num_heads": NH, "num_kv_heads": KVH, "head_dim": HD, "max_positions": CTX, "tied": tied,
         "hidden_size": H, "intermediate_size": INTER, "vocab_size": V, "bos_token_id": 1, "eos_token_ids": [2]}
    assert spec["rms_eps"] == pytest.approx(1e-5) and spec["rope_scale"] == 1.0
    np.testing.assert_allclose(spec["inv_freq"], 10000.0 ** (-np.arange(0, HD, 2) / HD), rtol=1e-6)
    assert _gguf.torch_free_reason(reader) is None


def test_rope_scaling(tmp_path):
    """linear: the inverse frequencies divided by the factor; Llama 3's ``rope_freqs`` factors divide them
    one by one (llama.cpp: theta / factor); another scaling is refused."""
    base = 10000.0 ** (-np.arange(0, HD, 2) / HD)
    p = tmp_path / "linear.gguf"
    write_tiny_gguf(p, tiny_weights(), meta={"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 4.0})
    np.testing.assert_allclose(_gguf.decoder_spec(_gguf.open_reader(p))["inv_freq"], base / 4, rtol=1e-6)
    factors = np.linspace(1, 8, HD // 2).astype(np.float32)
    p = tmp_path / "llama3.gguf"
    write_tiny_gguf(p, tiny_weights(), extra_tensors=[("rope_freqs.weight", factors)])
    r = _gguf.open_reader(p)
    spec = _gguf.decoder_spec(r)
    np.testing.assert_allclose(spec["inv_freq"], base / factors, rtol=1e-6)
    assert "rope_freqs.weight" not in _gguf.load_weights(r, spec)
    p = tmp_path / "yarn.gguf"
    write_tiny_gguf(p, tiny_weights(), meta={"llama.rope.scaling.type": "yarn"})
    with pytest.raises(ValueError, match="unsupported rope scaling 'yarn'"):
        _gguf.decoder_spec(_gguf.open_reader(p))


def test_bad_files(tmp_path):
    """Each malformed file names what is wrong."""
    cases = [
        (dict(meta={"llama.rope.dimension_count": HD // 2}), "rotary embedding over 8 of the 16"),
        (dict(drop=("model.layers.1.mlp.up_proj.weight",)), "lacks 1 tensors of the decoder.*layers.1.mlp.up_proj"),
        (dict(extra_tensors=[("blk.0.ffn_gate_exps.weight", np.zeros(4, np.float32))]), "unexpected tensor 'blk.0.ffn_gate_exps"),
        (dict(extra_tensors=[("blk.7.attn_q.weight", np.zeros(4, np.float32))]), "unexpected tensor 'blk.7.attn_q"),
        (dict(meta={"llama.feed_forward_length": INTER + 32}), r"'blk\.0\.ffn_gate\.weight' has shape \(96, 64\), expected \(128, 64\)"),
        (dict(merges=["a b c"]), "malformed merge 'a b c'"),
    ]
    for i, (kw, msg) in enumerate(cases):
        p = tmp_path / f"bad{i}.gguf"
        write_tiny_gguf(p, tiny_weights(), **kw)
        r = _gguf.open_reader(p)
        with pytest.raises(ValueError, match=msg):
            _gguf.load_weights(r, _gguf.decoder_spec(r))
            _gguf.build_tokenizer(r)
    # GGUF's writer refuses a duplicate key, so a missing one is made by leaving it out: no block count
    p = tmp_path / "nocount.gguf"
    w = gguf.GGUFWriter(str(p), "llama")
    w.add_tensor("token_embd.weight", np.zeros((4, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match="no 'llama.embedding_length' metadata"):
        _gguf.decoder_spec(_gguf.open_reader(p))
    trunc = tmp_path / "trunc.gguf"
    trunc.write_bytes((tmp_path / "bad0.gguf").read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot read the GGUF header"):
        gm.export_generator(trunc, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_sentencepiece_gguf_goes_through_transformers(tmp_path, monkeypatch):
    """A GGUF whose tokenizer is not byte-level BPE is not read here: the export names the export extra
    and why when torch is missing."""
    p = tmp_path / "spm.gguf"
    write_tiny_gguf(p, tiny_weights(), tokenizer_model="llama")
    assert "'llama'" in _gguf.torch_free_reason(_gguf.open_reader(p))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(ImportError, match=r"ragcore\[export\].*tokenizer \('llama'\) is not a byte-level BPE"):
        gm.export_generator(p, tmp_path / "out")


# ---------------------------------------------------------------------------------------------------
# the tokenizer: llama.cpp's reference in pure Python, and transformers


GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


def llama_cpp_tokenize(text, tokens, types, merges, pre):
    """llama.cpp's byte-level BPE: control and user-defined tokens matched whole, the text between them
    split by the pre-tokenizer's regexes (``smollm``: each numeric character alone, then GPT-2's), each
    piece spelled in GPT-2's byte alphabet and merged pair by pair, lowest merge rank first."""
    import regex
    table = _gguf._bytes_to_unicode()
    ids = {t: i for i, t in enumerate(tokens)}
    rank = {tuple(m.split(" ")): r for r, m in enumerate(merges)}
    whole = sorted((t for t, k in zip(tokens, types) if k in (3, 4)), key=len, reverse=True)
    out = []
    for chunk in regex.split("(" + "|".join(regex.escape(t) for t in whole) + ")", text):
        if chunk in whole:
            out.append(ids[chunk])
            continue
        pieces = [chunk]
        if pre == "smollm":
            pieces = [p for p in regex.split(r"(\p{N})", chunk) if p]
        for piece in pieces:
            for word in regex.findall(GPT2_SPLIT, piece):
                sym = ["".join(table[b] for b in ch.encode("utf-8")) for ch in word]
                sym = [c for s in sym for c in s]
                while len(sym) > 1:
                    pairs = [(rank.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(sym, sym[1:]))]
                    r, i = min(pairs)
                    if r == 1 << 30:
                        break
                    sym[i:i + 2] = [sym[i] + sym[i + 1]]
                out.extend(ids[s] for s in sym)
    return out


TEXTS = ["Hello there, the thing in the north", "x  y   z    w\t\tv\n\n\nu", "   leading", "trailing   \n",
         "12345 and 3.14159 or 1,000,000 + x1y22", "Ünïcödé — naïve café, 中文字符, emoji 😀👍🏽, ẞ ﬁ",
         "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "<think>plan</think> then <|endoftext|>",
         "don't I'll WE'RE they've", "a\r\nb\rc", "tabs\tand\u00a0nbsp\u2009thin", "", " ", "\n"]
NUMERIC = ["x ² y", "E = mc ²", " ½ cup", "٣ ٤"]     # a space before a non-ASCII numeric character


def _tiny_tokenizer_ids(tok, text):
    return tok.encode(text, add_special_tokens=True).ids


def test_tiny_tokenizer_is_llama_cpps(tiny):
    pytest.importorskip("regex")
    reader = _gguf.open_reader(tiny[0])
    tok = _gguf.build_tokenizer(reader)
    tokens, types = _tiny_vocab()
    merges = [" ".join(m) for m in MERGES]
    for text in TEXTS + NUMERIC:
        assert _tiny_tokenizer_ids(tok, text) == llama_cpp_tokenize(text, tokens, types, merges, "smollm"), text
    assert tok.encode(" the").ids == [tokens.index("Ġthe")] and tok.encode("<think>").ids == [tokens.index("<think>")]
    ids = tok.encode("<|im_start|>hi<|im_end|>").ids
    assert tok.decode(ids, skip_special_tokens=True) == "hi" and tok.decode(ids, skip_special_tokens=False) == \
        "<|im_start|>hi<|im_end|>"
    # another pre-tokenizer name: GPT-2's split alone (" ²" stays one piece: one token, ĠÂ²)
    p = tiny[0].parent / "gpt2-pre.gguf"
    write_tiny_gguf(p, tiny_weights(), pre="gpt2")
    tok2 = _gguf.build_tokenizer(_gguf.open_reader(p))
    for text in TEXTS + NUMERIC:
        assert _tiny_tokenizer_ids(tok2, text) == llama_cpp_tokenize(text, tokens, types, merges, "gpt2"), text
    assert tok2.encode("x ²").ids != tok.encode("x ²").ids


@pytest.fixture(scope="module")
def tiny_hf(tiny):
    """transformers' model and tokenizer of the tiny GGUF (the oracle)."""
    _need("torch", "transformers", "accelerate")
    import torch
    import transformers
    path = tiny[0]
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                              dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return model, tok


def test_tiny_matches_transformers(tiny, tiny_hf, tmp_path):
    """The tiny model through transformers' GGUF loader: the same weights, rotary frequencies, token ids
    (but for the numeric split, where transformers keeps GPT-2's) and greedy tokens of the exported
    float32 folder."""
    import torch
    model, hf_tok = tiny_hf
    reader = _gguf.open_reader(tiny[0])
    spec = _gguf.decoder_spec(reader)
    weights = _gguf.load_weights(reader, spec)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    for name, arr in weights.items():
        np.testing.assert_array_equal(arr, sd[name], err_msg=name)
    np.testing.assert_array_equal(spec["inv_freq"], model.model.rotary_emb.inv_freq.numpy())
    tok = _gguf.build_tokenizer(reader)
    for text in TEXTS:
        assert _tiny_tokenizer_ids(tok, text) == hf_tok(text)["input_ids"], text
    assert any(_tiny_tokenizer_ids(tok, t) != hf_tok(t)["input_ids"] for t in NUMERIC)     # by design
    out = gm.export_generator(tiny[0], tmp_path / "tiny-fp32")
    g = gm.Generator.load(out, device="cpu", threads=1)
    assert g.config["source"]["reader"] == "gguf"
    for prompt in ("the thing in the north", [{"role": "user", "content": "in the north"}]):
        ids = g._prompt_ids(prompt)
        with torch.no_grad():
            want = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                  max_new_tokens=16, min_new_tokens=16, do_sample=False, pad_token_id=2)
        g.generate(prompt, max_new_tokens=16, min_new_tokens=16, prompt_lookup=0)
        assert g.last_tokens == want[0, len(ids):].tolist()


def test_tiny_calibration_matches_torch_hooks(tiny, tiny_hf):
    """The int8 calibration's maxima (the float32 graph in onnxruntime) are transformers' forward hooks'
    on the inputs of q_proj, o_proj, gate_proj and down_proj."""
    import torch
    from ragcore.models import _int8
    model, _ = tiny_hf
    reader = _gguf.open_reader(tiny[0])
    spec = _gguf.decoder_spec(reader)
    tok = _gguf.build_tokenizer(reader)
    encode = lambda t: tok.encode(t, add_special_tokens=False).ids  # noqa: E731
    texts = ["the thing in the north " * 5, "Hello there, 123 and 中文 " * 3]
    got = _int8.activation_maxima(_gguf.load_weights(reader, spec), {k: spec[k] for k in ge._GRAPH_KEYS}, encode,
                                  max_tokens=40, texts=texts)
    want, hooks = {}, []

    def watch(name):
        def hook(_mod, args):
            m = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0).numpy()
            want[name] = m if name not in want else np.maximum(want[name], m)
        return hook

    for i, layer in enumerate(model.model.layers):
        for n, mod in (("q", layer.self_attn.q_proj), ("o", layer.self_attn.o_proj),
                       ("gate", layer.mlp.gate_proj), ("down", layer.mlp.down_proj)):
            hooks.append(mod.register_forward_pre_hook(watch(f"{i}.{n}")))
    try:
        with torch.no_grad():
            for t in texts:
                model(torch.tensor([encode(t)[:40]]))
    finally:
        for h in hooks:
            h.remove()
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5 * want[k].max(), err_msg=k)


@pytest.mark.parametrize("precision", ["float32", "int8", "int4", "float16"])
def test_tiny_export_is_the_graph_of_its_weights(tiny, tmp_path, precision):
    """Every precision exports from the GGUF without torch; float32's logits are those of the graph built
    from the weights the file holds (llm_graph's own tests check that graph against numpy)."""
    from ragcore.models.llm_graph import build_decoder
    import onnxruntime as ort
    out = gm.export_generator(tiny[0], tmp_path / precision, precision=precision)
    cfg = json.loads((out / gm.CONFIG).read_text())
    assert cfg["precision"] == precision and cfg["source"]["reader"] == "gguf" and cfg["eos_token_ids"] == [2]
    assert "torch" not in cfg["versions"] and {"chat_template.jinja", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    g = gm.Generator.load(out, device="cpu", threads=1)
    text = g.generate([{"role": "user", "content": "the north"}], max_new_tokens=6, min_new_tokens=6)
    assert len(g.last_tokens) == 6 and isinstance(text, str)
    if precision != "float32":
        return
    spec = _gguf.decoder_spec(_gguf.open_reader(tiny[0]))
    model = build_decoder(tiny[1], **{k: spec[k] for k in ge._GRAPH_KEYS}, precision="float32")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ids = g._prompt_ids("the thing in the north")
    S = len(ids)
    feed = {"input_ids": np.array([ids], np.int64), "seqlens_k": np.array([S - 1], np.int32),
            "total_sequence_length": np.array(S, np.int32), "last_index": np.array([S - 1], np.int64),
            **{f"past_key_values.{i}.{kv}": np.zeros((1, KVH, S, HD), np.float32) for i in range(L) for kv in ("key", "value")}}
    want = sess.run(["logits"], feed)[0][0]
    step = g._steps([ids], S + 1)
    try:
        np.testing.assert_allclose(next(step)[0], want, rtol=1e-5, atol=1e-5)
    finally:
        step.close()


def test_gguf_export_imports_no_torch(tiny, tmp_path):
    code = ("import sys, ragcore as rc; rc.export_generator(sys.argv[1], sys.argv[2], precision='int8'); "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code, str(tiny[0]), str(tmp_path / "out")], check=True, timeout=300,
                   cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert (tmp_path / "out" / "decode.onnx").is_file()


# ---------------------------------------------------------------------------------------------------
# the default model (SmolLM2-135M-Instruct) against transformers


def test_default_weights_and_spec_match_transformers(smollm_gguf, smollm_hf):
    """Dequantized, renamed and un-permuted: the weights are transformers' to the bit; the decoder spec
    is the one the transformers path derives from its model."""
    reader, spec, weights = smollm_gguf
    model, tok = smollm_hf
    sd = model.state_dict()
    assert set(weights) == set(sd) - {"lm_head.weight"} and spec["tied"]
    for name, arr in weights.items():
        np.testing.assert_array_equal(arr, sd[name].numpy(), err_msg=name)
    _, hf_spec = ge._hf_decoder(model, tok)
    for k, v in hf_spec.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(spec[k], v, err_msg=k)
        else:
            assert spec[k] == v, k


def test_default_tokenizer_matches_transformers(smollm_gguf, smollm_hf, tmp_path):
    """Token ids of transformers' tokenizer of the same GGUF on a varied text set and on rendered chats;
    the folder written loads in transformers' AutoTokenizer with the same ids and chat template."""
    import transformers
    reader = smollm_gguf[0]
    _, hf_tok = smollm_hf
    tok = _gguf.build_tokenizer(reader)
    chats = [[{"role": "user", "content": "What is 2+2?"}],
             [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Héllo 😀\n\n  x"},
              {"role": "assistant", "content": "Hi!"}, {"role": "user", "content": "<|im_end|> 12 x³ 4½"}]]
    texts = TEXTS + [hf_tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
    for text in texts:
        assert tok.encode(text).ids == hf_tok(text)["input_ids"], text
    _gguf.save_tokenizer(reader, tmp_path)
    mine = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    for text in texts:
        assert mine(text)["input_ids"] == hf_tok(text)["input_ids"], text
    for c in chats:
        assert mine.apply_chat_template(c, tokenize=False, add_generation_prompt=True) == \
            hf_tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
    assert (mine.bos_token, mine.eos_token, mine.pad_token, mine.unk_token) == \
        (hf_tok.bos_token, hf_tok.eos_token, hf_tok.pad_token, hf_tok.unk_token)


def test_default_numeric_split_is_llama_cpps(smollm_gguf):
    """``tokenizer.ggml.pre`` is "smollm": llama.cpp (and the model's own tokenizer.json) isolate every
    numeric character before BPE; transformers' GGUF loader does not know the name and keeps GPT-2's
    split, so " ²" differs there (it merges to one token; llama.cpp gives two)."""
    pytest.importorskip("regex")
    reader = smollm_gguf[0]
    tok = _gguf.build_tokenizer(reader)
    tokens = _gguf.field(reader, "tokenizer.ggml.tokens")
    types = _gguf.field(reader, "tokenizer.ggml.token_type")
    merges = _gguf.field(reader, "tokenizer.ggml.merges")
    assert _gguf.field(reader, "tokenizer.ggml.pre") == "smollm"
    for text in TEXTS + NUMERIC:
        assert tok.encode(text).ids == llama_cpp_tokenize(text, tokens, types, merges, "smollm"), text
