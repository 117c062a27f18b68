//! `MatMulInteger` for tract with its constant weight's column sums computed once, at load.
//!
//! tract 0.23 lowers an integer matmul with zero points into the int8 kernel plus compensation
//! terms, one of which is `a_zero_point × Σₖ B[k, n]`. For a constant `B` that sum should be a
//! constant too, but tract's constant folding refuses it: `B` has two consumers and the i32 cast
//! on the way is four times its size. So every run cast each weight to i32 and summed it with a
//! generic ndarray fold: in an int8 LLaMA-135M decode step that was most of the 224 ms (the int8
//! kernel itself 7 % of the samples), 4.5× slower than fp32.
//!
//! Here a constant `B` without a zero point (`quantize_dynamic`'s symmetric int8 weights) is wired as tract's plain
//! i8 × i8 → i32 matmul, which runs its int8 kernels, and the compensation is spelled out with
//! the sums computed in Rust while wiring:
//! `Σₖ (A - a0)·B = A·B - a0·ΣB`. That is the path on CPUs where tract's int8 kernel is the
//! faster one (AMX, or AVX-VNNI without AVX-512). On the others with AVX2 (AVX2 alone, where
//! tract's kernel is slower than float32, and AVX-512 VNNI) every constant `B`, with or without
//! zero points, takes `EdgeinferI8MatMul` instead ([`crate::tract_i8_matmul`]). Anything else (a
//! `B` computed at run time, a per-row `a_zero_point`, and where tract's kernel serves, a weight
//! zero point other than 0 after the shift to i8) keeps tract's own op.
//!
//! Where `EdgeinferI8MatMul` serves, [`pack_constant_weights`] packs each constant weight before
//! translation and empties the graph's constant as it goes, as `tract_matmul_nbits` does for
//! 4-bit weights: packed while wiring, every packed weight was held beside every original until
//! the whole graph was translated, and loading LLaMA-135M int8 peaked at 1.65× its files.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb;
use tract_onnx::tract_core::ops::cast::cast;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::math::{mul, sub};
use tract_onnx::tract_hir::internal::*;

use crate::tract_i8_matmul::{I8MatMul, I8Weight};

/// The parser tract registered for `MatMulInteger`, kept for the forms handled by tract's op.
static TRACTS_OWN: std::sync::OnceLock<crate::tract::OpParser> = std::sync::OnceLock::new();

/// Replaces tract's parser for `MatMulInteger` with this one.
pub(crate) fn register(onnx: &mut tract_onnx::Onnx) {
    if let Some(own) = onnx.op_register.0.get("MatMulInteger") {
        let _ = TRACTS_OWN.set(*own);
        onnx.op_register.insert("MatMulInteger", parse);
    }
}

fn parse(ctx: &ParsingContext, node: &pb::NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let own = TRACTS_OWN.get().context("tract's MatMulInteger parser")?;
    let (tracts, closures) = own(ctx, node)?;
    let present = |i: usize| node.input.get(i).is_some_and(|n| !n.is_empty());
    let a_zero_point = present(2).then_some(2);
    let b_zero_point = present(3).then(|| 2 + usize::from(present(2)));
    Ok((expand(MatMulInteger { a_zero_point, b_zero_point, packed: None, tracts }), closures))
}

#[derive(Debug, Clone)]
struct MatMulInteger {
    /// Input slots of the optional zero points (absent inputs take no slot).
    a_zero_point: Option<usize>,
    b_zero_point: Option<usize>,
    /// The weight packed for `EdgeinferI8MatMul` by [`pack_constant_weights`], its constants
    /// emptied in the graph.
    packed: Option<Arc<I8Weight>>,
    /// tract's own op for the same node.
    tracts: Box<dyn InferenceOp>,
}

impl MatMulInteger {
    fn tracts(&self) -> TractResult<&dyn Expansion> {
        crate::tract::expansion(&*self.tracts).context("tract's MatMulInteger is not an expansion")
    }
}

