//! The one interface every inference backend implements: a [`Backend`] loads a model into a
//! [`Session`]; a session describes its inputs/outputs and runs named tensors to named tensors.
//! Also the backend-neutral options, the report of which execution provider runs a session, and
//! the input validation shared by all backends (so every backend rejects bad inputs with the same
//! clear messages before touching native code).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ep::EpConfig;
use crate::error::{OnnxError, Result};
use crate::retained::{InPlace, Retain, Retained, check_retain};
use crate::tensor::{DType, Dim, Outputs, Tensor, TensorInfo};

/// Which backend implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// tract (pure Rust, CPU).
    #[default]
    Tract,
    /// ONNX Runtime.
    Ort,
}

impl BackendKind {
    /// Stable lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Tract => "tract",
            BackendKind::Ort => "ort",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = OnnxError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tract" => Ok(BackendKind::Tract),
            "ort" | "onnxruntime" => Ok(BackendKind::Ort),
            _ => Err(OnnxError::BadInput(format!("unknown backend '{s}' (expected tract or ort)"))),
        }
    }
}

/// Where a model comes from.
#[derive(Clone, Debug)]
pub enum ModelSource {
    /// An `.onnx` file; external-data files next to it are found relative to it.
    File(PathBuf),
    /// An in-memory model (no external data).
    Memory(Arc<[u8]>),
}

impl ModelSource {
    /// A label for messages: the path, or `<memory>`.
    pub fn label(&self) -> String {
        match self {
            ModelSource::File(p) => p.display().to_string(),
            ModelSource::Memory(_) => "<memory>".to_string(),
        }
    }
}

impl From<&Path> for ModelSource {
    fn from(p: &Path) -> Self {
        ModelSource::File(p.to_path_buf())
    }
}

impl From<PathBuf> for ModelSource {
    fn from(p: PathBuf) -> Self {
        ModelSource::File(p)
    }
}

/// Graph optimisation level (ORT's levels; tract always runs its full optimiser unless
/// `Disabled`, which keeps the decluttered graph).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OptimizationLevel {
    /// No optimisation.
    Disabled,
    /// Constant folding and redundancy elimination.
    Basic,
    /// Basic plus node fusions.
    Extended,
    /// Everything, including layout changes.
    #[default]
    All,
}

/// How the tract backend deals with symbolic input dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TractPlanMode {
    /// Optimise once with symbolic dims; if tract cannot, optimise per concrete input shape.
    #[default]
    Auto,
    /// Always one plan with symbolic dims (fails to load if tract cannot).
    Symbolic,
    /// One optimised plan per concrete input shape, kept in a bounded cache.
    PerShape,
}

/// Options for loading a session. Backend-specific fields are ignored by the other backend.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionOptions {
    /// Threads used inside one operator (ORT intra-op; tract's matmul pool). `None`: backend default.
    pub intra_threads: Option<usize>,
    /// Threads used to run independent operators in parallel (ORT only). `None`: ORT default.
    pub inter_threads: Option<usize>,
    /// Graph optimisation level.
    pub optimization: OptimizationLevel,
    /// ORT: execution providers in order of preference. CPU is always the implicit last resort
    /// unless [`SessionOptions::disable_cpu_fallback`] is set.
    pub execution_providers: Vec<EpConfig>,
    /// ORT: refuse to split the graph: every node must run on the first registered provider
    /// (`session.disable_cpu_ep_fallback`).
    pub disable_cpu_fallback: bool,
    /// ORT: write the optimised model here after loading (and load it from here next time if it
    /// is newer than the source model).
    pub optimized_model_path: Option<PathBuf>,
    /// Fixed values for symbolic dimensions (`batch_size = 1`...). tract optimises for them; ORT
    /// uses them as free-dimension overrides.
    pub dims: BTreeMap<String, usize>,
    /// tract: symbolic-dimension strategy.
    pub tract_plan: TractPlanMode,
    /// tract: how many per-shape plans to keep (least recently used are dropped).
    pub tract_plan_cache: usize,
    /// ORT: session configuration entries passed as they are (`AddSessionConfigEntry`), e.g.
    /// `session.disable_prepacking = "1"`, which cuts load-time memory to about 1.2x the model
    /// file (bench/results/pipelines-2core.txt).
    pub ort_config: BTreeMap<String, String>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            intra_threads: None,
            inter_threads: None,
            optimization: OptimizationLevel::All,
            execution_providers: Vec::new(),
            disable_cpu_fallback: false,
            optimized_model_path: None,
            dims: BTreeMap::new(),
            tract_plan: TractPlanMode::Auto,
            tract_plan_cache: 16,
            ort_config: BTreeMap::new(),
        }
    }
}

