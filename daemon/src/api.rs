//! The one internal vocabulary of edgeinferd: requests, responses, streamed events and errors.
//! Transports (MQTT, D-Bus) and the CLI translate their wire formats into these types and back;
//! nothing below them sees MQTT or D-Bus. Every type here is also the JSON schema of the MQTT
//! payloads (see docs/mqtt.md).

use std::fmt;

use bytes::Bytes;
use edgeinfer_models::ModelError;
use edgeinfer_models::dinov2::Pooling;
use edgeinfer_models::gallery::Match;
use edgeinfer_models::llama::{Completion, Message, TokenEvent};
use edgeinfer_models::mask::CocoRle;
use edgeinfer_models::sam::{BoxPrompt, Point};
use serde::{Deserialize, Serialize};

/// Stable, machine-readable error codes (MQTT `error.code`, D-Bus `org.edgeinfer.Error.<Code>`,
/// CLI exit status).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or does not fit the model.
    BadInput,
    /// No model with that id is configured.
    UnknownModel,
    /// The model is configured but not loaded (or failed to load).
    NotLoaded,
    /// The model's queue is full; retry later.
    Busy,
    /// The request did not finish in time.
    Timeout,
    /// Over a configured limit (bytes, pixels, prompts, tokens, memory).
    TooLarge,
    /// The inference backend failed.
    Backend,
    /// A bug.
    Internal,
    /// The client cancelled it.
    Cancelled,
}

impl ErrorCode {
    /// The snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadInput => "bad_input",
            ErrorCode::UnknownModel => "unknown_model",
            ErrorCode::NotLoaded => "not_loaded",
            ErrorCode::Busy => "busy",
            ErrorCode::Timeout => "timeout",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Backend => "backend",
            ErrorCode::Internal => "internal",
            ErrorCode::Cancelled => "cancelled",
        }
    }

    /// The D-Bus error name.
    pub fn dbus_name(self) -> &'static str {
        match self {
            ErrorCode::BadInput => "org.edgeinfer.Error.BadInput",
            ErrorCode::UnknownModel => "org.edgeinfer.Error.UnknownModel",
            ErrorCode::NotLoaded => "org.edgeinfer.Error.NotLoaded",
            ErrorCode::Busy => "org.edgeinfer.Error.Busy",
            ErrorCode::Timeout => "org.edgeinfer.Error.Timeout",
            ErrorCode::TooLarge => "org.edgeinfer.Error.TooLarge",
            ErrorCode::Backend => "org.edgeinfer.Error.Backend",
            ErrorCode::Internal => "org.edgeinfer.Error.Internal",
            ErrorCode::Cancelled => "org.edgeinfer.Error.Cancelled",
        }
    }

    /// The CLI exit status for this error.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorCode::BadInput | ErrorCode::TooLarge | ErrorCode::UnknownModel => 2,
            ErrorCode::Busy | ErrorCode::Timeout | ErrorCode::NotLoaded | ErrorCode::Cancelled => 4,
            ErrorCode::Backend | ErrorCode::Internal => 3,
        }
    }
}

/// An error with a stable code and a readable message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// The code.
    pub code: ErrorCode,
    /// What happened, for humans.
    pub message: String,
}

impl ApiError {
    /// An error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into() }
    }
    /// `bad_input`.
    pub fn bad_input(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::BadInput, message)
    }
    /// `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Internal, message)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        let code = if e.is_too_large() {
            ErrorCode::TooLarge
        } else if e.is_input_error() {
            ErrorCode::BadInput
        } else {
            match e {
                ModelError::Cancelled => ErrorCode::Cancelled,
                ModelError::Onnx(_) => ErrorCode::Backend,
                ModelError::Config(_) | ModelError::Io { .. } => ErrorCode::NotLoaded,
                _ => ErrorCode::Internal,
            }
        };
        ApiError::new(code, e.to_string())
    }
}

/// An image as a request carries it. The bytes are shared, not copied: a camera frame passed as a
/// sealed memfd over D-Bus is a read-only mapping of the caller's memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageData {
    /// JPEG/PNG/BMP/WebP bytes (base64 in JSON).
    Encoded(#[serde(with = "base64_bytes")] Bytes),
    /// Raw RGB8 pixels.
    Rgb8 {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// `width * height * 3` bytes (base64 in JSON).
        #[serde(with = "base64_bytes")]
        data: Bytes,
    },
}

impl ImageData {
    /// Bytes carried.
    pub fn len(&self) -> usize {
        match self {
            ImageData::Encoded(b) => b.len(),
            ImageData::Rgb8 { data, .. } => data.len(),
        }
    }

