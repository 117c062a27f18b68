//! Small LLaMA-family LLMs (TinyLlama, SmolLM, Llama 3.2, llama2.c tinyllamas... any
//! Optimum/onnx-community export with a KV cache): prompt → tokens → prefill → one decode step
//! per token with the KV cache fed back (the prefix is never re-run) → streamed text.
//!
//! [`Llama::generate`] returns a [`Generator`], an iterator of [`TokenEvent`]s: text deltas that
//! never split a UTF-8 character, then one `Done` with the full text, the token ids, why it
//! stopped and the usage counters.

pub mod config;
pub mod sampler;
pub mod tokenizer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use edgeinfer_onnx::{
    Backend, InPlace, ModelSource, Placement, Retain, Retained, Session, SessionOptions, Tensor, conform_inputs,
};
use serde::{Deserialize, Serialize};

pub use config::{LlamaLayout, ModelDir};
pub use sampler::{Sampler, SamplingParams};
pub use tokenizer::{Message, TextStreamer, Tokenizer};

use crate::error::{ModelError, Result};

/// What to generate from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptInput {
    /// Raw text (tokenised with the tokenizer's special tokens unless told otherwise).
    Text(String),
    /// A conversation, rendered with the model's chat template.
    Chat(Vec<Message>),
    /// Token ids as they are.
    Ids(Vec<u32>),
}

/// A generation request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerateRequest {
    /// The prompt.
    pub input: PromptInput,
    /// Most new tokens (default: the model's generation config, else 256).
    pub max_new_tokens: Option<usize>,
    /// Sampling; unset fields take the model's defaults.
    pub sampling: SamplingParams,
    /// Stop as soon as the output contains one of these (it is not included).
    pub stop: Vec<String>,
    /// Add the tokenizer's special tokens to a `Text` prompt (default true, as transformers).
    pub add_special_tokens: Option<bool>,
    /// Keep generating past EOS tokens.
    pub ignore_eos: bool,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        GenerateRequest {
            input: PromptInput::Text(String::new()),
            max_new_tokens: None,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            add_special_tokens: None,
            ignore_eos: false,
        }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token.
    Eos,
    /// A stop string.
    Stop,
    /// `max_new_tokens` reached.
    Length,
    /// The model's context is full.
    ContextLength,
    /// Cancelled by the caller.
    Cancelled,
}

/// Counters of one generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated (EOS included).
    pub generated_tokens: usize,
    /// From the start to the first generated token (prefill included).
    pub time_to_first_token_ms: f64,
    /// Decode speed after the first token.
    pub tokens_per_second: f64,
    /// Whole generation.
    pub total_ms: f64,
}

/// The end of a generation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// The generated text (special tokens and stop string left out).
    pub text: String,
    /// The generated token ids (EOS included when it ended the generation).
    pub token_ids: Vec<u32>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Counters.
    pub usage: Usage,
}

/// An event of a generation stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TokenEvent {
    /// New text.
    Delta {
        /// 0, 1, 2... in order.
        seq: u64,
        /// The text (complete UTF-8 characters).
        text: String,
        /// The tokens that produced it.
        token_ids: Vec<u32>,
    },
    /// The last event.
    Done(Completion),
}

/// A loaded LLaMA-family model with its tokenizer.
pub struct Llama {
    session: Arc<dyn Session>,
    layout: LlamaLayout,
    /// `logits`, then `present.{i}.key`, `present.{i}.value` for every layer: the outputs left
    /// in the backend's memory (logits read in place, the rest fed back as the next step's past).
    retained_outputs: Vec<Retain>,
    /// The KV cache is one buffer per layer of the generation's whole length, updated in place
    /// ([`LlamaLayout::shares_kv_buffer`] on a CPU ONNX Runtime session), rather than a cache
    /// one position longer after every step.
    shared_kv: bool,
    tokenizer: Tokenizer,
    model_dir: ModelDir,
    eos: Vec<u32>,
    bos: Option<u32>,
    max_prompt_tokens: Option<usize>,
}

