//! Segment Anything — SAM, the light variants exported in the same layout (MobileSAM, EdgeSAM,
//! EfficientSAM) and SAM 2: image → embedding once, then any number of prompts → masks.
//!
//! SAM: pre-processing follows upstream `ResizeLongestSide` + `Sam.preprocess`: PIL-bilinear
//! resize so the longest side is the encoder size, then either the samexporter layout (raw 0..255
//! HWC, the graph normalises and pads) or the plain layout (`[1, 3, S, S]`, normalised and padded
//! bottom-right here). Prompts are in original-image pixels and are transformed like
//! `ResizeLongestSide.apply_coords`; the official decoder layout returns mask logits at the
//! original resolution, thresholded at 0.
//!
//! SAM in the transformers.js / Optimum layout (`onnx/vision_encoder.onnx` +
//! `onnx/prompt_encoder_mask_decoder.onnx`, as `Xenova/sam-vit-*` and `Xenova/slimsam-*` ship
//! it, each precision variant its own file): the same pre-processing with its parameters read
//! from `preprocessor_config.json` (`SamImageProcessor`); the encoder also returns
//! `image_positional_embeddings` (image-independent, kept once), the decoder takes
//! `input_points [1, 1, N, 2]` in the resized frame and int64 `input_labels` (it adds the padding
//! point itself), optionally `input_boxes`, and answers the three multimask candidates as
//! `pred_masks [1, 1, 3, h, w]` logits, post-processed as `SamProcessor.post_process_masks`
//! (upsample to the pad size, crop, upsample to the original size, threshold).
//!
//! SAM 2 in the onnx-community layout (`onnx-community/sam2*-ONNX`: the same two file names,
//! written by a custom script): pre-processing as transformers' `Sam2ImageProcessorFast` (the
//! 8-bit image stretched to S × S, antialiased bilinear, then normalised); the encoder returns
//! `image_embeddings.0/1/2` (the two high-resolution maps, then the image embedding), the decoder
//! takes them with `input_points`, `input_labels` and `input_boxes` (`[1, 0, 4]` without a box)
//! and answers `pred_masks [1, 1, 3, h, w]`, upsampled straight to the original size as
//! `Sam2Processor.post_process_masks` does.
//!
//! SAM 2 (samexporter layout): like `SAM2Transforms`, the image is stretched to S × S (antialiased
//! bilinear on floats, as torchvision's tensor `Resize`) and normalised; the encoder returns
//! `image_embed` and the two `high_res_feats`, which the decoder takes with the prompts
//! (coordinates scaled by S/W and S/H, box corners first). The decoder answers the three
//! multimask candidates as low-res logits, upsampled here to the original size (bilinear,
//! `align_corners=False`) and thresholded at 0.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use edgeinfer_onnx::{Backend, ModelSource, Session, SessionOptions, Tensor};
use ndarray::{Array2, Array4, ArrayD, Axis, IxDyn};
use serde::{Deserialize, Serialize};

use crate::dinov2::ProcessorJson;
use crate::error::{ModelError, Result, read_json};
use crate::image::{self, Resample, RgbImage};
use crate::layout::{self, Variant};
use crate::mask::BinaryMask;

/// `manifest.json` of a SAM model folder (all fields optional; read from the graphs otherwise).
#[derive(Clone, Debug, Default, Deserialize)]
struct ManifestJson {
    image_size: Option<u32>,
    pixel_mean: Option<[f32; 3]>,
    pixel_std: Option<[f32; 3]>,
    encoder: Option<String>,
    decoder: Option<String>,
    mask_threshold: Option<f32>,
}

/// The graph stems of the transformers.js / Optimum layout.
const HF_ENCODER: &str = "vision_encoder";
const HF_DECODER: &str = "prompt_encoder_mask_decoder";

/// SAM 2 encoder outputs: the image embedding, then the two high-resolution feature maps.
const SAM2_FEATURES: [&str; 3] = ["image_embed", "high_res_feats_0", "high_res_feats_1"];

/// The same three in the onnx-community layout (`Sam2Model.get_image_embeddings`: the two
/// high-resolution maps first, the image embedding last).
const SAM2_HF_FEATURES: [&str; 3] = ["image_embeddings.2", "image_embeddings.0", "image_embeddings.1"];

/// Limits on prompts.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SamLimits {
    /// Most points per request (a box counts as two).
    pub max_points: usize,
}

impl Default for SamLimits {
    fn default() -> Self {
        SamLimits { max_points: 64 }
    }
}

/// How the encoder wants its image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncoderLayout {
    /// `[1, 3, S, S]`, normalised and padded by the caller.
    Plain {
        /// Input name.
        input: String,
    },
    /// `[H, W, 3]` raw 0..255 (longest side resized to S); normalise/pad inside the graph.
    Hwc {
        /// Input name.
        input: String,
    },
}

/// Which generation of the model, and so which graph interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generation {
    /// SAM and its light variants: `image_embeddings`, official decoder layout.
    Sam,
    /// SAM 2: an image embedding and two high-resolution feature maps (samexporter's
    /// `image_embed` + `high_res_feats_0/1`, or onnx-community's `image_embeddings.0/1/2`).
    Sam2,
}

