//! Execution providers proven, not just configured: OpenVINO (CPU device) really runs the
//! fixtures and agrees with the CPU provider; an absent NPU or CUDA falls back with the reason or
//! fails with the provider's own error when required; strict placement fails loudly; and the ort
//! backend runs on the oldest supported ONNX Runtime and refuses an older one.
//!
//! Each ONNX Runtime build is loaded in its own `edgeinfer check` process. The README test command
//! installs the wheels and exports their library paths:
//! `EDGEINFER_TEST_ORT_OPENVINO` (onnxruntime-openvino 1.24.1), `EDGEINFER_TEST_ORT_GPU`
//! (onnxruntime-gpu, no CUDA libraries on this machine), `EDGEINFER_TEST_ORT_FLOOR` (1.20.1) and
//! `EDGEINFER_TEST_ORT_OLD` (1.19.2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn fixtures() -> PathBuf {
    edgeinfer_models::fixtures::fixtures_dir()
}

fn lib(var: &str) -> Option<String> {
    if std::env::var_os("EDGEINFER_SKIP_ORT").is_some_and(|v| v == "1") {
        return None;
    }
    Some(std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run the README's test command")))
}

/// `edgeinfer check --backend ort --json` with the given library; returns (exit code, report).
fn check(library: &str, model: &str, args: &[String]) -> (Option<i32>, Value) {
    let model = fixtures().join(model);
    let out = Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
        .args(["check", model.to_str().unwrap(), "--backend", "ort", "--runs", "3", "--json", "--ort-library", library])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); exit {:?}\nstdout: {stdout}\nstderr: {stderr}", out.status));
    (out.status.code(), report)
}

fn target<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == name)
        .unwrap_or_else(|| panic!("no target {name} in {report:#}"))
}

fn golden_args(family: &str, case: &str) -> Vec<String> {
    let dir = fixtures().join(family).join("golden");
    let mut args = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(input) = name.strip_prefix(&format!("{case}.in.")).and_then(|n| n.strip_suffix(".npy")) {
            args.push("--input".into());
            args.push(format!("{input}={}", dir.join(&name).display()));
        }
    }
    args
}

/// Every fixture with the inputs it needs.
fn fixture_runs() -> Vec<(&'static str, Vec<String>, f64)> {
    let dims = |pairs: &[&str]| pairs.iter().flat_map(|p| ["--dim".to_string(), p.to_string()]).collect::<Vec<_>>();
    vec![
        ("sam/encoder.onnx", dims(&["image_height=90", "image_width=128"]), 1e-3),
        ("sam/encoder_plain.onnx", Vec::new(), 1e-3),
        ("sam/decoder.onnx", golden_args("sam", "decoder_box"), 1e-2),
        ("dinov2/model.onnx", dims(&["batch_size=2", "height=112", "width=112"]), 1e-3),
        ("llama/model.onnx", golden_args("llama", "decode"), 1e-3),
    ]
}

