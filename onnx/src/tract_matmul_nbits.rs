//! `MatMulNBits` for tract with each constant 4-bit weight repacked before translation, one at a
//! time, so that loading a q4 model does not hold every weight twice.
//!
//! tract 0.23 maps a 4-bit `MatMulNBits` onto its Q4_0 block-quant matmul, but repacks the weight
//! while it translates the whole model, when every original (the nibbles and scales as read from
//! the file) is still held by the parsed model: loading LLaMA-135M q4 peaked at 1.66× its files,
//! all of the originals plus all of the repacked weights plus the lm_head unpacked to one byte per
//! code. Here [`pack_constant_weights`] runs over the parsed model before translation. Each
//! constant weight is repacked into Q4_0 straight from its nibbles, and the constants it came from
//! are replaced at once by empty ones, so the original is freed before the next weight is packed.
//! Translation then wires the packed weight as tract does: `A @ W^T` through a block-quant
//! `EinSum`, and a weight zero point other than Q4_0's fixed 8 as a per-block correction against
//! the block sums of `A`: `(q - z)·s = (q - 8)·s + (8 - z)·s`, with the scale rounded to f16 as
//! Q4_0 stores it, so the split is exact against the stored weight.
//!
//! Where [`crate::tract_q4_matmul::serves`] a weight (every weight with AVX-512F; with AVX2 a
//! shared or `accuracy_level = 4` one) it is not repacked at all: [`crate::tract_q4_matmul`],
//! which honours `accuracy_level = 4` (int8 activations, as
//! ONNX Runtime computes that level), reads the file's nibbles and f32 scales from the graph's own
//! constants, which it holds instead of copies; the graph's handles are emptied the same way.
//!
//! Forms not packed here keep tract's own op: 2-bit weights, a `K` that is not a whole number of
//! blocks or a block that is not a multiple of 32, a weight or zero point computed at run time or
//! shared with another node, float zero points and `g_idx`.

use std::borrow::Cow;

use tract_onnx::model::{ParsingContext, optional_inputs};
use tract_onnx::pb;
use tract_onnx::tract_core::ops::cast::cast;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::math::add;
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};
use tract_onnx::tract_core::tract_linalg::block_quant::{BlockQuantFact, BlockQuantStorage, Q4_0};
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::logic::wire_with_rank_broadcast;

use crate::tract_q4_matmul::{Compute, Q4MatMul, Q4Weight, zero_point};

/// The parser tract registered for `MatMulNBits`, kept for the forms handled by tract's op.
static TRACTS_OWN: std::sync::OnceLock<crate::tract::OpParser> = std::sync::OnceLock::new();

/// Q4_0's block length: its blocks hold 32 codes and one f16 scale.
const QK: usize = 32;

/// The zero point Q4_0 bakes in (`(code - 8) * scale`), and the default of a 4-bit export.
const Q4_0_ZERO: u8 = 8;

/// Replaces tract's parser for `MatMulNBits` with this one.
pub(crate) fn register(onnx: &mut tract_onnx::Onnx) {
    if let Some(own) = onnx.op_register.0.get("MatMulNBits") {
        let _ = TRACTS_OWN.set(*own);
        onnx.op_register.insert("MatMulNBits", parse);
    }
}

fn parse(ctx: &ParsingContext, node: &pb::NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let own = TRACTS_OWN.get().context("tract's MatMulNBits parser")?;
    let (tracts, closures) = own(ctx, node)?;
    let attr = |name: &str| node.attribute.iter().find(|a| a.name == name).map(|a| a.i);
    let as_usize = |v: Option<i64>| v.and_then(|v| usize::try_from(v).ok()).unwrap_or(0);
    let slots: Vec<Option<usize>> = optional_inputs(node).take(6).collect();
    let op = MatMulNBits {
        k: as_usize(attr("K")),
        n: as_usize(attr("N")),
        bits: as_usize(attr("bits").or(Some(4))),
        block_size: as_usize(attr("block_size")),
        compute: Compute::from_accuracy_level(attr("accuracy_level").unwrap_or(0)),
        zero_points: slots[3],
        has_g_idx: slots[4].is_some(),
        bias: slots[5],
        packed: None,
        tracts,
    };
    Ok((expand(op), closures))
}

#[derive(Debug, Clone)]
struct MatMulNBits {
    k: usize,
    n: usize,
    bits: usize,
    block_size: usize,
    /// What `accuracy_level` asks for: the activations in float32 or quantised to int8.
    compute: Compute,
    /// Input slots of the optional inputs (absent inputs take no slot).
    zero_points: Option<usize>,
    has_g_idx: bool,
    bias: Option<usize>,
    /// The weight in Q4_0, once [`pack_constant_weights`] has packed it.
    packed: Option<Packed>,
    /// tract's own op for the same node.
    tracts: Box<dyn InferenceOp>,
}