/// Which decoder interface the graphs have (the encoder's follows from it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecoderLayout {
    /// segment-anything's `SamOnnxModel` (and samexporter's): `point_coords`, `point_labels`,
    /// `mask_input`, `has_mask_input`, optional `orig_im_size`.
    Official,
    /// samexporter's SAM 2 decoder: `image_embed`, `high_res_feats_0/1` and the official prompts.
    Sam2Exporter,
    /// transformers.js / Optimum: `image_embeddings`, `image_positional_embeddings`,
    /// `input_points`, `input_labels` (int64), optional `input_boxes` → `iou_scores`, `pred_masks`.
    Transformers,
    /// onnx-community's SAM 2 (`onnx-community/sam2*-ONNX`): `image_embeddings.0/1/2`,
    /// `input_points`, `input_labels` (int64), `input_boxes [1, M, 4]` (M = 0 without a box) →
    /// `iou_scores`, `pred_masks`, `object_score_logits`.
    Sam2Transformers,
}

/// The image side of SAM: encoder output plus what is needed to map prompts and masks.
#[derive(Clone, Debug)]
pub struct ImageEmbedding {
    /// `image_embeddings [1, C, h, w]` (SAM 2: `image_embed`).
    pub image_embeddings: ArrayD<f32>,
    /// SAM 2's `high_res_feats_0` and `high_res_feats_1` (empty for SAM).
    pub high_res_features: Vec<ArrayD<f32>>,
    /// Original image (width, height).
    pub original: (u32, u32),
    /// Size of the encoder's image content (width, height): after the longest-side resize for
    /// SAM, S × S for SAM 2.
    pub resized: (u32, u32),
}

impl ImageEmbedding {
    /// Bytes held (for cache accounting).
    pub fn byte_len(&self) -> usize {
        (self.image_embeddings.len() + self.high_res_features.iter().map(ArrayD::len).sum::<usize>()) * 4
    }
}

/// A prompt point in original-image pixels.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// x (column).
    pub x: f32,
    /// y (row).
    pub y: f32,
    /// Foreground (true) or background (false).
    #[serde(default = "default_true")]
    pub positive: bool,
}

fn default_true() -> bool {
    true
}

/// A box prompt in original-image pixels: corners `(x0, y0)` top-left, `(x1, y1)` bottom-right.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoxPrompt {
    /// Left.
    pub x0: f32,
    /// Top.
    pub y0: f32,
    /// Right.
    pub x1: f32,
    /// Bottom.
    pub y1: f32,
}

/// Low-resolution mask logits of a previous answer, fed back to refine it.
#[derive(Clone, Debug, PartialEq)]
pub struct LowResMask(pub Array2<f32>);

/// What to segment.
#[derive(Clone, Debug, Default)]
pub struct Prompt {
    /// Any mix of positive and negative points.
    pub points: Vec<Point>,
    /// At most one box.
    pub bbox: Option<BoxPrompt>,
    /// A previous answer's low-res mask.
    pub mask_input: Option<LowResMask>,
}

/// Output selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SegmentOptions {
    /// The three multimask candidates (true, as upstream's default) or the single-mask output.
    pub multimask: bool,
    /// Return only the candidate with the highest predicted IoU.
    pub best_only: bool,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions { multimask: true, best_only: false }
    }
}

/// One predicted mask.
#[derive(Clone, Debug)]
pub struct Mask {
    /// Binary mask at the original resolution.
    pub mask: BinaryMask,
    /// Predicted IoU.
    pub score: f32,
    /// COCO box `[x, y, w, h]`.
    pub bbox: [u32; 4],
    /// Set pixels.
    pub area: u64,
    /// Logits at low resolution, to feed back as `Prompt::mask_input`.
    pub low_res: LowResMask,
}

/// What a decoder answered, in one shape for every layout.
struct DecoderAnswer {
    /// Predicted IoU per mask.
    iou: Vec<f32>,
    /// `[1, K, h, w]` low-resolution logits.
    low_res: ArrayD<f32>,
    /// `[1, K, H, W]` logits at the original size, for decoders that upsample in the graph.
    full_res: Option<ArrayD<f32>>,
    /// The answer holds the multimask candidates only (no single-mask token first).
    candidates_only: bool,
}

/// A loaded SAM model (encoder + decoder).
pub struct Sam {
    encoder: Arc<dyn Session>,
    decoder: Arc<dyn Session>,
    generation: Generation,
    layout: EncoderLayout,
    decoder_layout: DecoderLayout,
    /// transformers.js layout: the encoder's `image_positional_embeddings`, the same for every
    /// image, kept from the first image embedded.
    positional_embeddings: OnceLock<ArrayD<f32>>,
    image_size: u32,
    pixel_mean: [f32; 3],
    pixel_std: [f32; 3],
    mask_threshold: f32,
    low_res_size: (usize, usize),
    limits: SamLimits,
}

/// The encoder and decoder files [`Sam::load_variant`] reads from `dir` for `variant`: those
/// `manifest.json` names (with the variant's suffix, `encoder_quantized.onnx`); else the
/// transformers.js layout's `vision_encoder` + `prompt_encoder_mask_decoder` (at the top or
/// under `onnx/`) when the folder has it; else `encoder.onnx` + `decoder.onnx`. (A folder may
/// hold other layouts of the same model.)
pub fn model_files(dir: &Path, variant: Variant) -> Result<[PathBuf; 2]> {
    model_files_of(dir, &read_manifest(dir)?, variant)
}

