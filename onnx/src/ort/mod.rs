//! The ONNX Runtime backend (crate `ort`, `load-dynamic`): library discovery, execution-provider
//! registration with fallback down the preference list, session options, and tensor conversion.
//!
//! Loading with a preference list `[a, b, cpu]` registers every provider that ORT accepts; a
//! provider that fails to register is skipped with a warning (or fails the load when
//! `require`d). If creating the session then fails with a provider registered (an NPU that is
//! absent is often only noticed here), the first remaining non-CPU provider is blamed, dropped,
//! and the session is created again. After loading, the report says which providers are active
//! and how many graph nodes each one got, read from ORT's node-placement log.

pub mod library;
pub mod providers;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ort::logging::LogLevel;
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{RunOptions, Session as OrtInner};
use ort::value::{DynTensorValueType, DynValue, TensorElementType, TensorRef, ValueType};

use crate::backend::{
    Backend, BackendKind, ModelSource, OptimizationLevel, ProviderAttempt, ProviderReport, Session, SessionOptions,
    SessionStats, validate_described, validate_with_retained,
};
use crate::ep::{EpConfig, ExecutionProvider};
use crate::error::{OnnxError, Result};
use crate::guard::no_panic;
use crate::retained::{Held, InPlace, Placement, Retain, Retained, check_retain};
use crate::tensor::{DType, Dim, Outputs, Tensor, TensorInfo};

pub use library::{OrtRuntime, minimum_version};

/// The ONNX Runtime backend. Creating it loads the library (once per process).
#[derive(Clone, Debug)]
pub struct OrtBackend {
    runtime: Arc<OrtRuntime>,
}

impl OrtBackend {
    /// Loads ONNX Runtime, from `library` if given, else by the documented search order.
    pub fn new(library: Option<&std::path::Path>) -> Result<Self> {
        Ok(OrtBackend { runtime: library::runtime(library)? })
    }

    /// The loaded runtime.
    pub fn runtime(&self) -> &OrtRuntime {
        &self.runtime
    }
}

impl Backend for OrtBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Ort
    }

    fn describe(&self) -> String {
        format!(
            "onnxruntime {} ({}, found via {})",
            self.runtime.version,
            self.runtime.path.display(),
            self.runtime.origin
        )
    }

    fn load(&self, source: &ModelSource, options: &SessionOptions) -> Result<Box<dyn Session>> {
        let _heap = crate::heap::LoadPhase::begin();
        Ok(Box::new(OrtSession::load(&self.runtime, source, options)?))
    }
}

/// A model loaded into ONNX Runtime.
pub struct OrtSession {
    label: String,
    inner: Mutex<Locked>,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    report: ProviderReport,
    runs: AtomicU64,
    /// In-place bindings built (see [`KeptBinding`]).
    bindings_built: AtomicU64,
    /// The CUDA device the graph runs on (a registered CUDA or TensorRT provider), where
    /// [`Placement::Device`] outputs are kept.
    cuda_device: Option<i32>,
}

/// What a run holds the session's lock for: ORT's session (its runs are not thread safe), the
/// options every run passes, and the binding of the last in-place run.
struct Locked {
    session: OrtInner,
    /// Runs log at warning severity: the session logs verbosely, which is how ORT reports node
    /// placement while loading, and left at that a run formats log lines of its own.
    run_options: RunOptions,
    in_place: Option<KeptBinding>,
}

/// The IoBinding of the last in-place run, kept while the caller feeds its state back: the state
/// values stay bound as input and output, so a step rebinds only the plain inputs (a LLaMA's
/// ids and mask) instead of every layer's KV buffer twice. Any other state (another generation,
/// a changed value) builds a new binding; [`Session::release_in_place`] drops it.
struct KeptBinding {
    binding: SendBinding,
    /// Per state value: input name, output name, data address.
    state: Vec<(String, String, usize)>,
    /// The plain inputs bound, by name.
    inputs: Vec<String>,
}

/// An `ort` IoBinding, which is not `Send` because it wraps a C pointer. It is only used under
/// the session's lock, from one thread at a time, as ORT requires.
struct SendBinding(ort::session::IoBinding);

// SAFETY: an OrtIoBinding is a plain heap object with no thread affinity (ORT only requires that
// it is not used by two threads at once), and every use of this one is under `OrtSession::inner`'s
// lock; the values it holds are reference counted by `ort` (`Arc`), which is `Send`.
#[allow(unsafe_code)]
unsafe impl Send for SendBinding {}

