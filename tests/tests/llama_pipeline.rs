//! The LLaMA pipeline against transformers: chat template strings equal `apply_chat_template`,
//! tokenisation equals the HF tokenizer, greedy generation equals `generate(do_sample=False)`
//! token for token, on both backends, with the KV cache fed back one token per step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use edgeinfer_models::llama::{
    FinishReason, GenerateRequest, Llama, Message, PromptInput, SamplingParams, TextStreamer, TokenEvent,
};
use edgeinfer_onnx::{SessionOptions, Tensor};
use edgeinfer_tests::{backends, fixtures};
use serde_json::Value;

fn reference() -> Value {
    reference_of("llama")
}

/// A fixture folder's golden/reference.json (transformers' chat strings and greedy generations).
fn reference_of(folder: &str) -> Value {
    let path = fixtures().join(folder).join("golden/reference.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn tract_model() -> Llama {
    let tract = edgeinfer_onnx::backend(edgeinfer_onnx::BackendKind::Tract, None).unwrap();
    Llama::load(&fixtures().join("llama"), tract.as_ref(), &SessionOptions::default()).unwrap()
}

fn text_request(prompt: &str, max_new: usize) -> GenerateRequest {
    GenerateRequest {
        input: PromptInput::Text(prompt.into()),
        max_new_tokens: Some(max_new),
        add_special_tokens: Some(false),
        ..Default::default()
    }
}

#[test]
fn chat_template_output_equals_transformers() {
    let model = tract_model();
    for case in reference()["chat"].as_array().unwrap() {
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let ours = model.tokenizer().apply_chat_template(&messages, true).unwrap();
        assert_eq!(ours, case["text"].as_str().unwrap());
    }
}

#[test]
fn greedy_generation_equals_hf_generate_token_for_token_on_both_backends() {
    // Both layouts export_llama.py writes: the Optimum one (llama/) and the GenAI one (llama-gqa/:
    // GroupQueryAttention, genai_config.json), whose cache ONNX Runtime updates in place.
    for folder in ["llama", "llama-gqa"] {
        greedy_generation_equals_hf_generate(folder);
    }
}

fn greedy_generation_equals_hf_generate(folder: &str) {
    let reference = reference_of(folder);
    for backend in backends() {
        let model = Llama::load(&fixtures().join(folder), backend.as_ref(), &SessionOptions::default()).unwrap();
        let in_place = folder == "llama-gqa" && backend.kind() == edgeinfer_onnx::BackendKind::Ort;
        assert_eq!(model.kv_in_place(), in_place, "{} {folder}: KV cache in place", backend.kind());
        for case in reference["generate"].as_array().unwrap() {
            let prompt = case["prompt"].as_str().unwrap();
            let want_prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
            let want: Vec<u32> = serde_json::from_value(case["greedy_new_ids"].clone()).unwrap();
            assert_eq!(model.tokenizer().encode(prompt, false).unwrap(), want_prompt, "tokenisation");
            let runs_before = model.session().stats().runs;
            let done = model.complete(&text_request(prompt, want.len())).unwrap();
            println!(
                "{}: {} tokens, finish {:?}, {:?}",
                backend.kind(),
                done.token_ids.len(),
                done.finish_reason,
                done.usage
            );
            assert_eq!(done.token_ids, want, "{} {folder}: greedy ids for {prompt:?}", backend.kind());
            assert_eq!(done.text, case["greedy_text"].as_str().unwrap());
            assert_eq!(done.finish_reason, FinishReason::Length);
            assert_eq!(done.usage.prompt_tokens, want_prompt.len());
            assert_eq!(done.usage.generated_tokens, want.len());
            // One prefill plus one single-token step per further token: the prefix is never re-run.
            assert_eq!(model.session().stats().runs - runs_before, want.len() as u64);
        }
        if backend.kind() == edgeinfer_onnx::BackendKind::Tract {
            assert_eq!(model.session().stats().plans_built, 1, "{folder}: one symbolic plan for every step");
        }
    }
}

#[test]
fn prefill_logits_match_pytorch() {
    let dir = fixtures().join("llama/golden");
    let ids = Tensor::read_npy(&dir.join("prefill.in.input_ids.npy")).unwrap();
    let ids: Vec<u32> = ids.as_i64().unwrap().iter().map(|&v| v as u32).collect();
    let golden = Tensor::read_npy(&dir.join("prefill.out.logits.npy")).unwrap().into_f32().unwrap();
    let last: Vec<f32> = golden.index_axis(ndarray::Axis(1), ids.len() - 1).iter().copied().collect();
    for backend in backends() {
        let model = Llama::load(&fixtures().join("llama"), backend.as_ref(), &SessionOptions::default()).unwrap();
        let ours = model.prefill_logits(&ids).unwrap();
        let worst = ours.iter().zip(&last).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        println!("{}: prefill logits max abs err {worst:.2e}", backend.kind());
        assert!(worst < 1e-3, "{worst}");
    }
}

#[test]
fn streamed_deltas_concatenate_to_the_text_and_never_split_a_character() {
    let model = tract_model();
    let text = "東京 🤖 café naïve Zürich";
    let ids = model.tokenizer().encode(text, false).unwrap();
    let mut streamer = TextStreamer::new(true);
    let mut out = String::new();
    let mut held = 0;
    for id in ids {
        let delta = streamer.push(model.tokenizer(), id).unwrap();
        assert!(!delta.contains('\u{FFFD}'), "delta split a character: {delta:?}");
        if delta.is_empty() {
            held += 1;
        }
        out.push_str(&delta);
    }
    assert_eq!(out, text);
    assert!(held > 0, "the byte-level tokenizer should split some multi-byte characters across tokens");
    // And through a real generation: deltas add up to the final text.
    let mut joined = String::new();
    let mut seqs = Vec::new();
    let mut done = None;
    for event in model.generate(&text_request("Once upon a time", 30), None).unwrap() {
        match event.unwrap() {
            TokenEvent::Delta { seq, text, .. } => {
                seqs.push(seq);
                joined.push_str(&text);
            }
            TokenEvent::Done(c) => done = Some(c),
        }
    }
    let done = done.unwrap();
    assert_eq!(joined, done.text);
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "sequence numbers in order");
}

