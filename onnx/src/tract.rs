//! The tract backend: pure Rust, CPU only, no native dependencies.
//!
//! Symbolic input dimensions (batch, point count, sequence and past length) are handled two
//! ways. In `Auto` mode a model is first optimised once with its symbols kept symbolic, which is
//! what lets an LLM decode step after step without re-optimising. Where tract's shape analysis
//! cannot handle a symbol (the SAM decoder's point count, for one), the session instead keeps the
//! parsed model and builds one optimised plan per concrete set of input shapes, cached (LRU) so
//! that repeated shapes never re-optimise.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tract_linalg::multithread::Executor;
use tract_onnx::pb;
use tract_onnx::prelude::{
    Framework, InferenceFact, InferenceModel, InferenceModelExt, TDim, TValue, TVec, TypedFact, TypedOp,
};
use tract_onnx::tract_core::internal::{DatumType, IntoTValue, Tensor as TractTensor, bail};
use tract_onnx::tract_core::plan::SimplePlan;
use tract_onnx::tract_core::runtime::RunOptions;
use tract_onnx::tract_hir::infer::InferenceOp;

use crate::backend::{
    Backend, BackendKind, ModelSource, OptimizationLevel, ProviderReport, Session, SessionOptions, SessionStats,
    TractPlanMode, validate_with_retained,
};
use crate::error::{OnnxError, Result};
use crate::guard::no_panic;
use crate::retained::{Retain, Retained, check_retain};
use crate::tensor::{DType, Dim, Outputs, Tensor, TensorInfo};
use crate::tract_weights::{self, WeightSlots};

type Plan = Arc<SimplePlan<TypedFact, Box<dyn TypedOp>>>;
type Model = tract_onnx::tract_hir::prelude::Graph<InferenceFact, Box<dyn InferenceOp>>;

/// The tract backend. Cheap to create; holds no state.
#[derive(Clone, Debug, Default)]
pub struct TractBackend;

impl TractBackend {
    /// A new backend.
    pub fn new() -> Self {
        TractBackend
    }
}

impl Backend for TractBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Tract
    }

    fn describe(&self) -> String {
        format!("tract {}", tract_version())
    }

    fn load(&self, source: &ModelSource, options: &SessionOptions) -> Result<Box<dyn Session>> {
        let _heap = crate::heap::LoadPhase::begin();
        let session = no_panic(|| TractSession::load(source, options)).map_err(|e| invalid(source, e))??;
        Ok(Box::new(session))
    }
}

/// Version of the tract crates compiled in.
pub fn tract_version() -> &'static str {
    "0.23.9"
}

fn invalid(source: &ModelSource, reason: impl std::fmt::Display) -> OnnxError {
    OnnxError::InvalidModel { path: source.label(), backend: "tract", reason: with_hint(format!("{reason:#}")) }
}

/// A load failure that comes from an op tract lacks (or a form of one it does not take, such as
/// GroupQueryAttention with packed QKV) names the op and says what does run it.
fn with_hint(reason: String) -> String {
    let unimplemented =
        reason.split_once("Unimplemented(").and_then(|(_, rest)| rest.split_once(')')).map(|(op, _)| op.to_string());
    match unimplemented {
        Some(op) => format!("{reason} -- tract does not implement the op {op}: load this model with backend = \"ort\""),
        None if reason.contains("unsupported") || reason.contains("not supported") => {
            format!("{reason} -- tract cannot run this form of the op: load this model with backend = \"ort\"")
        }
        None => reason,
    }
}

/// How plans are made for this session.
enum Plans {
    /// One plan for every input shape.
    Symbolic(Plan),
    /// A plan per concrete input shapes (and, where a graph needs it, per value of its small
    /// shape-defining inputs such as SAM's `orig_im_size`), built on demand.
    PerShape(Box<PerShape>),
}

struct PerShape {
    model: InferenceModel,
    cache: Vec<(PlanKey, Plan)>,
    capacity: usize,
    /// Fold the values of small fixed-shape inputs into the plan (set once a graph needed it).
    fold_values: bool,
}

