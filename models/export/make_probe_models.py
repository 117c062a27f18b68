"""Small hand-built ONNX graphs for execution-provider tests (no torch needed: `onnx`, and
`onnxruntime` to check the GroupQueryAttention reference against).

  unsupported_op.onnx  x [2,2] -> Relu -> Det -> y []: OpenVINO takes the Relu but not Det, so
                       with CPU fallback the graph is split across providers, and with
                       `session.disable_cpu_ep_fallback` the session must fail to load.

  weights.onnx         x [1,64] -> MatMul w1 [64,128] (initializer) -> Add b1 -> Tanh -> MatMul
                       w2 [128,16] (a Constant node) -> y [1,16]: weights stored inline.
  weights_external.onnx + weights_external.onnx.data
                       the same graph with every weight in the external data file, as exports
                       over 2 GB (and Optimum's `model.onnx_data`) store them.
  weights.{x,y}.npy    input and the numpy result.

  passthrough.onnx     x [2,3] -> outputs x (the graph input itself), y = Identity(x) and
                       z = Add(x, x): outputs ONNX Runtime may hand back in the input's own buffer.

  matmul_integer.onnx  a [2,3,40] uint8 and a_zero_point [] uint8 (run-time inputs, as
                       DynamicQuantizeLinear feeds them) -> three MatMulInteger forms with constant
                       weights: int8 B without b_zero_point (quantize_dynamic's int8), uint8 B
                       with a per-column b_zero_point (its uint8), and int8 B with a constant
                       a_zero_point and a scalar b_zero_point -> y_int8, y_uint8, y_both [2,3,24]
                       int32; and the uint8 B without a b_zero_point (centred on 0) and with a
                       scalar 128 (the shift to int8 exactly) -> y_uint8_no_zp, y_uint8_128.
                       matmul_integer.{a,a_zero_point,y_*}.npy: inputs and numpy's result;
                       y_{int8,both}.saturated.npy: what ONNX Runtime gives on x86 without VNNI.

  matmul_nbits.onnx    a [2,3,64] float -> four com.microsoft MatMulNBits forms with constant 4-bit
                       weights (N = 40): 32-wide blocks without zero points (what our quantize step
                       and onnxruntime-genai's builder write), 32-wide blocks with packed zero
                       points and a bias, one 64-wide block with zero points, and 16-wide blocks
                       (a form tract packs no Q4_0 from) -> y_sym, y_zp_bias, y_b64_zp, y_b16
                       [2,3,40] float. Scales are f16 values, as Q4_0 stores them.
                       matmul_nbits.{a,y_*}.npy: the input and numpy's result (float64, stored as float32).

  matmul_nbits_int8.onnx
                       a [2,3,192] float -> MatMulNBits with accuracy_level = 4 (int8 activations, as
                       onnxruntime-genai's builder and `quantize.py --accuracy-level 4` write it), N =
                       40: 32-wide blocks without and with zero points, 64-wide blocks with zero
                       points -> y_sym, y_zp, y_b64_zp [2,3,40] float. matmul_nbits_int8.{a,y_*}.npy:
                       the input and numpy's result with `a` quantised per block as ONNX Runtime's CPU
                       kernels do for that level (s = max|a| / 127, q = round-half-even(a * 127 /
                       max|a|), in float32), then summed in float64; y_*.float.npy: the float result,
                       for a CPU where a backend computes the level in float32. Scales are f16
                       values, so that tract's Q4_0 kernel (elsewhere) is exact too.

  matmul_bnb4.onnx     a [2,3,64] float -> three com.microsoft MatMulBnb4 forms (N = 40): NF4 in blocks
                       of 64 (what transformers.js's bnb4 mode writes), FP4 in blocks of 16, and NF4
                       in blocks of 128, each of which spans two rows of the weight -> y_nf4_b64,
                       y_fp4_b16, y_nf4_b128 [2,3,40] float. Codes and absmax are random; the
                       weight is decoded with bitsandbytes' code books (high nibble first, float32
                       products, as ONNX Runtime's CPU kernel decodes it). matmul_bnb4.{a,y_*}.npy:
                       the input and numpy's float64 result, which ONNX Runtime is checked against here.

  group_query_attention.onnx
                       com.microsoft GroupQueryAttention as onnxruntime-genai's builder writes it
                       (query, key and value packed, computed by a MatMul from x [1,S,32]; rotary
                       inside the op from cos_cache / sin_cache; scale given; the cache's head size
                       symbolic) -> y_packed, present_key_packed, present_value_packed; and with
                       separate q, k, v inputs, no rotary and no scale attribute -> y_separate,
                       present_{key,value}_separate. 4 query heads on 2 KV heads of 16. Cases, each
                       with its own past: prefill (no past, 5 tokens), decode (5 past, 1 token),
                       continue (5 past, 3 tokens). group_query_attention.{case}.{input,output}.npy:
                       inputs and numpy's result (float64 attention over the concatenated cache,
                       causal from the past's end), which ONNX Runtime is checked against here.

  python make_probe_models.py --out ../fixtures/probe
"""

