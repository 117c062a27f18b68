//! Where a model folder keeps its graphs, for detection and loading alike: at the top (our
//! exports, samexporter, ORT-GenAI), or under `onnx/` as onnx-community, Optimum and
//! transformers.js publish them, one file per precision variant: `model.onnx`,
//! `model_fp16.onnx`, `model_quantized.onnx`, `model_int8.onnx`, `model_uint8.onnx`,
//! `model_q4.onnx`, `model_q4f16.onnx`, `model_bnb4.onnx` (each possibly with `.onnx_data`); plus
//! `model_qdq.onnx`, the statically quantised (QDQ) graph `models/export/quantize.py` writes.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// A precision variant of a graph, as onnx-community names its files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// Full precision: `model.onnx` (the default).
    #[default]
    Fp32,
    /// `model_fp16.onnx`.
    Fp16,
    /// `model_int8.onnx`.
    Int8,
    /// `model_uint8.onnx`.
    Uint8,
    /// `model_quantized.onnx` (8-bit, dynamic).
    Quantized,
    /// `model_qdq.onnx` (8-bit, static: QuantizeLinear/DequantizeLinear pairs calibrated on
    /// sample inputs; what `models/export/quantize.py` writes for the vision models).
    Qdq,
    /// `model_q4.onnx` (4-bit weights, MatMulNBits).
    Q4,
    /// `model_q4f16.onnx` (4-bit weights, fp16 activations).
    Q4f16,
    /// `model_bnb4.onnx` (4-bit bitsandbytes-style).
    Bnb4,
}

impl Variant {
    /// Every variant, full precision first.
    pub const ALL: [Variant; 9] = [
        Variant::Fp32,
        Variant::Fp16,
        Variant::Int8,
        Variant::Uint8,
        Variant::Quantized,
        Variant::Qdq,
        Variant::Q4,
        Variant::Q4f16,
        Variant::Bnb4,
    ];

    /// Lowercase name (the config value).
    pub fn name(self) -> &'static str {
        match self {
            Variant::Fp32 => "fp32",
            Variant::Fp16 => "fp16",
            Variant::Int8 => "int8",
            Variant::Uint8 => "uint8",
            Variant::Quantized => "quantized",
            Variant::Qdq => "qdq",
            Variant::Q4 => "q4",
            Variant::Q4f16 => "q4f16",
            Variant::Bnb4 => "bnb4",
        }
    }

    /// The file name of graph `stem` in this variant: `<stem>.onnx` for fp32, else
    /// `<stem>_<variant>.onnx`.
    pub fn file_name(self, stem: &str) -> String {
        match self {
            Variant::Fp32 => format!("{stem}.onnx"),
            other => format!("{stem}_{}.onnx", other.name()),
        }
    }

    /// The inverse of [`Variant::file_name`]: the stem and variant of a graph file
    /// (`onnx/model_q4.onnx` → (`onnx/model`, q4)); `None` for a file that is not `.onnx`.
    pub fn split_file_name(name: &str) -> Option<(&str, Variant)> {
        let base = name.strip_suffix(".onnx")?;
        for v in Variant::ALL.into_iter().filter(|v| *v != Variant::Fp32) {
            if let Some(stem) = base.strip_suffix(v.name()).and_then(|b| b.strip_suffix('_')) {
                return Some((stem, v));
            }
        }
        Some((base, Variant::Fp32))
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Variant {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.to_ascii_lowercase();
        Variant::ALL.into_iter().find(|v| v.name() == s).ok_or_else(|| {
            ModelError::Config(format!("unknown variant '{s}' ({})", Variant::ALL.map(Variant::name).join(", ")))
        })
    }
}

/// The folders a graph may sit in: the model folder, then its `onnx/`.
fn places(dir: &Path) -> [PathBuf; 2] {
    [dir.to_path_buf(), dir.join("onnx")]
}

/// The candidates for graph `stems` in `variant`, in the order they are tried.
fn candidates(dir: &Path, stems: &[&str], variant: Variant) -> Vec<PathBuf> {
    places(dir).iter().flat_map(|place| stems.iter().map(move |stem| place.join(variant.file_name(stem)))).collect()
}

/// The variants of graph `stems` present in `dir` (top or `onnx/`).
pub fn variants_present(dir: &Path, stems: &[&str]) -> Vec<Variant> {
    Variant::ALL.into_iter().filter(|v| candidates(dir, stems, *v).iter().any(|p| p.is_file())).collect()
}

/// The file of graph `stems` (the first stem found wins) in `variant` in `dir` or `dir/onnx`.
/// When there is none, the error lists what was looked for and the variants the folder has.
pub fn find_graph(dir: &Path, stems: &[&str], variant: Variant) -> Result<PathBuf> {
    let tried = candidates(dir, stems, variant);
    if let Some(found) = tried.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let rel = |p: &Path| p.strip_prefix(dir).unwrap_or(p).display().to_string();
    let present = variants_present(dir, stems);
    let hint = if present.is_empty() {
        String::new()
    } else {
        format!("; the folder has the variants {} (set variant =)", names(&present))
    };
    Err(ModelError::Config(format!(
        "no {variant} graph in {}: looked for {}{hint}",
        dir.display(),
        tried.iter().map(|p| rel(p)).collect::<Vec<_>>().join(", ")
    )))
}

fn names(variants: &[Variant]) -> String {
    variants.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphs_are_found_at_the_top_or_under_onnx_by_variant() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("onnx")).unwrap();
        for f in ["onnx/model.onnx", "onnx/model_quantized.onnx", "onnx/model_q4f16.onnx"] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        let found = find_graph(dir.path(), &["model"], Variant::Quantized).unwrap();
        assert!(found.ends_with("onnx/model_quantized.onnx"));
        assert!(find_graph(dir.path(), &["model"], Variant::Fp32).unwrap().ends_with("onnx/model.onnx"));
        let e = find_graph(dir.path(), &["model"], Variant::Int8).unwrap_err().to_string();
        assert!(e.contains("model_int8.onnx, onnx/model_int8.onnx") && e.contains("fp32, quantized, q4f16"), "{e}");
        // The top wins over onnx/.
        std::fs::write(dir.path().join("model.onnx"), b"").unwrap();
        assert_eq!(find_graph(dir.path(), &["model"], Variant::Fp32).unwrap(), dir.path().join("model.onnx"));
        assert_eq!("Q4".parse::<Variant>().unwrap(), Variant::Q4);
        for v in Variant::ALL {
            assert_eq!(Variant::split_file_name(&v.file_name("onnx/model")), Some(("onnx/model", v)));
        }
        assert_eq!(Variant::split_file_name("model.onnx_data"), None);
        assert!("int3".parse::<Variant>().is_err());
    }
}