#[derive(Debug, Clone)]
enum Packed {
    /// For tract's block-quant matmul.
    Q4_0 {
        /// `[1, N, K]` block-quant storage.
        weight: Arc<Tensor>,
        /// `(8 - z)·s` per `[N, quantization block]`, where some zero point is not 8.
        offsets: Option<Arc<Tensor>>,
    },
    /// As the file stores it, for [`crate::tract_q4_matmul`] (x86-64 CPUs with AVX-512F or AVX2).
    Nibbles(Arc<Q4Weight>),
}

/// Repacks the constant weight of every `MatMulNBits` this module handles into Q4_0 and drops the
/// original constants as it goes (see the module notes). Returns how many weights were packed.
pub(crate) fn pack_constant_weights(model: &mut InferenceModel) -> TractResult<usize> {
    let mut packed = 0;
    for id in 0..model.nodes().len() {
        let Some(op) = ours(model.node(id)) else { continue };
        if op.packed.is_some() || !op.packable() {
            continue;
        }
        let inputs = model.node(id).inputs.clone();
        let zero_point_slot = op.zero_points;
        // A weight other nodes read too (an ORT-GenAI int4 folder's tied `lm_head`, which its
        // `GatherBlockQuantized` embedding reads) is packed all the same, so that this product
        // keeps its f32 scales and, at `accuracy_level = 4`, ONNX Runtime's int8 arithmetic. Where
        // `tract_q4_matmul` runs both read the one constant; elsewhere the original stays beside the Q4_0 copy,
        // as it would beside tract's own.
        let Some(b) = constant(model, inputs[1]) else { continue };
        let Some(scales) = constant(model, inputs[2]) else { continue };
        let zero_points = match op.zero_points.map(|slot| constant(model, inputs[slot])) {
            Some(None) => continue,
            Some(Some(zp)) => Some(zp),
            None => None,
        };
        let shared = !sole_reader(model, inputs[1], id);
        let Some(weight) = op.pack(&b, &scales, zero_points.as_deref(), shared)? else { continue };
        let mut op = op.clone();
        op.packed = Some(weight);
        drop((b, scales, zero_points));
        let emptied = [Some(1), Some(2), zero_point_slot].into_iter().flatten().map(|slot| inputs[slot]);
        replace_and_empty(model, id, expand(op), emptied)?;
        packed += 1;
    }
    Ok(packed)
}

fn ours(node: &InferenceNode) -> Option<&MatMulNBits> {
    crate::tract::expansion_of(node)
}

/// The value of a `Const` node's output.
pub(crate) fn constant(model: &InferenceModel, outlet: OutletId) -> Option<Arc<Tensor>> {
    model.node(outlet.node).op_as::<Const>().map(|c| c.val().clone())
}

/// Whether `outlet` feeds `node` alone (and is not a model output).
pub(crate) fn sole_reader(model: &InferenceModel, outlet: OutletId, node: usize) -> bool {
    let successors = &model.node(outlet.node).outputs[outlet.slot].successors;
    successors.iter().all(|inlet| inlet.node == node) && !model.outputs.contains(&outlet)
}

/// Gives node `id` the op that holds its packed weight, and empties each of the `constants` it
/// was packed from that no other node reads.
pub(crate) fn replace_and_empty(
    model: &mut InferenceModel,
    id: usize,
    op: Box<dyn InferenceOp>,
    constants: impl IntoIterator<Item = OutletId>,
) -> TractResult<()> {
    model.node_mut(id).op = op;
    for outlet in constants {
        if sole_reader(model, outlet, id) {
            empty_constant(model, outlet)?;
        }
    }
    Ok(())
}

/// The shape rules of `A @ W` against a constant weight of `K` rows and `N` columns, for an op
/// whose weight is packed or emptied (so no rule reads it): `A` is `[.., K]`, the output `[.., N]`.
/// The caller states the output's type.
pub(crate) fn matmul_shape_rules<'r, 'p: 'r>(
    s: &mut Solver<'r>,
    inputs: &'p [TensorProxy],
    outputs: &'p [TensorProxy],
    (k, n): (usize, usize),
) -> InferenceResult {
    check_output_arity(outputs, 1)?;
    s.equals(&outputs[0].rank, &inputs[0].rank)?;
    let (k, n) = (k.to_dim(), n.to_dim());
    s.given(&inputs[0].rank, move |s, rank| {
        let rank = usize::try_from(rank)?;
        ensure!(rank >= 1, "A must have at least one axis");
        for ax in 0..rank - 1 {
            s.equals(&outputs[0].shape[ax], &inputs[0].shape[ax])?;
        }
        s.equals(&inputs[0].shape[rank - 1], k.clone())?;
        s.equals(&outputs[0].shape[rank - 1], n.clone())
    })
}

