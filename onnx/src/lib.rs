//! `edgeinfer-onnx`: tensors in, tensors out.
//!
//! One small interface — [`Backend`] loads a model into a [`Session`], a session runs named
//! [`Tensor`]s to named tensors — with two implementations: [`tract`] (pure Rust, always
//! available, the default) and [`ort`] (ONNX Runtime loaded at run time, with execution
//! providers for GPUs and NPUs). Callers never see tract or ort types. This crate knows nothing
//! about SAM, DINOv2, LLaMA, MQTT or D-Bus.

pub mod backend;
pub mod ep;
pub mod error;
#[cfg(any(feature = "tract", feature = "ort"))]
mod guard;
#[cfg(any(feature = "tract", feature = "ort"))]
mod heap;
#[cfg(feature = "ort")]
pub mod ort;
pub mod retained;
pub mod tensor;
#[cfg(feature = "tract")]
pub mod tract;
#[cfg(feature = "tract")]
mod tract_barrier;
#[cfg(feature = "tract")]
mod tract_cache_matmul;
#[cfg(feature = "tract")]
mod tract_gather_q4;
#[cfg(feature = "tract")]
mod tract_gqa;
#[cfg(feature = "tract")]
mod tract_i8_matmul;
#[cfg(feature = "tract")]
mod tract_matmul_bnb4;
#[cfg(feature = "tract")]
mod tract_matmul_integer;
#[cfg(feature = "tract")]
mod tract_matmul_nbits;
#[cfg(feature = "tract")]
mod tract_proto;
#[cfg(feature = "tract")]
mod tract_q4_int8;
#[cfg(feature = "tract")]
mod tract_q4_matmul;
#[cfg(feature = "tract")]
mod tract_quantize;
#[cfg(feature = "tract")]
mod tract_requantize;
#[cfg(feature = "tract")]
mod tract_rescale;
#[cfg(feature = "tract")]
mod tract_rewrite;
#[cfg(feature = "tract")]
mod tract_threads;
#[cfg(feature = "tract")]
mod tract_weights;

use std::path::Path;
use std::sync::Arc;

pub use backend::{
    Backend, BackendKind, ModelSource, OptimizationLevel, ProviderAttempt, ProviderReport, Session, SessionOptions,
    SessionStats, TractPlanMode, conform_inputs, validate_described, validate_inputs,
};
pub use ep::{EpConfig, ExecutionProvider, parse_ep_list};
pub use error::{OnnxError, Result};
pub use retained::{InPlace, Placement, Retain, Retained};
pub use tensor::{DType, Diff, Dim, Outputs, Tensor, TensorElement, TensorInfo};

/// Creates a backend of the given kind. `ort_library` is the configured ONNX Runtime library
/// path (ignored by tract); without it the library is searched for (see [`ort::library`]).
pub fn backend(kind: BackendKind, ort_library: Option<&Path>) -> Result<Arc<dyn Backend>> {
    match kind {
        BackendKind::Tract => {
            #[cfg(feature = "tract")]
            {
                let _ = ort_library;
                Ok(Arc::new(tract::TractBackend::new()))
            }
            #[cfg(not(feature = "tract"))]
            {
                let _ = ort_library;
                Err(OnnxError::BackendNotBuilt("tract"))
            }
        }
        BackendKind::Ort => {
            #[cfg(feature = "ort")]
            {
                Ok(Arc::new(ort::OrtBackend::new(ort_library)?))
            }
            #[cfg(not(feature = "ort"))]
            {
                let _ = ort_library;
                Err(OnnxError::BackendNotBuilt("ort"))
            }
        }
    }
}
