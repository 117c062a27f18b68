//! `MatMulBnb4` for tract, which has no parser for it: ONNX Runtime's contrib op for
//! bitsandbytes-style 4-bit weights, what transformers.js's quantizer writes as
//! `model_bnb4.onnx` (NF4, blocks of 64).
//!
//! The weight `B` is the `[N, K]` matrix (transposed, `transB = 1`, the only form ONNX Runtime's
//! CPU kernel reads as a plain product) flattened and cut into blocks of `block_size`
//! consecutive elements, two codes a byte, the first in the high nibble. A code indexes a
//! 16-entry table, NF4 (`quant_type = 1`) or FP4 (`0`), scaled by its block's `absmax`. The
//! tables are not linear in the code, so no integer kernel takes them.
//!
//! On x86-64 CPUs with AVX2 or AVX-512F the weight stays as the file holds it (the graph's own
//! constants, no copy) and [`crate::tract_q4_matmul`]'s float32 kernels compute the product with
//! the code book in a register, looking 8 or 16 codes up per instruction (`vpermps`), when `K`
//! is a whole number of 32-code blocks (every transformers.js `bnb4` export: blocks of 64).
//! Elsewhere, as ONNX Runtime's CPU kernel does, the weight is decoded to float32 and multiplied
//! in float32; ONNX Runtime decodes it again at every run, here it is decoded once, at load, into
//! a constant tract's own matmul packs, which holds it in 8× the bytes of the file.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb;
use tract_onnx::tract_core::ops::cast::cast;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_hir::internal::*;

use crate::tract_q4_matmul::{Q4MatMul, Q4Weight};

/// bitsandbytes' NF4 code book (normal-float quantiles), as ONNX Runtime's CPU kernel holds it.
pub(crate) const NF4: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// bitsandbytes' FP4 code book (a sign bit, then 3 bits of exponent and mantissa), divided by
/// its largest value 12.
pub(crate) const FP4: [f32; 16] = [
    0.0,
    5.208_333_4e-3,
    0.666_666_7,
    1.0,
    0.333_333_34,
    0.5,
    0.166_666_67,
    0.25,
    -0.0,
    -5.208_333_4e-3,
    -0.666_666_7,
    -1.0,
    -0.333_333_34,
    -0.5,
    -0.166_666_67,
    -0.25,
];

/// Registers the parser for `MatMulBnb4`.
pub(crate) fn register(onnx: &mut tract_onnx::Onnx) {
    onnx.op_register.insert("MatMulBnb4", parse);
}

fn parse(_ctx: &ParsingContext, node: &pb::NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let attr = |name: &str| node.attribute.iter().find(|a| a.name == name).map(|a| a.i);
    let positive = |name: &str| -> TractResult<usize> {
        attr(name)
            .and_then(|v| usize::try_from(v).ok())
            .filter(|v| *v > 0)
            .with_context(|| format!("MatMulBnb4 {:?}: attribute {name} missing or not positive", node.name))
    };
    let (k, n, block_size) = (positive("K")?, positive("N")?, positive("block_size")?);
    let table = match attr("quant_type") {
        Some(0) => &FP4,
        Some(1) => &NF4,
        other => bail!("MatMulBnb4 {:?}: quant_type {other:?} is neither 0 (FP4) nor 1 (NF4)", node.name),
    };
    if attr("transB").unwrap_or(1) != 1 {
        bail!("MatMulBnb4 {:?}: transB = 0 is not supported (ONNX Runtime's CPU kernel reads B as [N, K])", node.name);
    }
    if !block_size.is_power_of_two() || block_size < 16 {
        bail!("MatMulBnb4 {:?}: block_size {block_size} is not a power of two of at least 16", node.name);
    }
    Ok((expand(MatMulBnb4 { k, n, block_size, table }), vec![]))
}

#[derive(Debug, Clone)]
struct MatMulBnb4 {
    k: usize,
    n: usize,
    block_size: usize,
    /// The code book `quant_type` names.
    table: &'static [f32; 16],
}

impl MatMulBnb4 {
    /// The weight `[N, K]` in float32: `table[code] · absmax[block]`, in float32 as ONNX Runtime
    /// computes it.
    fn decode(&self, b: &Tensor, absmax: &Tensor) -> TractResult<Tensor> {
        let numel = self.n.checked_mul(self.k).context("MatMulBnb4: N × K overflows")?;
        ensure!(b.datum_type() == u8::datum_type(), "MatMulBnb4: B is {:?}, not uint8", b.datum_type());
        ensure!(
            b.len() == numel.div_ceil(2),
            "MatMulBnb4: B holds {} bytes, N = {} × K = {} needs {}",
            b.len(),
            self.n,
            self.k,
            numel.div_ceil(2)
        );
        let blocks = numel.div_ceil(self.block_size);
        ensure!(
            absmax.len() == blocks,
            "MatMulBnb4: absmax holds {} values, {blocks} blocks of {} need one each",
            absmax.len(),
            self.block_size
        );
        let absmax = absmax.cast_to::<f32>()?;
        let absmax = absmax.try_as_plain_ram()?;
        let absmax = absmax.as_slice::<f32>()?;
        let b = b.try_as_plain_ram()?;
        let codes = b.as_slice::<u8>()?;
        let mut weight = Vec::with_capacity(numel);
        for (i, byte) in codes.iter().enumerate() {
            for (j, code) in [byte >> 4, byte & 0x0f].into_iter().enumerate() {
                let at = 2 * i + j;
                if at < numel {
                    weight.push(self.table[usize::from(code)] * absmax[at / self.block_size]);
                }
            }
        }
        Tensor::from_shape(&[self.n, self.k], &weight)
    }