fn read_manifest(dir: &Path) -> Result<ManifestJson> {
    match dir.join("manifest.json") {
        p if p.is_file() => read_json(&p),
        _ => Ok(ManifestJson::default()),
    }
}

/// Whether `dir` holds SAM graphs in the transformers.js / Optimum layout (any variant).
pub fn is_transformers_layout(dir: &Path) -> bool {
    !layout::variants_present(dir, &[HF_ENCODER]).is_empty()
}

fn model_files_of(dir: &Path, manifest: &ManifestJson, variant: Variant) -> Result<[PathBuf; 2]> {
    let named = manifest.encoder.is_some() || manifest.decoder.is_some();
    if !named && is_transformers_layout(dir) {
        return Ok([
            layout::find_graph(dir, &[HF_ENCODER], variant)?,
            layout::find_graph(dir, &[HF_DECODER], variant)?,
        ]);
    }
    let stem = |name: Option<&str>, default: &'static str| -> String {
        let name = name.unwrap_or(default);
        name.strip_suffix(".onnx").unwrap_or(name).to_string()
    };
    Ok([
        layout::find_graph(dir, &[&stem(manifest.encoder.as_deref(), "encoder")], variant)?,
        layout::find_graph(dir, &[&stem(manifest.decoder.as_deref(), "decoder")], variant)?,
    ])
}

/// Pre-processing parameters: `manifest.json`'s, else `preprocessor_config.json`'s
/// (`SamImageProcessor`: pad size or longest edge; rescale and normalisation folded into a mean
/// and std on 0..255 pixels, as `(x·r − m)/s = (x − m/r)/(s/r)`), else SAM's.
fn preprocessing(dir: &Path, manifest: &ManifestJson) -> Result<(Option<u32>, [f32; 3], [f32; 3])> {
    let path = dir.join("preprocessor_config.json");
    let (mut size, mut mean, mut std) = (None, None, None);
    if path.is_file() {
        let json = ProcessorJson::read(&path)?;
        let (rescale, normalize) = json.pixel_stats(&path)?;
        let r = match rescale {
            Some(r) if r.is_finite() && r > 0.0 => r,
            Some(_) => 1.0 / 255.0,
            None => 1.0,
        };
        let (m, s) = normalize.unwrap_or(([0.0; 3], [1.0; 3]));
        (mean, std) = (Some(m.map(|x| x / r)), Some(s.map(|x| x / r)));
        let edge = |v: &Option<serde_json::Value>, key: &str| v.as_ref()?.get(key)?.as_u64()?.try_into().ok();
        // SamImageProcessor pads to a square (or resizes the longest edge); Sam2's stretches to
        // {height, width}.
        size = edge(&json.pad_size, "height")
            .or_else(|| edge(&json.size, "longest_edge"))
            .or_else(|| edge(&json.size, "height"));
    }
    Ok((
        manifest.image_size.or(size),
        manifest.pixel_mean.or(mean).unwrap_or([123.675, 116.28, 103.53]),
        manifest.pixel_std.or(std).unwrap_or([58.395, 57.12, 57.375]),
    ))
}

impl Sam {
    /// Loads the full-precision graphs from `dir` (see [`Sam::load_variant`]).
    pub fn load(dir: &Path, backend: &dyn Backend, options: &SessionOptions) -> Result<Sam> {
        Sam::load_variant(dir, Variant::Fp32, backend, options)
    }

    /// Loads the encoder and decoder of `variant` from `dir` (see [`model_files`]).
    pub fn load_variant(dir: &Path, variant: Variant, backend: &dyn Backend, options: &SessionOptions) -> Result<Sam> {
        let manifest = read_manifest(dir)?;
        let [encoder_path, decoder_path] = model_files_of(dir, &manifest, variant)?;
        let (image_size, pixel_mean, pixel_std) = preprocessing(dir, &manifest)?;
        let encoder: Arc<dyn Session> = Arc::from(backend.load(&ModelSource::File(encoder_path), options)?);
        let decoder: Arc<dyn Session> = Arc::from(backend.load(&ModelSource::File(decoder_path), options)?);
        Sam::from_sessions(encoder, decoder, image_size, pixel_mean, pixel_std, manifest.mask_threshold.unwrap_or(0.0))
    }

