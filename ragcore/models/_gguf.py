"""A GGUF file read without torch: the decoder's shape, its weights and its tokenizer.

:func:`ragcore.export_generator` reads a Llama-architecture GGUF (the default model's, SmolLM2-135M-Instruct
in Q4_1, among them) with the ``gguf`` package alone: the metadata gives the shape (llama.cpp's keys:
``llama.block_count``, ``llama.attention.head_count``, ...), the tensors are dequantized by
``gguf.quants.dequantize`` and renamed to the names of Hugging Face's ``LlamaForCausalLM`` that
:func:`ragcore.models.llm_graph.build_decoder` takes, and the tokenizer is rebuilt from the file's
vocabulary and merges as a ``tokenizers`` byte-level BPE, written as ``tokenizer.json`` beside
``tokenizer_config.json`` and the chat template. What comes out is what transformers' GGUF loader gives
(tested: the same weights, the same token ids, the same greedy text), with one difference by design: the
text is split before BPE by the pre-tokenizer that ``tokenizer.ggml.pre`` names, as llama.cpp does
(``smollm`` isolates every numeric character, as the model's own tokenizer does), where transformers
keeps GPT-2's split for the names it does not know (``" ²"`` is then one token instead of two).

Two transforms of llama.cpp's converter are undone: the rows of the q and k projections, permuted for
llama.cpp's interleaved rotary layout (transformers' ``reverse_permute_weights``), and the rotary
frequency factors of Llama 3 (the ``rope_freqs`` tensor), folded into the inverse frequencies.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

__all__ = ["open_reader", "torch_free_reason", "decoder_spec", "load_weights", "build_tokenizer", "save_tokenizer"]

_MISSING = object()

# tokenizer.ggml.pre -> the split before byte-level BPE (llama.cpp's llama-vocab.cpp; regexes as in the
# models' own tokenizer.json files). Names not listed get GPT-2's split, as in llama.cpp's default and in
# transformers.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_PRE = {
    **dict.fromkeys(("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"), "digits"),
    **dict.fromkeys(("llama3", "llama-bpe", "llama-v3", "smaug-bpe", "falcon3", "pixtral", "dbrx"), _LLAMA3_SPLIT),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "stablelm2"), _QWEN2_SPLIT),
}
_CONTROL, _USER_DEFINED = 3, 4      # tokenizer.ggml.token_type values (llama.cpp's llama_token_type)


def open_reader(path: Path):
    """``gguf.GGUFReader`` of ``path``; ``ValueError`` naming the file when it cannot be parsed.

    The reader slices its memory map once per value it parses (about 250,000 slices for a 49,152-token
    vocabulary): slicing a plain ndarray view of the map instead of numpy's memmap subclass, whose
    slices each run Python code, reads the default model's header 2.7x sooner. The file stays mapped.
    """
    import gguf

    class Reader(gguf.GGUFReader):
        def _get(self, *args, **kwargs):
            if isinstance(self.data, np.memmap):
                self.data = self.data.view(np.ndarray)
            return super()._get(*args, **kwargs)

    try:
        return Reader(str(path))
    except Exception as e:  # gguf raises various types on a corrupt file
        raise ValueError(f"{path}: cannot read the GGUF header ({type(e).__name__}: {e})") from None


def field(reader, key: str, default: Any = _MISSING) -> Any:
    """A metadata value: str, int, float, bool, or a list of them; ``default`` when absent (else
    ``ValueError`` naming the key)."""
    f = reader.fields.get(key)
    if f is None:
        if default is _MISSING:
            raise ValueError(f"the GGUF file has no {key!r} metadata; it is needed to export it")
        return default
    import gguf
    STR, ARR = gguf.GGUFValueType.STRING, gguf.GGUFValueType.ARRAY

    def value(part, vtype):
        return bytes(part).decode("utf-8") if vtype == STR else part.tolist()[0]

    if f.types[0] == ARR:
        vtype = f.types[-1]
        if vtype != STR:    # numbers: one contiguous array
            return np.concatenate([f.parts[i] for i in f.data]).tolist() if f.data else []
        return [value(f.parts[i], vtype) for i in f.data]
    return value(f.parts[f.data[0]], f.types[0])


def torch_free_reason(reader) -> Optional[str]:
    """None when this module reads the file; else why not (the export then goes through transformers)."""
    model = field(reader, "tokenizer.ggml.model", None)
    if model != "gpt2":
        return (f"its tokenizer ({model!r}) is not a byte-level BPE ('gpt2'), the one tokenizer ragcore "
                f"rebuilds from a GGUF file")
    return None


def decoder_spec(reader) -> Dict[str, Any]:
    """The decoder's shape, rotary frequencies and special tokens from the GGUF metadata.

    Keys: the keyword arguments of :func:`~ragcore.models.llm_graph.build_decoder` but ``precision``
    (``num_layers``, ``num_heads``, ``num_kv_heads``, ``head_dim``, ``rms_eps``, ``inv_freq``,
    ``rope_scale``, ``max_positions``, ``tied``) and ``hidden_size``, ``intermediate_size``,
    ``vocab_size``, ``bos_token_id``, ``eos_token_ids``.
    """
    arch = field(reader, "general.architecture")
    H = int(field(reader, f"{arch}.embedding_length"))
    nh = int(field(reader, f"{arch}.attention.head_count"))
    kvh = int(field(reader, f"{arch}.attention.head_count_kv", nh))
    hd = int(field(reader, f"{arch}.attention.key_length", H // nh))
    names = {t.name for t in reader.tensors}
    rope_dim = int(field(reader, f"{arch}.rope.dimension_count", hd))
    if rope_dim != hd:
        raise ValueError(f"rotary embedding over {rope_dim} of the {hd} dimensions of a head: not supported "
                         f"(the exported attention rotates whole heads)")
    if nh % kvh:
        raise ValueError(f"{nh} attention heads are not a multiple of {kvh} key/value heads")
    base = float(field(reader, f"{arch}.rope.freq_base", 10000.0))
    # Hugging Face's default rope, 1 / base ** (arange(0, d, 2) / d) in float32: the power rounded once
    # from float64 (torch's float32 power is that to the bit for the usual bases and head sizes)
    exponent = (np.arange(0, hd, 2, dtype=np.float32) / np.float32(hd)).astype(np.float64)
    inv_freq = np.float32(1.0) / (base ** exponent).astype(np.float32)
    scaling = field(reader, f"{arch}.rope.scaling.type", "none")
    if scaling == "linear":
        inv_freq = (inv_freq / np.float32(field(reader, f"{arch}.rope.scaling.factor"))).astype(np.float32)
    elif scaling not in ("none", "llama3"):
        raise ValueError(f"unsupported rope scaling {scaling!r}; supported: none, linear, llama3")
    if "rope_freqs.weight" in names:    # Llama 3's factors, as llama.cpp applies them: theta / factor
        t = next(t for t in reader.tensors if t.name == "rope_freqs.weight")
        factors = _dequantize(t)
        if factors.shape != inv_freq.shape:
            raise ValueError(f"rope_freqs has shape {factors.shape}, expected {inv_freq.shape}")
        inv_freq = (inv_freq / factors).astype(np.float32)
    tokens = field(reader, "tokenizer.ggml.tokens", [])
    eos = [field(reader, f"tokenizer.ggml.{k}_token_id", None) for k in ("eos", "eot", "eom")]
    bos = field(reader, "tokenizer.ggml.bos_token_id", None)
    return {
        "num_layers": int(field(reader, f"{arch}.block_count")), "num_heads": nh, "num_kv_heads": kvh,
        "head_dim": hd, "rms_eps": float(field(reader, f"{arch}.attention.layer_norm_rms_epsilon")),
        "inv_freq": inv_freq, "rope_scale": 1.0,
        "max_positions": int(field(reader, f"{arch}.context_length")),
        # llama.cpp writes the output projection only when it is not the embedding matrix
        "tied": "output.weight" not in names,
        "hidden_size": H, "intermediate_size": int(field(reader, f"{arch}.feed_forward_length")),
        "vocab_size": int(field(reader, f"{arch}.vocab_size", len(tokens))),
        "bos_token_id": None if bos is None else int(bos),
        "eos_token_ids": sorted({int(e) for e in eos if e is not None}),
    }


def _dequantize(tensor) -> np.ndarray:
    """A tensor as float32 in numpy's order (GGUF lists the dimensions innermost first)."""
    from gguf.quants import dequantize
    shape = tuple(int(n) for n in reversed(tensor.shape))
    # a plain ndarray view of the memory map: dequantize slices it per block row, and numpy's memmap
    # subclass makes each slice cost Python calls (half of the reading time of the default model)
    data = tensor.data.view(np.ndarray) if isinstance(tensor.data, np.memmap) else tensor.data
    return np.ascontiguousarray(dequantize(data, tensor.tensor_type), dtype=np.float32).reshape(shape)


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's permutation of q/k rows (per head, the two rotary halves interleaved)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_LAYER_NAMES = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
                "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                "ffn_down": "mlp.down_proj"}
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def load_weights(reader, spec: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """The weights as float32 numpy arrays under Hugging Face's ``LlamaForCausalLM`` names, projections
    (out, in); each shape checked against ``spec``."""
    H, I, V = spec["hidden_size"], spec["intermediate_size"], spec["vocab_size"]
    nh, kvh, hd, L = spec["num_heads"], spec["num_kv_heads"], spec["head_dim"], spec["num_layers"]
    shapes = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,), "lm_head.weight": (V, H)}
    for i in range(L):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,),
                       p + "self_attn.q_proj.weight": (nh * hd, H), p + "self_attn.k_proj.weight": (kvh * hd, H),
                       p + "self_attn.v_proj.weight": (kvh * hd, H), p + "self_attn.o_proj.weight": (H, nh * hd),
                       p + "mlp.gate_proj.weight": (I, H), p + "mlp.up_proj.weight": (I, H),
                       p + "mlp.down_proj.weight": (H, I)})
    out: Dict[str, np.ndarray] = {}
    for t in reader.tensors:
        stem, _, kind = t.name.rpartition(".")
        parts = stem.split(".")
        if t.name == "rope_freqs.weight":
            continue            # folded into inv_freq by decoder_spec
        if kind == "weight" and stem in _GLOBAL_NAMES:
            name = _GLOBAL_NAMES[stem] + ".weight"
        elif kind == "weight" and len(parts) == 3 and parts[0] == "blk" and parts[2] in _LAYER_NAMES \
                and parts[1].isdigit() and int(parts[1]) < L:
            name = f"model.layers.{int(parts[1])}.{_LAYER_NAMES[parts[2]]}.weight"
        else:
            raise ValueError(f"unexpected tensor {t.name!r} in the GGUF file: not part of a Llama decoder "
                             f"that the exported graph reproduces")
        w = _dequantize(t)
        if w.shape != shapes[name]:
            raise ValueError(f"tensor {t.name!r} has shape {w.shape}, expected {shapes[name]} from the metadata")
        if parts[-1] == "attn_q":
            w = _unpermute(w, nh)
        elif parts[-1] == "attn_k":
            w = _unpermute(w, kvh)
        out[name] = w
    missing = sorted(set(shapes) - set(out) - ({"lm_head.weight"} if spec["tied"] else set()))
    if missing:
        raise ValueError(f"the GGUF file lacks {len(missing)} tensors of the decoder, e.g. {missing[:3]}")
    return out