import argparse
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
from onnx import TensorProto, helper


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Det", ["r"], ["y"])],
        "unsupported_op",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeinfer")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, args.out / "unsupported_op.onnx")
    x = np.array([[2.0, -1.0], [1.0, 3.0]], dtype=np.float32)
    np.save(args.out / "unsupported_op.x.npy", x)
    np.save(args.out / "unsupported_op.y.npy", np.array(np.linalg.det(np.maximum(x, 0)), dtype=np.float32))
    weights(args.out)
    passthrough(args.out)
    matmul_integer(args.out)
    matmul_nbits(args.out)
    matmul_nbits_int8(args.out)
    matmul_bnb4(args.out)
    group_query_attention(args.out)


def matmul_integer(out: Path) -> None:
    rng = np.random.default_rng(7)
    k, n = 40, 24
    a = rng.integers(0, 256, (2, 3, k), dtype=np.uint8)
    a_zp = np.array(131, dtype=np.uint8)
    b_int8 = rng.integers(-128, 128, (k, n), dtype=np.int8)
    b_uint8 = rng.integers(0, 256, (k, n), dtype=np.uint8)
    b_uint8_zp = rng.integers(0, 256, (n,), dtype=np.uint8)
    const_a_zp = np.array(17, dtype=np.uint8)
    b_both = rng.integers(-128, 128, (k, n), dtype=np.int8)
    b_both_zp = np.array(-5, dtype=np.int8)
    init = [
        onnx.numpy_helper.from_array(v, name)
        for name, v in [("b_int8", b_int8), ("b_uint8", b_uint8), ("b_uint8_zp", b_uint8_zp),
                        ("const_a_zp", const_a_zp), ("b_both", b_both), ("b_both_zp", b_both_zp),
                        ("b_128", np.array(128, dtype=np.uint8))]
    ]
    nodes = [
        helper.make_node("MatMulInteger", ["a", "b_int8", "a_zero_point"], ["y_int8"]),
        helper.make_node("MatMulInteger", ["a", "b_uint8", "a_zero_point", "b_uint8_zp"], ["y_uint8"]),
        helper.make_node("MatMulInteger", ["a", "b_both", "const_a_zp", "b_both_zp"], ["y_both"]),
        helper.make_node("MatMulInteger", ["a", "b_uint8", "a_zero_point"], ["y_uint8_no_zp"]),
        helper.make_node("MatMulInteger", ["a", "b_uint8", "a_zero_point", "b_128"], ["y_uint8_128"]),
    ]
    outputs = ("y_int8", "y_uint8", "y_both", "y_uint8_no_zp", "y_uint8_128")
    graph = helper.make_graph(
        nodes, "matmul_integer",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [2, 3, k]),
         helper.make_tensor_value_info("a_zero_point", TensorProto.UINT8, [])],
        [helper.make_tensor_value_info(y, TensorProto.INT32, [2, 3, n]) for y in outputs],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeinfer")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, out / "matmul_integer.onnx")
    a32 = a.astype(np.int32)
    np.save(out / "matmul_integer.a.npy", a)
    np.save(out / "matmul_integer.a_zero_point.npy", a_zp)
    np.save(out / "matmul_integer.y_int8.npy", (a32 - 131) @ b_int8.astype(np.int32))
    np.save(out / "matmul_integer.y_uint8.npy", (a32 - 131) @ (b_uint8.astype(np.int32) - b_uint8_zp.astype(np.int32)))
    np.save(out / "matmul_integer.y_both.npy", (a32 - 17) @ (b_both.astype(np.int32) + 5))
    np.save(out / "matmul_integer.y_uint8_no_zp.npy", (a32 - 131) @ b_uint8.astype(np.int32))
    np.save(out / "matmul_integer.y_uint8_128.npy", (a32 - 131) @ (b_uint8.astype(np.int32) - 128))
    # What ONNX Runtime computes for the int8-weight forms on an x86 CPU without VNNI: its u8 x s8
    # kernel multiplies raw codes with vpmaddubsw, which saturates each pair of products along K at
    # int16, then applies the zero points through row and column sums.
    np.save(out / "matmul_integer.y_int8.saturated.npy", saturated_u8s8(a, b_int8, 131, 0))
    np.save(out / "matmul_integer.y_both.saturated.npy", saturated_u8s8(a, b_both, 17, -5))


