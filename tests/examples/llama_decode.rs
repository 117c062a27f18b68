//! One LLaMA decode measurement in a fresh process, as `tests/benches/pipelines.rs` measures it
//! (greedy, 9 new tokens after a prompt of `context` ids, the model's own decode speed after
//! the first token), printed as one JSON line per context. `bench/llama_decode.sh` alternates it
//! with the Python baseline (`bench/llama_decode_python.py`) so both see the same machine state.
//!
//!     cargo run --release --example llama_decode -- <model dir> <tract|ort> <threads> <contexts,...> <runs>
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;

use edgeinfer_models::llama::{GenerateRequest, Llama, PromptInput};
use edgeinfer_onnx::{BackendKind, SessionOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: llama_decode <model dir> <tract|ort> <threads> <contexts,...> <runs>";
    assert_eq!(args.len(), 6, "{usage}");
    let dir = Path::new(&args[1]);
    let kind: BackendKind = args[2].parse().unwrap();
    let threads: usize = args[3].parse().expect(usage);
    let contexts: Vec<usize> = args[4].split(',').map(|c| c.parse().expect(usage)).collect();
    let runs: usize = args[5].parse().expect(usage);
    assert!(runs > 0, "runs must be at least 1");
    let backend = edgeinfer_onnx::backend(kind, None).unwrap();
    let options = SessionOptions { intra_threads: Some(threads), ..Default::default() };
    let model = Llama::load(dir, backend.as_ref(), &options).unwrap();
    for context in contexts {
        if context + 16 > model.layout().context_length {
            eprintln!("context {context} is beyond this model's {} positions; skipped", model.layout().context_length);
            continue;
        }
        let request = GenerateRequest {
            input: PromptInput::Ids(edgeinfer_tests::bench_prompt_ids(context)),
            max_new_tokens: Some(9),
            ignore_eos: true,
            ..Default::default()
        };
        let mut decode_ms = |_| {
            let usage = model.complete(&request).unwrap().usage;
            assert_eq!(usage.generated_tokens, 9);
            1e3 / usage.tokens_per_second
        };
        decode_ms(0); // warm-up
        let mut samples: Vec<f64> = (0..runs).map(&mut decode_ms).collect();
        samples.sort_by(f64::total_cmp);
        let mid = samples.len() / 2;
        let median =
            if samples.len().is_multiple_of(2) { (samples[mid - 1] + samples[mid]) / 2.0 } else { samples[mid] };
        println!(r#"{{"side": "{kind}", "context": {context}, "decode_ms": {median:.3}}}"#);
    }
}