    /// Whether no bytes are carried.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The image of a segmentation: data, or the hash of an image sent before (its embedding is
/// cached — "set the image once, prompt many times").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageRef {
    /// The image itself.
    Data(ImageData),
    /// `image_hash` of an earlier segmentation response.
    Cached(String),
}

/// How masks come back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskFormat {
    /// COCO RLE (compressed string), as pycocotools reads it.
    #[default]
    Rle,
    /// 1-bit greyscale PNG (base64 in JSON).
    Png,
    /// 8-bit greyscale PNG, 0/255 (base64 in JSON).
    Png8,
    /// Only score, box and area.
    None,
}

/// Segmentation parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SegmentParams {
    /// Points in original-image pixels.
    pub points: Vec<Point>,
    /// One box in original-image pixels.
    #[serde(rename = "box")]
    pub bbox: Option<BoxPrompt>,
    /// The three multimask candidates (default) or the single-mask output.
    pub multimask: bool,
    /// Only the best candidate.
    pub best_only: bool,
    /// Mask encoding.
    pub mask_format: MaskFormat,
    /// `mask_id` of a mask from an earlier answer on the same image, to refine it.
    pub mask_input: Option<String>,
}

impl Default for SegmentParams {
    fn default() -> Self {
        SegmentParams {
            points: Vec::new(),
            bbox: None,
            multimask: true,
            best_only: false,
            mask_format: MaskFormat::Rle,
            mask_input: None,
        }
    }
}

/// Embedding parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedParams {
    /// Pooling.
    pub pooling: Pooling,
    /// L2-normalise.
    pub normalize: bool,
}

/// Text generation parameters (the wire form of a `GenerateRequest`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateParams {
    /// A plain prompt...
    pub prompt: Option<String>,
    /// ...or a conversation for the chat template.
    pub messages: Option<Vec<Message>>,
    /// Most new tokens.
    pub max_new_tokens: Option<usize>,
    /// 0 = greedy.
    pub temperature: Option<f32>,
    /// Top-k.
    pub top_k: Option<usize>,
    /// Top-p.
    pub top_p: Option<f32>,
    /// Repetition penalty.
    pub repetition_penalty: Option<f32>,
    /// Seed.
    pub seed: Option<u64>,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Keep going past EOS.
    pub ignore_eos: bool,
    /// Stream token deltas (default true over MQTT; the CLI prints them as they come).
    pub stream: Option<bool>,
}

/// A request to a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Task {
    /// SAM: masks for prompts.
    Segment {
        /// The image.
        image: ImageRef,
        /// Prompts and output options.
        #[serde(flatten)]
        params: SegmentParams,
    },
    /// DINOv2: one embedding per image.
    Embed {
        /// The images.
        images: Vec<ImageData>,
        /// Options.
        #[serde(flatten)]
        params: EmbedParams,
    },
    /// DINOv2 + gallery: closest labels.
    Classify {
        /// The image.
        image: ImageData,
        /// How many labels.
        #[serde(default = "default_k")]
        k: usize,
    },
    /// DINOv2 + gallery: teach an example.
    GalleryAdd {
        /// The label.
        label: String,
        /// The example image.
        image: ImageData,
    },
    /// Gallery: forget a label or one example.
    GalleryRemove {
        /// Every example of this label...
        label: Option<String>,
        /// ...or this one example.
        id: Option<u64>,
    },
    /// Gallery: labels and counts.
    GalleryList,
    /// LLM: generate text.
    Generate(GenerateParams),
}

fn default_k() -> usize {
    5
}

impl Task {
    /// The task's name as used in MQTT topics (`segment`, `gallery/add`...).
    pub fn name(&self) -> &'static str {
        match self {
            Task::Segment { .. } => "segment",
            Task::Embed { .. } => "embed",
            Task::Classify { .. } => "classify",
            Task::GalleryAdd { .. } => "gallery/add",
            Task::GalleryRemove { .. } => "gallery/remove",
            Task::GalleryList => "gallery/list",
            Task::Generate(_) => "generate",
        }
    }
}

/// One mask of a segmentation answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaskOut {
    /// Predicted IoU.
    pub score: f32,
    /// COCO box `[x, y, w, h]`.
    pub bbox: [u32; 4],
    /// Set pixels.
    pub area: u64,
    /// Refer to this mask in a follow-up request's `mask_input`.
    pub mask_id: String,
    /// COCO RLE, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rle: Option<CocoRle>,
    /// PNG bytes (base64 in JSON), when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "base64_opt")]
    pub png: Option<Vec<u8>>,
}

