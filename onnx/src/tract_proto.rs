//! Writing ONNX nodes into a graph before tract parses it: what the rewrites that spell a node
//! out in standard ops (`tract_gqa`, `tract_gather_q4`) share, naming every node, tensor and
//! constant after the node they replace.

use tract_onnx::pb;

/// ONNX `TensorProto.DataType` FLOAT, UINT8 and INT64.
pub(crate) const FLOAT: i32 = 1;
pub(crate) const UINT8: i32 = 2;
pub(crate) const INT64: i32 = 7;
/// ONNX `AttributeProto.AttributeType` INT and INTS.
const ATTR_INT: i32 = 2;
const ATTR_INTS: i32 = 7;

/// The first default-domain opset whose forms [`Writer`]'s users write (`Unsqueeze` and `Split`
/// with axes and sizes as inputs, `Softmax` over one axis).
pub(crate) const MIN_OPSET: i64 = 13;

/// Puts in the place of each node of `graph` that `write` answers for (returning `Some`) the nodes
/// it wrote, named `{prefix}{index}.{n}`, and adds the constants they read to the graph's
/// initializers; returns how many nodes were replaced. Nothing is written in a graph of a
/// default-domain `opset` before [`MIN_OPSET`].
pub(crate) fn write_out(
    graph: &mut pb::GraphProto,
    opset: i64,
    prefix: &str,
    mut write: impl FnMut(&pb::GraphProto, &pb::NodeProto, &mut Writer) -> Option<()>,
) -> usize {
    if opset < MIN_OPSET {
        return 0;
    }
    let mut constants = Vec::new();
    let count = crate::tract_rewrite::replace_nodes(graph, |graph, node, index| {
        let mut writer = Writer::new(format!("{prefix}{index}"));
        write(graph, node, &mut writer)?;
        constants.append(&mut writer.constants);
        Some(writer.nodes)
    });
    graph.initializer.extend(constants);
    count
}

/// The attribute `name` of `node`.
pub(crate) fn attribute<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// Appends nodes and constants named after one replaced node.
pub(crate) struct Writer {
    prefix: String,
    /// The nodes written, in order.
    nodes: Vec<pb::NodeProto>,
    /// The constants they read, for the graph's initializers.
    constants: Vec<pb::TensorProto>,
}

impl Writer {
    /// A writer naming what it writes `{prefix}.{n}`.
    fn new(prefix: String) -> Writer {
        Writer { prefix, nodes: Vec::new(), constants: Vec::new() }
    }

    fn fresh(&self) -> String {
        format!("{}.{}", self.prefix, self.nodes.len() + self.constants.len())
    }

    /// A standard-domain node with one output, named here; returns the output.
    pub(crate) fn op(&mut self, op: &str, inputs: &[&str], attribute: Vec<pb::AttributeProto>) -> String {
        let output = self.fresh();
        self.op_into(op, inputs, attribute, &output);
        output
    }

    /// A standard-domain node writing `output`.
    pub(crate) fn op_into(&mut self, op: &str, inputs: &[&str], attribute: Vec<pb::AttributeProto>, output: &str) {
        self.nodes.push(pb::NodeProto {
            name: self.fresh(),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            attribute,
            ..Default::default()
        });
    }

    /// `Split` of `x` along `axis` into parts of these sizes.
    pub(crate) fn split<const N: usize>(&mut self, x: &str, axis: i64, sizes: &[i64; N]) -> [String; N] {
        let sizes_name = self.ints(sizes);
        let outputs: [String; N] = std::array::from_fn(|i| format!("{}.part{i}", self.fresh()));
        self.nodes.push(pb::NodeProto {
            name: self.fresh(),
            op_type: "Split".into(),
            input: vec![x.to_string(), sizes_name],
            output: outputs.to_vec(),
            attribute: vec![int_attr("axis", axis)],
            ..Default::default()
        });
        outputs
    }

    /// A constant (an initializer once the caller adds [`Writer::constants`] to the graph).
    fn constant(&mut self, tensor: pb::TensorProto) -> String {
        let name = self.fresh();
        self.constants.push(pb::TensorProto { name: name.clone(), ..tensor });
        name
    }

    /// A 1-D int64 constant.
    pub(crate) fn ints(&mut self, values: &[i64]) -> String {
        let dims = vec![values.len() as i64];
        self.constant(pb::TensorProto { dims, data_type: INT64, int64_data: values.to_vec(), ..Default::default() })
    }

    /// A scalar int64 constant.
    pub(crate) fn ints_scalar(&mut self, value: i64) -> String {
        self.constant(pb::TensorProto { data_type: INT64, int64_data: vec![value], ..Default::default() })
    }

    /// A float constant of shape `dims`.
    pub(crate) fn floats(&mut self, dims: &[i64], values: Vec<f32>) -> String {
        self.constant(pb::TensorProto {
            dims: dims.to_vec(),
            data_type: FLOAT,
            float_data: values,
            ..Default::default()
        })
    }

    /// A scalar float constant.
    pub(crate) fn floats_scalar(&mut self, value: f32) -> String {
        self.constant(pb::TensorProto { data_type: FLOAT, float_data: vec![value], ..Default::default() })
    }
}

/// An INT attribute.
pub(crate) fn int_attr(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: ATTR_INT, i, ..Default::default() }
}

/// An INTS attribute.
pub(crate) fn ints_attr(name: &str, ints: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: ATTR_INTS, ints: ints.to_vec(), ..Default::default() }
}
