//! One LLaMA decode measurement in a fresh process, as `tests/benches/pipelines.rs` measures it
//! (greedy, 9 new tokens after a prompt of `context` ids, the model's own decode speed after
//! the first token), printed as one JSON line per context. `bench/llama_decode.sh` alternates it
//! with the Python baseline (`bench/llama_decode_python.py`) so both see the same machine state.
//!
//!     cargo run --release --example llama_decode -- <model dir> <tract|ort> <threads> <contexts,...> <runs> \
//!         [<execution providers, e.g. cuda,cpu> [<kv cache placement: device|host>]]
//!
//! `bench/gpu_llama.sh` uses the last two on a GPU: the same model with the KV cache kept in GPU
//! memory and in host memory. `VARIANT=q4` (any precision variant name) loads that variant of
//! the folder's graph (`bench/variants.sh`). `NEW_TOKENS=N` generates N tokens instead of 9 (a
//! profile of the decode steps rather than of the prefill). `ORT_CONFIG=key=value,...` adds ONNX
//! Runtime session config entries.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;

use edgeinfer_models::llama::{GenerateRequest, Llama, PromptInput};
use edgeinfer_onnx::{BackendKind, Placement, Retain, SessionOptions, Tensor};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: llama_decode <model dir> <tract|ort> <threads> <contexts,...> <runs> [<eps> [device|host]]";
    assert!((6..=8).contains(&args.len()), "{usage}");
    let dir = Path::new(&args[1]);
    let kind: BackendKind = args[2].parse().unwrap();
    let threads: usize = args[3].parse().expect(usage);
    let contexts: Vec<usize> = args[4].split(',').map(|c| c.parse().expect(usage)).collect();
    let runs: usize = args[5].parse().expect(usage);
    assert!(runs > 0, "runs must be at least 1");
    let backend = edgeinfer_onnx::backend(kind, None).unwrap();
    let mut options = SessionOptions { intra_threads: Some(threads), ..Default::default() };
    // ORT_CONFIG="key=value,...": ONNX Runtime session config entries (the daemon's `ort_config`).
    for entry in std::env::var("ORT_CONFIG").unwrap_or_default().split(',').filter(|e| !e.is_empty()) {
        let (key, value) = entry.split_once('=').expect("ORT_CONFIG: key=value,...");
        options.ort_config.insert(key.to_string(), value.to_string());
    }
    if let Some(eps) = args.get(6) {
        options.execution_providers = edgeinfer_onnx::parse_ep_list(eps).unwrap();
    }
    let placement = match args.get(7).map(String::as_str) {
        None | Some("device") => Placement::Device,
        Some("host") => Placement::Host,
        Some(other) => panic!("kv cache placement '{other}': {usage}"),
    };
    let variant = edgeinfer_tests::bench_variant();
    let new_tokens: usize = std::env::var("NEW_TOKENS").map_or(9, |n| n.parse().expect("NEW_TOKENS: a count"));
    let mut model = Llama::load_variant(dir, variant, backend.as_ref(), &options).unwrap();
    model.set_kv_placement(placement);
    let eps = model.session().providers().active.join(",");
    let kv_memory = kv_memory(&model, placement);
    for context in contexts {
        if context + 16 > model.layout().context_length {
            eprintln!("context {context} is beyond this model's {} positions; skipped", model.layout().context_length);
            continue;
        }
        let request = GenerateRequest {
            input: PromptInput::Ids(edgeinfer_tests::bench_prompt_ids(context)),
            max_new_tokens: Some(new_tokens),
            ignore_eos: true,
            ..Default::default()
        };
        let mut decode_ms = |_| {
            let usage = model.complete(&request).unwrap().usage;
            assert_eq!(usage.generated_tokens, new_tokens);
            1e3 / usage.tokens_per_second
        };
        decode_ms(0); // warm-up
        let mut samples: Vec<f64> = (0..runs).map(&mut decode_ms).collect();
        samples.sort_by(f64::total_cmp);
        let mid = samples.len() / 2;
        let median =
            if samples.len().is_multiple_of(2) { (samples[mid - 1] + samples[mid]) / 2.0 } else { samples[mid] };
        println!(
            r#"{{"side": "{kind}", "variant": "{variant}", "providers": "{eps}", "kv": "{placement:?}", "kv_memory": "{kv_memory}", "context": {context}, "decode_ms": {median:.3}}}"#
        );
    }
}

/// Where a one-token prefill leaves the KV cache with this placement, as ONNX Runtime names the
/// memory (`Cpu`, `Cuda`): the proof that `device` really keeps it on the GPU.
fn kv_memory(model: &Llama, placement: Placement) -> String {
    let layout = model.layout();
    let mut inputs = vec![
        ("input_ids".to_string(), Tensor::from_shape_vec(&[1, 1], vec![1i64]).unwrap()),
        ("attention_mask".to_string(), Tensor::from_shape_vec(&[1, 1], vec![1i64]).unwrap()),
    ];
    if layout.has_position_ids {
        inputs.push(("position_ids".to_string(), Tensor::from_shape_vec(&[1, 1], vec![0i64]).unwrap()));
    }
    if let Some(name) = &layout.use_cache_branch {
        inputs.push((name.clone(), Tensor::from_shape_vec(&[1], vec![false]).unwrap()));
    }
    let empty = [1, layout.kv_heads, 0, layout.head_dim];
    let past = (0..layout.layers)
        .flat_map(|i| [layout.past_key(i), layout.past_value(i)])
        .map(|name| (name, Tensor::zeros(layout.kv_dtype, &empty).unwrap().into()))
        .collect();
    let retain = [Retain { name: layout.present_key(0), placement }];
    let (_, kept) = model.session().run_retaining(inputs, past, &retain).unwrap();
    kept[0].memory_device()
}
