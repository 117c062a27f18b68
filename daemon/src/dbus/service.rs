//! The interfaces at `/org/edgeinfer/Daemon1`: `Daemon1`, `Models1`, `Segmenter1`, `Embedder1`
//! and `Generator1`. Each method reads its D-Bus arguments into one [`Task`], hands it to the
//! registry like every transport does, and writes the [`Response`] back as D-Bus values. No model
//! logic here; the wire contract is daemon/dbus/org.edgeinfer.Daemon1.xml. Every method first
//! checks the caller's right ([`Access`]): inference for the client group, model control and
//! gallery changes for the admin group.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use bytes::Bytes;
use tracing::Instrument;
use zbus::message::Header;
use zbus::zvariant::{ObjectPath, OwnedFd, OwnedObjectPath};
use zbus::{Connection, interface};

use super::access::{Access, Right};
use super::error::Error;
use super::jobs::{self, Jobs};
use super::objects::model_path;
use super::options::{self, ImageOptions, Options};
use crate::api::{ApiError, ImageData, ImageRef, Response, Task};
use crate::frame::{FdImage, open_image_fd};
use crate::server::registry::Registry;

/// What every interface object shares.
pub struct Shared {
    /// The models.
    pub registry: Arc<Registry>,
    /// Node name.
    pub node: String,
    /// When the daemon started.
    pub started: Instant,
    /// Running and recently finished generations.
    pub jobs: Jobs,
    /// Who may call what.
    pub access: Access,
}

/// One mask: score, COCO box, area, mask id, RLE counts, PNG bytes.
pub type MaskTuple = (f64, (u32, u32, u32, u32), u64, String, String, Vec<u8>);
/// A segmentation: width, height, image hash, cache hit, masks.
pub type SegmentReply = (u32, u32, String, bool, Vec<MaskTuple>);

impl Shared {
    async fn run(&self, method: &'static str, model: &str, task: Task) -> Result<Response, Error> {
        let span = tracing::info_span!("dbus", method, model);
        let cancel = Arc::new(AtomicBool::new(false));
        Ok(self.registry.submit(model, task, cancel, None).instrument(span).await?)
    }

    fn image_from_bytes(&self, model: &str, image: &[u8], options: &ImageOptions) -> Result<ImageData, Error> {
        let limits = self.registry.image_limits(model)?;
        if image.len() > limits.max_bytes {
            return Err(ApiError::new(
                crate::api::ErrorCode::TooLarge,
                format!("image of {} bytes; this model takes at most {}", image.len(), limits.max_bytes),
            )
            .into());
        }
        Ok(image_data(Bytes::copy_from_slice(image), options))
    }

    async fn image_from_fd(&self, model: &str, fd: OwnedFd, options: &ImageOptions) -> Result<ImageData, Error> {
        let max = self.registry.image_limits(model)?.max_bytes;
        let fd: std::os::fd::OwnedFd = fd.into();
        let range = options.range;
        // A sealed memfd is mapped right here; only a file to copy goes to a blocking thread.
        let (data, access) = match open_image_fd(fd, range, max)? {
            FdImage::Mapped(bytes) => (bytes, crate::frame::FdAccess::Mapped),
            to_copy => tokio::task::spawn_blocking(move || to_copy.into_bytes())
                .await
                .map_err(|e| Error::Internal(e.to_string()))??,
        };
        tracing::debug!(?access, bytes = data.len(), "image from fd");
        Ok(image_data(data, options))
    }
}

fn image_data(data: Bytes, options: &ImageOptions) -> ImageData {
    match options.rgb8 {
        Some((width, height)) => ImageData::Rgb8 { width, height, data },
        None => ImageData::Encoded(data),
    }
}

fn unexpected(r: &Response) -> Error {
    Error::Internal(format!("unexpected response {r:?}"))
}

fn segment_reply(r: Response) -> Result<SegmentReply, Error> {
    let Response::Segmentation(s) = r else { return Err(unexpected(&r)) };
    let masks = s
        .masks
        .into_iter()
        .map(|m| {
            let [x, y, w, h] = m.bbox;
            let rle = m.rle.map(|r| r.counts).unwrap_or_default();
            (f64::from(m.score), (x, y, w, h), m.area, m.mask_id, rle, m.png.unwrap_or_default())
        })
        .collect();
    Ok((s.width, s.height, s.image_hash, s.cache_hit, masks))
}

fn first_embedding(r: Response) -> Result<Vec<f64>, Error> {
    match r {
        Response::Embeddings { mut embeddings, .. } if !embeddings.is_empty() => {
            Ok(embeddings.swap_remove(0).into_iter().map(f64::from).collect())
        }
        other => Err(unexpected(&other)),
    }
}

