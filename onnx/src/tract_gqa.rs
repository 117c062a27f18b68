//! ONNX Runtime's `com.microsoft` `GroupQueryAttention`, written out in standard ONNX ops before
//! tract parses the graph.
//!
//! onnxruntime-genai's model builder writes every attention block of a LLaMA-family model as one
//! `GroupQueryAttention` node: query, key and value packed into one input, rotary embedding applied
//! inside the op (`do_rotary`, from `cos_cache` / `sin_cache`), the KV cache in `[batch, kv_heads,
//! positions, head_size]`. tract 0.23 has its own expansion of the op, but it refuses packed QKV
//! (which the builder always writes), and it decides between "first prompt" and "one new token"
//! from the shapes while planning, so with the layout's symbolic lengths it cannot plan the graph
//! at all and would re-plan for every concrete length, that is, every decode step.
//!
//! Here each node becomes the same computation in plain ops, which tract plans once for all
//! lengths and runs with its ordinary kernels (the scores matmul then goes to
//! `tract_cache_matmul` like an Optimum-layout decoder's):
//!
//! - the packed input reshaped to `[B, S, heads + 2·kv_heads, head_size]` and split;
//! - rotary on query and key: `x·cos + rotate_half(x)·sin`, `rotate_half` as a matmul with a
//!   constant signed permutation, `cos`/`sin` gathered at each new token's position;
//! - `present = Concat(past, new)` along the positions: the op's semantics when past and present
//!   are separate buffers. (`past_present_share_buffer`, ONNX Runtime updating one buffer in place,
//!   is a property of how the caller binds the buffers, not of the graph: on tract the LLaMA
//!   pipeline feeds a past exactly as long as the tokens so far.)
//! - the query heads grouped per KV head (`[B, kv_heads, groups · S, head_size]`, one matmul per
//!   KV head, no copy of the cache per query head);
//! - the mask: the new token `i` of sequence `b` sits at position `p = seqlens_k[b] + 1 − S + i`
//!   (ONNX Runtime's `seqlens_k` is the sequence's total length minus one) and sees the keys at
//!   positions `0..=p`. That is causal for a prompt and lets a generated token see the whole cache,
//!   and it hides any key beyond a shorter sequence's length;
//! - softmax, the product with the values, the heads merged back to `[B, S, heads · head_size]`.
//!
//! Only the forms whose meaning is certain are written out: float32, rotary with the full head
//! size and not interleaved, no softcap, sliding window, smooth softmax, quantised cache or the
//! newer optional inputs (`position_ids`, `attention_bias`, `head_sink`, ...). Any other node is
//! left to tract's own expansion, which names what it cannot do.

use tract_onnx::pb;

use crate::tract_proto::{INT64, Writer, attribute, int_attr, ints_attr};
use crate::{DType, Dim};

/// Writes out every `GroupQueryAttention` node of `graph` that this module can (see the top
/// comment); returns how many. `opset` is the graph's default-domain opset.
pub(crate) fn spell_out(graph: &mut pb::GraphProto, opset: i64) -> usize {
    let mut caches = Vec::new();
    let count = crate::tract_proto::write_out(graph, opset, "edgeinfer_gqa", |graph, node, writer| {
        let attention = Attention::read(graph, node)?;
        attention.write(node, writer);
        caches.push((attention.past_key, attention.head_size));
        caches.push((attention.past_value, attention.head_size));
        Some(())
    });
    // The builder declares the cache's head size as a symbol (`kv_cache_dim`), which tract cannot
    // unify with the new positions' fixed one in the Concat: the op requires them equal, so the
    // past inputs declare it.
    for (name, head_size) in caches {
        let dim = graph.input.iter_mut().find(|i| i.name == name).and_then(|info| {
            let pb::type_proto::Value::TensorType(t) = info.r#type.as_mut()?.value.as_mut()?;
            t.shape.as_mut()?.dim.get_mut(3)
        });
        if let Some(dim) = dim {
            dim.value = Some(pb::tensor_shape_proto::dimension::Value::DimValue(head_size));
        }
    }
    count
}