impl Llama {
    /// Loads a model directory (configs, tokenizer, ONNX graph).
    pub fn load(dir: &Path, backend: &dyn Backend, options: &SessionOptions) -> Result<Llama> {
        Llama::load_variant(dir, crate::layout::Variant::Fp32, backend, options)
    }

    /// [`Llama::load`] of a precision variant (see [`ModelDir::open_variant`]).
    pub fn load_variant(
        dir: &Path,
        variant: crate::layout::Variant,
        backend: &dyn Backend,
        options: &SessionOptions,
    ) -> Result<Llama> {
        let model_dir = ModelDir::open_variant(dir, variant)?;
        let tokenizer = Tokenizer::load(dir)?;
        // Generation runs one sequence at a time. tract plans for a batch of one (the layouts
        // name the axis `batch_size`), which takes the batch axis out of the attention matmuls
        // and with it a reshape that copied every layer's cache in every step (1.8 of 44 ms of
        // a LLaMA-135M q4 step at 256 positions). A value the caller set is kept.
        let mut options = options.clone();
        if backend.kind() == edgeinfer_onnx::BackendKind::Tract {
            options.dims.entry("batch_size".to_string()).or_insert(1);
        }
        let session: Arc<dyn Session> = Arc::from(backend.load(&ModelSource::File(model_dir.onnx.clone()), &options)?);
        let layout = model_dir.layout(session.as_ref())?;
        let mut eos = model_dir.eos_token_ids();
        if let Some(id) = tokenizer.eos_token().and_then(|t| tokenizer.token_to_id(t))
            && !eos.contains(&id)
        {
            eos.push(id);
        }
        let vocab = layout.vocab_size.unwrap_or_else(|| tokenizer.vocab_size());
        if let Some(bad) = eos.iter().find(|&&id| id as usize >= vocab) {
            return Err(ModelError::Config(format!("EOS token id {bad} is outside the vocabulary of {vocab}")));
        }
        let bos = model_dir.bos_token_id();
        // The logits are read in place on the host; the KV cache stays where the graph runs (GPU
        // memory on a CUDA/TensorRT session), so it never crosses the bus between steps.
        let retained_outputs = std::iter::once(Retain::host("logits"))
            .chain(
                (0..layout.layers).flat_map(|i| [layout.present_key(i), layout.present_value(i)]).map(Retain::device),
            )
            .collect();
        // In place only where both names can be bound to one host buffer: ONNX Runtime on the
        // CPU. (A GPU session would need the buffer in device memory from the start.)
        let shared_kv = layout.shares_kv_buffer
            && session.backend() == edgeinfer_onnx::BackendKind::Ort
            && session.providers().active.iter().all(|p| p == "CPUExecutionProvider");
        Ok(Llama {
            session,
            layout,
            retained_outputs,
            shared_kv,
            tokenizer,
            model_dir,
            eos,
            bos,
            max_prompt_tokens: None,
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Graph wiring (layers, KV heads, context length...).
    pub fn layout(&self) -> &LlamaLayout {
        &self.layout
    }

    /// Whether the KV cache is one buffer per layer updated in place (an ORT-GenAI graph with
    /// `past_present_share_buffer`, on ONNX Runtime's CPU provider).
    pub fn kv_in_place(&self) -> bool {
        self.shared_kv
    }

    /// The session.
    pub fn session(&self) -> &Arc<dyn Session> {
        &self.session
    }

    /// Tokens that end a generation.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos
    }

    /// Refuse prompts longer than this (in addition to the context length).
    pub fn set_max_prompt_tokens(&mut self, limit: Option<usize>) {
        self.max_prompt_tokens = limit;
    }

    /// Where the KV cache is kept between steps on a GPU session: [`Placement::Device`] (the
    /// default: it never leaves GPU memory) or [`Placement::Host`] (GPU memory is spared, at the
    /// cost of copying the whole cache to the GPU and back every step). On a CPU session both
    /// are host memory.
    pub fn set_kv_placement(&mut self, placement: Placement) {
        for r in self.retained_outputs.iter_mut().skip(1) {
            r.placement = placement;
        }
    }

    fn vocab_size(&self) -> usize {
        self.layout.vocab_size.unwrap_or_else(|| self.tokenizer.vocab_size())
    }

    /// Token ids of a prompt, validated.
    pub fn prompt_ids(&self, input: &PromptInput, add_special_tokens: Option<bool>) -> Result<Vec<u32>> {
        let ids = match input {
            PromptInput::Text(text) => self.tokenizer.encode(text, add_special_tokens.unwrap_or(true))?,
            PromptInput::Chat(messages) => {
                if messages.is_empty() {
                    return Err(ModelError::BadInput("the conversation has no messages".into()));
                }
                let text = self.tokenizer.apply_chat_template(messages, true)?;
                // The template writes the special tokens itself.
                self.tokenizer.encode(&text, add_special_tokens.unwrap_or(false))?
            }
            PromptInput::Ids(ids) => {
                let vocab = self.vocab_size();
                if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                    return Err(ModelError::BadInput(format!("token id {bad} is outside the vocabulary (0..{vocab})")));
                }
                ids.clone()
            }
        };
        if ids.is_empty() {
            // As transformers' generate(): start from BOS when there is no prompt.
            return match self.bos {
                Some(bos) => Ok(vec![bos]),
                None => Err(ModelError::BadInput(
                    "the prompt is empty and this model has no BOS token to start from".into(),
                )),
            };
        }
        let context = self.layout.context_length;
        if ids.len() >= context {
            return Err(ModelError::TooLarge(format!(
                "the prompt has {} tokens; the model's context is {context} tokens (prompt + output)",
                ids.len()
            )));
        }
        if let Some(limit) = self.max_prompt_tokens
            && ids.len() > limit
        {
            return Err(ModelError::TooLarge(format!("the prompt has {} tokens; the limit is {limit}", ids.len())));
        }
        Ok(ids)
    }

    /// Starts a generation. Check `cancel` from another thread to stop it.
    pub fn generate<'a>(&'a self, request: &GenerateRequest, cancel: Option<Arc<AtomicBool>>) -> Result<Generator<'a>> {
        request.sampling.validate()?;
        if request.stop.iter().any(String::is_empty) {
            return Err(ModelError::BadInput("stop strings must not be empty".into()));
        }
        let started = Instant::now();
        let prompt = self.prompt_ids(&request.input, request.add_special_tokens)?;
        let g = &self.model_dir.generation;
        let sample = match request.sampling.temperature {
            Some(t) => t > 0.0,
            None => g.do_sample.unwrap_or(false),
        };
        let temperature = if sample { request.sampling.temperature.or(g.temperature).unwrap_or(1.0) } else { 0.0 };
        let sampler = Sampler::new(
            temperature,
            request.sampling.top_k.or(if sample { g.top_k } else { None }).unwrap_or(0),
            request.sampling.top_p.or(if sample { g.top_p } else { None }).unwrap_or(1.0),
            request.sampling.repetition_penalty.or(g.repetition_penalty).unwrap_or(1.0),
            request.sampling.seed,
        );
        let max_new = request.max_new_tokens.or(g.max_new_tokens).unwrap_or(256);
        Ok(Generator {
            model: self,
            cache: KvCache::new(self, prompt.len().saturating_add(max_new))?,
            history: prompt.clone(),
            pending: prompt,
            generated: Vec::new(),
            streamer: TextStreamer::new(true),
            sampler,
            max_new,
            stop: request.stop.clone(),
            ignore_eos: request.ignore_eos,
            cancel,
            text: String::new(),
            sent: 0,
            seq: 0,
            unsent_ids: Vec::new(),
            started,
            first_token: None,
            pending_finish: None,
            done: false,
        })
    }

    /// Convenience: runs a generation to the end.
    pub fn complete(&self, request: &GenerateRequest) -> Result<Completion> {
        for event in self.generate(request, None)? {
            if let TokenEvent::Done(c) = event? {
                return Ok(c);
            }
        }
        Err(ModelError::Config("generation ended without a result".into()))
    }

    /// Runs `ids` through the graph after `cache`'s past; returns the logits of the last position.
    fn forward(&self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let past = cache.len;
        let n = ids.len();
        let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
        let mut feed = vec![
            ("input_ids".to_string(), Tensor::from_shape_vec(&[1, n], ids)?),
            ("attention_mask".to_string(), Tensor::from_shape_vec(&[1, past + n], vec![1i64; past + n])?),
        ];
        if self.layout.has_position_ids {
            let positions: Vec<i64> = (past..past + n).map(|p| p as i64).collect();
            feed.push(("position_ids".to_string(), Tensor::from_shape_vec(&[1, n], positions)?));
        }
        if let Some(name) = &self.layout.use_cache_branch {
            feed.push((name.clone(), Tensor::from_shape_vec(&[1], vec![past > 0])?));
        }
        // ORT-GenAI folders declare int32 ids and masks; ours and Optimum's int64.
        let feed = conform_inputs(self.session.inputs(), feed)?;
        if let Some(capacity) = cache.capacity
            && past + n > capacity
        {
            return Err(ModelError::Config(format!(
                "the KV buffer holds {capacity} positions, this step needs {}",
                past + n
            )));
        }
        let layers = cache.take().into_iter().enumerate();
        let mut kept = if cache.capacity.is_some() {
            // One buffer per layer for the whole generation: the graph writes this step's
            // positions into it and attends over the attention mask's length.
            let layout = &self.layout;
            let state = layers
                .flat_map(|(i, (k, v))| {
                    [
                        InPlace { input: layout.past_key(i), output: layout.present_key(i), value: k },
                        InPlace { input: layout.past_value(i), output: layout.present_value(i), value: v },
                    ]
                })
                .collect();
            let (_, kept, state) = self.session.run_in_place(feed, state, &self.retained_outputs[..1])?;
            kept.into_iter().chain(state.into_iter().map(|s| s.value)).collect()
        } else {
            // The new cache stays in the backend's memory (ONNX Runtime's own buffers; on the
            // GPU with the default placement on a CUDA session) and goes straight back in next
            // step: copying it out and back cost ~8 ms per token at 1024 tokens of context on a
            // 135M model (bench/results/pipelines-2core.txt).
            let past_values =
                layers.flat_map(|(i, (k, v))| [(self.layout.past_key(i), k), (self.layout.past_value(i), v)]).collect();
            self.session.run_retaining(feed, past_values, &self.retained_outputs)?.1
        };
        // Only the last position's logits are needed: read that row in place (the whole
        // `[1, n, vocab]` block is 200 MB for 1024 prompt tokens of a 49k vocabulary; copying it
        // cost more than a tenth of the prefill).
        let logits = kept.remove(0);
        let shape = logits.shape().to_vec();
        if shape.len() != 3 || shape[1] != n {
            return Err(ModelError::Config(format!("logits have shape {shape:?}, expected [1, {n}, vocab]")));
        }
        // Copied as one slice when contiguous: an element-wise walk of the dynamic-rank view cost
        // 0.17 ms per token for a 49k vocabulary, 4 % of a q4 decode step.
        let row = ndarray::Axis(1);
        let last: Vec<f32> = if let Some(view) = logits.view_f32() {
            let last = view.index_axis(row, n - 1);
            last.as_slice().map_or_else(|| last.iter().copied().collect(), <[f32]>::to_vec)
        } else if let Some(view) = logits.view_f16() {
            let last = view.index_axis(row, n - 1);
            match last.as_slice() {
                Some(values) => values.iter().map(|v| v.to_f32()).collect(),
                None => last.iter().map(|v| v.to_f32()).collect(),
            }
        } else {
            logits.into_tensor()?.to_f32_array().index_axis(row, n - 1).iter().copied().collect()
        };
        if kept.len() != 2 * self.layout.layers {
            return Err(ModelError::Config(format!(
                "the graph returned {} KV cache outputs for {} layers",
                kept.len(),
                self.layout.layers
            )));
        }
        let mut present = kept.into_iter();
        let mut layers = Vec::with_capacity(self.layout.layers);
        while let (Some(k), Some(v)) = (present.next(), present.next()) {
            layers.push((k, v));
        }
        cache.put(layers, past + n);
        Ok(last)
    }

    /// Logits of the last prompt position after a prefill (for parity checks).
    pub fn prefill_logits(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut cache = KvCache::new(self, ids.len())?;
        self.forward(ids, &mut cache)
    }

    /// The logits generation sees at each step when it produces `continuation` after `prompt`:
    /// after the prefill of `prompt`, then after feeding each token of `continuation` but the
    /// last, one at a time through the KV cache (teacher forcing). Item `i` is the distribution
    /// token `continuation[i]` is chosen from; for evaluating a continuation (agreement with a
    /// reference, perplexity). A dynamically quantised graph quantises each step's activations
    /// on their own, so this equals what `complete` computes, which one prefill of the whole text
    /// does not.
    pub fn step_logits(&self, prompt: &[u32], continuation: &[u32]) -> Result<Vec<Vec<f32>>> {
        let mut cache = KvCache::new(self, prompt.len() + continuation.len())?;
        let mut steps = Vec::with_capacity(continuation.len());
        if continuation.is_empty() {
            return Ok(steps);
        }
        steps.push(self.forward(prompt, &mut cache)?);
        for &token in &continuation[..continuation.len() - 1] {
            steps.push(self.forward(&[token], &mut cache)?);
        }
        Ok(steps)
    }
}