#[test]
fn stop_strings_end_generation_and_are_never_streamed() {
    let model = tract_model();
    let full = model.complete(&text_request("Once upon a time, a little robot", 40)).unwrap();
    // A stop string taken from the middle of the greedy output.
    let start = full.text.char_indices().nth(full.text.chars().count() / 2).unwrap().0;
    let stop: String = full.text[start..].chars().take(3).collect();
    let mut request = text_request("Once upon a time, a little robot", 40);
    request.stop = vec![stop.clone(), "never appears \u{1F916}\u{1F916}".into()];
    let mut streamed = String::new();
    let mut done = None;
    for event in model.generate(&request, None).unwrap() {
        match event.unwrap() {
            TokenEvent::Delta { text, .. } => streamed.push_str(&text),
            TokenEvent::Done(c) => done = Some(c),
        }
    }
    let done = done.unwrap();
    assert_eq!(done.finish_reason, FinishReason::Stop);
    let cut = full.text.find(&stop).unwrap();
    assert_eq!(done.text, full.text[..cut]);
    assert_eq!(streamed, done.text);
    assert!(!streamed.contains(&stop));
}

#[test]
fn eos_ends_generation_unless_ignored() {
    let model = tract_model();
    let eos = model.eos_token_ids()[0];
    // Force EOS as the only sensible continuation with a penalty on everything else: instead,
    // check the mechanics directly with ignore_eos off/on on a seeded sampled run that hits it.
    let mut hit = None;
    for seed in 0..200 {
        let mut r = text_request("Hello!", 60);
        r.sampling = SamplingParams { temperature: Some(3.0), seed: Some(seed), ..Default::default() };
        let c = model.complete(&r).unwrap();
        if c.finish_reason == FinishReason::Eos {
            hit = Some((seed, c));
            break;
        }
    }
    let (seed, c) = hit.expect("some seed samples EOS at temperature 3");
    assert_eq!(*c.token_ids.last().unwrap(), eos);
    let mut r = text_request("Hello!", 60);
    r.sampling = SamplingParams { temperature: Some(3.0), seed: Some(seed), ..Default::default() };
    r.ignore_eos = true;
    let c2 = model.complete(&r).unwrap();
    assert_eq!(c2.finish_reason, FinishReason::Length);
    assert_eq!(c2.token_ids.len(), 60);
    assert_eq!(&c2.token_ids[..c.token_ids.len()], &c.token_ids[..], "same seed, same draws up to the EOS");
}