    /// Wraps loaded sessions. `image_size` is taken from the plain encoder's input or the
    /// decoder's `mask_input` (4 × the embedding grid, × 4 again) when not given.
    pub fn from_sessions(
        encoder: Arc<dyn Session>,
        decoder: Arc<dyn Session>,
        image_size: Option<u32>,
        pixel_mean: [f32; 3],
        pixel_std: [f32; 3],
        mask_threshold: f32,
    ) -> Result<Sam> {
        let input = encoder.inputs().first().ok_or_else(|| ModelError::Config("encoder has no inputs".into()))?;
        let layout = match input.shape.len() {
            3 => EncoderLayout::Hwc { input: input.name.clone() },
            4 => EncoderLayout::Plain { input: input.name.clone() },
            n => {
                return Err(ModelError::Config(format!(
                    "encoder input '{}' has rank {n}; expected [H,W,3] or [1,3,S,S]",
                    input.name
                )));
            }
        };
        let encoder_has = |name: &str| encoder.outputs().iter().any(|o| o.name == name);
        let generation =
            if SAM2_FEATURES.iter().all(|n| encoder_has(n)) || SAM2_HF_FEATURES.iter().all(|n| encoder_has(n)) {
                Generation::Sam2
            } else if encoder_has("image_embeddings") {
                Generation::Sam
            } else {
                return Err(ModelError::Config(
                    "encoder has neither an 'image_embeddings' output (SAM) nor 'image_embed' + 'high_res_feats_0/1' \
                 or 'image_embeddings.0/1/2' (SAM 2)"
                        .into(),
                ));
            };
        let decoder_has = |name: &str| decoder.inputs().iter().any(|i| i.name == name);
        let decoder_layout = match generation {
            Generation::Sam2 if decoder_has("input_points") => DecoderLayout::Sam2Transformers,
            Generation::Sam2 => DecoderLayout::Sam2Exporter,
            Generation::Sam if decoder_has("input_points") => DecoderLayout::Transformers,
            Generation::Sam => DecoderLayout::Official,
        };
        let (expected_inputs, expected_outputs, layout_name): (&[&str], &[&str], &str) = match decoder_layout {
            DecoderLayout::Official => (
                &["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input"],
                &["iou_predictions", "low_res_masks"],
                "official SAM",
            ),
            DecoderLayout::Sam2Exporter => (
                &[
                    "image_embed",
                    "high_res_feats_0",
                    "high_res_feats_1",
                    "point_coords",
                    "point_labels",
                    "mask_input",
                    "has_mask_input",
                ],
                &["masks", "iou_predictions"],
                "samexporter SAM 2",
            ),
            DecoderLayout::Transformers => (
                &["image_embeddings", "input_points", "input_labels"],
                &["iou_scores", "pred_masks"],
                "transformers.js SAM",
            ),
            DecoderLayout::Sam2Transformers => (
                &[
                    "image_embeddings.0",
                    "image_embeddings.1",
                    "image_embeddings.2",
                    "input_points",
                    "input_labels",
                    "input_boxes",
                ],
                &["iou_scores", "pred_masks"],
                "onnx-community SAM 2",
            ),
        };
        for name in expected_inputs {
            if !decoder_has(name) {
                return Err(ModelError::Config(format!(
                    "decoder has no '{name}' input ({layout_name} layout expected)"
                )));
            }
        }
        for name in expected_outputs {
            if !decoder.outputs().iter().any(|o| o.name == *name) {
                return Err(ModelError::Config(format!(
                    "decoder has no '{name}' output ({layout_name} layout expected)"
                )));
            }
        }
        if decoder_has("image_positional_embeddings") && !encoder_has("image_positional_embeddings") {
            return Err(ModelError::Config(
                "the decoder takes image_positional_embeddings, which the encoder does not return".into(),
            ));
        }
        if generation == Generation::Sam2 && !matches!(layout, EncoderLayout::Plain { .. }) {
            return Err(ModelError::Config("a SAM 2 encoder takes a [1,3,S,S] image".into()));
        }
        let fixed = |shape: &[edgeinfer_onnx::Dim], at: usize| shape.get(at).and_then(|d| d.fixed());
        let low_res_size = match decoder_layout {
            DecoderLayout::Transformers | DecoderLayout::Sam2Transformers => {
                // pred_masks [B, P, 3, h, w], else 4x the embedding grid (the upscaling of every
                // SAM), as the decoder or the encoder declares it.
                let embedding = if decoder_layout == DecoderLayout::Sam2Transformers {
                    SAM2_HF_FEATURES[0]
                } else {
                    "image_embeddings"
                };
                let masks = decoder.outputs().iter().find(|o| o.name == "pred_masks").map(|o| o.shape.clone());
                let declared = |s: &[edgeinfer_onnx::Dim]| fixed(s, 2).is_some() && fixed(s, 3).is_some();
                let grid = decoder
                    .inputs()
                    .iter()
                    .chain(encoder.outputs())
                    .find(|o| o.name == embedding && declared(&o.shape))
                    .map(|o| o.shape.clone());
                let dims = |shape: Option<&[edgeinfer_onnx::Dim]>, a: usize, b: usize| {
                    shape.and_then(|s| Some((fixed(s, a)?, fixed(s, b)?)))
                };
                match dims(masks.as_deref(), 3, 4).or_else(|| dims(grid.as_deref(), 2, 3).map(|(h, w)| (h * 4, w * 4)))
                {
                    Some(size) => size,
                    None => {
                        return Err(ModelError::Config(
                            "cannot tell the mask size: neither pred_masks nor the image embedding has a fixed size"
                                .into(),
                        ));
                    }
                }
            }
            _ => {
                let mask_input = decoder
                    .inputs()
                    .iter()
                    .find(|i| i.name == "mask_input")
                    .map(|i| i.shape.clone())
                    .unwrap_or_default();
                match (fixed(&mask_input, 2), fixed(&mask_input, 3)) {
                    (Some(h), Some(w)) => (h, w),
                    _ => return Err(ModelError::Config("decoder mask_input must have a fixed [1,1,H,W] shape".into())),
                }
            }
        };
        let from_plain = match &layout {
            EncoderLayout::Plain { .. } => input.shape.get(3).and_then(|d| d.fixed()).map(|s| s as u32),
            EncoderLayout::Hwc { .. } => None,
        };
        let image_size = image_size.or(from_plain).unwrap_or((low_res_size.1 * 4) as u32);
        Ok(Sam {
            encoder,
            decoder,
            generation,
            layout,
            decoder_layout,
            positional_embeddings: OnceLock::new(),
            image_size,
            pixel_mean,
            pixel_std,
            mask_threshold,
            low_res_size,
            limits: SamLimits::default(),
        })
    }

