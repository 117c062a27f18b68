//! One worker per loaded model: a bounded queue in front of a dedicated OS thread that runs the
//! model. Inference never runs on the async runtime. A full queue is refused at once (`busy`);
//! a request whose deadline passed while queued is answered `timeout` without running; a
//! cancelled generation stops between tokens. Dropping the worker's sender drains the queue
//! and ends the thread (how unload and reload retire a model).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::api::{ApiError, ErrorCode, Event, Response, Task};
use crate::server::config::MicroBatch;
use crate::server::engine::Engine;

/// A request on its way to a worker.
pub struct Job {
    /// What to do.
    pub task: Task,
    /// Set to stop a generation between tokens.
    pub cancel: Arc<AtomicBool>,
    /// Streamed events (generation deltas), if the caller wants them.
    pub events: Option<mpsc::UnboundedSender<Event>>,
    /// The answer.
    pub reply: oneshot::Sender<Result<Response, ApiError>>,
    /// Answer `timeout` instead of starting after this.
    pub deadline: Instant,
    /// The request's tracing span (entered on the worker thread).
    pub span: tracing::Span,
}

/// Counters of a worker.
#[derive(Debug, Default, Serialize, Clone)]
pub struct WorkerStats {
    /// Requests answered.
    pub requests: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Requests refused because the queue was full.
    pub busy: u64,
    /// Requests waiting now.
    pub queue_depth: usize,
    /// Latency percentiles over the last 1024 requests (ms): p50, p90, p99.
    pub latency_ms: [f64; 3],
}

struct Shared {
    queued: AtomicUsize,
    requests: AtomicU64,
    errors: AtomicU64,
    busy: AtomicU64,
    running: AtomicBool,
    running_since: Mutex<Option<Instant>>,
    latencies: Mutex<Vec<f64>>,
    last_done: Mutex<Instant>,
}

/// A running worker.
pub struct Worker {
    tx: Mutex<Option<SyncSender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    engine: Arc<Engine>,
    shared: Arc<Shared>,
    /// Jobs accepted at once: the running one plus `queue_depth` waiting.
    capacity: usize,
}

impl Worker {
    /// Starts the worker thread for `engine` with room for `queue_depth` waiting requests.
    pub fn start(engine: Engine, queue_depth: usize, micro_batch: MicroBatch) -> std::io::Result<Worker> {
        let engine = Arc::new(engine);
        // Room for every accepted job, so the send never blocks: admission is decided by the
        // `pending` counter (waiting + running) against queue_depth + 1.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(queue_depth + 1);
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            running: AtomicBool::new(false),
            running_since: Mutex::new(None),
            latencies: Mutex::new(Vec::new()),
            last_done: Mutex::new(Instant::now()),
        });
        let thread = std::thread::Builder::new().name(format!("model-{}", engine.id())).spawn({
            let engine = engine.clone();
            let shared = shared.clone();
            move || run(&engine, &rx, &shared, micro_batch)
        })?;
        Ok(Worker {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            engine,
            shared,
            capacity: queue_depth + 1,
        })
    }

    /// Queues a job, or refuses it at once when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = guard.as_ref() else {
            return Err(ApiError::new(ErrorCode::NotLoaded, format!("model '{}' is unloading", self.engine.id())));
        };
        // pending = waiting + running; refuse beyond the running one plus queue_depth waiting.
        let running = usize::from(self.shared.running.load(Ordering::SeqCst));
        if self.shared.queued.fetch_add(1, Ordering::SeqCst) + running >= self.capacity {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            self.shared.busy.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::new(
                ErrorCode::Busy,
                format!("model '{}' is busy: its queue is full; retry later", self.engine.id()),
            ));
        }
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.shared.queued.fetch_sub(1, Ordering::SeqCst);
                self.shared.busy.fetch_add(1, Ordering::Relaxed);
                Err(ApiError::new(
                    ErrorCode::Busy,
                    format!("model '{}' is busy: its queue is full; retry later", self.engine.id()),
                ))
            }
            Err(TrySendError::Disconnected(_)) => {
                self.shared.queued.fetch_sub(1, Ordering::SeqCst);
                Err(ApiError::new(ErrorCode::NotLoaded, format!("model '{}' is not running", self.engine.id())))
            }
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Whether requests are queued or running.
    pub fn is_busy(&self) -> bool {
        self.shared.queued.load(Ordering::SeqCst) > 0 || self.shared.running.load(Ordering::SeqCst)
    }

    /// Whether a new job would be refused now: the running one plus `queue_depth` waiting.
    pub fn is_full(&self) -> bool {
        let running = usize::from(self.shared.running.load(Ordering::SeqCst));
        self.shared.queued.load(Ordering::SeqCst) + running >= self.capacity
    }

    /// How long the current request has been running, if one is.
    pub fn running_for(&self) -> Option<Duration> {
        self.shared.running_since.lock().unwrap_or_else(|p| p.into_inner()).map(|t| t.elapsed())
    }

    /// When the last request finished (or the worker started).
    pub fn idle_since(&self) -> Instant {
        *self.shared.last_done.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counters.
    pub fn stats(&self) -> WorkerStats {
        let mut lat = self.shared.latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
        lat.sort_by(f64::total_cmp);
        let pick = |q: f64| if lat.is_empty() { 0.0 } else { lat[((lat.len() - 1) as f64 * q).round() as usize] };
        WorkerStats {
            requests: self.shared.requests.load(Ordering::Relaxed),
            errors: self.shared.errors.load(Ordering::Relaxed),
            busy: self.shared.busy.load(Ordering::Relaxed),
            queue_depth: self.shared.queued.load(Ordering::SeqCst),
            latency_ms: [pick(0.5), pick(0.9), pick(0.99)],
        }
    }

    /// Stops taking requests; queued ones still run. With `grace`, waits up to that long for
    /// the thread to finish them (called from a blocking context).
    pub fn stop(&self, grace: Option<Duration>) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(grace) = grace else { return };
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(handle) = handle else { return };
        let until = Instant::now() + grace;
        while !handle.is_finished() && Instant::now() < until {
            std::thread::park_timeout(Duration::from_millis(10));
        }
        if handle.is_finished() {
            let _ = handle.join();
        } else {
            tracing::warn!(
                model = self.engine.id(),
                "requests still running after the grace period; leaving them to finish"
            );
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

fn run(engine: &Engine, rx: &Receiver<Job>, shared: &Shared, micro_batch: MicroBatch) {
    while let Ok(job) = rx.recv() {
        // Count the job as running before it stops counting as queued, so admission never sees
        // a free slot that is not there. The guard clears it however the job ends: answered,
        // refused early (deadline passed, cancelled while queued) or panicked — a `running` flag
        // left set would read as a hung model to the watchdog and to keep-alive and eviction.
        let _running = RunningGuard::new(shared);
        shared.queued.fetch_sub(1, Ordering::SeqCst);
        // A panic outside the per-request catch (in the batching code itself) drops that job's
        // reply sender, which its caller sees as an `internal` answer; the worker lives on.
        let survived = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            take_job(engine, rx, shared, micro_batch, job);
        }));
        if survived.is_err() {
            tracing::error!(model = engine.id(), "the worker panicked outside a request; it keeps serving");
        }
    }
}

