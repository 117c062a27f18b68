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
//! that case: the tiny LLaMA's q4 logits came out off by 12.7 against ONNX Runtime. Such a
//! MatMulNBits is dequantised here into a plain MatMul with a float weight of the scales' type:
//! the same values, at the cost of that one weight's memory (in a LLaMA, `o_proj` is about a
//! tenth of the weights). Every other MatMulNBits keeps tract's int4 kernels.
//!
//! **DynamicQuantizeLinear is slow on tract.** Its `DynamicQuantizeLinearU8` runs about 1 ms
//! per call on a 257×384 activation (48 calls: 53 ms of a 164 ms DINOv2-S int8 run on one
//! thread, more than the int8 matmuls save). Spelled out in the ONNX ops it is defined by
//! (ReduceMin/ReduceMax, then element-wise Div, Round, Add, Clip, Cast), tract runs it with its
//! vectorised kernels. Round is half-to-even, as the operator specifies.

use tract_onnx::pb;

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
/// ONNX `AttributeProto.AttributeType` INT.
const ATTR_INT: i32 = 2;

/// Applies the rewrites above to `graph`; returns how many nodes were rewritten.
pub(crate) fn rewrite(graph: &mut pb::GraphProto) -> usize {
    spell_out_dequantize_before_reductions(graph)
        + dequantize_nbits_after_reshape(graph)
        + spell_out_dynamic_quantize(graph)
}

/// What takes one node's place: the nodes computing its outputs, in order, and the constants they
/// add.
struct Replacement {
    nodes: Vec<pb::NodeProto>,
    constants: Vec<pb::TensorProto>,
}

impl From<Vec<pb::NodeProto>> for Replacement {
    fn from(nodes: Vec<pb::NodeProto>) -> Self {
        Replacement { nodes, constants: Vec::new() }
    }
}

/// Puts `replace`'s answer in the place of each node it answers for (it sees the graph, the node
/// and how many nodes it replaced before); returns how many it replaced.
fn replace_nodes(
    graph: &mut pb::GraphProto,
    mut replace: impl FnMut(&pb::GraphProto, &pb::NodeProto, usize) -> Option<Replacement>,
) -> usize {
    let mut replaced = 0;
    let mut i = 0;
    while i < graph.node.len() {
        let Some(Replacement { nodes, constants }) = replace(graph, &graph.node[i], replaced) else {
            i += 1;
            continue;
        };
        let added = nodes.len();
        graph.node.splice(i..=i, nodes);
        graph.initializer.extend(constants);
        i += added;
        replaced += 1;
    }
    replaced
}

/// Whether `node` is the standard-domain op `op_type`.
fn is_onnx_op(node: &pb::NodeProto, op_type: &str) -> bool {
    node.op_type == op_type && (node.domain.is_empty() || node.domain == "ai.onnx")
}

/// Constants the spelled-out DynamicQuantizeLinear uses.
const DQL_ZERO: &str = "edgeinfer.dql.zero";
const DQL_LEVELS: &str = "edgeinfer.dql.levels";
const DQL_TINY: &str = "edgeinfer.dql.tiny";

fn spell_out_dynamic_quantize(graph: &mut pb::GraphProto) -> usize {
    let rewritten = replace_nodes(graph, |_, node, index| {
        is_onnx_op(node, "DynamicQuantizeLinear").then(|| dynamic_quantize(node, index).into())
    });
    if rewritten > 0 {
        for (name, value) in [(DQL_ZERO, 0f32), (DQL_LEVELS, 255.0), (DQL_TINY, f32::MIN_POSITIVE)] {
            graph.initializer.push(pb::TensorProto {
                name: name.into(),
                dims: vec![],
                data_type: FLOAT as i32,
                float_data: vec![value],
                ..Default::default()
            });
        }
    }
    rewritten
}

