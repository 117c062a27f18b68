//! `EdgeinferCacheMatMul`: ONNX `MatMul(a, b)` for tract with `b`, the side that holds the KV
//! cache, as the matrix tract's kernels tile.
//!
//! tract computes a matmul as `m × n` tiles of a fixed kernel (64 × 3 rows and columns of the
//! output on AVX-512, 64 × 1 for a single column), with `m` taken from its first operand. With
//! both dims symbolic it keeps the operands in graph order unless it can prove `n > m`. The
//! attention scores `Q · Kᵀ` of a decode step have a few query rows (`m`, the query heads of a
//! KV head times one position) against the whole cache (`n`, hundreds of positions): every tile
//! computed 64 rows of which 3 were real. In a LLaMA-135M decode at 256 positions that matmul
//! took 8 ms of a 44 ms step, sixteen times the `P · V` matmul of the same size, which tract
//! orients the other way. This op is the same product with its operands swapped and transposed
//! (`Yᵀ = bᵀ · aᵀ`), so `m` is the cache's positions: the long side in every step (a prefill has
//! as many positions as query rows per head, a decode step more).
//!
//! `tract_rewrite` writes it in the place of a `MatMul` whose `b` comes from a `past_key*` graph
//! input through data movement only (see `feeds_from_past_keys` there).

use tract_onnx::model::ParsingContext;
use tract_onnx::pb;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::matmul::MatMulInference;

/// The op type `tract_rewrite` writes, registered with the ONNX parser by [`register`].
pub(crate) const OP_TYPE: &str = "EdgeinferCacheMatMul";

/// Teaches `onnx` to parse [`OP_TYPE`] nodes.
pub(crate) fn register(onnx: &mut tract_onnx::Onnx) {
    onnx.op_register.insert(OP_TYPE, parse);
}

fn parse(_ctx: &ParsingContext, _node: &pb::NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(CacheMatMul { plain: MatMulInference::default() }), vec![]))
}

/// `MatMul(a, b)`, wired as `(bᵀ · aᵀ)ᵀ` with `b` first.
#[derive(Debug, Clone)]
struct CacheMatMul {
    /// ONNX MatMul as tract parses it: the rules, and the product of a vector operand.
    plain: MatMulInference,
}

/// The product with the operands in tract's order (`b`, `a`), each read transposed, and the
/// result written transposed: `Σₖ a[n, k] · b[k, m]` stored as `[n, m]`, which is `a · b`.
fn swapped() -> MatMulInference {
    MatMulInference::default().with_a_trans(true).with_b_trans(true).with_c_trans(true)
}

impl Expansion for CacheMatMul {
    fn name(&self) -> StaticName {
        OP_TYPE.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        // The plain matmul's rules: the same shapes and types as ONNX MatMul.
        self.plain.rules(s, inputs, outputs)
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let a_rank = model.outlet_fact(inputs[0])?.rank();
        let b_rank = model.outlet_fact(inputs[1])?.rank();
        if a_rank < 2 || b_rank < 2 {
            // A vector operand has no rows to tile: the plain product.
            return self.plain.wire(prefix, model, inputs);
        }
        swapped().wire(prefix, model, &[inputs[1], inputs[0]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `a · b` with numpy's broadcasting of the leading axes, written out.
    fn reference(a: &tract_ndarray::ArrayD<f32>, b: &tract_ndarray::ArrayD<f32>) -> tract_ndarray::ArrayD<f32> {
        let (a, b) = (
            a.view().into_dimensionality::<tract_ndarray::Ix4>().unwrap(),
            b.view().into_dimensionality::<tract_ndarray::Ix4>().unwrap(),
        );
        let lead = |i: usize| a.shape()[i].max(b.shape()[i]);
        let (m, k, n) = (a.shape()[2], a.shape()[3], b.shape()[3]);
        tract_ndarray::Array4::from_shape_fn((lead(0), lead(1), m, n), |(i, j, r, c)| {
            let (ai, aj) = (i.min(a.shape()[0] - 1), j.min(a.shape()[1] - 1));
            let (bi, bj) = (i.min(b.shape()[0] - 1), j.min(b.shape()[1] - 1));
            (0..k).map(|x| a[[ai, aj, r, x]] * b[[bi, bj, x, c]]).sum()
        })
        .into_dyn()
    }

    #[test]
    fn the_swapped_product_is_matmul_with_broadcasting() {
        let shapes =
            [([2usize, 1, 3, 5], [1usize, 4, 5, 7]), ([1, 3, 1, 64], [1, 3, 64, 40]), ([1, 2, 9, 8], [1, 2, 8, 9])];
        for (a_shape, b_shape) in shapes {
            let value = |shape: &[usize], seed: f32| {
                tract_ndarray::ArrayD::from_shape_fn(shape, |ix| {
                    let i: usize = tract_ndarray::Dimension::slice(&ix).iter().fold(0, |acc, v| acc * 31 + v);
                    ((i as f32 + seed) * 0.37).sin()
                })
            };
            let (a, b) = (value(&a_shape, 0.0), value(&b_shape, 1.0));
            let mut model = InferenceModel::default();
            let a_in = model.add_source("a", f32::fact(a_shape).into()).unwrap();
            let b_in = model.add_source("b", f32::fact(b_shape).into()).unwrap();
            let y =
                model.wire_node("y", expand(CacheMatMul { plain: MatMulInference::default() }), &[a_in, b_in]).unwrap();
            model.select_output_outlets(&y).unwrap();
            let plan = model.into_optimized().unwrap().into_runnable().unwrap();
            let out = plan.run(tvec!(a.clone().into_tvalue(), b.clone().into_tvalue())).unwrap();
            let got = out[0].to_plain_array_view::<f32>().unwrap().to_owned();
            let want = reference(&a, &b);
            assert_eq!(got.shape(), want.shape(), "{a_shape:?} · {b_shape:?}");
            for (g, w) in got.iter().zip(want.iter()) {
                assert!((g - w).abs() <= 1e-4, "{a_shape:?} · {b_shape:?}: {g} against {w}");
            }
        }
    }
}
