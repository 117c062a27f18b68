//! Fuses the rescaling after each dynamically quantised matmul into one pass, for tract.
//!
//! A `quantize_dynamic` graph (int8 and uint8 `quantized` variants) ends every `MatMulInteger`
//! in `Cast(i32 → f32) → Mul(x_scale · w_scale) → Add(bias)`: the integer sums converted, scaled
//! by a product known only at run time (the activation's scale comes out of
//! `DynamicQuantizeLinear`), and the bias added. tract runs each as a pass reading and writing the
//! whole activation. [`fuse_rescale`] rewrites each such chain, after declutter, into one
//! [`Rescale`] op, bit for bit what the chain computes, in place over the sums (which move in,
//! being read by nothing else).
//!
//! Matched, from each `Cast` from i32 to float32 that is its input's only reader: its only reader
//! a `Mul` by a run-time float32 value of one element, and optionally that `Mul`'s only reader
//! an `Add` of a constant that varies along the last axis at most. Only the chain's last node may
//! be a model output.

use std::sync::Arc;

use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_hir::internal::*;

use crate::tract_requantize::{Chain, by_constant, fuse_chains, into_f32_in_place, replaceable};

/// Fuses each chain (see the module notes) in `model`; returns how many.
pub(crate) fn fuse_rescale(model: &mut TypedModel) -> TractResult<usize> {
    fuse_chains(model, "edgeinfer_rescale", chain_at)
}

/// The chain from the cast `id`, if it is one.
fn chain_at(model: &TypedModel, id: usize) -> TractResult<Option<Chain<Rescale>>> {
    let outputs = model.output_outlets()?;
    // The reader of the outlet, where it is the only one and the outlet is not a model output.
    let only_reader = |outlet: OutletId| -> Option<&TypedNode> {
        let readers = model.outlet_successors(outlet);
        (readers.len() == 1 && !outputs.contains(&outlet)).then(|| model.node(readers[0].node))
    };
    let cast = model.node(id);
    let Some(op) = cast.op_as::<Cast>() else { return Ok(None) };
    if cast.inputs.len() != 1
        || op.to != f32::datum_type()
        || model.outlet_fact(cast.inputs[0])?.datum_type != i32::datum_type()
        // Read by nothing else (also rules out a cast another fusion has left unread).
        || only_reader(cast.inputs[0]).is_none_or(|reader| reader.id != id)
    {
        return Ok(None);
    }
    let sums = cast.inputs[0];
    let cast_output = OutletId::new(id, 0);
    let Some(mul) = only_reader(cast_output) else { return Ok(None) };
    let Some(scale) = run_time_factor(model, mul, cast_output)? else { return Ok(None) };

    let mut output = OutletId::new(mul.id, 0);
    let mut bias: Arc<[f32]> = vec![-0.0].into();
    let columns = model.outlet_fact(sums)?.shape.last().and_then(|d| d.to_usize().ok());
    if let Some(add) = only_reader(output)
        && let Some((x, constant)) = by_constant(model, add, "Add", columns)?
        && x == output
    {
        bias = constant;
        output = OutletId::new(add.id, 0);
    }
    if !replaceable(model, output, sums)? {
        return Ok(None);
    }
    Ok(Some(Chain { inputs: tvec!(sums, scale), op: Rescale { bias }, output }))
}

/// The other operand of `mul`, a float32 `Mul` of `x`, where it is computed at run time and holds
/// one value (every dimension 1, no more of them than `x` has).
fn run_time_factor(model: &TypedModel, mul: &TypedNode, x: OutletId) -> TractResult<Option<OutletId>> {
    let Some(op) = mul.op_as::<TypedBinOp>() else { return Ok(None) };
    if op.0.name() != "Mul" || op.1.is_some_and(|dt| dt != f32::datum_type()) || mul.inputs.len() != 2 {
        return Ok(None);
    }
    let factor = if mul.inputs[0] == x { mul.inputs[1] } else { mul.inputs[0] };
    let (x_fact, fact) = (model.outlet_fact(x)?, model.outlet_fact(factor)?);
    let one_value = fact.shape.iter().all(|d| d.to_usize().is_ok_and(|n| n == 1));
    if factor == x
        || fact.konst.is_some()
        || fact.datum_type != f32::datum_type()
        || fact.rank() > x_fact.rank()
        || !one_value
    {
        return Ok(None);
    }
    Ok(Some(factor))
}

/// One pass of `y = f32(sums) · scale + bias[j]` over i32 sums, `scale` one run-time value and `j`
/// the position along the last axis, exactly as the chain it replaces computes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rescale {
    /// The `Add`'s constant: one value, or one per position along the last axis (-0.0, the
    /// additive identity of every float, without one).
    bias: Arc<[f32]>,
}

impl Eq for Rescale {}

impl Op for Rescale {
    fn name(&self) -> StaticName {
        "EdgeinferRescale".into()
    }

    op_as_typed_op!();
}

impl EvalOp for Rescale {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (sums, scale) = args_2!(inputs);
        let &[scale] = scale.try_as_plain_ram()?.as_slice::<f32>()? else {
            bail!("rescale: a scale of {} values", scale.len())
        };
        let columns = self.bias.len();
        if columns > 1 && sums.shape().last() != Some(&columns) {
            bail!("rescale: sums of shape {:?}, a bias of {columns} values", sums.shape());
        }
        // In place: the sums move in (this op is their only reader), the results' bits replace
        // them.
        let y = into_f32_in_place(sums.into_tensor(), |values| {
            let one = |v: i32, bias: f32| ((v as f32) * scale + bias).to_bits() as i32;
            if let [bias] = *self.bias {
                values.iter_mut().for_each(|v| *v = one(*v, bias));
            } else {
                for row in values.chunks_exact_mut(columns) {
                    row.iter_mut().zip(&*self.bias).for_each(|(v, &bias)| *v = one(*v, bias));
                }
            }
        })?;
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for Rescale {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tract_requantize::tests::run;
    use crate::{ModelSource, SessionOptions};
    use tract_onnx::prelude::InferenceModelExt;

    #[test]
    fn fused_chains_compute_the_chains_bits_in_dynamically_quantised_graphs() {
        let shape = [2, 3, 28, 42];
        let values: Vec<f32> =
            (0..shape.iter().product::<usize>()).map(|i| ((i * 7919) % 1000) as f32 / 400.0 - 1.2).collect();
        let input = Tensor::from_shape(&shape, &values).unwrap();
        // int8 (our `MatMulInteger` wiring) and uint8 (tract's own).
        for file in ["model_int8.onnx", "model_quantized.onnx"] {
            let fixture = |fixed: bool| {
                let path =
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/dinov2").join(file);
                let (mut model, _, _) =
                    crate::tract::parse(&ModelSource::File(path), &SessionOptions::default()).unwrap();
                if fixed {
                    model.set_input_fact(0, f32::fact(shape).into()).unwrap();
                }
                model.into_typed().unwrap().into_decluttered().unwrap()
            };
            // Per layer (the fixture has two) the six linear layers; with the input's size
            // symbolic too.
            assert_eq!(fuse_rescale(&mut fixture(false)).unwrap(), 2 * 6, "{file}");
            let reference = run(fixture(true), &input);
            let mut fused = fixture(true);
            assert_eq!(fuse_rescale(&mut fused).unwrap(), 2 * 6, "{file}");
            assert_eq!(run(fused, &input), reference, "{file}");
        }
    }
}