def saturated_u8s8(a: np.ndarray, b: np.ndarray, a_zp: int, b_zp: int) -> np.ndarray:
    """`(a - a_zp) @ (b - b_zp)` with `a @ b` summed as `vpmaddubsw` does: products of K-adjacent
    pairs added and clipped to int16, the pairs then summed in int32."""
    a64, b64 = a.astype(np.int64), b.astype(np.int64)
    k = a.shape[-1]
    raw = sum(np.clip(a64[..., i:i + 2] @ b64[i:i + 2], -32768, 32767) for i in range(0, k, 2))
    y = raw - b_zp * a64.sum(-1, keepdims=True) - a_zp * b64.sum(0) + k * a_zp * b_zp
    return y.astype(np.int32)


def nbits_weight(rng, name: str, n: int, k: int, block: int, zero_points: bool, init: list):
    """A random 4-bit `[n, k]` MatMulNBits weight in blocks of `block` (f16-valued scales, zero points
    random or the default 8): appends its initializers to `init`, returns the node's inputs and the
    dequantised weight (float64)."""
    blocks = k // block
    codes = rng.integers(0, 16, (n, blocks, block), dtype=np.uint8)
    scales = rng.uniform(0.005, 0.05, (n, blocks)).astype(np.float16).astype(np.float32)
    zeros = rng.integers(0, 16, (n, blocks), dtype=np.uint8) if zero_points else np.full((n, blocks), 8, np.uint8)
    packed = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
    inputs = ["a", f"{name}.b", f"{name}.scales"]
    init += [onnx.numpy_helper.from_array(packed, f"{name}.b"),
             onnx.numpy_helper.from_array(scales.reshape(-1), f"{name}.scales")]
    if zero_points:
        padded = np.concatenate([zeros, np.zeros((n, blocks % 2), np.uint8)], axis=1)
        zp = (padded[:, 0::2] | (padded[:, 1::2] << 4)).astype(np.uint8).reshape(-1)
        init.append(onnx.numpy_helper.from_array(zp, f"{name}.zero_points"))
        inputs.append(f"{name}.zero_points")
    return inputs, ((codes.astype(np.float64) - zeros[..., None]) * scales[..., None]).reshape(n, k)


def save_nbits_probe(out: Path, name: str, nodes: list, init: list, a: np.ndarray, outputs: list[str], n: int):
    """Writes `<name>.onnx` (input `a`, the MatMulNBits `nodes`, each output `[2, 3, n]` float) and
    `<name>.a.npy`."""
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, list(a.shape))],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [2, 3, n]) for y in outputs],
        init,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
        producer_name="edgeinfer")
    model.ir_version = 8
    onnx.save(model, out / f"{name}.onnx")
    np.save(out / f"{name}.a.npy", a)


