//! Activation quantisation for tract, as ops with tight loops.
//!
//! **`DynamicQuantizeLinear`.** Every dynamically quantised matmul (`quantize_dynamic`'s int8 and
//! uint8 graphs) quantises its activations first. tract 0.23's own op folds over an ndarray view
//! and rounds through a libm call per element: about 1 ms per call on a 257×384 activation (53 of
//! 164 ms of a DINOv2-S int8 run on one thread). Spelled out in the ops the operator is defined
//! by, it cost 17 graph nodes per call, 816 in a DINOv2-S, each a pass over the data or a dispatch
//! for a scalar. Here it is one node: one pass for the range, one for the codes, both vectorised.
//!
//! Semantics (the operator's definition, as ONNX Runtime computes it):
//! `lo = min(min(x), 0)`, `hi = max(max(x), 0)`, `y_scale = (hi - lo) / 255`,
//! `y_zero_point = u8(clip(round(-lo / y_scale), 0, 255))`,
//! `y = u8(clip(round(x / y_scale) + y_zero_point, 0, 255))`, rounding half to even. An all-zero
//! `x` divides by the smallest positive float instead of 0, giving `y = 0`, `y_zero_point = 0`.
//!
//! **`QuantizeLinear` with a constant scale and zero point** (every activation of a statically
//! quantised QDQ graph) is tract's element-wise `QuantizeLinearU8`/`I8`, which also rounds
//! through a call per element: 62 of 251 ms of a DINOv2-S QDQ run (182 calls). tract's
//! declutter needs its op to fold `DequantizeLinear → element-wise → QuantizeLinear` chains into
//! lookup tables, so the op is swapped for [`QuantizeLinearF32`] only after declutter
//! ([`vectorise_quantize_linear`]), with tract's own parameters and results: `x · (1 / y_scale)`
//! rounded half to even, plus the zero point, saturated (a NaN gives the zero point).

use tract_onnx::model::ParsingContext;
use tract_onnx::pb;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::quant::{QuantizeLinearI8, QuantizeLinearU8};
use tract_onnx::tract_hir::internal::*;

/// Replaces tract's parser for `DynamicQuantizeLinear` with this one.
pub(crate) fn register(onnx: &mut tract_onnx::Onnx) {
    onnx.op_register.insert("DynamicQuantizeLinear", parse);
}

fn parse(_ctx: &ParsingContext, _node: &pb::NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(DynamicQuantizeExpansion), vec![]))
}

#[derive(Debug, Clone)]
struct DynamicQuantizeExpansion;

impl Expansion for DynamicQuantizeExpansion {
    fn name(&self) -> StaticName {
        "DynamicQuantizeLinear".into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(3)
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 3)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        s.equals(&outputs[0].datum_type, u8::datum_type())?;
        s.equals(&outputs[1].datum_type, f32::datum_type())?;
        s.equals(&outputs[1].rank, 0)?;
        s.equals(&outputs[2].datum_type, u8::datum_type())?;
        s.equals(&outputs[2].rank, 0)?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, DynamicQuantizeU8, inputs)
    }
}

/// The op in tract's typed graph and plan.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
struct DynamicQuantizeU8;

impl Op for DynamicQuantizeU8 {
    fn name(&self) -> StaticName {
        "EdgeinferDynamicQuantizeU8".into()
    }

    op_as_typed_op!();
}

impl EvalOp for DynamicQuantizeU8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let plain = x.try_as_plain_ram()?;
        let xs = plain.as_slice::<f32>()?;
        let (y_scale, y_zero_point, codes) = dynamic_quantize(xs);
        let y = tract_onnx::tract_core::ndarray::ArrayD::from_shape_vec(x.shape(), codes)?.into_tensor();
        Ok(tvec!(y.into_tvalue(), tensor0(y_scale).into_tvalue(), tensor0(y_zero_point).into_tvalue()))
    }
}

impl TypedOp for DynamicQuantizeU8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(u8::fact(inputs[0].shape.clone()), f32::fact(ShapeFact::scalar()), u8::fact(ShapeFact::scalar())))
    }

    as_op!();
}

