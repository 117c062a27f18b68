//! How weights reach a session: stored inline in the `.onnx` file, in an external data file (as
//! Optimum stores models over 2 GB), through a symlinked model file, from a Hugging Face cache
//! snapshot (model and data file both symlinks into `blobs/`), and with a broken data file.
//! tract moves inline weights out of the protobuf one by one (`onnx/src/tract_weights.rs`); these
//! check that every way in gives the numpy result on every backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use edgeinfer_onnx::{Backend, ModelSource, SessionOptions, Tensor};
use edgeinfer_tests::{backends, probe};

fn run(backend: &dyn Backend, model: &Path) -> edgeinfer_onnx::Result<Tensor> {
    let session = backend.load(&ModelSource::File(model.to_path_buf()), &SessionOptions::default())?;
    let x = Tensor::read_npy(&probe("weights.x.npy")).unwrap();
    let mut out = session.run(vec![("x".into(), x)])?;
    out.take("y")
}

fn assert_numpy_result(y: &Tensor, what: &str) {
    let golden = Tensor::read_npy(&probe("weights.y.npy")).unwrap();
    let diff = y.compare(&golden).unwrap();
    assert!(diff.within(1e-5, 1e-5), "{what}: {diff:?}");
}

#[test]
fn inline_and_external_weights_give_the_numpy_result_on_every_backend() {
    for backend in backends() {
        for file in ["weights.onnx", "weights_external.onnx"] {
            let what = format!("{file} on {}", backend.kind().name());
            let y = run(backend.as_ref(), &probe(file)).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_numpy_result(&y, &what);
        }
    }
}

#[test]
fn a_model_file_symlinked_from_another_directory_loads() {
    let dir = tempfile::tempdir().unwrap();
    let linked = dir.path().join("linked.onnx");
    std::os::unix::fs::symlink(probe("weights.onnx"), &linked).unwrap();
    // A path with a `.` component, in a directory of its own.
    let relative = dir.path().join("sub");
    std::fs::create_dir(&relative).unwrap();
    std::fs::copy(probe("weights.onnx"), relative.join("model.onnx")).unwrap();
    for backend in backends() {
        let y = run(backend.as_ref(), &linked).unwrap_or_else(|e| panic!("{}: {e}", backend.kind().name()));
        assert_numpy_result(&y, &format!("symlink on {}", backend.kind().name()));
        let y = run(backend.as_ref(), &relative.join(".").join("model.onnx")).unwrap();
        assert_numpy_result(&y, &format!("copy on {}", backend.kind().name()));
    }
}

#[test]
fn external_data_in_a_hugging_face_cache_snapshot_loads_on_every_backend() {
    // models--org--name/snapshots/<rev>/onnx/* -> ../../../blobs/<sha256>, as huggingface_hub and
    // `edgeinfer pull` leave them.
    let cache = tempfile::tempdir().unwrap();
    let blobs = cache.path().join("blobs");
    let onnx = cache.path().join("snapshots/0123abcd/onnx");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(&onnx).unwrap();
    for (file, blob) in [("weights_external.onnx", "a1"), ("weights_external.onnx.data", "b2")] {
        std::fs::copy(probe(file), blobs.join(blob)).unwrap();
        std::os::unix::fs::symlink(Path::new("../../../blobs").join(blob), onnx.join(file)).unwrap();
    }
    for backend in backends() {
        let name = backend.kind().name();
        let y = run(backend.as_ref(), &onnx.join("weights_external.onnx")).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_numpy_result(&y, &format!("snapshot on {name}"));
    }
}

#[test]
fn a_short_external_data_file_is_a_load_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(probe("weights_external.onnx"), dir.path().join("weights_external.onnx")).unwrap();
    let data = std::fs::read(probe("weights_external.onnx.data")).unwrap();
    std::fs::write(dir.path().join("weights_external.onnx.data"), &data[..data.len() / 2]).unwrap();
    for backend in backends() {
        let err = run(backend.as_ref(), &dir.path().join("weights_external.onnx"))
            .expect_err("a model whose data file is cut short must not load");
        let message = err.to_string();
        let name = backend.kind().name();
        assert!(message.contains("weights_external.onnx"), "{name}: {message}");
        assert!(!message.contains("internal panic"), "{name}: a panic, caught: {message}");
    }
}