/// Shapes of every input, plus the values of folded inputs.
#[derive(Clone, Debug, PartialEq)]
struct PlanKey(Vec<(Vec<usize>, Option<Vec<u64>>)>);

/// A model loaded into tract.
pub struct TractSession {
    label: String,
    source: ModelSource,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    plans: Mutex<Plans>,
    options: SessionOptions,
    run_options: RunOptions,
    report: ProviderReport,
    runs: AtomicU64,
    plans_built: AtomicU64,
}

/// A parser of one ONNX op type, as `tract_onnx::Onnx::op_register` holds them (our ops that
/// wrap tract's own keep tract's parser to fall back on).
pub(crate) type OpParser = fn(
    &tract_onnx::model::ParsingContext,
    &pb::NodeProto,
) -> tract_onnx::prelude::TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

/// The expansion an op parsed by `tract_hir::ops::expandable::expand` holds.
pub(crate) fn expansion(op: &dyn InferenceOp) -> Option<&dyn tract_onnx::tract_hir::ops::expandable::Expansion> {
    let boxed = tract_onnx::tract_core::downcast_rs::Downcast::as_any(op)
        .downcast_ref::<Box<dyn tract_onnx::tract_hir::ops::expandable::Expansion>>()?;
    Some(boxed.as_ref())
}

/// The expansion of type `T` a node of the parsed model holds (one of our ops), if it is one.
pub(crate) fn expansion_of<T: 'static>(node: &tract_onnx::tract_hir::infer::InferenceNode) -> Option<&T> {
    tract_onnx::tract_core::downcast_rs::Downcast::as_any(expansion(&*node.op)?).downcast_ref::<T>()
}

pub(crate) fn parse(
    source: &ModelSource,
    options: &SessionOptions,
) -> Result<(InferenceModel, Vec<TensorInfo>, Vec<TensorInfo>)> {
    let mut onnx = tract_onnx::onnx().with_ignore_output_shapes(true).with_ignore_value_info(true);
    crate::tract_barrier::register(&mut onnx);
    crate::tract_cache_matmul::register(&mut onnx);
    crate::tract_quantize::register(&mut onnx);
    crate::tract_matmul_integer::register(&mut onnx);
    crate::tract_matmul_bnb4::register(&mut onnx);
    crate::tract_matmul_nbits::register(&mut onnx);
    let (mut proto, model_dir) = match source {
        ModelSource::File(path) => {
            let meta = std::fs::metadata(path).map_err(|e| OnnxError::Io { path: path.clone(), source: e })?;
            if !meta.is_file() {
                return Err(invalid(source, "not a regular file"));
            }
            let proto = tract_weights::decode_file(path).map_err(|e| invalid(source, not_onnx(e)))?;
            (proto, path.parent().map(Path::to_path_buf))
        }
        ModelSource::Memory(bytes) => {
            let proto = onnx.proto_model_for_read(&mut &bytes[..]).map_err(|e| invalid(source, not_onnx(e)))?;
            (proto, None)
        }
    };
    let graph = proto.graph.as_ref().ok_or_else(|| invalid(source, "not an ONNX model (no graph)"))?;
    if graph.node.is_empty() && graph.output.is_empty() {
        return Err(invalid(source, "not an ONNX model (empty graph)"));
    }
    let (inputs, outputs) = describe(graph);
    // The default domain's opset (an import without a domain, or "ai.onnx").
    let opset =
        proto.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map_or(0, |o| o.version);
    if let Some(graph) = proto.graph.as_mut() {
        let rewritten = crate::tract_rewrite::rewrite(graph, opset);
        if rewritten > 0 {
            tracing::debug!(model = %source.label(), rewritten, "graph nodes rewritten for tract (see tract_rewrite)");
        }
    }
    // The inputs as tract parses them: a rewrite may have fixed a dim the file leaves symbolic.
    let parsed_inputs = proto.graph.as_ref().map(|g| describe(g).0).unwrap_or_default();
    // Weights move from the protobuf into tract's tensors one at a time (see `tract_weights`).
    let slots = match source {
        ModelSource::File(path) => WeightSlots::take_from(&mut proto, path).map(Arc::new),
        ModelSource::Memory(_) => None,
    };
    let dir = match &slots {
        Some(slots) => {
            onnx.provider = slots.clone();
            Some(slots.model_dir())
        }
        None => model_dir.as_deref().and_then(Path::to_str),
    };
    let parsed = onnx.parse(&proto, dir).map_err(|e| invalid(source, e))?;
    if !parsed.unresolved_inputs.is_empty() {
        return Err(invalid(source, format!("unresolved graph inputs: {:?}", parsed.unresolved_inputs)));
    }
    if let Some(left) = slots.as_ref().map(|s| s.left()).filter(|&n| n > 0) {
        tracing::debug!(model = %source.label(), left, "tract parsed the model without using some weights");
    }
    drop(proto);
    let mut model = parsed.model;
    // 4-bit weights are repacked one at a time, each original dropped as soon as it is packed.
    let packed = crate::tract_matmul_nbits::pack_constant_weights(&mut model).map_err(|e| invalid(source, e))?;
    if packed > 0 {
        tracing::debug!(model = %source.label(), packed, "4-bit weights repacked for tract (see tract_matmul_nbits)");
    }
    // So are 8-bit ones, where our int8 kernel computes them.
    let packed = crate::tract_matmul_integer::pack_constant_weights(&mut model).map_err(|e| invalid(source, e))?;
    if packed > 0 {
        tracing::debug!(model = %source.label(), packed, "8-bit weights packed for tract (see tract_matmul_integer)");
    }
    if !options.dims.is_empty() {
        fix_dims(&mut model, &parsed_inputs, &options.dims).map_err(|e| invalid(source, e))?;
    }
    Ok((model, inputs, outputs))
}

