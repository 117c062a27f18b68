//! Fuses the element-wise chain around a static quantisation into one pass, for tract.
//!
//! A QDQ graph (`quantize_static`) quantises every matmul output and dequantises it at once.
//! Once `tract_rewrite` has made the matmul an integer one, each linear layer ends in
//! `Cast(i32 → f32) → Mul(scales) → QuantizeLinear → DequantizeLinear → Add(bias)`: five passes
//! over the activation, each reading and writing it whole, where the matmul itself is one. On a
//! DINOv2-S at 224 px that is 72 chains over activations of 257×384 and 257×1536 values. The
//! attention's scaled queries and keys and its softmax take the same round trip without the
//! `Cast`.
//!
//! [`fuse_requantize`] rewrites each such chain, after declutter and before optimisation, into one
//! [`Requantize`] op, bit for bit what the chain computes, in one pass in place over its input
//! (which moves in, being read by nothing else: the i32 sums are overwritten with the results'
//! bits). It starts from a `QuantizeLinear` (tract's u8/i8 op on float32) whose only
//! reader is a `DequantizeLinear` (tract's op, or `tract_rewrite`'s spelled-out form before a
//! softmax), and takes in:
//! - before it, a `Mul` by a constant that varies along the last axis at most, read only by the
//!   quantisation, and before that a `Cast` from i32 read only by the `Mul` (each optional);
//! - after it, an `Add` of such a constant, the dequantisation's only reader (optional).
//!
//! Only the chain's last node may be a model output.

use std::sync::Arc;

use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::quant::{DequantizeLinearF32, QuantizeLinearI8, QuantizeLinearU8};
use tract_onnx::tract_hir::internal::*;

use crate::tract_quantize::offset_code;

/// Fuses each chain (see the module notes) in `model`; returns how many.
pub(crate) fn fuse_requantize(model: &mut TypedModel) -> TractResult<usize> {
    fuse_chains(model, "edgeinfer_requantize", chain_at)
}

/// A chain to fuse: the outlets it reads, the op that computes it, and the outlet it replaces.
pub(crate) struct Chain<O> {
    pub(crate) inputs: TVec<OutletId>,
    pub(crate) op: O,
    pub(crate) output: OutletId,
}

/// Replaces each chain `find` reports at a node of `model` by its op (named after that node and
/// `label`); returns how many. The chains must not overlap.
pub(crate) fn fuse_chains<O: TypedOp>(
    model: &mut TypedModel,
    label: &str,
    find: impl Fn(&TypedModel, usize) -> TractResult<Option<Chain<O>>>,
) -> TractResult<usize> {
    let mut fused = 0;
    // Patches append their nodes and leave the ids of the others alone; the chains do not
    // overlap, so each is found once, before or after its neighbours' patches.
    let mut id = 0;
    while id < model.nodes().len() {
        if let Some(chain) = find(model, id)? {
            let mut patch = TypedModelPatch::new(label);
            let inputs = patch.taps(model, &chain.inputs)?;
            let name = format!("{}.{label}", model.node(id).name);
            let output = patch.wire_node(name, chain.op, &inputs)?;
            patch.shunt_outside(model, chain.output, output[0])?;
            patch.apply(model)?;
            fused += 1;
        }
        id += 1;
    }
    Ok(fused)
}

/// Whether a float32 result shaped as `input` can take `output`'s place: the same type and
/// shape.
pub(crate) fn replaceable(model: &TypedModel, output: OutletId, input: OutletId) -> TractResult<bool> {
    let (replaced, read) = (model.outlet_fact(output)?, model.outlet_fact(input)?);
    Ok(replaced.datum_type == f32::datum_type() && replaced.shape == read.shape)
}

/// `sums` (i32), once `write` has overwritten every element with an f32's bits, retyped as
/// float32 without a copy.
pub(crate) fn into_f32_in_place(mut sums: Tensor, write: impl FnOnce(&mut [i32])) -> TractResult<Tensor> {
    // Fails unless the tensor holds i32.
    write(sums.try_as_plain_ram_mut()?.as_slice_mut::<i32>()?);
    // SAFETY: i32 and f32 have the same size and alignment, every bit pattern is an f32, and
    // `write` has put an f32 result's bits in every element.
    #[allow(unsafe_code)]
    unsafe {
        sums.set_datum_type(f32::datum_type())
    };
    Ok(sums)
}

