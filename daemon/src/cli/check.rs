//! `edgeinfer check`: will this model run here, on which backend and execution provider, how
//! fast, and does it agree with the CPU? Loads one ONNX file on every requested target (tract,
//! and ONNX Runtime once per requested execution provider), fills the inputs, times N runs and
//! compares every target's outputs against the first one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use edgeinfer_onnx::{
    Backend, BackendKind, DType, Dim, EpConfig, ExecutionProvider, ModelSource, OnnxError, Outputs, ProviderReport,
    Session, SessionOptions, Tensor, TensorInfo, parse_ep_list,
};
use serde::Serialize;

use crate::cli::exit::{CliError, ExitCode};

/// Arguments of `edgeinfer check`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:\n  \
                        edgeinfer check model.onnx                           tract, plus ONNX Runtime when found\n  \
                        edgeinfer check model.onnx --ep cuda,cpu --runs 20   each provider as its own target\n  \
                        edgeinfer check decoder.onnx --dim num_points=2 --input image_embeddings=emb.npy\n  \
                        edgeinfer check model.onnx --save-outputs out/ --json\n\n\
                        Exit codes: 0 every target ran, 1 a target failed, 2 bad usage or a model that does not load.")]
pub struct CheckArgs {
    /// The ONNX model file.
    pub model: PathBuf,
    /// Backends to try: tract, ort (repeat or comma-separate). Default: tract, plus ort when an
    /// ONNX Runtime library is found or --ep is given.
    #[arg(long, value_delimiter = ',', value_parser = crate::cli::values::backend())]
    pub backend: Vec<BackendKind>,
    /// ONNX Runtime execution providers, each tried as its own target, e.g. `cuda,openvino:NPU,cpu`.
    /// Join with `+` for one target with a preference list that falls back as in a model config,
    /// e.g. `tensorrt+cuda+cpu`.
    #[arg(long)]
    pub ep: Option<String>,
    /// An input from a .npy file: `name=path.npy` (repeatable). Other inputs get deterministic data.
    #[arg(long = "input", value_name = "NAME=FILE")]
    pub inputs: Vec<String>,
    /// A value for a symbolic dimension: `name=value` (repeatable).
    #[arg(long = "dim", value_name = "NAME=VALUE")]
    pub dims: Vec<String>,
    /// Timed runs per target (after one warm-up run).
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Write each output as DIR/<output>.npy (one target) or DIR/<target>/<output>.npy.
    #[arg(long, value_name = "DIR")]
    pub save_outputs: Option<PathBuf>,
    /// ORT: every node must run on the requested provider (`session.disable_cpu_ep_fallback`):
    /// a graph the provider cannot take entirely fails to load instead of silently splitting.
    #[arg(long)]
    pub disable_cpu_fallback: bool,
    /// Threads per session (ORT intra-op; tract matmul pool). Default: the backend's choice.
    #[arg(long)]
    pub threads: Option<usize>,
    /// ONNX Runtime library to load (else ORT_DYLIB_PATH, the onnxruntime Python package, system paths).
    #[arg(long, value_name = "PATH")]
    pub ort_library: Option<PathBuf>,
    /// Seed for generated input data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Machine-readable report on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Named input tensors, and where each one's data came from.
type Feed = (Vec<(String, Tensor)>, BTreeMap<String, String>);

/// One thing to load the model on.
#[derive(Clone, Debug)]
struct Target {
    backend: BackendKind,
    /// ORT: the preference list. One entry is required (a check reports the provider's own
    /// failure); several (`tensorrt+cuda+cpu`) fall back down the list as a model config does.
    eps: Vec<EpConfig>,
}

impl Target {
    fn name(&self) -> String {
        if self.eps.is_empty() {
            return self.backend.name().to_string();
        }
        let list: Vec<String> = self.eps.iter().map(|e| e.provider.to_string()).collect();
        format!("ort/{}", list.join("+"))
    }

    fn dir_name(&self) -> String {
        self.name().replace(['/', ':'], "-")
    }
}

/// Latency statistics in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    /// Fastest run.
    pub min_ms: f64,
    /// Median run.
    pub median_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// Number of timed runs.
    pub runs: usize,
}

