//! Generation jobs: one `org.edgeinfer.Job1` object per `Generate` call, at
//! `/org/edgeinfer/jobs/<128 random bits, hex>`. The job streams `Token` signals, ends with
//! `Finished`, keeps its final state readable as properties for [`LINGER`], then its object goes
//! away. A job whose caller leaves the bus is cancelled.
//!
//! A job belongs to the caller that started it: its signals (and `PropertiesChanged`) are unicast
//! to that caller's unique name, and only that caller may cancel it or read its properties. The
//! jobs live outside the ObjectManager at `/org/edgeinfer/Daemon1`, so no `InterfacesAdded` or
//! `GetManagedObjects` announces them to other peers either.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgeinfer_models::llama::{FinishReason, TokenEvent};
use tokio::sync::mpsc;
use tracing::Instrument;
use zbus::message::Header;
use zbus::names::{BusName, UniqueName};
use zbus::object_server::{InterfaceRef, SignalEmitter};
use zbus::zvariant::OwnedObjectPath;
use zbus::{Connection, interface};

use super::error::Error;
use super::service::Shared;
use crate::api::{ApiError, ErrorCode, Event, GenerateParams, Response, Task};

/// How long a finished job's object stays on the bus.
pub const LINGER: Duration = Duration::from_secs(60);

/// Where jobs live (outside the ObjectManager's tree at `/org/edgeinfer/Daemon1`).
pub const JOBS: &str = "/org/edgeinfer/jobs";

#[derive(Default)]
struct Progress {
    state: &'static str,
    text: String,
    finish_reason: String,
    error_name: String,
    error_message: String,
}

/// One job's state, shared by its object and its driver.
pub struct JobState {
    path: String,
    model: String,
    owner: String,
    cancel: Arc<AtomicBool>,
    progress: Mutex<Progress>,
}

impl JobState {
    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_done(&self) -> bool {
        self.progress().state != "running"
    }

    /// Refuses `sender` unless it started the job. `None` is the daemon itself (a property read
    /// to emit `PropertiesChanged`).
    fn owned_by(&self, sender: Option<&str>) -> Result<(), Error> {
        match sender {
            None => Ok(()),
            Some(s) if s == self.owner => Ok(()),
            Some(_) => Err(super::access::denied("this job belongs to another caller")),
        }
    }