impl KeptBinding {
    /// Whether a run with this state (in order, at the same addresses: what the last run handed
    /// back) and these plain inputs can use this binding.
    fn fits(
        &self,
        state: &[(String, String, DynValue, DType, Vec<usize>)],
        inputs: &[(&str, DynValue, usize)],
    ) -> bool {
        self.state.len() == state.len()
            && self.inputs.len() == inputs.len()
            && self.state.iter().zip(state).all(|((input, output, address), (i, o, value, _, _))| {
                input == i && output == o && data_address(value) == Some(*address)
            })
            && self.inputs.iter().zip(inputs).all(|(name, (n, _, _))| name == n)
    }
}

/// Log lines one session's loading produced that matter to us.
#[derive(Default)]
struct LoadLog {
    placement: Vec<String>,
}

static SESSION_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl OrtSession {
    fn load(runtime: &OrtRuntime, source: &ModelSource, options: &SessionOptions) -> Result<Self> {
        if let ModelSource::File(path) = source {
            let meta = std::fs::metadata(path).map_err(|e| OnnxError::Io { path: path.clone(), source: e })?;
            if !meta.is_file() {
                return Err(invalid(source, "not a regular file"));
            }
        }
        let requested: Vec<EpConfig> = options.execution_providers.clone();
        let mut remaining: Vec<EpConfig> = requested.clone();
        let mut attempts: Vec<ProviderAttempt> = Vec::new();
        loop {
            let log = Arc::new(Mutex::new(LoadLog::default()));
            let mut builder = base_builder(runtime, source, options, log.clone())?;
            let mut registered: Vec<EpConfig> = Vec::new();
            for ep in &remaining {
                if options.disable_cpu_fallback && ep.provider == ExecutionProvider::Cpu {
                    // ORT refuses an explicit CPU provider together with "no CPU fallback"; with
                    // fallback disabled the CPU provider is only used if it is the only one.
                    if remaining.iter().any(|e| e.provider != ExecutionProvider::Cpu) {
                        continue;
                    }
                }
                let (result, logged) = library::capture_log(|| {
                    providers::register(&ep.provider, &mut builder, &runtime.available_providers)
                });
                match result.map_err(|reason| with_logged(reason, &logged)) {
                    Ok(()) => registered.push(ep.clone()),
                    Err(reason) => {
                        if ep.require {
                            return Err(OnnxError::ExecutionProvider { ep: ep.to_string(), reason });
                        }
                        tracing::warn!(model = %source.label(), ep = %ep, %reason,
                            "execution provider not registered; falling back to the next one");
                        attempts.push(ProviderAttempt { provider: ep.to_string(), error: Some(reason) });
                    }
                }
            }
            remaining = registered.clone();
            let (committed, logged) = library::capture_log(|| no_panic(|| commit(builder, source, options)));
            match committed.map_err(|e| invalid(source, e))?.map_err(|e| with_logged(e.to_string(), &logged)) {
                Ok(inner) => {
                    for ep in &registered {
                        attempts.push(ProviderAttempt { provider: ep.to_string(), error: None });
                    }
                    let placement = {
                        let log = log.lock().unwrap_or_else(|p| p.into_inner());
                        providers::parse_placement(log.placement.iter().map(String::as_str))
                    };
                    let mut active: Vec<String> =
                        registered.iter().map(|e| e.provider.ort_name().to_string()).collect();
                    if !active.iter().any(|a| a == "CPUExecutionProvider") {
                        active.push("CPUExecutionProvider".into());
                    }
                    let report = ProviderReport {
                        attempts: order_attempts(&requested, attempts),
                        active,
                        node_placement: placement,
                    };
                    tracing::info!(model = %source.label(), active = %report.active.join(","),
                        placement = ?report.node_placement, "ONNX Runtime session ready");
                    let (inputs, outputs) = describe(&inner);
                    let cuda_device = registered.iter().find_map(|e| match e.provider {
                        ExecutionProvider::Cuda { device_id } | ExecutionProvider::TensorRt { device_id, .. } => {
                            i32::try_from(device_id).ok()
                        }
                        _ => None,
                    });
                    let mut run_options = RunOptions::new().map_err(|e| invalid(source, e))?;
                    run_options.set_log_level(LogLevel::Warning).map_err(|e| invalid(source, e))?;
                    return Ok(OrtSession {
                        label: source.label(),
                        inner: Mutex::new(Locked { session: inner, run_options, in_place: None }),
                        inputs,
                        outputs,
                        report,
                        runs: AtomicU64::new(0),
                        bindings_built: AtomicU64::new(0),
                        cuda_device,
                    });
                }
                Err(reason) if options.disable_cpu_fallback => {
                    // Strict placement was asked for: a graph the providers cannot take entirely is
                    // an error, never a quiet retry elsewhere.
                    let eps: Vec<String> = registered.iter().map(|e| e.to_string()).collect();
                    return Err(OnnxError::Placement {
                        eps: if eps.is_empty() { "cpu".into() } else { eps.join("+") },
                        reason,
                    });
                }
                Err(reason) => {
                    // Blame the first accelerator still in the list; CPU alone failing is the model's fault.
                    let Some(pos) = remaining.iter().position(|ep| ep.provider != ExecutionProvider::Cpu) else {
                        return Err(invalid(source, reason));
                    };
                    let ep = remaining.remove(pos);
                    if ep.require {
                        return Err(OnnxError::ExecutionProvider { ep: ep.to_string(), reason });
                    }
                    tracing::warn!(model = %source.label(), ep = %ep, %reason,
                        "session creation failed with this execution provider; retrying without it");
                    attempts.push(ProviderAttempt { provider: ep.to_string(), error: Some(reason) });
                }
            }
        }
    }

    fn run_error(&self, e: impl std::fmt::Display) -> OnnxError {
        OnnxError::Run { backend: "onnxruntime", reason: format!("{}: {e}", self.label) }
    }

    /// Retained values in device memory this session has no transfer for (a GPU value fed to a
    /// session without CUDA, or one on another GPU), and tract's values, are copied to the host
    /// as [`Tensor`]s first.
    fn readable(&self, retained: Vec<(String, Retained)>) -> Result<Vec<(String, Retained)>> {
        retained
            .into_iter()
            .map(|(name, r)| {
                let foreign = match r.held() {
                    Held::Ort(v) => device_of(v).is_some_and(|(device, id)| {
                        !(device == AllocationDevice::CUDA.as_str() && self.cuda_device == Some(id))
                    }),
                    Held::Tensor(_) => false,
                    // A tract session's value: host memory, but not in a form ORT reads.
                    #[cfg(feature = "tract")]
                    Held::Tract(_) => true,
                };
                Ok((name, if foreign { Retained::from_tensor(r.to_tensor()?) } else { r }))
            })
            .collect()
    }

    /// A run through an IoBinding: every output is bound to a memory, host or the CUDA device
    /// (for outputs retained with [`Placement::Device`] on a CUDA/TensorRT session), so a KV
    /// cache stays on the GPU between steps. Our tensors are bound as copies owned by `ort`
    /// values (an IoBinding copies borrowed data anyway), whose buffers count as lent memory;
    /// retained ORT values are bound as they are. Each `state` value is bound as its input and
    /// its output both (see [`Session::run_in_place`]) and comes back holding the output; that
    /// binding is kept for the next in-place run (see [`KeptBinding`]).
    fn run_bound(
        &self,
        inputs: Vec<(String, Tensor)>,
        retained: Vec<(String, Retained)>,
        retain: &[Retain],
        state: Vec<InPlace>,
    ) -> Result<(Outputs, Vec<Retained>, Vec<InPlace>)> {
        let err = |e: ort::Error| self.run_error(e);
        let owned: Vec<(&str, DynValue, usize)> = tensor_inputs(&inputs, &retained)
            .map(|(name, t)| {
                let input = StandardInput::of(t);
                Ok((name, input.to_owned_value()?, input.byte_range().len()))
            })
            .collect::<ort::Result<_>>()
            .map_err(err)?;
        let host =
            MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Device, MemoryType::Default).map_err(err)?;
        let cuda = match self.cuda_device {
            Some(id) => Some(
                MemoryInfo::new(AllocationDevice::CUDA, id, AllocatorType::Device, MemoryType::Default).map_err(err)?,
            ),
            None => None,
        };
        let device = cuda.as_ref().unwrap_or(&host);
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Locked { session, run_options, in_place } = &mut *guard;
        // Each state value as a tensor ONNX Runtime allocated (only those can be bound as
        // outputs): the first run copies the caller's initial tensor in, later runs get back
        // what they returned.
        let mut bound = Vec::with_capacity(state.len());
        for s in state {
            let (dtype, shape) = (s.value.dtype(), s.value.shape().to_vec());
            let value = match s.value.into_held() {
                Held::Ort(v) => v,
                Held::Tensor(t) => allocated_copy(session.allocator(), &t).map_err(err)?,
                #[cfg(feature = "tract")]
                Held::Tract(v) => {
                    let t = crate::tract::tensor_from_tract(&v).map_err(|e| self.run_error(format!("{e:#}")))?;
                    allocated_copy(session.allocator(), &t).map_err(err)?
                }
            };
            bound.push((s.input, s.output, value, dtype, shape));
        }
        let mut fresh = None;
        // A kept binding is reused as long as the caller feeds back what the last run handed back.
        let binding = if bound.is_empty() {
            fresh.insert(session.create_binding().map_err(err)?)
        } else {
            let reusable = retained.is_empty() && in_place.as_ref().is_some_and(|kept| kept.fits(&bound, &owned));
            match in_place {
                Some(kept) if reusable => &mut kept.binding.0,
                slot => {
                    // The old binding (and the buffers it holds) goes first.
                    *slot = None;
                    let mut binding = session.create_binding().map_err(err)?;
                    for (input, output, value, _, _) in &mut bound {
                        binding.bind_input(input.as_str(), &*value).map_err(err)?;
                        binding.bind_output(output.as_str(), &mut *value).map_err(err)?;
                    }
                    let state = bound
                        .iter()
                        .map(|(input, output, value, _, _)| {
                            (input.clone(), output.clone(), data_address(value).unwrap_or_default())
                        })
                        .collect();
                    let inputs = owned.iter().map(|(name, _, _)| name.to_string()).collect();
                    self.bindings_built.fetch_add(1, Ordering::Relaxed);
                    &mut slot.insert(KeptBinding { binding: SendBinding(binding), state, inputs }).binding.0
                }
            }
        };
        for (name, value, _) in &owned {
            binding.bind_input(*name, value).map_err(err)?;
        }
        for (name, r) in &retained {
            if let Held::Ort(v) = r.held() {
                binding.bind_input(name.as_str(), v).map_err(err)?;
            }
        }
        let updated: Vec<&str> = bound.iter().map(|b| b.1.as_str()).collect();
        // Bound again every run: a kept binding otherwise holds the last run's outputs.
        for info in self.outputs.iter().filter(|o| !updated.contains(&o.name.as_str())) {
            let on_device = retain.iter().any(|r| r.name == info.name && r.placement == Placement::Device);
            binding.bind_output_to_device(info.name.as_str(), if on_device { device } else { &host }).map_err(err)?;
        }
        let mut results = session.run_binding_with_options(binding, run_options).map_err(err)?;
        for output in &updated {
            // The same buffer as the state value handed back below.
            drop(results.remove(*output));
        }
        // The owned copies die with the binding at the end of this call (or when the kept one
        // binds the next step's inputs), like lent buffers.
        let lent: Vec<std::ops::Range<usize>> =
            owned.iter().filter_map(|(_, value, bytes)| data_address(value).map(|a| a..a + bytes)).collect();
        let (outputs, kept) = self.collect(results, retain, &lent, &updated)?;
        drop(fresh);
        let state = bound
            .into_iter()
            .map(|(input, output, value, dtype, shape)| InPlace {
                input,
                output,
                value: Retained::from_ort(value, dtype, shape),
            })
            .collect();
        Ok((outputs, kept, state))
    }

    /// Splits a run's results: the outputs in `retain` become [`Retained`] values (copied when
    /// they live in `lent` memory, or have a type a [`Tensor`] can't hold), the rest tensors but
    /// those in `skip` (updated in place, handed back by the caller).
    fn collect(
        &self,
        mut results: ort::session::SessionOutputs<'_>,
        retain: &[Retain],
        lent: &[std::ops::Range<usize>],
        skip: &[&str],
    ) -> Result<(Outputs, Vec<Retained>)> {
        let mut kept = Vec::with_capacity(retain.len());
        for Retain { name, .. } in retain {
            let value = results.remove(name).ok_or_else(|| OnnxError::MissingOutput(name.clone()))?;
            let (dtype, shape) = match value.dtype() {
                ValueType::Tensor { ty, shape, .. } => (
                    dtype_of(*ty),
                    shape
                        .iter()
                        .map(|&d| usize::try_from(d))
                        .collect::<std::result::Result<Vec<usize>, _>>()
                        .map_err(|_| self.run_error(format!("output '{name}' has shape {shape:?}")))?,
                ),
                other => return Err(self.run_error(format!("output '{name}' is not a tensor ({other:?})"))),
            };
            let aliased = data_address(&value).is_some_and(|a| lent.iter().any(|r| r.contains(&a)));
            if aliased || !dtype.is_supported() {
                // Copied now, while the lent buffer is alive (and converted like `run`'s outputs).
                let tensor = tensor_from_value(&value).map_err(|e| self.run_error(e))?;
                kept.push(Retained::from_tensor(tensor));
            } else {
                kept.push(Retained::from_ort(value, dtype, shape));
            }
        }
        let mut entries = Vec::with_capacity(self.outputs.len());
        for info in
            self.outputs.iter().filter(|o| !retain.iter().any(|r| r.name == o.name) && !skip.contains(&o.name.as_str()))
        {
            let value = results.get(&info.name).ok_or_else(|| OnnxError::MissingOutput(info.name.clone()))?;
            entries.push((info.name.clone(), tensor_from_value(value).map_err(|e| self.run_error(e))?));
        }
        self.runs.fetch_add(1, Ordering::Relaxed);
        Ok((Outputs::new(entries), kept))
    }
}

