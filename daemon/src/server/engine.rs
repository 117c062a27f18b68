//! One loaded model and the execution of [`Task`]s on it: the glue between the API vocabulary and
//! the pipelines of `edgeinfer-models`. Used by the daemon's workers and by `edgeinfer local`;
//! transport-free.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use edgeinfer_models::cache::{ByteLru, CacheStats, content_hash};
use edgeinfer_models::dinov2::{Dinov2, EmbedOptions};
use edgeinfer_models::gallery::{Gallery, Opened, SharedGallery};
use edgeinfer_models::image::{ImageInput, ImageLimits, RgbImage, decode};
use edgeinfer_models::layout::Variant;
use edgeinfer_models::llama::{GenerateRequest, Llama, PromptInput, SamplingParams, TokenEvent};
use edgeinfer_models::manifest::Family;
use edgeinfer_models::sam::{ImageEmbedding, LowResMask, Prompt, Sam, SamLimits, SegmentOptions};
use edgeinfer_onnx::{BackendKind, EpConfig, SessionOptions};
use serde::{Deserialize, Serialize};

use crate::api::{
    ApiError, ErrorCode, Event, GenerateParams, ImageData, ImageRef, MaskFormat, MaskOut, Response, Segmentation, Task,
};

/// Per-model settings that affect loading and execution.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct EngineOptions {
    /// tract (default) or ort.
    pub backend: BackendKind,
    /// Which precision variant of the graph to load (`fp32`, the default; `fp16`, `int8`,
    /// `uint8`, `quantized`, `q4`, `q4f16`, `bnb4`, `qdq`: onnx-community's `model_<variant>.onnx`).
    pub variant: Variant,
    /// Execution providers (ort).
    pub execution_providers: Vec<EpConfig>,
    /// Session options (threads, optimisation...).
    #[serde(flatten)]
    pub session: SessionOptionsConfig,
    /// Image limits.
    pub image_limits: ImageLimits,
    /// SAM: most prompt points per request.
    pub max_points: usize,
    /// SAM: embedding cache budget in bytes.
    pub embedding_cache_bytes: usize,
    /// DINOv2: gallery file (none: no gallery).
    pub gallery: Option<PathBuf>,
    /// DINOv2: most gallery entries.
    pub gallery_max_entries: usize,
    /// DINOv2: gallery/classify pooling.
    pub gallery_pooling: edgeinfer_models::dinov2::Pooling,
    /// DINOv2: most images per graph call.
    pub max_batch: usize,
    /// DINOv2: most images in one embed request (MQTT `images`, D-Bus `EmbedBatch`).
    pub max_images: usize,
    /// LLM: longest prompt in tokens.
    pub max_prompt_tokens: Option<usize>,
    /// LLM: most new tokens per request (requests asking for more are refused).
    pub max_new_tokens: usize,
}

/// An embed request's decoded images may hold this many times `image_limits.max_pixels` in all.
pub const MAX_DECODED_IMAGES_PER_REQUEST: u64 = 4;

/// The session settings a config may set (a subset of [`SessionOptions`] with config names).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SessionOptionsConfig {
    /// Intra-op threads.
    pub intra_threads: Option<usize>,
    /// Inter-op threads (ort).
    pub inter_threads: Option<usize>,
    /// Graph optimisation level.
    pub optimization: edgeinfer_onnx::OptimizationLevel,
    /// Strict placement (ort).
    pub disable_cpu_fallback: bool,
    /// Optimised-model output path (ort).
    pub optimized_model_path: Option<PathBuf>,
    /// ORT session configuration entries (ort).
    pub ort_config: std::collections::BTreeMap<String, String>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            backend: BackendKind::Tract,
            variant: Variant::Fp32,
            execution_providers: Vec::new(),
            session: SessionOptionsConfig::default(),
            image_limits: ImageLimits::default(),
            max_points: SamLimits::default().max_points,
            embedding_cache_bytes: 256 * 1024 * 1024,
            gallery: None,
            gallery_max_entries: 10_000,
            gallery_pooling: edgeinfer_models::dinov2::Pooling::Cls,
            max_batch: 8,
            max_images: 32,
            max_prompt_tokens: None,
            max_new_tokens: 1024,
        }
    }
}