impl TractSession {
    fn load(source: &ModelSource, options: &SessionOptions) -> Result<Self> {
        let (model, mut inputs, mut outputs) = parse(source, options)?;
        let mut run_options = RunOptions::default();
        if let Some(n) = options.intra_threads.filter(|&n| n > 1) {
            run_options.executor = Some(Executor::multithread_with_name(n, "tract-intra"));
        }
        let optimize = options.optimization != OptimizationLevel::Disabled;
        let has_symbols = inputs.iter().any(|i| i.shape.iter().any(|d| d.fixed().is_none()));
        let plans = match options.tract_plan {
            TractPlanMode::Symbolic => {
                Plans::Symbolic(build_plan(model, optimize, &run_options).map_err(|e| invalid(source, e))?)
            }
            TractPlanMode::PerShape => per_shape(model, options),
            TractPlanMode::Auto if !has_symbols => {
                Plans::Symbolic(build_plan(model, optimize, &run_options).map_err(|e| invalid(source, e))?)
            }
            // The model is not kept (cloned) for the fallback: its weights would stay alive next
            // to the optimised plan's packed copies, doubling the load peak. A graph that needs
            // per-shape plans (the SAM decoder, small) is parsed again instead;
            // `TractPlanMode::PerShape` skips the first attempt.
            TractPlanMode::Auto => match build_plan(model, optimize, &run_options) {
                Ok(plan) => Plans::Symbolic(plan),
                Err(e) => {
                    tracing::debug!(model = %source.label(), error = %format!("{e:#}"),
                        "tract cannot optimise with symbolic dims; planning per concrete shape");
                    let (model, again_inputs, again_outputs) = parse(source, options)?;
                    (inputs, outputs) = (again_inputs, again_outputs);
                    per_shape(model, options)
                }
            },
        };
        let report =
            ProviderReport { attempts: Vec::new(), active: vec!["tract".into()], node_placement: BTreeMap::new() };
        let symbolic = matches!(plans, Plans::Symbolic(_));
        Ok(TractSession {
            label: source.label(),
            source: source.clone(),
            inputs,
            outputs,
            plans: Mutex::new(plans),
            options: options.clone(),
            run_options,
            report,
            runs: AtomicU64::new(0),
            plans_built: AtomicU64::new(u64::from(symbolic)),
        })
    }

