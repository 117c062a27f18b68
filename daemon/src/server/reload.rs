//! Synchronous reloads on any systemd: `edgeinfer reload --pid PID` (the unit's `ExecReload=`)
//! sends SIGHUP and returns only once the daemon reports that reload done, exiting non-zero
//! when the new configuration was refused. systemd ≥ 253 gets the same from
//! `Type=notify-reload`; Debian 12 ships 252, so the unit uses this instead.
//!
//! The daemon reports each reload in `reload.json` in its runtime folder (`$RUNTIME_DIRECTORY`,
//! which the unit's `RuntimeDirectory=` sets for both the daemon and `ExecReload=`; else the
//! state folder): its pid, a count of reloads, and the outcome.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The outcome of the last reload, as written by the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadStatus {
    /// The daemon's pid (a file left by an earlier process is ignored).
    pub pid: u32,
    /// Reloads done by this process.
    pub reloads: u64,
    /// Whether the new configuration was applied.
    pub ok: bool,
    /// The models' state after it, or why the configuration was refused.
    pub message: String,
}

/// Where the status is kept: `$RUNTIME_DIRECTORY/reload.json`, else `<state_dir>/reload.json`.
pub fn status_path(state_dir: &Path) -> PathBuf {
    let dir = std::env::var_os("RUNTIME_DIRECTORY")
        // systemd may list several folders separated by ':'; the first is ours.
        .and_then(|v| v.to_str().and_then(|s| s.split(':').next()).map(PathBuf::from))
        .unwrap_or_else(|| state_dir.to_path_buf());
    dir.join("reload.json")
}

/// Records a finished reload (written to a temporary file and renamed, so a reader never sees
/// half of it).
pub fn record(path: &Path, status: &ReloadStatus) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec(status).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, path)
}

fn read(path: &Path, pid: u32) -> Option<ReloadStatus> {
    let status: ReloadStatus = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    (status.pid == pid).then_some(status)
}

/// Sends SIGHUP to `pid` and waits (at most `timeout`) until it reports the reload done.
pub fn request(pid: u32, path: &Path, timeout: Duration) -> Result<ReloadStatus, String> {
    let before = read(path, pid).map_or(0, |s| s.reloads);
    let target = rustix::process::Pid::from_raw(pid as i32).ok_or_else(|| format!("invalid pid {pid}"))?;
    rustix::process::kill_process(target, rustix::process::Signal::HUP)
        .map_err(|e| format!("cannot signal edgeinferd (pid {pid}): {e}"))?;
    let started = Instant::now();
    // Polled: the file is replaced by rename, and a reload takes as long as its model loads.
    loop {
        if let Some(status) = read(path, pid).filter(|s| s.reloads > before) {
            return Ok(status);
        }
        if rustix::process::test_kill_process(target).is_err() {
            return Err(format!("edgeinferd (pid {pid}) exited during the reload"));
        }
        if started.elapsed() >= timeout {
            return Err(format!(
                "edgeinferd (pid {pid}) did not report the reload done within {} s (is {} its status file?)",
                timeout.as_secs(),
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