/// Swaps each of tract's `QuantizeLinearU8`/`I8` on float32 input in `model` for
/// [`QuantizeLinearF32`] (see the module notes); returns how many.
pub(crate) fn vectorise_quantize_linear(model: &mut TypedModel) -> TractResult<usize> {
    let mut swapped = 0;
    for id in 0..model.nodes().len() {
        let node = &model.nodes()[id];
        let Some(element_wise) = node.op_as::<ElementWiseOp>() else { continue };
        let replacement = if let Some(q) = element_wise.0.downcast_ref::<QuantizeLinearU8>() {
            QuantizeLinearF32 { inverse_scale: q.scale, zero_point: q.zero_point.into(), signed: false }
        } else if let Some(q) = element_wise.0.downcast_ref::<QuantizeLinearI8>() {
            QuantizeLinearF32 { inverse_scale: q.scale, zero_point: q.zero_point.into(), signed: true }
        } else {
            continue;
        };
        if node.inputs.len() != 1 || model.outlet_fact(node.inputs[0])?.datum_type != f32::datum_type() {
            continue;
        }
        model.node_mut(id).op = Box::new(replacement);
        swapped += 1;
    }
    Ok(swapped)
}

/// `QuantizeLinear` of float32 to u8 or i8 with a scalar scale and zero point, vectorised.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QuantizeLinearF32 {
    /// `1 / y_scale`, as tract keeps it.
    inverse_scale: f32,
    zero_point: i16,
    /// i8 codes, else u8.
    signed: bool,
}

impl Eq for QuantizeLinearF32 {}

impl Op for QuantizeLinearF32 {
    fn name(&self) -> StaticName {
        "EdgeinferQuantizeLinear".into()
    }

    op_as_typed_op!();
}