fn matches(r: Response) -> Result<Vec<(String, f64, u64)>, Error> {
    match r {
        Response::Classification { matches } => {
            Ok(matches.into_iter().map(|m| (m.label, f64::from(m.score), m.id)).collect())
        }
        other => Err(unexpected(&other)),
    }
}

fn added(r: Response) -> Result<(u64, u32), Error> {
    match r {
        Response::GalleryAdded { id, entries, .. } => Ok((id, u32::try_from(entries).unwrap_or(u32::MAX))),
        other => Err(unexpected(&other)),
    }
}

fn removed(r: Response) -> Result<u32, Error> {
    match r {
        Response::GalleryRemoved { removed } => Ok(u32::try_from(removed).unwrap_or(u32::MAX)),
        other => Err(unexpected(&other)),
    }
}

/// `org.edgeinfer.Daemon1`.
pub struct DaemonIface(pub Arc<Shared>);

#[interface(name = "org.edgeinfer.Daemon1")]
impl DaemonIface {
    /// Uptime, memory and per-model counters as JSON.
    #[zbus(out_args("stats_json"))]
    async fn stats(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<String, Error> {
        self.0.access.check(connection, &header, Right::Infer, "Stats").await?;
        Ok(crate::server::status::stats_json(&self.0.registry, self.0.started).to_string())
    }

    /// The Prometheus text exposition (what `[metrics] listen` serves).
    #[zbus(out_args("prometheus_text"))]
    async fn metrics(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<String, Error> {
        self.0.access.check(connection, &header, Right::Infer, "Metrics").await?;
        Ok(self.0.registry.prometheus_text(&self.0.node))
    }

    /// edgeinferd's version.
    #[zbus(property)]
    async fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    /// The node name.
    #[zbus(property)]
    async fn node(&self) -> String {
        self.0.node.clone()
    }

    /// Providers of the loaded ONNX Runtime.
    #[zbus(property)]
    async fn execution_providers(&self) -> Vec<String> {
        crate::server::status::loaded_execution_providers()
    }

    /// Each transport's state (mqtt, dbus: connecting, connected, reconnecting, stopped).
    #[zbus(property(emits_changed_signal = "false"))]
    async fn transports(&self) -> std::collections::HashMap<String, String> {
        self.0.registry.transports().into_iter().collect()
    }
}

/// `org.edgeinfer.Models1`.
pub struct ModelsIface(pub Arc<Shared>);

#[interface(name = "org.edgeinfer.Models1")]
impl ModelsIface {
    /// id, family, state, object path of every configured model.
    #[zbus(out_args("models"))]
    async fn list(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<(String, String, String, OwnedObjectPath)>, Error> {
        self.0.access.check(connection, &header, Right::Infer, "List").await?;
        Ok(self
            .0
            .registry
            .statuses()
            .into_iter()
            .map(|s| {
                let path = model_path(&s.id);
                (s.id, s.family.unwrap_or_default(), super::objects::state_name(s.state), path)
            })
            .collect())
    }

    /// Loads a model; its object path.
    #[zbus(out_args("object"))]
    async fn load(
        &self,
        model: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<OwnedObjectPath, Error> {
        self.0.access.check(connection, &header, Right::Admin, "Load").await?;
        let span = tracing::info_span!("dbus", method = "Load", model = model.as_str());
        self.0.registry.ensure_loaded(&model).instrument(span).await?;
        Ok(model_path(&model))
    }

    /// Unloads a model; whether it was loaded.
    #[zbus(out_args("was_loaded"))]
    async fn unload(
        &self,
        model: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<bool, Error> {
        self.0.access.check(connection, &header, Right::Admin, "Unload").await?;
        if self.0.registry.status(&model).is_none() {
            let known = self.0.registry.ids().join(", ");
            return Err(Error::UnknownModel(format!("no model '{model}' (configured: {known})")));
        }
        Ok(self.0.registry.unload(&model).await)
    }
}

/// `org.edgeinfer.Segmenter1`.
pub struct SegmenterIface(pub Arc<Shared>);

impl SegmenterIface {
    async fn segment_image(&self, model: &str, image: ImageRef, options: &Options) -> Result<SegmentReply, Error> {
        let params = options::segment(options)?;
        segment_reply(self.0.run("Segment", model, Task::Segment { image, params }).await?)
    }
}

#[interface(name = "org.edgeinfer.Segmenter1")]
impl SegmenterIface {
    /// Masks for prompts on an image given as bytes.
    #[zbus(out_args("width", "height", "image_hash", "cache_hit", "masks"))]
    async fn segment(
        &self,
        model: String,
        image: Vec<u8>,
        options: Options,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(u32, u32, String, bool, Vec<MaskTuple>), Error> {
        self.0.access.check(connection, &header, Right::Infer, "Segment").await?;
        let data = self.0.image_from_bytes(&model, &image, &options::image(&options)?)?;
        self.segment_image(&model, ImageRef::Data(data), &options).await
    }

    /// Masks for prompts on an image given as a file descriptor.
    #[zbus(out_args("width", "height", "image_hash", "cache_hit", "masks"))]
    async fn segment_fd(
        &self,
        model: String,
        image: OwnedFd,
        options: Options,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(u32, u32, String, bool, Vec<MaskTuple>), Error> {
        self.0.access.check(connection, &header, Right::Infer, "SegmentFd").await?;
        let data = self.0.image_from_fd(&model, image, &options::image(&options)?).await?;
        self.segment_image(&model, ImageRef::Data(data), &options).await
    }

    /// Masks for prompts on an image sent before.
    #[zbus(out_args("width", "height", "image_hash", "cache_hit", "masks"))]
    async fn segment_cached(
        &self,
        model: String,
        image_hash: String,
        options: Options,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(u32, u32, String, bool, Vec<MaskTuple>), Error> {
        self.0.access.check(connection, &header, Right::Infer, "SegmentCached").await?;
        self.segment_image(&model, ImageRef::Cached(image_hash), &options).await
    }
}

/// `org.edgeinfer.Embedder1`.
pub struct EmbedderIface(pub Arc<Shared>);

#[interface(name = "org.edgeinfer.Embedder1")]
impl EmbedderIface {
    /// One embedding.
    #[zbus(out_args("embedding"))]
    async fn embed(
        &self,
        model: String,
        image: Vec<u8>,
        options: Options,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<f64>, Error> {
        self.0.access.check(connection, &header, Right::Infer, "Embed").await?;
        let params = options::embed(&options)?;
        let image = self.0.image_from_bytes(&model, &image, &options::image(&options)?)?;
        first_embedding(self.0.run("Embed", &model, Task::Embed { images: vec![image], params }).await?)
    }

    /// One embedding of an image given as a file descriptor.
    #[zbus(out_args("embedding"))]
    async fn embed_fd(
        &self,
        model: String,
        image: OwnedFd,
        options: Options,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<f64>, Error> {
        self.0.access.check(connection, &header, Right::Infer, "EmbedFd").await?;
        let params = options::embed(&options)?;
        let image = self.0.image_from_fd(&model, image, &options::image(&options)?).await?;
        first_embedding(self.0.run("EmbedFd", &model, Task::Embed { images: vec![image], params }).await?)
    }

    /// Embeddings of several encoded images.
    #[zbus(out_args("embeddings"))]
    async fn embed_batch(
        &self,
        model: String,
        images: Vec<Vec<u8>>,
        options: Options,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<Vec<f64>>, Error> {
        self.0.access.check(connection, &header, Right::Infer, "EmbedBatch").await?;
        let params = options::embed(&options)?;
        let image_options = options::image(&options)?;
        let images =
            images.iter().map(|i| self.0.image_from_bytes(&model, i, &image_options)).collect::<Result<Vec<_>, _>>()?;
        match self.0.run("EmbedBatch", &model, Task::Embed { images, params }).await? {
            Response::Embeddings { embeddings, .. } => {
                Ok(embeddings.into_iter().map(|e| e.into_iter().map(f64::from).collect()).collect())
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Closest gallery labels.
    #[zbus(out_args("matches"))]
    async fn classify(
        &self,
        model: String,
        image: Vec<u8>,
        options: Options,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<(String, f64, u64)>, Error> {
        self.0.access.check(connection, &header, Right::Infer, "Classify").await?;
        let k = options::classify(&options)?;
        let image = self.0.image_from_bytes(&model, &image, &options::image(&options)?)?;
        matches(self.0.run("Classify", &model, Task::Classify { image, k }).await?)
    }

    /// Closest gallery labels of an image given as a file descriptor.
    #[zbus(out_args("matches"))]
    async fn classify_fd(
        &self,
        model: String,
        image: OwnedFd,
        options: Options,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<(String, f64, u64)>, Error> {
        self.0.access.check(connection, &header, Right::Infer, "ClassifyFd").await?;
        let k = options::classify(&options)?;
        let image = self.0.image_from_fd(&model, image, &options::image(&options)?).await?;
        matches(self.0.run("ClassifyFd", &model, Task::Classify { image, k }).await?)
    }

    /// Teaches an example.
    #[zbus(out_args("id", "entries"))]
    async fn gallery_add(
        &self,
        model: String,
        label: String,
        image: Vec<u8>,
        options: Options,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(u64, u32), Error> {
        self.0.access.check(connection, &header, Right::Admin, "GalleryAdd").await?;
        options::image_only(&options)?;
        let image = self.0.image_from_bytes(&model, &image, &options::image(&options)?)?;
        added(self.0.run("GalleryAdd", &model, Task::GalleryAdd { label, image }).await?)
    }

    /// Teaches an example given as a file descriptor.
    #[zbus(out_args("id", "entries"))]
    async fn gallery_add_fd(
        &self,
        model: String,
        label: String,
        image: OwnedFd,
        options: Options,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(u64, u32), Error> {
        self.0.access.check(connection, &header, Right::Admin, "GalleryAddFd").await?;
        options::image_only(&options)?;
        let image = self.0.image_from_fd(&model, image, &options::image(&options)?).await?;
        added(self.0.run("GalleryAddFd", &model, Task::GalleryAdd { label, image }).await?)
    }

    /// Forgets a label.
    #[zbus(out_args("removed"))]
    async fn gallery_remove(
        &self,
        model: String,
        label: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<u32, Error> {
        self.0.access.check(connection, &header, Right::Admin, "GalleryRemove").await?;
        removed(self.0.run("GalleryRemove", &model, Task::GalleryRemove { label: Some(label), id: None }).await?)
    }

    /// Forgets one example.
    #[zbus(out_args("removed"))]
    async fn gallery_remove_example(
        &self,
        model: String,
        id: u64,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<u32, Error> {
        self.0.access.check(connection, &header, Right::Admin, "GalleryRemoveExample").await?;
        removed(self.0.run("GalleryRemoveExample", &model, Task::GalleryRemove { label: None, id: Some(id) }).await?)
    }

    /// Labels and counts.
    #[zbus(out_args("labels"))]
    async fn gallery_list(
        &self,
        model: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<(String, u32)>, Error> {
        self.0.access.check(connection, &header, Right::Infer, "GalleryList").await?;
        match self.0.run("GalleryList", &model, Task::GalleryList).await? {
            Response::GalleryLabels { labels } => {
                Ok(labels.into_iter().map(|(l, n)| (l, u32::try_from(n).unwrap_or(u32::MAX))).collect())
            }
            other => Err(unexpected(&other)),
        }
    }
}

/// `org.edgeinfer.Generator1`.
pub struct GeneratorIface(pub Arc<Shared>);

#[interface(name = "org.edgeinfer.Generator1")]
impl GeneratorIface {
    /// Starts a generation; its job object.
    #[zbus(out_args("job"))]
    async fn generate(
        &self,
        model: String,
        prompt: String,
        options: Options,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<OwnedObjectPath, Error> {
        self.0.access.check(connection, &header, Right::Infer, "Generate").await?;
        let mut params = options::generate(&options)?;
        params.prompt = Some(prompt);
        jobs::start(&self.0, connection, model, params, header.sender().cloned()).await
    }

    /// Starts a chat generation; its job object.
    #[zbus(out_args("job"))]
    async fn generate_chat(
        &self,
        model: String,
        messages: Vec<(String, String)>,
        options: Options,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<OwnedObjectPath, Error> {
        self.0.access.check(connection, &header, Right::Infer, "GenerateChat").await?;
        let mut params = options::generate(&options)?;
        params.messages = Some(
            messages.into_iter().map(|(role, content)| edgeinfer_models::llama::Message { role, content }).collect(),
        );
        jobs::start(&self.0, connection, model, params, header.sender().cloned()).await
    }

    /// Generates and returns the whole completion.
    #[zbus(out_args(
        "text",
        "token_ids",
        "finish_reason",
        "prompt_tokens",
        "generated_tokens",
        "time_to_first_token_ms",
        "tokens_per_second",
        "total_ms"
    ))]
    async fn complete(
        &self,
        model: String,
        prompt: String,
        options: Options,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(String, Vec<u32>, String, u32, u32, f64, f64, f64), Error> {
        self.0.access.check(connection, &header, Right::Infer, "Complete").await?;
        let mut params = options::generate(&options)?;
        params.prompt = Some(prompt);
        params.stream = Some(false);
        match self.0.run("Complete", &model, Task::Generate(params)).await? {
            Response::Generation(c) => Ok((
                c.text,
                c.token_ids,
                jobs::finish_reason_name(c.finish_reason),
                u32::try_from(c.usage.prompt_tokens).unwrap_or(u32::MAX),
                u32::try_from(c.usage.generated_tokens).unwrap_or(u32::MAX),
                c.usage.time_to_first_token_ms,
                c.usage.tokens_per_second,
                c.usage.total_ms,
            )),
            other => Err(unexpected(&other)),
        }
    }

    /// Cancels a running job.
    async fn cancel(
        &self,
        job: ObjectPath<'_>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        self.0.access.check(connection, &header, Right::Infer, "Cancel").await?;
        self.0.jobs.cancel(job.as_str(), header.sender().map(|s| s.as_str()))
    }
}
