//! `MatMulInteger` as `quantize_dynamic` writes it (constant weights, a run-time activation zero
//! point) in three forms: int8 weights without a zero point, uint8 weights with a per-column zero
//! point, int8 weights with constant zero points on both sides. tract wires these itself
//! (`onnx/src/tract_matmul_integer.rs`); every backend must give numpy's exact integers.
//!
//! `MatMulNBits` in four 4-bit forms (32-wide blocks with and without zero points, a bias, one
//! 64-wide block, 16-wide blocks): tract packs the first three into Q4_0 before translation
//! (`onnx/src/tract_matmul_nbits.rs`) and leaves the last to its own op; every backend must give
//! numpy's float64 result to float32 accuracy.
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
        for y in ["y_int8", "y_uint8", "y_both", "y_uint8_no_zp", "y_uint8_128"] {
            let got = out.take(y).unwrap();
            let want = Tensor::read_npy(&probe(&format!("matmul_integer.{y}.npy"))).unwrap();
            match (&got, &want) {
                (Tensor::I32(got), Tensor::I32(want)) => assert_eq!(got, want, "{name} {y}"),
                _ => panic!("{name} {y}: {got:?} against {want:?}"),
            }
        }
    }
}

#[test]
fn every_backend_gives_numpys_4_bit_matmuls() {
    let probe = |name: &str| fixtures().join("probe").join(name);
    let a = Tensor::read_npy(&probe("matmul_nbits.a.npy")).unwrap();
    for backend in backends() {
        let name = backend.kind().name();
        let session = backend
            .load(&ModelSource::File(probe("matmul_nbits.onnx")), &SessionOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut out = session.run(vec![("a".to_string(), a.clone())]).unwrap_or_else(|e| panic!("{name}: {e}"));
        for y in ["y_sym", "y_zp_bias", "y_b64_zp", "y_b16"] {
            let got = out.take(y).unwrap();
            let want = Tensor::read_npy(&probe(&format!("matmul_nbits.{y}.npy"))).unwrap();
            match (&got, &want) {
                (Tensor::F32(got), Tensor::F32(want)) => {
                    assert_eq!(got.shape(), want.shape(), "{name} {y}");
                    for (g, w) in got.iter().zip(want.iter()) {
                        assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{name} {y}: {g} against numpy's {w}");
                    }
                }
                _ => panic!("{name} {y}: {got:?} against {want:?}"),
            }
        }
    }
}
