//! How the ONNX Runtime library is found: explicit path, ORT_DYLIB_PATH, the onnxruntime Python
//! package, and the error that lists every place looked at. Each case is a fresh process, since
//! a process loads the library once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

fn repo_venv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv")
}

fn check_ort(configure: impl FnOnce(&mut Command)) -> (Option<i32>, serde_json::Value, String) {
    let model = edgeinfer_models::fixtures::fixtures_dir().join("sam/encoder_plain.onnx");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgeinfer"));
    cmd.args(["check", model.to_str().unwrap(), "--backend", "ort", "--runs", "1", "--json"]);
    configure(&mut cmd);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), json, stderr)
}

/// A process environment in which nothing points at a runtime.
fn bare(cmd: &mut Command, home: &std::path::Path) {
    cmd.env_remove("ORT_DYLIB_PATH")
        .env_remove("VIRTUAL_ENV")
        .env("LD_LIBRARY_PATH", "")
        .env("HOME", home)
        .current_dir(home);
}

#[test]
fn a_missing_library_lists_every_place_looked_and_how_to_fix_it() {
    let home = tempfile::tempdir().unwrap();
    let (code, json, stderr) = check_ort(|c| bare(c, home.path()));
    let target = &json["targets"][0];
    match target["error"].as_str() {
        Some(err) => {
            assert_eq!(code, Some(1), "{stderr}");
            assert!(err.contains("ONNX Runtime library not found. Looked in:"), "{err}");
            assert!(err.contains("python package"), "{err}");
            assert!(err.contains("not found by the dynamic loader"), "{err}");
            assert!(err.contains("ORT_DYLIB_PATH: not set"), "{err}");
            assert!(err.contains("ORT_DYLIB_PATH"), "{err}");
            assert!(err.contains("pip install onnxruntime"), "{err}");
        }
        // A machine with ONNX Runtime installed system-wide finds it there, which is also right.
        None => assert!(target["backend"].as_str().unwrap().contains("found via system"), "{json:#}"),
    }
}

#[test]
fn an_explicit_path_that_does_not_exist_is_an_error_not_a_search() {
    let home = tempfile::tempdir().unwrap();
    let venv = repo_venv();
    let (code, json, _) = check_ort(|c| {
        bare(c, home.path());
        // Even with a usable Python package around, an explicit ORT_DYLIB_PATH is used alone.
        c.env("VIRTUAL_ENV", &venv).env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1.99.0");
    });
    assert_eq!(code, Some(1));
    let err = json["targets"][0]["error"].as_str().unwrap();
    assert!(err.contains("/nonexistent/libonnxruntime.so.1.99.0"), "{err}");
    assert!(err.contains("no such file (from ORT_DYLIB_PATH)"), "{err}");
    // The --ort-library flag (the config path) takes precedence over ORT_DYLIB_PATH.
    let good = std::env::var("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH (set by the README test command)");
    let (code, json, stderr) = check_ort(|c| {
        bare(c, home.path());
        c.env("ORT_DYLIB_PATH", "/nonexistent/lib.so").arg("--ort-library").arg(&good);
    });
    assert_eq!(code, Some(0), "{stderr}");
    assert!(json["targets"][0]["backend"].as_str().unwrap().contains("found via config"), "{json:#}");
}

#[test]
fn the_onnxruntime_python_package_of_the_active_virtualenv_is_found() {
    let home = tempfile::tempdir().unwrap();
    let venv = repo_venv();
    assert!(venv.join("bin/python").exists(), "the README test command creates .venv");
    let (code, json, stderr) = check_ort(|c| {
        bare(c, home.path());
        c.env("VIRTUAL_ENV", &venv);
    });
    assert_eq!(code, Some(0), "{stderr}");
    let backend = json["targets"][0]["backend"].as_str().unwrap();
    assert!(backend.contains("site-packages/onnxruntime/capi/libonnxruntime.so.1."), "{backend}");
    assert!(backend.contains("found via python package"), "{backend}");
}

#[test]
fn a_file_that_is_not_onnx_runtime_is_rejected_clearly() {
    let home = tempfile::tempdir().unwrap();
    let fake = home.path().join("libonnxruntime.so.1.32.0");
    std::fs::write(&fake, b"not a shared library").unwrap();
    let (code, json, _) = check_ort(|c| {
        bare(c, home.path());
        c.env("ORT_DYLIB_PATH", &fake);
    });
    assert_eq!(code, Some(1));
    let err = json["targets"][0]["error"].as_str().unwrap();
    assert!(err.starts_with(&format!("cannot use ONNX Runtime library '{}'", fake.display())), "{err}");
}