    /// Whether this session plans per concrete input shape (rather than once, symbolically).
    pub fn plans_per_shape(&self) -> bool {
        matches!(*self.plans.lock().unwrap_or_else(|p| p.into_inner()), Plans::PerShape(_))
    }

    /// The plan for these inputs: the symbolic one, or a cached/new per-shape one.
    fn plan_for(&self, inputs: &[TValue]) -> Result<Plan> {
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        let per = match &mut *plans {
            Plans::Symbolic(plan) => return Ok(plan.clone()),
            Plans::PerShape(per) => per,
        };
        let key = self.key(inputs, per.fold_values);
        if let Some(pos) = per.cache.iter().position(|(k, _)| *k == key) {
            let entry = per.cache.remove(pos);
            let plan = entry.1.clone();
            per.cache.push(entry);
            return Ok(plan);
        }
        let started = std::time::Instant::now();
        let plan = match self.concrete_plan(&per.model, inputs, per.fold_values) {
            Ok(plan) => plan,
            Err(first) if !per.fold_values => {
                // Some graphs size tensors from input *values* (SAM's orig_im_size): fold the
                // small fixed-shape inputs into the plan and key plans on their values too.
                let plan = self.concrete_plan(&per.model, inputs, true).map_err(|_| self.run_error(first))?;
                tracing::debug!(model = %self.label, "tract plans keyed on small input values from now on");
                per.fold_values = true;
                per.cache.clear();
                plan
            }
            Err(e) => return Err(self.run_error(e)),
        };
        let key = self.key(inputs, per.fold_values);
        tracing::debug!(model = %self.label, key = ?key.0.iter().map(|k| &k.0).collect::<Vec<_>>(),
            ms = started.elapsed().as_millis() as u64, "tract plan built");
        per.cache.push((key, plan.clone()));
        if per.cache.len() > per.capacity {
            per.cache.remove(0);
        }
        Ok(plan)
    }

    fn foldable(&self, ix: usize) -> bool {
        let info = &self.inputs[ix];
        info.shape.iter().all(|d| d.fixed().is_some())
            && info.shape.iter().filter_map(Dim::fixed).product::<usize>() <= 16
    }

    fn key(&self, inputs: &[TValue], fold: bool) -> PlanKey {
        PlanKey(
            inputs
                .iter()
                .enumerate()
                .map(|(ix, t)| {
                    let value = (fold && self.foldable(ix)).then(|| value_bits(t));
                    (t.shape().to_vec(), value)
                })
                .collect(),
        )
    }

    fn concrete_plan(&self, model: &InferenceModel, inputs: &[TValue], fold: bool) -> anyhow_compat::Result<Plan> {
        let mut concrete: InferenceModel = model.clone();
        for (ix, t) in inputs.iter().enumerate() {
            let fact = if fold && self.foldable(ix) {
                InferenceFact::from(TractTensor::clone(t))
            } else {
                InferenceFact::dt_shape(t.datum_type(), t.shape().iter().map(|&d| d as i64).collect::<Vec<_>>())
            };
            concrete.set_input_fact(ix, fact)?;
        }
        let plan = build_plan(concrete, self.options.optimization != OptimizationLevel::Disabled, &self.run_options)?;
        self.plans_built.fetch_add(1, Ordering::Relaxed);
        Ok(plan)
    }