/// Appends what ORT logged (the provider's own words) to a generic failure status.
fn with_logged(reason: String, logged: &[String]) -> String {
    let reason = library::clean_message(&reason);
    let extra: Vec<&str> = logged.iter().map(String::as_str).filter(|m| !reason.contains(m)).collect();
    if extra.is_empty() { reason } else { format!("{reason}: {}", extra.join("; ")) }
}

/// Puts attempts in the order the providers were requested.
fn order_attempts(requested: &[EpConfig], attempts: Vec<ProviderAttempt>) -> Vec<ProviderAttempt> {
    let mut out: Vec<ProviderAttempt> = Vec::new();
    for ep in requested {
        let name = ep.to_string();
        if let Some(a) = attempts.iter().find(|a| a.provider == name) {
            out.push(a.clone());
        }
    }
    out
}

fn invalid(source: &ModelSource, reason: impl std::fmt::Display) -> OnnxError {
    OnnxError::InvalidModel { path: source.label(), backend: "onnxruntime", reason: reason.to_string() }
}

fn base_builder(
    runtime: &OrtRuntime,
    source: &ModelSource,
    options: &SessionOptions,
    log: Arc<Mutex<LoadLog>>,
) -> Result<SessionBuilder> {
    let fail = |e: ort::Error| invalid(source, format!("session options: {e}"));
    let id = format!("edgeinfer-{}", SESSION_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let label = source.label();
    let logger = move |level: LogLevel, _category: &str, _id: &str, _location: &str, message: &str| {
        if message.contains("placed on [") {
            log.lock().unwrap_or_else(|p| p.into_inner()).placement.push(message.to_string());
        }
        if library::note_for_capture(level, message) {
            tracing::debug!(target: "onnxruntime", model = %label, "{message}");
            return;
        }
        match level {
            LogLevel::Fatal | LogLevel::Error => tracing::error!(target: "onnxruntime", model = %label, "{message}"),
            LogLevel::Warning => tracing::warn!(target: "onnxruntime", model = %label, "{message}"),
            LogLevel::Info => tracing::debug!(target: "onnxruntime", model = %label, "{message}"),
            LogLevel::Verbose => tracing::trace!(target: "onnxruntime", model = %label, "{message}"),
        }
    };
    let mut b = OrtInner::builder(&runtime.environment)
        .map_err(|e| invalid(source, e))?
        .with_log_id(&id)
        .map_err(|e| fail(e.into()))?
        .with_logger(Arc::new(logger))
        .map_err(|e| fail(e.into()))?
        // Verbose logging is what makes ORT print its node placements.
        .with_log_level(LogLevel::Verbose)
        .map_err(|e| fail(e.into()))?
        .with_optimization_level(match options.optimization {
            OptimizationLevel::Disabled => GraphOptimizationLevel::Disable,
            OptimizationLevel::Basic => GraphOptimizationLevel::Level1,
            OptimizationLevel::Extended => GraphOptimizationLevel::Level2,
            OptimizationLevel::All => GraphOptimizationLevel::All,
        })
        .map_err(|e| fail(e.into()))?;
    if let Some(n) = options.intra_threads {
        b = b.with_intra_threads(n).map_err(|e| fail(e.into()))?;
    }
    if let Some(n) = options.inter_threads {
        b = b.with_inter_threads(n).map_err(|e| fail(e.into()))?;
        if n > 1 {
            b = b.with_parallel_execution(true).map_err(|e| fail(e.into()))?;
        }
    }
    for (name, value) in &options.dims {
        b = b.with_dimension_override(name, *value as i64).map_err(|e| fail(e.into()))?;
    }
    if options.disable_cpu_fallback {
        b = b.with_disable_cpu_fallback().map_err(|e| fail(e.into()))?;
    }
    if let Some(path) = &options.optimized_model_path {
        b = b.with_optimized_model_path(path).map_err(|e| fail(e.into()))?;
    }
    for (key, value) in &options.ort_config {
        b = b.with_config_entry(key, value).map_err(|e| fail(e.into()))?;
    }
    Ok(b)
}

fn commit(mut builder: SessionBuilder, source: &ModelSource, _options: &SessionOptions) -> ort::Result<OrtInner> {
    match source {
        ModelSource::File(path) => builder.commit_from_file(path),
        ModelSource::Memory(bytes) => builder.commit_from_memory(bytes),
    }
}

fn describe(session: &OrtInner) -> (Vec<TensorInfo>, Vec<TensorInfo>) {
    let info = |outlet: &ort::value::Outlet| {
        let (dtype, shape) = match outlet.dtype() {
            ValueType::Tensor { ty, shape, dimension_symbols } => {
                let dims = shape
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| {
                        if d >= 0 {
                            Dim::Fixed(d as usize)
                        } else {
                            match dimension_symbols.get(i) {
                                Some(s) if !s.is_empty() => Dim::Symbolic(s.clone()),
                                _ => Dim::Symbolic("?".into()),
                            }
                        }
                    })
                    .collect();
                (dtype_of(*ty), dims)
            }
            _ => (DType::Other, Vec::new()),
        };
        TensorInfo { name: outlet.name().to_string(), dtype, shape }
    };
    (session.inputs().iter().map(info).collect(), session.outputs().iter().map(info).collect())
}

