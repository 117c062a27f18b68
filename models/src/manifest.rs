//! What kind of model a directory holds, from the files in it: `manifest.json` with a `family`
//! field wins; otherwise SAM 2 (`image_embed`-style encoder names in `manifest.json` or files
//! `*encoder*.onnx` + `*decoder*.onnx` with `sam2` in the folder name), SAM (encoder + decoder
//! files, or transformers.js' `vision_encoder` + `prompt_encoder_mask_decoder`), LLaMA (`tokenizer.json` + a decoder graph), DINOv2 (`preprocessor_config.json` or a
//! `config.json` with `model_type: dinov2`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::layout::Variant;

/// A model family edgeinfer serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Segment Anything (and its light variants in the same layout).
    Sam,
    /// Segment Anything 2.
    Sam2,
    /// DINOv2 image embeddings.
    Dinov2,
    /// LLaMA-family text generation.
    Llama,
}

impl Family {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Family::Sam => "sam",
            Family::Sam2 => "sam2",
            Family::Dinov2 => "dinov2",
            Family::Llama => "llama",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Family {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "sam" | "mobilesam" | "edgesam" | "efficientsam" => Ok(Family::Sam),
            "sam2" => Ok(Family::Sam2),
            "dinov2" | "dino" => Ok(Family::Dinov2),
            "llama" | "llm" => Ok(Family::Llama),
            _ => Err(ModelError::Config(format!("unknown model family '{s}' (sam, sam2, dinov2, llama)"))),
        }
    }
}

#[derive(Deserialize)]
struct FamilyField {
    family: Option<String>,
}

/// The ONNX files a family's `load` reads from `dir`, each followed by the external data files
/// stored beside it under the usual names (`X.onnx_data`, `X.onnx.data`, `X.data`). A folder may
/// hold more (other layouts, quantised variants): these are the ones that take memory.
pub fn model_files(family: Family, dir: &Path, variant: Variant) -> Result<Vec<PathBuf>> {
    let onnx: Vec<PathBuf> = match family {
        Family::Sam | Family::Sam2 => crate::sam::model_files(dir, variant)?.into(),
        Family::Dinov2 => vec![crate::dinov2::find_model(dir, variant)?],
        Family::Llama => vec![crate::llama::ModelDir::open_variant(dir, variant)?.onnx],
    };
    let mut files = Vec::new();
    for model in onnx {
        let name = model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let stem = model.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut data = vec![format!("{name}_data"), format!("{name}.data"), format!("{stem}.data")];
        data.dedup();
        let beside: Vec<PathBuf> =
            data.iter().filter_map(|d| model.parent().map(|p| p.join(d))).filter(|p| p.is_file()).collect();
        files.push(model);
        files.extend(beside);
    }
    Ok(files)
}

fn folder_name(dir: &Path) -> String {
    dir.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default()
}

/// `config.json`'s `model_type`, or "" when there is none.
fn model_type(dir: &Path) -> String {
    #[derive(Deserialize)]
    struct ModelType {
        model_type: Option<String>,
    }
    std::fs::read(dir.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_slice::<ModelType>(&text).ok())
        .and_then(|c| c.model_type)
        .unwrap_or_default()
}

/// Detects the family of the model in `dir`.
pub fn detect(dir: &Path) -> Result<Family> {
    if !dir.is_dir() {
        return Err(ModelError::Config(format!("{} is not a directory", dir.display())));
    }
    let has = |f: &str| dir.join(f).is_file();
    if has("manifest.json") {
        let text = std::fs::read(dir.join("manifest.json"))
            .map_err(|source| ModelError::Io { path: dir.join("manifest.json"), source })?;
        if let Ok(FamilyField { family: Some(f) }) = serde_json::from_slice::<FamilyField>(&text) {
            return f.parse();
        }
    }
    // Any variant, at the top or under onnx/ (onnx-community), is a graph.
    let llm_graph = !crate::layout::variants_present(dir, &crate::llama::config::GRAPH_STEMS).is_empty();
    if has("tokenizer.json") && (llm_graph || has("genai_config.json")) {
        return Ok(Family::Llama);
    }
    if has("encoder.onnx") && has("decoder.onnx") {
        return Ok(if folder_name(dir).contains("sam2") { Family::Sam2 } else { Family::Sam });
    }
    if crate::sam::is_transformers_layout(dir) {
        // transformers.js / Optimum: vision_encoder + prompt_encoder_mask_decoder; SAM 2 when
        // config.json's model_type says so (onnx-community/sam2*-ONNX), or the folder's name.
        return Ok(if model_type(dir).starts_with("sam2") || folder_name(dir).contains("sam2") {
            Family::Sam2
        } else {
            Family::Sam
        });
    }
    if has("preprocessor_config.json") {
        return Ok(Family::Dinov2);
    }
    if has("config.json") {
        let text = std::fs::read_to_string(dir.join("config.json")).unwrap_or_default();
        if text.contains("\"dinov2\"") {
            return Ok(Family::Dinov2);
        }
    }
    Err(ModelError::Config(format!(
        "cannot tell which model family {} holds: looked for manifest.json with \"family\"; tokenizer.json with \
         model*.onnx, decoder_model_merged*.onnx (at the top or under onnx/) or genai_config.json (llama); \
         encoder.onnx + decoder.onnx (sam, sam2); vision_encoder*.onnx (at the top or under onnx/, sam); \
         preprocessor_config.json or a dinov2 config.json (dinov2). \
         Add a manifest.json with \"family\" (sam, sam2, dinov2, llama) or set family in the config",
        dir.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_fixtures_are_recognised() {
        let f = crate::fixtures::fixtures_dir();
        assert_eq!(detect(&f.join("sam")).unwrap(), Family::Sam);
        assert_eq!(detect(&f.join("sam2")).unwrap(), Family::Sam2);
        assert_eq!(detect(&f.join("dinov2")).unwrap(), Family::Dinov2);
        assert_eq!(detect(&f.join("llama")).unwrap(), Family::Llama);
        assert_eq!(detect(&f.join("sam-hf")).unwrap(), Family::Sam);
        assert_eq!(detect(&f.join("sam2-hf")).unwrap(), Family::Sam2);
        assert!(detect(&f.join("photos")).is_err());
        assert!(detect(&f.join("nope")).is_err());
        assert_eq!("MobileSAM".parse::<Family>().unwrap(), Family::Sam);
    }
}