#[test]
fn seeded_sampling_is_reproducible_and_parameters_apply() {
    let model = tract_model();
    let run = |seed: u64, top_k: usize| {
        let mut r = text_request("The robot arm", 20);
        r.sampling = SamplingParams {
            temperature: Some(0.9),
            top_k: Some(top_k),
            top_p: Some(0.95),
            repetition_penalty: Some(1.3),
            seed: Some(seed),
        };
        model.complete(&r).unwrap().token_ids
    };
    assert_eq!(run(42, 0), run(42, 0));
    assert_ne!(run(42, 0), run(43, 0));
    // top_k = 1 is greedy whatever the seed (repetition penalty applies to both).
    assert_eq!(run(1, 1), run(2, 1));
}

#[test]
fn cancellation_stops_between_tokens() {
    let model = tract_model();
    let cancel = Arc::new(AtomicBool::new(false));
    let mut stream = model.generate(&text_request("Once upon a time", 200), Some(cancel.clone())).unwrap();
    let first = stream.next().unwrap().unwrap();
    assert!(matches!(first, TokenEvent::Delta { .. }));
    cancel.store(true, Ordering::Relaxed);
    let mut last = None;
    for e in stream {
        last = Some(e.unwrap());
    }
    let Some(TokenEvent::Done(c)) = last else { panic!("no Done event") };
    assert_eq!(c.finish_reason, FinishReason::Cancelled);
    assert!(c.token_ids.len() < 200);
}

#[test]
fn bad_prompts_are_typed_errors_naming_the_limits() {
    let mut model = tract_model();
    let long = "robot ".repeat(400);
    let err = model.generate(&text_request(&long, 10), None).err().unwrap();
    assert!(err.is_too_large(), "{err}");
    assert!(err.to_string().contains("the model's context is 256 tokens"), "{err}");
    model.set_max_prompt_tokens(Some(5));
    let err = model.generate(&text_request("The quick brown fox jumps over the lazy dog", 10), None).err().unwrap();
    assert!(err.to_string().contains("the limit is 5"), "{err}");
    model.set_max_prompt_tokens(None);
    let ids = GenerateRequest { input: PromptInput::Ids(vec![5, 99_999]), ..Default::default() };
    let err = model.generate(&ids, None).err().unwrap();
    assert!(err.is_input_error() && err.to_string().contains("token id 99999 is outside the vocabulary"), "{err}");
    let chat = GenerateRequest { input: PromptInput::Chat(vec![]), ..Default::default() };
    assert!(model.generate(&chat, None).err().unwrap().to_string().contains("no messages"));
    let mut bad = text_request("hi", 5);
    bad.sampling.top_p = Some(1.5);
    assert!(model.generate(&bad, None).err().unwrap().to_string().contains("top_p"));
    bad = text_request("hi", 5);
    bad.stop = vec![String::new()];
    assert!(model.generate(&bad, None).err().unwrap().is_input_error());
    // An empty prompt starts from BOS, as transformers' generate() does.
    let done = model.complete(&text_request("", 5)).unwrap();
    assert_eq!(done.usage.prompt_tokens, 1);
    assert_eq!(done.token_ids.len(), 5);
}