/// Packs the constant weight of every `MatMulInteger` that `EdgeinferI8MatMul` will compute, and
/// empties the constants it came from (the weight, and its zero points) where no other node
/// reads them, one weight at a time. Returns how many weights were packed.
pub(crate) fn pack_constant_weights(model: &mut InferenceModel) -> TractResult<usize> {
    use crate::tract_matmul_nbits::{constant, replace_and_empty};
    if !crate::tract_i8_matmul::serves() {
        return Ok(0);
    }
    let mut packed = 0;
    for id in 0..model.nodes().len() {
        let Some(op) = ours(model.node(id)) else { continue };
        let inputs = model.node(id).inputs.clone();
        // A per-row `a_zero_point` keeps tract's op, which needs the weight: only a scalar one.
        if op.packed.is_some() || op.a_zero_point.is_some_and(|slot| !scalar(model, inputs[slot])) {
            continue;
        }
        let Some(b) = constant(model, inputs[1]) else { continue };
        let b_zero_point = match op.b_zero_point.map(|slot| constant(model, inputs[slot])) {
            Some(None) => continue,
            Some(Some(zp)) => Some(zp),
            None => None,
        };
        let Some(weight) = pack(&b, b_zero_point.as_deref())? else { continue };
        let mut op = op.clone();
        op.packed = Some(Arc::new(weight));
        let emptied: Vec<OutletId> =
            [Some(1), op.b_zero_point].into_iter().flatten().map(|slot| inputs[slot]).collect();
        drop((b, b_zero_point));
        replace_and_empty(model, id, expand(op), emptied)?;
        packed += 1;
    }
    Ok(packed)
}

fn ours(node: &InferenceNode) -> Option<&MatMulInteger> {
    crate::tract::expansion_of(node)
}

/// Whether `outlet` is one value: `DynamicQuantizeLinear`'s zero point, or a value of a known
/// shape of one element.
fn scalar(model: &InferenceModel, outlet: OutletId) -> bool {
    let node = model.node(outlet.node);
    if crate::tract::expansion(&*node.op).is_some_and(|e| e.name() == "DynamicQuantizeLinear") {
        return outlet.slot == 2;
    }
    model
        .outlet_fact(outlet)
        .ok()
        .and_then(|fact| fact.shape.concretize())
        .is_some_and(|shape| shape.iter().all(|d| d.to_usize().ok() == Some(1)))
}

/// A constant `[K, N]` int8 or uint8 weight and its zero points (one, or one per column) packed
/// for `EdgeinferI8MatMul`, or `None` for a form it does not take.
fn pack(b: &Tensor, b_zero_point: Option<&Tensor>) -> TractResult<Option<I8Weight>> {
    if b.rank() != 2 {
        return Ok(None);
    }
    let Some((shift, b_zero_points)) = weight_zero_points(b, b_zero_point, b.shape()[1])? else { return Ok(None) };
    pack_shifted(b, shift, &b_zero_points).map(Some)
}

/// A `[K, N]` weight packed, moved to i8 by `shift` (see [`weight_zero_points`]).
fn pack_shifted(b: &Tensor, shift: i32, b_zero_points: &[i32]) -> TractResult<I8Weight> {
    let (k, n) = (b.shape()[0], b.shape()[1]);
    let source = b.try_as_plain_ram()?;
    if shift == 0 {
        let values = source.as_slice::<i8>()?;
        I8Weight::new(k, n, |i| i16::from(values[i]), b_zero_points)
    } else {
        let values = source.as_slice::<u8>()?;
        I8Weight::new(k, n, |i| i16::from(values[i]) - 128, b_zero_points)
    }
}

/// The shift that takes the weight to i8 (128 for a u8 one, else 0) and its zero points after it
/// (per column, or one for all; an absent one is 0), or `None` for a type or a count of zero
/// points this module does not take.
fn weight_zero_points(b: &Tensor, zero_point: Option<&Tensor>, n: usize) -> TractResult<Option<(i32, Vec<i32>)>> {
    let shift = match b.datum_type() {
        dt if dt == u8::datum_type() => 128,
        dt if dt == i8::datum_type() => 0,
        _ => return Ok(None),
    };
    let zero_points = match zero_point {
        Some(zp) => {
            let zp = zp.cast_to::<i32>()?;
            let zp = zp.try_as_plain_ram()?.as_slice::<i32>()?;
            if !(zp.len() == 1 || zp.len() == n) {
                return Ok(None);
            }
            zp.iter().map(|z| z - shift).collect()
        }
        None => vec![-shift],
    };
    Ok(Some((shift, zero_points)))
}

