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
        + separate_nbits_from_reshape(graph)
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
        Some(vec![barrier, matmul].into())
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
        assert_eq!(rewrite(&mut graph), 1);
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Reshape", crate::tract_barrier::OP_TYPE, "MatMulNBits", "MatMulNBits"]);
        assert_eq!(graph.node[1].input, ["merged"]);
        assert_eq!(graph.node[2].input, [graph.node[1].output[0].as_str(), "w", "s"]);
        assert_eq!(graph.node[2].output, ["o_proj"]);
        assert_eq!(graph.node[3].input[0], "o_proj");
    }
}
