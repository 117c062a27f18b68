//! `edgeinfer-models`: the model families edgeinfer serves (SAM, DINOv2, LLaMA), each as
//! pre-processing → graph call → post-processing over [`edgeinfer_onnx::Session`]. No transport
//! code lives here.

pub mod fixtures;