def matmul_nbits(out: Path) -> None:
    rng = np.random.default_rng(11)
    k, n = 64, 40
    a = rng.standard_normal((2, 3, k)).astype(np.float32)
    init, nodes, results = [], [], {}
    for name, block, zero_points, bias in [
        ("y_sym", 32, False, False), ("y_zp_bias", 32, True, True),
        ("y_b64_zp", 64, True, False), ("y_b16", 16, False, False),
    ]:
        inputs, weight = nbits_weight(rng, name, n, k, block, zero_points, init)
        y = a.astype(np.float64) @ weight.T
        if bias:
            b = rng.standard_normal(n).astype(np.float32)
            init.append(onnx.numpy_helper.from_array(b, f"{name}.bias"))
            inputs += [""] * (5 - len(inputs)) + [f"{name}.bias"]
            y = y + b
        nodes.append(helper.make_node("MatMulNBits", inputs, [name], domain="com.microsoft",
                                      K=k, N=n, bits=4, block_size=block))
        results[name] = y
    save_nbits_probe(out, "matmul_nbits", nodes, init, a, list(results), n)
    for name, y in results.items():
        np.save(out / f"matmul_nbits.{name}.npy", y.astype(np.float32))


def matmul_nbits_int8(out: Path) -> None:
    rng = np.random.default_rng(12)
    k, n = 192, 40
    a = rng.standard_normal((2, 3, k)).astype(np.float32)
    init, nodes, results = [], [], {}
    for name, block, zero_points in [("y_sym", 32, False), ("y_zp", 32, True), ("y_b64_zp", 64, True)]:
        inputs, weight = nbits_weight(rng, name, n, k, block, zero_points, init)
        # A per block: s = max|a| / 127, q = round-half-even(a * (127 / max|a|)), in float32.
        a_blocks = a.reshape(2, 3, k // block, block)
        amax = np.abs(a_blocks).max(axis=-1, keepdims=True)
        inverse = np.where(amax != 0, np.float32(127) / np.where(amax != 0, amax, 1), 0).astype(np.float32)
        q = np.rint(a_blocks * inverse).astype(np.float64)  # numpy rounds half to even
        a_int8 = (q * (amax / np.float32(127)).astype(np.float64)).reshape(2, 3, k)
        nodes.append(helper.make_node("MatMulNBits", inputs, [name], domain="com.microsoft",
                                      K=k, N=n, bits=4, block_size=block, accuracy_level=4))
        results[name] = (a_int8 @ weight.T, a.astype(np.float64) @ weight.T)
    save_nbits_probe(out, "matmul_nbits_int8", nodes, init, a, list(results), n)
    for name, (y, y_float) in results.items():
        np.save(out / f"matmul_nbits_int8.{name}.npy", y.astype(np.float32))
        np.save(out / f"matmul_nbits_int8.{name}.float.npy", y_float.astype(np.float32))


# bitsandbytes' code books: NF4 (normal-float quantiles) and FP4 (sign, then 3 bits of exponent and
# mantissa, divided by its largest value 12), as float32 values.
NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], np.float32)
FP4 = np.array([0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0], np.float32) / np.float32(12)
FP4 = np.concatenate([FP4, -FP4])


