//! Backend-neutral tensors: element type, shape (with symbolic dims) and data held as `ndarray`
//! arrays, plus `.npy` reading/writing and the comparisons the parity tests and `edgeinfer check`
//! use. Nothing in here knows tract or ONNX Runtime.

use std::fmt;
use std::path::Path;

use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

use crate::error::OnnxError;

/// Element type of a tensor as declared by a model or carried by a [`Tensor`].
///
/// Only the variants [`DType::is_supported`] names can be carried by a [`Tensor`]; the others
/// exist so that a model using them can still be described (and rejected with a clear error when
/// run).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// 64-bit signed integer.
    I64,
    /// 32-bit signed integer.
    I32,
    /// Boolean.
    Bool,
    /// 8-bit unsigned integer.
    U8,
    /// 64-bit float (describe only).
    F64,
    /// bfloat16.
    Bf16,
    /// 8-bit signed integer (describe only).
    I8,
    /// 16-bit signed integer (describe only).
    I16,
    /// 16-bit unsigned integer (describe only).
    U16,
    /// 32-bit unsigned integer (describe only).
    U32,
    /// 64-bit unsigned integer (describe only).
    U64,
    /// UTF-8 string (describe only).
    String,
    /// Anything else (describe only).
    Other,
}

impl DType {
    /// Whether tensors of this type can be passed to and returned from a session.
    pub fn is_supported(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::Bf16 | DType::I64 | DType::I32 | DType::Bool | DType::U8)
    }

    /// Whether this is a floating-point type (float32, float16, bfloat16, float64).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::Bf16 | DType::F64)
    }

    /// Name as numpy/ONNX users know it (`float32`, `int64`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::Bool => "bool",
            DType::U8 => "uint8",
            DType::F64 => "float64",
            DType::Bf16 => "bfloat16",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::String => "string",
            DType::Other => "other",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One dimension of a declared shape: a number, or a symbol such as `batch_size` or
/// `past_sequence_length + 1` whose value is only known at run time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A symbolic size (its name or expression; `?` when the model gives no name).
    Symbolic(String),
}

impl Dim {
    /// The fixed value, if the dimension is not symbolic.
    pub fn fixed(&self) -> Option<usize> {
        match self {
            Dim::Fixed(n) => Some(*n),
            Dim::Symbolic(_) => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) => f.write_str(s),
        }
    }
}

/// Name, element type and declared shape of a model input or output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorInfo {
    /// Tensor name as it appears in the graph (`image_embeddings`, `present.0.key`, ...).
    pub name: String,
    /// Declared element type.
    pub dtype: DType,
    /// Declared shape; symbolic dims are named.
    pub shape: Vec<Dim>,
}

impl TensorInfo {
    /// Names of the symbolic dimensions of this tensor, in order of appearance.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.shape.iter().filter_map(|d| match d {
            Dim::Symbolic(s) => Some(s.as_str()),
            Dim::Fixed(_) => None,
        })
    }
}

impl fmt::Display for TensorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        write!(f, "{} {}[{}]", self.name, self.dtype, dims.join(", "))
    }
}

/// A tensor with owned data. Arrays are in standard (C) layout when produced by this crate.
#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    /// 32-bit float data.
    F32(ArrayD<f32>),
    /// 16-bit float data.
    F16(ArrayD<f16>),
    /// bfloat16 data.
    Bf16(ArrayD<bf16>),
    /// 64-bit integer data.
    I64(ArrayD<i64>),
    /// 32-bit integer data.
    I32(ArrayD<i32>),
    /// Boolean data.
    Bool(ArrayD<bool>),
    /// Byte data.
    U8(ArrayD<u8>),
}

macro_rules! for_each_variant {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            Tensor::F32($a) => $body,
            Tensor::F16($a) => $body,
            Tensor::Bf16($a) => $body,
            Tensor::I64($a) => $body,
            Tensor::I32($a) => $body,
            Tensor::Bool($a) => $body,
            Tensor::U8($a) => $body,
        }
    };
}

impl Tensor {
    /// Element type.
    pub fn dtype(&self) -> DType {
        match self {
            Tensor::F32(_) => DType::F32,
            Tensor::F16(_) => DType::F16,
            Tensor::Bf16(_) => DType::Bf16,
            Tensor::I64(_) => DType::I64,
            Tensor::I32(_) => DType::I32,
            Tensor::Bool(_) => DType::Bool,
            Tensor::U8(_) => DType::U8,
        }
    }

