//! Model lifecycle: the configured models, their state (unloaded → loading → loaded, or
//! failed), loading on first use and preloading, unloading after `keep_alive` idle, the memory
//! budget, reload on a new configuration (added models appear, removed ones drain and unload,
//! changed ones reload; a failed reload keeps the old version serving), and request submission
//! to the model's worker with a deadline. State changes are broadcast so the transports can
//! publish them (MQTT retained state, D-Bus PropertiesChanged).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeinfer_models::cache::CacheStats;
use edgeinfer_models::layout::Variant;
use edgeinfer_models::manifest::Family;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::api::{ApiError, ErrorCode, Event, Response, Task};
use crate::server::config::{Config, DaemonConfig, KeepAlive, ModelConfig};
use crate::server::engine::Engine;
use crate::server::metrics::Metrics;
use crate::server::worker::{Job, Worker, WorkerStats};

/// Where a model is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelState {
    /// Configured, not in memory.
    Unloaded,
    /// Being loaded.
    Loading,
    /// Serving.
    Loaded,
    /// The last load failed (see `error`); the next request retries.
    Failed,
    /// Draining before unload.
    Unloading,
}

impl ModelState {
    /// Every state, in lifecycle order.
    pub const ALL: [ModelState; 5] =
        [ModelState::Unloaded, ModelState::Loading, ModelState::Loaded, ModelState::Failed, ModelState::Unloading];

    /// Its name on every transport (the serde name: `unloaded`, `loading`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Unloaded => "unloaded",
            ModelState::Loading => "loading",
            ModelState::Loaded => "loaded",
            ModelState::Failed => "failed",
            ModelState::Unloading => "unloading",
        }
    }
}

/// What the transports publish about a model.
#[derive(Clone, Debug, Serialize)]
pub struct ModelStatus {
    /// Id.
    pub id: String,
    /// Family.
    pub family: Option<String>,
    /// State.
    pub state: ModelState,
    /// Backend (tract/ort).
    pub backend: String,
    /// Providers that run it (ORT names) and their node counts.
    pub providers: Vec<String>,
    /// Node placement per provider.
    pub placement: BTreeMap<String, usize>,
    /// Providers skipped at load and why.
    pub fallbacks: Vec<(String, String)>,
    /// The last load error.
    pub error: Option<String>,
    /// The configured precision variant (`fp32`, `q4`, ...).
    pub variant: String,
    /// The main graph file loaded (the encoder, for SAM), once loaded.
    pub graph: Option<String>,
    /// `keep_alive` in seconds (-1 pinned).
    pub keep_alive_s: f64,
    /// Estimated memory (MiB).
    pub memory_mb: f64,
    /// Request counters.
    pub stats: Option<WorkerStats>,
    /// SAM embedding cache counters.
    pub cache: Option<CacheStats>,
}

/// A model's state changed.
#[derive(Clone, Debug)]
pub struct ModelEvent {
    /// The new status.
    pub status: ModelStatus,
    /// The model was removed from the configuration.
    pub removed: bool,
}

struct Slot {
    config: ModelConfig,
    state: ModelState,
    worker: Option<Arc<Worker>>,
    error: Option<String>,
    estimate: u64,
    last_used: Instant,
    load_lock: Arc<tokio::sync::Mutex<()>>,
    /// Requests waiting for this model to load (bounded like its queue).
    waiting_for_load: Arc<AtomicUsize>,
}

/// Holds one of a model's waiting-for-load places; gives it back when dropped.
struct LoadWaiter(Arc<AtomicUsize>);

impl Drop for LoadWaiter {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A task accepted by a worker; [`Pending::wait`] gives its answer.
pub struct Pending {
    registry: Arc<Registry>,
    id: String,
    task: &'static str,
    started: Instant,
    answer: oneshot::Receiver<Result<Response, ApiError>>,
    timeout: Duration,
    cancel: Arc<AtomicBool>,
}

impl Pending {
    /// Waits for the answer, at most the request timeout (then the task is cancelled).
    pub async fn wait(self) -> Result<Response, ApiError> {
        let result = match tokio::time::timeout(self.timeout, self.answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ApiError::internal("the worker dropped the request")),
            Err(_) => {
                self.cancel.store(true, Ordering::Relaxed);
                Err(ApiError::new(ErrorCode::Timeout, format!("no answer within {} ms", self.timeout.as_millis())))
            }
        };
        if let Some(slot) = lock(&self.registry.slots).get_mut(&self.id) {
            slot.last_used = Instant::now();
        }
        self.registry.metrics.record(&self.id, self.task, &result, self.started.elapsed());
        result
    }
}