def matmul_bnb4(out: Path) -> None:
    rng = np.random.default_rng(13)
    k, n = 64, 40
    a = rng.standard_normal((2, 3, k)).astype(np.float32)
    init, nodes, results = [], [], {}
    for name, table, quant_type, block in [("y_nf4_b64", NF4, 1, 64), ("y_fp4_b16", FP4, 0, 16),
                                           ("y_nf4_b128", NF4, 1, 128)]:
        codes = rng.integers(0, 16, n * k, dtype=np.uint8)
        absmax = rng.uniform(0.01, 0.1, n * k // block).astype(np.float32)
        packed = ((codes[0::2] << 4) | codes[1::2]).astype(np.uint8)
        weight = (table[codes] * np.repeat(absmax, block)).astype(np.float64).reshape(n, k)
        init += [onnx.numpy_helper.from_array(packed, f"{name}.b"), onnx.numpy_helper.from_array(absmax, f"{name}.absmax")]
        nodes.append(helper.make_node("MatMulBnb4", ["a", f"{name}.b", f"{name}.absmax"], [name],
                                      domain="com.microsoft", K=k, N=n, block_size=block, quant_type=quant_type))
        results[name] = a.astype(np.float64) @ weight.T
    save_nbits_probe(out, "matmul_bnb4", nodes, init, a, list(results), n)
    import onnxruntime as ort
    sess = ort.InferenceSession(str(out / "matmul_bnb4.onnx"), providers=["CPUExecutionProvider"])
    for name, got in zip(results, sess.run(list(results), {"a": a})):
        np.testing.assert_allclose(got, results[name], rtol=1e-5, atol=1e-5, err_msg=f"ONNX Runtime's {name}")
    for name, y in results.items():
        np.save(out / f"matmul_bnb4.{name}.npy", y.astype(np.float32))


def group_query_attention(out: Path) -> None:
    rng = np.random.default_rng(21)
    heads, kv_heads, head, width, max_positions = 4, 2, 16, 32, 16
    packed = (heads + 2 * kv_heads) * head
    w = (rng.standard_normal((width, packed)) / 4).astype(np.float32)
    angles = np.arange(max_positions)[:, None] * (10000.0 ** (-np.arange(head // 2) * 2 / head))[None, :]
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    scale = 0.3
    int32 = TensorProto.INT32
    gqa = dict(domain="com.microsoft", num_heads=heads, kv_num_heads=kv_heads)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["qkv"]),
        helper.make_node(
            "GroupQueryAttention",
            ["qkv", "", "", "past_key_packed", "past_value_packed", "seqlens_k", "total_sequence_length",
             "cos_cache", "sin_cache"],
            ["y_packed", "present_key_packed", "present_value_packed"],
            do_rotary=1, rotary_interleaved=0, scale=scale, local_window_size=-1, **gqa),
        helper.make_node(
            "GroupQueryAttention",
            ["q", "k", "v", "past_key_separate", "past_value_separate", "seqlens_k", "total_sequence_length"],
            ["y_separate", "present_key_separate", "present_value_separate"], **gqa),
    ]
    f = TensorProto.FLOAT
    cache = lambda name, dim: helper.make_tensor_value_info(name, f, [1, kv_heads, "past", dim])
    graph = helper.make_graph(
        nodes,
        "group_query_attention",
        [
            helper.make_tensor_value_info("x", f, [1, "seq", width]),
            helper.make_tensor_value_info("q", f, [1, "seq", heads * head]),
            helper.make_tensor_value_info("k", f, [1, "seq", kv_heads * head]),
            helper.make_tensor_value_info("v", f, [1, "seq", kv_heads * head]),
            cache("past_key_packed", "kv_cache_dim"),
            cache("past_value_packed", "kv_cache_dim"),
            cache("past_key_separate", head),
            cache("past_value_separate", head),
            helper.make_tensor_value_info("seqlens_k", int32, [1]),
            helper.make_tensor_value_info("total_sequence_length", int32, []),
        ],
        [helper.make_tensor_value_info(n, f, shape) for n, shape in [
            ("y_packed", [1, "seq", heads * head]),
            ("present_key_packed", [1, kv_heads, "total", "kv_cache_dim"]),
            ("present_value_packed", [1, kv_heads, "total", "kv_cache_dim"]),
            ("y_separate", [1, "seq", heads * head]),
            ("present_key_separate", [1, kv_heads, "total", head]),
            ("present_value_separate", [1, kv_heads, "total", head])]],
        initializer=[onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(cos, "cos_cache"),
                     onnx.numpy_helper.from_array(sin, "sin_cache")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                              producer_name="edgeinfer")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, out / "group_query_attention.onnx")

    def rotate(x, positions):  # x [S, H, head]
        c = np.concatenate([cos[positions], cos[positions]], -1)[:, None, :]
        s = np.concatenate([sin[positions], sin[positions]], -1)[:, None, :]
        half = np.concatenate([-x[..., head // 2:], x[..., :head // 2]], -1)
        return x * c + half * s

    def reference(q, k, v, past_k, past_v, rotary, scale):
        s, p = q.shape[1], past_k.shape[2]
        q = q.reshape(s, heads, head).astype(np.float64)
        k = k.reshape(s, kv_heads, head).astype(np.float64)
        v = v.reshape(s, kv_heads, head).astype(np.float64)
        if rotary:
            q, k = rotate(q, p + np.arange(s)), rotate(k, p + np.arange(s))
        keys = np.concatenate([past_k[0], k.transpose(1, 0, 2)], axis=1)  # [kv, P + S, head]
        values = np.concatenate([past_v[0], v.transpose(1, 0, 2)], axis=1)
        y = np.zeros((s, heads, head))
        for h in range(heads):
            scores = q[:, h] @ keys[h // (heads // kv_heads)].T * scale  # [S, P + S]
            scores[np.arange(p + s)[None, :] > (p + np.arange(s))[:, None]] = -np.inf
            weights = np.exp(scores - scores.max(-1, keepdims=True))
            y[:, h] = (weights / weights.sum(-1, keepdims=True)) @ values[h // (heads // kv_heads)]
        return y.reshape(1, s, heads * head), keys[None], values[None]

    import onnxruntime as ort
    session = ort.InferenceSession(str(out / "group_query_attention.onnx"), providers=["CPUExecutionProvider"])
    for case, past, steps in [("prefill", 0, 5), ("decode", 5, 1), ("continue", 5, 3)]:
        feeds = {
            "x": rng.standard_normal((1, steps, width)).astype(np.float32),
            "q": rng.standard_normal((1, steps, heads * head)).astype(np.float32),
            "k": rng.standard_normal((1, steps, kv_heads * head)).astype(np.float32),
            "v": rng.standard_normal((1, steps, kv_heads * head)).astype(np.float32),
            "seqlens_k": np.array([past + steps - 1], np.int32),
            "total_sequence_length": np.array(past + steps, np.int32),
        }
        for form in ("packed", "separate"):
            for side in ("key", "value"):
                feeds[f"past_{side}_{form}"] = rng.standard_normal((1, kv_heads, past, head)).astype(np.float32)
        qkv = (feeds["x"].astype(np.float64) @ w.astype(np.float64)).astype(np.float32)
        q_packed, k_packed, v_packed = np.split(qkv, [heads * head, (heads + kv_heads) * head], axis=-1)
        want = {}
        for form, (q, k, v), rotary, s in [("packed", (q_packed, k_packed, v_packed), True, scale),
                                           ("separate", (feeds["q"], feeds["k"], feeds["v"]), False, head ** -0.5)]:
            y, keys, values = reference(q, k, v, feeds[f"past_key_{form}"], feeds[f"past_value_{form}"], rotary, s)
            want.update({f"y_{form}": y, f"present_key_{form}": keys, f"present_value_{form}": values})
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        for name, value in want.items():
            error = np.abs(got[name] - value).max()
            assert error < 1e-5, f"ONNX Runtime's {name} ({case}) is {error} from numpy's"
        for name, value in {**feeds, **want}.items():
            np.save(out / f"group_query_attention.{case}.{name}.npy", np.asarray(value).astype(value.dtype if value.dtype != np.float64 else np.float32))


def passthrough(out: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Add", ["x", "x"], ["z"])],
        "passthrough",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in ("x", "y", "z")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeinfer")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, out / "passthrough.onnx")


def weights(out: Path) -> None:
    rng = np.random.default_rng(7)
    w1 = (rng.standard_normal((64, 128)) / 8).astype(np.float32)
    b1 = (rng.standard_normal(128) / 8).astype(np.float32)
    w2 = (rng.standard_normal((128, 16)) / 8).astype(np.float32)
    x = rng.standard_normal((1, 64)).astype(np.float32)

    def model():
        graph = helper.make_graph(
            [
                helper.make_node("Constant", [], ["w2"], value=onnx.numpy_helper.from_array(w2, "w2")),
                helper.make_node("MatMul", ["x", "w1"], ["h"]),
                helper.make_node("Add", ["h", "b1"], ["hb"]),
                helper.make_node("Tanh", ["hb"], ["t"]),
                helper.make_node("MatMul", ["t", "w2"], ["y"]),
            ],
            "weights",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
            initializer=[onnx.numpy_helper.from_array(w1, "w1"), onnx.numpy_helper.from_array(b1, "b1")],
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeinfer")
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m

    onnx.save(model(), out / "weights.onnx")
    # onnx appends to an existing external data file: start from none, so reruns are identical.
    (out / "weights_external.onnx.data").unlink(missing_ok=True)
    onnx.save(
        model(),
        out / "weights_external.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights_external.onnx.data",
        size_threshold=0,
    )
    np.save(out / "weights.x.npy", x)
    np.save(out / "weights.y.npy", (np.tanh(x @ w1 + b1) @ w2).astype(np.float32))


if __name__ == "__main__":
    main()