    /// Sets prompt limits.
    pub fn set_limits(&mut self, limits: SamLimits) {
        self.limits = limits;
    }

    /// The encoder's input size (longest side after resize).
    pub fn image_size(&self) -> u32 {
        self.image_size
    }

    /// SAM or SAM 2.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// Which decoder interface the graphs have.
    pub fn decoder_layout(&self) -> DecoderLayout {
        self.decoder_layout
    }

    /// How the encoder takes its image.
    pub fn layout(&self) -> &EncoderLayout {
        &self.layout
    }

    /// The encoder session.
    pub fn encoder(&self) -> &Arc<dyn Session> {
        &self.encoder
    }

    /// The decoder session.
    pub fn decoder(&self) -> &Arc<dyn Session> {
        &self.decoder
    }

    /// Size after resizing the longest side to the encoder size (upstream `get_preprocess_shape`);
    /// SAM 2 stretches every image to S × S.
    pub fn preprocess_shape(&self, width: u32, height: u32) -> (u32, u32) {
        if self.generation == Generation::Sam2 {
            return (self.image_size, self.image_size);
        }
        let scale = f64::from(self.image_size) / f64::from(width.max(height));
        let w = (f64::from(width) * scale + 0.5) as u32;
        let h = (f64::from(height) * scale + 0.5) as u32;
        (w.max(1), h.max(1))
    }

    /// The encoder input SAM 2 expects: `SAM2Transforms` (to 0..1, antialiased bilinear resize
    /// to S × S, ImageNet normalisation), as `[1, 3, S, S]`.
    pub fn sam2_input(&self, image: &RgbImage) -> Result<Array4<f32>> {
        image::check_resize((image.width, image.height), (u64::from(self.image_size), u64::from(self.image_size)))?;
        let s = self.image_size as usize;
        let planes = image::to_nchw(image, 1.0, self.pixel_mean, self.pixel_std);
        let (w, h) = (image.width as usize, image.height as usize);
        let flat = planes.as_slice().map(<[f32]>::to_vec).unwrap_or_else(|| planes.iter().copied().collect());
        let resized = crate::resample::resize_planes_f32(&flat, 3, (w, h), (s, s), crate::resample::BILINEAR);
        Ok(Array4::from_shape_vec((1, 3, s, s), resized).unwrap_or_else(|_| Array4::zeros((1, 3, s, s))))
    }

    /// The encoder input of onnx-community's SAM 2, as transformers' `Sam2ImageProcessorFast`
    /// makes it: the 8-bit image stretched to S × S (antialiased bilinear, which torchvision
    /// computes as PIL does), then rescaled and ImageNet-normalised, as `[1, 3, S, S]`.
    pub fn sam2_processor_input(&self, image: &RgbImage) -> Result<Array4<f32>> {
        let resized = image::resize(image, self.image_size, self.image_size, Resample::Bilinear)?;
        Ok(image::to_nchw(&resized, 1.0, self.pixel_mean, self.pixel_std))
    }

    /// The encoder feed for SAM / SAM 1-style encoders: the image resized so its longest side is
    /// the encoder size, as HWC pixels or normalised and zero-padded NCHW, and the resized size.
    pub fn encoder_input(&self, image: &RgbImage) -> Result<((String, Tensor), (u32, u32))> {
        let (rw, rh) = self.preprocess_shape(image.width, image.height);
        let resized = image::resize(image, rw, rh, Resample::Bilinear)?;
        let feed = match &self.layout {
            EncoderLayout::Hwc { input } => (input.clone(), Tensor::F32(image::to_hwc_f32(&resized).into_dyn())),
            EncoderLayout::Plain { input } => {
                let s = self.image_size as usize;
                let normalised = image::to_nchw(&resized, 1.0, self.pixel_mean, self.pixel_std);
                let mut padded = Array4::<f32>::zeros((1, 3, s, s));
                padded.slice_mut(ndarray::s![.., .., ..rh as usize, ..rw as usize]).assign(&normalised);
                (input.clone(), Tensor::F32(padded.into_dyn()))
            }
        };
        Ok((feed, (rw, rh)))
    }

    /// Runs the encoder on an image.
    pub fn embed(&self, image: &RgbImage) -> Result<ImageEmbedding> {
        if self.generation == Generation::Sam2 {
            let EncoderLayout::Plain { input } = &self.layout else {
                return Err(ModelError::Config("a SAM 2 encoder takes a [1,3,S,S] image".into()));
            };
            let (pixels, names) = match self.decoder_layout {
                DecoderLayout::Sam2Transformers => (self.sam2_processor_input(image)?, SAM2_HF_FEATURES),
                _ => (self.sam2_input(image)?, SAM2_FEATURES),
            };
            let mut out = self.encoder.run_as_declared(vec![(input.clone(), Tensor::F32(pixels.into_dyn()))])?;
            let mut high_res_features = Vec::with_capacity(2);
            for name in &names[1..] {
                high_res_features.push(out.take(name)?.into_f32()?);
            }
            return Ok(ImageEmbedding {
                image_embeddings: out.take(names[0])?.into_f32()?,
                high_res_features,
                original: (image.width, image.height),
                resized: (self.image_size, self.image_size),
            });
        }
        let (feed, (rw, rh)) = self.encoder_input(image)?;
        let mut out = self.encoder.run_as_declared(vec![feed])?;
        if self.decoder_layout == DecoderLayout::Transformers && self.positional_embeddings.get().is_none() {
            let positional = out.take("image_positional_embeddings")?.into_f32()?;
            // Another thread may have set the same values first: either is right.
            let _ = self.positional_embeddings.set(positional);
        }
        Ok(ImageEmbedding {
            image_embeddings: out.take("image_embeddings")?.into_f32()?,
            high_res_features: Vec::new(),
            original: (image.width, image.height),
            resized: (rw, rh),
        })
    }

