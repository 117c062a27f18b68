//! Every fixture model runs on every backend, and each output matches the PyTorch reference
//! recorded by `models/export/` (cases.json beside each fixture). The precision variants
//! (`model_fp16.onnx`, `model_int8.onnx`, ... written by `models/export/quantize.py`) run on
//! every backend too, against ONNX Runtime's output of the same file (variants.json): inputs are
//! converted to the element types each file declares, as the pipelines do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use edgeinfer_onnx::{ModelSource, SessionOptions, Tensor};
use edgeinfer_tests::{Case, backends, case_inputs, cases, variant_cases};

fn run_family(family: &str) {
    run_cases(family, cases(family));
}

fn run_cases(family: &str, (dir, cases): (std::path::PathBuf, Vec<Case>)) {
    assert!(!cases.is_empty(), "no cases for {family}");
    for backend in backends() {
        let mut sessions = BTreeMap::new();
        for case in &cases {
            let session = sessions.entry(case.model.clone()).or_insert_with(|| {
                let path = dir.join(&case.model);
                backend
                    .load(&ModelSource::File(path.clone()), &SessionOptions::default())
                    .unwrap_or_else(|e| panic!("{}: {e}", backend.kind()))
            });
            let outputs = session
                .run_as_declared(case_inputs(&dir, case))
                .unwrap_or_else(|e| panic!("{} {family}/{}: {e}", backend.kind(), case.name));
            for (name, file) in &case.outputs {
                let golden = Tensor::read_npy(&dir.join(file)).unwrap();
                let got = outputs.get(name).unwrap_or_else(|| panic!("missing output {name}"));
                let diff = got.compare(&golden).unwrap_or_else(|e| panic!("{family}/{} {name}: {e}", case.name));
                println!(
                    "{:<6} {family}/{:<24} {:<20} max abs err {:.2e} (max |ref| {:.2e})",
                    backend.kind().name(),
                    case.name,
                    name,
                    diff.max_abs,
                    diff.max_ref
                );
                assert!(
                    diff.within(case.atol, case.rtol),
                    "{} {family}/{} output {name}: max abs err {} exceeds atol {} + rtol {} * {}",
                    backend.kind(),
                    case.name,
                    diff.max_abs,
                    case.atol,
                    case.rtol,
                    diff.max_ref
                );
            }
        }
    }
}

#[test]
fn sam_encoders_and_decoder_match_pytorch() {
    run_family("sam");
}

#[test]
fn sam2_encoder_and_decoder_match_pytorch() {
    run_family("sam2");
}

#[test]
fn sam_transformers_layout_matches_pytorch() {
    run_family("sam-hf");
}

#[test]
fn sam_transformers_layout_quantized_and_fp16_variants_match_onnxruntime() {
    run_cases("sam-hf", variant_cases("sam-hf"));
}

#[test]
fn sam2_onnx_community_layout_matches_pytorch() {
    run_family("sam2-hf");
}

#[test]
fn sam2_onnx_community_layout_quantized_and_fp16_variants_match_onnxruntime() {
    run_cases("sam2-hf", variant_cases("sam2-hf"));
}

#[test]
fn dinov2_matches_pytorch() {
    run_family("dinov2");
}

#[test]
fn llama_prefill_and_cached_decode_match_pytorch() {
    run_family("llama");
}

#[test]
fn llama_genai_layout_export_matches_pytorch() {
    // export_llama.py --attention gqa: one com.microsoft GroupQueryAttention node per layer (tract
    // runs it written out in standard ops), fed a cache that is exactly the past positions.
    run_family("llama-gqa");
}

#[test]
fn llama_genai_layout_int8_and_q4_variants_match_onnxruntime() {
    run_cases("llama-gqa", variant_cases("llama-gqa"));
}

#[test]
fn dinov2_fp16_and_int8_variants_match_onnxruntime() {
    run_cases("dinov2", variant_cases("dinov2"));
}

#[test]
fn llama_fp16_int8_and_q4_variants_match_onnxruntime() {
    run_cases("llama", variant_cases("llama"));
}
