"""The block quantizer behind int8/int4 generator weights (ragcore.models.llm_graph): round trip and layout."""
import numpy as np
import pytest

from ragcore.models.llm_graph import build_decoder, dequantize_blocks, quantize_blocks


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("K", [64, 576, 70])          # 70: a last block padded with zeros
def test_round_trip_within_half_a_step(bits, K):
    rng = np.random.default_rng(bits * 1000 + K)
    w = rng.standard_normal((37, K)).astype(np.float32)
    w[3] = 0.0                                          # an all-zero row keeps a finite scale
    q, s = quantize_blocks(w, bits, 32)
    nb = -(-K // 32)
    assert q.dtype == np.uint8 and q.shape == (37, nb, 32 * bits // 8) and s.shape == (37, nb)
    back = dequantize_blocks(q, s, bits, K)
    step = np.repeat(np.abs(s), 32, axis=1)[:, :K]
    # half a step, except values beyond +7.5 steps on the side opposite to the extreme (clipped to +7)
    signed = w / np.repeat(s, 32, axis=1)[:, :K]
    inside = signed < (1 << (bits - 1)) - 0.5
    err = np.abs(back - w)
    assert np.all(err[inside] <= step[inside] / 2 + 1e-6)
    assert np.all(err <= step + 1e-6)
    assert np.all(back[3] == 0)
    # 4 bits: the value of largest magnitude of each block sits exactly on -8; 8 bits: on +-127
    wb = np.zeros((37, nb * 32), np.float32)
    wb[:, :K] = w
    wb = wb.reshape(37, nb, 32)
    amax = np.abs(wb).max(-1)
    levels = 8 if bits == 4 else 127
    np.testing.assert_allclose(np.abs(s)[amax > 0] * levels, amax[amax > 0], rtol=1e-6)
    if bits == 8:
        assert np.all(err <= step / 2 + 1e-6) and q.min() >= 1
    assert np.all(np.abs(back.reshape(37, -1)).max(-1) <= amax.max(-1) + 1e-6)


def test_nibble_order():
    """MatMulNBits reads the first of two 4-bit values from the low nibble; the extreme maps to -8."""
    w = np.zeros((1, 32), np.float32)
    w[0, 0], w[0, 1] = 7.0, -3.5
    q, s = quantize_blocks(w, 4, 32)
    assert s[0, 0] == -0.875 and q[0, 0, 0] == (-8 + 8) | ((4 + 8) << 4)


# ---------------------------------------------------------------------------------------------------
# the whole graph on a tiny random Llama, against a numpy forward pass

# onnx builds the graph, onnxruntime runs it (pip install 'ragcore[dense]')
needs_onnx = pytest.mark.requires("onnx", "onnxruntime")
L, NH, KVH, HD, I, V = 2, 4, 2, 16, 80, 97     # I = 80 pads a 32-block


def _weights(seed=0, tied=True, H=48):
    """H = 48: not NH * HD, and not a multiple of the block (the quantized embedding stays float);
    H = 64: the embedding and the head share one quantized tensor."""
    rng = np.random.default_rng(seed)
    w = {"model.embed_tokens.weight": rng.standard_normal((V, H)).astype(np.float32) * 0.5,
         "model.norm.weight": (1 + 0.1 * rng.standard_normal(H)).astype(np.float32)}
    for i in range(L):
        p = f"model.layers.{i}."
        for n, shape in (("self_attn.q_proj", (NH * HD, H)), ("self_attn.k_proj", (KVH * HD, H)),
                         ("self_attn.v_proj", (KVH * HD, H)), ("self_attn.o_proj", (H, NH * HD)),
                         ("mlp.gate_proj", (I, H)), ("mlp.up_proj", (I, H)), ("mlp.down_proj", (H, I))):
            w[p + n + ".weight"] = (rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32)
        w[p + "input_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(H)).astype(np.float32)
        w[p + "post_attention_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(H)).astype(np.float32)
    if not tied:
        w["lm_head.weight"] = rng.standard_normal((V, H)).astype(np.float32) * 0.3
    return w


INV_FREQ = (1.0 / (10000 ** (np.arange(0, HD, 2) / HD))).astype(np.float32)


def _reference(w, ids, tied=True, bits=None):
    """Logits (vocab,) after every position of ``ids`` for one sequence, in float64."""
    def W(name):
        if bits is None:
            return w[name].astype(np.float64)
        q, s = quantize_blocks(w[name], bits, 32)
        return dequantize_blocks(q, s, bits, w[name].shape[1]).astype(np.float64)

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * g

    def rope(t, pos):          # t (S, heads, HD)
        f = pos[:, None] * INV_FREQ.astype(np.float64)[None]
        cos, sin = np.cos(np.concatenate([f, f], -1))[:, None], np.sin(np.concatenate([f, f], -1))[:, None]
        rot = np.concatenate([-t[..., HD // 2:], t[..., :HD // 2]], -1)
        return t * cos + rot * sin

    S = len(ids)
    pos = np.arange(S, dtype=np.float64)
    H = w["model.embed_tokens.weight"].shape[1]
    shared = bits is not None and tied and H % 32 == 0
    x = (W if shared else lambda n: w[n].astype(np.float64))("model.embed_tokens.weight")[ids]
    for i in range(L):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = rope((h @ W(p + "self_attn.q_proj.weight").T).reshape(S, NH, HD), pos)
        k = rope((h @ W(p + "self_attn.k_proj.weight").T).reshape(S, KVH, HD), pos)
        v = (h @ W(p + "self_attn.v_proj.weight").T).reshape(S, KVH, HD)
        k, v = np.repeat(k, NH // KVH, 1), np.repeat(v, NH // KVH, 1)
        sc = np.einsum("shd,thd->hst", q, k) / np.sqrt(HD)
        sc = np.where(np.tril(np.ones((S, S), bool))[None], sc, -np.inf)
        pr = np.exp(sc - sc.max(-1, keepdims=True))
        pr /= pr.sum(-1, keepdims=True)
        o = np.einsum("hst,thd->shd", pr, v).reshape(S, NH * HD)
        x = x + o @ W(p + "self_attn.o_proj.weight").T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        g, u = h @ W(p + "mlp.gate_proj.weight").T, h @ W(p + "mlp.up_proj.weight").T
        x = x + (g / (1 + np.exp(-g)) * u) @ W(p + "mlp.down_proj.weight").T
    head = W("model.embed_tokens.weight" if tied else "lm_head.weight")
    return rms(x, w["model.norm.weight"]) @ head.T


def _session(w, precision, tied):
    import onnxruntime as ort

    m = build_decoder(w, num_layers=L, num_heads=NH, num_kv_heads=KVH, head_dim=HD, rms_eps=1e-5, inv_freq=INV_FREQ,
                      rope_scale=1.0, max_positions=64, precision=precision, tied=tied)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _run(sess, rows, new_tokens, capacity, kv_dtype=np.float32):
    """Prefill ``rows`` (right-padded) then feed ``new_tokens`` (steps, batch); logits of every step."""
    import onnxruntime as ort

    B = len(rows)
    lens = np.array([len(r) for r in rows])
    S = lens.max()
    caches = {}
    for i in range(L):
        for kv in ("key", "value"):
            buf = ort.OrtValue.ortvalue_from_numpy(np.zeros((B, KVH, capacity, HD), kv_dtype))
            caches[i, kv] = buf
    b = sess.io_binding()
    for (i, kv), buf in caches.items():
        b.bind_ortvalue_input(f"past_key_values.{i}.{kv}", buf)
        b.bind_ortvalue_output(f"present.{i}.{kv}", buf)
    ids = np.zeros((B, S), np.int64)
    for j, r in enumerate(rows):
        ids[j, :len(r)] = r
    out = []
    feeds = [(ids, lens - 1, S, np.arange(B) * S + lens - 1)]
    for t, tok in enumerate(new_tokens):
        n = lens + t + 1
        feeds.append((np.asarray(tok, np.int64)[:, None], n - 1, n.max(), np.arange(B)))
    for x, sk, total, last in feeds:
        b.bind_cpu_input("input_ids", x)
        b.bind_cpu_input("seqlens_k", sk.astype(np.int32))
        b.bind_cpu_input("total_sequence_length", np.array(total, np.int32))
        b.bind_cpu_input("last_index", last.astype(np.int64))
        b.bind_output("logits", "cpu")
        sess.run_with_iobinding(b)
        out.append(b.get_outputs()[-1].numpy().copy())
    return out


@pytest.mark.parametrize("H", [48, 64])
@pytest.mark.parametrize("precision,tied,tol", [("float32", True, 5e-6), ("float32", False, 5e-6),
                                                ("float16", True, 4e-3), ("int8", True, 3e-2),
                                                ("int8", False, 3e-2), ("int4", True, 3e-2)])
@needs_onnx
def test_graph_equals_numpy_forward(precision, tied, tol, H):
    """Prefill + decode over the shared cache, two rows of different lengths in one batch, against the
    numpy forward pass over the whole sequence (quantized weights dequantized for the reference).
    Tolerances relative to the largest logit: float32 to rounding; int8/int4 weights are multiplied with
    activations quantized to int8 per block (MatMulNBits accuracy_level 4): ~1.5% measured."""
    w = _weights(1, tied, H)
    bits = {"int8": 8, "int4": 4}.get(precision)
    rng = np.random.default_rng(2)
    rows = [list(rng.integers(0, V, 7)), list(rng.integers(0, V, 3))]
    steps = [list(rng.integers(0, V, 2)) for _ in range(4)]
    kv = np.float16 if precision == "float16" else np.float32
    got = _run(_session(w, precision, tied), rows, steps, capacity=16, kv_dtype=kv)
    for r, row in enumerate(rows):
        full = row + [s[r] for s in steps]
        ref = _reference(w, full, tied, bits)
        scale = np.abs(ref).max()
        for t, logits in enumerate(got):
            expect = ref[len(row) - 1 + t]
            err = np.abs(logits[r] - expect).max() / scale
            assert err <= tol, (precision, r, t)


@needs_onnx
def test_cache_shared_in_place():
    """The present output is the bound past buffer itself: positions beyond the real tokens stay zero."""
    import onnxruntime as ort

    w = _weights(3)
    sess = _session(w, "float32", True)
    buf = np.zeros((1, KVH, 8, HD), np.float32)
    v = ort.OrtValue.ortvalue_from_numpy(buf)
    b = sess.io_binding()
    for i in range(L):
        for kv in ("key", "value"):
            t = v if (i, kv) == (0, "key") else ort.OrtValue.ortvalue_from_numpy(np.zeros((1, KVH, 8, HD), np.float32))
            b.bind_ortvalue_input(f"past_key_values.{i}.{kv}", t)
            b.bind_ortvalue_output(f"present.{i}.{kv}", t)
    b.bind_cpu_input("input_ids", np.array([[5, 6, 7]], np.int64))
    b.bind_cpu_input("seqlens_k", np.array([2], np.int32))
    b.bind_cpu_input("total_sequence_length", np.array(3, np.int32))
    b.bind_cpu_input("last_index", np.array([2], np.int64))
    b.bind_output("logits", "cpu")
    sess.run_with_iobinding(b)
    assert np.abs(buf[:, :, :3]).max() > 0 and np.all(buf[:, :, 3:] == 0)
