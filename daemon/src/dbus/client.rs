//! The `edgeinfer` client side of the D-Bus API, on the proxies generated from the shipped XML:
//! a [`Task`] becomes a method call (images go as a sealed memfd), the reply becomes the same
//! [`Response`] the MQTT client returns, so both print identically. Generation subscribes to the
//! job signals before calling `Generate`, so no token is missed.

use std::collections::HashMap;
use std::time::Duration;

use edgeinfer_models::gallery::Match;
use edgeinfer_models::llama::{Completion, TokenEvent, Usage};
use edgeinfer_models::mask::CocoRle;
use futures_util::StreamExt;
use zbus::proxy::CacheProperties;
use zbus::zvariant::{Fd, ObjectPath, StructureBuilder, Value};
use zbus::{Connection, MatchRule, MessageStream};

use super::error::to_api_error;
use super::jobs::JOBS;
use super::proxy::{Daemon1Proxy, Embedder1Proxy, Generator1Proxy, Model1Proxy, Models1Proxy, Segmenter1Proxy};
use super::{NAME, ROOT};
use crate::api::ModelSummary;
use crate::api::{ApiError, ErrorCode, Event, ImageData, ImageRef, MaskFormat, MaskOut, Response, Segmentation, Task};
use crate::frame::sealed_memfd;

/// A connection to edgeinferd over D-Bus.
pub struct DbusClient {
    conn: Connection,
    timeout: Duration,
}

fn api(e: zbus::Error) -> ApiError {
    to_api_error(e)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e.to_string())
}

/// The a{sv} options of a request, owned.
type OptionValues = Vec<(&'static str, Value<'static>)>;

fn as_dict(values: &OptionValues) -> HashMap<&str, &Value<'static>> {
    values.iter().map(|(k, v)| (*k, v)).collect()
}

/// An image as a sealed memfd plus its format options.
fn image_fd(image: &ImageData, options: &mut OptionValues) -> Result<std::os::fd::OwnedFd, ApiError> {
    let data: &[u8] = match image {
        ImageData::Encoded(b) => b,
        ImageData::Rgb8 { width, height, data } => {
            options.push(("format", Value::from("rgb8")));
            options.push(("width", Value::U32(*width)));
            options.push(("height", Value::U32(*height)));
            data
        }
    };
    sealed_memfd("edgeinfer-image", data).map_err(|e| internal(format!("cannot create a memfd: {e}")))
}

impl DbusClient {
    /// Connects to `bus` (`system`, `session` or an address) and checks the daemon is there.
    pub async fn connect(bus: &str, timeout: Duration) -> Result<DbusClient, ApiError> {
        let conn = super::builder(bus)
            .map(|b| b.max_queued(1 << 16).method_timeout(timeout))
            .map_err(api)?
            .build()
            .await
            .map_err(|e| ApiError::new(ErrorCode::NotLoaded, format!("cannot connect to the {bus} D-Bus bus: {e}")))?;
        let dbus = zbus::fdo::DBusProxy::new(&conn).await.map_err(api)?;
        let name = zbus::names::BusName::try_from(NAME).map_err(internal)?;
        if !dbus.name_has_owner(name).await.map_err(|e| api(e.into()))? {
            return Err(ApiError::new(
                ErrorCode::NotLoaded,
                format!("no edgeinferd on the {bus} bus ({NAME} has no owner): is it running with [dbus] enabled?"),
            ));
        }
        Ok(DbusClient { conn, timeout })
    }

    /// The bus connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    async fn proxy<'a, P>(&'a self, path: &'a str) -> Result<P, ApiError>
    where
        P: From<zbus::Proxy<'a>> + zbus::proxy::Defaults,
    {
        zbus::proxy::Builder::<P>::new(&self.conn)
            .destination(NAME)
            .and_then(|b| b.path(path))
            .map_err(api)?
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(api)
    }