fn dtype_of(ty: TensorElementType) -> DType {
    match ty {
        TensorElementType::Float32 => DType::F32,
        TensorElementType::Float16 => DType::F16,
        TensorElementType::Int64 => DType::I64,
        TensorElementType::Int32 => DType::I32,
        TensorElementType::Bool => DType::Bool,
        TensorElementType::Uint8 => DType::U8,
        TensorElementType::Float64 => DType::F64,
        TensorElementType::Bfloat16 => DType::Bf16,
        TensorElementType::Int8 => DType::I8,
        TensorElementType::Int16 => DType::I16,
        TensorElementType::Uint16 => DType::U16,
        TensorElementType::Uint32 => DType::U32,
        TensorElementType::Uint64 => DType::U64,
        TensorElementType::String => DType::String,
        _ => DType::Other,
    }
}

impl Session for OrtSession {
    fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    fn run(&self, inputs: Vec<(String, Tensor)>) -> Result<Outputs> {
        Ok(self.run_retaining(inputs, Vec::new(), &[])?.0)
    }

    // `inputs` are passed as views of our arrays (no copy unless an array is not contiguous),
    // `retained` values as ORT's own values; the outputs named in `retain` stay ORT values, the
    // others are copied into tensors. With an output placed on the device, the run goes through
    // an IoBinding instead (see `run_bound`).
    fn run_retaining(
        &self,
        inputs: Vec<(String, Tensor)>,
        retained: Vec<(String, Retained)>,
        retain: &[Retain],
    ) -> Result<(Outputs, Vec<Retained>)> {
        check_retain(&self.outputs, retain)?;
        let retained = self.readable(retained)?;
        validate_with_retained(&self.inputs, &inputs, &retained)?;
        if retain.iter().any(|r| r.placement == Placement::Device) {
            let (outputs, kept, _) = self.run_bound(inputs, retained, retain, Vec::new())?;
            return Ok((outputs, kept));
        }
        let standard: Vec<(&str, StandardInput<'_>)> =
            tensor_inputs(&inputs, &retained).map(|(name, t)| (name, StandardInput::of(t))).collect();
        let mut values: Vec<(std::borrow::Cow<'_, str>, ort::session::SessionInputValue<'_>)> =
            Vec::with_capacity(inputs.len() + retained.len());
        for (name, input) in &standard {
            values.push((std::borrow::Cow::Borrowed(*name), input.to_value().map_err(|e| self.run_error(e))?));
        }
        for (name, r) in &retained {
            if let Held::Ort(v) = r.held() {
                values.push((std::borrow::Cow::Borrowed(name.as_str()), v.into()));
            }
        }
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Locked { session, run_options, .. } = &mut *guard;
        let results = session
            .run_with_options(ort::session::SessionInputs::<'_, '_, 0>::ValueMap(values), run_options)
            .map_err(|e| self.run_error(e))?;
        // What ORT may hand back in an input's buffer (a graph output that is a graph input, a
        // pass-through) points into memory we lent it, which is freed when this call returns.
        let lent: Vec<std::ops::Range<usize>> = standard.iter().map(|(_, input)| input.byte_range()).collect();
        self.collect(results, retain, &lent, &[])
    }

    fn run_in_place(
        &self,
        inputs: Vec<(String, Tensor)>,
        state: Vec<InPlace>,
        retain: &[Retain],
    ) -> Result<(Outputs, Vec<Retained>, Vec<InPlace>)> {
        // On a GPU the state would have to start in device memory to be shared; there the
        // outputs are retained and handed back instead.
        let on_host = state.iter().all(|s| s.value.memory_device() == "Cpu");
        if self.cuda_device.is_some() || !on_host {
            return crate::backend::run_in_place_by_retaining(self, inputs, state, retain);
        }
        check_retain(&self.outputs, retain)?;
        let described: Vec<(&str, DType, &[usize])> = inputs
            .iter()
            .map(|(name, t)| (name.as_str(), t.dtype(), t.shape()))
            .chain(state.iter().map(|s| (s.input.as_str(), s.value.dtype(), s.value.shape())))
            .collect();
        validate_described(&self.inputs, &described)?;
        for s in &state {
            if !self.outputs.iter().any(|o| o.name == s.output) || retain.iter().any(|r| r.name == s.output) {
                return Err(OnnxError::BadInput(format!("'{}' is not an output to update in place", s.output)));
            }
        }
        self.run_bound(inputs, Vec::new(), retain, state)
    }

    fn release_in_place(&self) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).in_place = None;
    }

    fn providers(&self) -> &ProviderReport {
        &self.report
    }

    fn backend(&self) -> BackendKind {
        BackendKind::Ort
    }

    fn stats(&self) -> SessionStats {
        SessionStats {
            runs: self.runs.load(Ordering::Relaxed),
            plans_built: 0,
            bindings_built: self.bindings_built.load(Ordering::Relaxed),
        }
    }
}

