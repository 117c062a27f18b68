//! DINOv2 image embeddings: pre-processing exactly as the HF `BitImageProcessor` shipped with the
//! checkpoints (read from `preprocessor_config.json`), one batched graph call, pooling of the
//! `last_hidden_state` (CLS, mean of patch tokens, or `pooler_output`), optional patch grid.
//!
//! Layout (Optimum / onnx-community): `pixel_values [batch, 3, H, W]` → `last_hidden_state
//! [batch, 1 + registers + patches, D]`, `pooler_output [batch, D]`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use edgeinfer_onnx::{Backend, Dim, ModelSource, Session, SessionOptions, Tensor, TractPlanMode};
use ndarray::{Array3, Array4, Axis, s};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result, read_json};
use crate::image::{self, ImageError, Resample, RgbImage};
use crate::layout::Variant;

/// How a `preprocessor_config.json` resizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ResizeTo {
    /// Shortest edge to this many pixels, aspect kept (optionally capping the longest edge).
    ShortestEdge {
        /// Target of the shortest edge.
        shortest: u32,
        /// Cap on the longest edge.
        longest: Option<u32>,
    },
    /// Exactly this size.
    Exact {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
}

/// The image processor of a DINOv2 export.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Preprocessor {
    /// Resize step (None: no resize).
    pub resize: Option<ResizeTo>,
    /// Resampling filter of the resize.
    pub resample: Resample,
    /// Centre crop (width, height).
    pub crop: Option<(u32, u32)>,
    /// Multiply pixel values by this (1/255).
    pub rescale: Option<f32>,
    /// Per-channel mean and std.
    pub normalize: Option<MeanStd>,
}

impl Default for Preprocessor {
    /// facebook/dinov2-*'s processor: shortest edge 256 (bicubic), centre crop 224, ImageNet stats.
    fn default() -> Self {
        Preprocessor {
            resize: Some(ResizeTo::ShortestEdge { shortest: 256, longest: None }),
            resample: Resample::Bicubic,
            crop: Some((224, 224)),
            rescale: Some(1.0 / 255.0),
            normalize: Some(([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])),
        }
    }
}

/// Per-channel mean and standard deviation of a normalisation.
pub type MeanStd = ([f32; 3], [f32; 3]);

/// A transformers `preprocessor_config.json` (any image processor: the fields DINOv2's and
/// SAM's read).
#[derive(Deserialize)]
pub(crate) struct ProcessorJson {
    #[serde(default = "yes", deserialize_with = "flag_or_yes")]
    do_resize: bool,
    pub(crate) size: Option<serde_json::Value>,
    /// `SamImageProcessor`: the size images are padded to.
    pub(crate) pad_size: Option<serde_json::Value>,
    resample: Option<u32>,
    #[serde(default, deserialize_with = "flag_or_no")]
    do_center_crop: bool,
    crop_size: Option<serde_json::Value>,
    #[serde(default = "yes", deserialize_with = "flag_or_yes")]
    do_rescale: bool,
    rescale_factor: Option<f32>,
    #[serde(default = "yes", deserialize_with = "flag_or_yes")]
    do_normalize: bool,
    image_mean: Option<Vec<f32>>,
    image_std: Option<Vec<f32>>,
}

fn yes() -> bool {
    true
}

/// A flag written as `null` (transformers' fast processors save unset options so) takes its
/// default: true for the steps on by default, false for centre cropping.
fn flag_or_yes<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(true))
}

fn flag_or_no<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

impl ProcessorJson {
    /// Reads `path`.
    pub(crate) fn read(path: &Path) -> Result<ProcessorJson> {
        read_json(path)
    }

    /// The rescale factor (None: no rescale) and the per-channel mean and std (None: no
    /// normalisation; ImageNet's where the file names none).
    pub(crate) fn pixel_stats(&self, path: &Path) -> Result<(Option<f32>, Option<MeanStd>)> {
        let rescale = self.do_rescale.then(|| self.rescale_factor.unwrap_or(1.0 / 255.0));
        let normalize = if self.do_normalize {
            let three = |v: &Option<Vec<f32>>, d: [f32; 3]| -> Result<[f32; 3]> {
                match v {
                    None => Ok(d),
                    Some(v) => <[f32; 3]>::try_from(v.as_slice())
                        .map_err(|_| ModelError::Config(format!("{}: mean/std must have 3 values", path.display()))),
                }
            };
            Some((three(&self.image_mean, [0.485, 0.456, 0.406])?, three(&self.image_std, [0.229, 0.224, 0.225])?))
        } else {
            None
        };
        Ok((rescale, normalize))
    }
}

fn size_pair(v: &serde_json::Value) -> Option<(u32, u32)> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().map(|n| (n as u32, n as u32)),
        serde_json::Value::Object(o) => {
            let w = o.get("width")?.as_u64()? as u32;
            let h = o.get("height")?.as_u64()? as u32;
            Some((w, h))
        }
        _ => None,
    }
}