    /// Checks a prompt against the image and the limits.
    pub fn validate(&self, embedding: &ImageEmbedding, prompt: &Prompt) -> Result<()> {
        let (w, h) = (embedding.original.0 as f32, embedding.original.1 as f32);
        if prompt.points.is_empty() && prompt.bbox.is_none() {
            return Err(ModelError::BadInput("a prompt needs at least one point or a box".into()));
        }
        let count = prompt.points.len() + if prompt.bbox.is_some() { 2 } else { 0 };
        if count > self.limits.max_points {
            return Err(ModelError::TooLarge(format!(
                "{count} prompt points (a box counts as 2), the limit is {}",
                self.limits.max_points
            )));
        }
        let inside =
            |x: f32, y: f32| x.is_finite() && y.is_finite() && (0.0..=w).contains(&x) && (0.0..=h).contains(&y);
        for p in &prompt.points {
            if !inside(p.x, p.y) {
                return Err(ModelError::BadInput(format!(
                    "point ({}, {}) is outside the {}x{} image",
                    p.x, p.y, embedding.original.0, embedding.original.1
                )));
            }
        }
        if let Some(b) = &prompt.bbox {
            if !inside(b.x0, b.y0) || !inside(b.x1, b.y1) {
                return Err(ModelError::BadInput(format!(
                    "box ({}, {}, {}, {}) is outside the {}x{} image",
                    b.x0, b.y0, b.x1, b.y1, embedding.original.0, embedding.original.1
                )));
            }
            if b.x1 <= b.x0 || b.y1 <= b.y0 {
                return Err(ModelError::BadInput(format!(
                    "box ({}, {}, {}, {}) is empty or inverted: need x0 < x1 and y0 < y1",
                    b.x0, b.y0, b.x1, b.y1
                )));
            }
        }
        if let Some(m) = &prompt.mask_input
            && m.0.dim() != self.low_res_size
        {
            return Err(ModelError::BadInput(format!(
                "mask_input is {:?}, this model takes {:?}",
                m.0.dim(),
                self.low_res_size
            )));
        }
        Ok(())
    }

    /// Predicts masks for a prompt on an embedded image.
    pub fn segment(&self, embedding: &ImageEmbedding, prompt: &Prompt, options: &SegmentOptions) -> Result<Vec<Mask>> {
        self.validate(embedding, prompt)?;
        let (ow, oh) = embedding.original;
        let (lh, lw) = self.low_res_size;
        let answer = match self.decoder_layout {
            DecoderLayout::Transformers | DecoderLayout::Sam2Transformers => {
                self.decode_transformers(embedding, prompt)?
            }
            _ => self.decode_official(embedding, prompt)?,
        };
        let DecoderAnswer { iou, low_res, full_res, candidates_only } = answer;
        let k = iou.len();
        let score = |i: usize| iou.get(i).copied().unwrap_or(0.0);
        // SAM's official decoder answers the single-mask token first, then the multimask
        // candidates. The SAM 2 and transformers.js exports answer the three candidates only:
        // their single-mask answer is the best of them (upstream picks by stability instead,
        // which the exports do not carry).
        let mut chosen: Vec<usize> = if k == 1 || (candidates_only && !options.multimask) {
            let best = (0..k).max_by(|&a, &b| score(a).total_cmp(&score(b))).unwrap_or(0);
            vec![if k == 1 { 0 } else { best }]
        } else if candidates_only {
            (0..k).collect()
        } else if options.multimask {
            (1..k).collect()
        } else {
            vec![0]
        };
        if options.best_only && chosen.len() > 1 {
            let best = chosen.iter().copied().max_by(|&a, &b| score(a).total_cmp(&score(b)));
            chosen = best.into_iter().collect();
        }
        // Only the masks returned are brought to the original size (on the host, for decoders
        // that leave that to the caller).
        chosen
            .into_iter()
            .map(|i| {
                let binary = match &full_res {
                    Some(masks) => BinaryMask::from_logits(
                        ow,
                        oh,
                        masks.index_axis(Axis(1), i).iter().copied(),
                        self.mask_threshold,
                    ),
                    None => {
                        let logits = self.upsample(&low_res, i, embedding)?;
                        BinaryMask::from_logits(ow, oh, logits, self.mask_threshold)
                    }
                };
                let low = low_res.index_axis(Axis(1), i).index_axis(Axis(0), 0).to_owned();
                let low = low.into_dimensionality::<ndarray::Ix2>().unwrap_or_else(|_| Array2::zeros((lh, lw)));
                Ok(Mask {
                    bbox: binary.bbox(),
                    area: binary.area(),
                    score: score(i),
                    mask: binary,
                    low_res: LowResMask(low),
                })
            })
            .collect()
    }

