//! systemd integration: `sd_notify` (READY after preloads, STATUS lines, WATCHDOG, STOPPING,
//! RELOADING) and the choice of log output (journald when `JOURNAL_STREAM` says stdout is the
//! journal, human-readable `tracing` output otherwise). Without `NOTIFY_SOCKET` every call is a
//! no-op, so the daemon runs the same outside systemd.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::server::registry::Registry;

/// Sends `READY=1` with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Sends a `STATUS=` line.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Sends `STOPPING=1`.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Sends `RELOADING=1` with the monotonic timestamp systemd ≥ 253 requires.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Pings the watchdog at half its interval, but only while the runtime is alive *and* the model
/// workers answer: a worker stuck beyond twice its model's request timeout stops the pings, so
/// systemd restarts us.
pub async fn watchdog(interval: Duration, registry: Arc<Registry>) {
    let period = interval / 2;
    let mut ticker = tokio::time::interval(period);
    loop {
        ticker.tick().await;
        if let Some(model) = registry.stuck() {
            tracing::error!(
                model,
                "a model worker is stuck; withholding the watchdog ping so systemd restarts the daemon"
            );
            continue;
        }
        send(&[NotifyState::Watchdog]);
    }
}

/// Whether stdout/stderr is connected to the journal (systemd sets `JOURNAL_STREAM`).
pub fn logging_to_journal() -> bool {
    systemd_journal_logger::connected_to_journal()
}