    /// After a symbolic plan failed at run time: re-parse the model and plan per shape from now on.
    fn fall_back_to_per_shape(&self, error: &str) -> Result<()> {
        tracing::debug!(model = %self.label, %error, "tract symbolic plan failed at run time; planning per concrete shape");
        let (model, _, _) = parse(&self.source, &self.options)?;
        *self.plans.lock().unwrap_or_else(|p| p.into_inner()) = per_shape(model, &self.options);
        Ok(())
    }

    fn run_error(&self, e: impl std::fmt::Display) -> OnnxError {
        OnnxError::Run { backend: "tract", reason: format!("{}: {e:#}", self.label) }
    }

    /// Runs the graph on named inputs (checked by the caller): puts them in the graph's order,
    /// finds the plan, and re-plans per shape once if the symbolic plan cannot run them.
    fn execute(&self, inputs: Vec<(String, TValue)>) -> Result<TVec<TValue>> {
        let mut by_name: BTreeMap<String, TValue> = inputs.into_iter().collect();
        let mut ordered: Vec<TValue> = Vec::with_capacity(self.inputs.len());
        for info in &self.inputs {
            let value = by_name
                .remove(&info.name)
                .ok_or_else(|| OnnxError::BadInput(format!("missing input '{}'", info.name)))?;
            ordered.push(value);
        }
        let plan = no_panic(|| self.plan_for(&ordered)).map_err(|e| self.run_error(e))??;
        let results = if self.plans_per_shape() {
            self.guarded_run(&plan, ordered.into_iter().collect())?
        } else {
            // The inputs are kept (shared, not copied) in case the symbolic plan cannot run them
            // and we re-plan.
            match no_panic(|| plan.run(ordered.iter().cloned().collect())).map_err(|e| self.run_error(e))? {
                Ok(r) => r,
                Err(e) => {
                    let error = format!("{e:#}");
                    self.fall_back_to_per_shape(&error)?;
                    let plan = self.plan_for(&ordered)?;
                    self.guarded_run(&plan, ordered.into_iter().collect())?
                }
            }
        };
        self.runs.fetch_add(1, Ordering::Relaxed);
        Ok(results)
    }

    /// An output kept as tract's own value.
    fn retained(&self, value: TValue) -> Result<Retained> {
        match dtype_of(value.datum_type()) {
            Some(dtype) => {
                let shape = value.shape().to_vec();
                Ok(Retained::from_tract(value, dtype, shape))
            }
            // Element types our tensors do not carry as such (f64) are converted.
            None => Ok(Retained::from_tensor(self.output_tensor(&value)?)),
        }
    }

    /// An output as our tensor (a copy).
    fn output_tensor(&self, value: &TValue) -> Result<Tensor> {
        tensor_from_tract(value).map_err(|e| self.run_error(e))
    }

    fn guarded_run(&self, plan: &Plan, inputs: TVec<TValue>) -> Result<TVec<TValue>> {
        no_panic(|| plan.run(inputs)).map_err(|e| self.run_error(e))?.map_err(|e| self.run_error(e))
    }
}