impl EngineOptions {
    /// The backend session options.
    pub fn session_options(&self) -> SessionOptions {
        SessionOptions {
            intra_threads: self.session.intra_threads,
            inter_threads: self.session.inter_threads,
            optimization: self.session.optimization,
            execution_providers: self.execution_providers.clone(),
            disable_cpu_fallback: self.session.disable_cpu_fallback,
            optimized_model_path: self.session.optimized_model_path.clone(),
            ort_config: self.session.ort_config.clone(),
            ..SessionOptions::default()
        }
    }
}

enum Kind {
    Sam { model: Box<Sam>, cache: ByteLru<String, ImageEmbedding>, masks: ByteLru<String, LowResMask>, seq: AtomicU64 },
    Dinov2 { model: Dinov2, gallery: Option<SharedGallery> },
    Llama { model: Box<Llama> },
}

/// A loaded model, ready to execute tasks.
pub struct Engine {
    id: String,
    family: Family,
    kind: Kind,
    options: EngineOptions,
    providers: edgeinfer_onnx::ProviderReport,
    graph: Option<PathBuf>,
}

impl Engine {
    /// Loads the model in `dir` (family detected when `family` is None).
    pub fn load(
        id: &str,
        dir: &Path,
        family: Option<Family>,
        options: &EngineOptions,
        ort_library: Option<&Path>,
    ) -> Result<Engine, ApiError> {
        let family = match family {
            Some(f) => f,
            None => edgeinfer_models::manifest::detect(dir)
                .map_err(|e| ApiError::new(ErrorCode::NotLoaded, e.to_string()))?,
        };
        let backend = edgeinfer_onnx::backend(options.backend, ort_library)
            .map_err(|e| ApiError::new(ErrorCode::Backend, e.to_string()))?;
        let session = options.session_options();
        // What is about to be read, before a load that takes a while for a large model.
        let files = edgeinfer_models::manifest::model_files(family, dir, options.variant).unwrap_or_default();
        let bytes: u64 = files.iter().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum();
        tracing::info!(
            model = id,
            %family,
            variant = %options.variant,
            backend = %options.backend,
            files = ?files,
            mib = bytes / (1 << 20),
            "loading"
        );
        let started = std::time::Instant::now();
        let load_err = |e: edgeinfer_models::ModelError| {
            ApiError::new(ErrorCode::NotLoaded, format!("loading '{id}' from {}: {e}", dir.display()))
        };
        let (kind, providers) = match family {
            // One pipeline for both generations: the graphs say which interface they have.
            Family::Sam | Family::Sam2 => {
                let mut model =
                    Sam::load_variant(dir, options.variant, backend.as_ref(), &session).map_err(load_err)?;
                model.set_limits(SamLimits { max_points: options.max_points });
                let providers = model.encoder().providers().clone();
                (
                    Kind::Sam {
                        model: Box::new(model),
                        cache: ByteLru::new(options.embedding_cache_bytes),
                        masks: ByteLru::new(options.embedding_cache_bytes / 8),
                        seq: AtomicU64::new(0),
                    },
                    providers,
                )
            }
            Family::Dinov2 => {
                let mut model =
                    Dinov2::load_variant(dir, options.variant, backend.as_ref(), &session).map_err(load_err)?;
                model.set_max_batch(options.max_batch);
                let gallery = match &options.gallery {
                    Some(path) => {
                        // One instance per file in the process: a reload's new engine shares the
                        // old engine's gallery, so adds made while both exist are kept.
                        let (gallery, opened) =
                            Gallery::shared(path, id, options.gallery_max_entries).map_err(load_err)?;
                        if let Opened::Quarantined { moved_to, reason } = opened {
                            tracing::error!(
                                model = %id,
                                moved_to = %moved_to.display(),
                                "{reason}: moved the gallery aside and started an empty one"
                            );
                        }
                        Some(gallery)
                    }
                    None => None,
                };
                let providers = model.session().providers().clone();
                (Kind::Dinov2 { model, gallery }, providers)
            }
            Family::Llama => {
                let mut model =
                    Llama::load_variant(dir, options.variant, backend.as_ref(), &session).map_err(load_err)?;
                model.set_max_prompt_tokens(options.max_prompt_tokens);
                let providers = model.session().providers().clone();
                (Kind::Llama { model: Box::new(model) }, providers)
            }
        };
        let graph = files.into_iter().next();
        tracing::info!(model = id, graph = ?graph, ms = started.elapsed().as_millis() as u64, "loaded");
        Ok(Engine { id: id.to_string(), family, kind, options: options.clone(), providers, graph })
    }