/// What a `GroupQueryAttention` node asks for, when this module can write it out.
struct Attention {
    heads: i64,
    kv_heads: i64,
    head_size: i64,
    scale: f32,
    /// `(cos_cache, sin_cache)` when the op applies rotary embedding.
    rotary: Option<(String, String)>,
    /// Separate key and value inputs (`None`: packed into the query).
    key_value: Option<(String, String)>,
    query: String,
    past_key: String,
    past_value: String,
    seqlens_k: String,
}

impl Attention {
    fn read(graph: &pb::GraphProto, node: &pb::NodeProto) -> Option<Attention> {
        if node.op_type != "GroupQueryAttention" || node.domain != "com.microsoft" {
            return None;
        }
        let int = |name: &str, default: i64| attribute(node, name).map_or(default, |a| a.i);
        let float = |name: &str| attribute(node, name).map(|a| a.f);
        let string = |name: &str| attribute(node, name).map(|a| a.s.clone());
        let (heads, kv_heads) = (int("num_heads", 0), int("kv_num_heads", 0));
        let do_rotary = int("do_rotary", 0) != 0;
        let plain = heads > 0
            && kv_heads > 0
            && heads % kv_heads == 0
            && int("rotary_interleaved", 0) == 0
            && int("local_window_size", -1) <= 0
            && float("softcap").unwrap_or(0.0) == 0.0
            && int("smooth_softmax", 0) == 0
            && int("qk_output", 0) == 0
            && int("sliding_window_cache", 0) == 0
            && ["k_quant_type", "v_quant_type"].iter().all(|q| string(q).is_none_or(|s| s.is_empty() || s == b"NONE"))
            && node.output.iter().skip(3).all(String::is_empty)
            && node.output.len() >= 3
            && node.input.iter().skip(9).all(String::is_empty);
        if !plain {
            return None;
        }
        let input = |i: usize| node.input.get(i).filter(|s| !s.is_empty()).cloned();
        let query = input(0)?;
        let key_value = match (input(1), input(2)) {
            (Some(k), Some(v)) => Some((k, v)),
            (None, None) => None,
            _ => return None,
        };
        let (past_key, past_value, seqlens_k) = (input(3)?, input(4)?, input(5)?);
        // float32 only: the mask and scale constants are written as float.
        let past = graph.input.iter().find(|i| i.name == past_key).map(crate::tract::value_info)?;
        if past.dtype != DType::F32 {
            return None;
        }
        let parts = heads + if key_value.is_some() { 0 } else { 2 * kv_heads };
        let head_size = match past.shape.get(3).and_then(Dim::fixed) {
            Some(declared) if declared > 0 => declared as i64,
            _ => query_head_size(graph, &query, parts)?,
        };
        let rotary = match (do_rotary, input(7), input(8)) {
            (false, _, _) => None,
            (true, Some(cos), Some(sin)) => {
                // Rotary over the whole head (the cache holds half a head's angles).
                let half = |name: &str| constant_dims(graph, name);
                let full = |dims: Option<Vec<i64>>| matches!(dims.as_deref(), Some([_, h]) if 2 * h == head_size);
                if !(full(half(&cos)) && full(half(&sin))) {
                    return None;
                }
                Some((cos, sin))
            }
            (true, _, _) => return None,
        };
        let scale = float("scale").filter(|&s| s != 0.0).unwrap_or(1.0 / (head_size as f32).sqrt());
        Some(Attention { heads, kv_heads, head_size, scale, rotary, key_value, query, past_key, past_value, seqlens_k })
    }