fn value_bits(t: &TractTensor) -> Vec<u64> {
    match t.cast_to::<f64>() {
        Ok(v) => v.to_plain_array_view::<f64>().map(|a| a.iter().map(|x| x.to_bits()).collect()).unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

fn per_shape(model: InferenceModel, options: &SessionOptions) -> Plans {
    Plans::PerShape(Box::new(PerShape {
        model,
        cache: Vec::new(),
        capacity: options.tract_plan_cache.max(1),
        fold_values: false,
    }))
}

fn not_onnx(e: impl std::fmt::Display) -> String {
    format!("not a valid ONNX protobuf (corrupt, truncated or not an ONNX file): {e:#}")
}

fn build_plan(model: Model, optimize: bool, run_options: &RunOptions) -> anyhow_compat::Result<Plan> {
    let mut typed = model.into_typed()?.into_decluttered()?;
    crate::tract_requantize::fuse_requantize(&mut typed)?;
    crate::tract_rescale::fuse_rescale(&mut typed)?;
    crate::tract_quantize::vectorise_quantize_linear(&mut typed)?;
    if optimize {
        typed.optimize()?;
    }
    SimplePlan::new_with_options(typed, run_options)
}

/// tract's error type is anyhow's; name it without depending on anyhow ourselves.
mod anyhow_compat {
    pub type Result<T> = tract_onnx::prelude::TractResult<T>;
}

/// Replaces the symbols named in `dims` by their values in the input facts.
fn fix_dims(
    model: &mut InferenceModel,
    inputs: &[TensorInfo],
    dims: &BTreeMap<String, usize>,
) -> anyhow_compat::Result<()> {
    for (ix, info) in inputs.iter().enumerate() {
        if !info.symbols().any(|s| dims.contains_key(s)) {
            continue;
        }
        let shape: Vec<TDim> = info
            .shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => Ok(TDim::Val(*n as i64)),
                Dim::Symbolic(s) => match dims.get(s) {
                    Some(v) => Ok(TDim::Val(*v as i64)),
                    None => model.symbols.parse_tdim(s),
                },
            })
            .collect::<anyhow_compat::Result<_>>()?;
        let fact = InferenceFact::dt_shape(datum_type(info.dtype)?, shape);
        model.set_input_fact(ix, fact)?;
    }
    Ok(())
}

impl Session for TractSession {
    fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    fn run(&self, inputs: Vec<(String, Tensor)>) -> Result<Outputs> {
        Ok(self.run_retaining(inputs, Vec::new(), &[])?.0)
    }

    /// Retained values are tract's own: fed back and kept as they are, with no conversion.
    fn run_retaining(
        &self,
        inputs: Vec<(String, Tensor)>,
        retained: Vec<(String, Retained)>,
        retain: &[Retain],
    ) -> Result<(Outputs, Vec<Retained>)> {
        check_retain(&self.outputs, retain)?;
        validate_with_retained(&self.inputs, &inputs, &retained)?;
        let mut values = Vec::with_capacity(inputs.len() + retained.len());
        for (name, t) in inputs {
            values.push((name, to_tract_value(t)?));
        }
        for (name, r) in retained {
            values.push((name, r.into_tract_value()?));
        }
        let results = self.execute(values)?;
        let mut kept: Vec<Option<Retained>> = retain.iter().map(|_| None).collect();
        let mut entries = Vec::with_capacity(results.len());
        for (value, info) in results.into_iter().zip(&self.outputs) {
            match retain.iter().position(|r| r.name == info.name) {
                Some(slot) => kept[slot] = Some(self.retained(value)?),
                None => entries.push((info.name.clone(), self.output_tensor(&value)?)),
            }
        }
        let kept = kept
            .into_iter()
            .zip(retain)
            .map(|(value, r)| value.ok_or_else(|| self.run_error(format!("the run returned no '{}'", r.name))))
            .collect::<Result<_>>()?;
        Ok((Outputs::new(entries), kept))
    }

    fn providers(&self) -> &ProviderReport {
        &self.report
    }

    fn backend(&self) -> BackendKind {
        BackendKind::Tract
    }

    fn stats(&self) -> SessionStats {
        SessionStats {
            runs: self.runs.load(Ordering::Relaxed),
            plans_built: self.plans_built.load(Ordering::Relaxed),
            bindings_built: 0,
        }
    }
}

fn datum_type(dtype: DType) -> Result<DatumType> {
    Ok(match dtype {
        DType::F32 => DatumType::F32,
        DType::F16 => DatumType::F16,
        DType::I64 => DatumType::I64,
        DType::I32 => DatumType::I32,
        DType::Bool => DatumType::Bool,
        DType::U8 => DatumType::U8,
        other => return Err(OnnxError::UnsupportedDType(other)),
    })
}

/// [`to_tract`] as a value a plan runs on.
pub(crate) fn to_tract_value(tensor: Tensor) -> Result<TValue> {
    Ok(to_tract(tensor)?.into_tvalue())
}

