//! Shared helpers for the integration tests: the fixture manifests (`cases.json`) written by
//! `models/export/`, and obtaining each backend the way users do.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use edgeinfer_onnx::{Backend, BackendKind, Tensor};
use serde::Deserialize;

/// Root of the bundled fixtures.
pub fn fixtures() -> PathBuf {
    edgeinfer_models::fixtures::fixtures_dir()
}

/// A file of the hand-built probe graphs (`models/fixtures/probe`, `make_probe_models.py`).
pub fn probe(name: &str) -> PathBuf {
    fixtures().join("probe").join(name)
}

/// One parity case: a model, its inputs and the PyTorch reference outputs.
#[derive(Debug, Deserialize)]
pub struct Case {
    /// Case name.
    pub name: String,
    /// Model file, relative to the fixture folder.
    pub model: String,
    /// Input name → `.npy` file.
    pub inputs: std::collections::BTreeMap<String, String>,
    /// Output name → golden `.npy` file.
    pub outputs: std::collections::BTreeMap<String, String>,
    /// Absolute tolerance.
    pub atol: f32,
    /// Relative tolerance (against the largest reference magnitude).
    pub rtol: f32,
}

#[derive(Debug, Deserialize)]
struct CaseFile {
    cases: Vec<Case>,
}

/// The cases of one fixture family (`sam`, `dinov2`, `llama`).
pub fn cases(family: &str) -> (PathBuf, Vec<Case>) {
    case_file(family, "cases.json")
}

/// The parity cases of a fixture's precision variants (`variants.json`, written by
/// `models/export/quantize.py`): each variant file on the same inputs, against ONNX Runtime's
/// output of that file.
pub fn variant_cases(family: &str) -> (PathBuf, Vec<Case>) {
    case_file(family, "variants.json")
}

fn case_file(family: &str, name: &str) -> (PathBuf, Vec<Case>) {
    let dir = fixtures().join(family);
    let text =
        std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("cannot read {}/{name}: {e}", dir.display()));
    let file: CaseFile = serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad {name}: {e}"));
    (dir, file.cases)
}

/// Reads the inputs of a case.
pub fn case_inputs(dir: &Path, case: &Case) -> Vec<(String, Tensor)> {
    case.inputs
        .iter()
        .map(|(name, file)| {
            let t = Tensor::read_npy(&dir.join(file)).unwrap_or_else(|e| panic!("{e}"));
            (name.clone(), t)
        })
        .collect()
}

/// The ORT backend, loaded as users load it (config path / ORT_DYLIB_PATH / python package /
/// system). Fails loudly when no runtime is found: the README test command installs one.
/// Set `EDGEINFER_SKIP_ORT=1` to skip ORT checks deliberately (never in CI).
pub fn ort_backend() -> Option<Arc<dyn Backend>> {
    if std::env::var_os("EDGEINFER_SKIP_ORT").is_some_and(|v| v == "1") {
        eprintln!("EDGEINFER_SKIP_ORT=1: skipping ONNX Runtime checks");
        return None;
    }
    match edgeinfer_onnx::backend(BackendKind::Ort, None) {
        Ok(b) => Some(b),
        Err(e) => panic!(
            "ONNX Runtime is needed by this test and was not found: {e}\n\
             Run the README's test command (it installs the onnxruntime wheel into .venv and sets ORT_DYLIB_PATH)."
        ),
    }
}

/// Every backend under test.
pub fn backends() -> Vec<Arc<dyn Backend>> {
    let mut v: Vec<Arc<dyn Backend>> =
        vec![edgeinfer_onnx::backend(BackendKind::Tract, None).unwrap_or_else(|e| panic!("{e}"))];
    v.extend(ort_backend());
    v
}

/// The precision variant a benchmark example loads: `VARIANT` from the environment (fp32 when
/// unset).
pub fn bench_variant() -> edgeinfer_models::layout::Variant {
    std::env::var("VARIANT").map(|v| v.parse().unwrap_or_else(|e| panic!("VARIANT: {e}"))).unwrap_or_default()
}

/// The LLaMA benchmarks' prompt of `n` token ids (ids 10..210 of the tokenizer: valid for any
/// vocabulary of the family). `bench/pipelines_python.py` (`LlamaBaseline.prompt`) makes the same.
pub fn bench_prompt_ids(n: usize) -> Vec<u32> {
    (0..n).map(|i| 10 + (i * 7 % 200) as u32).collect()
}

/// A copy of SAM model folder `src` (symlinks to its files) whose `manifest.json` names `decoder`
/// as the decoder: how a user switches a folder to another decoder export it holds.
pub fn sam_folder_with_decoder(src: &Path, decoder: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let entries = std::fs::read_dir(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    for path in entries.flatten().map(|e| e.path()).filter(|p| p.is_file()) {
        if let Some(name) = path.file_name().filter(|n| *n != "manifest.json") {
            std::os::unix::fs::symlink(&path, dir.path().join(name)).unwrap_or_else(|e| panic!("symlink: {e}"));
        }
    }
    let manifest = src.join("manifest.json");
    let text = std::fs::read(&manifest).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    let mut json: serde_json::Value = serde_json::from_slice(&text).unwrap_or_else(|e| panic!("bad manifest: {e}"));
    json["decoder"] = decoder.into();
    std::fs::write(dir.path().join("manifest.json"), json.to_string()).unwrap_or_else(|e| panic!("write: {e}"));
    dir
}