    /// The nodes computing `node`'s outputs (`output`, `present_key`, `present_value`).
    fn write(&self, node: &pb::NodeProto, w: &mut Writer) {
        let (heads, kv, hs) = (self.heads, self.kv_heads, self.head_size);
        let groups = heads / kv;

        // Positions of the new tokens: seqlens_k[b] + 1 - S + i, [B, S].
        let query_shape = w.op("Shape", &[&self.query], vec![]);
        let one_index = w.ints_scalar(1);
        let steps = w.op("Gather", &[&query_shape, &one_index], vec![]);
        let (zero, one) = (w.ints_scalar(0), w.ints_scalar(1));
        let step_range = w.op("Range", &[&zero, &steps, &one], vec![]);
        let seqlens = w.op("Cast", &[&self.seqlens_k], vec![int_attr("to", INT64 as i64)]);
        let column = w.ints(&[-1, 1]);
        let seqlens = w.op("Reshape", &[&seqlens, &column], vec![]);
        let totals = w.op("Add", &[&seqlens, &one], vec![]);
        let first = w.op("Sub", &[&totals, &steps], vec![]);
        let positions = w.op("Add", &[&first, &step_range], vec![]);

        // Query, key and value as [B, S, heads, head_size], rotated where the op rotates.
        let rope = self.rotary.as_ref().map(|(cos, sin)| Rope::write(w, cos, sin, &positions, hs));
        let (query, key, value) = match &self.key_value {
            None => {
                let shape = w.ints(&[0, 0, heads + 2 * kv, hs]);
                let packed = w.op("Reshape", &[&self.query, &shape], vec![]);
                match &rope {
                    Some(rope) => {
                        let [qk, value] = w.split(&packed, 2, &[heads + kv, kv]);
                        let qk = rope.apply(w, &qk);
                        let [query, key] = w.split(&qk, 2, &[heads, kv]);
                        (query, key, value)
                    }
                    None => {
                        let [query, key, value] = w.split(&packed, 2, &[heads, kv, kv]);
                        (query, key, value)
                    }
                }
            }
            Some((key, value)) => {
                let heads_shape = |w: &mut Writer, n: i64| w.ints(&[0, 0, n, hs]);
                let (qs, ks) = (heads_shape(w, heads), heads_shape(w, kv));
                let query = w.op("Reshape", &[&self.query, &qs], vec![]);
                let key = w.op("Reshape", &[key, &ks], vec![]);
                let value = w.op("Reshape", &[value, &ks], vec![]);
                match &rope {
                    Some(rope) => (rope.apply(w, &query), rope.apply(w, &key), value),
                    None => (query, key, value),
                }
            }
        };

        // The cache: past then the new positions, [B, kv, T, head_size].
        let heads_first = vec![ints_attr("perm", &[0, 2, 1, 3])];
        let key = w.op("Transpose", &[&key], heads_first.clone());
        let value = w.op("Transpose", &[&value], heads_first);
        let present_key = node.output[1].clone();
        let present_value = node.output[2].clone();
        w.op_into("Concat", &[&self.past_key, &key], vec![int_attr("axis", 2)], &present_key);
        w.op_into("Concat", &[&self.past_value, &value], vec![int_attr("axis", 2)], &present_value);

        // Scores of each KV head's query heads as one block of rows: [B, kv, groups * S, T].
        let scale = w.floats_scalar(self.scale);
        let query = w.op("Mul", &[&query, &scale], vec![]);
        let split_heads = w.ints(&[0, 0, kv, groups, hs]);
        let query = w.op("Reshape", &[&query, &split_heads], vec![]);
        let query = w.op("Transpose", &[&query], vec![ints_attr("perm", &[0, 2, 3, 1, 4])]);
        let grouped = w.ints(&[0, 0, -1, hs]);
        let query = w.op("Reshape", &[&query, &grouped], vec![]);
        let keys_t = w.op("Transpose", &[&present_key], vec![ints_attr("perm", &[0, 1, 3, 2])]);
        let scores = w.op("MatMul", &[&query, &keys_t], vec![]);

        // Token i of sequence b sees the keys at positions 0..=positions[b, i].
        let cache_shape = w.op("Shape", &[&present_key], vec![]);
        let two_index = w.ints_scalar(2);
        let total = w.op("Gather", &[&cache_shape, &two_index], vec![]);
        let key_positions = w.op("Range", &[&zero, &total, &one], vec![]);
        let last_axis = w.ints(&[2]);
        let limits = w.op("Unsqueeze", &[&positions, &last_axis], vec![]);
        let visible = w.op("LessOrEqual", &[&key_positions, &limits], vec![]);
        let (open, shut) = (w.floats_scalar(0.0), w.floats_scalar(f32::MIN));
        let mask = w.op("Where", &[&visible, &open, &shut], vec![]);
        let kv_axis = w.ints(&[1]);
        let mask = w.op("Unsqueeze", &[&mask, &kv_axis], vec![]);
        let repeats = w.ints(&[1, 1, groups, 1]);
        let mask = w.op("Tile", &[&mask, &repeats], vec![]);
        let scores = w.op("Add", &[&scores, &mask], vec![]);
        let probs = w.op("Softmax", &[&scores], vec![int_attr("axis", -1)]);

        // [B, kv, groups * S, hs] -> [B, S, kv, groups, hs] -> [B, S, heads * hs].
        let context = w.op("MatMul", &[&probs, &present_value], vec![]);
        let split_rows = w.ints(&[0, 0, groups, -1, hs]);
        let context = w.op("Reshape", &[&context, &split_rows], vec![]);
        let context = w.op("Transpose", &[&context], vec![ints_attr("perm", &[0, 3, 1, 2, 4])]);
        let merged = w.ints(&[0, 0, -1]);
        w.op_into("Reshape", &[&context, &merged], vec![], &node.output[0]);
    }
}