# ---------------------------------------------------------------------------------------------------
# the tokenizer


def _bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's byte -> printable character table (byte-level BPE spells every token in it)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def build_tokenizer(reader):
    """The file's tokenizer as a ``tokenizers.Tokenizer``: byte-level BPE over ``tokenizer.ggml.tokens``
    and ``merges``, the split that ``tokenizer.ggml.pre`` names, control tokens (type 3) as special
    added tokens and user-defined ones (type 4) as plain added tokens, BOS/EOS added per
    ``add_bos_token`` / ``add_eos_token``."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    reason = torch_free_reason(reader)
    if reason is not None:
        raise ValueError(f"cannot rebuild this GGUF's tokenizer: {reason}")
    tokens: List[str] = field(reader, "tokenizer.ggml.tokens")
    types: List[int] = field(reader, "tokenizer.ggml.token_type", [])
    spelling = _bytes_to_unicode()
    alphabet = set(spelling.values())
    # tokens are stored spelled in GPT-2's byte alphabet; one that is not (rare) is spelled here
    vocab = {t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
             for i, t in enumerate(tokens)}
    merges = []
    for m in field(reader, "tokenizer.ggml.merges", []):
        pair = m.split(" ")
        if len(pair) != 2:
            raise ValueError(f"malformed merge {m!r} in the GGUF file (expected two tokens and one space)")
        merges.append(tuple(pair))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    # a control token spelled outside the byte alphabet is a mislabel of llama.cpp's (transformers skips
    # it too); user-defined tokens are matched whole, as llama.cpp does
    special = [AddedToken(t, normalized=False, special=True) for t, k in zip(tokens, types)
               if k == _CONTROL and set(t) <= alphabet]
    user = [AddedToken(t, normalized=False, special=False) for t, k in zip(tokens, types)
            if k == _USER_DEFINED and t in vocab]
    if special:
        tok.add_special_tokens(special)
    if user:
        tok.add_tokens(user)
    split = _PRE.get(field(reader, "tokenizer.ggml.pre", "default"))
    if split is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif split == "digits":     # each numeric character alone, then GPT-2's split
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    ends = []
    for which, default in (("bos", False), ("eos", False)):
        tid = field(reader, f"tokenizer.ggml.{which}_token_id", None)
        if field(reader, f"tokenizer.ggml.add_{which}_token", default) and tid is not None:
            ends.append((which, tokens[int(tid)], int(tid)))
    if ends:
        bos = [t for w, t, _ in ends if w == "bos"]
        eos = [t for w, t, _ in ends if w == "eos"]
        tok.post_processor = processors.TemplateProcessing(
            single=bos + ["$A"] + eos, pair=bos + ["$A"] + eos + bos + ["$B:1"] + eos,
            special_tokens=sorted({(t, i) for _, t, i in ends}, key=lambda x: x[1]))
    return tok


def save_tokenizer(reader, folder: Path) -> None:
    """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``chat_template.jinja`` (when the file has
    a chat template) to ``folder``: the files a Hugging Face tokenizer folder has, which
    :class:`ragcore.Generator` and transformers' ``AutoTokenizer`` read."""
    tok = build_tokenizer(reader)
    tok.save(str(folder / "tokenizer.json"))
    tokens = field(reader, "tokenizer.ggml.tokens")
    config: Dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
                              "model_max_length": int(field(reader, f"{field(reader, 'general.architecture')}.context_length")),
                              "add_bos_token": bool(field(reader, "tokenizer.ggml.add_bos_token", False)),
                              "add_eos_token": bool(field(reader, "tokenizer.ggml.add_eos_token", False))}
    for name, key in (("bos_token", "bos"), ("eos_token", "eos"), ("unk_token", "unknown"), ("pad_token", "padding")):
        tid = field(reader, f"tokenizer.ggml.{key}_token_id", None)
        if tid is not None and 0 <= int(tid) < len(tokens):
            config[name] = tokens[int(tid)]
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                                  encoding="utf-8")
    template = field(reader, "tokenizer.chat_template", None)
    if isinstance(template, str) and template:
        (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