/// What happened to one requested execution provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProviderAttempt {
    /// The requested provider, in config syntax (`openvino:NPU`).
    pub provider: String,
    /// `None` if registered; otherwise the reason it was skipped.
    pub error: Option<String>,
}

/// Which execution providers a session actually runs on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProviderReport {
    /// Every provider asked for, in order, and whether it registered.
    pub attempts: Vec<ProviderAttempt>,
    /// Providers registered with the session, in priority order (ORT names; `tract` for tract).
    pub active: Vec<String>,
    /// Number of graph nodes assigned to each provider, when the backend can tell.
    pub node_placement: BTreeMap<String, usize>,
}

impl ProviderReport {
    /// The provider that runs most of the graph (by node count), or the first active one.
    pub fn primary(&self) -> Option<&str> {
        self.node_placement
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(ep, _)| ep.as_str())
            .or_else(|| self.active.first().map(String::as_str))
    }
}

/// Counters a session keeps about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SessionStats {
    /// Completed `run` calls.
    pub runs: u64,
    /// Optimised plans built (tract: 1 for a symbolic plan, one per new shape otherwise; 0 for ORT).
    pub plans_built: u64,
    /// IoBindings built for [`Session::run_in_place`] (ONNX Runtime on the CPU): one per sequence
    /// of in-place runs, each feeding back what the last handed back; 0 elsewhere.
    pub bindings_built: u64,
}

/// A loaded model, ready to run. Implementations are thread-safe; concurrent `run` calls may be
/// serialised internally.
pub trait Session: Send + Sync {
    /// Declared inputs, in graph order.
    fn inputs(&self) -> &[TensorInfo];
    /// Declared outputs, in graph order.
    fn outputs(&self) -> &[TensorInfo];
    /// Runs the model. Every declared input must be given exactly once.
    fn run(&self, inputs: Vec<(String, Tensor)>) -> Result<Outputs>;
    /// [`Session::run`] after converting each input to the element type the graph declares for
    /// it (see [`conform_inputs`]): what pipelines call, so that one pipeline feeds the fp32,
    /// fp16 and bf16 exports of a model alike.
    fn run_as_declared(&self, inputs: Vec<(String, Tensor)>) -> Result<Outputs> {
        let inputs = conform_inputs(self.inputs(), inputs)?;
        self.run(inputs)
    }
    /// Runs the model with some inputs taken from earlier runs (`retained`, by input name) and
    /// keeps the outputs named in `retain` for the next run instead of returning them in
    /// [`Outputs`]: they come back as [`Retained`] values, in `retain`'s order. Together the
    /// two inputs must give every declared input exactly once, as for [`Session::run`].
    ///
    /// ONNX Runtime keeps retained outputs in its own buffers (no copy out, no copy back), on the
    /// GPU for [`Placement::Device`](crate::Placement::Device) when the graph runs there; tract
    /// keeps its own values the same way. The default implementation moves tensors through
    /// [`Session::run`].
    fn run_retaining(
        &self,
        inputs: Vec<(String, Tensor)>,
        retained: Vec<(String, Retained)>,
        retain: &[Retain],
    ) -> Result<(Outputs, Vec<Retained>)> {
        check_retain(self.outputs(), retain)?;
        let mut all = inputs;
        for (name, value) in retained {
            all.push((name, value.into_tensor()?));
        }
        let mut outputs = self.run(all)?;
        let kept = retain.iter().map(|r| outputs.take(&r.name).map(Retained::from)).collect::<Result<Vec<_>>>()?;
        Ok((outputs, kept))
    }
    /// [`Session::run_retaining`] with `state` values the graph updates in place: each is fed as
    /// its input and comes back, in the same order, holding its output, which must have the
    /// input's shape. ONNX Runtime on the CPU binds input and output to one buffer (the graph's
    /// kernels see the same memory and write only what changes; an output of another shape is a
    /// run error); the default implementation, used by tract and GPU sessions, retains each
    /// output and hands it back as the new value.
    fn run_in_place(
        &self,
        inputs: Vec<(String, Tensor)>,
        state: Vec<InPlace>,
        retain: &[Retain],
    ) -> Result<(Outputs, Vec<Retained>, Vec<InPlace>)> {
        run_in_place_by_retaining(self, inputs, state, retain)
    }
    /// Ends a sequence of [`Session::run_in_place`] calls: drops what the backend kept between
    /// them (ONNX Runtime keeps the last run's binding, which holds the state buffers, so that
    /// the next step rebinds only the plain inputs). Call it when the state is dropped, so its
    /// memory goes with it. Running in place again afterwards works as before. The default does
    /// nothing.
    fn release_in_place(&self) {}
    /// Which execution providers run this session.
    fn providers(&self) -> &ProviderReport;
    /// The backend that created this session.
    fn backend(&self) -> BackendKind;
    /// Counters (runs, plans built).
    fn stats(&self) -> SessionStats;
}