/// The chain around the quantisation `id`, if it is one.
fn chain_at(model: &TypedModel, id: usize) -> TractResult<Option<Chain<Requantize>>> {
    let outputs = model.output_outlets()?;
    // The node's only reader, where its output is not a model output.
    let only_reader = |node: usize| -> Option<&TypedNode> {
        let outlet = OutletId::new(node, 0);
        let readers = model.outlet_successors(outlet);
        (model.node(node).outputs.len() == 1 && readers.len() == 1 && !outputs.contains(&outlet))
            .then(|| model.node(readers[0].node))
    };
    let quantize = model.node(id);
    let Some(element_wise) = quantize.op_as::<ElementWiseOp>() else { return Ok(None) };
    let (inverse_scale, zero_point, offset) = if let Some(q) = element_wise.0.downcast_ref::<QuantizeLinearU8>() {
        (q.scale, f32::from(q.zero_point), 0.0)
    } else if let Some(q) = element_wise.0.downcast_ref::<QuantizeLinearI8>() {
        (q.scale, f32::from(q.zero_point) + 128.0, 128.0)
    } else {
        return Ok(None);
    };
    if quantize.inputs.len() != 1 || model.outlet_fact(quantize.inputs[0])?.datum_type != f32::datum_type() {
        return Ok(None);
    }
    let Some(reader) = only_reader(id) else { return Ok(None) };
    let (dequantize, dequantize_zero_point, dequantize_scale) = if let Some(dq) = reader.op_as::<DequantizeLinearF32>()
    {
        (reader, dq.zero_point as f32, dq.scale)
    } else if let Some(spelled_out) = spelled_out_dequantize(model, reader, &only_reader)? {
        spelled_out
    } else {
        return Ok(None);
    };
    // Codes and zero points subtract exactly in float32.
    if dequantize_zero_point.abs() > 65536.0 || dequantize_zero_point.fract() != 0.0 {
        return Ok(None);
    }
    // Constants vary along the last axis at most; a per-position one needs its length known.
    let columns = model.outlet_fact(quantize.inputs[0])?.shape.last().and_then(|d| d.to_usize().ok());

    // Before: Mul by a constant, and the Cast from i32 feeding it.
    let mut input = quantize.inputs[0];
    let mut scales = None;
    let mut from_i32 = false;
    let producer = model.node(input.node);
    if let Some((x, constant)) = by_constant(model, producer, "Mul", columns)?
        && only_reader(producer.id).is_some()
    {
        scales = Some(constant);
        input = x;
        let cast = model.node(x.node);
        if let Some(op) = cast.op_as::<Cast>()
            && cast.inputs.len() == 1
            && op.to == f32::datum_type()
            && model.outlet_fact(cast.inputs[0])?.datum_type == i32::datum_type()
            && only_reader(cast.id).is_some()
        {
            input = cast.inputs[0];
            from_i32 = true;
        }
    }

    // After: Add of a constant.
    let mut output = OutletId::new(dequantize.id, 0);
    let mut bias = None;
    if let Some(add) = only_reader(dequantize.id)
        && let Some((x, constant)) = by_constant(model, add, "Add", columns)?
        && x == output
    {
        bias = Some(constant);
        output = OutletId::new(add.id, 0);
    }
    if !replaceable(model, output, input)? {
        return Ok(None);
    }
    // A scalar is laid out along the last axis where the other constant is.
    let (scales, bias) = match (scales, bias) {
        (Some(s), Some(b)) if s.len() != b.len() => {
            let Some(columns) = columns else { return Ok(None) };
            let lay_out = |c: Arc<[f32]>| if c.len() == 1 { vec![c[0]; columns].into() } else { c };
            (lay_out(s), lay_out(b))
        }
        (Some(s), Some(b)) => (s, b),
        (Some(s), None) => {
            let n = s.len();
            (s, vec![-0.0; n].into())
        }
        (None, Some(b)) => (vec![1.0; b.len()].into(), b),
        // -0.0 is the additive identity for every float, -0.0 included.
        (None, None) => (vec![1.0].into(), vec![-0.0].into()),
    };
    let op = Requantize {
        from_i32,
        scales,
        inverse_scale,
        zero_point,
        dequantize_offset: offset + dequantize_zero_point,
        dequantize_scale,
        bias,
    };
    Ok(Some(Chain { inputs: tvec!(input), op, output }))
}