impl Latency {
    /// Statistics over a set of durations (ms).
    pub fn from_samples(mut ms: Vec<f64>) -> Option<Latency> {
        if ms.is_empty() {
            return None;
        }
        ms.sort_by(f64::total_cmp);
        let pick = |q: f64| ms[(((ms.len() - 1) as f64) * q).round() as usize];
        Some(Latency { min_ms: ms[0], median_ms: pick(0.5), p90_ms: pick(0.9), runs: ms.len() })
    }
}

/// What happened on one target.
#[derive(Debug, Serialize)]
pub struct TargetReport {
    /// `tract`, `ort/cpu`, `ort/cuda`...
    pub target: String,
    /// Backend description (version, library path).
    pub backend: Option<String>,
    /// `None` when everything worked.
    pub error: Option<String>,
    /// Model load time.
    pub load_ms: Option<f64>,
    /// First (warm-up) run, which includes lazy planning.
    pub first_run_ms: Option<f64>,
    /// Timed runs.
    pub latency: Option<Latency>,
    /// Which providers run the session.
    pub providers: Option<ProviderReport>,
    /// Output differences against the reference target (the first one that ran).
    pub parity: BTreeMap<String, OutputDiff>,
    #[serde(skip)]
    outputs: Option<Outputs>,
    #[serde(skip)]
    invalid_model: bool,
}

/// Difference of one output against the reference.
#[derive(Debug, Serialize)]
pub struct OutputDiff {
    /// Largest absolute difference.
    pub max_abs: f32,
    /// Largest relative difference.
    pub max_rel: f32,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// The model file.
    pub model: String,
    /// Declared inputs.
    pub inputs: Vec<TensorInfo>,
    /// Declared outputs.
    pub outputs: Vec<TensorInfo>,
    /// Where each input's data came from.
    pub input_sources: BTreeMap<String, String>,
    /// The target others are compared against.
    pub reference: Option<String>,
    /// One entry per target.
    pub targets: Vec<TargetReport>,
}