/// `cos` and `sin` at the new tokens' positions, `[B, S, 1, head_size]`, and the rotation.
struct Rope {
    cos: String,
    sin: String,
    rotate_half: String,
}

impl Rope {
    fn write(w: &mut Writer, cos_cache: &str, sin_cache: &str, positions: &str, head_size: i64) -> Rope {
        let shape = w.ints(&[0, 0, 1, head_size]);
        let mut table = |cache: &str| {
            let half = w.op("Gather", &[cache, positions], vec![int_attr("axis", 0)]);
            let full = w.op("Concat", &[&half, &half], vec![int_attr("axis", -1)]);
            w.op("Reshape", &[&full, &shape], vec![])
        };
        let (cos, sin) = (table(cos_cache), table(sin_cache));
        // rotate_half(x) = [-x2, x1] = x · R: column j < h reads -x[j + h], column j >= h reads x[j - h].
        let (n, h) = (head_size as usize, head_size as usize / 2);
        let mut rotation = vec![0.0f32; n * n];
        for j in 0..h {
            rotation[(j + h) * n + j] = -1.0;
            rotation[j * n + j + h] = 1.0;
        }
        let rotate_half = w.floats(&[head_size, head_size], rotation);
        Rope { cos, sin, rotate_half }
    }

    /// `x · cos + rotate_half(x) · sin` of `x`, `[B, S, heads, head_size]`.
    fn apply(&self, w: &mut Writer, x: &str) -> String {
        let rotated = w.op("MatMul", &[x, &self.rotate_half], vec![]);
        let a = w.op("Mul", &[x, &self.cos], vec![]);
        let b = w.op("Mul", &[&rotated, &self.sin], vec![]);
        w.op("Add", &[&a, &b], vec![])
    }
}

/// The head size from the width of the matmul that computes the query (`parts` heads of it: the
/// query heads, plus the key and value heads when packed), for a cache that leaves it symbolic.
/// The dims of the constant `name`: an initializer, or a `Constant` node's `value` (what
/// PyTorch's exporter writes for a tensor the trace captured).
fn constant_dims(graph: &pb::GraphProto, name: &str) -> Option<Vec<i64>> {
    if let Some(t) = graph.initializer.iter().find(|t| t.name == name) {
        return Some(t.dims.clone());
    }
    let node = graph.node.iter().find(|n| n.op_type == "Constant" && n.output.iter().any(|o| o == name))?;
    attribute(node, "value").and_then(|a| a.t.as_ref()).map(|t| t.dims.clone())
}