#[test]
fn onnxruntime_genai_configs_name_the_file_and_limits() {
    // The same graph laid out as onnxruntime-genai ships models: genai_config.json names the
    // decoder file, the KV input/output templates, the context length and EOS ids.
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("llama");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::copy(src.join("model.onnx"), dir.path().join("decoder.onnx")).unwrap();
    let genai = serde_json::json!({
        "model": {
            "bos_token_id": 1, "eos_token_id": [2, 0], "context_length": 64,
            "decoder": {
                "filename": "decoder.onnx", "head_size": 16, "num_key_value_heads": 2, "num_hidden_layers": 2,
                "inputs": {"past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
                "outputs": {"present_key_names": "present.%d.key", "present_value_names": "present.%d.value"}
            }
        }
    });
    std::fs::write(dir.path().join("genai_config.json"), genai.to_string()).unwrap();
    let tract = edgeinfer_onnx::backend(edgeinfer_onnx::BackendKind::Tract, None).unwrap();
    let model = Llama::load(dir.path(), tract.as_ref(), &SessionOptions::default()).unwrap();
    let layout = model.layout();
    assert_eq!((layout.layers, layout.kv_heads, layout.head_dim, layout.context_length), (2, 2, 16, 64));
    assert_eq!(model.eos_token_ids(), &[0, 2]);
    // The context limit comes from genai_config: a long generation stops there.
    let mut long = text_request("Once upon a time", 200);
    long.ignore_eos = true;
    let done = model.complete(&long).unwrap();
    assert_eq!(done.finish_reason, FinishReason::ContextLength);
    assert_eq!(done.usage.prompt_tokens + done.usage.generated_tokens, 64);
    // Without a graph that has the named inputs, loading fails clearly.
    std::fs::write(
        dir.path().join("genai_config.json"),
        genai.to_string().replace("past_key_values.%d.key", "past.%d.k"),
    )
    .unwrap();
    let err = Llama::load(dir.path(), tract.as_ref(), &SessionOptions::default()).err().unwrap();
    assert!(err.to_string().contains("'past.{}.k' inputs"), "{err}");
}

#[test]
fn every_precision_variant_generates_what_onnxruntime_generates_on_both_backends() {
    for folder in ["llama", "llama-gqa"] {
        precision_variants_generate_what_onnxruntime_generates(folder);
    }
}

fn precision_variants_generate_what_onnxruntime_generates(folder: &str) {
    use edgeinfer_models::layout::Variant;
    let dir = fixtures().join(folder);
    let fidelity: Value = serde_json::from_slice(&std::fs::read(dir.join("fidelity.json")).unwrap()).unwrap();
    for backend in backends() {
        for (name, report) in fidelity.as_object().unwrap() {
            let variant: Variant = name.parse().unwrap();
            let model = Llama::load_variant(&dir, variant, backend.as_ref(), &SessionOptions::default())
                .unwrap_or_else(|e| panic!("{} {folder} {variant}: {e}", backend.kind()));
            for case in report["greedy"].as_array().unwrap() {
                let prompt = case["prompt"].as_str().unwrap();
                let want: Vec<u32> = serde_json::from_value(case["greedy_new_ids"].clone()).unwrap();
                let margins: Vec<f32> = serde_json::from_value(case["top1_margins"].clone()).unwrap();
                let prompt_ids = model.tokenizer().encode(prompt, false).unwrap();
                // Where ONNX Runtime's runner-up is within 0.1 of its best logit (more than the
                // two backends' logits differ on these graphs), either choice is right. Every
                // other step must choose the same token: teacher-forced on ORT's continuation, so
                // one near-tie does not make the rest of the text differ ...
                let mut decided = 0;
                let steps = model.step_logits(&prompt_ids, &want).unwrap();
                for (step, ((&token, &margin), logits)) in want.iter().zip(&margins).zip(&steps).enumerate() {
                    if margin < 0.1 {
                        continue;
                    }
                    let ours = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32);
                    assert_eq!(ours, Some(token), "{} {folder} {variant} step {step} of {prompt:?}", backend.kind());
                    decided += 1;
                }
                // At least half the steps decide, so that the check cannot pass on ties alone (the
                // bnb4 variant of the tiny random-weight fixture has 13 near-ties in one prompt's 40).
                assert!(decided * 2 >= want.len(), "{folder} {variant}: only {decided} decided steps");
                // ... and generation with the KV cache gives the same text up to the first tie.
                let free = margins.iter().position(|&m| m < 0.1).unwrap_or(margins.len());
                let done = model.complete(&text_request(prompt, free.max(1))).unwrap();
                println!(
                    "{} {folder} {variant}: {decided}/{} steps agree, first {free} generated",
                    backend.kind(),
                    want.len()
                );
                assert_eq!(
                    done.token_ids[..free],
                    want[..free],
                    "{} {folder} {variant}: greedy ids for {prompt:?}",
                    backend.kind()
                );
            }
        }
    }
}

