//! ONNX Runtime's `com.microsoft` `GroupQueryAttention`, as onnxruntime-genai's builder writes it
//! (query, key and value packed and computed by a MatMul, rotary inside the op, the cache's head
//! size symbolic) and with separate inputs (no rotary, the default scale), for a prompt, a decode
//! step and a multi-token step against a cache. The reference is numpy's float64 attention over the
//! concatenated cache (`models/export/make_probe_models.py`, which checks ONNX Runtime against it
//! when it writes the fixture). tract runs the op written out in standard ops
//! (`onnx/src/tract_gqa.rs`) and must give the same outputs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgeinfer_onnx::{ModelSource, SessionOptions, Tensor};
use edgeinfer_tests::{backends, probe};

const INPUTS: [&str; 10] = [
    "x",
    "q",
    "k",
    "v",
    "past_key_packed",
    "past_value_packed",
    "past_key_separate",
    "past_value_separate",
    "seqlens_k",
    "total_sequence_length",
];

const OUTPUTS: [&str; 6] = [
    "y_packed",
    "present_key_packed",
    "present_value_packed",
    "y_separate",
    "present_key_separate",
    "present_value_separate",
];

#[test]
fn every_backend_gives_numpys_group_query_attention() {
    for backend in backends() {
        let name = backend.kind().name();
        let session = backend
            .load(&ModelSource::File(probe("group_query_attention.onnx")), &SessionOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for case in ["prefill", "decode", "continue"] {
            let read = |tensor: &str| Tensor::read_npy(&probe(&format!("group_query_attention.{case}.{tensor}.npy")));
            let inputs = INPUTS.iter().map(|i| (i.to_string(), read(i).unwrap())).collect();
            let mut out = session.run(inputs).unwrap_or_else(|e| panic!("{name} {case}: {e}"));
            for y in OUTPUTS {
                let got = out.take(y).unwrap().into_f32().unwrap();
                let want = read(y).unwrap().into_f32().unwrap();
                assert_eq!(got.shape(), want.shape(), "{name} {case} {y}");
                let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                println!("{name} {case} {y}: max abs err {worst:.2e}");
                assert!(worst < 1e-5, "{name} {case} {y}: {worst} from numpy's");
            }
        }
        if backend.kind() == edgeinfer_onnx::BackendKind::Tract {
            // Written out, the op plans once for every length (tract's own expansion of it could
            // not: it would plan again for each new length of the cache).
            assert_eq!(session.stats().plans_built, 1, "tract: one symbolic plan for the three cases");
        }
    }
}
