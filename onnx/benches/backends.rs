//! Backend benchmarks: the same model and input on tract and on ONNX Runtime (CPU EP), per call.
//!
//! Models: the bundled tiny fixtures, plus the real-size models named by `EDGEINFER_BENCH_MODELS`
//! (comma-separated `.onnx` paths with fixed or `--dim`-free inputs, e.g. the DINOv2-S/14 that
//! `bench/ort_overhead.sh` generates). ONNX Runtime is found as usual (ORT_DYLIB_PATH...); without
//! it only tract is measured.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};

use criterion::{Criterion, criterion_group, criterion_main};
use edgeinfer_onnx::{BackendKind, Dim, ModelSource, SessionOptions, Tensor};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures")
}

/// (label, model, dims for symbolic inputs)
type BenchModel = (String, PathBuf, Vec<(&'static str, usize)>);

fn models() -> Vec<BenchModel> {
    let f = fixtures();
    let mut v = vec![
        (
            "tiny-dinov2-224".to_string(),
            f.join("dinov2/model.onnx"),
            vec![("batch_size", 1), ("height", 224), ("width", 224)],
        ),
        ("tiny-sam-encoder".to_string(), f.join("sam/encoder_plain.onnx"), vec![]),
    ];
    if let Ok(list) = std::env::var("EDGEINFER_BENCH_MODELS") {
        for p in list.split(',').filter(|s| !s.is_empty()) {
            let path = PathBuf::from(p);
            let label =
                path.parent().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            v.push((label, path, vec![("batch_size", 1), ("height", 224), ("width", 224)]));
        }
    }
    v
}

fn inputs(session: &dyn edgeinfer_onnx::Session, dims: &[(&str, usize)]) -> Vec<(String, Tensor)> {
    session
        .inputs()
        .iter()
        .enumerate()
        .map(|(i, info)| {
            let shape: Vec<usize> = info
                .shape
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n,
                    Dim::Symbolic(s) => dims.iter().find(|(n, _)| n == s).map(|(_, v)| *v).unwrap_or(1),
                })
                .collect();
            (info.name.clone(), Tensor::deterministic(info.dtype, &shape, i as u64).unwrap())
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let threads = std::env::var("EDGEINFER_BENCH_THREADS").ok().and_then(|v| v.parse().ok());
    let options = SessionOptions { intra_threads: threads, ..Default::default() };
    let mut backends = vec![edgeinfer_onnx::backend(BackendKind::Tract, None).unwrap()];
    match edgeinfer_onnx::backend(BackendKind::Ort, None) {
        Ok(b) => backends.push(b),
        Err(e) => eprintln!("ONNX Runtime not available, benchmarking tract only: {e}"),
    }
    for (label, path, dims) in models() {
        let mut group = c.benchmark_group(label);
        group.sample_size(20);
        for backend in &backends {
            let session = backend.load(&ModelSource::File(path.clone()), &options).unwrap();
            let feed = inputs(session.as_ref(), &dims);
            group.bench_function(backend.kind().name(), |b| {
                b.iter_batched(|| feed.clone(), |f| session.run(f).unwrap(), criterion::BatchSize::LargeInput)
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
