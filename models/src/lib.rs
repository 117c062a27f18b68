//! `edgeinfer-models`: the model families edgeinfer serves, each as pre-processing → graph call →
//! post-processing over [`edgeinfer_onnx::Session`]. No transport code lives here; the daemon, the
//! CLI's `local` mode and the benchmarks all call these same functions.

pub mod cache;
pub mod dinov2;
pub mod error;
pub mod fixtures;
pub mod gallery;
pub mod gallery_store;
pub mod image;
pub mod layout;
pub mod llama;
pub mod manifest;
pub mod mask;
pub mod resample;
pub mod sam;

pub use error::{ModelError, Result};