    /// Concrete shape.
    pub fn shape(&self) -> &[usize] {
        for_each_variant!(self, a => a.shape())
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        for_each_variant!(self, a => a.len())
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of the data in bytes.
    pub fn byte_len(&self) -> usize {
        self.len() * self.element_size()
    }

    fn element_size(&self) -> usize {
        match self {
            Tensor::F32(_) | Tensor::I32(_) => 4,
            Tensor::F16(_) | Tensor::Bf16(_) => 2,
            Tensor::I64(_) => 8,
            Tensor::Bool(_) | Tensor::U8(_) => 1,
        }
    }

    /// Builds a tensor from a shape and a flat vector in C order.
    pub fn from_shape_vec<T: TensorElement>(shape: &[usize], data: Vec<T>) -> Result<Tensor, OnnxError> {
        let array = ArrayD::from_shape_vec(IxDyn(shape), data)
            .map_err(|e| OnnxError::BadInput(format!("shape {shape:?} does not fit the data: {e}")))?;
        Ok(T::wrap(array))
    }

    /// A scalar-shaped or 1-element tensor filled with zeros of `dtype`.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Result<Tensor, OnnxError> {
        let shape = IxDyn(shape);
        Ok(match dtype {
            DType::F32 => Tensor::F32(ArrayD::zeros(shape)),
            DType::F16 => Tensor::F16(ArrayD::from_elem(shape, f16::ZERO)),
            DType::Bf16 => Tensor::Bf16(ArrayD::from_elem(shape, bf16::ZERO)),
            DType::I64 => Tensor::I64(ArrayD::zeros(shape)),
            DType::I32 => Tensor::I32(ArrayD::zeros(shape)),
            DType::Bool => Tensor::Bool(ArrayD::from_elem(shape, false)),
            DType::U8 => Tensor::U8(ArrayD::zeros(shape)),
            other => return Err(OnnxError::UnsupportedDType(other)),
        })
    }

    /// Deterministic pseudo-random data of `dtype` and `shape`, the same on every machine for a
    /// given `seed`: floats uniform in [-1, 1), integers in [0, 8), booleans alternate.
    ///
    /// This is what `edgeinfer check` feeds to inputs the user did not give.
    pub fn deterministic(dtype: DType, shape: &[usize], seed: u64) -> Result<Tensor, OnnxError> {
        let n: usize = shape.iter().product();
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            // xorshift64*: tiny, deterministic, good enough for test data.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let unit = |v: u64| ((v >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
        match dtype {
            DType::F32 => Self::from_shape_vec(shape, (0..n).map(|_| unit(next())).collect::<Vec<f32>>()),
            DType::F16 => Self::from_shape_vec(shape, (0..n).map(|_| f16::from_f32(unit(next()))).collect::<Vec<_>>()),
            DType::Bf16 => {
                Self::from_shape_vec(shape, (0..n).map(|_| bf16::from_f32(unit(next()))).collect::<Vec<_>>())
            }
            DType::I64 => Self::from_shape_vec(shape, (0..n).map(|_| (next() % 8) as i64).collect::<Vec<_>>()),
            DType::I32 => Self::from_shape_vec(shape, (0..n).map(|_| (next() % 8) as i32).collect::<Vec<_>>()),
            DType::Bool => Self::from_shape_vec(shape, (0..n).map(|i| i % 2 == 0).collect::<Vec<_>>()),
            DType::U8 => Self::from_shape_vec(shape, (0..n).map(|_| (next() % 256) as u8).collect::<Vec<_>>()),
            other => Err(OnnxError::UnsupportedDType(other)),
        }
    }