    /// The official and SAM 2 exporter decoders: prompts in the encoder's frame as
    /// `point_coords`/`point_labels` (box corners labelled 2 and 3), a mask prompt or zeros.
    fn decode_official(&self, embedding: &ImageEmbedding, prompt: &Prompt) -> Result<DecoderAnswer> {
        let (ow, oh) = embedding.original;
        let (sx, sy) = self.prompt_scale(embedding);
        let mut coords: Vec<f32> = Vec::new();
        let mut labels: Vec<f32> = Vec::new();
        let sam2 = self.decoder_layout == DecoderLayout::Sam2Exporter;
        let box_corners = prompt.bbox.map(|b| [b.x0 * sx, b.y0 * sy, b.x1 * sx, b.y1 * sy]);
        // SAM 2's predictor puts the box corners before the points, SAM's ONNX usage after.
        let (box_first, box_last) = if sam2 { (box_corners, None) } else { (None, box_corners) };
        if let Some(corners) = box_first {
            coords.extend(corners);
            labels.extend([2.0, 3.0]);
        }
        for p in &prompt.points {
            coords.extend([p.x * sx, p.y * sy]);
            labels.push(if p.positive { 1.0 } else { 0.0 });
        }
        if let Some(corners) = box_last {
            coords.extend(corners);
            labels.extend([2.0, 3.0]);
        } else if prompt.bbox.is_none() && !sam2 {
            // Without a box the official SAM ONNX usage appends a padding point (the SAM 2
            // decoder appends its own).
            coords.extend([0.0, 0.0]);
            labels.push(-1.0);
        }
        let n = labels.len();
        let (lh, lw) = self.low_res_size;
        let (mask_input, has_mask) = match &prompt.mask_input {
            Some(m) => (
                m.0.clone()
                    .into_shape_with_order(IxDyn(&[1, 1, lh, lw]))
                    .map_err(|e| ModelError::BadInput(e.to_string()))?,
                1.0,
            ),
            None => (ArrayD::zeros(IxDyn(&[1, 1, lh, lw])), 0.0),
        };
        let mut feed = Vec::with_capacity(8);
        if sam2 {
            if embedding.high_res_features.len() != 2 {
                return Err(ModelError::BadInput("this embedding was not made by a SAM 2 encoder".into()));
            }
            feed.push(("image_embed".to_string(), Tensor::F32(embedding.image_embeddings.clone())));
            for (name, features) in SAM2_FEATURES[1..].iter().zip(&embedding.high_res_features) {
                feed.push((name.to_string(), Tensor::F32(features.clone())));
            }
        } else {
            feed.push(("image_embeddings".to_string(), Tensor::F32(embedding.image_embeddings.clone())));
        }
        feed.extend([
            ("point_coords".to_string(), Tensor::from_shape_vec(&[1, n, 2], coords)?),
            ("point_labels".to_string(), Tensor::from_shape_vec(&[1, n], labels)?),
            ("mask_input".to_string(), Tensor::F32(mask_input)),
            ("has_mask_input".to_string(), Tensor::from_shape_vec(&[1], vec![has_mask])?),
        ]);
        let upsample_here = sam2 || !self.decoder.inputs().iter().any(|i| i.name == "orig_im_size");
        if !upsample_here {
            feed.push(("orig_im_size".to_string(), Tensor::from_shape_vec(&[2], vec![oh as f32, ow as f32])?));
        }
        let mut out = self.decoder.run_as_declared(feed)?;
        let iou = out.take("iou_predictions")?.into_f32()?;
        let low_res = out.take(if sam2 { "masks" } else { "low_res_masks" })?.into_f32()?;
        let full_res = if upsample_here { None } else { Some(out.take("masks")?.into_f32()?) };
        Ok(DecoderAnswer { iou: iou.iter().copied().collect(), low_res, full_res, candidates_only: sam2 })
    }

