"""The decoder graph of :func:`ragcore.export_generator`, written node by node with the onnx API.

A Llama-style decoder (RMSNorm, grouped-query attention with rotary embeddings, SwiGLU MLP) becomes one
ONNX graph built from onnxruntime's fused operators, the layout onnxruntime-genai's model builder also
uses on the CPU:

* ``SimplifiedLayerNormalization`` / ``SkipSimplifiedLayerNormalization`` (RMSNorm, with the residual
  addition fused in);
* one ``MatMul`` for q, k and v together (int4 weights: ``MatMulNBits``; int8: ``DynamicQuantizeMatMul``
  of int8 weights, one scale per output channel, by activations scaled to one range per token);
* ``GroupQueryAttention`` (com.microsoft) with the rotary embedding applied inside from cos/sin tables and
  the KV cache **shared between input and output**: the runtime binds one preallocated buffer per layer
  of shape (batch, kv_heads, capacity, head_dim) as both ``past_key_values.{i}.*`` and ``present.{i}.*``,
  and the operator writes the new positions in place. Nothing is copied or concatenated per step;
* the language-model head applied to the last position of each row only (``last_index``), so a prefill of
  n tokens does not compute n x vocab logits.

Inputs: ``input_ids`` int64 (batch, seq); ``seqlens_k`` int32 (batch,) = tokens in the cache after this
step minus one, per row; ``total_sequence_length`` int32 scalar = the largest of those plus one;
``last_index`` int64 (batch,) = row-major index into (batch * seq) of each row's last real token;
the caches. Outputs: ``logits`` float32 (batch, vocab) and the caches. ``last_index`` is a plain
``Gather``: given m positions it yields m rows of logits, which prompt lookup uses to score all n tokens
of one row's many-token step (m = n; onnxruntime does not check the declared ``batch`` there).

Only numpy and onnx are used here: the weights come in as numpy arrays named as in Hugging Face's
``LlamaForCausalLM`` state dict.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Tuple

import numpy as np

from ._onnx import Graph

MS = "com.microsoft"


def quantize_blocks(w: np.ndarray, bits: int, block: int) -> Tuple[np.ndarray, np.ndarray]:
    """Symmetric block quantization of ``w`` (N, K) along K, the layout of ``MatMulNBits``.

    Returns (q, scales): q uint8 (N, blocks, block * bits // 8), values stored with the default zero
    point 2**(bits-1) (two 4-bit values per byte, the first in the low nibble); scales float32
    (N, blocks). 4 bits: the signed scale maps the block's value of largest magnitude to -8, so all 16
    levels are used (a step of max|w|/8 instead of max|w|/7, the rule of onnxruntime's own quantizer:
    SmolLM2-135M perplexity 27.5 instead of 30.3; a per-block search of the scale minimising the squared
    weight error did worse, 38 vs 35 on another text, since it clips the largest weights). Every value is
    reproduced to within half a step, except one on the side opposite to the extreme beyond 7.5 steps
    (clipped to +7: within one step). 8 bits: levels -127..127, step max|w|/127 (with -128 in use,
    onnxruntime's 8-bit CPU kernel gave SmolLM2 a garbled answer), always within half a step.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
    >>> q, s = quantize_blocks(w, bits=4, block=32)
    >>> q.shape, s.shape                          # 2 blocks of 32 values, two values a byte
    ((1, 2, 16), (1, 2))
    >>> bool(np.abs(dequantize_blocks(q, s, 4, 64) - w).max() <= np.abs(s).max())
    True
    """
    N, K = w.shape
    nb = -(-K // block)
    wb = np.zeros((N, nb * block), np.float32)
    wb[:, :K] = w
    wb = wb.reshape(N, nb, block)
    lo, hi, zp = -(1 << (bits - 1)), (1 << (bits - 1)) - 1, 1 << (bits - 1)
    if bits == 4:
        extreme = np.take_along_axis(wb, np.abs(wb).argmax(-1)[..., None], -1)[..., 0]     # signed
        scale = np.where(extreme != 0, extreme / lo, 1.0).astype(np.float32)
    else:   # 8 bits: levels -127..127 (onnxruntime's 8-bit CPU kernel mis-signs -128 against some inputs)
        absmax = np.abs(wb).max(-1)
        scale = np.where(absmax > 0, absmax / hi, 1.0).astype(np.float32)
    q = (np.clip(np.rint(wb / scale[..., None]), lo, hi) + zp).astype(np.uint8)
    if bits == 4:
        q = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    return q, scale


def dequantize_blocks(q: np.ndarray, scale: np.ndarray, bits: int, K: int) -> np.ndarray:
    """Inverse of :func:`quantize_blocks` (for tests): float32 (N, K)."""
    if bits == 4:
        q = np.stack([q & 15, q >> 4], -1).reshape(q.shape[0], q.shape[1], -1)
    w = (q.astype(np.float32) - (1 << (bits - 1))) * scale[..., None]
    return w.reshape(q.shape[0], -1)[:, :K]


def _skip_norm(b: Graph, residual: str, x: str, weight: str, name: str, eps: float) -> Tuple[str, str]:
    """RMSNorm of ``residual + x`` (onnxruntime's SkipSimplifiedLayerNormalization): (normed, residual + x)."""
    out = b.node_outputs("SkipSimplifiedLayerNormalization", [residual, x, weight], [name, "", "", name + "/sum"],
                         name, domain=MS, epsilon=eps)
    return out[0], out[3]


def build_decoder(weights: Mapping[str, np.ndarray], *, num_layers: int, num_heads: int, num_kv_heads: int,
                  head_dim: int, rms_eps: float, inv_freq: np.ndarray, rope_scale: float, max_positions: int,
                  precision: str = "float32", block: int = 32, tied: bool = False, opset: int = 17,
                  token_scales: bool = True):
    """The decoder as an ``onnx.ModelProto`` (see the module docstring for its inputs and outputs).

    ``weights``: Hugging Face names (``model.embed_tokens.weight``, ``model.layers.{i}.self_attn.q_proj.weight``
    ...), float32 numpy arrays, projection matrices as (out, in). ``precision``: float32, float16 (weights,
    activations and cache in float16; logits float32), int4 (weights of every projection and of the head in
    blocks of ``block`` along the input dimension, ``MatMulNBits``; activations float32), int8 (projections:
    int8 weights per output channel times int8 activations per token, ``DynamicQuantizeMatMul``, which
    runs on onnxruntime's integer GEMM kernels, AMX where the CPU has it; embedding and head as int4's
    layout with 8 bits). ``token_scales=False`` (int8 only) leaves out the scaling of activations to
    one range per token: ``DynamicQuantizeMatMul``'s one scale per tensor is then one per token only when
    the graph sees one token at a time, which is what the single-row decode graph is for (five
    element-wise operators fewer per projection).
    """
    from onnx import helper, TensorProto

    b = Graph()
    ft = np.float16 if precision == "float16" else np.float32
    elem = TensorProto.FLOAT16 if precision == "float16" else TensorProto.FLOAT
    bits = {"int8": 8, "int4": 4}.get(precision)
    H = weights["model.embed_tokens.weight"].shape[1]
    V = weights["model.embed_tokens.weight"].shape[0]

    def linear(x: str, wname: str, out_name: str) -> str:
        return linear_w(x, np.asarray(weights[wname], np.float32), out_name)

    row_scaled: dict = {}

    def per_row(x: str) -> Tuple[str, str]:
        """(x / r, r), r = max |x| over each row (token): DynamicQuantizeMatMul's one uint8 scale per tensor
        then amounts to one per token, so a token with large activations costs the others nothing: every
        row spans [-1, 1] on one side at least. (A power of two near max |x| instead would make one row
        bit for bit the decode graph's, but rows would then span (0.5, 1] and the smaller ones lose up to
        a bit: mean KL to float32 measured 0.012-0.027 against 0.007-0.021 with max |x|.)"""
        if x not in row_scaled:
            if not row_scaled:
                b.const("row_scale_floor", np.array(1e-30, np.float32))
            m = b.node("ReduceMax", [b.node("Abs", [x], x + "/abs")], x + "/absmax", axes=[-1], keepdims=1)
            r = b.node("Max", [m, "row_scale_floor"], x + "/row_scale")
            row_scaled[x] = (b.node("Div", [x, r], x + "/row_scaled"), r)
        return row_scaled[x]

    def linear_w(x: str, w: np.ndarray, out_name: str, bias: Optional[np.ndarray] = None) -> str:
        N, K = w.shape
        if bits is None:
            y = b.node("MatMul", [x, b.const(out_name + ".weight", w.T.astype(ft))], out_name)
        elif bits == 8:
            # int8 weights, one scale per output channel, times int8 activations, one scale per token:
            # onnxruntime's integer GEMM (AMX or AVX-512 VNNI / AVX2 u8s8 kernels) for prompts and steps
            s = np.abs(w).max(axis=1) / 127.0
            s[s == 0] = 1.0
            q = np.clip(np.rint(w / s[:, None]), -127, 127).astype(np.int8).T
            xs, r = per_row(x) if token_scales else (x, None)
            y = b.node("DynamicQuantizeMatMul", [xs, b.const(out_name + ".qweight", q),
                                                 b.const(out_name + ".scales", s.astype(np.float32)), "", ""],
                       out_name + "/rows" if r else out_name, domain=MS)
            if r:
                y = b.node("Mul", [y, r], out_name)
        else:
            q, s = quantize_blocks(w, bits, block)
            y = b.node("MatMulNBits", [x, b.const(out_name + ".qweight", q), b.const(out_name + ".scales", s.reshape(-1))],
                       out_name, domain=MS, K=K, N=N, bits=bits, block_size=block, accuracy_level=4)
        if bias is not None:
            y = b.node("Add", [y, b.const(out_name + ".bias", bias.astype(ft))], out_name + "/bias")
        return y

    # embeddings (and the head, tied or not)
    emb = np.asarray(weights["model.embed_tokens.weight"], np.float32)
    head = emb if tied or "lm_head.weight" not in weights else np.asarray(weights["lm_head.weight"], np.float32)
    if bits is not None and tied and H % block == 0:
        # one quantized tensor (V, nb, block*bits/8) for both uses (GatherBlockQuantized cannot cut off the
        # padding of a last partial block, hence H % block == 0; otherwise the embedding stays float)
        q, s = quantize_blocks(emb, bits, block)
        qn = b.const("embed.qweight", q)
        sn = b.const("embed.scales", s.reshape(-1))
        flat = b.node("Reshape", [qn, b.const("embed.qshape", np.array([V, q.shape[1] * q.shape[2]], np.int64))],
                      "embed/reshape")
        sn2 = b.node("Reshape", [sn, b.const("embed.sshape", np.array([V, q.shape[1]], np.int64))], "embed/sreshape")
        x = b.node("GatherBlockQuantized", [flat, "input_ids", sn2], "embed", domain=MS, bits=bits, block_size=block,
                   gather_axis=0, quantize_axis=1)
        shared_head = (qn, sn)
    else:
        x = b.node("Gather", [b.const("embed.weight", emb.astype(ft)), "input_ids"], "embed")
        shared_head = None

    cos_sin = np.arange(max_positions, dtype=np.float64)[:, None] * inv_freq.astype(np.float64)[None, :]
    cos = b.const("cos_cache", (np.cos(cos_sin) * rope_scale).astype(ft))
    sin = b.const("sin_cache", (np.sin(cos_sin) * rope_scale).astype(ft))

    residual, pending = x, None
    for i in range(num_layers):
        p = f"model.layers.{i}."
        w_in = b.const(f"layers.{i}.input_norm", np.asarray(weights[p + "input_layernorm.weight"]).astype(ft))
        if pending is None:
            h = b.node("SimplifiedLayerNormalization", [residual, w_in], f"layers.{i}/input_norm",
                       axis=-1, epsilon=rms_eps, stash_type=1)
        else:
            h, residual = _skip_norm(b, residual, pending, w_in, f"layers.{i}/input_norm", rms_eps)
        a = p + "self_attn."
        wqkv = np.concatenate([np.asarray(weights[a + f"{n}_proj.weight"], np.float32) for n in "qkv"], 0)
        bias = None
        if a + "q_proj.bias" in weights:
            bias = np.concatenate([np.asarray(weights[a + f"{n}_proj.bias"], np.float32) for n in "qkv"], 0)
        qkv = linear_w(h, wqkv, f"layers.{i}/qkv", bias)
        attn = b.node_outputs("GroupQueryAttention",
                              [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value", "seqlens_k",
                               "total_sequence_length", cos, sin],
                              [f"layers.{i}/attn", f"present.{i}.key", f"present.{i}.value"], f"layers.{i}/attn",
                              domain=MS, num_heads=num_heads, kv_num_heads=num_kv_heads,
                              scale=1.0 / math.sqrt(head_dim), do_rotary=1, rotary_interleaved=0)[0]
        o = linear(attn, a + "o_proj.weight", f"layers.{i}/o_proj")
        w_post = b.const(f"layers.{i}.post_norm", np.asarray(weights[p + "post_attention_layernorm.weight"]).astype(ft))
        h, residual = _skip_norm(b, residual, o, w_post, f"layers.{i}/post_norm", rms_eps)
        m = p + "mlp."
        g = linear(h, m + "gate_proj.weight", f"layers.{i}/gate")
        u = linear(h, m + "up_proj.weight", f"layers.{i}/up")
        sg = b.node("Sigmoid", [g], f"layers.{i}/silu/sigmoid")
        act = b.node("Mul", [g, sg], f"layers.{i}/silu")
        gu = b.node("Mul", [act, u], f"layers.{i}/gate_up")
        pending = linear(gu, m + "down_proj.weight", f"layers.{i}/down")
    w_final = b.const("final_norm.weight", np.asarray(weights["model.norm.weight"]).astype(ft))
    hfin, _ = _skip_norm(b, residual, pending, w_final, "final_norm", rms_eps)
    flat = b.node("Reshape", [hfin, b.const("flat_shape", np.array([-1, H], np.int64))], "flatten")
    last = b.node("Gather", [flat, "last_index"], "last", axis=0)
    if shared_head is not None:
        qn, sn = shared_head
        logits = b.node("MatMulNBits", [last, qn, sn], "lm_head", domain=MS, K=H, N=V, bits=bits,
                        block_size=block, accuracy_level=4)
    elif bits is None and tied:
        wt = b.node("Transpose", ["embed.weight"], "lm_head/transpose", perm=[1, 0])
        logits = b.node("MatMul", [last, wt], "lm_head")
    else:
        logits = linear_w(last, head, "lm_head")
    if precision == "float16":
        logits = b.node("Cast", [logits], "logits/cast", to=TensorProto.FLOAT)
    b.node("Identity", [logits], "logits")

    kv_shape = ["batch", num_kv_heads, "capacity", head_dim]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
              helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
              helper.make_tensor_value_info("last_index", TensorProto.INT64, ["batch"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", V])]
    for i in range(num_layers):
        for kv in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kv}", elem, kv_shape))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kv}", elem, kv_shape))
    graph = helper.make_graph(b.nodes, "ragcore_decoder", inputs, outputs, b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)],
                              producer_name="ragcore")
    model.ir_version = 8
    return model