    fn cancel(&self) -> Result<(), Error> {
        let state = self.progress().state;
        if state != "running" {
            return Err(Error::BadInput(format!("job {} has already ended ({state}); nothing to cancel", self.path)));
        }
        self.cancel.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// The jobs of this daemon.
#[derive(Default)]
pub struct Jobs {
    map: Mutex<HashMap<String, Arc<JobState>>>,
}

impl Jobs {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<JobState>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cancels the job at `path`, if `sender` started it.
    pub fn cancel(&self, path: &str, sender: Option<&str>) -> Result<(), Error> {
        let job = self.map().get(path).cloned();
        match job {
            Some(job) => {
                job.owned_by(Some(sender.unwrap_or_default()))?;
                job.cancel()
            }
            None => Err(Error::BadInput(format!("no job {path} (finished jobs are kept for {} s)", LINGER.as_secs()))),
        }
    }

    /// Cancels every running job and forgets them all: the connection they were served on is
    /// gone, and a restarted bus gives their owners' unique names to other peers.
    pub fn cancel_all(&self) {
        let jobs: Vec<Arc<JobState>> = self.map().drain().map(|(_, j)| j).collect();
        for j in jobs.iter().filter(|j| !j.is_done()) {
            tracing::info!(job = %j.path, "the D-Bus connection was lost; cancelling its generation");
            j.cancel.store(true, Ordering::Relaxed);
        }
    }

    /// Cancels the running jobs started by a bus peer that has left.
    pub fn cancel_owned_by(&self, unique_name: &str) -> usize {
        let jobs: Vec<Arc<JobState>> =
            self.map().values().filter(|j| j.owner == unique_name && !j.is_done()).cloned().collect();
        for j in &jobs {
            tracing::info!(job = %j.path, peer = unique_name, "the caller left the bus; cancelling its generation");
            j.cancel.store(true, Ordering::Relaxed);
        }
        jobs.len()
    }
}

/// The name of a finish reason (`eos`, `stop`, `length`, `context_length`, `cancelled`).
pub fn finish_reason_name(r: FinishReason) -> String {
    serde_json::to_value(r).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// `org.edgeinfer.Job1`.
pub struct JobIface(Arc<JobState>);

#[interface(name = "org.edgeinfer.Job1")]
impl JobIface {
    /// Stops the generation after the current token (only the caller that started it).
    async fn cancel(&self, #[zbus(header)] header: Header<'_>) -> Result<(), Error> {
        self.0.owned_by(Some(header.sender().map(|s| s.as_str()).unwrap_or_default()))?;
        self.0.cancel()
    }

    /// New text.
    #[zbus(signal)]
    async fn token(emitter: &SignalEmitter<'_>, seq: u64, text: &str, token_ids: Vec<u32>) -> zbus::Result<()>;

    /// The end.
    #[allow(clippy::too_many_arguments)]
    #[zbus(signal)]
    async fn finished(
        emitter: &SignalEmitter<'_>,
        state: &str,
        text: &str,
        token_ids: Vec<u32>,
        finish_reason: &str,
        prompt_tokens: u32,
        generated_tokens: u32,
        time_to_first_token_ms: f64,
        tokens_per_second: f64,
        total_ms: f64,
        error_name: &str,
        error_message: &str,
    ) -> zbus::Result<()>;

    /// The model.
    #[zbus(property)]
    async fn model(&self, #[zbus(header)] header: Option<Header<'_>>) -> zbus::fdo::Result<String> {
        self.0.owned_by(sender(&header)).map_err(to_fdo)?;
        Ok(self.0.model.clone())
    }

    /// running, finished, cancelled or failed.
    #[zbus(property)]
    async fn state(&self, #[zbus(header)] header: Option<Header<'_>>) -> zbus::fdo::Result<String> {
        self.0.owned_by(sender(&header)).map_err(to_fdo)?;
        Ok(self.0.progress().state.to_string())
    }

    /// The text so far.
    #[zbus(property)]
    async fn text(&self, #[zbus(header)] header: Option<Header<'_>>) -> zbus::fdo::Result<String> {
        self.0.owned_by(sender(&header)).map_err(to_fdo)?;
        Ok(self.0.progress().text.clone())
    }

    /// Why it finished.
    #[zbus(property)]
    async fn finish_reason(&self, #[zbus(header)] header: Option<Header<'_>>) -> zbus::fdo::Result<String> {
        self.0.owned_by(sender(&header)).map_err(to_fdo)?;
        Ok(self.0.progress().finish_reason.clone())
    }

    /// The error name, if it failed.
    #[zbus(property)]
    async fn error_name(&self, #[zbus(header)] header: Option<Header<'_>>) -> zbus::fdo::Result<String> {
        self.0.owned_by(sender(&header)).map_err(to_fdo)?;
        Ok(self.0.progress().error_name.clone())
    }

    /// The error message, if it failed.
    #[zbus(property)]
    async fn error_message(&self, #[zbus(header)] header: Option<Header<'_>>) -> zbus::fdo::Result<String> {
        self.0.owned_by(sender(&header)).map_err(to_fdo)?;
        Ok(self.0.progress().error_message.clone())
    }
}

fn sender<'a>(header: &'a Option<Header<'_>>) -> Option<&'a str> {
    // A read from a peer always has a sender; only the daemon's own reads have no header.
    header.as_ref().map(|h| h.sender().map(|s| s.as_str()).unwrap_or_default())
}

fn to_fdo(e: Error) -> zbus::fdo::Error {
    match e {
        Error::ZBus(zbus::Error::FDO(e)) => *e,
        other => zbus::fdo::Error::Failed(format!("{other:?}")),
    }
}

/// 128 random bits as hex: a job path nobody can guess.
fn random_id() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("no randomness for a job id: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Admits a generation on the model's worker (busy, unknown model... are the method's error) and
/// publishes its job object; the generation then runs on its own.
pub async fn start(
    shared: &Arc<Shared>,
    connection: &Connection,
    model: String,
    mut params: GenerateParams,
    owner: Option<UniqueName<'_>>,
) -> Result<OwnedObjectPath, Error> {
    let Some(owner) = owner.map(|o| o.to_owned()) else {
        return Err(super::access::denied("a generation needs a caller to send its tokens to"));
    };
    params.stream = Some(true);
    let cancel = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::unbounded_channel();
    let span = tracing::info_span!("dbus", method = "Generate", model = model.as_str());
    let pending = shared
        .registry
        .admit(&model, Task::Generate(params), cancel.clone(), Some(tx))
        .instrument(span.clone())
        .await?;
    let path = format!("{JOBS}/{}", random_id()?);
    let job = Arc::new(JobState {
        path: path.clone(),
        model,
        owner: owner.to_string(),
        cancel: cancel.clone(),
        progress: Mutex::new(Progress { state: "running", ..Progress::default() }),
    });
    let server = connection.object_server();
    let object = OwnedObjectPath::try_from(path.clone()).map_err(|e| Error::Internal(e.to_string()))?;
    server.at(object.clone(), JobIface(job.clone())).await?;
    let iface: InterfaceRef<JobIface> = server.interface(object.clone()).await?;
    // Signals go to the caller only (unicast), never to every peer on the bus.
    let emitter = SignalEmitter::new(connection, object.clone())?.into_owned().set_destination(BusName::Unique(owner));
    shared.jobs.map().insert(path.clone(), job.clone());
    tracing::info!(parent: &span, job = %path, "generation started");

    let (shared, connection) = (shared.clone(), connection.clone());
    tokio::spawn(async move {
        drive(&iface, &emitter, &job, rx, pending).await;
        tokio::time::sleep(LINGER).await;
        let _ = connection.object_server().remove::<JobIface, _>(job.path.as_str()).await;
        shared.jobs.map().remove(&job.path);
    });
    Ok(object)
}

async fn drive(
    iface: &InterfaceRef<JobIface>,
    emitter: &SignalEmitter<'_>,
    job: &JobState,
    mut rx: mpsc::UnboundedReceiver<Event>,
    pending: crate::server::registry::Pending,
) {
    let answer = pending.wait();
    tokio::pin!(answer);
    let result = loop {
        tokio::select! {
            biased;
            event = rx.recv() => match event {
                Some(Event::Token(TokenEvent::Delta { seq, text, token_ids })) => {
                    job.progress().text.push_str(&text);
                    let _ = JobIface::token(emitter, seq, &text, token_ids).await;
                }
                Some(_) => {}
                None => break answer.await,
            },
            result = &mut answer => {
                // Deltas sent before the answer are still queued: flush them first.
                while let Ok(Event::Token(TokenEvent::Delta { seq, text, token_ids })) = rx.try_recv() {
                    job.progress().text.push_str(&text);
                    let _ = JobIface::token(emitter, seq, &text, token_ids).await;
                }
                break result;
            }
        }
    };
    let finished = match result {
        Ok(Response::Generation(c)) => {
            let state = if c.finish_reason == FinishReason::Cancelled { "cancelled" } else { "finished" };
            let reason = finish_reason_name(c.finish_reason);
            {
                let mut p = job.progress();
                p.state = state;
                p.text = c.text.clone();
                p.finish_reason = reason.clone();
            }
            JobIface::finished(
                emitter,
                state,
                &c.text,
                c.token_ids,
                &reason,
                u32::try_from(c.usage.prompt_tokens).unwrap_or(u32::MAX),
                u32::try_from(c.usage.generated_tokens).unwrap_or(u32::MAX),
                c.usage.time_to_first_token_ms,
                c.usage.tokens_per_second,
                c.usage.total_ms,
                "",
                "",
            )
            .await
        }
        other => {
            let e = match other {
                Err(e) => e,
                Ok(r) => ApiError::internal(format!("unexpected response {r:?}")),
            };
            let state = if e.code == ErrorCode::Cancelled { "cancelled" } else { "failed" };
            let text = {
                let mut p = job.progress();
                p.state = state;
                p.error_name = e.code.dbus_name().to_string();
                p.error_message = e.message.clone();
                p.text.clone()
            };
            tracing::warn!(job = %job.path, error = %e, "generation failed");
            JobIface::finished(
                emitter,
                state,
                &text,
                Vec::new(),
                "",
                0,
                0,
                0.0,
                0.0,
                0.0,
                e.code.dbus_name(),
                &e.message,
            )
            .await
        }
    };
    if let Err(e) = finished {
        tracing::debug!(job = %job.path, error = %e, "cannot emit Finished (bus gone?)");
    }
    tracing::info!(job = %job.path, state = job.progress().state, "generation ended");
    let object = iface.get().await;
    let _ = object.state_changed(emitter).await;
    let _ = object.text_changed(emitter).await;
    let _ = object.finish_reason_changed(emitter).await;
    let _ = object.error_name_changed(emitter).await;
    let _ = object.error_message_changed(emitter).await;
}
