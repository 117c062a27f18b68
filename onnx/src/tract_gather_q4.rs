//! ONNX Runtime's `com.microsoft` `GatherBlockQuantized` (a 4-bit embedding table), written out in
//! standard ONNX ops before tract parses the graph, so the rows it gathers are dequantised with
//! the file's float32 scales.
//!
//! onnxruntime-genai's builder writes an int4 model's token embedding this way, over the 4-bit
//! `lm_head` weight it shares with the last `MatMulNBits`. tract 0.23 lowers a 32-wide block form
//! to its Q4_0 format, whose scales are f16: every embedding came out off by up to 2⁻¹¹ of its
//! value. That alone kept tract's logits of the tiny GenAI int4 fixture 6e-3 from ONNX Runtime's
//! in float32, and in int8 (`accuracy_level = 4`) it moved enough activations across a rounding
//! boundary of their per-block quantisation to put them 0.25 apart.
//!
//! Written out, only the gathered rows are touched (the table stays 4-bit, shared with the
//! `lm_head`):
//!
//! - `Gather` of the packed rows (from the shared table itself, not a reshaped copy) and of their
//!   scales (`[rows, blocks]`, or the flat `[rows · blocks]` that `MatMulNBits` reads, reshaped);
//! - each byte split into its low then high nibble (`x − 16·⌊x/16⌋`, `⌊x/16⌋`, exact in float32);
//! - `(code − 8) · scale` per block, 8 being the zero point of a table without one.
//!
//! Only that form is written out (4 bits, `uint8` storage, gather along axis 0, quantised along
//! the last, float32 scales, no zero points); any other is left to tract's own op.

use tract_onnx::pb;

use crate::tract_proto::{FLOAT, UINT8, Writer, attribute, int_attr};

/// Writes out every `GatherBlockQuantized` node of `graph` that this module can (see the top
/// comment); returns how many. `opset` is the graph's default-domain opset.
pub(crate) fn spell_out(graph: &mut pb::GraphProto, opset: i64) -> usize {
    crate::tract_proto::write_out(graph, opset, "edgeinfer_gather_q4_", |graph, node, writer| {
        Gather::read(graph, node)?.write(node, writer);
        Some(())
    })
}

/// A `GatherBlockQuantized` node this module writes out.
struct Gather {
    /// The 4-bit table the rows are gathered from: the initializer itself where the graph
    /// reshapes it first (see [`stored_table`]).
    data: String,
    indices: String,
    scales: String,
    /// The scales are already `[rows, blocks]` (else the flat `[rows · blocks]`, reshaped).
    scales_are_rows: bool,
    block_size: i64,
}

impl Gather {
    fn read(graph: &pb::GraphProto, node: &pb::NodeProto) -> Option<Gather> {
        if node.op_type != "GatherBlockQuantized" || node.domain != "com.microsoft" {
            return None;
        }
        let int = |name: &str, default: i64| attribute(node, name).map_or(default, |a| a.i);
        let block_size = int("block_size", 128);
        let plain = int("bits", 4) == 4
            && int("gather_axis", 0) == 0
            && matches!(int("quantize_axis", 1), 1 | -1)
            && block_size >= 2
            && block_size % 2 == 0
            && node.input.iter().skip(3).all(String::is_empty)
            && node.output.len() == 1;
        if !plain {
            return None;
        }
        let (data, indices, scales) = (node.input.first()?, node.input.get(1)?, node.input.get(2)?);
        let scales_init = graph.initializer.iter().find(|t| &t.name == scales)?;
        let (table, table_type) = stored_table(graph, data, scales_init)?;
        (scales_init.data_type == FLOAT && table_type == UINT8).then(|| Gather {
            data: table,
            indices: indices.clone(),
            scales: scales.clone(),
            scales_are_rows: scales_init.dims.len() == 2,
            block_size,
        })
    }