    /// The transformers.js / Optimum decoders: `input_points [1, 1, N, 2]` in the encoder's frame
    /// with int64 `input_labels` (the graph pads), a box as `input_boxes [1, 1, 4]` where the
    /// graph has that input; no mask prompt. Answers `pred_masks [1, 1, 3, h, w]`.
    ///
    /// SAM (Optimum) takes `image_embeddings` and the encoder's `image_positional_embeddings`,
    /// and needs a point. SAM 2 (onnx-community) takes `image_embeddings.0/1/2` and always an
    /// `input_boxes` tensor, `[1, 0, 4]` without a box; a box alone goes with one not-a-point
    /// (label -1), as the graph wants a points tensor.
    fn decode_transformers(&self, embedding: &ImageEmbedding, prompt: &Prompt) -> Result<DecoderAnswer> {
        let sam2 = self.decoder_layout == DecoderLayout::Sam2Transformers;
        let layout = if sam2 { "onnx-community SAM 2 layout" } else { "transformers.js layout" };
        if prompt.mask_input.is_some() {
            return Err(ModelError::BadInput(format!(
                "this model's decoder ({layout}) takes no mask prompt: send points or a box"
            )));
        }
        let has_boxes = self.decoder.inputs().iter().any(|i| i.name == "input_boxes");
        if prompt.bbox.is_some() && !has_boxes {
            return Err(ModelError::BadInput(format!(
                "this model's decoder ({layout}) has no input_boxes: prompt it with points"
            )));
        }
        if prompt.points.is_empty() && !sam2 {
            return Err(ModelError::BadInput(format!("this model's decoder ({layout}) needs at least one point")));
        }
        let (sx, sy) = self.prompt_scale(embedding);
        let mut coords: Vec<f32> = prompt.points.iter().flat_map(|p| [p.x * sx, p.y * sy]).collect();
        let mut labels: Vec<i64> = prompt.points.iter().map(|p| i64::from(p.positive)).collect();
        if labels.is_empty() {
            coords = vec![0.0, 0.0];
            labels = vec![-1];
        }
        let n = labels.len();
        let labels =
            ArrayD::from_shape_vec(IxDyn(&[1, 1, n]), labels).map_err(|e| ModelError::BadInput(e.to_string()))?;
        let mut feed = Vec::with_capacity(6);
        if sam2 {
            let [high_res_0, high_res_1] = embedding.high_res_features.as_slice() else {
                return Err(ModelError::BadInput("this embedding was not made by a SAM 2 encoder".into()));
            };
            feed.extend([
                (SAM2_HF_FEATURES[0].to_string(), Tensor::F32(embedding.image_embeddings.clone())),
                (SAM2_HF_FEATURES[1].to_string(), Tensor::F32(high_res_0.clone())),
                (SAM2_HF_FEATURES[2].to_string(), Tensor::F32(high_res_1.clone())),
            ]);
        } else {
            feed.push(("image_embeddings".to_string(), Tensor::F32(embedding.image_embeddings.clone())));
            if self.decoder.inputs().iter().any(|i| i.name == "image_positional_embeddings") {
                let positional = self.positional_embeddings.get().ok_or_else(|| {
                    ModelError::BadInput("this embedding was not made by this model's encoder".into())
                })?;
                feed.push(("image_positional_embeddings".to_string(), Tensor::F32(positional.clone())));
            }
        }
        feed.extend([
            ("input_points".to_string(), Tensor::from_shape_vec(&[1, 1, n, 2], coords)?),
            ("input_labels".to_string(), Tensor::I64(labels)),
        ]);
        match prompt.bbox {
            Some(b) => feed.push((
                "input_boxes".to_string(),
                Tensor::from_shape_vec(&[1, 1, 4], vec![b.x0 * sx, b.y0 * sy, b.x1 * sx, b.y1 * sy])?,
            )),
            None if sam2 => {
                feed.push(("input_boxes".to_string(), Tensor::from_shape_vec(&[1, 0, 4], Vec::<f32>::new())?))
            }
            None => {}
        }
        let mut out = self.decoder.run_as_declared(feed)?;
        let iou: Vec<f32> = out.take("iou_scores")?.into_f32()?.iter().copied().collect();
        let masks = out.take("pred_masks")?.into_f32()?;
        let shape = masks.shape().to_vec();
        let [1, 1, k, h, w] = shape[..] else {
            return Err(ModelError::Config(format!("pred_masks has shape {shape:?}, expected [1,1,K,h,w]")));
        };
        if k != iou.len() {
            return Err(ModelError::Config(format!("{} iou_scores for {k} masks", iou.len())));
        }
        let low_res =
            masks.into_shape_with_order(IxDyn(&[1, k, h, w])).map_err(|e| ModelError::Config(e.to_string()))?;
        Ok(DecoderAnswer { iou, low_res, full_res: None, candidates_only: true })
    }

    /// Original-image pixels → the encoder's frame.
    fn prompt_scale(&self, embedding: &ImageEmbedding) -> (f32, f32) {
        let ((ow, oh), (rw, rh)) = (embedding.original, embedding.resized);
        (rw as f32 / ow as f32, rh as f32 / oh as f32)
    }

    /// Host-side version of upstream `postprocess_masks` for mask `i`: low-res logits → encoder
    /// size → crop the padding → original size (bilinear, align_corners=False); SAM 2 goes
    /// straight to the original size.
    fn upsample(&self, low_res: &ArrayD<f32>, i: usize, embedding: &ImageEmbedding) -> Result<Vec<f32>> {
        let (ow, oh) = (embedding.original.0 as usize, embedding.original.1 as usize);
        let (rw, rh) = (embedding.resized.0 as usize, embedding.resized.1 as usize);
        let shape = low_res.shape();
        if shape.len() != 4 || i >= shape[1] {
            return Err(ModelError::Config(format!("low_res_masks has shape {shape:?}, expected [1,K,h,w]")));
        }
        let (lh, lw) = (shape[2], shape[3]);
        let plane: Vec<f32> = low_res.index_axis(Axis(1), i).iter().copied().collect();
        if self.generation == Generation::Sam2 {
            return Ok(crate::resample::resize_bilinear_f32(&plane, lw, lh, ow, oh));
        }
        let s = self.image_size as usize;
        let full = crate::resample::resize_bilinear_f32(&plane, lw, lh, s, s);
        let mut cropped = Vec::with_capacity(rw * rh);
        for y in 0..rh {
            cropped.extend_from_slice(&full[y * s..y * s + rw]);
        }
        Ok(crate::resample::resize_bilinear_f32(&cropped, rw, rh, ow, oh))
    }
}
