//! What a LLaMA-family model directory contains and how its graph is wired: `config.json`,
//! `generation_config.json`, onnxruntime-genai's `genai_config.json`, and the ONNX file
//! (`model.onnx`, or Optimum's merged `decoder_model_merged.onnx` with `use_cache_branch`). Layer
//! count, KV heads and head dim are read from the graph's `past_key_values.*` inputs when the
//! configs do not say.

use std::path::{Path, PathBuf};

use edgeinfer_onnx::{DType, Session};
use serde::Deserialize;

use crate::error::{ModelError, Result, read_json};

/// Everything the generator needs to know about the model, from configs and graph.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaLayout {
    /// Number of decoder layers (KV pairs).
    pub layers: usize,
    /// KV heads.
    pub kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Element type of the KV cache.
    pub kv_dtype: DType,
    /// Input name templates (`{}` = layer index).
    pub past_key: String,
    /// Input name templates (`{}` = layer index).
    pub past_value: String,
    /// Output name templates (`{}` = layer index).
    pub present_key: String,
    /// Output name templates (`{}` = layer index).
    pub present_value: String,
    /// Whether the graph takes `position_ids`.
    pub has_position_ids: bool,
    /// Merged decoder's `use_cache_branch` input, if any.
    pub use_cache_branch: Option<String>,
    /// Longest sequence (prompt + generated) the model supports.
    pub context_length: usize,
    /// Vocabulary size (logits width).
    pub vocab_size: Option<usize>,
    /// The graph can update one KV buffer of a fixed length in place (ORT-GenAI's
    /// `past_present_share_buffer`: `GroupQueryAttention` writes the new positions into the past
    /// tensor it is given, bound as the present output too, and attends over the
    /// `attention_mask`'s length), rather than return a cache one position longer each step.
    pub shares_kv_buffer: bool,
}

impl LlamaLayout {
    /// Name of layer `i`'s past key input.
    pub fn past_key(&self, i: usize) -> String {
        self.past_key.replace("{}", &i.to_string())
    }
    /// Name of layer `i`'s past value input.
    pub fn past_value(&self, i: usize) -> String {
        self.past_value.replace("{}", &i.to_string())
    }
    /// Name of layer `i`'s present key output.
    pub fn present_key(&self, i: usize) -> String {
        self.present_key.replace("{}", &i.to_string())
    }
    /// Name of layer `i`'s present value output.
    pub fn present_value(&self, i: usize) -> String {
        self.present_value.replace("{}", &i.to_string())
    }
}

/// Token ids that end generation, as `generation_config.json`/`config.json` write them (one id
/// or a list).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TokenIds {
    /// None given.
    #[default]
    None,
    /// One id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl TokenIds {
    /// As a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::None => Vec::new(),
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// The parts of `config.json` we use.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ModelConfig {
    /// Decoder layers.
    pub num_hidden_layers: Option<usize>,
    /// Attention heads.
    pub num_attention_heads: Option<usize>,
    /// KV heads (grouped-query attention).
    pub num_key_value_heads: Option<usize>,
    /// Hidden width.
    pub hidden_size: Option<usize>,
    /// Per-head width.
    pub head_dim: Option<usize>,
    /// Context length.
    pub max_position_embeddings: Option<usize>,
    /// Vocabulary size.
    pub vocab_size: Option<usize>,
    /// BOS id.
    pub bos_token_id: Option<u32>,
    /// EOS id(s).
    #[serde(default)]
    pub eos_token_id: TokenIds,
}