/// A `DequantizeLinear` as `tract_rewrite` spells it out before a reduction, from the `Cast` of
/// the codes on: `Cast(codes → f32) → Sub(zero point) → Mul(scale)`, each the previous one's only
/// reader, with scalar constants. Returns the `Mul`, the zero point and the scale.
fn spelled_out_dequantize<'m>(
    model: &'m TypedModel,
    cast: &'m TypedNode,
    only_reader: &impl Fn(usize) -> Option<&'m TypedNode>,
) -> TractResult<Option<(&'m TypedNode, f32, f32)>> {
    let Some(op) = cast.op_as::<Cast>() else { return Ok(None) };
    if cast.inputs.len() != 1 {
        return Ok(None);
    }
    let codes = model.outlet_fact(cast.inputs[0])?.datum_type;
    if op.to != f32::datum_type() || (codes != u8::datum_type() && codes != i8::datum_type()) {
        return Ok(None);
    }
    let Some(sub) = only_reader(cast.id) else { return Ok(None) };
    let Some((x, zero_point)) = by_constant(model, sub, "Sub", None)? else { return Ok(None) };
    let Some(mul) = only_reader(sub.id) else { return Ok(None) };
    let Some((y, scale)) = by_constant(model, mul, "Mul", None)? else { return Ok(None) };
    // `Sub` is the codes minus the zero point, not the other way round.
    if x != OutletId::new(cast.id, 0) || sub.inputs[0] != x || y != OutletId::new(sub.id, 0) {
        return Ok(None);
    }
    Ok(Some((mul, zero_point[0], scale[0])))
}

/// `(x, constant)` where `node` is the float32 `op_name` ("Mul", "Add") of `x` and a constant
/// that varies along the last axis at most, so the result has `x`'s shape: one value, or one per
/// position along that axis, of which there are `columns` where known.
pub(crate) fn by_constant(
    model: &TypedModel,
    node: &TypedNode,
    op_name: &str,
    columns: Option<usize>,
) -> TractResult<Option<(OutletId, Arc<[f32]>)>> {
    let Some(op) = node.op_as::<TypedBinOp>() else { return Ok(None) };
    if op.0.name() != op_name || op.1.is_some_and(|dt| dt != f32::datum_type()) || node.inputs.len() != 2 {
        return Ok(None);
    }
    for (x, c) in [(node.inputs[0], node.inputs[1]), (node.inputs[1], node.inputs[0])] {
        let (x_fact, c_fact) = (model.outlet_fact(x)?, model.outlet_fact(c)?);
        let Some(constant) = &c_fact.konst else { continue };
        if x_fact.konst.is_some()
            || x_fact.datum_type != f32::datum_type()
            || constant.datum_type() != f32::datum_type()
            || constant.rank() > x_fact.rank()
            || constant.len() == 0
        {
            continue;
        }
        let dims = constant.shape();
        let (last, rest) = dims.split_last().map_or((1, &[][..]), |(l, r)| (*l, r));
        if rest.iter().any(|&d| d != 1) || (last != 1 && Some(last) != columns) {
            continue;
        }
        let values = constant.try_as_plain_ram()?.as_slice::<f32>()?;
        return Ok(Some((x, values.into())));
    }
    Ok(None)
}

