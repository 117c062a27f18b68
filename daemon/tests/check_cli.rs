//! `edgeinfer check` as users run it: the real binary on every fixture, on both backends, and on
//! files that are not models.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    edgeinfer_models::fixtures::fixtures_dir()
}

fn edgeinfer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgeinfer")).args(args).output().expect("run edgeinfer")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ort_required() {
    // The README test command sets ORT_DYLIB_PATH; a missing runtime is a failure, not a skip.
    assert!(
        std::env::var_os("ORT_DYLIB_PATH").is_some() || std::env::var_os("EDGEINFER_SKIP_ORT").is_some(),
        "ORT_DYLIB_PATH is not set: run the README's test command"
    );
}

/// Runs check on both backends with --json and returns the parsed report.
fn check_json(model: &Path, extra: &[&str]) -> serde_json::Value {
    ort_required();
    let model = model.to_str().unwrap();
    let mut args = vec!["check", model, "--backend", "tract,ort", "--runs", "2", "--json"];
    args.extend_from_slice(extra);
    let out = edgeinfer(&args);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{}\nstderr:\n{}", stdout(&out), stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{}", stdout(&out)))
}

fn assert_agrees(report: &serde_json::Value, tolerance: f64) {
    let targets = report["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "{report:#}");
    assert_eq!(report["reference"], "tract");
    for t in targets {
        assert!(t["error"].is_null(), "{}", t["error"]);
        assert!(t["latency"]["median_ms"].as_f64().unwrap() > 0.0);
    }
    let parity = targets[1]["parity"].as_object().unwrap();
    assert_eq!(parity.len(), report["outputs"].as_array().unwrap().len(), "every output compared");
    for (name, d) in parity {
        let abs = d["max_abs"].as_f64().unwrap();
        assert!(abs < tolerance, "{name}: tract vs ort max abs {abs}");
    }
    assert_eq!(targets[1]["providers"]["active"][0], "CPUExecutionProvider");
}

fn golden_inputs(family: &str, case: &str) -> Vec<String> {
    let dir = fixtures().join(family).join("golden");
    let prefix = format!("{case}.in.");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(input) = name.strip_prefix(&prefix).and_then(|n| n.strip_suffix(".npy")) {
            out.push("--input".to_string());
            out.push(format!("{input}={}", dir.join(&name).display()));
        }
    }
    out
}

#[test]
fn every_fixture_runs_on_both_backends_and_they_agree() {
    let f = fixtures();
    let r = check_json(&f.join("sam/encoder.onnx"), &["--dim", "image_height=90", "--dim", "image_width=128"]);
    assert_agrees(&r, 1e-3);
    assert_agrees(&check_json(&f.join("sam/encoder_plain.onnx"), &[]), 1e-3);
    let dec = golden_inputs("sam", "decoder_three_points");
    assert_agrees(&check_json(&f.join("sam/decoder.onnx"), &dec.iter().map(String::as_str).collect::<Vec<_>>()), 1e-2);
    let r = check_json(
        &f.join("dinov2/model.onnx"),
        &["--dim", "batch_size=2", "--dim", "height=112", "--dim", "width=140"],
    );
    assert_agrees(&r, 1e-3);
    let llama = golden_inputs("llama", "decode");
    assert_agrees(
        &check_json(&f.join("llama/model.onnx"), &llama.iter().map(String::as_str).collect::<Vec<_>>()),
        1e-3,
    );
}

#[test]
fn generated_inputs_fill_symbolic_dims_and_masks() {
    let r = check_json(
        &fixtures().join("llama/model.onnx"),
        &[
            "--dim",
            "batch_size=1",
            "--dim",
            "sequence_length=5",
            "--dim",
            "past_sequence_length=3",
            "--dim",
            "total_sequence_length=8",
        ],
    );
    assert!(r["input_sources"]["attention_mask"].as_str().unwrap().starts_with("ones [1, 8]"), "{r:#}");
    assert_agrees(&r, 1e-3);
}

#[test]
fn saved_outputs_match_the_pytorch_golden() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixtures().join("sam/encoder_plain.onnx");
    let input = format!("image={}", fixtures().join("sam/golden/encoder_plain.in.image.npy").display());
    let out = edgeinfer(&[
        "check",
        model.to_str().unwrap(),
        "--backend",
        "tract",
        "--runs",
        "1",
        "--input",
        &input,
        "--save-outputs",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = edgeinfer_onnx::Tensor::read_npy(&dir.path().join("image_embeddings.npy")).unwrap();
    let want = edgeinfer_onnx::Tensor::read_npy(&fixtures().join("sam/golden/encoder_plain.out.image_embeddings.npy"))
        .unwrap();
    let d = got.compare(&want).unwrap();
    assert!(d.within(1e-4, 1e-3), "{d:?}");
}

#[test]
fn saved_outputs_go_to_one_folder_per_target_when_several() {
    ort_required();
    let dir = tempfile::tempdir().unwrap();
    let model = fixtures().join("sam/encoder_plain.onnx");
    let out = edgeinfer(&[
        "check",
        model.to_str().unwrap(),
        "--backend",
        "tract,ort",
        "--runs",
        "1",
        "--save-outputs",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(dir.path().join("tract/image_embeddings.npy").is_file());
    assert!(dir.path().join("ort-cpu/image_embeddings.npy").is_file());
}

#[test]
fn bad_model_files_are_one_line_errors_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let real = std::fs::read(fixtures().join("dinov2/model.onnx")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated.onnx", real[..real.len() / 3].to_vec()),
        ("corrupt.onnx", real.iter().enumerate().map(|(i, b)| if i % 7 == 0 { b ^ 0xA5 } else { *b }).collect()),
        ("text.onnx", b"this is not a model, just some text\n".to_vec()),
        ("image.onnx", std::fs::read(fixtures().join("photos/coffee.png")).unwrap()),
        ("empty.onnx", Vec::new()),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        for backend in ["tract", "ort", "tract,ort"] {
            if backend.contains("ort") && std::env::var_os("EDGEINFER_SKIP_ORT").is_some() {
                continue;
            }
            let out = edgeinfer(&["check", path.to_str().unwrap(), "--backend", backend, "--runs", "1"]);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{name} on {backend}: {err}\n{}", stdout(&out));
            let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
            assert_eq!(lines.len(), 1, "{name} on {backend}: expected one line, got:\n{err}");
            assert!(lines[0].starts_with("error: cannot load model"), "{name} on {backend}: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    let out = edgeinfer(&["check", "/nonexistent/model.onnx"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does not exist"));
}

#[test]
fn bad_inputs_are_named_with_exit_code_2() {
    let model = fixtures().join("dinov2/model.onnx");
    let model = model.to_str().unwrap();
    let wrong_rank = format!("pixel_values={}", fixtures().join("sam/golden/encoder_hwc.in.input_image.npy").display());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--input", &wrong_rank], "must have rank 4"),
        (vec!["--input", "nope=x.npy"], "has no input 'nope'"),
        (vec!["--input", "pixel_values=/nonexistent.npy"], "/nonexistent.npy"),
        (vec!["--input", "pixel_values"], "expected NAME=VALUE"),
        (vec![], "--dim batch_size=N --dim height=N --dim width=N"),
        (vec!["--dim", "height=abc"], "must be a non-negative integer"),
        (vec!["--ep", "gpu"], "unknown provider"),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["check", model, "--backend", "tract", "--runs", "1"];
        args.extend(extra.iter());
        let out = edgeinfer(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(expected), "{extra:?}: expected '{expected}' in: {err}");
    }
    // A float file for an integer input.
    let llama = fixtures().join("llama/model.onnx");
    let floats = format!("input_ids={}", fixtures().join("dinov2/golden/batch2_112.in.pixel_values.npy").display());
    let out = edgeinfer(&["check", llama.to_str().unwrap(), "--backend", "tract", "--input", &floats]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot convert float32 data to int64"), "{}", stderr(&out));
    // A fixed dim that does not match.
    let input = format!("image={}", fixtures().join("dinov2/golden/batch2_112.in.pixel_values.npy").display());
    let plain = fixtures().join("sam/encoder_plain.onnx");
    let out = edgeinfer(&["check", plain.to_str().unwrap(), "--backend", "tract", "--input", &input]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("must have shape [1, 3, 128, 128]"), "{}", stderr(&out));
}

#[test]
fn an_unavailable_execution_provider_is_reported_and_the_others_still_run() {
    ort_required();
    if std::env::var_os("EDGEINFER_SKIP_ORT").is_some() {
        return;
    }
    let model = fixtures().join("sam/encoder_plain.onnx");
    let out = edgeinfer(&["check", model.to_str().unwrap(), "--ep", "cuda,cpu", "--runs", "1", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let targets = r["targets"].as_array().unwrap();
    let names: Vec<&str> = targets.iter().map(|t| t["target"].as_str().unwrap()).collect();
    assert_eq!(names, ["tract", "ort/cuda", "ort/cpu"]);
    let cuda_err = targets[1]["error"].as_str().unwrap();
    assert!(cuda_err.contains("CUDAExecutionProvider"), "{cuda_err}");
    assert!(targets[2]["error"].is_null());
    assert!(targets[2]["parity"]["image_embeddings"]["max_abs"].as_f64().unwrap() < 1e-3);
}

#[test]
fn an_op_tract_lacks_is_named_with_the_backend_that_runs_it() {
    // Det: an ONNX op tract does not implement.
    let model = fixtures().join("probe/unsupported_op.onnx");
    let out = edgeinfer(&["check", model.to_str().unwrap(), "--backend", "tract", "--runs", "1"]);
    let e = stderr(&out);
    assert!(
        e.contains("tract does not implement the op Det") && e.contains("backend = \"ort\""),
        "exit {:?}: {e}",
        out.status
    );
}

/// Regression: `edgeinfer ... | head` panicked in println! once head had closed the pipe. Now
/// the process ends by SIGPIPE like any Unix tool, with nothing on stderr. The bash completion
/// script (80 KB) is more than a pipe holds, so the write after the close is certain.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
        .args(["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(!first.is_empty());
    // The reader (and with it the pipe) is dropped here.
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.signal(), Some(13), "{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}
