//! Rewrites of the ONNX graph before tract parses it, for forms that tract 0.23 gets wrong.
//!
//! **Quantised activations into a reduction.** tract folds a chain
//! `DequantizeLinear → f → QuantizeLinear` whose middle ops it takes for element-wise into a
//! 256-entry lookup table (`DequantizeLinearF32::declutter`). Its test is the ops' axes mapping,
//! and Softmax (like the other normalisations over an axis) maps every axis to itself, so
//! `DequantizeLinear → Softmax → QuantizeLinear`, which every statically quantised (QDQ)
//! attention block has, becomes a table computing a softmax over the 256 possible input codes.
//! The attention probabilities come out wrong by up to 1.0 (DINOv2-S QDQ: last hidden state off
//! by 3.4 against ONNX Runtime). Spelling out the `DequantizeLinear` that feeds such an op as
//! `(Cast(x) - Cast(zero_point)) * scale` gives the same values and leaves nothing to fold.
//!
//! **A 4-bit `MatMulNBits` fed by a `Reshape` that merges axes.** tract keeps a MatMulNBits
//! weight as a block-quantised (Q4_0) constant, and its EinSum declutter
//! (`declutter_reshape_folding_input_axis`) folds a merging reshape of the activations into the
//! matmul by reshaping every input that shares the axis, the packed weight included, which
//! scrambles its blocks. A LLaMA's `o_proj` (heads × head_dim merged into the hidden size) is
//! that case: the tiny LLaMA's q4 logits came out off by 12.7 against ONNX Runtime. An
//! `EdgeinferBarrier` (`tract_barrier`: an identity tract cannot look through) goes between
//! such a Reshape and the MatMulNBits, so the reshape stays where it is and the weight keeps
//! tract's int4 kernels. (Until 2026-12-01 the weight was dequantised to f32 instead: about a
//! tenth of a LLaMA's weights held and read at 8 times their size.)
//!
//! **Attention scores against a KV cache.** A `MatMul` whose second operand comes from a
//! `past_key*` graph input through data movement only (the `Q · Kᵀ` of an Optimum-layout
//! decoder) becomes an `EdgeinferCacheMatMul` (`tract_cache_matmul`), which tract tiles along
//! the cache's positions instead of the few query rows of a decode step. This one is about speed,
//! not correctness: 8 of 44 ms of a LLaMA-135M decode step at 256 positions.
//!
//! **Statically quantised (QDQ) matmuls.** A `MatMul` of `DequantizeLinear(x_q)` (a scalar
//! scale and zero point) by `DequantizeLinear(w_q)` (a constant 2-D int8 or uint8 weight, per
//! tensor or per output column, symmetric) is what `quantize_static` writes for every linear layer. tract
//! dequantises both and multiplies in float32: a DINOv2-S QDQ run paid the float matmuls and the
//! quantisation around them, 0.62-0.72× its fp32 speed. It becomes
//! `MatMulInteger(x_q, w_q, x_zero_point, w_zero_point) → Cast → Mul(x_scale · w_scale)`, the
//! same value (the integer sums are exact), which `tract_matmul_integer` wires to tract's int8
//! kernels as for a dynamically quantised graph; `DequantizeLinear` nodes left without a reader
//! are dropped, so the weight is never dequantised at load.
//!
//! (`DynamicQuantizeLinear`, slow in tract 0.23, is replaced at parse time, and `QuantizeLinear`
//! after declutter: see `tract_quantize`.)

use std::collections::{HashMap, HashSet};

use tract_onnx::pb;

/// Ops that only move or select data: a tensor computed through them is still the cache.
const DATA_MOVEMENT: [&str; 10] =
    ["Transpose", "Concat", "Reshape", "Expand", "Unsqueeze", "Squeeze", "Identity", "Slice", "Tile", "Cast"];

/// Ops that reduce over an axis while keeping the shape: never element-wise.
const AXIS_REDUCING: [&str; 8] = [
    "Softmax",
    "LogSoftmax",
    "Hardmax",
    "LayerNormalization",
    "SimplifiedLayerNormalization",
    "InstanceNormalization",
    "LpNormalization",
    "MeanVarianceNormalization",
];