/// Runs the check; prints the report; returns the exit code.
pub fn run(args: &CheckArgs) -> Result<ExitCode, CliError> {
    if !args.model.exists() {
        return Err(CliError::usage(format!("model file '{}' does not exist", args.model.display())));
    }
    let dims = parse_pairs(&args.dims, "--dim")?
        .into_iter()
        .map(|(k, v)| {
            v.parse::<usize>()
                .map(|n| (k.clone(), n))
                .map_err(|_| CliError::usage(format!("--dim {k}={v}: value must be a non-negative integer")))
        })
        .collect::<Result<BTreeMap<String, usize>, CliError>>()?;
    let targets = targets(args)?;
    let options = SessionOptions {
        intra_threads: args.threads,
        dims: dims.clone(),
        disable_cpu_fallback: args.disable_cpu_fallback,
        ..SessionOptions::default()
    };

    let mut reports: Vec<TargetReport> = Vec::new();
    let mut declared: Option<(Vec<TensorInfo>, Vec<TensorInfo>)> = None;
    let mut inputs: Option<Feed> = None;
    let mut ort_backend: Option<Result<Arc<dyn Backend>, String>> = None;

    for target in &targets {
        let mut report = TargetReport {
            target: target.name(),
            backend: None,
            error: None,
            load_ms: None,
            first_run_ms: None,
            latency: None,
            providers: None,
            parity: BTreeMap::new(),
            outputs: None,
            invalid_model: false,
        };
        let backend = match target.backend {
            BackendKind::Tract => edgeinfer_onnx::backend(BackendKind::Tract, None).map_err(|e| e.to_string()),
            BackendKind::Ort => ort_backend
                .get_or_insert_with(|| {
                    edgeinfer_onnx::backend(BackendKind::Ort, args.ort_library.as_deref()).map_err(|e| e.to_string())
                })
                .clone(),
        };
        let backend = match backend {
            Ok(b) => b,
            Err(e) => {
                report.error = Some(e);
                reports.push(report);
                continue;
            }
        };
        report.backend = Some(backend.describe());
        let mut target_options = options.clone();
        target_options.execution_providers = target.eps.clone();
        let started = Instant::now();
        let session = match backend.load(&ModelSource::File(args.model.clone()), &target_options) {
            Ok(s) => s,
            Err(e) => {
                report.invalid_model = matches!(e, OnnxError::InvalidModel { .. } | OnnxError::Io { .. });
                report.error = Some(e.to_string());
                reports.push(report);
                continue;
            }
        };
        report.load_ms = Some(ms(started));
        report.providers = Some(session.providers().clone());
        if declared.is_none() {
            declared = Some((session.inputs().to_vec(), session.outputs().to_vec()));
        }
        if inputs.is_none() {
            inputs = Some(prepare_inputs(session.inputs(), args, &dims)?);
        }
        let Some((feed, _)) = &inputs else { continue };
        match time_runs(session.as_ref(), feed, args.runs) {
            Ok((first, latency, outputs)) => {
                report.first_run_ms = Some(first);
                report.latency = latency;
                report.outputs = Some(outputs);
            }
            Err(e @ OnnxError::BadInput(_)) => return Err(CliError::usage(e.to_string())),
            Err(e) => report.error = Some(e.to_string()),
        }
        reports.push(report);
    }

    // A file no target could even load is a bad model: one line, exit 2.
    if reports.iter().all(|r| r.invalid_model) {
        let first = reports.first().and_then(|r| r.error.clone()).unwrap_or_default();
        return Err(CliError::usage(first.replace('\n', " ")));
    }

    let reference = reports.iter().position(|r| r.outputs.is_some());
    if let Some(ref_ix) = reference {
        let (head, tail) = reports.split_at_mut(ref_ix + 1);
        let reference = &head[ref_ix];
        if let Some(ref_out) = &reference.outputs {
            for report in tail.iter_mut() {
                let Some(out) = &report.outputs else { continue };
                for (name, tensor) in out.iter() {
                    if let Some(r) = ref_out.get(name)
                        && let Ok(d) = tensor.compare(r)
                    {
                        report.parity.insert(name.to_string(), OutputDiff { max_abs: d.max_abs, max_rel: d.max_rel });
                    }
                }
            }
        }
    }

    if let Some(dir) = &args.save_outputs {
        save_outputs(dir, &targets, &reports)?;
    }

    let (decl_inputs, decl_outputs) = declared.unwrap_or_default();
    let report = CheckReport {
        model: args.model.display().to_string(),
        inputs: decl_inputs,
        outputs: decl_outputs,
        input_sources: inputs.map(|(_, s)| s).unwrap_or_default(),
        reference: reference.map(|i| reports[i].target.clone()),
        targets: reports,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| CliError::internal(e.to_string()))?);
    } else {
        print_human(&report, &args.model);
    }
    Ok(if report.targets.iter().any(|t| t.error.is_some()) { ExitCode::Failure } else { ExitCode::Ok })
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

fn targets(args: &CheckArgs) -> Result<Vec<Target>, CliError> {
    let mut lists: Vec<Vec<EpConfig>> = Vec::new();
    if let Some(spec) = &args.ep {
        for item in spec.split(',').filter(|s| !s.trim().is_empty()) {
            let mut list = parse_ep_list(&item.replace('+', ",")).map_err(|e| CliError::usage(e.to_string()))?;
            if let [only] = list.as_mut_slice() {
                // Alone, a provider is required: a check reports its own failure, never a silent fallback.
                only.require = true;
            }
            lists.push(list);
        }
    }
    let mut backends = args.backend.clone();
    if backends.is_empty() {
        backends.push(BackendKind::Tract);
        let ort_found =
            edgeinfer_onnx::backend(BackendKind::Ort, args.ort_library.as_deref()).map(|_| true).unwrap_or(false);
        if !lists.is_empty() || ort_found {
            backends.push(BackendKind::Ort);
        }
    }
    backends.dedup();
    let mut out = Vec::new();
    for backend in backends {
        match backend {
            BackendKind::Tract => out.push(Target { backend, eps: Vec::new() }),
            BackendKind::Ort if lists.is_empty() => {
                out.push(Target { backend, eps: vec![EpConfig { provider: ExecutionProvider::Cpu, require: true }] })
            }
            BackendKind::Ort => out.extend(lists.iter().map(|l| Target { backend, eps: l.clone() })),
        }
    }
    Ok(out)
}