    /// Converts to another element type (float↔float, int↔int, int→float, bool→int). Used to
    /// accept e.g. a float32 `.npy` for a float16 input. Lossy float→int casts are refused.
    pub fn cast(&self, to: DType) -> Result<Tensor, OnnxError> {
        if self.dtype() == to {
            return Ok(self.clone());
        }
        let refuse = || OnnxError::BadInput(format!("cannot convert {} data to {to}", self.dtype()));
        Ok(match (self, to) {
            (Tensor::F32(a), DType::F16) => Tensor::F16(a.mapv(f16::from_f32)),
            (Tensor::F16(a), DType::F32) => Tensor::F32(a.mapv(f16::to_f32)),
            (Tensor::F32(a), DType::Bf16) => Tensor::Bf16(a.mapv(bf16::from_f32)),
            (Tensor::Bf16(a), DType::F32) => Tensor::F32(a.mapv(bf16::to_f32)),
            (Tensor::F16(a), DType::Bf16) => Tensor::Bf16(a.mapv(|v| bf16::from_f32(v.to_f32()))),
            (Tensor::Bf16(a), DType::F16) => Tensor::F16(a.mapv(|v| f16::from_f32(v.to_f32()))),
            (Tensor::I64(a), DType::I32) => {
                let converted: Result<Vec<i32>, _> = a.iter().map(|&v| i32::try_from(v)).collect();
                let data = converted.map_err(|_| OnnxError::BadInput("int64 value does not fit int32".into()))?;
                Tensor::from_shape_vec(a.shape(), data)?
            }
            (Tensor::I32(a), DType::I64) => Tensor::I64(a.mapv(i64::from)),
            (Tensor::U8(a), DType::I64) => Tensor::I64(a.mapv(i64::from)),
            (Tensor::U8(a), DType::I32) => Tensor::I32(a.mapv(i32::from)),
            (Tensor::U8(a), DType::F32) => Tensor::F32(a.mapv(f32::from)),
            (Tensor::I64(a), DType::F32) => Tensor::F32(a.mapv(|v| v as f32)),
            (Tensor::I32(a), DType::F32) => Tensor::F32(a.mapv(|v| v as f32)),
            (Tensor::Bool(a), DType::I64) => Tensor::I64(a.mapv(i64::from)),
            (Tensor::Bool(a), DType::I32) => Tensor::I32(a.mapv(i32::from)),
            (Tensor::Bool(a), DType::U8) => Tensor::U8(a.mapv(u8::from)),
            _ => return Err(refuse()),
        })
    }

    /// All values as `f32` (for comparisons and reports).
    pub fn to_f32_array(&self) -> ArrayD<f32> {
        match self {
            Tensor::F32(a) => a.clone(),
            Tensor::F16(a) => a.mapv(f16::to_f32),
            Tensor::Bf16(a) => a.mapv(bf16::to_f32),
            Tensor::I64(a) => a.mapv(|v| v as f32),
            Tensor::I32(a) => a.mapv(|v| v as f32),
            Tensor::Bool(a) => a.mapv(|v| if v { 1.0 } else { 0.0 }),
            Tensor::U8(a) => a.mapv(f32::from),
        }
    }

    /// Borrow as `f32` data, if that is the element type.
    pub fn as_f32(&self) -> Option<&ArrayD<f32>> {
        match self {
            Tensor::F32(a) => Some(a),
            _ => None,
        }
    }

    /// Borrow as `i64` data, if that is the element type.
    pub fn as_i64(&self) -> Option<&ArrayD<i64>> {
        match self {
            Tensor::I64(a) => Some(a),
            _ => None,
        }
    }

    /// Take as `f32` data: float32 as it is, float16 and bfloat16 widened (exactly). Integer and
    /// boolean data are refused, since a graph output of those types is not a float result.
    pub fn into_f32(self) -> Result<ArrayD<f32>, OnnxError> {
        match self {
            Tensor::F32(a) => Ok(a),
            Tensor::F16(a) => Ok(a.mapv(f16::to_f32)),
            Tensor::Bf16(a) => Ok(a.mapv(bf16::to_f32)),
            other => Err(OnnxError::BadInput(format!("expected float32 data, got {}", other.dtype()))),
        }
    }