/// ONNX `TensorProto.DataType` FLOAT.
const FLOAT: i64 = 1;
/// ONNX `TensorProto.DataType` UINT8 and INT8.
const UINT8: i32 = 2;
const INT8: i32 = 3;
/// ONNX `AttributeProto.AttributeType` INT.
const ATTR_INT: i32 = 2;

/// Applies the rewrites above to `graph` (whose default-domain opset is `opset`), after
/// `tract_gqa` and `tract_gather_q4` have written out ONNX Runtime's attention and 4-bit embedding
/// nodes in standard ops; returns how many nodes were rewritten.
pub(crate) fn rewrite(graph: &mut pb::GraphProto, opset: i64) -> usize {
    // First: the written-out attention has the Reshape → MatMulNBits and cache matmul forms below.
    crate::tract_gqa::spell_out(graph, opset)
        + crate::tract_gather_q4::spell_out(graph, opset)
        + spell_out_dequantize_before_reductions(graph)
        + integer_qdq_matmuls(graph)
        + separate_nbits_from_reshape(graph)
        + route_cache_matmuls(graph)
}

fn integer_qdq_matmuls(graph: &mut pb::GraphProto) -> usize {
    let dequantized: HashMap<String, pb::NodeProto> = graph
        .node
        .iter()
        .filter(|n| is_onnx_op(n, "DequantizeLinear") && n.output.len() == 1)
        .map(|n| (n.output[0].clone(), n.clone()))
        .collect();
    if dequantized.is_empty() {
        return 0;
    }
    let constants: HashMap<String, (Vec<i64>, i32)> =
        graph.initializer.iter().map(|t| (t.name.clone(), (t.dims.clone(), t.data_type))).collect();
    let weight_zero_points: HashSet<&str> =
        dequantized.values().filter_map(|n| n.input.get(2)).map(String::as_str).collect();
    let zero_points: HashMap<String, Vec<u8>> = graph
        .initializer
        .iter()
        .filter(|t| weight_zero_points.contains(t.name.as_str()))
        .filter_map(|t| Some((t.name.clone(), inline_bytes(t)?)))
        .collect();
    let rewritten = replace_nodes(graph, |_, node, _| {
        if !is_onnx_op(node, "MatMul") || node.input.len() != 2 || node.output.len() != 1 {
            return None;
        }
        let activations = dequantized.get(&node.input[0])?;
        let weight = dequantized.get(&node.input[1])?;
        let activations_zero_point = quantized_activations(activations, &constants)?;
        let weight_zero_point = quantized_weight(weight, &constants, &zero_points)?;
        Some(integer_matmul(node, activations, weight, activations_zero_point, weight_zero_point))
    });
    if rewritten > 0 {
        drop_unread(graph, &dequantized);
    }
    rewritten
}

/// The zero point of `DequantizeLinear(x_q, scale, zero_point)` with a scalar constant scale and
/// a scalar constant u8 or i8 zero point (which says what `x_q` is).
fn quantized_activations<'a>(
    dequantize: &'a pb::NodeProto,
    constants: &HashMap<String, (Vec<i64>, i32)>,
) -> Option<&'a str> {
    let [_, scale, zero_point] = dequantize.input.as_slice() else { return None };
    let scalar = |name: &str| constants.get(name).is_some_and(|(dims, _)| dims.iter().product::<i64>() == 1);
    let byte = constants.get(zero_point).is_some_and(|(_, dt)| *dt == UINT8 || *dt == INT8);
    (scalar(scale) && scalar(zero_point) && byte).then_some(zero_point.as_str())
}