    /// The daemon's models.
    pub async fn models(&self) -> Result<Vec<ModelSummary>, ApiError> {
        let models: Models1Proxy = self.proxy(ROOT).await?;
        let mut out = Vec::new();
        for (id, family, state, path) in models.list().await.map_err(api)? {
            let model: Model1Proxy = self.proxy(path.as_str()).await?;
            let error = model.error().await.map_err(api)?;
            out.push(ModelSummary {
                id,
                family,
                state,
                backend: model.backend().await.map_err(api)?,
                providers: model.execution_providers().await.map_err(api)?,
                variant: model.variant().await.map_err(api)?,
                graph: model.graph().await.map_err(api)?,
                error: (!error.is_empty()).then_some(error),
            });
        }
        Ok(out)
    }

    /// The stats document (pretty JSON), or with `prometheus` the Prometheus text exposition.
    pub async fn stats(&self, prometheus: bool) -> Result<String, ApiError> {
        let daemon: Daemon1Proxy = self.proxy(ROOT).await?;
        if prometheus {
            return daemon.metrics().await.map_err(api);
        }
        let stats = daemon.stats().await.map_err(api)?;
        let v: serde_json::Value = serde_json::from_str(&stats).map_err(internal)?;
        Ok(format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or(stats)))
    }

    /// Loads a model; its state afterwards.
    pub async fn load(&self, model: &str) -> Result<String, ApiError> {
        let models: Models1Proxy = self.proxy(ROOT).await?;
        let path = models.load(model).await.map_err(api)?;
        let object: Model1Proxy = self.proxy(path.as_str()).await?;
        object.state().await.map_err(api)
    }

    /// Unloads a model; its state afterwards.
    pub async fn unload(&self, model: &str) -> Result<String, ApiError> {
        let models: Models1Proxy = self.proxy(ROOT).await?;
        models.unload(model).await.map_err(api)?;
        let path = super::objects::model_path(model);
        let object: Model1Proxy = self.proxy(path.as_str()).await?;
        object.state().await.map_err(api)
    }

    /// Runs a task, passing generation deltas to `on_event`.
    pub async fn task(
        &self,
        model: &str,
        task: &Task,
        on_event: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Response, ApiError> {
        match task {
            Task::Segment { image, params } => {
                let mut o: OptionValues = Vec::new();
                if !params.points.is_empty() {
                    let points: Vec<Value<'static>> = params
                        .points
                        .iter()
                        .map(|p| {
                            StructureBuilder::new()
                                .add_field(f64::from(p.x))
                                .add_field(f64::from(p.y))
                                .add_field(p.positive)
                                .build()
                                .map(Value::Structure)
                        })
                        .collect::<Result<_, _>>()
                        .map_err(internal)?;
                    o.push(("points", Value::Array(points.into())));
                }
                if let Some(b) = &params.bbox {
                    let s = (f64::from(b.x0), f64::from(b.y0), f64::from(b.x1), f64::from(b.y1));
                    o.push(("box", Value::Structure(s.into())));
                }
                o.push(("multimask", Value::Bool(params.multimask)));
                o.push(("best_only", Value::Bool(params.best_only)));
                let format = match params.mask_format {
                    MaskFormat::Rle => "rle",
                    MaskFormat::Png => "png",
                    MaskFormat::Png8 => "png8",
                    MaskFormat::None => "none",
                };
                o.push(("mask_format", Value::from(format)));
                if let Some(m) = &params.mask_input {
                    o.push(("mask_input", Value::from(m.clone())));
                }
                let segmenter: Segmenter1Proxy = self.proxy(ROOT).await?;
                let reply = match image {
                    ImageRef::Cached(hash) => segmenter.segment_cached(model, hash, as_dict(&o)).await,
                    ImageRef::Data(data) => {
                        let fd = image_fd(data, &mut o)?;
                        segmenter.segment_fd(model, Fd::from(&fd), as_dict(&o)).await
                    }
                }
                .map_err(api)?;
                let (width, height, image_hash, cache_hit, masks) = reply;
                let masks = masks
                    .into_iter()
                    .map(|(score, (x, y, w, h), area, mask_id, counts, png)| MaskOut {
                        score: score as f32,
                        bbox: [x, y, w, h],
                        area,
                        mask_id,
                        rle: (!counts.is_empty()).then_some(CocoRle { size: [height, width], counts }),
                        png: (!png.is_empty()).then_some(png),
                    })
                    .collect();
                Ok(Response::Segmentation(Segmentation { width, height, image_hash, cache_hit, masks }))
            }
            Task::Embed { images, params } => {
                let pooling = serde_json::to_value(params.pooling).map_err(internal)?;
                let mut o: OptionValues = vec![
                    ("pooling", Value::from(pooling.as_str().unwrap_or("cls").to_string())),
                    ("normalize", Value::Bool(params.normalize)),
                ];
                let embedder: Embedder1Proxy = self.proxy(ROOT).await?;
                let embeddings: Vec<Vec<f64>> = match images.as_slice() {
                    [one] => {
                        let fd = image_fd(one, &mut o)?;
                        vec![embedder.embed_fd(model, Fd::from(&fd), as_dict(&o)).await.map_err(api)?]
                    }
                    many => {
                        let bytes = many
                            .iter()
                            .map(|i| match i {
                                ImageData::Encoded(b) => Ok(&b[..]),
                                ImageData::Rgb8 { .. } => Err(ApiError::bad_input(
                                    "EmbedBatch takes encoded images; send raw frames one by one",
                                )),
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        embedder.embed_batch(model, &bytes, as_dict(&o)).await.map_err(api)?
                    }
                };
                let dim = embeddings.first().map(Vec::len).unwrap_or(0);
                let embeddings = embeddings.into_iter().map(|e| e.into_iter().map(|x| x as f32).collect()).collect();
                Ok(Response::Embeddings { embeddings, dim })
            }
            Task::Classify { image, k } => {
                let mut o: OptionValues = vec![("k", Value::U32(u32::try_from(*k).unwrap_or(u32::MAX)))];
                let fd = image_fd(image, &mut o)?;
                let embedder: Embedder1Proxy = self.proxy(ROOT).await?;
                let matches = embedder.classify_fd(model, Fd::from(&fd), as_dict(&o)).await.map_err(api)?;
                Ok(Response::Classification {
                    matches: matches
                        .into_iter()
                        .map(|(label, score, id)| Match { label, score: score as f32, id })
                        .collect(),
                })
            }
            Task::GalleryAdd { label, image } => {
                let mut o: OptionValues = Vec::new();
                let fd = image_fd(image, &mut o)?;
                let embedder: Embedder1Proxy = self.proxy(ROOT).await?;
                let (id, entries) =
                    embedder.gallery_add_fd(model, label, Fd::from(&fd), as_dict(&o)).await.map_err(api)?;
                Ok(Response::GalleryAdded { id, label: label.clone(), entries: entries as usize })
            }
            Task::GalleryRemove { label, id } => {
                let embedder: Embedder1Proxy = self.proxy(ROOT).await?;
                let removed = match (label, id) {
                    (Some(label), None) => embedder.gallery_remove(model, label).await,
                    (None, Some(id)) => embedder.gallery_remove_example(model, *id).await,
                    _ => return Err(ApiError::bad_input("give either a label or an example id")),
                }
                .map_err(api)?;
                Ok(Response::GalleryRemoved { removed: removed as usize })
            }
            Task::GalleryList => {
                let embedder: Embedder1Proxy = self.proxy(ROOT).await?;
                let labels = embedder.gallery_list(model).await.map_err(api)?;
                Ok(Response::GalleryLabels { labels: labels.into_iter().map(|(l, n)| (l, n as usize)).collect() })
            }
            Task::Generate(params) => self.generate(model, params, on_event).await,
        }
    }

    async fn generate(
        &self,
        model: &str,
        params: &crate::api::GenerateParams,
        on_event: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Response, ApiError> {
        let mut o: OptionValues = Vec::new();
        if let Some(n) = params.max_new_tokens {
            o.push(("max_new_tokens", Value::U32(u32::try_from(n).unwrap_or(u32::MAX))));
        }
        if let Some(t) = params.temperature {
            o.push(("temperature", Value::F64(f64::from(t))));
        }
        if let Some(k) = params.top_k {
            o.push(("top_k", Value::U32(u32::try_from(k).unwrap_or(u32::MAX))));
        }
        if let Some(p) = params.top_p {
            o.push(("top_p", Value::F64(f64::from(p))));
        }
        if let Some(r) = params.repetition_penalty {
            o.push(("repetition_penalty", Value::F64(f64::from(r))));
        }
        if let Some(s) = params.seed {
            o.push(("seed", Value::U64(s)));
        }
        if !params.stop.is_empty() {
            o.push(("stop", Value::Array(params.stop.clone().into())));
        }
        if params.ignore_eos {
            o.push(("ignore_eos", Value::Bool(true)));
        }
        // Subscribe to the daemon's job signals before the job exists.
        let owner = zbus::fdo::DBusProxy::new(&self.conn)
            .await
            .map_err(api)?
            .get_name_owner(zbus::names::BusName::try_from(NAME).map_err(internal)?)
            .await
            .map_err(|e| api(e.into()))?;
        let rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender(owner.to_string())
            .and_then(|b| b.interface("org.edgeinfer.Job1"))
            .and_then(|b| b.path_namespace(JOBS))
            .map_err(api)?
            .build();
        let mut signals = MessageStream::for_match_rule(rule, &self.conn, Some(1 << 16)).await.map_err(api)?;
        let generator: Generator1Proxy = self.proxy(ROOT).await?;
        let job = match &params.messages {
            Some(messages) => {
                let m: Vec<(&str, &str)> = messages.iter().map(|m| (m.role.as_str(), m.content.as_str())).collect();
                let refs: Vec<&(&str, &str)> = m.iter().collect();
                generator.generate_chat(model, &refs, as_dict(&o)).await
            }
            None => generator.generate(model, params.prompt.as_deref().unwrap_or(""), as_dict(&o)).await,
        }
        .map_err(api)?;
        let stream = params.stream.unwrap_or(true);
        let finished = tokio::time::timeout(self.timeout, async {
            while let Some(message) = signals.next().await {
                let message = message.map_err(api)?;
                let header = message.header();
                if header.path().map(|p| p.as_str()) != Some(job.as_str()) {
                    continue;
                }
                match header.member().map(|m| m.as_str()) {
                    Some("Token") if stream => {
                        let (seq, text, token_ids): (u64, String, Vec<u32>) =
                            message.body().deserialize().map_err(api)?;
                        on_event(Event::Token(TokenEvent::Delta { seq, text, token_ids }));
                    }
                    Some("Finished") => {
                        type Finished = (String, String, Vec<u32>, String, u32, u32, f64, f64, f64, String, String);
                        let f: Finished = message.body().deserialize().map_err(api)?;
                        return Ok(f);
                    }
                    _ => {}
                }
            }
            Err(ApiError::new(ErrorCode::NotLoaded, "the D-Bus connection closed before the job finished"))
        })
        .await;
        let (state, text, token_ids, reason, prompt_tokens, generated_tokens, ttft, tps, total_ms, error_name, message) =
            match finished {
                Ok(f) => f?,
                Err(_) => {
                    let _ = generator.cancel(&ObjectPath::from(&job)).await;
                    return Err(ApiError::new(
                        ErrorCode::Timeout,
                        format!("no end of generation within {} s (cancelled)", self.timeout.as_secs()),
                    ));
                }
            };
        if !error_name.is_empty() {
            let code = super::error::code_of(&error_name).unwrap_or(ErrorCode::Internal);
            return Err(ApiError::new(code, message));
        }
        let finish_reason = serde_json::from_value(serde_json::Value::String(reason.clone()))
            .map_err(|_| internal(format!("unknown finish reason '{reason}' ({state})")))?;
        Ok(Response::Generation(Completion {
            text,
            token_ids,
            finish_reason,
            usage: Usage {
                prompt_tokens: prompt_tokens as usize,
                generated_tokens: generated_tokens as usize,
                time_to_first_token_ms: ttft,
                tokens_per_second: tps,
                total_ms,
            },
        }))
    }
}