impl Preprocessor {
    /// Reads a `preprocessor_config.json`.
    pub fn from_file(path: &Path) -> Result<Preprocessor> {
        let json = ProcessorJson::read(path)?;
        let bad = |what: &str| ModelError::Config(format!("{}: {what}", path.display()));
        let resize = if json.do_resize {
            let size = json.size.as_ref().ok_or_else(|| bad("do_resize without size"))?;
            Some(match size.get("shortest_edge").and_then(|v| v.as_u64()) {
                Some(shortest) => ResizeTo::ShortestEdge {
                    shortest: shortest as u32,
                    longest: size.get("longest_edge").and_then(|v| v.as_u64()).map(|v| v as u32),
                },
                None => {
                    let (width, height) = size_pair(size).ok_or_else(|| bad("unsupported size"))?;
                    ResizeTo::Exact { width, height }
                }
            })
        } else {
            None
        };
        let resample = match json.resample {
            Some(code) => Resample::from_pil_code(code).ok_or_else(|| bad("unsupported resample code"))?,
            None => Resample::Bicubic,
        };
        let crop = if json.do_center_crop {
            Some(json.crop_size.as_ref().and_then(size_pair).ok_or_else(|| bad("do_center_crop without crop_size"))?)
        } else {
            None
        };
        let (rescale, normalize) = json.pixel_stats(path)?;
        Ok(Preprocessor { resize, resample, crop, rescale, normalize })
    }

    /// Output size (width, height) for an input of `width` × `height` before cropping, as HF's
    /// `get_resize_output_image_size` computes it; refused (not saturated) when the target or
    /// the resize's buffers would exceed [`image::MAX_RESIZE_PIXELS`].
    pub fn resized_size(&self, width: u32, height: u32) -> Result<(u32, u32), ImageError> {
        let target = match self.resize {
            None => return Ok((width, height)),
            Some(ResizeTo::Exact { width, height }) => (u64::from(width), u64::from(height)),
            Some(ResizeTo::ShortestEdge { shortest, longest }) => {
                let (short, long) = if width <= height { (width, height) } else { (height, width) };
                if short == 0 {
                    return Err(ImageError::Empty { width, height });
                }
                let mut new_short = u64::from(shortest);
                let mut new_long = image::resize_side(f64::from(shortest) * f64::from(long) / f64::from(short));
                if let Some(max) = longest
                    && new_long > u64::from(max)
                {
                    new_short = image::resize_side(f64::from(max) * new_short as f64 / new_long as f64);
                    new_long = u64::from(max);
                }
                if width <= height { (new_short, new_long) } else { (new_long, new_short) }
            }
        };
        image::check_resize((width, height), target)
    }

    /// Resize → centre crop → rescale → normalise, to `[1, 3, H, W]`.
    pub fn apply(&self, image: &RgbImage) -> Result<Array4<f32>> {
        let (w, h) = self.resized_size(image.width, image.height)?;
        let resized = image::resize(image, w, h, self.resample)?;
        let cropped = match self.crop {
            Some((cw, ch)) => image::center_crop(&resized, cw, ch),
            None => resized,
        };
        let scale = self.rescale.unwrap_or(1.0);
        let (mean, std) = self.normalize.unwrap_or(([0.0; 3], [1.0; 3]));
        Ok(image::to_nchw(&cropped, scale, mean, std))
    }
}

/// Which vector represents an image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The CLS token of `last_hidden_state`.
    #[default]
    Cls,
    /// Mean of the patch tokens (CLS and register tokens excluded).
    Mean,
    /// The graph's `pooler_output` (for DINOv2: the layer-normed CLS token).
    Pooler,
    /// CLS and patch mean concatenated (what `Dinov2ForImageClassification` feeds its head).
    ClsMean,
}

/// Options of one embedding request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmbedOptions {
    /// Pooling of the token outputs.
    pub pooling: Pooling,
    /// L2-normalise the vector.
    pub normalize: bool,
    /// Also return the patch tokens as an `[h, w, D]` grid.
    pub patch_grid: bool,
}

/// An image embedding.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Embedding {
    /// The vector.
    pub vector: Vec<f32>,
    /// Patch tokens `[h, w, D]`, when asked for.
    #[serde(skip)]
    pub patch_grid: Option<Array3<f32>>,
}

/// A loaded DINOv2 model.
pub struct Dinov2 {
    session: Arc<dyn Session>,
    preprocessor: Preprocessor,
    input: String,
    registers: usize,
    patch_size: usize,
    dim: usize,
    dynamic_batch: bool,
    max_batch: usize,
}