#[test]
fn onnxruntime_genai_builder_folders_generate_what_onnxruntime_genai_generates() {
    // models/fixtures/llama-genai: the fixture's weights written by onnxruntime-genai's own model
    // builder (fused norms, packed-QKV GroupQueryAttention, MatMulNBits in int4), with the greedy
    // ids onnxruntime-genai 0.18 generates from them (its fp32 ids equal transformers' too).
    let genai: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("llama-genai/genai.json")).unwrap()).unwrap();
    let prompts = reference();
    for backend in backends() {
        let tract = backend.kind() == edgeinfer_onnx::BackendKind::Tract;
        for (precision, cases) in genai["folders"].as_object().unwrap() {
            let dir = fixtures().join("llama-genai").join(precision);
            let model = Llama::load(&dir, backend.as_ref(), &SessionOptions::default())
                .unwrap_or_else(|e| panic!("{} {precision}: {e}", backend.kind()));
            // genai_config.json's past_present_share_buffer: on ONNX Runtime one KV buffer per
            // layer, updated in place as onnxruntime-genai does; tract (GroupQueryAttention
            // written out in standard ops, see tract_gqa) takes a cache one position longer per step.
            assert_eq!(model.kv_in_place(), !tract, "{} {precision}: KV cache in place", backend.kind());
            for (case, prompt) in cases.as_array().unwrap().iter().zip(prompts["generate"].as_array().unwrap()) {
                let want: Vec<u32> = serde_json::from_value(case["greedy_new_ids"].clone()).unwrap();
                let text = prompt["prompt"].as_str().unwrap();
                let ids: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
                assert_eq!(model.tokenizer().encode(text, false).unwrap(), ids, "tokenisation");
                let built = model.session().stats().bindings_built;
                let done = model.complete(&text_request(text, want.len())).unwrap();
                assert_eq!(done.token_ids, want, "{} {precision}: greedy ids for {text:?}", backend.kind());
                if !tract {
                    // One binding for the whole generation: each step rebinds only ids and mask (the
                    // cache, dropped at the end, releases it; the next generation binds its own).
                    assert_eq!(model.session().stats().bindings_built, built + 1, "{precision}: bindings for {text:?}");
                }
            }
            if tract {
                // The prompt and every decode step run one plan made for all lengths.
                assert_eq!(model.session().stats().plans_built, 1, "{precision}: one symbolic plan");
            }
        }
    }
}

#[test]
fn tract_computes_onnxruntime_genai_folders_logits_as_onnxruntime_does() {
    // GroupQueryAttention (packed QKV, rotary inside the op) written out for tract must give ONNX
    // Runtime's own logits: the prompt's and each decode step's against a growing cache.
    let backends = backends();
    let [ort, tract] = [edgeinfer_onnx::BackendKind::Ort, edgeinfer_onnx::BackendKind::Tract]
        .map(|kind| backends.iter().find(|b| b.kind() == kind));
    let (Some(ort), Some(tract)) = (ort, tract) else {
        println!("needs both backends");
        return;
    };
    // int4 included: its MatMulNBits ask for int8 activations (accuracy_level 4), which tract
    // computes as ONNX Runtime does, and its 4-bit embedding rows keep the file's f32 scales.
    for precision in ["fp32", "int4"] {
        let dir = fixtures().join("llama-genai").join(precision);
        let [on_ort, on_tract] =
            [ort, tract].map(|backend| Llama::load(&dir, backend.as_ref(), &SessionOptions::default()).unwrap());
        let prompt = on_ort.tokenizer().encode("The robot picked up the", false).unwrap();
        let continuation = [17, 250, 3, 99, 42, 7];
        let want = on_ort.step_logits(&prompt, &continuation).unwrap();
        let got = on_tract.step_logits(&prompt, &continuation).unwrap();
        assert_eq!(got.len(), want.len());
        for (step, (got, want)) in got.iter().zip(&want).enumerate() {
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            println!("{precision} step {step}: max abs diff {worst:.2e} (logits up to {scale:.2})");
            assert!(worst <= 1e-4 * scale.max(1.0), "{precision} step {step}: {worst} against ONNX Runtime");
        }
    }
}