    /// Compares two tensors element by element (after conversion to f32).
    pub fn compare(&self, other: &Tensor) -> Result<Diff, OnnxError> {
        if self.shape() != other.shape() {
            return Err(OnnxError::BadInput(format!("shapes differ: {:?} vs {:?}", self.shape(), other.shape())));
        }
        let a = self.to_f32_array();
        let b = other.to_f32_array();
        let mut diff = Diff::default();
        for (x, y) in a.iter().zip(b.iter()) {
            let abs = (x - y).abs();
            if abs.is_nan() {
                if !(x.is_nan() && y.is_nan()) {
                    diff.max_abs = f32::INFINITY;
                    diff.max_rel = f32::INFINITY;
                }
                continue;
            }
            diff.max_abs = diff.max_abs.max(abs);
            diff.max_ref = diff.max_ref.max(y.abs());
            let rel = abs / y.abs().max(f32::EPSILON);
            diff.max_rel = diff.max_rel.max(rel);
        }
        Ok(diff)
    }

    /// Reads a `.npy` file (float32/64, int32/64, uint8, bool). float64 is read as float32.
    pub fn read_npy(path: &Path) -> Result<Tensor, OnnxError> {
        use ndarray_npy::{ReadNpyError, read_npy};
        let io = |e: ReadNpyError| OnnxError::Npy { path: path.to_path_buf(), reason: e.to_string() };
        // The header names the type; try each supported one in turn (the read is cheap for the
        // wrong type: it fails on the header).
        let descr = npy_descr(path)?;
        Ok(match descr.as_str() {
            "<f4" => Tensor::F32(read_npy(path).map_err(io)?),
            "<f8" => Tensor::F32(read_npy::<_, ArrayD<f64>>(path).map_err(io)?.mapv(|v| v as f32)),
            "<i8" => Tensor::I64(read_npy(path).map_err(io)?),
            "<i4" => Tensor::I32(read_npy(path).map_err(io)?),
            "|u1" => Tensor::U8(read_npy(path).map_err(io)?),
            "|b1" => Tensor::Bool(read_npy(path).map_err(io)?),
            other => {
                return Err(OnnxError::Npy {
                    path: path.to_path_buf(),
                    reason: format!(
                        "unsupported element type '{other}' (use float32, float64, int64, int32, uint8 or bool)"
                    ),
                });
            }
        })
    }

    /// Writes a `.npy` file. float16 and bfloat16 data are written as float32.
    pub fn write_npy(&self, path: &Path) -> Result<(), OnnxError> {
        use ndarray_npy::write_npy;
        let io = |e: ndarray_npy::WriteNpyError| OnnxError::Npy { path: path.to_path_buf(), reason: e.to_string() };
        match self {
            Tensor::F32(a) => write_npy(path, a).map_err(io),
            Tensor::F16(a) => write_npy(path, &a.mapv(f16::to_f32)).map_err(io),
            Tensor::Bf16(a) => write_npy(path, &a.mapv(bf16::to_f32)).map_err(io),
            Tensor::I64(a) => write_npy(path, a).map_err(io),
            Tensor::I32(a) => write_npy(path, a).map_err(io),
            Tensor::Bool(a) => write_npy(path, a).map_err(io),
            Tensor::U8(a) => write_npy(path, a).map_err(io),
        }
    }
}

/// Reads the `descr` field of a `.npy` header.
fn npy_descr(path: &Path) -> Result<String, OnnxError> {
    use std::io::Read;
    let err = |reason: String| OnnxError::Npy { path: path.to_path_buf(), reason };
    let mut file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut head = vec![0u8; 512];
    let n = file.read(&mut head).map_err(|e| err(e.to_string()))?;
    head.truncate(n);
    if !head.starts_with(b"\x93NUMPY") {
        return Err(err("not a .npy file (bad magic)".into()));
    }
    let text = String::from_utf8_lossy(&head);
    let start = text.find("'descr':").ok_or_else(|| err("no 'descr' in header".into()))?;
    let rest = &text[start + 8..];
    let open = rest.find('\'').ok_or_else(|| err("malformed 'descr'".into()))?;
    let rest = &rest[open + 1..];
    let close = rest.find('\'').ok_or_else(|| err("malformed 'descr'".into()))?;
    Ok(rest[..close].to_string())
}

/// Result of [`Tensor::compare`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Diff {
    /// Largest absolute difference.
    pub max_abs: f32,
    /// Largest relative difference (against the second tensor).
    pub max_rel: f32,
    /// Largest absolute value in the reference (second) tensor.
    pub max_ref: f32,
}