#[derive(Deserialize, Default)]
struct ModelConfigJson {
    #[serde(default)]
    num_register_tokens: usize,
    patch_size: Option<usize>,
    hidden_size: Option<usize>,
}

impl Dinov2 {
    /// Loads `model.onnx` (or the given file) with its `config.json` and
    /// `preprocessor_config.json` from `dir`; missing configs fall back to DINOv2's defaults.
    pub fn load(dir: &Path, backend: &dyn Backend, options: &SessionOptions) -> Result<Dinov2> {
        Dinov2::load_variant(dir, Variant::Fp32, backend, options)
    }

    /// [`Dinov2::load`] of a precision variant: `model<_variant>.onnx` at the top of `dir` or
    /// under `onnx/` (the onnx-community layout).
    pub fn load_variant(
        dir: &Path,
        variant: Variant,
        backend: &dyn Backend,
        options: &SessionOptions,
    ) -> Result<Dinov2> {
        let model = find_model(dir, variant)?;
        let mut options = options.clone();
        if options.tract_plan == TractPlanMode::Auto {
            // tract cannot evaluate DINOv2's interpolated position embeddings symbolically: plan
            // per image size (and batch size) from the start.
            options.tract_plan = TractPlanMode::PerShape;
        }
        let session: Arc<dyn Session> = Arc::from(backend.load(&ModelSource::File(model), &options)?);
        let config: ModelConfigJson = match dir.join("config.json") {
            p if p.is_file() => read_json(&p)?,
            _ => ModelConfigJson::default(),
        };
        let preprocessor = match dir.join("preprocessor_config.json") {
            p if p.is_file() => Preprocessor::from_file(&p)?,
            _ => Preprocessor::default(),
        };
        Dinov2::from_session(session, preprocessor, config.num_register_tokens, config.patch_size, config.hidden_size)
    }

    /// Wraps an already loaded session.
    pub fn from_session(
        session: Arc<dyn Session>,
        preprocessor: Preprocessor,
        registers: usize,
        patch_size: Option<usize>,
        hidden: Option<usize>,
    ) -> Result<Dinov2> {
        let input = session
            .inputs()
            .iter()
            .find(|i| i.name == "pixel_values")
            .or_else(|| session.inputs().first())
            .ok_or_else(|| ModelError::Config("the model has no inputs".into()))?;
        if input.shape.len() != 4 {
            return Err(ModelError::Config(format!("input '{}' is not [batch, 3, H, W]", input.name)));
        }
        if !session.outputs().iter().any(|o| o.name == "last_hidden_state") {
            return Err(ModelError::Config("the model has no 'last_hidden_state' output".into()));
        }
        let dynamic_batch = input.shape[0].fixed().is_none();
        let dim = hidden
            .or_else(|| {
                session.outputs().iter().find(|o| o.name == "last_hidden_state").and_then(|o| o.shape.get(2)?.fixed())
            })
            .unwrap_or(0);
        Ok(Dinov2 {
            input: input.name.clone(),
            session,
            preprocessor,
            registers,
            patch_size: patch_size.unwrap_or(14),
            dim,
            dynamic_batch,
            max_batch: 8,
        })
    }

    /// The pre-processing in use.
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// Largest batch per graph call (when the batch dim is dynamic).
    pub fn set_max_batch(&mut self, n: usize) {
        self.max_batch = n.max(1);
    }

    /// Embedding width (0 if unknown until the first call).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The underlying session.
    pub fn session(&self) -> &Arc<dyn Session> {
        &self.session
    }

    /// Embeds images, batching them into as few graph calls as the model allows.
    pub fn embed(&self, images: &[RgbImage], options: &EmbedOptions) -> Result<Vec<Embedding>> {
        let pixels: Vec<Array4<f32>> = images.iter().map(|i| self.preprocessor.apply(i)).collect::<Result<_>>()?;
        let per_call = if self.dynamic_batch { self.max_batch } else { 1 };
        let mut out = Vec::with_capacity(images.len());
        // Images of different sizes (no crop configured) cannot share a batch.
        let mut start = 0;
        while start < pixels.len() {
            let shape = pixels[start].shape().to_vec();
            let mut end = start + 1;
            while end < pixels.len() && end - start < per_call && pixels[end].shape() == shape.as_slice() {
                end += 1;
            }
            let views: Vec<_> = pixels[start..end].iter().map(|p| p.view()).collect();
            let batch = ndarray::concatenate(Axis(0), &views)
                .map_err(|e| ModelError::BadInput(format!("cannot batch images: {e}")))?;
            out.extend(self.embed_batch(batch, options)?);
            start = end;
        }
        Ok(out)
    }