/// The KV cache between steps: each layer's key and value, `[1, kv_heads, past, head_dim]`, or
/// `[1, kv_heads, capacity, head_dim]` with the first `len` positions filled when the graph
/// updates one buffer in place.
struct KvCache {
    /// The session the buffers are bound in, when shared: told to let go of them when the
    /// cache is dropped.
    session: Option<Arc<dyn Session>>,
    layers: Vec<(Retained, Retained)>,
    len: usize,
    /// The buffers' length, when shared.
    capacity: Option<usize>,
}

impl KvCache {
    /// An empty cache for a generation of at most `positions` tokens (prompt included).
    fn new(model: &Llama, positions: usize) -> Result<KvCache> {
        let layout = &model.layout;
        let capacity = model.shared_kv.then(|| positions.clamp(1, layout.context_length.max(1)));
        let shape = [1, layout.kv_heads, capacity.unwrap_or(0), layout.head_dim];
        let mut layers = Vec::with_capacity(layout.layers);
        for _ in 0..layout.layers {
            layers
                .push((Tensor::zeros(layout.kv_dtype, &shape)?.into(), Tensor::zeros(layout.kv_dtype, &shape)?.into()));
        }
        let session = capacity.map(|_| model.session.clone());
        Ok(KvCache { session, layers, len: 0, capacity })
    }

