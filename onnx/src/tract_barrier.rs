//! `EdgeinferBarrier`: an identity op that tract's graph optimiser cannot see through.
//!
//! `tract_rewrite` puts one between a tensor and the op that reads it where one of tract's
//! decluttering rules would rewrite that pair wrongly (see its notes on `MatMulNBits`). The op
//! hands its input on unchanged (the same buffer, no copy). It declares no axis mapping and no
//! axis changes, so tract neither folds the producer into the consumer across it nor moves axis
//! ops through it; everything else about the graph is optimised as usual.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb;
use tract_onnx::tract_hir::internal::*;

/// The op type `tract_rewrite` writes, registered with the ONNX parser by [`register`].
pub(crate) const OP_TYPE: &str = "EdgeinferBarrier";
/// The domain of the nodes `tract_rewrite` writes (only tract ever reads them).
pub(crate) const DOMAIN: &str = "edgeinfer";

/// Teaches `onnx` to parse [`OP_TYPE`] nodes.
pub(crate) fn register(onnx: &mut tract_onnx::Onnx) {
    onnx.op_register.insert(OP_TYPE, parse);
}

fn parse(_ctx: &ParsingContext, _node: &pb::NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(BarrierExpansion), vec![]))
}

/// The op at parse time: same type and shape out as in.
#[derive(Debug, Clone)]
struct BarrierExpansion;

impl Expansion for BarrierExpansion {
    fn name(&self) -> StaticName {
        OP_TYPE.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, Barrier, inputs)
    }
}

/// The op in tract's typed graph and plan.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
struct Barrier;

impl Op for Barrier {
    fn name(&self) -> StaticName {
        OP_TYPE.into()
    }

    op_as_typed_op!();
}

impl EvalOp for Barrier {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        Ok(inputs)
    }

    fn forwards_input(&self) -> Option<usize> {
        Some(0)
    }
}

impl TypedOp for Barrier {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(inputs[0].without_value()))
    }

    as_op!();
}
