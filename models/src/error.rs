//! The error type of the pipelines. Variants map onto the daemon's stable error codes:
//! `BadInput`/`Image` → bad_input (or too_large for limits), `Config`/`Io` → model load errors,
//! `Onnx` → backend, `Cancelled` → cancelled.

use std::path::PathBuf;

use edgeinfer_onnx::OnnxError;

use crate::image::ImageError;

/// Errors of the model pipelines.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The input image could not be used.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The request does not make sense for this model (a point outside the image, an empty
    /// prompt, a prompt longer than the context...).
    #[error("{0}")]
    BadInput(String),
    /// A limit was exceeded (too many prompts, too many tokens...).
    #[error("{0}")]
    TooLarge(String),
    /// The model directory or its configuration is unusable.
    #[error("model configuration: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The inference backend failed.
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    /// The caller cancelled the operation.
    #[error("cancelled")]
    Cancelled,
}

impl ModelError {
    /// Whether the error is the caller's fault (bad or oversized input) rather than the model's.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            ModelError::BadInput(_)
                | ModelError::TooLarge(_)
                | ModelError::Image(_)
                | ModelError::Onnx(OnnxError::BadInput(_))
        )
    }

    /// Whether the error is about a size/count limit.
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            ModelError::TooLarge(_)
                | ModelError::Image(ImageError::TooManyBytes { .. })
                | ModelError::Image(ImageError::TooManyPixels { .. })
                | ModelError::Image(ImageError::AspectRatio { .. })
                | ModelError::Image(ImageError::ResizeTooLarge { .. })
        )
    }
}

/// Result alias for the pipelines.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// Reads a file, naming it in the error.
pub(crate) fn read(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })
}

/// Reads and parses a JSON file, naming it in the error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let bytes = read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))
}