fn query_head_size(graph: &pb::GraphProto, query: &str, parts: i64) -> Option<i64> {
    let producer = graph.node.iter().find(|n| n.output.iter().any(|o| o == query))?;
    let width = if crate::tract_rewrite::is_onnx_op(producer, "MatMul") {
        let weight = producer.input.get(1)?;
        match graph.initializer.iter().find(|t| &t.name == weight)?.dims.as_slice() {
            [_, n] => *n,
            _ => return None,
        }
    } else if producer.op_type == "MatMulNBits" && producer.domain == "com.microsoft" {
        attribute(producer, "N")?.i
    } else {
        return None;
    };
    (width > 0 && width % parts == 0 && (width / parts) % 2 == 0).then_some(width / parts)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn probe_graph() -> pb::GraphProto {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models/fixtures/probe/group_query_attention.onnx");
        crate::tract_weights::decode_file(&path).unwrap().graph.unwrap()
    }

    fn attention_nodes(graph: &pb::GraphProto) -> usize {
        graph.node.iter().filter(|n| n.op_type == "GroupQueryAttention").count()
    }

    fn head_dim(graph: &pb::GraphProto, input: &str) -> Option<pb::tensor_shape_proto::dimension::Value> {
        let info = graph.input.iter().find(|i| i.name == input)?;
        let pb::type_proto::Value::TensorType(t) = info.r#type.as_ref()?.value.as_ref()?;
        t.shape.as_ref()?.dim.get(3)?.value.clone()
    }

    #[test]
    fn both_forms_are_written_out_and_the_cache_declares_its_head_size() {
        let mut graph = probe_graph();
        assert_eq!(attention_nodes(&graph), 2);
        assert!(matches!(
            head_dim(&graph, "past_key_packed"),
            Some(pb::tensor_shape_proto::dimension::Value::DimParam(_))
        ));
        assert_eq!(spell_out(&mut graph, 17), 2);
        assert_eq!(attention_nodes(&graph), 0);
        // The packed form's head size comes from the width of the MatMul computing its input.
        for input in ["past_key_packed", "past_value_packed"] {
            assert_eq!(
                head_dim(&graph, input),
                Some(pb::tensor_shape_proto::dimension::Value::DimValue(16)),
                "{input}"
            );
        }
        // Every output of the op is still written, by exactly one node.
        for output in ["y_packed", "present_key_packed", "present_value_packed", "y_separate"] {
            assert_eq!(graph.node.iter().filter(|n| n.output.iter().any(|o| o == output)).count(), 1, "{output}");
        }
    }

    #[test]
    fn rotary_tables_may_be_constant_nodes() {
        // PyTorch's exporter (export_llama.py --attention gqa) writes the traced cos/sin tables
        // as Constant nodes, the builder as initializers.
        let mut graph = probe_graph();
        let node = graph.node.iter().find(|n| n.op_type == "GroupQueryAttention").unwrap();
        let tables = [node.input[7].clone(), node.input[8].clone()];
        for name in &tables {
            let at = graph.initializer.iter().position(|t| &t.name == name).unwrap();
            let table = graph.initializer.remove(at);
            let value = pb::AttributeProto {
                name: "value".into(),
                r#type: pb::attribute_proto::AttributeType::Tensor as i32,
                t: Some(table),
                ..Default::default()
            };
            let constant = pb::NodeProto {
                op_type: "Constant".into(),
                output: vec![name.clone()],
                attribute: vec![value],
                ..Default::default()
            };
            graph.node.insert(0, constant);
        }
        assert_eq!(spell_out(&mut graph, 17), 2);
        // A table of the wrong width (not half a head) is not taken for one.
        let mut graph = probe_graph();
        let table = graph.initializer.iter_mut().find(|t| t.name == tables[0]).unwrap();
        table.dims[1] += 1;
        assert_eq!(spell_out(&mut graph, 17), 1);
    }

    #[test]
    fn forms_of_uncertain_meaning_are_left_to_tract() {
        let set = |graph: &mut pb::GraphProto, name: &str, i: i64| {
            let node = graph.node.iter_mut().find(|n| n.output.first().is_some_and(|o| o == "y_packed")).unwrap();
            node.attribute.retain(|a| a.name != name);
            node.attribute.push(int_attr(name, i));
        };
        for (attribute, value) in [("rotary_interleaved", 1), ("local_window_size", 8), ("smooth_softmax", 1)] {
            let mut graph = probe_graph();
            set(&mut graph, attribute, value);
            assert_eq!(spell_out(&mut graph, 17), 1, "{attribute}");
            assert_eq!(attention_nodes(&graph), 1, "{attribute}: the packed node stays");
        }
        // An input the op gained later (position_ids), and an opset before Unsqueeze took its axes
        // as an input.
        let mut graph = probe_graph();
        let node = graph.node.iter_mut().find(|n| n.op_type == "GroupQueryAttention").unwrap();
        node.input.resize(10, String::new());
        node.input[9] = "x".into();
        assert_eq!(spell_out(&mut graph, 17), 1);
        assert_eq!(spell_out(&mut probe_graph(), 12), 0);
    }
}