#[test]
fn openvino_runs_every_fixture_and_agrees_with_the_cpu_provider() {
    let Some(ov) = lib("EDGEINFER_TEST_ORT_OPENVINO") else { return };
    for (model, mut args, tolerance) in fixture_runs() {
        args.extend(["--ep".to_string(), "cpu,openvino:CPU+cpu".to_string()]);
        let (code, report) = check(&ov, model, &args);
        assert_eq!(code, Some(0), "{model}: {report:#}");
        let t = target(&report, "ort/openvino:CPU+cpu");
        assert_eq!(t["providers"]["active"][0], "OpenVINOExecutionProvider", "{model}: {t:#}");
        let on_ov = t["providers"]["node_placement"]["OpenVINOExecutionProvider"].as_u64().unwrap_or(0);
        assert!(on_ov >= 1, "{model}: nothing placed on OpenVINO: {t:#}");
        assert!(t["latency"]["median_ms"].as_f64().unwrap() > 0.0);
        let parity = t["parity"].as_object().unwrap();
        assert_eq!(parity.len(), report["outputs"].as_array().unwrap().len(), "{model}");
        for (name, d) in parity {
            let abs = d["max_abs"].as_f64().unwrap();
            assert!(abs < tolerance, "{model} {name}: OpenVINO vs CPU provider max abs {abs}");
        }
        assert!(target(&report, "ort/cpu")["latency"]["median_ms"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn an_absent_npu_falls_back_with_the_reason_or_fails_with_openvinos_error_when_required() {
    let Some(ov) = lib("EDGEINFER_TEST_ORT_OPENVINO") else { return };
    let args = vec!["--ep".to_string(), "openvino:NPU+cpu,openvino:NPU".to_string()];
    let (code, report) = check(&ov, "sam/encoder_plain.onnx", &args);
    assert_eq!(code, Some(1), "{report:#}");
    let fallback = target(&report, "ort/openvino:NPU+cpu");
    assert!(fallback["error"].is_null(), "{fallback:#}");
    assert_eq!(fallback["providers"]["active"], serde_json::json!(["CPUExecutionProvider"]));
    let attempt = &fallback["providers"]["attempts"][0];
    assert_eq!(attempt["provider"], "openvino:NPU");
    let reason = attempt["error"].as_str().unwrap();
    assert!(reason.contains("[OpenVINO] Device NPU is not available"), "{reason}");
    let required = target(&report, "ort/openvino:NPU");
    let err = required["error"].as_str().unwrap();
    assert!(err.contains("execution provider 'openvino:NPU!' is required but failed"), "{err}");
    assert!(err.contains("[OpenVINO] Device NPU is not available"), "{err}");
}

#[test]
fn strict_placement_fails_loudly_instead_of_splitting_the_graph() {
    let Some(ov) = lib("EDGEINFER_TEST_ORT_OPENVINO") else { return };
    let x = format!("x={}", fixtures().join("probe/unsupported_op.x.npy").display());
    let golden = edgeinfer_onnx::Tensor::read_npy(&fixtures().join("probe/unsupported_op.y.npy")).unwrap();
    // Default: the Det node OpenVINO cannot take runs on the CPU provider, visibly.
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = ["--ep", "openvino:CPU+cpu", "--input", &x, "--save-outputs", dir.path().to_str().unwrap()]
        .map(String::from)
        .to_vec();
    let (code, report) = check(&ov, "probe/unsupported_op.onnx", &args);
    assert_eq!(code, Some(0), "{report:#}");
    let placement = &target(&report, "ort/openvino:CPU+cpu")["providers"]["node_placement"];
    assert_eq!(placement["OpenVINOExecutionProvider"], 1, "{placement}");
    assert_eq!(placement["CPUExecutionProvider"], 1, "{placement}");
    let y = edgeinfer_onnx::Tensor::read_npy(&dir.path().join("y.npy")).unwrap();
    assert!(y.compare(&golden).unwrap().within(1e-5, 1e-5));
    // Strict: the same graph fails to load, naming the cause.
    let strict: Vec<String> =
        ["--ep", "openvino:CPU", "--input", &x, "--disable-cpu-fallback"].map(String::from).to_vec();
    let (code, report) = check(&ov, "probe/unsupported_op.onnx", &strict);
    assert_eq!(code, Some(1), "{report:#}");
    let err = target(&report, "ort/openvino:CPU")["error"].as_str().unwrap();
    assert!(err.contains("model cannot run entirely on openvino:CPU"), "{err}");
    assert!(err.contains("fallback to CPU EP has been explicitly disabled"), "{err}");
    // And a graph OpenVINO takes entirely loads fine in strict mode.
    let (code, report) =
        check(&ov, "sam/encoder_plain.onnx", &["--ep".into(), "openvino:CPU".into(), "--disable-cpu-fallback".into()]);
    assert_eq!(code, Some(0), "{report:#}");
}

#[test]
fn cuda_without_a_driver_falls_back_to_cpu_with_the_reason_or_fails_when_required() {
    let Some(gpu) = lib("EDGEINFER_TEST_ORT_GPU") else { return };
    let args = vec!["--ep".to_string(), "cpu,cuda+cpu,tensorrt+cuda+cpu,cuda".to_string()];
    let (code, report) = check(&gpu, "sam/encoder_plain.onnx", &args);
    assert_eq!(code, Some(1), "{report:#}");
    for name in ["ort/cuda+cpu", "ort/tensorrt+cuda+cpu"] {
        let t = target(&report, name);
        assert!(t["error"].is_null(), "{t:#}");
        assert_eq!(t["providers"]["active"], serde_json::json!(["CPUExecutionProvider"]), "{t:#}");
        let attempts = t["providers"]["attempts"].as_array().unwrap();
        let cuda = attempts.iter().find(|a| a["provider"] == "cuda").unwrap();
        let reason = cuda["error"].as_str().unwrap();
        assert!(reason.contains("libonnxruntime_providers_cuda.so"), "{reason}");
        assert!(reason.contains("cannot open shared object file"), "{reason}");
        assert!(t["parity"]["image_embeddings"]["max_abs"].as_f64().unwrap() < 1e-5);
    }
    let err = target(&report, "ort/cuda")["error"].as_str().unwrap();
    assert!(err.contains("execution provider 'cuda!' is required but failed"), "{err}");
    assert!(err.contains("libonnxruntime_providers_cuda.so"), "{err}");
}

#[test]
fn the_oldest_supported_runtime_runs_every_fixture_like_tract() {
    let Some(floor) = lib("EDGEINFER_TEST_ORT_FLOOR") else { return };
    for (model, args, tolerance) in fixture_runs() {
        let path = fixtures().join(model);
        let out = Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
            .args(["check", path.to_str().unwrap(), "--backend", "tract,ort", "--runs", "1", "--json"])
            .args(["--ort-library", &floor])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{model}: {}", String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let ort = target(&report, "ort/cpu");
        assert!(ort["backend"].as_str().unwrap().starts_with("onnxruntime 1.20."), "{ort:#}");
        for (name, d) in ort["parity"].as_object().unwrap() {
            assert!(d["max_abs"].as_f64().unwrap() < tolerance, "{model} {name}: {d}");
        }
    }
}

#[test]
fn an_older_runtime_is_refused_naming_both_versions() {
    let Some(old) = lib("EDGEINFER_TEST_ORT_OLD") else { return };
    let (code, report) = check(&old, "sam/encoder_plain.onnx", &[]);
    assert_eq!(code, Some(1));
    let err = target(&report, "ort/cpu")["error"].as_str().unwrap();
    assert!(err.contains("is version 1.19.2"), "{err}");
    assert!(err.contains("needs ONNX Runtime >= 1.20"), "{err}");
}