/// [`Session::run_in_place`] through [`Session::run_retaining`]: each state output is retained and
/// handed back as the new value.
pub(crate) fn run_in_place_by_retaining<S: Session + ?Sized>(
    session: &S,
    inputs: Vec<(String, Tensor)>,
    state: Vec<InPlace>,
    retain: &[Retain],
) -> Result<(Outputs, Vec<Retained>, Vec<InPlace>)> {
    let names: Vec<(String, String)> = state.iter().map(|s| (s.input.clone(), s.output.clone())).collect();
    let retained: Vec<(String, Retained)> = state.into_iter().map(|s| (s.input, s.value)).collect();
    let mut all = retain.to_vec();
    all.extend(names.iter().map(|(_, output)| Retain::device(output.clone())));
    let (outputs, mut kept) = session.run_retaining(inputs, retained, &all)?;
    let values = kept.split_off(retain.len());
    let state = names.into_iter().zip(values).map(|((input, output), value)| InPlace { input, output, value });
    Ok((outputs, kept, state.collect()))
}

/// An inference engine able to load models.
pub trait Backend: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// Human-readable description (`tract 0.23.9`, `onnxruntime 1.32.0 (/path/libonnxruntime.so)`).
    fn describe(&self) -> String;
    /// Loads a model.
    fn load(&self, source: &ModelSource, options: &SessionOptions) -> Result<Box<dyn Session>>;
}

/// Converts each input whose element type differs from the declared one when both are floats
/// (float32, float16, bfloat16) or both integers (int64, int32, where every value fits): a
/// pipeline computes in float32 and int64, and a `model_fp16.onnx` declares float16. Other
/// mismatches and unknown names are left as they are for [`validate_inputs`] to reject.
pub fn conform_inputs(infos: &[TensorInfo], inputs: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>> {
    let convertible = |from: DType, to: DType| {
        (from.is_float() && to.is_float()) || matches!((from, to), (DType::I64, DType::I32) | (DType::I32, DType::I64))
    };
    inputs
        .into_iter()
        .map(|(name, tensor)| {
            let declared = infos.iter().find(|i| i.name == name).map(|i| i.dtype);
            match declared {
                Some(to) if to != tensor.dtype() && to.is_supported() && convertible(tensor.dtype(), to) => {
                    let cast = tensor.cast(to)?;
                    Ok((name, cast))
                }
                _ => Ok((name, tensor)),
            }
        })
        .collect()
}

/// Checks that `inputs` match the declared `infos`: every name known and given once, element
/// types equal, ranks equal, fixed dims equal and each symbol bound to one value. Returns the
/// symbol bindings.
pub fn validate_inputs(infos: &[TensorInfo], inputs: &[(String, Tensor)]) -> Result<BTreeMap<String, usize>> {
    let described: Vec<(&str, DType, &[usize])> =
        inputs.iter().map(|(name, t)| (name.as_str(), t.dtype(), t.shape())).collect();
    validate_described(infos, &described)
}

/// [`validate_inputs`] for a run with retained values: the plain inputs and the retained ones
/// together.
pub(crate) fn validate_with_retained(
    infos: &[TensorInfo],
    inputs: &[(String, Tensor)],
    retained: &[(String, Retained)],
) -> Result<()> {
    let described: Vec<(&str, DType, &[usize])> = inputs
        .iter()
        .map(|(name, t)| (name.as_str(), t.dtype(), t.shape()))
        .chain(retained.iter().map(|(name, r)| (name.as_str(), r.dtype(), r.shape())))
        .collect();
    validate_described(infos, &described).map(|_| ())
}

/// [`validate_inputs`] on name, element type and shape, for inputs that are not all [`Tensor`]s
/// (retained backend values).
pub fn validate_described(infos: &[TensorInfo], inputs: &[(&str, DType, &[usize])]) -> Result<BTreeMap<String, usize>> {
    let mut bindings = BTreeMap::<String, usize>::new();
    for &(name, dtype, shape) in inputs {
        let Some(info) = infos.iter().find(|i| i.name == name) else {
            let known: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
            return Err(OnnxError::BadInput(format!(
                "unknown input '{name}'; the model's inputs are: {}",
                known.join(", ")
            )));
        };
        if inputs.iter().filter(|(n, _, _)| *n == name).count() > 1 {
            return Err(OnnxError::BadInput(format!("input '{name}' given more than once")));
        }
        if dtype != info.dtype {
            return Err(OnnxError::BadInput(format!("input '{name}' must be {}, got {dtype}", info.dtype)));
        }
        if shape.len() != info.shape.len() {
            return Err(OnnxError::BadInput(format!(
                "input '{name}' must have rank {} (shape {}), got shape {shape:?}",
                info.shape.len(),
                fmt_shape(&info.shape)
            )));
        }
        for (axis, (dim, &actual)) in info.shape.iter().zip(shape).enumerate() {
            match dim {
                Dim::Fixed(expected) if *expected != actual => {
                    return Err(OnnxError::BadInput(format!(
                        "input '{name}' must have shape {}, got {shape:?} (axis {axis} is {actual}, expected {expected})",
                        fmt_shape(&info.shape)
                    )));
                }
                Dim::Symbolic(sym) if is_plain_symbol(sym) => match bindings.get(sym) {
                    Some(&bound) if bound != actual => {
                        return Err(OnnxError::BadInput(format!(
                            "input '{name}' axis {axis} ('{sym}') is {actual}, but another input set '{sym}' to {bound}"
                        )));
                    }
                    _ => {
                        bindings.insert(sym.clone(), actual);
                    }
                },
                _ => {}
            }
        }
    }
    for info in infos {
        if !inputs.iter().any(|(n, _, _)| *n == info.name) {
            return Err(OnnxError::BadInput(format!("missing input '{}' ({info})", info.name)));
        }
    }
    Ok(bindings)
}

/// A symbol name rather than an expression like `a+1` or an unnamed `?`.
fn is_plain_symbol(s: &str) -> bool {
    !s.is_empty() && s != "?" && s.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '.')
}