impl EvalOp for QuantizeLinearF32 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let plain = x.try_as_plain_ram()?;
        let xs = plain.as_slice::<f32>()?;
        let y = if self.signed {
            let mut y = Tensor::zero::<i8>(x.shape())?;
            quantize_linear_i8(
                xs,
                y.try_as_plain_ram_mut()?.as_slice_mut::<i8>()?,
                self.inverse_scale,
                self.zero_point,
            );
            y
        } else {
            let mut y = Tensor::zero::<u8>(x.shape())?;
            quantize_linear_u8(
                xs,
                y.try_as_plain_ram_mut()?.as_slice_mut::<u8>()?,
                self.inverse_scale,
                self.zero_point,
            );
            y
        };
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for QuantizeLinearF32 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let dt = if self.signed { i8::datum_type() } else { u8::datum_type() };
        Ok(tvec!(dt.fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// The u8 codes of `xs` into `ys` (as long as `xs`): `saturate(round(x · inverse_scale) +
/// zero_point)`, rounding half to even, a NaN giving the zero point.
fn quantize_linear_u8(xs: &[f32], ys: &mut [u8], inverse_scale: f32, zero_point: i16) {
    quantize_linear_into(xs, ys, inverse_scale, zero_point, false, |code| code);
}

/// [`quantize_linear_u8`] for i8 codes.
fn quantize_linear_i8(xs: &[f32], ys: &mut [i8], inverse_scale: f32, zero_point: i16) {
    // Two's complement: the code's byte read as i8.
    quantize_linear_into(xs, ys, inverse_scale, zero_point, true, |code| code as i8);
}

/// The codes of `xs` into `codes` (as long as `xs`), each code's byte stored through `store`
/// (the identity for u8, a reinterpretation for i8).
fn quantize_linear_into<T>(
    xs: &[f32],
    codes: &mut [T],
    inverse_scale: f32,
    zero_point: i16,
    signed: bool,
    store: impl Fn(u8) -> T,
) {
    // Codes are computed offset into 0..=255 (i8 by +128), then read back as bytes.
    let (offset, flip) = if signed { (128.0, 0x80) } else { (0.0, 0) };
    let zero_point = f32::from(zero_point) + offset;
    for (code, &v) in codes.iter_mut().zip(xs) {
        *code = store((offset_code(v, inverse_scale, zero_point) + CODE_BITS).to_bits() as u8 ^ flip);
    }
}

/// The code of one value, offset into 0..=255 (an i8 code plus 128), as an integral float:
/// `saturate(round(v · inverse_scale) + zero_point)`, rounding half to even, a NaN giving the
/// zero point. `zero_point` is offset the same way. Inlined into loops that vectorise.
#[inline(always)]
#[allow(clippy::manual_clamp)] // max then min on purpose: `clamp` keeps a NaN
pub(crate) fn offset_code(v: f32, inverse_scale: f32, zero_point: f32) -> f32 {
    let scaled = v * inverse_scale;
    let scaled = if scaled.is_nan() { 0.0 } else { scaled };
    // Beyond ±512 the code saturates whatever the zero point; inside, the rounding trick is exact.
    let scaled = scaled.max(-512.0).min(512.0);
    let rounded = (scaled + ROUNDER) - ROUNDER;
    (rounded + zero_point).max(0.0).min(255.0)
}

/// Lanes the range is kept in, so the loop vectorises (a float min/max chain does not).
const LANES: usize = 16;
/// Adding and subtracting 1.5 × 2²³ rounds a float of magnitude below 2²² to an integer, half to
/// even (the default rounding mode), in two vectorisable additions. Every `x / y_scale` here is
/// within ±255, since the range includes `x`.
const ROUNDER: f32 = 12_582_912.0;
/// 2²³: the float whose mantissa's low bits are the integer added to it (up to 2²³).
const CODE_BITS: f32 = 8_388_608.0;

/// `(y_scale, y_zero_point, y)` for `xs` (see the module notes).
#[allow(clippy::manual_clamp)] // max then min on purpose: `clamp` keeps a NaN
fn dynamic_quantize(xs: &[f32]) -> (f32, u8, Vec<u8>) {
    let (mut lo, mut hi) = ([0f32; LANES], [0f32; LANES]);
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for i in 0..LANES {
            lo[i] = if chunk[i] < lo[i] { chunk[i] } else { lo[i] };
            hi[i] = if chunk[i] > hi[i] { chunk[i] } else { hi[i] };
        }
    }
    let (mut lo, mut hi) = (lo.into_iter().fold(0f32, f32::min), hi.into_iter().fold(0f32, f32::max));
    for &v in chunks.remainder() {
        lo = if v < lo { v } else { lo };
        hi = if v > hi { v } else { hi };
    }
    let y_scale = (hi - lo) / 255.0;
    let divisor = y_scale.max(f32::MIN_POSITIVE);
    let zero_point = (-(lo / divisor)).round_ties_even().clamp(0.0, 255.0);
    let codes = xs
        .iter()
        .map(|&v| {
            let rounded = (v / divisor + ROUNDER) - ROUNDER;
            // max first: a NaN becomes 0, as Clip then Cast give it.
            let code = (rounded + zero_point).max(0.0).min(255.0);
            // An integer from 0 to 255 plus 2²³ has it as the low bits of its mantissa: read
            // them instead of a float-to-int conversion, which does not vectorise.
            (code + CODE_BITS).to_bits() as u8
        })
        .collect();
    (y_scale, zero_point as u8, codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operator's definition, element by element, with the standard library's rounding.
    fn reference(xs: &[f32]) -> (f32, u8, Vec<u8>) {
        let lo = xs.iter().fold(0f32, |a, &v| a.min(v));
        let hi = xs.iter().fold(0f32, |a, &v| a.max(v));
        let scale = (hi - lo) / 255.0;
        let divisor = scale.max(f32::MIN_POSITIVE);
        let zp = (-lo / divisor).round_ties_even().clamp(0.0, 255.0);
        let y = xs.iter().map(|&v| ((v / divisor).round_ties_even() + zp).clamp(0.0, 255.0) as u8).collect();
        (scale, zp as u8, y)
    }

    #[test]
    fn matches_the_definition_on_ranges_ties_and_odd_lengths() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32
        };
        let cases: Vec<Vec<f32>> = vec![
            (0..257 * 384).map(|_| random() * 8.0 - 3.0).collect(),
            (0..1000).map(|_| random() * 2.0 + 0.5).collect(), // all positive: lo = 0
            (0..33).map(|_| -random() * 4.0).collect(),        // all negative: hi = 0
            // Exact ties: scale 1, so x / scale lands on .5 steps.
            (0..=255).map(|i| i as f32 - 127.5).chain([127.5, -127.5]).collect(),
            vec![0.0; 17],
            vec![],
        ];
        for xs in cases {
            assert_eq!(dynamic_quantize(&xs), reference(&xs), "{} values", xs.len());
        }
    }

    fn codes_u8(xs: &[f32], inverse_scale: f32, zero_point: i16) -> Vec<u8> {
        let mut ys = vec![0; xs.len()];
        quantize_linear_u8(xs, &mut ys, inverse_scale, zero_point);
        ys
    }

    fn codes_i8(xs: &[f32], inverse_scale: f32, zero_point: i16) -> Vec<i8> {
        let mut ys = vec![0; xs.len()];
        quantize_linear_i8(xs, &mut ys, inverse_scale, zero_point);
        ys
    }

    #[test]
    fn quantize_linear_matches_tracts_own_op() {
        use tract_onnx::tract_core::ops::quant::{quantize_linear_f32_i8, quantize_linear_f32_u8};
        let mut xs: Vec<f32> = (0..4099).map(|i| (i as f32 - 2049.0) * 0.0137).collect();
        // Ties at scale 1 / 0.5, values that saturate, and the edges of the i8 and u8 ranges.
        xs.extend((-600..600).map(|i| i as f32 * 0.25));
        xs.extend([3.0e4, -3.0e4, 0.0, -0.0]);
        for (scale, zero_point) in [(0.0213f32, 0i16), (0.5, 17), (0.0078, 128), (1.0, 255), (3.3, 64)] {
            let inverse = scale.recip();
            let ours = codes_u8(&xs, inverse, zero_point);
            let tracts: Vec<u8> = xs.iter().map(|&x| quantize_linear_f32_u8(x, inverse, zero_point.into())).collect();
            assert_eq!(ours, tracts, "u8, scale {scale}, zero point {zero_point}");
        }
        for (scale, zero_point) in [(0.0213f32, 0i16), (0.5, -17), (0.0078, 127), (1.0, -128)] {
            let inverse = scale.recip();
            let ours = codes_i8(&xs, inverse, zero_point);
            let tracts: Vec<i8> = xs.iter().map(|&x| quantize_linear_f32_i8(x, inverse, zero_point.into())).collect();
            assert_eq!(ours, tracts, "i8, scale {scale}, zero point {zero_point}");
        }
        // Far out of range (tract's own op overflows its i32 there): saturated.
        assert_eq!(codes_u8(&[1e9, -1e9, f32::INFINITY], 1.0, 3), vec![255, 0, 255]);
        assert_eq!(codes_i8(&[1e9, -1e9], 1.0, 3), vec![127, -128]);
        // NaN: tract rounds it to 0 before adding the zero point.
        assert_eq!(codes_u8(&[f32::NAN], 1.0, 9), vec![9]);
        assert_eq!(codes_i8(&[f32::NAN], 1.0, -9), vec![-9]);
    }

    #[test]
    fn a_qdq_graphs_quantize_linear_ops_are_swapped_after_declutter() {
        use crate::{ModelSource, SessionOptions};
        use tract_onnx::prelude::InferenceModelExt;
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/dinov2/model_qdq.onnx");
        let (model, _, _) = crate::tract::parse(&ModelSource::File(fixture), &SessionOptions::default()).unwrap();
        let mut typed = model.into_typed().unwrap().into_decluttered().unwrap();
        let swapped = vectorise_quantize_linear(&mut typed).unwrap();
        let tracts = typed.nodes().iter().filter(|n| n.op().name().starts_with("QuantizeLinear")).count();
        let tables = typed.nodes().iter().filter(|n| n.op().name() == "LookupTable").count();
        // Every quantisation tract did not fold into a lookup table (it still does: the GELUs).
        assert!(swapped >= 24 && tracts == 0 && tables > 0, "{swapped} swapped, {tracts} left, {tables} tables");
    }

    #[test]
    fn nan_codes_as_zero() {
        let (_, _, y) = dynamic_quantize(&[1.0, f32::NAN, -1.0]);
        assert_eq!(y[1], 0);
    }
}