/// A segmentation answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Segmentation {
    /// Original image width.
    pub width: u32,
    /// Original image height.
    pub height: u32,
    /// Send this as `image.cached` to prompt the same image again.
    pub image_hash: String,
    /// Whether the image embedding came from the cache.
    pub cache_hit: bool,
    /// Masks, in the model's order (or the best one).
    pub masks: Vec<MaskOut>,
}

/// An answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    /// Masks.
    Segmentation(Segmentation),
    /// Embeddings, one per image.
    Embeddings {
        /// Vectors.
        embeddings: Vec<Vec<f32>>,
        /// Width.
        dim: usize,
    },
    /// Labels by similarity, best first.
    Classification {
        /// Matches.
        matches: Vec<Match>,
    },
    /// An example was added.
    GalleryAdded {
        /// Its id.
        id: u64,
        /// Its label.
        label: String,
        /// Examples in the gallery now.
        entries: usize,
    },
    /// Examples were removed.
    GalleryRemoved {
        /// How many.
        removed: usize,
    },
    /// Labels and example counts.
    GalleryLabels {
        /// (label, count).
        labels: Vec<(String, usize)>,
    },
    /// A finished generation.
    Generation(Completion),
}

/// Something a running request reports before its answer (token deltas of a generation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// A generation delta.
    Token(TokenEvent),
}

/// Base64 (standard alphabet, padded) for byte fields in JSON.
pub mod base64_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises bytes as base64.
    pub fn serialize<S: Serializer, B: AsRef<[u8]>>(bytes: &B, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::b64::encode(bytes.as_ref()))
    }

    /// Deserialises base64 into bytes.
    pub fn deserialize<'de, D: Deserializer<'de>, B: From<Vec<u8>>>(d: D) -> Result<B, D::Error> {
        let s = String::deserialize(d)?;
        super::b64::decode(&s).map(B::from).map_err(serde::de::Error::custom)
    }
}

/// Optional base64 bytes.
pub mod base64_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises optional bytes as base64.
    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_str(&super::b64::encode(b)),
            None => s.serialize_none(),
        }
    }

    /// Deserialises optional base64.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => super::b64::decode(&s).map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// Base64 via the `base64` crate's standard engine.
pub mod b64 {
    use base64::Engine;

    /// Encodes.
    pub fn encode(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// Decodes, with a readable error.
    pub fn decode(s: &str) -> Result<Vec<u8>, String> {
        base64::engine::general_purpose::STANDARD.decode(s.trim()).map_err(|e| format!("invalid base64: {e}"))
    }
}

/// One model as `edgeinfer models` shows it (the same over both transports).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ModelSummary {
    /// Id.
    pub id: String,
    /// Family (empty if unknown yet).
    pub family: String,
    /// State.
    pub state: String,
    /// Backend.
    pub backend: String,
    /// Providers running it.
    pub providers: Vec<String>,
    /// The configured precision variant (`fp32`, `q4`...).
    pub variant: String,
    /// The main graph file loaded (empty until loaded).
    pub graph: String,
    /// Last load error.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_read_from_json() {
        let t: Task = serde_json::from_str(
            r#"{"task": "segment", "image": {"data": {"encoded": "aGVsbG8="}}, "points": [{"x": 1, "y": 2}], "best_only": true}"#,
        )
        .unwrap();
        let Task::Segment { image: ImageRef::Data(ImageData::Encoded(b)), params } = t else { panic!() };
        assert_eq!(&b[..], b"hello");
        assert!(params.best_only && params.multimask);
        assert!(params.points[0].positive);
        let g: Task = serde_json::from_str(r#"{"task": "generate", "prompt": "hi", "max_new_tokens": 3}"#).unwrap();
        assert_eq!(g.name(), "generate");
        assert!(serde_json::from_str::<Task>(r#"{"task": "generate", "promt": "typo"}"#).is_err());
        assert!(serde_json::from_str::<Task>(r#"{"task": "fly"}"#).is_err());
    }

    #[test]
    fn model_errors_map_to_codes() {
        let e: ApiError = ModelError::TooLarge("x".into()).into();
        assert_eq!(e.code, ErrorCode::TooLarge);
        let e: ApiError = ModelError::BadInput("x".into()).into();
        assert_eq!(e.code, ErrorCode::BadInput);
        assert_eq!(ErrorCode::NotLoaded.dbus_name(), "org.edgeinfer.Error.NotLoaded");
        assert_eq!(serde_json::to_string(&ErrorCode::UnknownModel).unwrap(), "\"unknown_model\"");
    }
}