/// Replaces a constant by an empty one of its type: its value is held nowhere else any more.
pub(crate) fn empty_constant(model: &mut InferenceModel, outlet: OutletId) -> TractResult<()> {
    let Some(value) = constant(model, outlet) else { return Ok(()) };
    let empty = Arc::new(Tensor::zero_dt(value.datum_type(), &[0])?);
    drop(value);
    model.node_mut(outlet.node).op = Box::new(Const::new(empty.clone())?);
    model.set_outlet_fact(outlet, InferenceFact::try_from(empty)?)
}

impl MatMulNBits {
    fn packable(&self) -> bool {
        let whole_blocks =
            self.block_size > 0 && self.block_size.is_multiple_of(QK) && self.k.is_multiple_of(self.block_size);
        self.bits == 4 && whole_blocks && self.n > 0 && !self.has_g_idx
    }

    /// The weight in Q4_0 and its zero-point offsets, or as the file stores it where
    /// [`crate::tract_q4_matmul::serves`] it (`shared`: other nodes read `b` too), or `None` for a
    /// form tract's op handles.
    fn pack(
        &self,
        b: &Arc<Tensor>,
        scales: &Arc<Tensor>,
        zero_points: Option<&Tensor>,
        shared: bool,
    ) -> TractResult<Option<Packed>> {
        let (k, n) = (self.k, self.n);
        let n_blocks = k / self.block_size;
        if b.datum_type() != u8::datum_type() || b.len() != n * k / 2 || scales.len() != n * n_blocks {
            return Ok(None);
        }
        let zero_points = match zero_points {
            Some(zp) if zp.datum_type() != u8::datum_type() || zp.len() != n * n_blocks.div_ceil(2) => return Ok(None),
            Some(zp) => Some(zp.try_as_plain_ram()?),
            None => None,
        };
        let zero_points = match &zero_points {
            Some(zp) => Some(zp.as_slice::<u8>()?),
            None => None,
        };
        if crate::tract_q4_matmul::serves(shared, self.compute) {
            // The graph's constants themselves (f16 scales widened), shared with any other reader.
            let scales = if scales.datum_type() == f32::datum_type() {
                scales.clone()
            } else {
                scales.cast_to::<f32>()?.into_owned().into_arc_tensor()
            };
            let weight = Q4Weight::new(n, k, self.block_size, b.clone(), scales, zero_points, self.compute)?;
            return Ok(Some(Packed::Nibbles(Arc::new(weight))));
        }
        let scales = scales.cast_to::<f32>()?;
        let scales = scales.try_as_plain_ram()?;
        let scales = scales.as_slice::<f32>()?;
        let nibbles = b.try_as_plain_ram()?;
        // `B` is `[N, blocks, block_size / 2]`: with whole blocks, that is the row-major `[N, K]`
        // nibbles, low nibble first, that Q4_0 packs from. A wider block repeats its scale over
        // each of its 32-code blocks, which changes nothing about what the weight dequantizes to.
        let per_32: Cow<[f32]> = if self.block_size == QK {
            Cow::Borrowed(scales)
        } else {
            Cow::Owned(scales.iter().flat_map(|s| std::iter::repeat_n(*s, self.block_size / QK)).collect())
        };
        let blob = Q4_0.pack_prequantized_nibbles(nibbles.as_slice::<u8>()?, &per_32, n, k)?;
        let storage = BlockQuantStorage::new(Box::new(Q4_0), n, k, Arc::new(blob))?;
        let weight = Arc::new(storage.into_tensor_with_shape(f32::datum_type(), &[1, n, k]));

        let offsets = match zero_points {
            Some(zp) => {
                let offsets: Vec<f32> = (0..n * n_blocks)
                    .map(|i| {
                        let z = zero_point(zp, n_blocks, i);
                        (f32::from(Q4_0_ZERO) - f32::from(z)) * f16::from_f32(scales[i]).to_f32()
                    })
                    .collect();
                let any = offsets.iter().any(|o| *o != 0.0);
                any.then(|| Tensor::from_shape(&[n, n_blocks], &offsets).map(Arc::new)).transpose()?
            }
            None => None,
        };
        Ok(Some(Packed::Q4_0 { weight, offsets }))
    }

    fn tracts(&self) -> TractResult<&dyn Expansion> {
        crate::tract::expansion(&*self.tracts).context("tract's MatMulNBits is not an expansion")
    }

