//! `MatMulInteger` as `quantize_dynamic` writes it (constant weights, a run-time activation zero
//! point) in three forms: int8 weights without a zero point, uint8 weights with a per-column zero
//! point, int8 weights with constant zero points on both sides. tract wires these itself
//! (`onnx/src/tract_matmul_integer.rs`); every backend must give numpy's exact integers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgeinfer_onnx::{ModelSource, SessionOptions, Tensor};
use edgeinfer_tests::{backends, fixtures};

#[test]
fn every_backend_gives_numpys_integers() {
    let probe = |name: &str| fixtures().join("probe").join(name);
    for backend in backends() {
        let name = backend.kind().name();
        let session = backend
            .load(&ModelSource::File(probe("matmul_integer.onnx")), &SessionOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let inputs = ["a", "a_zero_point"]
            .map(|i| (i.to_string(), Tensor::read_npy(&probe(&format!("matmul_integer.{i}.npy"))).unwrap()));
        let mut out = session.run(inputs.to_vec()).unwrap_or_else(|e| panic!("{name}: {e}"));
        for y in ["y_int8", "y_uint8", "y_both"] {
            let got = out.take(y).unwrap();
            let want = Tensor::read_npy(&probe(&format!("matmul_integer.{y}.npy"))).unwrap();
            match (&got, &want) {
                (Tensor::I32(got), Tensor::I32(want)) => assert_eq!(got, want, "{name} {y}"),
                _ => panic!("{name} {y}: {got:?} against {want:?}"),
            }
        }
    }
}