    /// The main graph file loaded (the encoder, for SAM).
    pub fn graph(&self) -> Option<&Path> {
        self.graph.as_deref()
    }

    /// Model id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Which execution providers run it.
    pub fn providers(&self) -> &edgeinfer_onnx::ProviderReport {
        &self.providers
    }

    /// Embedding-cache counters (SAM).
    pub fn cache_stats(&self) -> Option<CacheStats> {
        match &self.kind {
            Kind::Sam { cache, .. } => Some(cache.stats()),
            _ => None,
        }
    }

    fn decode(&self, image: &ImageData) -> Result<RgbImage, ApiError> {
        let input = match image {
            ImageData::Encoded(b) => ImageInput::Encoded(b),
            ImageData::Rgb8 { width, height, data } => ImageInput::Rgb8 { width: *width, height: *height, data },
        };
        decode(input, &self.options.image_limits).map_err(|e| edgeinfer_models::ModelError::from(e).into())
    }

    fn wrong_family(&self, task: &Task) -> ApiError {
        ApiError::bad_input(format!("model '{}' is a {} model; it does not do '{}'", self.id, self.family, task.name()))
    }

    /// Executes a task; streamed events (generation deltas) go to `events`.
    pub fn execute(
        &self,
        task: &Task,
        cancel: Option<Arc<AtomicBool>>,
        events: &mut dyn FnMut(Event),
    ) -> Result<Response, ApiError> {
        match (&self.kind, task) {
            (Kind::Sam { model, cache, masks, seq }, Task::Segment { image, params }) => {
                let (hash, embedding, hit) = match image {
                    ImageRef::Cached(hash) => {
                        let e = cache.get(hash).ok_or_else(|| {
                            ApiError::bad_input(format!(
                                "no cached image with hash {hash} (expired or never sent): send the image again"
                            ))
                        })?;
                        (hash.clone(), e, true)
                    }
                    ImageRef::Data(data) => {
                        let hash = content_hash(match data {
                            ImageData::Encoded(b) => b,
                            ImageData::Rgb8 { data, .. } => data,
                        });
                        match cache.get(&hash) {
                            Some(e) => (hash, e, true),
                            None => {
                                let rgb = self.decode(data)?;
                                let e = Arc::new(model.embed(&rgb)?);
                                cache.insert(hash.clone(), e.clone(), e.byte_len());
                                (hash, e, false)
                            }
                        }
                    }
                };
                let mut prompt = Prompt { points: params.points.clone(), bbox: params.bbox, mask_input: None };
                if let Some(id) = &params.mask_input {
                    if !id.starts_with(&hash) {
                        return Err(ApiError::bad_input(format!("mask_input {id} belongs to another image")));
                    }
                    let low = masks
                        .get(id)
                        .ok_or_else(|| ApiError::bad_input(format!("unknown or expired mask_input {id}")))?;
                    prompt.mask_input = Some((*low).clone());
                }
                let options = SegmentOptions { multimask: params.multimask, best_only: params.best_only };
                let result = model.segment(&embedding, &prompt, &options)?;
                let mut out = Vec::with_capacity(result.len());
                let answer = seq.fetch_add(1, Ordering::Relaxed);
                for (i, m) in result.into_iter().enumerate() {
                    let mask_id = format!("{hash}:{answer}:{i}");
                    let bytes = m.low_res.0.len() * 4;
                    masks.insert(mask_id.clone(), Arc::new(m.low_res.clone()), bytes);
                    let (rle, png) = match params.mask_format {
                        MaskFormat::Rle => (Some(m.mask.to_coco_rle()), None),
                        MaskFormat::Png => (None, Some(m.mask.to_png(edgeinfer_models::mask::PngDepth::One)?)),
                        MaskFormat::Png8 => (None, Some(m.mask.to_png(edgeinfer_models::mask::PngDepth::Eight)?)),
                        MaskFormat::None => (None, None),
                    };
                    out.push(MaskOut { score: m.score, bbox: m.bbox, area: m.area, mask_id, rle, png });
                }
                Ok(Response::Segmentation(Segmentation {
                    width: embedding.original.0,
                    height: embedding.original.1,
                    image_hash: hash,
                    cache_hit: hit,
                    masks: out,
                }))
            }
            (Kind::Dinov2 { model, .. }, Task::Embed { images, params }) => {
                if images.is_empty() {
                    return Err(ApiError::bad_input("no images to embed"));
                }
                if images.len() > self.options.max_images {
                    return Err(ApiError::new(
                        ErrorCode::TooLarge,
                        format!(
                            "{} images in one request; this model takes at most {} (max_images)",
                            images.len(),
                            self.options.max_images
                        ),
                    ));
                }
                // Decoded one by one against a budget for the whole request, so a request of
                // many large images is refused before it holds them all.
                let budget = self.options.image_limits.max_pixels.saturating_mul(MAX_DECODED_IMAGES_PER_REQUEST);
                let mut pixels = 0u64;
                let mut rgb: Vec<RgbImage> = Vec::with_capacity(images.len());
                for image in images {
                    let decoded = self.decode(image)?;
                    pixels = pixels.saturating_add(u64::from(decoded.width) * u64::from(decoded.height));
                    if pixels > budget {
                        return Err(ApiError::new(
                            ErrorCode::TooLarge,
                            format!(
                                "the images of this request decode to more than {budget} pixels \
                                 ({MAX_DECODED_IMAGES_PER_REQUEST} x image_limits.max_pixels); send fewer or smaller images"
                            ),
                        ));
                    }
                    rgb.push(decoded);
                }
                let options = EmbedOptions { pooling: params.pooling, normalize: params.normalize, patch_grid: false };
                let embeddings: Vec<Vec<f32>> = model.embed(&rgb, &options)?.into_iter().map(|e| e.vector).collect();
                let dim = embeddings.first().map(Vec::len).unwrap_or(0);
                Ok(Response::Embeddings { embeddings, dim })
            }
            (Kind::Dinov2 { model, gallery }, Task::Classify { image, k }) => {
                let gallery = gallery.as_ref().ok_or_else(|| self.no_gallery())?;
                let vector = self.gallery_vector(model, image)?;
                let g = gallery.lock().unwrap_or_else(|p| p.into_inner());
                Ok(Response::Classification { matches: g.classify(&vector, (*k).max(1))? })
            }
            (Kind::Dinov2 { model, gallery }, Task::GalleryAdd { label, image }) => {
                let gallery = gallery.as_ref().ok_or_else(|| self.no_gallery())?;
                let vector = self.gallery_vector(model, image)?;
                let mut g = gallery.lock().unwrap_or_else(|p| p.into_inner());
                let id = g.add(label, &vector)?;
                Ok(Response::GalleryAdded { id, label: label.trim().to_string(), entries: g.len() })
            }
            (Kind::Dinov2 { gallery, .. }, Task::GalleryRemove { label, id }) => {
                let gallery = gallery.as_ref().ok_or_else(|| self.no_gallery())?;
                let mut g = gallery.lock().unwrap_or_else(|p| p.into_inner());
                let removed = match (label, id) {
                    (Some(l), None) => g.remove_label(l)?,
                    (None, Some(i)) => usize::from(g.remove_id(*i)?),
                    _ => return Err(ApiError::bad_input("give exactly one of 'label' or 'id'")),
                };
                Ok(Response::GalleryRemoved { removed })
            }
            (Kind::Dinov2 { gallery, .. }, Task::GalleryList) => {
                let gallery = gallery.as_ref().ok_or_else(|| self.no_gallery())?;
                let g = gallery.lock().unwrap_or_else(|p| p.into_inner());
                Ok(Response::GalleryLabels { labels: g.labels() })
            }
            (Kind::Llama { model }, Task::Generate(params)) => {
                let request = self.generate_request(params)?;
                let mut done = None;
                for event in model.generate(&request, cancel)? {
                    match event? {
                        TokenEvent::Done(c) => done = Some(c),
                        delta => events(Event::Token(delta)),
                    }
                }
                done.map(Response::Generation).ok_or_else(|| ApiError::internal("generation ended without a result"))
            }
            (_, task) => Err(self.wrong_family(task)),
        }
    }