/// For `DequantizeLinear(w_q, scale[, zero_point])` of a constant 2-D u8 or i8 weight, quantised
/// per tensor or per output column (axis 1): its zero point, `Some("")` when there is none.
/// Only the symmetric forms `tract_matmul_integer` wires itself qualify (an i8 weight without a
/// zero point or with zeros, a u8 one with 128s, read from the graph file): any other weight
/// zero point would take tract's own `MatMulInteger`, which is not checked per column.
fn quantized_weight<'a>(
    dequantize: &'a pb::NodeProto,
    constants: &HashMap<String, (Vec<i64>, i32)>,
    zero_points: &HashMap<String, Vec<u8>>,
) -> Option<&'a str> {
    let weight = dequantize.input.first()?;
    let scale = dequantize.input.get(1)?;
    let zero_point = dequantize.input.get(2).map(String::as_str).unwrap_or("");
    let (dims, dt) = constants.get(weight)?;
    let [_, columns] = dims.as_slice() else { return None };
    if *dt != UINT8 && *dt != INT8 {
        return None;
    }
    let int_attribute = |name: &str| dequantize.attribute.iter().find(|a| a.name == name).map(|a| a.i);
    if int_attribute("block_size").is_some_and(|b| b != 0) {
        return None;
    }
    let per_column = matches!(int_attribute("axis").unwrap_or(1), 1 | -1);
    let scale_dims = &constants.get(scale)?.0;
    let per_tensor = scale_dims.iter().product::<i64>() == 1;
    let per_column = per_column && scale_dims.as_slice() == [*columns];
    if !(per_tensor || per_column) {
        return None;
    }
    let neutral = if *dt == UINT8 { 128 } else { 0 };
    if zero_point.is_empty() {
        return (neutral == 0).then_some(zero_point);
    }
    let (zp_dims, zp_dt) = constants.get(zero_point)?;
    let values = zero_points.get(zero_point)?;
    let count = zp_dims.iter().product::<i64>();
    let symmetric = values.len() as i64 == count && values.iter().all(|&v| v == neutral);
    (zp_dt == dt && count == scale_dims.iter().product::<i64>() && symmetric).then_some(zero_point)
}

/// The bytes of a small u8 or i8 initializer stored in the graph file (not external data).
fn inline_bytes(tensor: &pb::TensorProto) -> Option<Vec<u8>> {
    if (tensor.data_type != UINT8 && tensor.data_type != INT8) || tensor.dims.iter().product::<i64>() > 1 << 16 {
        return None;
    }
    if !tensor.raw_data.is_empty() {
        return Some(tensor.raw_data.to_vec());
    }
    // Without raw data, 8-bit values are stored one per int32 (an external tensor has neither).
    let bytes: Vec<u8> = tensor.int32_data.iter().map(|&v| v as u8).collect();
    (bytes.len() as i64 == tensor.dims.iter().product::<i64>()).then_some(bytes)
}