/// One pass of `y = dequantize(quantize(x · scale[j])) + bias[j]`, `j` the position along the last
/// axis, `x` float32 or i32 (converted first), exactly as the chain it replaces computes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Requantize {
    /// The input is i32 (the chain began with a `Cast`), else float32.
    from_i32: bool,
    /// The `Mul`'s constant: one value, or one per position along the last axis (1.0 without
    /// one). As long as `bias`.
    scales: Arc<[f32]>,
    /// The quantisation's `1 / y_scale`, as tract keeps it.
    inverse_scale: f32,
    /// Its zero point, offset as [`offset_code`] takes it.
    zero_point: f32,
    /// The dequantisation's zero point in the same offset codes.
    dequantize_offset: f32,
    dequantize_scale: f32,
    /// The `Add`'s constant, laid out as `scales` (-0.0 without one).
    bias: Arc<[f32]>,
}

impl Eq for Requantize {}

impl Requantize {
    /// The chain over `values`, in place (each stored through `store`): with one scale and bias,
    /// in one sweep; else row by row along the last axis.
    fn run<T: Copy>(&self, values: &mut [T], to_f32: impl Fn(T) -> f32, store: impl Fn(f32) -> T) {
        let one = |x: T, scale: f32, bias: f32| {
            let code = offset_code(to_f32(x) * scale, self.inverse_scale, self.zero_point);
            store((code - self.dequantize_offset) * self.dequantize_scale + bias)
        };
        if let ([scale], [bias]) = (&*self.scales, &*self.bias) {
            values.iter_mut().for_each(|v| *v = one(*v, *scale, *bias));
            return;
        }
        for row in values.chunks_exact_mut(self.scales.len()) {
            for ((v, &scale), &bias) in row.iter_mut().zip(&*self.scales).zip(&*self.bias) {
                *v = one(*v, scale, bias);
            }
        }
    }
}

impl Op for Requantize {
    fn name(&self) -> StaticName {
        "EdgeinferRequantize".into()
    }

    op_as_typed_op!();
}