    /// `Y = A @ W^T (+ bias)` against the packed weight, computed in f32 and cast back to A's type.
    fn wire_packed(
        &self,
        packed: &Packed,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let (k, n, block_size) = (self.k, self.n, self.block_size);
        let a_fact = model.outlet_fact(inputs[0])?.clone();
        let rank = a_fact.rank();
        ensure!(rank >= 1, "MatMulNBits: A must have at least one axis");
        let a = model.wire_node(format!("{prefix}.cast_a"), cast(f32::datum_type()), &[inputs[0]])?[0];
        let (weight, offsets) = match packed {
            Packed::Q4_0 { weight, offsets } => (weight, offsets),
            Packed::Nibbles(weight) => {
                let op = Q4MatMul { weight: weight.clone() };
                let y = model.wire_node(format!("{prefix}.matmul"), op, &[a])?[0];
                return self.finish(prefix, model, inputs, y, a_fact.datum_type);
            }
        };
        let lead: String = "abcdefgh".chars().take(rank - 1).collect();
        let fact = BlockQuantFact::new(Box::new(Q4_0), tvec!(1, n, k));
        let weight = model.wire_node(
            format!("{prefix}.weight_bq"),
            Const::new_with_exotic_fact(weight.clone(), Box::new(fact))?,
            &[],
        )?[0];
        let axes = AxesMapping::from_strs(&[format!("{lead}k"), "gnk".to_string()], &[format!("{lead}n")])?;
        let mut y = model.wire_node(format!("{prefix}.matmul"), EinSum::new(axes, f32::datum_type()), &[a, weight])?[0];
        if let Some(offsets) = offsets {
            // Σ over each quantization block of A, against the `[N, blocks]` offsets.
            let offsets = model.add_const(format!("{prefix}.zp_offsets"), offsets.clone())?;
            let blocks = tvec![(k / block_size).to_dim(), block_size.to_dim()];
            let blocked = model.wire_node(
                format!("{prefix}.a_blocked"),
                AxisOp::Reshape(rank - 1, tvec![k.to_dim()], blocks),
                &[a],
            )?[0];
            let sums = model.wire_node(
                format!("{prefix}.a_block_sums"),
                Reduce::new(tvec![rank], Reducer::Sum),
                &[blocked],
            )?[0];
            let sums = model.wire_node(format!("{prefix}.a_sums"), AxisOp::Rm(rank), &[sums])?[0];
            let axes = AxesMapping::from_strs(&[format!("{lead}z"), "nz".to_string()], &[format!("{lead}n")])?;
            let correction = model.wire_node(
                format!("{prefix}.zp_correction"),
                EinSum::new(axes, f32::datum_type()),
                &[sums, offsets],
            )?[0];
            y = wire_with_rank_broadcast(format!("{prefix}.unbias"), model, add(), &[y, correction])?[0];
        }
        self.finish(prefix, model, inputs, y, a_fact.datum_type)
    }

    /// The f32 product cast back to A's type, plus the bias.
    fn finish(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
        y: OutletId,
        a_type: DatumType,
    ) -> TractResult<TVec<OutletId>> {
        let mut y = model.wire_node(format!("{prefix}.cast_y"), cast(a_type), &[y])?[0];
        if let Some(slot) = self.bias {
            y = wire_with_rank_broadcast(format!("{prefix}.bias"), model, add(), &[y, inputs[slot]])?[0];
        }
        Ok(tvec!(y))
    }
}

impl Expansion for MatMulNBits {
    fn name(&self) -> StaticName {
        "MatMulNBits".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        // tract's rules say nothing of B, scales or zero points, which packing empties.
        self.tracts()?.rules(s, inputs, outputs)
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        match &self.packed {
            Some(packed) => self.wire_packed(packed, prefix, model, inputs),
            None => self.tracts()?.wire(prefix, model, inputs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_4_bit_weights_are_packed_and_their_originals_emptied() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/probe/matmul_nbits.onnx");
        let mut onnx = tract_onnx::onnx();
        register(&mut onnx);
        let mut model = onnx.model_for_path(&path).unwrap();
        let before = model.nodes().iter().filter_map(|n| n.op_as::<Const>()).map(|c| c.val().len()).sum::<usize>();
        // 32-wide blocks (twice) and the 64-wide block; the 16-wide one stays tract's.
        assert_eq!(pack_constant_weights(&mut model).unwrap(), 3);
        let packed: Vec<_> = model.nodes().iter().filter_map(|n| ours(n).map(|op| op.packed.is_some())).collect();
        assert_eq!(packed, [true, true, true, false]);
        let left = model.nodes().iter().filter_map(|n| n.op_as::<Const>()).map(|c| c.val().len()).sum::<usize>();
        // Left: the 16-wide form's weight and scales, and the bias.
        let (n, k) = (40, 64);
        assert_eq!(before - left, 3 * (n * k / 2) + n * 2 + n * 2 + n + n + n);
        assert_eq!(left, n * k / 2 + n * 4 + n);
        // Packing again finds nothing left to pack.
        assert_eq!(pack_constant_weights(&mut model).unwrap(), 0);
    }
}