/// The registry of configured models.
pub struct Registry {
    slots: Mutex<BTreeMap<String, Slot>>,
    daemon: Mutex<DaemonConfig>,
    events: broadcast::Sender<ModelEvent>,
    accepting: AtomicBool,
    transports: watch::Sender<BTreeMap<&'static str, &'static str>>,
    /// Request counters and latency histograms (Prometheus).
    metrics: Metrics,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Estimated memory of a model: the ONNX files its family loads from `dir` — not every `.onnx`
/// in the folder, which may hold other layouts or quantised variants — plus the external-data
/// files in the folder (`.onnx_data`, `.data`, `.bin`) except those named after a graph it does
/// not load: onnx-community ships `model.onnx_data` beside `model_q4.onnx_data`, and a q4 load
/// reads only the second. A data file named after no graph counts, so the estimate errs high.
/// Loading peaks within about 1.2× this on both backends (README, Benchmarks). Where the family
/// or its files cannot be determined, every weight file counts.
pub fn estimate_bytes(family: Option<Family>, variant: Variant, dir: &Path) -> u64 {
    let family = family.or_else(|| edgeinfer_models::manifest::detect(dir).ok());
    let named = family
        .and_then(|f| edgeinfer_models::manifest::model_files(f, dir, variant).ok())
        .filter(|files| files.iter().all(|p| p.is_file()));
    match &named {
        Some(files) => {
            let graphs: Vec<&Path> = files.iter().filter(|p| is_onnx(p)).map(PathBuf::as_path).collect();
            graphs.iter().map(|p| size(p)).sum::<u64>() + weight_files(dir, 0, Some(&graphs))
        }
        None => weight_files(dir, 0, None),
    }
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn is_onnx(p: &Path) -> bool {
    p.extension().is_some_and(|x| x == "onnx")
}

/// Bytes of the weight files under `p` (two levels deep). With `loaded` (the graphs a model
/// loads): external data, except a file named after a graph beside it that is not loaded
/// (`model.onnx_data`, `model.onnx.data`, `model.onnx_data_1` belong to `model.onnx`). Without:
/// every `.onnx` file and every external data file.
fn weight_files(p: &Path, depth: usize, loaded: Option<&[&Path]>) -> u64 {
    let Ok(entries) = std::fs::read_dir(p) else { return 0 };
    let entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    let unloaded_graphs: Vec<String> = entries
        .iter()
        .filter(|e| is_onnx(e) && loaded.is_some_and(|l| !l.iter().any(|g| same_file(g, e))))
        .filter_map(|e| e.file_name()?.to_str().map(str::to_owned))
        .collect();
    entries
        .iter()
        .map(|path| {
            if path.is_dir() {
                return if depth < 2 { weight_files(path, depth + 1, loaded) } else { 0 };
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let data =
                path.extension().and_then(|x| x.to_str()).is_some_and(|x| matches!(x, "onnx_data" | "data" | "bin"))
                    || name.contains(".onnx_data");
            let of_unloaded_graph = unloaded_graphs
                .iter()
                .any(|g| name.starts_with(&format!("{g}_data")) || name.starts_with(&format!("{g}.data")));
            if (data && !of_unloaded_graph) || (loaded.is_none() && is_onnx(path)) { size(path) } else { 0 }
        })
        .sum()
}

/// Whether `a` and `b` name the same file (however the paths are spelled).
fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

impl Registry {
    /// A registry for `config`'s models (nothing loaded yet).
    pub fn new(config: &Config) -> Arc<Registry> {
        let (events, _) = broadcast::channel(256);
        let slots = config.models.iter().map(|m| (m.id.clone(), Registry::slot(m))).collect();
        Arc::new(Registry {
            slots: Mutex::new(slots),
            daemon: Mutex::new(config.daemon.clone()),
            events,
            accepting: AtomicBool::new(true),
            transports: watch::Sender::new(BTreeMap::new()),
            metrics: Metrics::new(),
        })
    }

    fn slot(m: &ModelConfig) -> Slot {
        let missing = m.missing();
        Slot {
            config: m.clone(),
            state: if missing.is_some() { ModelState::Failed } else { ModelState::Unloaded },
            worker: None,
            error: missing,
            estimate: estimate_bytes(m.family, m.engine.variant, &m.path),
            last_used: Instant::now(),
            load_lock: Arc::new(tokio::sync::Mutex::new(())),
            waiting_for_load: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Records a transport's state (`mqtt`, `dbus`: `connecting`, `connected`, `reconnecting`,
    /// `stopped`), shown in the status topic and the `Transports` D-Bus property.
    pub fn set_transport(&self, name: &'static str, state: &'static str) {
        self.transports.send_if_modified(|all| all.insert(name, state) != Some(state));
    }

    /// Every transport's state.
    pub fn transports(&self) -> BTreeMap<String, String> {
        self.transports.borrow().iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// Notified when a transport's state changes.
    pub fn watch_transports(&self) -> watch::Receiver<BTreeMap<&'static str, &'static str>> {
        self.transports.subscribe()
    }

    /// Whether model `id` would take one more request now: the daemon is not stopping, the model
    /// is configured, its last load did not fail, it is not being unloaded, and its queue (or, while it loads, its waiting places)
    /// is not full. A fleet request for a model without room is passed on to the group.
    pub fn has_room(&self, id: &str) -> bool {
        if !self.accepting.load(Ordering::SeqCst) {
            return false;
        }
        let slots = lock(&self.slots);
        let Some(slot) = slots.get(id) else { return false };
        if matches!(slot.state, ModelState::Failed | ModelState::Unloading) {
            return false;
        }
        match &slot.worker {
            Some(w) => !w.is_full(),
            None => slot.waiting_for_load.load(Ordering::SeqCst) <= slot.config.queue_depth,
        }
    }

    /// The request counters and histograms.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The Prometheus text exposition of this daemon (`node`) now.
    pub fn prometheus_text(&self, node: &str) -> String {
        let transports: Vec<(String, String)> = self.transports().into_iter().collect();
        self.metrics.render(node, &self.statuses(), &transports)
    }

    /// Model state changes (loads, unloads, failures, removals).
    pub fn subscribe(&self) -> broadcast::Receiver<ModelEvent> {
        self.events.subscribe()
    }

    /// Configured model ids.
    pub fn ids(&self) -> Vec<String> {
        lock(&self.slots).keys().cloned().collect()
    }

    fn status_of(slot: &Slot) -> ModelStatus {
        let (providers, placement, fallbacks, family) = match &slot.worker {
            Some(w) => {
                let p = w.engine().providers();
                (
                    p.active.clone(),
                    p.node_placement.clone(),
                    p.attempts.iter().filter_map(|a| a.error.clone().map(|e| (a.provider.clone(), e))).collect(),
                    Some(w.engine().family().to_string()),
                )
            }
            None => (Vec::new(), BTreeMap::new(), Vec::new(), slot.config.family.map(|f| f.to_string())),
        };
        ModelStatus {
            id: slot.config.id.clone(),
            family,
            state: slot.state,
            backend: slot.config.engine.backend.to_string(),
            providers,
            placement,
            fallbacks,
            error: slot.error.clone(),
            variant: slot.config.engine.variant.to_string(),
            graph: slot.worker.as_ref().and_then(|w| w.engine().graph().map(|g| g.display().to_string())),
            keep_alive_s: match slot.config.keep_alive {
                KeepAlive::Pinned => -1.0,
                KeepAlive::Immediate => 0.0,
                KeepAlive::For(d) => d.as_secs_f64(),
            },
            memory_mb: slot.estimate as f64 / (1024.0 * 1024.0),
            stats: slot.worker.as_ref().map(|w| w.stats()),
            cache: slot.worker.as_ref().and_then(|w| w.engine().cache_stats()),
        }
    }

    /// Status of every model.
    pub fn statuses(&self) -> Vec<ModelStatus> {
        lock(&self.slots).values().map(Registry::status_of).collect()
    }

    /// Status of one model.
    pub fn status(&self, id: &str) -> Option<ModelStatus> {
        lock(&self.slots).get(id).map(Registry::status_of)
    }

    fn emit(&self, id: &str) {
        if let Some(status) = self.status(id) {
            let _ = self.events.send(ModelEvent { status, removed: false });
        }
    }

    fn set_state(&self, id: &str, state: ModelState, error: Option<String>) {
        if let Some(slot) = lock(&self.slots).get_mut(id) {
            slot.state = state;
            slot.error = error;
        }
        self.emit(id);
    }

    /// Loads a model if it is not loaded; returns its worker.
    pub async fn ensure_loaded(self: &Arc<Self>, id: &str) -> Result<Arc<Worker>, ApiError> {
        let load_lock = {
            let slots = lock(&self.slots);
            let slot = slots.get(id).ok_or_else(|| unknown(id, &slots))?;
            if let Some(w) = &slot.worker {
                return Ok(w.clone());
            }
            slot.load_lock.clone()
        };
        let _loading = load_lock.lock().await;
        let (config, estimate) = {
            let slots = lock(&self.slots);
            let slot = slots.get(id).ok_or_else(|| unknown(id, &slots))?;
            if let Some(w) = &slot.worker {
                return Ok(w.clone());
            }
            (slot.config.clone(), slot.estimate)
        };
        if let Some(why) = config.missing() {
            // Looked at again on every request: the folder may have been put in place since.
            tracing::warn!(model = id, "model not available: {why}");
            self.set_state(id, ModelState::Failed, Some(why.clone()));
            return Err(ApiError::new(ErrorCode::NotLoaded, format!("model '{id}': {why}")));
        }
        self.make_room(id, estimate).await?;
        self.set_state(id, ModelState::Loading, None);
        let ort_library = lock(&self.daemon).ort_library.clone();
        let started = Instant::now();
        let worker = load_worker(config.clone(), ort_library).await;
        match worker {
            Ok(worker) => {
                let worker = Arc::new(worker);
                {
                    let mut slots = lock(&self.slots);
                    if let Some(slot) = slots.get_mut(id) {
                        slot.worker = Some(worker.clone());
                        slot.state = ModelState::Loaded;
                        slot.error = None;
                        slot.last_used = Instant::now();
                    }
                }
                tracing::info!(model = id, ms = started.elapsed().as_millis() as u64, providers = ?worker.engine().providers().active, "model loaded");
                self.emit(id);
                Ok(worker)
            }
            Err(e) => {
                tracing::error!(model = id, error = %e.message, "model failed to load");
                self.set_state(id, ModelState::Failed, Some(e.message.clone()));
                Err(e)
            }
        }
    }

    /// Enforces the memory budget before loading `estimate` bytes for `id`.
    async fn make_room(self: &Arc<Self>, id: &str, estimate: u64) -> Result<(), ApiError> {
        let (budget, evict) = {
            let d = lock(&self.daemon);
            (d.memory_budget_mb * 1024 * 1024, d.evict_lru)
        };
        if budget == 0 {
            return Ok(());
        }
        loop {
            let (used, victim) = {
                let slots = lock(&self.slots);
                let used: u64 = slots.values().filter(|s| s.worker.is_some()).map(|s| s.estimate).sum();
                let victim = slots
                    .values()
                    .filter(|s| s.config.id != id && s.config.keep_alive != KeepAlive::Pinned)
                    .filter(|s| s.worker.as_ref().is_some_and(|w| !w.is_busy()))
                    .min_by_key(|s| s.last_used)
                    .map(|s| s.config.id.clone());
                (used, victim)
            };
            if used + estimate <= budget {
                return Ok(());
            }
            match victim {
                Some(v) if evict => {
                    tracing::info!(model = %v, for_model = id, "unloading the least recently used model to make room");
                    self.unload(&v).await;
                }
                _ => {
                    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
                    return Err(ApiError::new(
                        ErrorCode::TooLarge,
                        format!(
                            "loading '{id}' (~{:.0} MiB) would exceed the memory budget of {:.0} MiB ({:.0} MiB in use); \
                             unload a model first{}",
                            mib(estimate),
                            mib(budget),
                            mib(used),
                            if evict { "" } else { " or set daemon.evict_lru = true" }
                        ),
                    ));
                }
            }
        }
    }

    /// Unloads a model (its queue drains first). Returns whether it was loaded.
    pub async fn unload(self: &Arc<Self>, id: &str) -> bool {
        let (worker, grace) = {
            let mut slots = lock(&self.slots);
            let Some(slot) = slots.get_mut(id) else { return false };
            let Some(w) = slot.worker.take() else { return false };
            slot.state = ModelState::Unloading;
            (w, Duration::from_millis(lock(&self.daemon).shutdown_grace_ms))
        };
        self.emit(id);
        let w = worker.clone();
        let _ = tokio::task::spawn_blocking(move || w.stop(Some(grace))).await;
        drop(worker);
        self.set_state(id, ModelState::Unloaded, None);
        tracing::info!(model = id, "model unloaded");
        true
    }

    /// Loads every `preload = true` model; failures are recorded in their state, not fatal.
    pub async fn preload(self: &Arc<Self>) {
        let ids: Vec<String> =
            lock(&self.slots).values().filter(|s| s.config.preload).map(|s| s.config.id.clone()).collect();
        for id in ids {
            let _ = self.ensure_loaded(&id).await;
        }
        // The others are failed only for a missing folder (`slot`), the reason in their error;
        // the preloaded ones said so when they were tried.
        let missing = lock(&self.slots)
            .values()
            .filter(|s| !s.config.preload && s.state == ModelState::Failed)
            .filter_map(|s| Some((s.config.id.clone(), s.error.clone()?)))
            .collect::<Vec<_>>();
        for (id, why) in missing {
            tracing::warn!(model = %id, "model not available: {why}");
        }
    }

    /// Runs a task on a model (loading it first if needed), streaming events to `events`.
    pub async fn submit(
        self: &Arc<Self>,
        id: &str,
        task: Task,
        cancel: Arc<AtomicBool>,
        events: Option<mpsc::UnboundedSender<Event>>,
    ) -> Result<Response, ApiError> {
        self.admit(id, task, cancel, events).await?.wait().await
    }

    /// Loads the model if needed and queues the task on its worker; returns once the worker has
    /// accepted it (or refused it: busy, unknown model, load failure), so that a transport can
    /// answer "accepted" (a D-Bus job object) before the answer exists.
    pub async fn admit(
        self: &Arc<Self>,
        id: &str,
        task: Task,
        cancel: Arc<AtomicBool>,
        events: Option<mpsc::UnboundedSender<Event>>,
    ) -> Result<Pending, ApiError> {
        let (started, task_name) = (Instant::now(), task.name());
        let admitted = self.admit_inner(id, task, cancel, events, started).await;
        if let Err(e) = &admitted
            && lock(&self.slots).contains_key(id)
        {
            self.metrics.record(id, task_name, &Err(e.clone()), started.elapsed());
        }
        admitted
    }

    async fn admit_inner(
        self: &Arc<Self>,
        id: &str,
        task: Task,
        cancel: Arc<AtomicBool>,
        events: Option<mpsc::UnboundedSender<Event>>,
        started: Instant,
    ) -> Result<Pending, ApiError> {
        let task_name = task.name();
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(ApiError::new(ErrorCode::NotLoaded, "the daemon is shutting down"));
        }
        let (timeout, waiter) = {
            let slots = lock(&self.slots);
            let slot = slots.get(id).ok_or_else(|| unknown(id, &slots))?;
            let timeout =
                Duration::from_millis(slot.config.timeout_ms.unwrap_or(lock(&self.daemon).request_timeout_ms));
            // While the model loads, requests wait here instead of in its queue: as many as the
            // queue would take (the running one plus queue_depth), the rest are busy.
            let waiter = match slot.worker {
                Some(_) => None,
                None => {
                    let room = slot.config.queue_depth.saturating_add(1);
                    let taken = slot.waiting_for_load.fetch_add(1, Ordering::SeqCst);
                    let waiter = LoadWaiter(slot.waiting_for_load.clone());
                    if taken >= room {
                        return Err(ApiError::new(
                            ErrorCode::Busy,
                            format!(
                                "{taken} requests already wait for model '{id}' to load (queue_depth {}); retry later",
                                slot.config.queue_depth
                            ),
                        ));
                    }
                    Some(waiter)
                }
            };
            (timeout, waiter)
        };
        let worker = match waiter {
            None => self.ensure_loaded(id).await?,
            Some(waiter) => {
                // The load runs in its own task: a request that stops waiting (its timeout) must
                // not abandon a load half done. The task keeps the waiting place until the load
                // attempt ends, so a hung load cannot gather tasks without bound.
                let load = tokio::spawn({
                    let registry = self.clone();
                    let id = id.to_string();
                    async move {
                        let _waiter = waiter;
                        if !registry.accepting.load(Ordering::SeqCst) {
                            return Err(ApiError::new(ErrorCode::NotLoaded, "the daemon is shutting down"));
                        }
                        registry.ensure_loaded(&id).await
                    }
                });
                let loaded = tokio::time::timeout(timeout, load).await;
                match loaded {
                    Ok(Ok(result)) => result?,
                    Ok(Err(join)) => return Err(ApiError::internal(format!("loading model '{id}' failed: {join}"))),
                    Err(_) => {
                        return Err(ApiError::new(
                            ErrorCode::Timeout,
                            format!("model '{id}' was still loading after {} ms", timeout.as_millis()),
                        ));
                    }
                }
            }
        };
        let (reply, answer) = oneshot::channel();
        let span = tracing::info_span!("request", model = id, task = task.name());
        // One deadline from arrival: time spent waiting for the load counts.
        worker.submit(Job { task, cancel: cancel.clone(), events, reply, deadline: started + timeout, span })?;
        let timeout = timeout.saturating_sub(started.elapsed());
        Ok(Pending { registry: self.clone(), id: id.to_string(), task: task_name, started, answer, timeout, cancel })
    }

    /// The image limits of a model (for transports that read images themselves, e.g. from a file
    /// descriptor, before the request exists).
    pub fn image_limits(&self, id: &str) -> Result<edgeinfer_models::image::ImageLimits, ApiError> {
        let slots = lock(&self.slots);
        slots.get(id).map(|s| s.config.engine.image_limits).ok_or_else(|| unknown(id, &slots))
    }

    /// Unloads models idle longer than their keep_alive. Called periodically.
    pub async fn expire_idle(self: &Arc<Self>) {
        let now = Instant::now();
        let expired: Vec<String> = lock(&self.slots)
            .values()
            .filter_map(|s| {
                let w = s.worker.as_ref()?;
                let limit = match s.config.keep_alive {
                    KeepAlive::Pinned => return None,
                    KeepAlive::Immediate => Duration::ZERO,
                    KeepAlive::For(d) => d,
                };
                let idle_since = w.idle_since().max(s.last_used);
                (!w.is_busy() && now.duration_since(idle_since) >= limit).then(|| s.config.id.clone())
            })
            .collect();
        for id in expired {
            tracing::debug!(model = %id, "keep_alive expired");
            self.unload(&id).await;
        }
    }

    /// Applies a new configuration: new models appear, removed ones drain and unload, changed
    /// ones reload (the old version keeps serving if the new one fails to load).
    pub async fn reconfigure(self: &Arc<Self>, config: &Config) {
        *lock(&self.daemon) = config.daemon.clone();
        let old: BTreeMap<String, ModelConfig> =
            lock(&self.slots).iter().map(|(k, s)| (k.clone(), s.config.clone())).collect();
        let new: BTreeMap<String, ModelConfig> = config.models.iter().map(|m| (m.id.clone(), m.clone())).collect();
        for id in old.keys().filter(|id| !new.contains_key(*id)) {
            self.unload(id).await;
            if let Some(slot) = lock(&self.slots).remove(id) {
                let _ = self.events.send(ModelEvent { status: Registry::status_of(&slot), removed: true });
            }
            tracing::info!(model = %id, "model removed by reload");
        }
        for (id, m) in &new {
            match old.get(id) {
                None => {
                    lock(&self.slots).insert(id.clone(), Registry::slot(m));
                    self.emit(id);
                    tracing::info!(model = %id, "model added by reload");
                    if m.preload {
                        let _ = self.ensure_loaded(id).await;
                    }
                }
                Some(prev) if prev != m => self.replace(id, m).await,
                Some(_) => {
                    // A reload retries a model that failed (its folder may be there now).
                    let failed =
                        lock(&self.slots).get(id).is_some_and(|s| s.worker.is_none() && s.state == ModelState::Failed);
                    if failed {
                        lock(&self.slots).insert(id.clone(), Registry::slot(m));
                        self.emit(id);
                        if m.preload {
                            let _ = self.ensure_loaded(id).await;
                        }
                    }
                }
            }
        }
    }

    /// Reloads a model with a changed configuration, swapping workers only on success.
    async fn replace(self: &Arc<Self>, id: &str, m: &ModelConfig) {
        let was_loaded = lock(&self.slots).get(id).is_some_and(|s| s.worker.is_some());
        if !was_loaded {
            if let Some(slot) = lock(&self.slots).get_mut(id) {
                *slot = Registry::slot(m);
            }
            self.emit(id);
            if m.preload {
                let _ = self.ensure_loaded(id).await;
            }
            return;
        }
        // Both versions are in memory during the swap: the new one must fit beside the old.
        let load = match self.make_room(id, estimate_bytes(m.family, m.engine.variant, &m.path)).await {
            Ok(()) => {
                let ort_library = lock(&self.daemon).ort_library.clone();
                load_worker(m.clone(), ort_library).await
            }
            Err(e) => Err(e),
        };
        match load {
            Ok(worker) => {
                let old = {
                    let mut slots = lock(&self.slots);
                    let Some(slot) = slots.get_mut(id) else { return };
                    slot.config = m.clone();
                    slot.estimate = estimate_bytes(m.family, m.engine.variant, &m.path);
                    slot.error = None;
                    slot.state = ModelState::Loaded;
                    slot.worker.replace(Arc::new(worker))
                };
                if let Some(old) = old {
                    let _ = tokio::task::spawn_blocking(move || old.stop(Some(Duration::from_secs(30)))).await;
                }
                tracing::info!(model = id, "model reloaded with its new configuration");
                self.emit(id);
            }
            Err(e) => {
                tracing::error!(model = id, error = %e.message, "reload failed; the previous version keeps serving");
                if let Some(slot) = lock(&self.slots).get_mut(id) {
                    slot.error = Some(format!("reload failed, previous version still serving: {}", e.message));
                }
                self.emit(id);
            }
        }
    }

    /// Stops accepting requests, then drains and unloads every model.
    pub async fn shutdown(self: &Arc<Self>) {
        self.accepting.store(false, Ordering::SeqCst);
        for id in self.ids() {
            self.unload(&id).await;
        }
    }

    /// The model whose worker has been running one request for longer than twice that model's
    /// own request timeout (at least 1 s): a hung model. Answers and cancellations come at the
    /// timeout, so twice it is only reached by a graph call that does not return.
    pub fn stuck(&self) -> Option<String> {
        let default_ms = lock(&self.daemon).request_timeout_ms;
        lock(&self.slots).values().find_map(|s| {
            let limit = Duration::from_millis(s.config.timeout_ms.unwrap_or(default_ms).max(1000).saturating_mul(2));
            let w = s.worker.as_ref()?;
            w.running_for().is_some_and(|d| d > limit).then(|| s.config.id.clone())
        })
    }

    /// Whether any request is queued or running.
    pub fn busy(&self) -> bool {
        lock(&self.slots).values().any(|s| s.worker.as_ref().is_some_and(|w| w.is_busy()))
    }

    /// Model directory of a configured model.
    pub fn path_of(&self, id: &str) -> Option<PathBuf> {
        lock(&self.slots).get(id).map(|s| s.config.path.clone())
    }
}

fn unknown(id: &str, slots: &BTreeMap<String, Slot>) -> ApiError {
    let known: Vec<&str> = slots.keys().map(String::as_str).collect();
    ApiError::new(ErrorCode::UnknownModel, format!("no model '{id}' (configured: {})", known.join(", ")))
}

async fn load_worker(m: ModelConfig, ort_library: Option<PathBuf>) -> Result<Worker, ApiError> {
    tokio::task::spawn_blocking(move || {
        let engine = Engine::load(&m.id, &m.path, m.family, &m.engine, ort_library.as_deref())?;
        Worker::start(engine, m.queue_depth, m.micro_batch)
            .map_err(|e| ApiError::internal(format!("cannot start the worker thread: {e}")))
    })
    .await
    .map_err(|e| ApiError::internal(format!("loading task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn state_names_are_the_serde_names() {
        for state in ModelState::ALL {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
    }

    fn fixture(family: &str) -> PathBuf {
        edgeinfer_models::fixtures::fixtures_dir().join(family)
    }

    fn size(p: PathBuf) -> u64 {
        std::fs::metadata(p).unwrap().len()
    }

    #[test]
    fn the_estimate_counts_the_files_a_model_loads_not_every_layout_in_its_folder() {
        // The SAM fixture also holds the plain encoder and the low-res decoder: the manifest
        // names encoder.onnx and decoder.onnx.
        let sam = fixture("sam");
        let expected = size(sam.join("encoder.onnx")) + size(sam.join("decoder.onnx"));
        assert_eq!(estimate_bytes(None, Variant::Fp32, &sam), expected);
        assert_eq!(estimate_bytes(Some(Family::Sam), Variant::Fp32, &sam), expected);
        // The LLaMA fixture's variants keep their weights in model_<variant>.onnx_data: each
        // counts for its own graph only.
        let llama = fixture("llama");
        assert_eq!(estimate_bytes(None, Variant::Fp32, &llama), size(llama.join("model.onnx")));
        let q4 = size(llama.join("model_q4.onnx")) + size(llama.join("model_q4.onnx_data"));
        assert_eq!(estimate_bytes(None, Variant::Q4, &llama), q4);
    }

    #[test]
    fn external_data_beside_the_model_counts_and_unknown_folders_count_every_weight_file() {
        let dir = tempfile::tempdir().unwrap();
        let probe = fixture("probe");
        for f in ["weights_external.onnx", "weights_external.onnx.data"] {
            std::fs::copy(probe.join(f), dir.path().join(f)).unwrap();
        }
        let both = size(probe.join("weights_external.onnx")) + size(probe.join("weights_external.onnx.data"));
        // DINOv2 takes the folder's only .onnx file.
        assert_eq!(estimate_bytes(Some(Family::Dinov2), Variant::Fp32, dir.path()), both);
        // Data files count whatever their names.
        std::fs::write(dir.path().join("shared.bin"), [0u8; 1000]).unwrap();
        assert_eq!(estimate_bytes(Some(Family::Dinov2), Variant::Fp32, dir.path()), both + 1000);
        // No family detected: every weight file.
        std::fs::copy(probe.join("weights.onnx"), dir.path().join("weights.onnx")).unwrap();
        assert_eq!(estimate_bytes(None, Variant::Fp32, dir.path()), both + 1000 + size(probe.join("weights.onnx")));
        // A SAM manifest naming files that are not there: every weight file, not zero.
        std::fs::write(dir.path().join("manifest.json"), r#"{"family": "sam", "encoder": "gone.onnx"}"#).unwrap();
        assert_eq!(estimate_bytes(None, Variant::Fp32, dir.path()), both + 1000 + size(probe.join("weights.onnx")));
    }
}