/// `DynamicQuantizeLinear(x) -> (y, y_scale, y_zero_point)` as its definition:
/// `lo = min(min(x), 0)`, `hi = max(max(x), 0)`, `y_scale = (hi - lo) / 255`,
/// `y_zero_point = u8(clip(round(-lo / y_scale), 0, 255))`,
/// `y = u8(clip(round(x / y_scale) + y_zero_point, 0, 255))` (an all-zero `x` divides by the
/// smallest float instead of 0, giving `y = 0`, `y_zero_point = 0`).
fn dynamic_quantize(node: &pb::NodeProto, index: usize) -> Vec<pb::NodeProto> {
    let p = format!("edgeinfer.dql{index}");
    let x = node.input.first().cloned().unwrap_or_default();
    let output = |k: usize, fallback: &str| {
        node.output.get(k).filter(|o| !o.is_empty()).cloned().unwrap_or_else(|| format!("{p}.{fallback}"))
    };
    let (y, y_scale, y_zero_point) = (output(0, "y"), output(1, "scale"), output(2, "zero_point"));
    let op = |op: &str, inputs: &[&str], out: &str| pb::NodeProto {
        name: format!("{p}.{out}"),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![out.to_string()],
        attribute: match op {
            "ReduceMin" | "ReduceMax" => {
                vec![pb::AttributeProto { name: "keepdims".into(), r#type: ATTR_INT, i: 0, ..Default::default() }]
            }
            "Cast" => vec![pb::AttributeProto { name: "to".into(), r#type: ATTR_INT, i: 2, ..Default::default() }],
            _ => vec![],
        },
        ..Default::default()
    };
    let n = |s: &str| format!("{p}.{s}");
    vec![
        op("ReduceMin", &[&x], &n("min")),
        op("ReduceMax", &[&x], &n("max")),
        op("Min", &[&n("min"), DQL_ZERO], &n("lo")),
        op("Max", &[&n("max"), DQL_ZERO], &n("hi")),
        op("Sub", &[&n("hi"), &n("lo")], &n("range")),
        op("Div", &[&n("range"), DQL_LEVELS], &y_scale),
        op("Max", &[&y_scale, DQL_TINY], &n("divisor")),
        op("Div", &[&n("lo"), &n("divisor")], &n("lo_steps")),
        op("Neg", &[&n("lo_steps")], &n("neg_lo_steps")),
        op("Round", &[&n("neg_lo_steps")], &n("zp_rounded")),
        op("Clip", &[&n("zp_rounded"), DQL_ZERO, DQL_LEVELS], &n("zp")),
        op("Cast", &[&n("zp")], &y_zero_point),
        op("Div", &[&x, &n("divisor")], &n("steps")),
        op("Round", &[&n("steps")], &n("rounded")),
        op("Add", &[&n("rounded"), &n("zp")], &n("shifted")),
        op("Clip", &[&n("shifted"), DQL_ZERO, DQL_LEVELS], &n("clipped")),
        op("Cast", &[&n("clipped")], &y),
    ]
}

fn dequantize_nbits_after_reshape(graph: &mut pb::GraphProto) -> usize {
    replace_nodes(graph, |graph, node, _| {
        let after_reshape = node.op_type == "MatMulNBits"
            && node.domain == "com.microsoft"
            && node
                .input
                .first()
                .is_some_and(|a| graph.node.iter().any(|p| p.op_type == "Reshape" && p.output.contains(a)));
        if !after_reshape {
            return None;
        }
        let (weight, dtype) = NBits::of(graph, node)?.dequantize()?;
        Some(dequantized_matmul(node, weight, dtype))
    })
}

/// A MatMulNBits `node` as a MatMul with the float weight `weight` (raw data of ONNX type
/// `dtype`), plus an Add for its bias.
fn dequantized_matmul(node: &pb::NodeProto, weight: Vec<u8>, dtype: i32) -> Replacement {
    let weight_name =
        format!("{}.edgeinfer_dequantized", if node.name.is_empty() { &node.output[0] } else { &node.name });
    let (n, k) = (attr_int(node, "N").unwrap_or(0), attr_int(node, "K").unwrap_or(0));
    let constants = vec![pb::TensorProto {
        name: weight_name.clone(),
        dims: vec![k, n],
        data_type: dtype,
        raw_data: weight,
        ..Default::default()
    }];
    let bias = node.input.get(5).filter(|b| !b.is_empty()).cloned();
    let product = if bias.is_some() { format!("{weight_name}.product") } else { node.output[0].clone() };
    let mut nodes = vec![pb::NodeProto {
        name: format!("{}.edgeinfer_matmul", node.name),
        op_type: "MatMul".into(),
        input: vec![node.input[0].clone(), weight_name],
        output: vec![product.clone()],
        ..Default::default()
    }];
    if let Some(bias) = bias {
        nodes.push(pb::NodeProto {
            name: format!("{}.edgeinfer_bias", node.name),
            op_type: "Add".into(),
            input: vec![product, bias],
            output: vec![node.output[0].clone()],
            ..Default::default()
        });
    }
    Replacement { nodes, constants }
}

fn attr_int(node: &pb::NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// The constant inputs of one `MatMulNBits` node, as stored.
struct NBits<'a> {
    k: usize,
    n: usize,
    bits: usize,
    block_size: usize,
    weight: &'a pb::TensorProto,
    scales: &'a pb::TensorProto,
    zero_points: Option<&'a pb::TensorProto>,
}

/// ONNX `TensorProto.DataType` codes used here.
const UINT8: i32 = 2;
const FLOAT16: i32 = 10;

impl<'a> NBits<'a> {
    /// The node's attributes and constant inputs; `None` (node left to tract) for forms this
    /// does not handle: g_idx, non-constant or external weights, bits other than 2/4/8.
    fn of(graph: &'a pb::GraphProto, node: &pb::NodeProto) -> Option<NBits<'a>> {
        let constant = |i: usize| {
            let name = node.input.get(i).filter(|n| !n.is_empty())?;
            graph.initializer.iter().find(|t| &t.name == name && t.data_location.unwrap_or(0) == 0)
        };
        if node.input.get(4).is_some_and(|g| !g.is_empty()) {
            return None;
        }
        let usize_attr = |name: &str| attr_int(node, name).and_then(|v| usize::try_from(v).ok());
        let bits = usize_attr("bits").unwrap_or(4);
        if !matches!(bits, 2 | 4 | 8) {
            return None;
        }
        Some(NBits {
            k: usize_attr("K")?,
            n: usize_attr("N")?,
            bits,
            block_size: usize_attr("block_size").filter(|&b| b > 0)?,
            weight: constant(1)?,
            scales: constant(2)?,
            zero_points: match node.input.get(3).filter(|z| !z.is_empty()) {
                Some(_) => Some(constant(3)?),
                None => None,
            },
        })
    }

    /// The float weight `[K, N]` as little-endian raw data of the scales' type (float32 or
    /// float16), and that type's code; `None` when the stored sizes do not add up.
    fn dequantize(&self) -> Option<(Vec<u8>, i32)> {
        let (k, n, bits, block_size) = (self.k, self.n, self.bits, self.block_size);
        let per_byte = 8 / bits;
        let blocks = k.div_ceil(block_size);
        let blob = block_size.div_ceil(per_byte);
        let weight = bytes_u8(self.weight)?;
        let scales = floats(self.scales)?;
        if weight.len() != n.checked_mul(blocks)?.checked_mul(blob)? || scales.len() != n.checked_mul(blocks)? {
            return None;
        }
        let default_zero = (1u32 << (bits - 1)) as f32;
        let mask = ((1u16 << bits) - 1) as u8;
        let zero = |col: usize, blk: usize| -> Option<f32> {
            Some(match self.zero_points {
                None => default_zero,
                Some(z) if z.data_type == UINT8 => {
                    let packed = bytes_u8(z)?;
                    let byte = *packed.get(col * blocks.div_ceil(per_byte) + blk / per_byte)?;
                    ((byte >> (bits * (blk % per_byte))) & mask) as f32
                }
                Some(z) => *floats(z)?.get(col * blocks + blk)?,
            })
        };
        let mut w = vec![0f32; k.checked_mul(n)?];
        for col in 0..n {
            for blk in 0..blocks {
                let scale = scales[col * blocks + blk];
                let zp = zero(col, blk)?;
                for i in 0..block_size {
                    let kk = blk * block_size + i;
                    if kk >= k {
                        break;
                    }
                    let byte = weight[(col * blocks + blk) * blob + i / per_byte];
                    let q = (byte >> (bits * (i % per_byte))) & mask;
                    w[kk * n + col] = (f32::from(q) - zp) * scale;
                }
            }
        }
        Some(if self.scales.data_type == FLOAT16 {
            (w.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(), FLOAT16)
        } else {
            (w.iter().flat_map(|v| v.to_le_bytes()).collect(), FLOAT as i32)
        })
    }
}

/// The bytes of a uint8 tensor stored inline.
fn bytes_u8(t: &pb::TensorProto) -> Option<Vec<u8>> {
    if t.data_type != UINT8 {
        return None;
    }
    if !t.raw_data.is_empty() {
        return Some(t.raw_data.clone());
    }
    t.int32_data.iter().map(|&v| u8::try_from(v).ok()).collect()
}

/// The values of a float32 or float16 tensor stored inline.
fn floats(t: &pb::TensorProto) -> Option<Vec<f32>> {
    match t.data_type {
        1 if !t.raw_data.is_empty() => {
            Some(t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        }
        1 => Some(t.float_data.clone()),
        FLOAT16 if !t.raw_data.is_empty() => {
            Some(t.raw_data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect())
        }
        FLOAT16 => {
            t.int32_data.iter().map(|&v| u16::try_from(v).ok().map(|b| half::f16::from_bits(b).to_f32())).collect()
        }
        _ => None,
    }
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
        (feeds_reduction && scalar_params).then(|| spelled_out(node).into())
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
        assert_eq!(rewrite(&mut graph), 1);
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Cast", "Cast", "Sub", "Mul", "Softmax", "DequantizeLinear", "Relu"]);
        assert_eq!(graph.node[3].output, ["d"]);
        assert_eq!(graph.node[3].input[1], "s");
    }
}