    /// Runs one preprocessed batch `[B, 3, H, W]`.
    pub fn embed_batch(&self, pixel_values: Array4<f32>, options: &EmbedOptions) -> Result<Vec<Embedding>> {
        let (_, _, height, width) = pixel_values.dim();
        let mut outputs =
            self.session.run_as_declared(vec![(self.input.clone(), Tensor::F32(pixel_values.into_dyn()))])?;
        let hidden = outputs.take("last_hidden_state")?.into_f32()?;
        let hidden = hidden
            .into_dimensionality::<ndarray::Ix3>()
            .map_err(|e| ModelError::Config(format!("last_hidden_state is not [B, T, D]: {e}")))?;
        let pooler = match options.pooling {
            Pooling::Pooler => Some(
                outputs
                    .take("pooler_output")
                    .map_err(|_| ModelError::BadInput("this model has no pooler_output; use cls or mean".into()))?
                    .into_f32()?,
            ),
            _ => None,
        };
        let first_patch = 1 + self.registers;
        let (gh, gw) = (height / self.patch_size, width / self.patch_size);
        let mut result = Vec::with_capacity(hidden.len_of(Axis(0)));
        for b in 0..hidden.len_of(Axis(0)) {
            let tokens = hidden.index_axis(Axis(0), b);
            let patches = tokens.slice(s![first_patch.., ..]);
            let cls = tokens.row(0);
            let mut vector: Vec<f32> = match options.pooling {
                Pooling::Cls => cls.to_vec(),
                Pooling::Mean => mean_rows(&patches),
                Pooling::Pooler => {
                    pooler.as_ref().map(|p| p.index_axis(Axis(0), b).iter().copied().collect()).unwrap_or_default()
                }
                Pooling::ClsMean => cls.iter().copied().chain(mean_rows(&patches)).collect(),
            };
            if options.normalize {
                l2_normalize(&mut vector);
            }
            let patch_grid = if options.patch_grid {
                let d = tokens.len_of(Axis(1));
                if patches.len_of(Axis(0)) != gh * gw {
                    return Err(ModelError::Config(format!(
                        "{} patch tokens do not form a {gh}x{gw} grid (registers: {})",
                        patches.len_of(Axis(0)),
                        self.registers
                    )));
                }
                Some(
                    patches
                        .to_owned()
                        .into_shape_with_order((gh, gw, d))
                        .map_err(|e| ModelError::Config(e.to_string()))?,
                )
            } else {
                None
            };
            result.push(Embedding { vector, patch_grid });
        }
        Ok(result)
    }
}

fn mean_rows(rows: &ndarray::ArrayView2<'_, f32>) -> Vec<f32> {
    rows.mean_axis(Axis(0)).map(|m| m.to_vec()).unwrap_or_default()
}

/// Scales `v` to unit length (left as is if all zeros).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Cosine similarity of two vectors (0 if either is all zeros or lengths differ).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na * nb) }
}

/// The ONNX file of a model directory: `model.onnx`, else the only `*.onnx` file.
pub fn find_model(dir: &Path, variant: Variant) -> Result<PathBuf> {
    if dir.is_file() {
        return Ok(dir.to_path_buf());
    }
    let found = crate::layout::find_graph(dir, &["model"], variant);
    if found.is_ok() || variant != Variant::Fp32 {
        return found;
    }
    let onnx: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| ModelError::Io { path: dir.to_path_buf(), source })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    match onnx.as_slice() {
        [one] => Ok(one.clone()),
        [] => found,
        _ => Err(ModelError::Config(format!("several .onnx files in {}: name one", dir.display()))),
    }
}

/// Whether a shape's batch dim is symbolic.
pub fn is_dynamic(d: &Dim) -> bool {
    d.fixed().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_sizes_follow_hf() {
        let p = Preprocessor::default();
        assert_eq!(p.resized_size(451, 300).unwrap(), (384, 256)); // int(256*451/300) = 384
        assert_eq!(p.resized_size(300, 200).unwrap(), (384, 256));
        assert_eq!(p.resized_size(180, 250).unwrap(), (256, 355)); // int(256*250/180) = 355
        let capped = Preprocessor { resize: Some(ResizeTo::ShortestEdge { shortest: 256, longest: Some(300) }), ..p };
        assert_eq!(capped.resized_size(1000, 100).unwrap(), (300, 30));
        // A 40,000,000 x 1 image would need a 10,240,000,000 x 256 target: refused, not
        // saturated to u32::MAX and allocated.
        assert!(matches!(p.resized_size(40_000_000, 1), Err(ImageError::ResizeTooLarge { to_w: 10_240_000_000, .. })));
        assert!(matches!(p.resized_size(1, 40_000_000), Err(ImageError::ResizeTooLarge { .. })));
    }

    #[test]
    fn cosine_and_normalize() {
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-6);
        assert!((cosine(&[1.0, 0.0], &[0.0, 1.0])).abs() < 1e-6);
        assert!((cosine(&[1.0, 1.0], &[2.0, 2.0]) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[0.0], &[1.0]), 0.0);
    }
}