    /// The nodes computing `node`'s output, `[indices..., K]`.
    fn write(&self, node: &pb::NodeProto, w: &mut Writer) {
        // Shapes built from the indices' own: any rank of indices.
        let index_shape = w.op("Shape", &[&self.indices], vec![]);
        let blocks_tail = w.ints(&[-1, self.block_size]);
        let in_blocks = w.op("Concat", &[&index_shape, &blocks_tail], vec![int_attr("axis", 0)]);
        let flat_tail = w.ints(&[-1]);
        let flat = w.op("Concat", &[&index_shape, &flat_tail], vec![int_attr("axis", 0)]);

        // The scales as [rows, blocks]. (A Reshape of a constant is folded into a copy of it,
        // which the `lm_head` matmul's own reference to the scales would keep beside it.)
        let scales = if self.scales_are_rows {
            self.scales.clone()
        } else {
            let data_shape = w.op("Shape", &[&self.data], vec![]);
            let (start, end) = (w.ints(&[0]), w.ints(&[1]));
            let rows = w.op("Slice", &[&data_shape, &start, &end], vec![]);
            let scales_shape = w.op("Concat", &[&rows, &flat_tail], vec![int_attr("axis", 0)]);
            w.op("Reshape", &[&self.scales, &scales_shape], vec![])
        };

        // The gathered rows' codes, low nibble first: [indices..., blocks, block_size].
        let packed = w.op("Gather", &[&self.data, &self.indices], vec![int_attr("axis", 0)]);
        let packed = w.op("Cast", &[&packed], vec![int_attr("to", FLOAT as i64)]);
        let sixteen = w.floats_scalar(16.0);
        let high = w.op("Div", &[&packed, &sixteen], vec![]);
        let high = w.op("Floor", &[&high], vec![]);
        let high_part = w.op("Mul", &[&high, &sixteen], vec![]);
        let low = w.op("Sub", &[&packed, &high_part], vec![]);
        let last = w.ints(&[-1]);
        let low = w.op("Unsqueeze", &[&low, &last], vec![]);
        let high = w.op("Unsqueeze", &[&high, &last], vec![]);
        let codes = w.op("Concat", &[&low, &high], vec![int_attr("axis", -1)]);
        let codes = w.op("Reshape", &[&codes, &in_blocks], vec![]);

        // (code - 8) * scale, per block.
        let eight = w.floats_scalar(8.0);
        let centred = w.op("Sub", &[&codes, &eight], vec![]);
        let row_scales = w.op("Gather", &[&scales, &self.indices], vec![int_attr("axis", 0)]);
        let row_scales = w.op("Unsqueeze", &[&row_scales, &last], vec![]);
        let values = w.op("Mul", &[&centred, &row_scales], vec![]);
        w.op_into("Reshape", &[&values, &flat], vec![], &node.output[0]);
    }
}

/// The table `tensor` gathers rows from and its element type, where it is an initializer or a
/// `Reshape` of one (the builder feeds its `lm_head` weight, `[rows, blocks, block_size / 2]`, to
/// the embedding reshaped to `[rows, K / 2]`). A reshape that keeps the rows (the initializer has
/// as many as the scales) is skipped: the gathered bytes are the same, and tract would otherwise
/// fold it into a second copy of the table beside the one the `lm_head` matmul reads.
fn stored_table(graph: &pb::GraphProto, tensor: &str, scales: &pb::TensorProto) -> Option<(String, i32)> {
    if let Some(t) = graph.initializer.iter().find(|t| t.name == tensor) {
        return Some((tensor.to_string(), t.data_type));
    }
    let producer = graph.node.iter().find(|n| n.output.iter().any(|o| o == tensor))?;
    if !crate::tract_rewrite::is_onnx_op(producer, "Reshape") {
        return None;
    }
    let source = producer.input.first()?;
    let table = graph.initializer.iter().find(|t| &t.name == source)?;
    let keeps_rows = scales.dims.len() == 2 && table.dims.first() == scales.dims.first();
    Some((if keeps_rows { source.clone() } else { tensor.to_string() }, table.data_type))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn genai_int4_graph() -> pb::GraphProto {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/llama-genai/int4/model.onnx");
        crate::tract_weights::decode_file(&path).unwrap().graph.unwrap()
    }

    fn gathers(graph: &pb::GraphProto) -> usize {
        graph.node.iter().filter(|n| n.op_type == "GatherBlockQuantized").count()
    }

    #[test]
    fn the_builders_embedding_is_written_out_and_other_forms_are_not() {
        // The builder's form: 4-bit rows of the lm_head weight (a Reshape of it), f32 scales.
        let mut graph = genai_int4_graph();
        assert_eq!(gathers(&graph), 1);
        assert_eq!(spell_out(&mut graph, 21), 1);
        assert_eq!(gathers(&graph), 0);
        // The rows come from the shared table itself (the builder's Reshape of it, which keeps
        // the rows, is bypassed), and the [rows, blocks] scales are read as they are.
        let gather = graph.node.iter().find(|n| n.op_type == "Gather" && n.input[1] == "input_ids").unwrap();
        assert_eq!(gather.input[0], "lm_head.MatMul.weight_Q4");
        assert!(!graph.node.iter().any(|n| n.op_type == "Reshape" && n.input[0] == "lm_head.MatMul.weight_scales"));
        // With zero points, or 8-bit codes: tract's own op.
        for (attribute, value) in [("bits", 8), ("quantize_axis", 0)] {
            let mut graph = genai_int4_graph();
            let node = graph.node.iter_mut().find(|n| n.op_type == "GatherBlockQuantized").unwrap();
            node.attribute.retain(|a| a.name != attribute);
            node.attribute.push(int_attr(attribute, value));
            assert_eq!(spell_out(&mut graph, 21), 0, "{attribute}");
        }
        let mut graph = genai_int4_graph();
        let node = graph.node.iter_mut().find(|n| n.op_type == "GatherBlockQuantized").unwrap();
        node.input.push("zero_points".into());
        assert_eq!(spell_out(&mut graph, 21), 0, "zero points");
    }
}
