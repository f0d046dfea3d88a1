"""SmoothQuant (Xiao et al. 2023) for the int8 generator export, calibrated without torch.

The int8 graph quantizes activations per token. A few input channels of a projection carry most of an
activation's range, so one scale per token leaves the other channels few levels. Dividing channel k of
the input by s_k and multiplying column k of the weights by s_k leaves the product unchanged and moves
range from the activation into the weights (quantized per output channel): s_k = sqrt(max |x_k| /
max |W_k|), with max |x_k| measured on calibration text (:func:`activation_maxima`: the float32 graph of
:mod:`ragcore.models.llm_graph` run by onnxruntime, the inputs of the projections as extra outputs).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence

import numpy as np

__all__ = ["calibration_texts", "activation_maxima", "smooth"]

# the input of each smoothed projection, by the name of the graph tensor that holds it
_WATCHED = (("q", "input_norm"), ("o", "attn"), ("gate", "post_norm"), ("down", "gate_up"))


def calibration_texts() -> List[str]:
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


def activation_maxima(weights: Mapping[str, np.ndarray], graph_kw: Dict[str, Any],
                      encode: Callable[[str], Sequence[int]], max_tokens: int = 512,
                      texts: Sequence[str] = ()) -> Dict[str, np.ndarray]:
    """max |x| per input channel of the q (and k, v), o, gate (and up) and down projections of every layer,
    over the tokens of the calibration texts (each cut to ``max_tokens``, and to the model's window): ``{"<layer>.<q|o|gate|down>":
    float32 (channels,)}``. The model runs as the float32 decoder graph of
    :func:`~ragcore.models.llm_graph.build_decoder` (``graph_kw`` its shape arguments) in onnxruntime,
    with a reduction of each watched tensor added as an output. ``encode``: text -> token ids, no special
    tokens. ``texts``: default :func:`calibration_texts`.
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from .llm_graph import build_decoder

    kw = {**graph_kw, "precision": "float32"}
    L = int(kw["num_layers"])
    model = build_decoder(weights, **kw)
    g = model.graph
    for i in range(L):
        for key, tensor in _WATCHED:
            src, out = f"layers.{i}/{tensor}", f"calibration/{i}.{key}"
            g.node.append(helper.make_node("Abs", [src], [out + "/abs"], name=out + "/abs"))
            g.node.append(helper.make_node("ReduceMax", [out + "/abs"], [out], name=out, axes=[0, 1], keepdims=0))
            g.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [None]))
    kvh, hd = int(kw["num_kv_heads"]), int(kw["head_dim"])
    max_tokens = min(int(max_tokens), int(kw["max_positions"]))     # no further than the rotary tables reach
    amax: Dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="ragcore-calibration-") as d:
        f = Path(d) / "calibration.onnx"     # weights beside it: no 2 GB protobuf limit
        onnx.save(model, str(f), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=f.name + ".data", size_threshold=1024)
        del model, g
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(f), sess_options=so, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs() if o.name.startswith("calibration/")]
        for text in (texts or calibration_texts()):
            ids = list(encode(text))[:max_tokens]
            if not ids:
                continue
            S = len(ids)
            feed = {"input_ids": np.array([ids], np.int64), "seqlens_k": np.array([S - 1], np.int32),
                    "total_sequence_length": np.array(S, np.int32), "last_index": np.array([S - 1], np.int64)}
            for j in range(L):
                for kv in ("key", "value"):
                    feed[f"past_key_values.{j}.{kv}"] = np.zeros((1, kvh, S, hd), np.float32)
            for name, m in zip(names, sess.run(names, feed)):
                k = name[len("calibration/"):]
                amax[k] = m if k not in amax else np.maximum(amax[k], m)
        del sess
    return amax


def smooth(weights: Mapping[str, np.ndarray], amax: Mapping[str, np.ndarray], *, num_layers: int, num_heads: int,
           num_kv_heads: int, head_dim: int, fold_v: bool = True) -> Dict[str, np.ndarray]:
    """The weights rescaled by SmoothQuant with the paper's alpha = 0.5 (a new dict; ``weights`` unchanged).

    alpha 0.5 gave bench perplexity 26.48-26.72 over variants of the export that differ only in rounding
    (float32: 26.35); alpha 0.35, 0.65 and 0.8 gave 26.74, 26.48 and 26.81, inside that spread. The
    division is folded into the operation before: the RMSNorm weight (inputs of q/k/v and of gate/up),
    the rows of up_proj (input of down_proj, silu(gate) * up) and the rows of v_proj (input of o_proj;
    the heads that share one value head share its s). ``fold_v=False`` leaves v_proj and o_proj as they
    are: the values in the KV cache then stay the model's own, which a prefill graph that hands its
    cache to another graph needs. Without maxima (``amax`` empty) the weights come back as they are.
    """
    w = dict(weights)
    if not amax:
        return w
    nh, kvh, hd = num_heads, num_kv_heads, head_dim

    def scale(x_max, cols):
        wmax = np.maximum(np.abs(np.concatenate(cols, 0)).max(0), 1e-5)
        return np.sqrt(np.maximum(x_max, 1e-5) / wmax).astype(np.float32)

    for i in range(num_layers):
        p = f"model.layers.{i}."
        a, m = p + "self_attn.", p + "mlp."
        # q/k/v: fold 1/s into the input RMSNorm weight
        s = scale(amax[f"{i}.q"], [w[a + f"{n}_proj.weight"] for n in "qkv"])
        w[p + "input_layernorm.weight"] = w[p + "input_layernorm.weight"] / s
        for n in "qkv":
            w[a + f"{n}_proj.weight"] = w[a + f"{n}_proj.weight"] * s[None, :]
        # gate/up: into the post-attention RMSNorm weight
        s = scale(amax[f"{i}.gate"], [w[m + "gate_proj.weight"], w[m + "up_proj.weight"]])
        w[p + "post_attention_layernorm.weight"] = w[p + "post_attention_layernorm.weight"] / s
        for n in ("gate", "up"):
            w[m + f"{n}_proj.weight"] = w[m + f"{n}_proj.weight"] * s[None, :]
        # down: into the rows of up_proj (silu(gate) * up is linear in up)
        s = scale(amax[f"{i}.down"], [w[m + "down_proj.weight"]])
        w[m + "up_proj.weight"] = w[m + "up_proj.weight"] / s[:, None]
        w[m + "down_proj.weight"] = w[m + "down_proj.weight"] * s[None, :]
        # o: into the rows of v_proj; o's input channel (head h, dim d) comes from value head h // (nh/kvh)
        if fold_v and a + "v_proj.bias" not in w:
            s = scale(amax[f"{i}.o"], [w[a + "o_proj.weight"]]).reshape(kvh, nh // kvh, hd).max(1)
            w[a + "v_proj.weight"] = w[a + "v_proj.weight"] / s.reshape(-1)[:, None]
            per_q_head = np.repeat(s[:, None, :], nh // kvh, 1).reshape(-1)
            w[a + "o_proj.weight"] = w[a + "o_proj.weight"] * per_q_head[None, :]
    return w
