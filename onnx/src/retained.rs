//! Outputs a session keeps in the backend's own memory so they can be fed back as inputs of a
//! later run without a copy: a decoder's KV cache, a recurrent state.
//!
//! [`Session::run`](crate::Session::run) hands every output back as an owned [`Tensor`]; for
//! ONNX Runtime that is a copy out of ORT's buffer, and for a LLaMA decoder at 1024 tokens of
//! context it is ~47 MB per generated token (plus as many fresh pages). With
//! [`Session::run_retaining`](crate::Session::run_retaining) the named outputs come back as
//! [`Retained`] values instead: ORT's own values, passed straight back to ORT next step. On
//! tract they are tract's own tensors, for the same reason: converting one to a [`Tensor`] and
//! back is two copies (tract keeps its data in aligned buffers of its own), ~12 MB each per
//! token at 256 tokens of context on a 135M model.
//!
//! Each output to keep is a [`Retain`]: its name and a [`Placement`]. On a CUDA or TensorRT
//! session, [`Placement::Device`] keeps the value in GPU memory, so a KV cache never crosses the
//! bus between steps; [`Placement::Host`] keeps it in CPU memory, where it can be read in place
//! (the logits a sampler reads). On any other session both are host memory. A value in GPU
//! memory fed to a session that cannot read it (no CUDA, another GPU, tract) is copied to the
//! host first.

use crate::error::{OnnxError, Result};
use crate::tensor::{DType, Tensor, TensorInfo};

/// Where a retained output is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// CPU memory: readable in place with [`Retained::view_f32`].
    Host,
    /// GPU memory on a CUDA or TensorRT session, host memory on any other. Fed back without
    /// crossing the bus; reading it on the host ([`Retained::to_tensor`]) copies it.
    Device,
}

/// An output to keep from a run, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retain {
    /// The output's name.
    pub name: String,
    /// Where to keep it.
    pub placement: Placement,
}

impl Retain {
    /// Keep `name` in CPU memory.
    pub fn host(name: impl Into<String>) -> Self {
        Retain { name: name.into(), placement: Placement::Host }
    }

    /// Keep `name` in the memory of the device that runs the graph.
    pub fn device(name: impl Into<String>) -> Self {
        Retain { name: name.into(), placement: Placement::Device }
    }
}

/// A value the graph reads as `input` and writes back as `output`, of the same shape: a KV cache
/// of the whole context that `GroupQueryAttention` updates in place (ORT-GenAI's
/// `past_present_share_buffer`). ONNX Runtime on the CPU binds both names to one buffer, so a
/// step writes only its new positions; other backends run the graph as usual and hand the
/// output back as the new value.
#[derive(Debug)]
pub struct InPlace {
    /// The input name.
    pub input: String,
    /// The output name.
    pub output: String,
    /// The current value (an initial [`Retained::from_tensor`], then what the last run gave).
    pub value: Retained,
}

/// A session output kept for feeding back. Cheap to move; read it with [`Retained::to_tensor`]
/// (a copy when the value lives in ONNX Runtime).
#[derive(Debug)]
pub struct Retained {
    dtype: DType,
    shape: Vec<usize>,
    value: Held,
}

/// Where the data is.
#[derive(Debug)]
pub(crate) enum Held {
    /// An ordinary tensor (tract outputs, initial values made by the caller).
    Tensor(Tensor),
    /// An ONNX Runtime value (shared, reference counted by ort).
    #[cfg(feature = "ort")]
    Ort(ort::value::DynValue),
    /// A tract value (shared, reference counted), always in host memory.
    #[cfg(feature = "tract")]
    Tract(tract_onnx::prelude::TValue),
}

impl Retained {
    /// Wraps a tensor, e.g. an empty initial KV cache.
    pub fn from_tensor(tensor: Tensor) -> Self {
        Retained { dtype: tensor.dtype(), shape: tensor.shape().to_vec(), value: Held::Tensor(tensor) }
    }