fn parse_pairs(pairs: &[String], flag: &str) -> Result<Vec<(String, String)>, CliError> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(CliError::usage(format!("{flag} {p}: expected NAME=VALUE"))),
        })
        .collect()
}

/// Inputs from `--input` files, the rest generated to fit the declared shapes.
fn prepare_inputs(declared: &[TensorInfo], args: &CheckArgs, dims: &BTreeMap<String, usize>) -> Result<Feed, CliError> {
    let given = parse_pairs(&args.inputs, "--input")?;
    let mut feed = Vec::new();
    let mut sources = BTreeMap::new();
    for (name, file) in &given {
        let Some(info) = declared.iter().find(|i| &i.name == name) else {
            let known: Vec<&str> = declared.iter().map(|i| i.name.as_str()).collect();
            return Err(CliError::usage(format!(
                "--input {name}: the model has no input '{name}' (its inputs: {})",
                known.join(", ")
            )));
        };
        let tensor = Tensor::read_npy(Path::new(file)).map_err(|e| CliError::usage(e.to_string()))?;
        let tensor = if tensor.dtype() == info.dtype {
            tensor
        } else {
            tensor.cast(info.dtype).map_err(|e| {
                CliError::usage(format!(
                    "--input {name}: {e} (the model wants {} {})",
                    info.dtype,
                    fmt_dims(&info.shape)
                ))
            })?
        };
        sources.insert(name.clone(), file.clone());
        feed.push((name.clone(), tensor));
    }
    let mut missing_dims = Vec::new();
    for (ix, info) in declared.iter().enumerate() {
        if given.iter().any(|(n, _)| n == &info.name) {
            continue;
        }
        let mut shape = Vec::new();
        for d in &info.shape {
            match d {
                Dim::Fixed(n) => shape.push(*n),
                Dim::Symbolic(s) => match dims.get(s) {
                    Some(v) => shape.push(*v),
                    None => {
                        if !missing_dims.contains(s) {
                            missing_dims.push(s.clone());
                        }
                    }
                },
            }
        }
        if shape.len() != info.shape.len() {
            continue;
        }
        let is_mask = info.name.to_ascii_lowercase().contains("mask") && info.dtype != DType::F32;
        let tensor = if is_mask {
            Tensor::zeros(info.dtype, &shape).map(|z| match z {
                Tensor::I64(a) => Tensor::I64(a.mapv(|_| 1)),
                Tensor::I32(a) => Tensor::I32(a.mapv(|_| 1)),
                Tensor::Bool(a) => Tensor::Bool(a.mapv(|_| true)),
                Tensor::U8(a) => Tensor::U8(a.mapv(|_| 1)),
                other => other,
            })
        } else {
            Tensor::deterministic(info.dtype, &shape, args.seed.wrapping_add(ix as u64))
        }
        .map_err(|e| CliError::usage(format!("input '{}': {e}", info.name)))?;
        sources.insert(
            info.name.clone(),
            format!("{} {:?} (seed {})", if is_mask { "ones" } else { "deterministic" }, shape, args.seed),
        );
        feed.push((info.name.clone(), tensor));
    }
    if !missing_dims.is_empty() {
        let flags: Vec<String> = missing_dims.iter().map(|d| format!("--dim {d}=N")).collect();
        return Err(CliError::usage(format!(
            "the model has symbolic dimensions without a value: give {} (or pass those inputs with --input)",
            flags.join(" ")
        )));
    }
    Ok((feed, sources))
}

fn time_runs(
    session: &dyn Session,
    feed: &[(String, Tensor)],
    runs: usize,
) -> Result<(f64, Option<Latency>, Outputs), OnnxError> {
    let started = Instant::now();
    let outputs = session.run(feed.to_vec())?;
    let first = ms(started);
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let inputs = feed.to_vec();
        let started = Instant::now();
        session.run(inputs)?;
        samples.push(ms(started));
    }
    Ok((first, Latency::from_samples(samples), outputs))
}