    fn no_gallery(&self) -> ApiError {
        ApiError::bad_input(format!(
            "model '{}' has no gallery configured (set `gallery = \"/path/gallery.json\"`)",
            self.id
        ))
    }

    fn gallery_vector(&self, model: &Dinov2, image: &ImageData) -> Result<Vec<f32>, ApiError> {
        let rgb = self.decode(image)?;
        let options = EmbedOptions { pooling: self.options.gallery_pooling, normalize: true, patch_grid: false };
        let mut e = model.embed(std::slice::from_ref(&rgb), &options)?;
        e.pop().map(|e| e.vector).ok_or_else(|| ApiError::internal("no embedding"))
    }

    fn generate_request(&self, p: &GenerateParams) -> Result<GenerateRequest, ApiError> {
        let input = match (&p.prompt, &p.messages) {
            (Some(text), None) => PromptInput::Text(text.clone()),
            (None, Some(messages)) => PromptInput::Chat(messages.clone()),
            (Some(_), Some(_)) => return Err(ApiError::bad_input("give either 'prompt' or 'messages', not both")),
            (None, None) => return Err(ApiError::bad_input("give a 'prompt' or 'messages'")),
        };
        let max = self.options.max_new_tokens;
        if let Some(n) = p.max_new_tokens
            && n > max
        {
            return Err(ApiError::new(
                ErrorCode::TooLarge,
                format!("max_new_tokens {n} is over this model's limit of {max}"),
            ));
        }
        Ok(GenerateRequest {
            input,
            max_new_tokens: Some(p.max_new_tokens.unwrap_or(max.min(256))),
            sampling: SamplingParams {
                temperature: p.temperature,
                top_k: p.top_k,
                top_p: p.top_p,
                repetition_penalty: p.repetition_penalty,
                seed: p.seed,
            },
            stop: p.stop.clone(),
            add_special_tokens: None,
            ignore_eos: p.ignore_eos,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn dino(gallery: &Path) -> Engine {
        let dir = edgeinfer_models::fixtures::fixtures_dir().join("dinov2");
        let options = EngineOptions { gallery: Some(gallery.to_path_buf()), ..EngineOptions::default() };
        Engine::load("dino", &dir, None, &options, None).unwrap()
    }

    fn add(engine: &Engine, label: &str) -> Response {
        let photo = std::fs::read(edgeinfer_models::fixtures::fixtures_dir().join("photos/coffee.png")).unwrap();
        let task = Task::GalleryAdd { label: label.into(), image: ImageData::Encoded(photo.into()) };
        engine.execute(&task, None, &mut |_| {}).unwrap()
    }

    fn labels(engine: &Engine) -> Vec<(String, usize)> {
        match engine.execute(&Task::GalleryList, None, &mut |_| {}).unwrap() {
            Response::GalleryLabels { labels } => labels,
            other => panic!("{other:?}"),
        }
    }

    /// Regression: a reload loaded the model (and its gallery) anew while the old engine still
    /// served, so adds made on the old one in that window were lost when it was dropped.
    #[test]
    fn an_add_on_the_old_engine_during_a_reload_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gallery.json");
        let old = dino(&path);
        add(&old, "before");
        let new = dino(&path);
        add(&old, "during");
        drop(old);
        assert_eq!(labels(&new), [("before".to_string(), 1), ("during".to_string(), 1)]);
        drop(new);
        assert_eq!(labels(&dino(&path)).len(), 2, "and on disk");
    }

    /// Regression: a corrupt gallery file failed the whole model. Now it is moved aside and the
    /// model serves (embedding and an empty gallery).
    #[test]
    fn a_corrupt_gallery_is_quarantined_and_the_model_serves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gallery.json");
        std::fs::write(&path, b"\x00\x01 not a gallery").unwrap();
        let engine = dino(&path);
        assert!(labels(&engine).is_empty());
        add(&engine, "fresh");
        let aside: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("gallery.json.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(std::fs::read(dir.path().join(&aside[0])).unwrap(), b"\x00\x01 not a gallery");
    }
}