    /// Wraps an ONNX Runtime value whose element type and shape were read by the caller.
    #[cfg(feature = "ort")]
    pub(crate) fn from_ort(value: ort::value::DynValue, dtype: DType, shape: Vec<usize>) -> Self {
        Retained { dtype, shape, value: Held::Ort(value) }
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Whether the data lives in the backend (an ONNX Runtime or a tract value) rather than in a
    /// [`Tensor`].
    pub fn is_backend_owned(&self) -> bool {
        !matches!(self.value, Held::Tensor(_))
    }

    /// Where the data is: `"Cpu"`, or the device's name as ONNX Runtime gives it (`"Cuda"`).
    pub fn memory_device(&self) -> String {
        match &self.value {
            Held::Tensor(_) => "Cpu".to_string(),
            #[cfg(feature = "ort")]
            Held::Ort(v) => crate::ort::memory_device(v),
            #[cfg(feature = "tract")]
            Held::Tract(_) => "Cpu".to_string(),
        }
    }

    /// Wraps a tract value whose element type and shape were read by the caller.
    #[cfg(feature = "tract")]
    pub(crate) fn from_tract(value: tract_onnx::prelude::TValue, dtype: DType, shape: Vec<usize>) -> Self {
        Retained { dtype, shape, value: Held::Tract(value) }
    }

    #[cfg(feature = "ort")]
    pub(crate) fn held(&self) -> &Held {
        &self.value
    }

    /// As a tract value: tract's own as it is, anything else converted (one copy).
    #[cfg(feature = "tract")]
    pub(crate) fn into_tract_value(self) -> Result<tract_onnx::prelude::TValue> {
        match self.value {
            Held::Tract(v) => Ok(v),
            value => crate::tract::to_tract_value(Retained { value, ..self }.into_tensor()?),
        }
    }

    #[cfg(feature = "ort")]
    pub(crate) fn into_held(self) -> Held {
        self.value
    }

    /// The data in place, when it is `f32` and in CPU memory: no copy, whichever backend holds it.
    pub fn view_f32(&self) -> Option<ndarray::ArrayViewD<'_, f32>> {
        match &self.value {
            Held::Tensor(t) => t.as_f32().map(|a| a.view()),
            #[cfg(feature = "ort")]
            Held::Ort(v) => v.try_extract_array::<f32>().ok(),
            #[cfg(feature = "tract")]
            Held::Tract(v) => v.to_plain_array_view::<f32>().ok(),
        }
    }

    /// The data in place, when it is `f16` and in CPU memory.
    pub fn view_f16(&self) -> Option<ndarray::ArrayViewD<'_, half::f16>> {
        match &self.value {
            Held::Tensor(Tensor::F16(a)) => Some(a.view()),
            Held::Tensor(_) => None,
            #[cfg(feature = "ort")]
            Held::Ort(v) => v.try_extract_array::<half::f16>().ok(),
            #[cfg(feature = "tract")]
            Held::Tract(v) => v.to_plain_array_view::<half::f16>().ok(),
        }
    }

    /// A copy of the data as a tensor.
    pub fn to_tensor(&self) -> Result<Tensor> {
        match &self.value {
            Held::Tensor(t) => Ok(t.clone()),
            #[cfg(feature = "ort")]
            Held::Ort(v) => crate::ort::tensor_from_value(v).map_err(|reason| OnnxError::Run {
                backend: "onnxruntime",
                reason: format!("retained value: {reason}"),
            }),
            #[cfg(feature = "tract")]
            Held::Tract(v) => crate::tract::tensor_from_tract(v)
                .map_err(|reason| OnnxError::Run { backend: "tract", reason: format!("retained value: {reason:#}") }),
        }
    }

    /// The data as a tensor: moved out when it is one, copied when the backend holds it.
    pub fn into_tensor(self) -> Result<Tensor> {
        match self.value {
            Held::Tensor(t) => Ok(t),
            #[cfg(any(feature = "ort", feature = "tract"))]
            _ => self.to_tensor(),
        }
    }
}

impl From<Tensor> for Retained {
    fn from(tensor: Tensor) -> Self {
        Retained::from_tensor(tensor)
    }
}

/// Checks `retain` before a run: every name a declared output, none twice.
pub(crate) fn check_retain(outputs: &[TensorInfo], retain: &[Retain]) -> Result<()> {
    for (i, Retain { name, .. }) in retain.iter().enumerate() {
        if !outputs.iter().any(|o| &o.name == name) {
            let known: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
            return Err(OnnxError::BadInput(format!(
                "cannot retain unknown output '{name}'; the model's outputs are: {}",
                known.join(", ")
            )));
        }
        if retain[..i].iter().any(|r| &r.name == name) {
            return Err(OnnxError::BadInput(format!("output '{name}' asked to be retained twice")));
        }
    }
    Ok(())
}