fn save_outputs(dir: &Path, targets: &[Target], reports: &[TargetReport]) -> Result<(), CliError> {
    let single = targets.len() == 1;
    for (target, report) in targets.iter().zip(reports) {
        let Some(outputs) = &report.outputs else { continue };
        let folder = if single { dir.to_path_buf() } else { dir.join(target.dir_name()) };
        std::fs::create_dir_all(&folder)
            .map_err(|e| CliError::usage(format!("--save-outputs {}: {e}", folder.display())))?;
        for (name, tensor) in outputs.iter() {
            let file = folder.join(format!("{}.npy", name.replace(['/', '\\'], "_")));
            tensor.write_npy(&file).map_err(|e| CliError::usage(e.to_string()))?;
        }
    }
    Ok(())
}

fn fmt_dims(shape: &[Dim]) -> String {
    edgeinfer_onnx::backend::fmt_shape(shape)
}

fn print_human(report: &CheckReport, model: &Path) {
    let size = std::fs::metadata(model).map(|m| m.len() as f64 / 1e6).unwrap_or(0.0);
    println!("model   {} ({size:.2} MB)", report.model);
    let width = report.inputs.iter().chain(&report.outputs).map(|i| i.name.len()).max().unwrap_or(0);
    println!("inputs");
    for i in &report.inputs {
        let src = report.input_sources.get(&i.name).map(String::as_str).unwrap_or("");
        println!("  {:<width$}  {:<8} {:<28} <- {src}", i.name, i.dtype.name(), fmt_dims(&i.shape));
    }
    println!("outputs");
    for o in &report.outputs {
        println!("  {:<width$}  {:<8} {}", o.name, o.dtype.name(), fmt_dims(&o.shape));
    }
    println!();
    println!(
        "{:<22} {:>9} {:>10} {:>9} {:>10} {:>9}  providers",
        "target", "load ms", "1st run ms", "min ms", "median ms", "p90 ms"
    );
    for t in &report.targets {
        match (&t.error, &t.latency) {
            (Some(e), _) => println!("{:<22} FAILED: {}", t.target, e.replace('\n', "\n      ")),
            (None, lat) => {
                let f = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
                println!(
                    "{:<22} {:>9} {:>10} {:>9} {:>10} {:>9}  {}",
                    t.target,
                    f(t.load_ms),
                    f(t.first_run_ms),
                    f(lat.as_ref().map(|l| l.min_ms)),
                    f(lat.as_ref().map(|l| l.median_ms)),
                    f(lat.as_ref().map(|l| l.p90_ms)),
                    providers_line(t.providers.as_ref())
                );
            }
        }
    }
    for t in &report.targets {
        if let Some(b) = &t.backend {
            println!("  {:<20} {b}", t.target);
        }
        for a in t.providers.iter().flat_map(|p| &p.attempts) {
            if let Some(e) = &a.error {
                println!("  {:<20} fell back from {}: {}", t.target, a.provider, e.replace('\n', " "));
            }
        }
    }
    if let Some(reference) = &report.reference {
        let compared: Vec<&TargetReport> = report.targets.iter().filter(|t| !t.parity.is_empty()).collect();
        if !compared.is_empty() {
            println!();
            println!("parity against {reference}");
            for t in compared {
                for (name, d) in &t.parity {
                    println!(
                        "  {:<22} {:<width$}  max abs {:.3e}  max rel {:.3e}",
                        t.target, name, d.max_abs, d.max_rel
                    );
                }
            }
        }
    }
}

fn providers_line(p: Option<&ProviderReport>) -> String {
    let Some(p) = p else { return String::new() };
    if p.node_placement.is_empty() {
        return p.active.join(", ");
    }
    let placed: Vec<String> = p.node_placement.iter().map(|(ep, n)| format!("{ep}: {n} nodes")).collect();
    placed.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles() {
        let l = Latency::from_samples((1..=10).map(f64::from).collect()).unwrap();
        assert_eq!(l.min_ms, 1.0);
        assert_eq!(l.median_ms, 6.0);
        assert_eq!(l.p90_ms, 9.0);
        assert!(Latency::from_samples(vec![]).is_none());
    }

    #[test]
    fn pairs_need_both_sides() {
        assert!(parse_pairs(&["a=1".into()], "--dim").is_ok());
        for bad in ["a", "=1", "a="] {
            assert!(parse_pairs(&[bad.into()], "--dim").is_err(), "{bad}");
        }
    }
}