impl Diff {
    /// Whether every element satisfies `|a-b| <= atol + rtol*|b|`-style closeness, judged on the
    /// worst case: `max_abs <= atol + rtol * max_ref`.
    pub fn within(&self, atol: f32, rtol: f32) -> bool {
        self.max_abs <= atol + rtol * self.max_ref
    }
}

/// Element types a [`Tensor`] can carry.
pub trait TensorElement: Clone + 'static {
    /// The matching [`DType`].
    const DTYPE: DType;
    /// Wraps an array into the matching [`Tensor`] variant.
    fn wrap(array: ArrayD<Self>) -> Tensor;
}

macro_rules! impl_element {
    ($t:ty, $v:ident) => {
        impl TensorElement for $t {
            const DTYPE: DType = DType::$v;
            fn wrap(array: ArrayD<Self>) -> Tensor {
                Tensor::$v(array)
            }
        }
        impl From<ArrayD<$t>> for Tensor {
            fn from(array: ArrayD<$t>) -> Tensor {
                Tensor::$v(array)
            }
        }
    };
}
impl_element!(f32, F32);
impl_element!(f16, F16);
impl_element!(bf16, Bf16);
impl_element!(i64, I64);
impl_element!(i32, I32);
impl_element!(bool, Bool);
impl_element!(u8, U8);

/// Named tensors returned by [`crate::Session::run`], in the model's output order.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    entries: Vec<(String, Tensor)>,
}

impl Outputs {
    /// Builds from name/tensor pairs.
    pub fn new(entries: Vec<(String, Tensor)>) -> Self {
        Outputs { entries }
    }

    /// The tensor named `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Removes and returns the tensor named `name`.
    pub fn take(&mut self, name: &str) -> Result<Tensor, OnnxError> {
        let pos = self
            .entries
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| OnnxError::MissingOutput(name.to_string()))?;
        Ok(self.entries.remove(pos).1)
    }

    /// Iterates over name/tensor pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Number of outputs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no outputs.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Consumes into name/tensor pairs.
    pub fn into_vec(self) -> Vec<(String, Tensor)> {
        self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_data_is_reproducible_and_bounded() {
        let a = Tensor::deterministic(DType::F32, &[2, 3], 7).unwrap();
        let b = Tensor::deterministic(DType::F32, &[2, 3], 7).unwrap();
        assert_eq!(a, b);
        let c = Tensor::deterministic(DType::F32, &[2, 3], 8).unwrap();
        assert_ne!(a, c);
        assert!(a.as_f32().unwrap().iter().all(|v| (-1.0..1.0).contains(v)));
    }

    #[test]
    fn npy_round_trip_for_every_supported_type() {
        let dir = tempfile::tempdir().unwrap();
        for dtype in [DType::F32, DType::I64, DType::I32, DType::Bool, DType::U8] {
            let t = Tensor::deterministic(dtype, &[2, 2, 3], 1).unwrap();
            let p = dir.path().join(format!("{dtype}.npy"));
            t.write_npy(&p).unwrap();
            assert_eq!(Tensor::read_npy(&p).unwrap(), t, "{dtype}");
        }
    }

    #[test]
    fn non_npy_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        std::fs::write(&p, b"hello").unwrap();
        let e = Tensor::read_npy(&p).unwrap_err().to_string();
        assert!(e.contains("not a .npy file"), "{e}");
    }

    #[test]
    fn compare_reports_abs_and_rel() {
        let a = Tensor::from_shape_vec(&[2], vec![1.0f32, 2.0]).unwrap();
        let b = Tensor::from_shape_vec(&[2], vec![1.0f32, 2.5]).unwrap();
        let d = a.compare(&b).unwrap();
        assert_eq!(d.max_abs, 0.5);
        assert!((d.max_rel - 0.2).abs() < 1e-6);
        assert!(!d.within(1e-4, 1e-4));
        assert!(a.compare(&a).unwrap().within(0.0, 0.0));
    }

    #[test]
    fn casts() {
        let a = Tensor::from_shape_vec(&[2], vec![1.5f32, -2.0]).unwrap();
        assert_eq!(a.cast(DType::F16).unwrap().dtype(), DType::F16);
        assert!(a.cast(DType::I64).is_err());
        let i = Tensor::from_shape_vec(&[1], vec![i64::MAX]).unwrap();
        assert!(i.cast(DType::I32).is_err());
    }
}
