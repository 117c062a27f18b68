//! `edgeinfer local`: run a task in-process on a model directory, without the daemon — the same
//! flags and output as the daemon client. Users try a model this way before deploying it.

use std::path::PathBuf;

use clap::Args;
use edgeinfer_models::layout::Variant;
use edgeinfer_models::manifest::Family;
use edgeinfer_onnx::{BackendKind, parse_ep_list};

use crate::api::ApiError;
use crate::cli::tasks::{TaskCommand, print_event, print_response};
use crate::server::engine::{Engine, EngineOptions};

/// `edgeinfer local`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:\n  \
                        edgeinfer local -m models/fixtures/sam segment photo.png --point 100,60 --png mask.png\n  \
                        edgeinfer local -m hf:onnx-community/dinov2-small --variant quantized embed a.jpg b.jpg\n  \
                        edgeinfer local -m hf:onnx-community/SmolLM2-135M-Instruct --variant q4 generate --chat \"Hi\"\n  \
                        edgeinfer local -m ./dinov2 --backend ort --ep cuda,cpu embed photo.jpg")]
pub struct LocalArgs {
    /// The model directory, or `hf:OWNER/NAME[@REVISION]` for a folder `edgeinfer pull` fetched.
    #[arg(long, short)]
    pub model: PathBuf,
    /// The model family (default: detected from the directory).
    #[arg(long, value_parser = crate::cli::values::family())]
    pub family: Option<Family>,
    /// The backend: tract (pure Rust) or ort (ONNX Runtime).
    #[arg(long, default_value = "tract", value_parser = crate::cli::values::backend())]
    pub backend: BackendKind,
    /// The graph's precision variant (onnx-community's `onnx/model_<variant>.onnx`).
    #[arg(long, default_value = "fp32", value_parser = crate::cli::values::variant())]
    pub variant: Variant,
    /// Execution providers for ort, in order, e.g. `cuda,cpu`.
    #[arg(long)]
    pub ep: Option<String>,
    /// Threads per session.
    #[arg(long)]
    pub threads: Option<usize>,
    /// ONNX Runtime library (else ORT_DYLIB_PATH, the onnxruntime Python package, system paths).
    #[arg(long)]
    pub ort_library: Option<PathBuf>,
    /// Gallery file for classify/gallery (DINOv2).
    #[arg(long)]
    pub gallery: Option<PathBuf>,
    /// The task.
    #[command(subcommand)]
    pub task: TaskCommand,
}

/// Runs the task; returns the answer's exit status.
pub fn run(args: &LocalArgs) -> Result<(), ApiError> {
    let mut options = EngineOptions {
        backend: args.backend,
        variant: args.variant,
        gallery: args.gallery.clone(),
        ..EngineOptions::default()
    };
    options.session.intra_threads = args.threads;
    if let Some(spec) = &args.ep {
        options.execution_providers = parse_ep_list(spec).map_err(|e| ApiError::bad_input(e.to_string()))?;
        options.backend = BackendKind::Ort;
    }
    let dir = crate::hub::resolve_model_path(&args.model).map_err(ApiError::bad_input)?;
    let task = args.task.to_task()?;
    let id = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    // On a terminal, say what is loading: a large model takes seconds before the first answer.
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if tty {
        eprintln!("loading {} ({}, {}) ...", dir.display(), options.variant, options.backend);
    }
    let started = std::time::Instant::now();
    let engine = Engine::load(&id, &dir, args.family, &options, args.ort_library.as_deref())?;
    if tty {
        eprintln!("loaded in {:.1} s", started.elapsed().as_secs_f64());
    }
    let json = args.task.json();
    let response = engine.execute(&task, None, &mut |event| print_event(&event, json))?;
    print_response(&args.task, &response)
}