impl EvalOp for Requantize {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        if self.scales.len() > 1 && x.shape().last() != Some(&self.scales.len()) {
            bail!(
                "requantize: input shape {:?}, laid out for {} values along the last axis",
                x.shape(),
                self.scales.len()
            );
        }
        // In place: the input moves in when this op is its last reader (the chains' sums and
        // products are read by nothing else), and is copied otherwise.
        let mut y = x.into_tensor();
        if self.from_i32 {
            y = into_f32_in_place(y, |sums| self.run(sums, |v| v as f32, |r| r.to_bits() as i32))?;
        } else {
            self.run(y.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?, |v| v, |r| r);
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for Requantize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{ModelSource, SessionOptions};
    use tract_onnx::prelude::InferenceModelExt;
    use tract_onnx::tract_core::plan::SimplePlan;

    /// The DINOv2 QDQ fixture, typed and decluttered, its input fixed to `shape` where given.
    fn fixture(shape: Option<&[usize]>) -> TypedModel {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/dinov2/model_qdq.onnx");
        let (mut model, _, _) = crate::tract::parse(&ModelSource::File(path), &SessionOptions::default()).unwrap();
        if let Some(shape) = shape {
            model.set_input_fact(0, f32::fact(shape).into()).unwrap();
        }
        model.into_typed().unwrap().into_decluttered().unwrap()
    }

    /// The bits of every output of `model`, optimised, on `input`.
    pub(crate) fn run(model: TypedModel, input: &Tensor) -> Vec<Vec<u32>> {
        let plan = SimplePlan::new(model.into_optimized().unwrap()).unwrap();
        let outputs = plan.run(tvec!(input.clone().into_tvalue())).unwrap();
        outputs
            .iter()
            .map(|o| o.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().iter().map(|v| v.to_bits()).collect())
            .collect()
    }

    #[test]
    fn fused_chains_compute_the_chains_bits() {
        let shape = [2, 3, 28, 42];
        let values: Vec<f32> =
            (0..shape.iter().product::<usize>()).map(|i| ((i * 7919) % 1000) as f32 / 400.0 - 1.2).collect();
        let input = Tensor::from_shape(&shape, &values).unwrap();
        // The pixels and the patch embedding; per layer (the fixture has two) the six linear
        // layers' outputs, the scaled queries and keys, the scores (dequantised as `tract_rewrite`
        // spells it out before the softmax) and the softmax. With the input's size
        // symbolic too (what a plan for every
        // size fuses, which tract cannot run on this graph: its `Resize` needs the size).
        let mut symbolic = fixture(None);
        assert_eq!(fuse_requantize(&mut symbolic).unwrap(), 2 + 2 * 10);
        let reference = run(fixture(Some(&shape)), &input);
        let mut fused = fixture(Some(&shape));
        assert_eq!(fuse_requantize(&mut fused).unwrap(), 2 + 2 * 10);
        assert_eq!(run(fused, &input), reference);
    }

    /// `Cast(i32 → f32) → Mul([1, 3]) → QuantizeLinear → DequantizeLinear → Add([1, 3])`
    /// then `QuantizeLinear → DequantizeLinear` of the result again, in u8 or i8.
    fn chain(signed: bool) -> TypedModel {
        use tract_onnx::tract_core::ops::math::{add, mul};
        let quantize = |inverse_scale: f32, zero_point: i8| -> ElementWiseOp {
            let op: Box<dyn tract_onnx::tract_core::ops::element_wise::ElementWiseMiniOp> = if signed {
                Box::new(QuantizeLinearI8 { scale: inverse_scale, zero_point })
            } else {
                Box::new(QuantizeLinearU8 { scale: inverse_scale, zero_point: (zero_point as i16 + 128) as u8 })
            };
            ElementWiseOp(op, None)
        };
        let dequantize_zero_point = |zero_point: i8| if signed { zero_point as i32 } else { zero_point as i32 + 128 };
        let mut model = TypedModel::default();
        let sums = model.add_source("sums", i32::fact([4, 3])).unwrap();
        let x = model.wire_node("cast", Cast { to: f32::datum_type() }, &[sums]).unwrap();
        let scales = model.add_const("scales", tensor2(&[[0.5f32, 0.031, 2.0e-3]])).unwrap();
        let x = model.wire_node("scale", mul(), &[x[0], scales]).unwrap();
        let x = model.wire_node("q", quantize(1.0 / 0.02, -3), &x).unwrap();
        let x = model
            .wire_node("dq", DequantizeLinearF32 { scale: 0.02, zero_point: dequantize_zero_point(-3) }, &x)
            .unwrap();
        let bias = model.add_const("bias", tensor2(&[[0.25f32, -1.0, 0.0]])).unwrap();
        let x = model.wire_node("add_bias", add(), &[bias, x[0]]).unwrap();
        let x = model.wire_node("q2", quantize(1.0 / 0.3, 17), &x).unwrap();
        let x = model
            .wire_node("dq2", DequantizeLinearF32 { scale: 0.3, zero_point: dequantize_zero_point(17) }, &x)
            .unwrap();
        model.select_output_outlets(&x).unwrap();
        model
    }

    #[test]
    fn a_chain_in_u8_and_i8_gives_the_bits_of_tracts_ops_and_saturates() {
        // Ties, values that saturate either way, zero and large sums.
        let sums: Vec<i32> = vec![0, 1, -1, 5, 51, -51, 255, -255, 100_000, -100_000, 7, i32::from(i16::MAX)];
        let input = Tensor::from_shape(&[4, 3], &sums).unwrap();
        for signed in [false, true] {
            let reference = run(chain(signed), &input);
            let mut fused = chain(signed);
            assert_eq!(fuse_requantize(&mut fused).unwrap(), 2, "signed {signed}");
            let ops = fused.into_compact().unwrap().nodes().iter().filter(|n| n.op_is::<Requantize>()).count();
            assert_eq!(ops, 2, "signed {signed}");
            let mut fused = chain(signed);
            fuse_requantize(&mut fused).unwrap();
            assert_eq!(run(fused, &input), reference, "signed {signed}");
        }
    }
}
