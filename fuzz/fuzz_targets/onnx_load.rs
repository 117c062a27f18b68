//! Loading mutated ONNX files on both backends (tract, and ONNX Runtime from `ORT_DYLIB_PATH`
//! when set): an error is fine, a panic or an abort is not. The seeds are the small probe
//! models of `models/fixtures/probe` (weights, external-data reference, unsupported operator).
//!
//! tract panics on some malformed graphs (`no entry found for key` in its ONNX importer); the
//! backend contains those at its boundary (`onnx/src/guard.rs`) and answers an error, which is
//! what the daemon sees. libFuzzer's panic hook would abort on the contained panic too, so this
//! target restores a quiet hook: a panic that escapes the backend still fails the run
//! (libfuzzer-sys aborts when the target unwinds).
#![no_main]

use std::sync::{Arc, OnceLock};

use edgeinfer_onnx::{Backend, BackendKind, ModelSource, SessionOptions};
use libfuzzer_sys::fuzz_target;

fn backends() -> &'static Vec<Arc<dyn Backend>> {
    static BACKENDS: OnceLock<Vec<Arc<dyn Backend>>> = OnceLock::new();
    BACKENDS.get_or_init(|| {
        std::panic::set_hook(Box::new(|_| {}));
        let mut all = vec![edgeinfer_onnx::backend(BackendKind::Tract, None).unwrap()];
        if let Some(library) = std::env::var_os("ORT_DYLIB_PATH") {
            all.push(edgeinfer_onnx::backend(BackendKind::Ort, Some(library.as_ref())).unwrap());
        }
        all
    })
}

fuzz_target!(|data: &[u8]| {
    let source = ModelSource::Memory(Arc::from(data));
    let options = SessionOptions { intra_threads: Some(1), ..SessionOptions::default() };
    for backend in backends() {
        if let Err(e) = backend.load(&source, &options) {
            // Contained panics come back as errors with a clear message.
            let _ = e.to_string();
        }
    }
});