impl Expansion for MatMulInteger {
    fn name(&self) -> StaticName {
        "MatMulInteger".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        let Some(weight) = &self.packed else { return self.tracts()?.rules(s, inputs, outputs) };
        // tract's rules read the weight's shape, which packing emptied.
        s.equals(&outputs[0].datum_type, i32::datum_type())?;
        crate::tract_matmul_nbits::matmul_shape_rules(s, inputs, outputs, (weight.k(), weight.n()))
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        match self.wire_with_constant_weight(prefix, model, inputs)? {
            Some(wired) => Ok(wired),
            None => self.tracts()?.wire(prefix, model, inputs),
        }
    }
}

impl MatMulInteger {
    /// The form described in the module notes, or `None` for tract's own.
    fn wire_with_constant_weight(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<Option<TVec<OutletId>>> {
        let (a, a_fact) = (inputs[0], model.outlet_fact(inputs[0])?.clone());
        let rank = a_fact.rank();
        let a_is_u8 = match a_fact.datum_type {
            dt if dt == u8::datum_type() => true,
            dt if dt == i8::datum_type() => false,
            dt => {
                ensure!(self.packed.is_none(), "MatMulInteger {prefix}: A is {dt:?}, not uint8 or int8");
                return Ok(None);
            }
        };
        // a0: a scalar (a per-row zero point is left to tract; a packed weight was checked for it).
        let scalar_a0 = match self.a_zero_point {
            Some(slot) => model.outlet_fact(inputs[slot])?.shape.volume() == 1.to_dim(),
            None => true,
        };
        if let Some(weight) = &self.packed {
            ensure!(scalar_a0 && rank > 0, "MatMulInteger {prefix}: a per-row a_zero_point or a scalar A");
            let a0 = self.wire_a0(prefix, model, inputs)?;
            let op = I8MatMul { weight: weight.clone() };
            let operands: TVec<OutletId> = std::iter::once(a).chain(a0).collect();
            return Ok(Some(model.wire_node(format!("{prefix}.i8_matmul"), op, &operands)?));
        }
        let b_fact = model.outlet_fact(inputs[1])?.clone();
        let Some(b) = b_fact.konst.clone() else { return Ok(None) };
        if b.rank() != 2 || rank == 0 || !scalar_a0 {
            return Ok(None);
        }
        let (k, n) = (b.shape()[0], b.shape()[1]);
        let b_zero_point = match self.b_zero_point {
            Some(slot) => match model.outlet_fact(inputs[slot])?.konst.clone() {
                Some(zp) => Some(zp),
                None => return Ok(None),
            },
            None => None,
        };
        let Some((shift, b_zero_points)) = weight_zero_points(&b, b_zero_point.as_deref(), n)? else {
            return Ok(None);
        };
        // Ours takes any of these (see `tract_i8_matmul`). tract's kernel is given the weight
        // zero point 0 only: any other needs ΣA per row, broadcast against it, and tract 0.23
        // fuses that product into the ΣA matmul wrongly ("Trying to substitute a 130,48,I32 by
        // 130,1,I32"), so such weights (quantize_dynamic's uint8) keep tract's own op there.
        // (Where ours serves, `pack_constant_weights` packed the weight before translation; one
        // left for here is one it could not empty, e.g. shared, packed now all the same.)
        let ours = crate::tract_i8_matmul::serves();
        if !ours && b_zero_points.iter().any(|z| *z != 0) {
            return Ok(None);
        }
        let a0 = self.wire_a0(prefix, model, inputs)?;
        if ours {
            let op = I8MatMul { weight: Arc::new(pack_shifted(&b, shift, &b_zero_points)?) };
            let operands: TVec<OutletId> = std::iter::once(a).chain(a0).collect();
            return Ok(Some(model.wire_node(format!("{prefix}.i8_matmul"), op, &operands)?));
        }

        // An i8 weight is wired as it is (no copy); a u8 one is shifted into one new i8 tensor.
        // Both the original and anything made from it stay alive until the whole model is
        // translated, so a widened or extra copy here is a copy of the weight at the load's peak
        // (an i32 cast of LLaMA-135M's int8 lm_head alone was 113 MB).
        let shifted = if shift == 0 {
            None
        } else {
            let mut b_i8 = Tensor::zero::<i8>(&[k, n])?;
            {
                let source = b.try_as_plain_ram()?;
                let mut target = b_i8.try_as_plain_ram_mut()?;
                for (t, v) in target.as_slice_mut::<i8>()?.iter_mut().zip(source.as_slice::<u8>()?) {
                    *t = (i16::from(*v) - 128) as i8;
                }
            }
            Some(b_i8)
        };
        let mut b_sums = vec![0i32; n];
        {
            let b_i8 = shifted.as_ref().unwrap_or(&*b).try_as_plain_ram()?;
            for (i, v) in b_i8.as_slice::<i8>()?.iter().enumerate() {
                b_sums[i % n] += i32::from(*v);
            }
        }
        let b_wire = match shifted {
            Some(b_i8) => model.add_const(format!("{prefix}.b_i8"), b_i8)?,
            None => inputs[1],
        };

        // A as i8 likewise.
        let (a, a0) = if a_is_u8 {
            let a = model.wire_node(
                format!("{prefix}.a_i8"),
                tract_onnx::tract_core::ops::quant::offset_u8_as_i8(),
                &[a],
            )?[0];
            let a0 = match a0 {
                Some(a0) => {
                    let shift = model.add_const(format!("{prefix}.128"), tensor0(128i32))?;
                    model.wire_node(format!("{prefix}.a0_i8"), sub(), &[a0, shift])?[0]
                }
                None => model.add_const(format!("{prefix}.a0_i8"), tensor0(-128i32))?,
            };
            (a, Some(a0))
        } else {
            (a, a0)
        };

        let lead: String = "abcdefgh".chars().take(rank.saturating_sub(1)).collect();
        let axes = AxesMapping::from_strs(&[format!("{lead}k"), "kn".to_string()], &[format!("{lead}n")])?;
        let mut y = model.wire_node(format!("{prefix}.matmul"), EinSum::new(axes, i32::datum_type()), &[a, b_wire])?[0];

        // - a0 · ΣB[n]
        if let Some(a0) = a0 {
            let sums = model.add_const(format!("{prefix}.b_sums"), Tensor::from_shape(&[n], &b_sums)?)?;
            let a0 = with_leading_axes(model, prefix, "a0", a0, rank)?;
            let sums = with_leading_axes(model, prefix, "b_sums", sums, rank - 1)?;
            let term = model.wire_node(format!("{prefix}.a0_b_sums"), mul(), &[a0, sums])?[0];
            y = model.wire_node(format!("{prefix}.minus_a0_b_sums"), sub(), &[y, term])?[0];
        }
        Ok(Some(tvec![y]))
    }

    /// `a_zero_point` as a scalar i32, where the node has one.
    fn wire_a0(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<Option<OutletId>> {
        let Some(slot) = self.a_zero_point else { return Ok(None) };
        let rank0 = model.outlet_fact(inputs[slot])?.rank();
        let mut wire = model.wire_node(format!("{prefix}.a0_i32"), cast(i32::datum_type()), &[inputs[slot]])?[0];
        for axis in (0..rank0).rev() {
            wire = model.wire_node(format!("{prefix}.a0_scalar_{axis}"), AxisOp::Rm(axis), &[wire])?[0];
        }
        Ok(Some(wire))
    }
}

/// `wire` with `count` leading axes of extent 1 (tract's binary ops want operands of one rank).
fn with_leading_axes(
    model: &mut TypedModel,
    prefix: &str,
    name: &str,
    mut wire: OutletId,
    count: usize,
) -> TractResult<OutletId> {
    for axis in 0..count {
        wire = model.wire_node(format!("{prefix}.{name}_axis{axis}"), AxisOp::Add(0), &[wire])?[0];
    }
    Ok(wire)
}

#[cfg(test)]
mod tests {
    use crate::{ModelSource, SessionOptions};
    use std::path::Path;
    use tract_onnx::prelude::InferenceModelExt;

    #[test]
    fn constant_weights_take_the_precomputed_sums() {
        crate::tract_i8_matmul::FORCE.with(|f| f.set(Some(false)));
        let probe = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/probe/matmul_integer.onnx");
        let (model, _, _) = crate::tract::parse(&ModelSource::File(probe), &SessionOptions::default()).unwrap();
        let typed = model.into_typed().unwrap();
        let names: Vec<&str> = typed.nodes().iter().map(|n| n.name.as_str()).collect();
        // y_int8 (no weight zero point) and y_uint8_128 (a uint8 weight centred on 128, shifted
        // to int8) get their column sums as a constant; y_uint8 and y_both have other weight
        // zero points and y_uint8_no_zp a uint8 weight centred on 0, which keep tract's own op
        // (the integration test checks all five against numpy).
        assert_eq!(names.iter().filter(|n| n.ends_with(".b_sums")).count(), 2, "{names:?}");
    }

    /// Where `EdgeinferI8MatMul` serves, the parsed graph holds the packed weights only: every
    /// form's weight constant was emptied before translation.
    #[test]
    fn packed_weights_leave_no_constant_behind() {
        use tract_onnx::tract_core::ops::konst::Const;
        crate::tract_i8_matmul::FORCE.with(|f| f.set(Some(true)));
        let probe = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/probe/matmul_integer.onnx");
        let (model, _, _) = crate::tract::parse(&ModelSource::File(probe), &SessionOptions::default()).unwrap();
        crate::tract_i8_matmul::FORCE.with(|f| f.set(None));
        let packed = model.nodes().iter().filter_map(super::ours).filter(|op| op.packed.is_some()).count();
        let avx2 = cfg!(target_arch = "x86_64") && std::arch::is_x86_feature_detected!("avx2");
        assert_eq!(packed, if avx2 { 5 } else { 0 });
        // The weights are [40, 24]. b_int8 and b_both are emptied; b_uint8, which three nodes
        // read, stays (each packed its own copy).
        let weights = model.nodes().iter().filter_map(|n| n.op_as::<Const>()).filter(|c| c.val().len() == 40 * 24);
        assert_eq!(weights.count(), if avx2 { 1 } else { 3 });
    }

    /// The same forms through `EdgeinferI8MatMul` (the default on most CPUs with AVX2), against
    /// numpy's integers, bit for bit.
    #[test]
    fn constant_weights_take_the_avx2_kernel_and_give_numpys_integers() {
        use crate::{Backend, Tensor};
        crate::tract_i8_matmul::FORCE.with(|f| f.set(Some(true)));
        let probe = |f: &str| Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/probe").join(f);
        let source = ModelSource::File(probe("matmul_integer.onnx"));
        let (model, _, _) = crate::tract::parse(&source, &SessionOptions::default()).unwrap();
        let typed = model.into_typed().unwrap();
        // Every form: the weight's zero points are ours to apply too.
        let ours = typed.nodes().iter().filter(|n| n.name.ends_with(".i8_matmul")).count();
        let expected = if cfg!(target_arch = "x86_64") && std::arch::is_x86_feature_detected!("avx2") { 5 } else { 0 };
        assert_eq!(ours, expected);
        for threads in [None, Some(2)] {
            let options = SessionOptions { intra_threads: threads, ..SessionOptions::default() };
            let session = crate::tract::TractBackend.load(&source, &options).unwrap();
            let inputs = ["a", "a_zero_point"]
                .iter()
                .map(|i| (i.to_string(), Tensor::read_npy(&probe(&format!("matmul_integer.{i}.npy"))).unwrap()))
                .collect();
            let mut out = session.run(inputs).unwrap();
            for y in ["y_int8", "y_uint8", "y_both", "y_uint8_no_zp", "y_uint8_128"] {
                let want = Tensor::read_npy(&probe(&format!("matmul_integer.{y}.npy"))).unwrap();
                assert_eq!(out.take(y).unwrap(), want, "{y}");
            }
        }
        crate::tract_i8_matmul::FORCE.with(|f| f.set(None));
    }
}
