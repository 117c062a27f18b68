//! The ONNX Runtime backend's own behaviour: execution-provider fallback and `require`, the
//! provider report, session options.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgeinfer_onnx::{
    EpConfig, ExecutionProvider, ModelSource, OnnxError, OptimizationLevel, SessionOptions, Tensor, parse_ep_list,
};
use edgeinfer_tests::{case_inputs, cases, fixtures, ort_backend};

fn encoder() -> ModelSource {
    ModelSource::File(fixtures().join("sam/encoder_plain.onnx"))
}

fn check_against_golden(session: &dyn edgeinfer_onnx::Session) {
    let (dir, cases) = cases("sam");
    let case = cases.iter().find(|c| c.name == "encoder_plain").unwrap();
    let out = session.run(case_inputs(&dir, case)).unwrap();
    let golden = Tensor::read_npy(&dir.join(&case.outputs["image_embeddings"])).unwrap();
    assert!(out.get("image_embeddings").unwrap().compare(&golden).unwrap().within(1e-4, 1e-3));
}

#[test]
fn a_missing_provider_falls_back_down_the_list_and_says_why() {
    let Some(ort) = ort_backend() else { return };
    let options =
        SessionOptions { execution_providers: parse_ep_list("cuda,openvino:NPU,cpu").unwrap(), ..Default::default() };
    let session = ort.load(&encoder(), &options).unwrap();
    let report = session.providers();
    assert_eq!(report.attempts.len(), 3, "{report:?}");
    assert_eq!(report.attempts[0].provider, "cuda");
    assert!(
        report.attempts[0]
            .error
            .as_deref()
            .unwrap()
            .contains("CUDAExecutionProvider is not in this ONNX Runtime build")
    );
    assert_eq!(report.attempts[1].provider, "openvino:NPU");
    assert!(report.attempts[1].error.is_some());
    assert_eq!(report.attempts[2].provider, "cpu");
    assert!(report.attempts[2].error.is_none());
    assert_eq!(report.active, ["CPUExecutionProvider"]);
    assert!(report.node_placement.get("CPUExecutionProvider").copied().unwrap_or(0) > 10, "{report:?}");
    assert_eq!(report.primary(), Some("CPUExecutionProvider"));
    check_against_golden(session.as_ref());
}

#[test]
fn a_required_provider_that_is_missing_fails_the_load_with_its_own_error() {
    let Some(ort) = ort_backend() else { return };
    let options = SessionOptions {
        execution_providers: vec![
            EpConfig { provider: ExecutionProvider::Cuda { device_id: 0 }, require: true },
            EpConfig::new(ExecutionProvider::Cpu),
        ],
        ..Default::default()
    };
    match ort.load(&encoder(), &options) {
        Err(OnnxError::ExecutionProvider { ep, reason }) => {
            assert_eq!(ep, "cuda!");
            assert!(reason.contains("CUDAExecutionProvider"), "{reason}");
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("loaded although the required provider is missing"),
    }
}

#[test]
fn session_options_apply() {
    let Some(ort) = ort_backend() else { return };
    let dir = tempfile::tempdir().unwrap();
    let optimized = dir.path().join("encoder.opt.onnx");
    let options = SessionOptions {
        intra_threads: Some(1),
        inter_threads: Some(1),
        optimization: OptimizationLevel::Extended,
        optimized_model_path: Some(optimized.clone()),
        ..Default::default()
    };
    let session = ort.load(&encoder(), &options).unwrap();
    check_against_golden(session.as_ref());
    assert!(optimized.is_file(), "optimized model was not written");
    // The optimised file is itself a loadable model with the same behaviour.
    let again = ort.load(&ModelSource::File(optimized), &SessionOptions::default()).unwrap();
    check_against_golden(again.as_ref());
    for level in [OptimizationLevel::Disabled, OptimizationLevel::Basic] {
        let s = ort.load(&encoder(), &SessionOptions { optimization: level, ..Default::default() }).unwrap();
        check_against_golden(s.as_ref());
    }
}

#[test]
fn ort_config_entries_reach_onnx_runtime() {
    let Some(ort) = ort_backend() else { return };
    // An entry with a visible effect: the optimised model is saved in ORT's flatbuffer format
    // (file identifier "ORTM") instead of ONNX protobuf.
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("encoder.ort");
    let mut ort_config = std::collections::BTreeMap::new();
    ort_config.insert("session.save_model_format".to_string(), "ORT".to_string());
    ort_config.insert("session.disable_prepacking".to_string(), "1".to_string());
    let options = SessionOptions { optimized_model_path: Some(saved.clone()), ort_config, ..Default::default() };
    let session = ort.load(&encoder(), &options).unwrap();
    check_against_golden(session.as_ref());
    let bytes = std::fs::read(&saved).unwrap();
    assert_eq!(&bytes[4..8], b"ORTM", "the model was not saved in ORT format");
}

#[test]
fn models_load_from_memory_too() {
    let Some(ort) = ort_backend() else { return };
    let bytes: std::sync::Arc<[u8]> = std::fs::read(fixtures().join("sam/encoder_plain.onnx")).unwrap().into();
    let session = ort.load(&ModelSource::Memory(bytes.clone()), &SessionOptions::default()).unwrap();
    check_against_golden(session.as_ref());
    let tract = edgeinfer_onnx::backend(edgeinfer_onnx::BackendKind::Tract, None).unwrap();
    let session = tract.load(&ModelSource::Memory(bytes), &SessionOptions::default()).unwrap();
    check_against_golden(session.as_ref());
}

#[test]
fn bad_inputs_are_rejected_before_reaching_the_runtime() {
    let Some(ort) = ort_backend() else { return };
    let session = ort.load(&encoder(), &SessionOptions::default()).unwrap();
    let wrong = vec![("image".to_string(), Tensor::zeros(edgeinfer_onnx::DType::F32, &[1, 3, 64, 64]).unwrap())];
    let err = session.run(wrong).unwrap_err().to_string();
    assert!(err.contains("must have shape [1, 3, 128, 128]"), "{err}");
}