    /// The weight as the file holds it, for [`Q4MatMul`], where it serves code-book weights and
    /// the blocks are whole rows' blocks of whole 32-code steps; `None` otherwise.
    fn four_bit(&self, b: &Arc<Tensor>, absmax: &Arc<Tensor>) -> TractResult<Option<Q4Weight>> {
        let whole = self.block_size.is_multiple_of(32) && self.k.is_multiple_of(self.block_size);
        let sizes = self
            .n
            .checked_mul(self.k)
            .is_some_and(|numel| b.len() == numel / 2 && absmax.len() == numel / self.block_size);
        if !crate::tract_q4_matmul::serves_books() || !whole || !sizes || b.datum_type() != u8::datum_type() {
            return Ok(None);
        }
        let absmax = if absmax.datum_type() == f32::datum_type() {
            absmax.clone()
        } else {
            absmax.cast_to::<f32>()?.into_owned().into_arc_tensor()
        };
        Q4Weight::bnb4(self.n, self.k, self.block_size, b.clone(), absmax, self.table).map(Some)
    }
}

impl Expansion for MatMulBnb4 {
    fn name(&self) -> StaticName {
        "MatMulBnb4".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 3)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        crate::tract_matmul_nbits::matmul_shape_rules(s, inputs, outputs, (self.k, self.n))
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let constant = |slot: usize, what: &str| -> TractResult<Arc<Tensor>> {
            model.outlet_fact(inputs[slot])?.konst.clone().with_context(|| {
                format!("MatMulBnb4 {prefix}: {what} is computed at run time; tract takes a constant one only")
            })
        };
        let (b, absmax) = (constant(1, "the weight B")?, constant(2, "absmax")?);
        let a_fact = model.outlet_fact(inputs[0])?.clone();
        let rank = a_fact.rank();
        ensure!(rank >= 1, "MatMulBnb4 {prefix}: A must have at least one axis");
        let a = model.wire_node(format!("{prefix}.cast_a"), cast(f32::datum_type()), &[inputs[0]])?[0];
        if let Some(weight) = self.four_bit(&b, &absmax)? {
            let y = model.wire_node(format!("{prefix}.matmul"), Q4MatMul { weight: Arc::new(weight) }, &[a])?[0];
            return model.wire_node(format!("{prefix}.cast_y"), cast(a_fact.datum_type), &[y]);
        }
        let weight = self.decode(&b, &absmax)?;
        drop((b, absmax));
        tracing::debug!(node = prefix, n = self.n, k = self.k, "MatMulBnb4 weight decoded to float32");
        let weight = model.add_const(format!("{prefix}.weight"), weight)?;
        let lead: String = "abcdefgh".chars().take(rank - 1).collect();
        let axes = AxesMapping::from_strs(&[format!("{lead}k"), "nk".to_string()], &[format!("{lead}n")])?;
        let y = model.wire_node(format!("{prefix}.matmul"), EinSum::new(axes, f32::datum_type()), &[a, weight])?[0];
        model.wire_node(format!("{prefix}.cast_y"), cast(a_fact.datum_type), &[y])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_decode_high_nibble_first_with_their_blocks_absmax() {
        let op = MatMulBnb4 { k: 3, n: 11, block_size: 16, table: &NF4 };
        // 33 elements: 17 bytes, the last low nibble unused; two full blocks and one of one.
        let bytes: Vec<u8> = (0..17u8).map(|i| (i % 16) << 4 | (15 - i % 16)).collect();
        let b = Tensor::from_shape(&[17], &bytes).unwrap();
        let absmax = Tensor::from_shape(&[3], &[1.0f32, 2.0, 4.0]).unwrap();
        let w = op.decode(&b, &absmax).unwrap();
        let w = w.try_as_plain_ram().unwrap();
        let w = w.as_slice::<f32>().unwrap();
        assert_eq!(w.len(), 33);
        assert_eq!((w[0], w[1]), (NF4[0], NF4[15]));
        assert_eq!((w[16], w[17]), (NF4[8] * 2.0, NF4[7] * 2.0));
        assert_eq!(w[32], NF4[0] * 4.0);
        // A weight of the wrong size is an error, not a panic.
        let short = Tensor::from_shape(&[16], &bytes[..16]).unwrap();
        assert!(op.decode(&short, &absmax).is_err());
    }

    #[test]
    fn the_code_books_are_bitsandbytes() {
        assert!(NF4.windows(2).all(|w| w[0] < w[1]));
        // FP4: a sign bit over the positive half.
        for (pos, neg) in FP4[..8].iter().zip(&FP4[8..]) {
            assert_eq!(*neg, -pos);
        }
        assert_eq!(FP4[3], 1.0);
        assert!((FP4[1] * 12.0 - 0.0625).abs() < 1e-7);
    }
}