/// `matmul` as `MatMulInteger → Cast → Mul(x_scale · w_scale)`, writing the same output.
fn integer_matmul(
    matmul: &pb::NodeProto,
    activations: &pb::NodeProto,
    weight: &pb::NodeProto,
    activations_zero_point: &str,
    weight_zero_point: &str,
) -> Vec<pb::NodeProto> {
    let output = matmul.output[0].clone();
    let prefix = if matmul.name.is_empty() { output.clone() } else { matmul.name.clone() };
    let node = |op: &str, suffix: &str, input: Vec<String>, output: String| pb::NodeProto {
        name: format!("{prefix}.edgeinfer_{suffix}"),
        op_type: op.into(),
        input,
        output: vec![output],
        ..Default::default()
    };
    let (sums, sums_f32, scale) =
        (format!("{prefix}.edgeinfer_i32"), format!("{prefix}.edgeinfer_f32"), format!("{prefix}.edgeinfer_scale"));
    let mut integer_inputs =
        vec![activations.input[0].clone(), weight.input[0].clone(), activations_zero_point.to_string()];
    if !weight_zero_point.is_empty() {
        integer_inputs.push(weight_zero_point.to_string());
    }
    let mut cast = node("Cast", "cast", vec![sums.clone()], sums_f32.clone());
    cast.attribute = vec![pb::AttributeProto { name: "to".into(), r#type: ATTR_INT, i: FLOAT, ..Default::default() }];
    vec![
        node("MatMulInteger", "matmul_integer", integer_inputs, sums),
        cast,
        node("Mul", "scales", vec![activations.input[1].clone(), weight.input[1].clone()], scale.clone()),
        node("Mul", "rescale", vec![sums_f32, scale], output),
    ]
}

/// Removes the nodes of `candidates` (by output) that nothing reads any more (the graph's
/// outputs and the nodes of its subgraphs, which may read the outer scope, included).
fn drop_unread(graph: &mut pb::GraphProto, candidates: &HashMap<String, pb::NodeProto>) {
    let mut read: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    let mut pending: Vec<&pb::NodeProto> = graph.node.iter().collect();
    while let Some(node) = pending.pop() {
        read.extend(node.input.iter().cloned());
        for attribute in &node.attribute {
            for subgraph in attribute.g.iter().chain(&attribute.graphs) {
                read.extend(subgraph.output.iter().map(|o| o.name.clone()));
                pending.extend(&subgraph.node);
            }
        }
    }
    graph
        .node
        .retain(|n| !(n.output.len() == 1 && candidates.contains_key(&n.output[0]) && !read.contains(&n.output[0])));
}

fn route_cache_matmuls(graph: &mut pb::GraphProto) -> usize {
    let past_keys: HashSet<&str> =
        graph.input.iter().map(|i| i.name.as_str()).filter(|name| is_past_key(name)).collect();
    if past_keys.is_empty() {
        return 0;
    }
    let producers: HashMap<String, usize> =
        graph.node.iter().enumerate().flat_map(|(i, n)| n.output.iter().map(move |o| (o.clone(), i))).collect();
    let routed: Vec<usize> = (0..graph.node.len())
        .filter(|&i| {
            let node = &graph.node[i];
            is_onnx_op(node, "MatMul")
                && node.input.len() == 2
                && feeds_from_past_keys(graph, &producers, &past_keys, &node.input[1])
        })
        .collect();
    for &i in &routed {
        let node = &mut graph.node[i];
        node.op_type = crate::tract_cache_matmul::OP_TYPE.into();
        node.domain = crate::tract_barrier::DOMAIN.into();
    }
    routed.len()
}

/// A graph input holding past keys: `past_key_values.3.key`, `past_key.3`, not
/// `past_key_values.3.value`.
fn is_past_key(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace("past_key_values", "past");
    name.contains("past") && name.contains("key")
}

/// Whether `tensor` is computed from a past-key input through [`DATA_MOVEMENT`] ops alone (their
/// data operands: every input of a `Concat`, the first of the others).
fn feeds_from_past_keys(
    graph: &pb::GraphProto,
    producers: &HashMap<String, usize>,
    past_keys: &HashSet<&str>,
    tensor: &str,
) -> bool {
    let mut pending = vec![tensor];
    let mut seen = HashSet::new();
    while let Some(tensor) = pending.pop() {
        if past_keys.contains(tensor) {
            return true;
        }
        if !seen.insert(tensor) {
            continue;
        }
        let Some(node) = producers.get(tensor).map(|&i| &graph.node[i]) else { continue };
        if !DATA_MOVEMENT.iter().any(|op| is_onnx_op(node, op)) {
            continue;
        }
        let data = if node.op_type == "Concat" { &node.input[..] } else { &node.input[..node.input.len().min(1)] };
        pending.extend(data.iter().map(String::as_str).filter(|t| !t.is_empty()));
    }
    false
}

/// Puts `replace`'s answer (the nodes computing the same outputs, in order) in the place of each
/// node it answers for (it sees the graph, the node and how many nodes it replaced before);
/// returns how many it replaced.
pub(crate) fn replace_nodes(
    graph: &mut pb::GraphProto,
    mut replace: impl FnMut(&pb::GraphProto, &pb::NodeProto, usize) -> Option<Vec<pb::NodeProto>>,
) -> usize {
    let mut replaced = 0;
    let mut i = 0;
    while i < graph.node.len() {
        let Some(nodes) = replace(graph, &graph.node[i], replaced) else {
            i += 1;
            continue;
        };
        let added = nodes.len();
        graph.node.splice(i..=i, nodes);
        i += added;
        replaced += 1;
    }
    replaced
}

/// Whether `node` is the standard-domain op `op_type`.
pub(crate) fn is_onnx_op(node: &pb::NodeProto, op_type: &str) -> bool {
    node.op_type == op_type && (node.domain.is_empty() || node.domain == "ai.onnx")
}

fn separate_nbits_from_reshape(graph: &mut pb::GraphProto) -> usize {
    replace_nodes(graph, |graph, node, index| {
        let activations = node.input.first().filter(|a| !a.is_empty())?;
        let after_reshape = node.op_type == "MatMulNBits"
            && node.domain == "com.microsoft"
            && graph.node.iter().any(|p| is_onnx_op(p, "Reshape") && p.output.contains(activations));
        if !after_reshape {
            return None;
        }
        let separated = format!("{activations}.edgeinfer_barrier{index}");
        let barrier = pb::NodeProto {
            name: separated.clone(),
            op_type: crate::tract_barrier::OP_TYPE.into(),
            domain: crate::tract_barrier::DOMAIN.into(),
            input: vec![activations.clone()],
            output: vec![separated.clone()],
            ..Default::default()
        };
        let mut matmul = node.clone();
        matmul.input[0] = separated;
        Some(vec![barrier, matmul])
    })
}

fn spell_out_dequantize_before_reductions(graph: &mut pb::GraphProto) -> usize {
    let consumers = |graph: &pb::GraphProto, tensor: &str| -> Vec<String> {
        graph.node.iter().filter(|n| n.input.iter().any(|i| i == tensor)).map(|n| n.op_type.clone()).collect()
    };
    replace_nodes(graph, |graph, node, _| {
        let feeds_reduction = is_onnx_op(node, "DequantizeLinear")
            && node.output.len() == 1
            && matches!(consumers(graph, &node.output[0]).as_slice(), [op] if AXIS_REDUCING.contains(&op.as_str()));
        let scalar_params = node.input.iter().skip(1).all(|p| p.is_empty() || is_scalar(graph, p));
        (feeds_reduction && scalar_params).then(|| spelled_out(node))
    })
}

/// Whether `name` is a constant (initializer) holding a single value.
fn is_scalar(graph: &pb::GraphProto, name: &str) -> bool {
    graph.initializer.iter().any(|t| t.name == name && t.dims.iter().product::<i64>() == 1)
}

/// `DequantizeLinear(x, scale, zero_point)` as `Mul(Sub(Cast(x), Cast(zero_point)), scale)`
/// (without the `Sub` when there is no zero point), writing the same output.
fn spelled_out(node: &pb::NodeProto) -> Vec<pb::NodeProto> {
    let prefix = if node.name.is_empty() { node.output[0].clone() } else { node.name.clone() };
    let output = node.output[0].clone();
    let x = node.input.first().cloned().unwrap_or_default();
    let scale = node.input.get(1).cloned().unwrap_or_default();
    let zero_point = node.input.get(2).filter(|z| !z.is_empty()).cloned();
    let cast = |input: &str, out: &str| pb::NodeProto {
        name: format!("{prefix}.edgeinfer_cast_{out}"),
        op_type: "Cast".into(),
        input: vec![input.to_string()],
        output: vec![out.to_string()],
        attribute: vec![pb::AttributeProto { name: "to".into(), r#type: ATTR_INT, i: FLOAT, ..Default::default() }],
        ..Default::default()
    };
    let binary = |op: &str, a: &str, b: &str, out: &str| pb::NodeProto {
        name: format!("{prefix}.edgeinfer_{}", op.to_ascii_lowercase()),
        op_type: op.into(),
        input: vec![a.to_string(), b.to_string()],
        output: vec![out.to_string()],
        ..Default::default()
    };
    let xf = format!("{prefix}.edgeinfer_x");
    let mut nodes = vec![cast(&x, &xf)];
    let centred = match zero_point {
        Some(zp) => {
            let zf = format!("{prefix}.edgeinfer_zero_point");
            let centred = format!("{prefix}.edgeinfer_centred");
            nodes.push(cast(&zp, &zf));
            nodes.push(binary("Sub", &xf, &zf, &centred));
            centred
        }
        None => xf,
    };
    nodes.push(binary("Mul", &centred, &scale, &output));
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
        pb::NodeProto {
            name: output.into(),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    fn scalar(name: &str) -> pb::TensorProto {
        pb::TensorProto { name: name.into(), dims: vec![], data_type: 1, float_data: vec![0.5], ..Default::default() }
    }

    /// An initializer of a shape and an element type, without data unless the caller adds some.
    fn constant(name: &str, dims: &[i64], data_type: i32) -> pb::TensorProto {
        pb::TensorProto { name: name.into(), dims: dims.to_vec(), data_type, ..Default::default() }
    }

    #[test]
    fn only_a_dequantize_feeding_a_reduction_is_spelled_out() {
        let mut graph = pb::GraphProto {
            node: vec![
                node("DequantizeLinear", &["q", "s", "z"], "d"),
                node("Softmax", &["d"], "p"),
                node("DequantizeLinear", &["q2", "s", "z"], "d2"),
                node("Relu", &["d2"], "r"),
            ],
            initializer: vec![scalar("s"), scalar("z")],
            ..Default::default()
        };
        assert_eq!(rewrite(&mut graph, 17), 1);
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Cast", "Cast", "Sub", "Mul", "Softmax", "DequantizeLinear", "Relu"]);
        assert_eq!(graph.node[3].output, ["d"]);
        assert_eq!(graph.node[3].input[1], "s");
    }

    #[test]
    fn a_qdq_matmul_by_a_constant_weight_becomes_an_integer_matmul() {
        let per_column = |mut n: pb::NodeProto| {
            n.attribute.push(pb::AttributeProto { name: "axis".into(), r#type: ATTR_INT, i: 1, ..Default::default() });
            n
        };
        let mut graph = pb::GraphProto {
            node: vec![
                node("QuantizeLinear", &["x", "xs", "xz"], "xq"),
                node("DequantizeLinear", &["xq", "xs", "xz"], "xd"),
                per_column(node("DequantizeLinear", &["w", "ws", "wz"], "wd")),
                node("MatMul", &["xd", "wd"], "y"),
                // Per-tensor weight without a zero point, read by two matmuls.
                node("DequantizeLinear", &["w2", "s"], "w2d"),
                node("MatMul", &["xd", "w2d"], "y2"),
                node("MatMul", &["xd", "w2d"], "y3"),
                // Both operands computed at run time (attention): stays a float matmul.
                node("MatMul", &["xd", "xd"], "scores"),
                // Scales along the rows (axis 0) cannot be factored out of the sums.
                node("DequantizeLinear", &["w3", "ws3"], "w3d"),
                node("MatMul", &["xd", "w3d"], "y4"),
                // An asymmetric weight, and one whose zero points are not in the graph file.
                per_column(node("DequantizeLinear", &["w", "ws", "wz_asymmetric"], "w4d")),
                node("MatMul", &["xd", "w4d"], "y5"),
                per_column(node("DequantizeLinear", &["w", "ws", "wz_external"], "w5d")),
                node("MatMul", &["xd", "w5d"], "y6"),
            ],
            initializer: vec![
                constant("xs", &[], FLOAT as i32),
                constant("xz", &[], UINT8),
                constant("w", &[8, 4], INT8),
                constant("ws", &[4], FLOAT as i32),
                pb::TensorProto { raw_data: vec![0u8; 4], ..constant("wz", &[4], INT8) },
                constant("w2", &[8, 4], INT8),
                constant("s", &[], FLOAT as i32),
                constant("w3", &[8, 4], INT8),
                constant("ws3", &[8], FLOAT as i32),
                pb::TensorProto { raw_data: vec![0, 0, 3, 0], ..constant("wz_asymmetric", &[4], INT8) },
                constant("wz_external", &[4], INT8),
            ],
            ..Default::default()
        };
        assert_eq!(integer_qdq_matmuls(&mut graph), 3);
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        let integer = ["MatMulInteger", "Cast", "Mul", "Mul"];
        let expected: Vec<&str> = ["QuantizeLinear", "DequantizeLinear"]
            .into_iter()
            .chain(integer)
            .chain(integer)
            .chain(integer)
            .chain(["MatMul", "DequantizeLinear", "MatMul", "DequantizeLinear", "MatMul", "DequantizeLinear", "MatMul"])
            .collect();
        // The weight dequantisations now unread are gone; the activations' stays for `scores`.
        assert_eq!(ops, expected);
        assert_eq!(graph.node[2].input, ["xq", "w", "xz", "wz"]);
        assert_eq!(graph.node[4].input, ["xs", "ws"]);
        assert_eq!(graph.node[5].input, [graph.node[3].output[0].as_str(), graph.node[4].output[0].as_str()]);
        assert_eq!(graph.node[5].output, ["y"]);
        assert_eq!(graph.node[6].input, ["xq", "w2", "xz"]);
        assert_eq!(graph.node[13].output, ["y3"]);
    }

    #[test]
    fn a_dequantized_weight_a_subgraph_reads_is_kept() {
        let branch = pb::GraphProto { node: vec![node("Relu", &["wd"], "r")], ..Default::default() };
        let mut conditional = node("If", &["c"], "branch_out");
        conditional.attribute.push(pb::AttributeProto {
            name: "then_branch".into(),
            g: Some(branch),
            ..Default::default()
        });
        let mut graph = pb::GraphProto {
            node: vec![
                node("DequantizeLinear", &["xq", "xs", "xz"], "xd"),
                node("DequantizeLinear", &["w", "s"], "wd"),
                node("MatMul", &["xd", "wd"], "y"),
                conditional,
            ],
            initializer: vec![
                constant("xs", &[], FLOAT as i32),
                constant("xz", &[], INT8),
                constant("w", &[8, 4], INT8),
                constant("s", &[], FLOAT as i32),
            ],
            ..Default::default()
        };
        assert_eq!(integer_qdq_matmuls(&mut graph), 1);
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["DequantizeLinear", "MatMulInteger", "Cast", "Mul", "Mul", "If"]);
        assert_eq!(graph.node[0].output, ["wd"]);
    }

    #[test]
    fn only_a_matmul_against_the_past_keys_is_routed() {
        let input = |name: &str| pb::ValueInfoProto { name: name.into(), ..Default::default() };
        let mut graph = pb::GraphProto {
            input: ["q", "past_key_values.0.key", "past_key_values.0.value", "k", "v"].map(input).to_vec(),
            node: vec![
                node("Concat", &["past_key_values.0.key", "k"], "present.0.key"),
                node("Transpose", &["present.0.key"], "kt"),
                node("MatMul", &["q", "kt"], "scores"),
                node("Softmax", &["scores"], "p"),
                node("Concat", &["past_key_values.0.value", "v"], "present.0.value"),
                node("MatMul", &["p", "present.0.value"], "out"),
                // Computed from the keys, not moved: not the cache.
                node("Relu", &["kt"], "relu"),
                node("MatMul", &["q", "relu"], "other"),
            ],
            ..Default::default()
        };
        assert_eq!(rewrite(&mut graph, 17), 1);
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        let routed = crate::tract_cache_matmul::OP_TYPE;
        assert_eq!(ops, ["Concat", "Transpose", routed, "Softmax", "Concat", "MatMul", "Relu", "MatMul"]);
        assert_eq!(graph.node[2].input, ["q", "kt"]);
        assert!(is_past_key("past_key.3") && !is_past_key("past_key_values.3.value") && !is_past_key("key"));
    }

    #[test]
    fn a_barrier_separates_only_a_matmul_nbits_fed_by_a_reshape() {
        let nbits = |inputs: &[&str], output: &str| pb::NodeProto {
            domain: "com.microsoft".into(),
            ..node("MatMulNBits", inputs, output)
        };
        let mut graph = pb::GraphProto {
            node: vec![
                node("Reshape", &["attn", "shape"], "merged"),
                nbits(&["merged", "w", "s"], "o_proj"),
                nbits(&["o_proj", "w2", "s2"], "up_proj"),
            ],
            ..Default::default()
        };
        assert_eq!(rewrite(&mut graph, 17), 1);
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Reshape", crate::tract_barrier::OP_TYPE, "MatMulNBits", "MatMulNBits"]);
        assert_eq!(graph.node[1].input, ["merged"]);
        assert_eq!(graph.node[2].input, [graph.node[1].output[0].as_str(), "w", "s"]);
        assert_eq!(graph.node[2].output, ["o_proj"]);
        assert_eq!(graph.node[3].input[0], "o_proj");
    }
}
