//! Which files of a Hub repository a model folder needs for one precision variant: the graphs of
//! that variant (at the top or under `onnx/`) with their external data, and the small files
//! beside them (configs, tokenizer, preprocessor). Weights in other formats (safetensors,
//! PyTorch, GGUF, ...) and the other variants' graphs are left on the Hub.

use edgeinfer_models::layout::Variant;
use serde::Deserialize;

/// One file of a repository revision, as the Hub's API lists it (`?blobs=true`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct RemoteFile {
    /// Path in the repository.
    #[serde(rename = "rfilename")]
    pub path: String,
    /// Size in bytes.
    #[serde(default)]
    pub size: Option<u64>,
    /// Git blob id (sha1) of the file, or of its LFS pointer.
    #[serde(rename = "blobId", default)]
    pub blob_id: Option<String>,
    /// LFS metadata: the content's sha256 and size.
    #[serde(default)]
    pub lfs: Option<Lfs>,
}

/// The LFS part of a listing entry.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Lfs {
    /// sha256 of the content (hex).
    pub sha256: String,
    /// Size of the content.
    pub size: u64,
}

impl RemoteFile {
    /// The cache blob name: the sha256 for LFS files, else the git blob id.
    pub fn blob_name(&self) -> Option<&str> {
        self.lfs.as_ref().map(|l| l.sha256.as_str()).or(self.blob_id.as_deref())
    }

    /// The size of the content.
    pub fn content_size(&self) -> Option<u64> {
        self.lfs.as_ref().map(|l| l.size).or(self.size)
    }
}

/// Files never needed by a model folder we load.
const SKIPPED_SUFFIXES: [&str; 13] = [
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".gguf",
    ".h5",
    ".msgpack",
    ".tflite",
    ".mlmodel",
    ".ot",
    ".npz",
    ".tar.gz",
];

/// Whether `path` is external data of graph `graph` (`X.onnx_data`, `X.onnx.data`,
/// `X.onnx_data_1`, `X.data`).
fn is_data_of(path: &str, graph: &str) -> bool {
    let stem = graph.strip_suffix(".onnx").unwrap_or(graph);
    path == format!("{stem}.data")
        || path.strip_prefix(graph).is_some_and(|rest| {
            rest == "_data" || rest == ".data" || rest.strip_prefix("_data_").is_some_and(|n| n.parse::<u32>().is_ok())
        })
}

/// Where graphs of a model folder live: the top, or `onnx/`.
fn in_model_place(path: &str) -> bool {
    !path.contains('/') || path.strip_prefix("onnx/").is_some_and(|rest| !rest.contains('/'))
}

/// The files to download for `variant`. An ORT-GenAI folder (`genai_config.json`) with no graph
/// of that variant's name has one graph whatever its precision, and gets it. A repository without a graph of that
/// variant is an error naming the variants it has.
pub fn select(files: &[RemoteFile], variant: Variant) -> Result<Vec<RemoteFile>, String> {
    let graphs: Vec<(&RemoteFile, Variant)> = files
        .iter()
        .filter(|f| in_model_place(&f.path))
        .filter_map(|f| Variant::split_file_name(&f.path).map(|(_, v)| (f, v)))
        .collect();
    let genai = files.iter().any(|f| f.path == "genai_config.json");
    let mut chosen: Vec<&RemoteFile> = graphs.iter().filter(|(_, v)| *v == variant).map(|(f, _)| *f).collect();
    if chosen.is_empty() && genai {
        chosen = graphs.iter().map(|(f, _)| *f).collect();
    }
    if chosen.is_empty() {
        let mut have: Vec<&str> = graphs.iter().map(|(_, v)| v.name()).collect();
        have.sort();
        have.dedup();
        return Err(if have.is_empty() {
            "the repository has no .onnx graph at its top or under onnx/ (is it an ONNX export?)".to_string()
        } else {
            format!("the repository has no {variant} graph; its graphs come in {} (use --variant)", have.join(", "))
        });
    }
    let mut picked: Vec<RemoteFile> = Vec::new();
    for f in files {
        let graph = f.path.ends_with(".onnx");
        let data_of_chosen = chosen.iter().any(|g| is_data_of(&f.path, &g.path));
        let data_of_other = graphs.iter().any(|(g, _)| is_data_of(&f.path, &g.path));
        let small_file = !f.path.contains('/')
            && !graph
            && !data_of_other
            && !SKIPPED_SUFFIXES.iter().any(|s| f.path.ends_with(s))
            && f.path != ".gitattributes";
        if chosen.iter().any(|g| g.path == f.path) || data_of_chosen || small_file {
            picked.push(f.clone());
        }
    }
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(paths: &[&str]) -> Vec<RemoteFile> {
        paths.iter().map(|p| RemoteFile { path: p.to_string(), size: Some(1), blob_id: None, lfs: None }).collect()
    }

    fn names(picked: &[RemoteFile]) -> Vec<&str> {
        picked.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn only_the_chosen_variant_and_the_small_files_are_fetched() {
        let repo = files(&[
            ".gitattributes",
            "README.md",
            "config.json",
            "tokenizer.json",
            "model.safetensors",
            "onnx/model.onnx",
            "onnx/model.onnx_data",
            "onnx/model_q4.onnx",
            "onnx/model_q4f16.onnx",
            "onnx/model_fp16.onnx",
            "onnx/model_fp16.onnx_data",
            "onnx/model_fp16.onnx_data_1",
            "openvino/openvino_model.xml",
        ]);
        assert_eq!(
            names(&select(&repo, Variant::Q4).unwrap()),
            ["README.md", "config.json", "tokenizer.json", "onnx/model_q4.onnx"]
        );
        assert_eq!(
            names(&select(&repo, Variant::Fp16).unwrap()),
            [
                "README.md",
                "config.json",
                "tokenizer.json",
                "onnx/model_fp16.onnx",
                "onnx/model_fp16.onnx_data",
                "onnx/model_fp16.onnx_data_1"
            ]
        );
        assert_eq!(
            names(&select(&repo, Variant::Fp32).unwrap()),
            ["README.md", "config.json", "tokenizer.json", "onnx/model.onnx", "onnx/model.onnx_data"]
        );
        let e = select(&repo, Variant::Int8).unwrap_err();
        assert!(e.contains("no int8 graph") && e.contains("fp16, fp32, q4, q4f16"), "{e}");
        // SAM in the transformers.js layout: both graphs of the variant.
        let sam = files(&[
            "config.json",
            "onnx/vision_encoder_quantized.onnx",
            "onnx/prompt_encoder_mask_decoder_quantized.onnx",
            "onnx/vision_encoder.onnx",
        ]);
        assert_eq!(select(&sam, Variant::Quantized).unwrap().len(), 3);
        // An ORT-GenAI folder has one graph, named model.onnx whatever its precision.
        let genai = files(&["genai_config.json", "model.onnx", "model.onnx.data", "tokenizer.json"]);
        assert_eq!(select(&genai, Variant::Q4).unwrap().len(), 4);
        // One with variants beside its graph (export_llama.py --attention gqa, quantize.py):
        // the one asked for.
        let genai = files(&["genai_config.json", "model.onnx", "model_q4.onnx", "model_q4.onnx_data"]);
        assert_eq!(
            names(&select(&genai, Variant::Q4).unwrap()),
            ["genai_config.json", "model_q4.onnx", "model_q4.onnx_data"]
        );
    }
}