/// Runs one dequeued job: alone, or with the embed jobs that arrive with it as one graph call
/// (DINOv2 micro-batching).
fn take_job(engine: &Engine, rx: &Receiver<Job>, shared: &Shared, micro_batch: MicroBatch, job: Job) {
    if micro_batch.max_batch > 1 && matches!(job.task, Task::Embed { .. }) {
        let mut batch = vec![job];
        let until = Instant::now() + Duration::from_millis(micro_batch.max_wait_ms);
        let mut images: usize = batch.iter().map(images_of).sum();
        while images < micro_batch.max_batch {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(next) => {
                    shared.queued.fetch_sub(1, Ordering::SeqCst);
                    if matches!(next.task, Task::Embed { .. }) && images + images_of(&next) <= micro_batch.max_batch {
                        images += images_of(&next);
                        batch.push(next);
                    } else {
                        run_batch(engine, std::mem::take(&mut batch), shared);
                        execute(engine, next, shared);
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if !batch.is_empty() {
            run_batch(engine, batch, shared);
        }
        return;
    }
    execute(engine, job, shared);
}

/// Marks the worker as running for as long as it lives.
struct RunningGuard<'a>(&'a Shared);

impl<'a> RunningGuard<'a> {
    fn new(shared: &'a Shared) -> RunningGuard<'a> {
        set_running(shared, true);
        RunningGuard(shared)
    }
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        set_running(self.0, false);
    }
}

fn set_running(shared: &Shared, running: bool) {
    shared.running.store(running, Ordering::SeqCst);
    *shared.running_since.lock().unwrap_or_else(|p| p.into_inner()) = running.then(Instant::now);
}

fn images_of(job: &Job) -> usize {
    match &job.task {
        Task::Embed { images, .. } => images.len(),
        _ => 0,
    }
}

fn finish(shared: &Shared, started: Instant, ok: bool) {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    if !ok {
        shared.errors.fetch_add(1, Ordering::Relaxed);
    }
    let mut lat = shared.latencies.lock().unwrap_or_else(|p| p.into_inner());
    if lat.len() >= 1024 {
        lat.remove(0);
    }
    lat.push(started.elapsed().as_secs_f64() * 1e3);
    *shared.last_done.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
}

fn execute(engine: &Engine, job: Job, shared: &Shared) {
    let _span = job.span.enter();
    let started = Instant::now();
    if Instant::now() > job.deadline {
        tracing::debug!("the request timed out while queued; not running it");
        let _ = job.reply.send(Err(ApiError::new(ErrorCode::Timeout, "the request timed out while queued")));
        finish(shared, started, false);
        return;
    }
    if job.cancel.load(Ordering::Relaxed) {
        tracing::debug!("the request was cancelled while queued; not running it");
        let _ = job.reply.send(Err(ApiError::new(ErrorCode::Cancelled, "cancelled before it started")));
        finish(shared, started, false);
        return;
    }
    // The clock of the stuck check starts with each request (a batch's jobs run one by one).
    set_running(shared, true);
    let events = job.events.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        engine.execute(&job.task, Some(job.cancel.clone()), &mut |e| {
            if let Some(tx) = &events {
                let _ = tx.send(e);
            }
        })
    }))
    .unwrap_or_else(|_| Err(ApiError::internal("the model panicked while running this request")));
    let ok = result.is_ok();
    match &result {
        Ok(_) => tracing::debug!(ms = started.elapsed().as_millis() as u64, "request done"),
        Err(e) => tracing::info!(code = e.code.as_str(), error = %e.message, "request failed"),
    }
    let _ = job.reply.send(result);
    finish(shared, started, ok);
}

