//! Pipeline benchmarks, per family and backend: what a request costs end to end in-process
//! (pre-processing, graph calls, post-processing), as the daemon's workers run it.
//!
//! - SAM: the encoder (image → embedding), and the decoder per prompt on a cached embedding.
//! - DINOv2: one image, and a batch of four in one graph call (images/s = 4 / time).
//! - LLaMA: prefill (time to first token) at 16/256/1024 prompt tokens, and one decode step with
//!   the KV cache at the same contexts (flat across contexts = the cache works).
//!
//! Models: `EDGEINFER_BENCH_DIR/{sam,dinov2,llama}` (real-size, random weights: made by
//! `bench/pipelines.sh`), else the bundled tiny fixtures. `EDGEINFER_BENCH_THREADS` sets the
//! intra-op threads. ONNX Runtime is found as usual (ORT_DYLIB_PATH...); without it only tract runs.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use edgeinfer_models::dinov2::{Dinov2, EmbedOptions};
use edgeinfer_models::image::{ImageInput, ImageLimits, RgbImage, decode};
use edgeinfer_models::llama::{GenerateRequest, Llama, PromptInput};
use edgeinfer_models::sam::{Point, Prompt, Sam, SegmentOptions};
use edgeinfer_onnx::{Backend, BackendKind, SessionOptions};

fn model_dir(family: &str) -> PathBuf {
    match std::env::var_os("EDGEINFER_BENCH_DIR") {
        Some(dir) => PathBuf::from(dir).join(family),
        None => edgeinfer_tests::fixtures().join(family),
    }
}

fn photo(name: &str) -> RgbImage {
    let bytes = std::fs::read(edgeinfer_tests::fixtures().join("photos").join(name)).unwrap();
    decode(ImageInput::Encoded(&bytes), &ImageLimits::default()).unwrap()
}

fn backends() -> Vec<Arc<dyn Backend>> {
    let mut v = vec![edgeinfer_onnx::backend(BackendKind::Tract, None).unwrap()];
    match edgeinfer_onnx::backend(BackendKind::Ort, None) {
        Ok(b) => v.push(b),
        Err(e) => eprintln!("ONNX Runtime not available, benchmarking tract only: {e}"),
    }
    if let Ok(only) = std::env::var("EDGEINFER_BENCH_BACKENDS") {
        v.retain(|b| only.split(',').any(|n| n == b.kind().name()));
    }
    v
}

fn options() -> SessionOptions {
    let threads = std::env::var("EDGEINFER_BENCH_THREADS").ok().and_then(|v| v.parse().ok());
    SessionOptions { intra_threads: threads, ..Default::default() }
}

fn sam(c: &mut Criterion) {
    let image = photo("chelsea.png");
    let prompt = Prompt {
        points: vec![Point { x: image.width as f32 / 2.0, y: image.height as f32 / 2.0, positive: true }],
        ..Default::default()
    };
    let mut group = c.benchmark_group("sam");
    group.sample_size(10).warm_up_time(Duration::from_millis(500));
    for backend in backends() {
        let model = Sam::load(&model_dir("sam"), backend.as_ref(), &options()).unwrap();
        let name = backend.kind().name();
        group.bench_function(format!("encoder/{name}"), |b| b.iter(|| model.embed(&image).unwrap()));
        let embedding = model.embed(&image).unwrap();
        group.bench_function(format!("decoder per prompt/{name}"), |b| {
            b.iter(|| model.segment(&embedding, &prompt, &SegmentOptions::default()).unwrap())
        });
        // The same decoder exported without its in-graph upsampling: the pipeline upsamples the
        // masks it returns on the host (same embedding; the model folder's other files reused).
        if model_dir("sam").join("decoder_lowres.onnx").is_file() {
            let lowres = edgeinfer_tests::sam_folder_with_decoder(&model_dir("sam"), "decoder_lowres.onnx");
            let model = Sam::load(lowres.path(), backend.as_ref(), &options()).unwrap();
            group.bench_function(format!("decoder per prompt, low-res graph/{name}"), |b| {
                b.iter(|| model.segment(&embedding, &prompt, &SegmentOptions::default()).unwrap())
            });
        }
    }
    group.finish();
}

fn dinov2(c: &mut Criterion) {
    let images = [photo("chelsea.png"), photo("coffee.png")];
    let batch: Vec<RgbImage> = images.iter().cycle().take(4).cloned().collect();
    let mut group = c.benchmark_group("dinov2");
    group.sample_size(10).warm_up_time(Duration::from_millis(500));
    for backend in backends() {
        let mut model = Dinov2::load(&model_dir("dinov2"), backend.as_ref(), &options()).unwrap();
        model.set_max_batch(4);
        let name = backend.kind().name();
        let opts = EmbedOptions::default();
        group.bench_function(format!("embed 1 image/{name}"), |b| b.iter(|| model.embed(&images[..1], &opts).unwrap()));
        group.bench_function(format!("embed batch of 4/{name}"), |b| b.iter(|| model.embed(&batch, &opts).unwrap()));
    }
    group.finish();
}

fn llama(c: &mut Criterion) {
    let mut group = c.benchmark_group("llama");
    group.sample_size(10).warm_up_time(Duration::from_millis(500));
    for backend in backends() {
        let model = Llama::load(&model_dir("llama"), backend.as_ref(), &options()).unwrap();
        let name = backend.kind().name();
        let max_context = model.layout().context_length;
        for context in [16usize, 256, 1024] {
            if context + 16 > max_context {
                eprintln!("llama: context {context} is beyond this model's {max_context} positions; skipped");
                continue;
            }
            let ids = edgeinfer_tests::bench_prompt_ids(context);
            group.bench_function(format!("prefill {context} tokens/{name}"), |b| {
                b.iter(|| model.prefill_logits(&ids).unwrap())
            });
            // One decode step at this context: generate 9 tokens (greedy, EOS ignored); the
            // model's own usage counters give the decode speed after the first token.
            let request = GenerateRequest {
                input: PromptInput::Ids(ids.clone()),
                max_new_tokens: Some(9),
                ignore_eos: true,
                ..Default::default()
            };
            group.bench_function(format!("decode step at {context}/{name}"), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            let usage = model.complete(&request).unwrap().usage;
                            assert_eq!(usage.generated_tokens, 9);
                            Duration::from_secs_f64(1.0 / usage.tokens_per_second)
                        })
                        .sum()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, sam, dinov2, llama);
criterion_main!(benches);