fn to_tract(tensor: Tensor) -> Result<TractTensor> {
    Ok(match tensor {
        Tensor::F32(a) => a.into(),
        Tensor::F16(a) => a.into(),
        Tensor::I64(a) => a.into(),
        Tensor::I32(a) => a.into(),
        Tensor::Bool(a) => a.into(),
        Tensor::U8(a) => a.into(),
        // tract has no bfloat16; a graph declaring it never loads (see `datum_type`).
        Tensor::Bf16(_) => return Err(OnnxError::UnsupportedDType(DType::Bf16)),
    })
}

/// A copy of a tract tensor as ours (tract keeps its data in aligned buffers of its own, so
/// there is no moving it out).
pub(crate) fn tensor_from_tract(tensor: &TractTensor) -> anyhow_compat::Result<Tensor> {
    Ok(match tensor.datum_type() {
        DatumType::F32 => Tensor::F32(tensor.to_plain_array_view::<f32>()?.to_owned()),
        DatumType::F16 => Tensor::F16(tensor.to_plain_array_view::<half::f16>()?.to_owned()),
        DatumType::I64 => Tensor::I64(tensor.to_plain_array_view::<i64>()?.to_owned()),
        DatumType::I32 => Tensor::I32(tensor.to_plain_array_view::<i32>()?.to_owned()),
        DatumType::Bool => Tensor::Bool(tensor.to_plain_array_view::<bool>()?.to_owned()),
        DatumType::U8 => Tensor::U8(tensor.to_plain_array_view::<u8>()?.to_owned()),
        DatumType::F64 => Tensor::F32(tensor.to_plain_array_view::<f64>()?.mapv(|v| v as f32)),
        other => bail!("output element type {other:?} is not supported"),
    })
}

/// Our element type for a tract one that [`tensor_from_tract`] carries over unchanged.
fn dtype_of(datum: DatumType) -> Option<DType> {
    Some(match datum {
        DatumType::F32 => DType::F32,
        DatumType::F16 => DType::F16,
        DatumType::I64 => DType::I64,
        DatumType::I32 => DType::I32,
        DatumType::Bool => DType::Bool,
        DatumType::U8 => DType::U8,
        _ => return None,
    })
}

/// Inputs and outputs as the ONNX file declares them (graph inputs that are initializers are
/// weights, not inputs).
fn describe(graph: &pb::GraphProto) -> (Vec<TensorInfo>, Vec<TensorInfo>) {
    let initializers: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = graph.input.iter().filter(|v| !initializers.contains(v.name.as_str())).map(value_info).collect();
    let outputs = graph.output.iter().map(value_info).collect();
    (inputs, outputs)
}

/// A graph input's or output's name, element type and shape.
pub(crate) fn value_info(v: &pb::ValueInfoProto) -> TensorInfo {
    use pb::tensor_shape_proto::dimension::Value as D;
    use pb::type_proto::Value as T;
    let (dtype, shape) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(T::TensorType(t)) => {
            let shape = t
                .shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(D::DimValue(n)) if *n >= 0 => Dim::Fixed(*n as usize),
                            Some(D::DimParam(p)) if !p.is_empty() => Dim::Symbolic(p.clone()),
                            _ => Dim::Symbolic("?".into()),
                        })
                        .collect()
                })
                .unwrap_or_default();
            (onnx_dtype(t.elem_type), shape)
        }
        None => (DType::Other, Vec::new()),
    };
    TensorInfo { name: v.name.clone(), dtype, shape }
}

/// ONNX `TensorProto.DataType` code to [`DType`].
pub(crate) fn onnx_dtype(code: i32) -> DType {
    match code {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        4 => DType::U16,
        5 => DType::I16,
        6 => DType::I32,
        7 => DType::I64,
        8 => DType::String,
        9 => DType::Bool,
        10 => DType::F16,
        11 => DType::F64,
        12 => DType::U32,
        13 => DType::U64,
        16 => DType::Bf16,
        _ => DType::Other,
    }
}