/// Formats a declared shape as `[batch, 3, 224, 224]`.
pub fn fmt_shape(shape: &[Dim]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DType;

    fn infos() -> Vec<TensorInfo> {
        vec![
            TensorInfo {
                name: "pixel_values".into(),
                dtype: DType::F32,
                shape: vec![Dim::Symbolic("batch".into()), Dim::Fixed(3), Dim::Fixed(4)],
            },
            TensorInfo { name: "mask".into(), dtype: DType::I64, shape: vec![Dim::Symbolic("batch".into())] },
        ]
    }

    fn f32(shape: &[usize]) -> Tensor {
        Tensor::zeros(DType::F32, shape).unwrap()
    }

    #[test]
    fn accepts_matching_inputs_and_binds_symbols() {
        let inputs = vec![
            ("pixel_values".to_string(), f32(&[2, 3, 4])),
            ("mask".to_string(), Tensor::zeros(DType::I64, &[2]).unwrap()),
        ];
        let b = validate_inputs(&infos(), &inputs).unwrap();
        assert_eq!(b.get("batch"), Some(&2));
    }

    #[test]
    fn rejects_with_clear_messages() {
        let cases: Vec<(Vec<(String, Tensor)>, &str)> = vec![
            (vec![("nope".into(), f32(&[1]))], "unknown input 'nope'"),
            (vec![("pixel_values".into(), f32(&[1, 3, 4]))], "missing input 'mask'"),
            (vec![("pixel_values".into(), Tensor::zeros(DType::I64, &[1, 3, 4]).unwrap())], "must be float32"),
            (vec![("pixel_values".into(), f32(&[1, 3]))], "must have rank 3"),
            (vec![("pixel_values".into(), f32(&[1, 5, 4]))], "axis 1 is 5, expected 3"),
            (
                vec![
                    ("pixel_values".into(), f32(&[1, 3, 4])),
                    ("mask".into(), Tensor::zeros(DType::I64, &[2]).unwrap()),
                ],
                "another input set 'batch' to 1",
            ),
        ];
        for (inputs, expected) in cases {
            let err = validate_inputs(&infos(), &inputs).unwrap_err().to_string();
            assert!(err.contains(expected), "expected '{expected}' in '{err}'");
        }
    }
}