/// Runs several embed jobs as one graph call and splits the answer.
fn run_batch(engine: &Engine, batch: Vec<Job>, shared: &Shared) {
    if batch.len() == 1 {
        if let Some(job) = batch.into_iter().next() {
            execute(engine, job, shared);
        }
        return;
    }
    let started = Instant::now();
    // Jobs with different options (pooling/normalise) cannot share a call: run those alone.
    let first_params = match &batch[0].task {
        Task::Embed { params, .. } => *params,
        _ => return,
    };
    let (same, other): (Vec<Job>, Vec<Job>) =
        batch.into_iter().partition(|j| matches!(&j.task, Task::Embed { params, .. } if *params == first_params));
    let live: Vec<Job> = same
        .into_iter()
        .filter_map(|j| {
            if Instant::now() > j.deadline {
                let _ = j.reply.send(Err(ApiError::new(ErrorCode::Timeout, "the request timed out while queued")));
                finish(shared, started, false);
                None
            } else {
                Some(j)
            }
        })
        .collect();
    let mut images = Vec::new();
    let mut counts = Vec::new();
    for j in &live {
        if let Task::Embed { images: im, .. } = &j.task {
            counts.push(im.len());
            images.extend(im.iter().cloned());
        }
    }
    set_running(shared, true);
    let merged = Task::Embed { images, params: first_params };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.execute(&merged, None, &mut |_| {})))
        .unwrap_or_else(|_| Err(ApiError::internal("the model panicked while running a micro-batch")));
    tracing::debug!(requests = live.len(), ms = started.elapsed().as_millis() as u64, "micro-batch done");
    match result {
        Ok(Response::Embeddings { embeddings, dim }) => {
            let mut it = embeddings.into_iter();
            for (j, n) in live.into_iter().zip(counts) {
                let mine: Vec<Vec<f32>> = it.by_ref().take(n).collect();
                let _ = j.reply.send(Ok(Response::Embeddings { embeddings: mine, dim }));
                finish(shared, started, true);
            }
        }
        // One bad image fails the merged call: answer each request on its own instead, so
        // only the bad one gets the error.
        _ => {
            for j in live {
                execute(engine, j, shared);
            }
        }
    }
    for j in other {
        execute(engine, j, shared);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn dino_worker() -> Worker {
        let dir = edgeinfer_models::fixtures::fixtures_dir().join("dinov2");
        let engine = Engine::load("dino", &dir, None, &crate::server::engine::EngineOptions::default(), None).unwrap();
        Worker::start(engine, 2, MicroBatch::default()).unwrap()
    }

    fn job(deadline: Instant, cancelled: bool) -> (Job, oneshot::Receiver<Result<Response, ApiError>>) {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            task: Task::GalleryList,
            cancel: Arc::new(AtomicBool::new(cancelled)),
            events: None,
            reply,
            deadline,
            span: tracing::Span::none(),
        };
        (job, answer)
    }

    /// Regression: the early answers (deadline passed while queued, cancelled before starting)
    /// left `running` set, so the watchdog saw a hung model and systemd killed a healthy daemon.
    #[test]
    fn requests_answered_without_running_leave_the_worker_idle() {
        let worker = dino_worker();
        for (deadline, cancelled, code) in [
            (Instant::now(), false, ErrorCode::Timeout),
            (Instant::now() + Duration::from_secs(60), true, ErrorCode::Cancelled),
        ] {
            let (j, answer) = job(deadline, cancelled);
            worker.submit(j).unwrap();
            let e = answer.blocking_recv().unwrap().unwrap_err();
            assert_eq!(e.code, code, "{e}");
            // The answer is sent before the guard drops: wait (bounded) for the flag to clear.
            let until = Instant::now() + Duration::from_secs(5);
            while worker.is_busy() && Instant::now() < until {
                std::thread::yield_now();
            }
            assert!(!worker.is_busy(), "worker still marked busy after a {code:?} answer");
            assert_eq!(worker.running_for(), None);
        }
        // And the slot is free again: a full queue's worth is admitted.
        for _ in 0..3 {
            let (j, _answer) = job(Instant::now(), false);
            worker.submit(j).unwrap();
        }
        worker.stop(Some(Duration::from_secs(10)));
    }
}