/// The parts of `generation_config.json` we use: ids and the default sampling parameters.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct GenerationConfig {
    /// BOS id.
    pub bos_token_id: Option<u32>,
    /// EOS id(s).
    #[serde(default)]
    pub eos_token_id: TokenIds,
    /// PAD id.
    pub pad_token_id: Option<u32>,
    /// Sample (true) or greedy (false) by default.
    pub do_sample: Option<bool>,
    /// Default temperature.
    pub temperature: Option<f32>,
    /// Default top-k.
    pub top_k: Option<usize>,
    /// Default top-p.
    pub top_p: Option<f32>,
    /// Default repetition penalty.
    pub repetition_penalty: Option<f32>,
    /// Default limit on new tokens.
    pub max_new_tokens: Option<usize>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct GenaiConfig {
    model: Option<GenaiModel>,
    search: Option<GenaiSearch>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct GenaiSearch {
    /// The graph's attention (GroupQueryAttention) updates a KV buffer of the whole context in
    /// place: past and present are the same tensor.
    #[serde(default)]
    past_present_share_buffer: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct GenaiModel {
    context_length: Option<usize>,
    bos_token_id: Option<u32>,
    #[serde(default)]
    eos_token_id: TokenIds,
    decoder: Option<GenaiDecoder>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct GenaiDecoder {
    filename: Option<String>,
    head_size: Option<usize>,
    num_key_value_heads: Option<usize>,
    num_hidden_layers: Option<usize>,
    inputs: Option<GenaiNames>,
    outputs: Option<GenaiNames>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct GenaiNames {
    past_key_names: Option<String>,
    past_value_names: Option<String>,
    present_key_names: Option<String>,
    present_value_names: Option<String>,
}

/// A model directory's files and configs.
#[derive(Clone, Debug)]
pub struct ModelDir {
    /// The folder.
    pub dir: PathBuf,
    /// The ONNX file.
    pub onnx: PathBuf,
    /// `config.json`, if present.
    pub config: ModelConfig,
    /// `generation_config.json`, if present.
    pub generation: GenerationConfig,
    genai: GenaiConfig,
}

/// The names (before the variant suffix and `.onnx`) a LLaMA graph has: Optimum's merged
/// decoder or onnx-community's `model`.
pub const GRAPH_STEMS: [&str; 2] = ["model", "decoder_model_merged"];

impl ModelDir {
    /// Reads the configs of `dir` and finds its ONNX file.
    pub fn open(dir: &Path) -> Result<ModelDir> {
        ModelDir::open_variant(dir, crate::layout::Variant::Fp32)
    }

    /// [`ModelDir::open`] for a precision variant: `model<_variant>.onnx` or
    /// `decoder_model_merged<_variant>.onnx`, at the top or under `onnx/` (onnx-community). A
    /// GenAI folder's `genai_config.json` names the full-precision graph (whatever precision the
    /// builder wrote it in); other variants are that name with the variant's suffix.
    pub fn open_variant(dir: &Path, variant: crate::layout::Variant) -> Result<ModelDir> {
        if !dir.is_dir() {
            return Err(ModelError::Config(format!("{} is not a model directory", dir.display())));
        }
        let opt = |name: &str| -> Option<PathBuf> { Some(dir.join(name)).filter(|p| p.is_file()) };
        let config: ModelConfig = opt("config.json").map(|p| read_json(&p)).transpose()?.unwrap_or_default();
        let generation: GenerationConfig =
            opt("generation_config.json").map(|p| read_json(&p)).transpose()?.unwrap_or_default();
        let genai: GenaiConfig = opt("genai_config.json").map(|p| read_json(&p)).transpose()?.unwrap_or_default();
        let named = genai.model.as_ref().and_then(|m| m.decoder.as_ref()).and_then(|d| d.filename.clone());
        let onnx = match named {
            Some(f) if variant == crate::layout::Variant::Fp32 => dir.join(f),
            // The builder writes one graph whatever its precision; `export_llama.py --attention
            // gqa` + `quantize.py` put the variants beside it, named as onnx-community names them.
            Some(f) => crate::layout::find_graph(dir, &[f.strip_suffix(".onnx").unwrap_or(&f)], variant)?,
            None => crate::layout::find_graph(dir, &GRAPH_STEMS, variant)?,
        };
        if !onnx.is_file() {
            return Err(ModelError::Config(format!("{} not found", onnx.display())));
        }
        Ok(ModelDir { dir: dir.to_path_buf(), onnx, config, generation, genai })
    }

    /// BOS id: generation config, then config, then genai config.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.generation
            .bos_token_id
            .or(self.config.bos_token_id)
            .or_else(|| self.genai.model.as_ref().and_then(|m| m.bos_token_id))
    }

    /// EOS ids from every config (deduplicated).
    pub fn eos_token_ids(&self) -> Vec<u32> {
        let mut ids = self.generation.eos_token_id.to_vec();
        ids.extend(self.config.eos_token_id.to_vec());
        if let Some(m) = &self.genai.model {
            ids.extend(m.eos_token_id.to_vec());
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Works out the KV-cache wiring from the configs and the loaded graph.
    pub fn layout(&self, session: &dyn Session) -> Result<LlamaLayout> {
        let decoder = self.genai.model.as_ref().and_then(|m| m.decoder.as_ref());
        let names = |f: fn(&GenaiNames) -> Option<String>, default: &str, outputs: bool| -> String {
            decoder
                .and_then(|d| if outputs { d.outputs.as_ref() } else { d.inputs.as_ref() })
                .and_then(f)
                .map(|s| s.replace("%d", "{}"))
                .unwrap_or_else(|| default.to_string())
        };
        let past_key = names(|n| n.past_key_names.clone(), "past_key_values.{}.key", false);
        let past_value = names(|n| n.past_value_names.clone(), "past_key_values.{}.value", false);
        let present_key = names(|n| n.present_key_names.clone(), "present.{}.key", true);
        let present_value = names(|n| n.present_value_names.clone(), "present.{}.value", true);
        let inputs = session.inputs();
        for required in ["input_ids", "attention_mask"] {
            if !inputs.iter().any(|i| i.name == required) {
                return Err(ModelError::Config(format!("the graph has no '{required}' input")));
            }
        }
        if !session.outputs().iter().any(|o| o.name == "logits") {
            return Err(ModelError::Config("the graph has no 'logits' output".into()));
        }
        let graph_layers =
            (0..).take_while(|i| inputs.iter().any(|x| x.name == past_key.replace("{}", &i.to_string()))).count();
        let layers =
            decoder.and_then(|d| d.num_hidden_layers).or(self.config.num_hidden_layers).unwrap_or(graph_layers);
        if layers == 0 || layers != graph_layers {
            return Err(ModelError::Config(format!(
                "the graph has {graph_layers} '{past_key}' inputs, the config says {layers} layers"
            )));
        }
        let first = inputs
            .iter()
            .find(|x| x.name == past_key.replace("{}", "0"))
            .ok_or_else(|| ModelError::Config("no past key input".into()))?;
        let dim = |i: usize| first.shape.get(i).and_then(|d| d.fixed());
        let kv_heads = dim(1)
            .or(decoder.and_then(|d| d.num_key_value_heads))
            .or(self.config.num_key_value_heads)
            .ok_or_else(|| ModelError::Config("cannot tell the number of KV heads".into()))?;
        let head_dim = dim(3)
            .or(decoder.and_then(|d| d.head_size))
            .or(self.config.head_dim)
            .or_else(|| Some(self.config.hidden_size? / self.config.num_attention_heads?))
            .ok_or_else(|| ModelError::Config("cannot tell the head dimension".into()))?;
        let context_length = self
            .genai
            .model
            .as_ref()
            .and_then(|m| m.context_length)
            .or(self.config.max_position_embeddings)
            .unwrap_or(2048);
        let vocab_size = self
            .config
            .vocab_size
            .or_else(|| session.outputs().iter().find(|o| o.name == "logits").and_then(|o| o.shape.get(2)?.fixed()));
        Ok(LlamaLayout {
            layers,
            kv_heads,
            head_dim,
            kv_dtype: first.dtype,
            past_key,
            past_value,
            present_key,
            present_value,
            has_position_ids: inputs.iter().any(|i| i.name == "position_ids"),
            use_cache_branch: inputs.iter().find(|i| i.name == "use_cache_branch").map(|i| i.name.clone()),
            context_length,
            vocab_size,
            shares_kv_buffer: self.genai.search.as_ref().is_some_and(|s| s.past_present_share_buffer),
        })
    }
}
