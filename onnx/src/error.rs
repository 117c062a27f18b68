//! The error type of this crate. Every message is meant to be shown to a user as is: it says
//! what went wrong, with which file or tensor, and where it helps, how to fix it.

use std::path::PathBuf;

use crate::tensor::DType;

/// Errors from loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The model file could not be read.
    #[error("cannot read model '{path}': {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a loadable ONNX model (corrupt, truncated, not ONNX, unsupported op...).
    #[error("cannot load model '{path}' on {backend}: {reason}")]
    InvalidModel {
        /// The file (or `<memory>`).
        path: String,
        /// Backend that tried.
        backend: &'static str,
        /// What the backend said.
        reason: String,
    },
    /// No ONNX Runtime shared library was found.
    #[error(
        "ONNX Runtime library not found. Looked in:\n{}\nFix: set `ort_library` in the config or ORT_DYLIB_PATH to a libonnxruntime.so \
         (e.g. from `pip install onnxruntime`: <venv>/lib/python3.*/site-packages/onnxruntime/capi/libonnxruntime.so.*), \
         or install ONNX Runtime into a system library path.",
        searched.iter().map(|s| format!("  - {s}")).collect::<Vec<_>>().join("\n")
    )]
    RuntimeNotFound {
        /// Every place looked at, with why it was not used.
        searched: Vec<String>,
    },
    /// A library was found but could not be used (bad file, too old...).
    #[error("cannot use ONNX Runtime library '{path}': {reason}")]
    RuntimeLoad {
        /// The library file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The runtime is older than the API level this build needs.
    #[error(
        "ONNX Runtime at '{path}' is version {found}, but this build of edgeinfer needs ONNX Runtime >= {required} \
         (ort API level {api}); install a newer runtime or point ORT_DYLIB_PATH at one"
    )]
    RuntimeTooOld {
        /// The library file.
        path: PathBuf,
        /// Version it reports.
        found: String,
        /// Minimum version needed.
        required: String,
        /// API level compiled in.
        api: u32,
    },
    /// A required execution provider could not be used.
    #[error("execution provider '{ep}' is required but failed: {reason}")]
    ExecutionProvider {
        /// The EP.
        ep: String,
        /// The EP's own error.
        reason: String,
    },
    /// CPU fallback is disabled and the providers cannot take every node of the graph.
    #[error("model cannot run entirely on {eps} (CPU fallback disabled): {reason}")]
    Placement {
        /// The registered providers.
        eps: String,
        /// What ONNX Runtime said.
        reason: String,
    },
    /// An execution provider name or option could not be parsed.
    #[error("bad execution provider spec '{spec}': {reason}")]
    BadProviderSpec {
        /// What was given.
        spec: String,
        /// Why it is wrong.
        reason: String,
    },
    /// Inputs do not fit the model (unknown name, missing input, wrong type or shape).
    #[error("{0}")]
    BadInput(String),
    /// A `.npy` file could not be read or written.
    #[error("{path}: {reason}")]
    Npy {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An element type this crate cannot carry.
    #[error("element type {0} is not supported (supported: float32, float16, int64, int32, bool, uint8)")]
    UnsupportedDType(DType),
    /// The model did not produce an expected output.
    #[error("model has no output named '{0}'")]
    MissingOutput(String),
    /// The backend failed while running the model.
    #[error("{backend} inference failed: {reason}")]
    Run {
        /// Backend.
        backend: &'static str,
        /// What it said.
        reason: String,
    },
    /// The requested backend was not compiled into this build.
    #[error("backend '{0}' is not compiled into this build (enable the cargo feature of the same name)")]
    BackendNotBuilt(&'static str),
}

/// Result alias for this crate.
pub type Result<T, E = OnnxError> = std::result::Result<T, E>;