    fn take(&mut self) -> Vec<(Retained, Retained)> {
        std::mem::take(&mut self.layers)
    }

    fn put(&mut self, layers: Vec<(Retained, Retained)>, len: usize) {
        self.layers = layers;
        self.len = len;
    }
}

impl Drop for KvCache {
    fn drop(&mut self) {
        if let Some(session) = &self.session {
            session.release_in_place();
        }
    }
}

/// A running generation; iterate to get [`TokenEvent`]s.
pub struct Generator<'a> {
    model: &'a Llama,
    cache: KvCache,
    /// Prompt and generated ids (for the repetition penalty).
    history: Vec<u32>,
    /// Ids to feed at the next step (the prompt, then one token at a time).
    pending: Vec<u32>,
    generated: Vec<u32>,
    streamer: TextStreamer,
    sampler: Sampler,
    max_new: usize,
    stop: Vec<String>,
    ignore_eos: bool,
    cancel: Option<Arc<AtomicBool>>,
    text: String,
    sent: usize,
    seq: u64,
    unsent_ids: Vec<u32>,
    started: Instant,
    first_token: Option<Instant>,
    pending_finish: Option<FinishReason>,
    done: bool,
}

impl Iterator for Generator<'_> {
    type Item = Result<TokenEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(reason) = self.pending_finish.take() {
            return Some(Ok(self.finish(reason)));
        }
        if self.done {
            return None;
        }
        loop {
            match self.step() {
                Ok(Some(event)) => return Some(Ok(event)),
                // A token that completed no character yet: keep going.
                Ok(None) => continue,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl Generator<'_> {
    /// Tokens in the prompt.
    pub fn prompt_tokens(&self) -> usize {
        self.history.len() - self.generated.len()
    }

    fn finish(&mut self, reason: FinishReason) -> TokenEvent {
        self.done = true;
        let end = self.started.elapsed().as_secs_f64();
        let ttft = self.first_token.map(|t| (t - self.started).as_secs_f64()).unwrap_or(end);
        let generated = self.generated.len();
        let decode_time = end - ttft;
        TokenEvent::Done(Completion {
            text: std::mem::take(&mut self.text),
            token_ids: std::mem::take(&mut self.generated),
            finish_reason: reason,
            usage: Usage {
                prompt_tokens: self.history.len() - generated,
                generated_tokens: generated,
                time_to_first_token_ms: ttft * 1e3,
                tokens_per_second: if decode_time > 0.0 {
                    generated.saturating_sub(1) as f64 / decode_time
                } else {
                    0.0
                },
                total_ms: end * 1e3,
            },
        })
    }

    /// The text that can be sent now: all of it, or all but what could still become a stop string.
    fn flush(&mut self, all: bool) -> Option<TokenEvent> {
        let hold = if all { 0 } else { self.stop.iter().map(|s| s.len().saturating_sub(1)).max().unwrap_or(0) };
        let mut end = self.text.len().saturating_sub(hold).max(self.sent);
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        if end <= self.sent {
            return None;
        }
        let delta = self.text[self.sent..end].to_string();
        self.sent = end;
        let seq = self.seq;
        self.seq += 1;
        Some(TokenEvent::Delta { seq, text: delta, token_ids: std::mem::take(&mut self.unsent_ids) })
    }

    fn step(&mut self) -> Result<Option<TokenEvent>> {
        if self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Ok(Some(self.finish_with_text(FinishReason::Cancelled)));
        }
        if self.generated.len() >= self.max_new {
            return Ok(Some(self.finish_with_text(FinishReason::Length)));
        }
        // Like transformers' max_length: prompt + output never exceed the context.
        if self.history.len() >= self.model.layout.context_length {
            return Ok(Some(self.finish_with_text(FinishReason::ContextLength)));
        }
        let input = std::mem::take(&mut self.pending);
        let mut logits = self.model.forward(&input, &mut self.cache)?;
        let token = self.sampler.next(&mut logits, &self.history);
        self.first_token.get_or_insert_with(Instant::now);
        self.history.push(token);
        self.generated.push(token);
        self.unsent_ids.push(token);
        if !self.ignore_eos && self.model.eos.contains(&token) {
            return Ok(Some(self.finish_with_text(FinishReason::Eos)));
        }
        let delta = self.streamer.push(&self.model.tokenizer, token)?;
        let search_from = self.sent;
        self.text.push_str(&delta);
        if let Some(pos) = self.find_stop(search_from) {
            self.text.truncate(pos);
            return Ok(Some(self.finish_with_text(FinishReason::Stop)));
        }
        self.pending = vec![token];
        Ok(self.flush(false))
    }

    fn find_stop(&self, from: usize) -> Option<usize> {
        let window = self.text.get(from..)?;
        self.stop.iter().filter_map(|s| window.find(s.as_str())).min().map(|p| from + p)
    }

    /// Emits any remaining text first; the `Done` comes on the next call.
    fn finish_with_text(&mut self, reason: FinishReason) -> TokenEvent {
        if reason != FinishReason::Stop {
            // Bytes held back because they did not complete a character yet belong to the final
            // text as a full decode gives it (a trailing U+FFFD, as transformers' decode).
            let ids: Vec<u32> = self.generated.iter().copied().filter(|id| !self.model.eos.contains(id)).collect();
            if let Ok(full) = self.model.tokenizer.decode(&ids, true)
                && full.starts_with(&self.text)
            {
                self.text = full;
            }
        }
        match self.flush(true) {
            Some(delta) => {
                self.pending_finish = Some(reason);
                delta
            }
            None => self.finish(reason),
        }
    }
}
