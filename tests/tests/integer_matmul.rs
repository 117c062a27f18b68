//! `MatMulInteger` as `quantize_dynamic` writes it (constant weights, a run-time activation zero
//! point) in three forms: int8 weights without a zero point, uint8 weights with a per-column zero
//! point, int8 weights with constant zero points on both sides. tract wires these itself
//! (`onnx/src/tract_matmul_integer.rs`) and must give numpy's exact integers everywhere; so must
//! ONNX Runtime, except for int8 weights on an x86 CPU without VNNI, where its `vpmaddubsw`
//! kernel saturates pairs of products at int16 and it must give numpy's emulation of that.
//!
//! `MatMulNBits` in four 4-bit forms (32-wide blocks with and without zero points, a bias, one
//! 64-wide block, 16-wide blocks): tract packs the first three into Q4_0 before translation
//! (`onnx/src/tract_matmul_nbits.rs`) and leaves the last to its own op; every backend must give
//! numpy's float64 result to float32 accuracy.
//!
//! `MatMulBnb4` (bitsandbytes' NF4 and FP4 codes, transformers.js's `bnb4` variant) in three
//! forms: tract decodes the weight at load (`onnx/src/tract_matmul_bnb4.rs`), ONNX Runtime at every
//! run; both must give numpy's float64 result to float32 accuracy.
//!
//! `MatMulNBits` with `accuracy_level = 4` in three of those forms: the activations quantised to
//! int8 per block before the product, as ONNX Runtime's CPU kernels do. numpy's reference
//! quantises the same way; ONNX Runtime and tract on a CPU with AVX-512 VNNI or AVX2
//! (`onnx/src/tract_q4_int8.rs`) must give it to float32 accuracy, which the float result misses
//! by about 0.05. tract elsewhere computes the level in float32 and must give the float result.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgeinfer_onnx::{Backend, BackendKind, ModelSource, Outputs, SessionOptions, Tensor};
use edgeinfer_tests::{backends, probe};

/// A file of the probe fixtures.
/// Runs the probe `<model>.onnx` on `backend`, each of `inputs` read from `<model>.<input>.npy`.
fn run_probe(backend: &dyn Backend, model: &str, inputs: &[&str]) -> Outputs {
    let name = backend.kind().name();
    let session = backend
        .load(&ModelSource::File(probe(&format!("{model}.onnx"))), &SessionOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let inputs = inputs
        .iter()
        .map(|i| (i.to_string(), Tensor::read_npy(&probe(&format!("{model}.{i}.npy"))).unwrap()))
        .collect();
    session.run(inputs).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_backend_gives_numpys_integers() {
    for backend in backends() {
        let name = backend.kind().name();
        let mut out = run_probe(&*backend, "matmul_integer", &["a", "a_zero_point"]);
        for y in ["y_int8", "y_uint8", "y_both", "y_uint8_no_zp", "y_uint8_128"] {
            let got = out.take(y).unwrap();
            // ONNX Runtime's u8 x s8 kernel saturates on x86 without VNNI (its documented
            // behaviour): there it must give numpy's saturating emulation, bit for bit.
            let int8_weights = y == "y_int8" || y == "y_both";
            let file = if int8_weights && backend.kind() == BackendKind::Ort && !has_vnni() {
                format!("matmul_integer.{y}.saturated.npy")
            } else {
                format!("matmul_integer.{y}.npy")
            };
            println!("{name} {y}: against {file}");
            let want = Tensor::read_npy(&probe(&file)).unwrap();
            match (&got, &want) {
                (Tensor::I32(got), Tensor::I32(want)) => assert_eq!(got, want, "{name} {y}"),
                _ => panic!("{name} {y}: {got:?} against {want:?}"),
            }
        }
    }
}

#[test]
fn every_backend_gives_numpys_4_bit_matmuls() {
    for backend in backends() {
        let name = backend.kind().name();
        let mut out = run_probe(&*backend, "matmul_nbits", &["a"]);
        for y in ["y_sym", "y_zp_bias", "y_b64_zp", "y_b16"] {
            let got = out.take(y).unwrap();
            let file = format!("matmul_nbits.{y}.npy");
            assert_float32_close(&got, &Tensor::read_npy(&probe(&file)).unwrap(), &format!("{name} {y} ({file})"));
        }
    }
}

#[test]
fn every_backend_gives_numpys_bitsandbytes_4_bit_matmuls() {
    for backend in backends() {
        let name = backend.kind().name();
        let mut out = run_probe(&*backend, "matmul_bnb4", &["a"]);
        for y in ["y_nf4_b64", "y_fp4_b16", "y_nf4_b128"] {
            let got = out.take(y).unwrap();
            let file = format!("matmul_bnb4.{y}.npy");
            assert_float32_close(&got, &Tensor::read_npy(&probe(&file)).unwrap(), &format!("{name} {y} ({file})"));
        }
    }
}

#[test]
fn every_backend_gives_numpys_4_bit_matmuls_with_int8_activations() {
    for backend in backends() {
        let name = backend.kind().name();
        let int8 = name != "tract" || tract_computes_int8();
        let mut out = run_probe(&*backend, "matmul_nbits_int8", &["a"]);
        for y in ["y_sym", "y_zp", "y_b64_zp"] {
            let got = out.take(y).unwrap();
            let file =
                if int8 { format!("matmul_nbits_int8.{y}.npy") } else { format!("matmul_nbits_int8.{y}.float.npy") };
            assert_float32_close(&got, &Tensor::read_npy(&probe(&file)).unwrap(), &format!("{name} {y} ({file})"));
        }
    }
}

/// `got` is numpy's float64 result `want` to float32 accuracy.
fn assert_float32_close(got: &Tensor, want: &Tensor, what: &str) {
    match (got, want) {
        (Tensor::F32(got), Tensor::F32(want)) => {
            assert_eq!(got.shape(), want.shape(), "{what}");
            for (g, w) in got.iter().zip(want.iter()) {
                assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{what}: {g} against numpy's {w}");
            }
        }
        _ => panic!("{what}: {got:?} against {want:?}"),
    }
}

/// Whether this CPU has an int8 dot-product instruction ONNX Runtime uses for u8 x s8 (AVX-512
/// VNNI or AVX-VNNI); without one its x86 kernel saturates pairs of products at int16. Other
/// architectures count as having one (their kernels widen before adding).
fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512vnni") || std::arch::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

/// Whether tract computes `accuracy_level = 4` in int8 on this CPU (AVX-512 F, BW, VL and VNNI, or
/// AVX2 and FMA, and the A/B switch not set to `f32` or `tract`).
fn tract_computes_int8() -> bool {
    let switched_off = std::env::var("EDGEINFER_TRACT_Q4_KERNEL").is_ok_and(|v| v == "f32" || v == "tract");
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let vnni = has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vnni");
        !switched_off && (vnni || (has!("avx2") && has!("fma")))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = switched_off;
        false
    }
}