/// An input in standard layout, borrowed when it already is.
enum StandardInput<'a> {
    F32(ndarray::CowArray<'a, f32, ndarray::IxDyn>),
    F16(ndarray::CowArray<'a, half::f16, ndarray::IxDyn>),
    Bf16(ndarray::CowArray<'a, half::bf16, ndarray::IxDyn>),
    I64(ndarray::CowArray<'a, i64, ndarray::IxDyn>),
    I32(ndarray::CowArray<'a, i32, ndarray::IxDyn>),
    Bool(ndarray::CowArray<'a, bool, ndarray::IxDyn>),
    U8(ndarray::CowArray<'a, u8, ndarray::IxDyn>),
}

impl<'a> StandardInput<'a> {
    fn of(t: &'a Tensor) -> Self {
        match t {
            Tensor::F32(a) => StandardInput::F32(a.as_standard_layout()),
            Tensor::F16(a) => StandardInput::F16(a.as_standard_layout()),
            Tensor::Bf16(a) => StandardInput::Bf16(a.as_standard_layout()),
            Tensor::I64(a) => StandardInput::I64(a.as_standard_layout()),
            Tensor::I32(a) => StandardInput::I32(a.as_standard_layout()),
            Tensor::Bool(a) => StandardInput::Bool(a.as_standard_layout()),
            Tensor::U8(a) => StandardInput::U8(a.as_standard_layout()),
        }
    }

    /// The addresses of the data lent to ORT.
    fn byte_range(&self) -> std::ops::Range<usize> {
        fn range<T>(a: &ndarray::CowArray<'_, T, ndarray::IxDyn>) -> std::ops::Range<usize> {
            let start = a.as_ptr() as usize;
            start..start + a.len() * std::mem::size_of::<T>()
        }
        match self {
            StandardInput::F32(a) => range(a),
            StandardInput::F16(a) => range(a),
            StandardInput::Bf16(a) => range(a),
            StandardInput::I64(a) => range(a),
            StandardInput::I32(a) => range(a),
            StandardInput::Bool(a) => range(a),
            StandardInput::U8(a) => range(a),
        }
    }

    /// An ORT-owned copy of the data.
    fn to_owned_value(&self) -> ort::Result<DynValue> {
        Ok(match self {
            StandardInput::F32(a) => ort::value::Tensor::from_array(a.to_owned())?.into_dyn(),
            StandardInput::F16(a) => ort::value::Tensor::from_array(a.to_owned())?.into_dyn(),
            StandardInput::Bf16(a) => ort::value::Tensor::from_array(a.to_owned())?.into_dyn(),
            StandardInput::I64(a) => ort::value::Tensor::from_array(a.to_owned())?.into_dyn(),
            StandardInput::I32(a) => ort::value::Tensor::from_array(a.to_owned())?.into_dyn(),
            StandardInput::Bool(a) => ort::value::Tensor::from_array(a.to_owned())?.into_dyn(),
            StandardInput::U8(a) => ort::value::Tensor::from_array(a.to_owned())?.into_dyn(),
        })
    }

    fn to_value(&self) -> ort::Result<ort::session::SessionInputValue<'_>> {
        Ok(match self {
            StandardInput::F32(a) => TensorRef::from_array_view(a)?.into(),
            StandardInput::F16(a) => TensorRef::from_array_view(a)?.into(),
            StandardInput::Bf16(a) => TensorRef::from_array_view(a)?.into(),
            StandardInput::I64(a) => TensorRef::from_array_view(a)?.into(),
            StandardInput::I32(a) => TensorRef::from_array_view(a)?.into(),
            StandardInput::Bool(a) => TensorRef::from_array_view(a)?.into(),
            StandardInput::U8(a) => TensorRef::from_array_view(a)?.into(),
        })
    }
}

/// A tensor ONNX Runtime allocates with `allocator`, holding a copy of `t` (a value that can be
/// bound as an output, which one made from our own memory cannot).
fn allocated_copy(allocator: &ort::memory::Allocator, t: &Tensor) -> ort::Result<DynValue> {
    fn copy<T: ort::value::PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static>(
        allocator: &ort::memory::Allocator,
        a: &ndarray::ArrayD<T>,
    ) -> ort::Result<DynValue> {
        let mut value = ort::value::Tensor::<T>::new(allocator, a.shape().to_vec())?;
        value.extract_array_mut().assign(a);
        Ok(value.into_dyn())
    }
    match t {
        Tensor::F32(a) => copy(allocator, a),
        Tensor::F16(a) => copy(allocator, a),
        Tensor::Bf16(a) => copy(allocator, a),
        Tensor::I64(a) => copy(allocator, a),
        Tensor::I32(a) => copy(allocator, a),
        Tensor::Bool(a) => copy(allocator, a),
        Tensor::U8(a) => copy(allocator, a),
    }
}

/// The inputs a run holds as our [`Tensor`]s: the plain ones, then retained values that are
/// tensors (the rest are ORT values, passed as they are; tract's were made tensors by
/// `OrtSession::readable`).
fn tensor_inputs<'a>(
    inputs: &'a [(String, Tensor)],
    retained: &'a [(String, Retained)],
) -> impl Iterator<Item = (&'a str, &'a Tensor)> {
    inputs.iter().map(|(name, t)| (name.as_str(), t)).chain(retained.iter().filter_map(|(name, r)| match r.held() {
        Held::Tensor(t) => Some((name.as_str(), t)),
        Held::Ort(_) => None,
        #[cfg(feature = "tract")]
        Held::Tract(_) => None,
    }))
}

/// Where a tensor value's data starts (`None` for non-tensors and empty tensors).
fn data_address(value: &DynValue) -> Option<usize> {
    let tensor = value.view().downcast::<DynTensorValueType>().ok()?;
    let address = tensor.data_ptr() as usize;
    (address != 0).then_some(address)
}

/// The device and device id of a tensor value's memory when the host cannot read it.
fn device_of(value: &DynValue) -> Option<(String, i32)> {
    let tensor = value.view().downcast::<DynTensorValueType>().ok()?;
    let info = tensor.memory_info();
    (!info.is_cpu_accessible()).then(|| (info.allocation_device().as_str().to_string(), info.device_id()))
}

/// The device a tensor value's memory is on, as ONNX Runtime names it (`Cpu`, `Cuda`, ...).
pub(crate) fn memory_device(value: &DynValue) -> String {
    match value.view().downcast::<DynTensorValueType>() {
        Ok(tensor) => tensor.memory_info().allocation_device().as_str().to_string(),
        Err(_) => "Cpu".to_string(),
    }
}

/// Copies an ONNX Runtime tensor value into a [`Tensor`] (from device memory through a copy to
/// the host).
pub(crate) fn tensor_from_value(value: &DynValue) -> std::result::Result<Tensor, String> {
    if let Ok(tensor) = value.view().downcast::<DynTensorValueType>()
        && !tensor.memory_info().is_cpu_accessible()
    {
        let host = tensor.to(AllocationDevice::CPU, 0).map_err(|e| format!("copy to the host: {e}"))?;
        return tensor_from_value(&host.into_dyn());
    }
    let ty = match value.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => return Err(format!("output is not a tensor ({other:?})")),
    };
    let e = |e: ort::Error| e.to_string();
    Ok(match ty {
        TensorElementType::Float32 => Tensor::F32(value.try_extract_array::<f32>().map_err(e)?.to_owned()),
        TensorElementType::Float16 => Tensor::F16(value.try_extract_array::<half::f16>().map_err(e)?.to_owned()),
        TensorElementType::Bfloat16 => Tensor::Bf16(value.try_extract_array::<half::bf16>().map_err(e)?.to_owned()),
        TensorElementType::Int64 => Tensor::I64(value.try_extract_array::<i64>().map_err(e)?.to_owned()),
        TensorElementType::Int32 => Tensor::I32(value.try_extract_array::<i32>().map_err(e)?.to_owned()),
        TensorElementType::Bool => Tensor::Bool(value.try_extract_array::<bool>().map_err(e)?.to_owned()),
        TensorElementType::Uint8 => Tensor::U8(value.try_extract_array::<u8>().map_err(e)?.to_owned()),
        TensorElementType::Float64 => Tensor::F32(value.try_extract_array::<f64>().map_err(e)?.mapv(|v| v as f32)),
        other => return Err(format!("output element type {other:?} is not supported")),
    })
}

/// Runtime facts for reports: version, path, providers compiled in.
pub fn runtime_summary(runtime: &OrtRuntime) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("version", runtime.version.clone()),
        ("path", runtime.path.display().to_string()),
        ("origin", runtime.origin.to_string()),
        ("providers", runtime.available_providers.join(",")),
    ])
}
