//! Logging setup for the binaries: one `tracing` pipeline filtered by `--log`/`RUST_LOG` (an
//! `EnvFilter`: `info`, `debug,rumqttc=warn`, ...), writing human-readable lines to stderr, or,
//! for the daemon under systemd, to journald with every field ([`crate::server::journal`]).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn filter(level: Option<&str>, default: &str) -> EnvFilter {
    match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)),
    }
}

/// Installs the global subscriber writing to stderr. `default` applies when neither `level` nor
/// `RUST_LOG` is set.
pub fn init_cli(level: Option<&str>, default: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(level, default))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Installs the global subscriber writing to journald as `identifier`, with the same filter as
/// [`init_cli`]. Fails when the journal socket cannot be opened (the caller then uses stderr).
pub fn init_journal(level: Option<&str>, default: &str, identifier: &str) -> Result<(), String> {
    let journal = crate::server::journal::JournalLayer::new(identifier).map_err(|e| e.to_string())?;
    tracing_subscriber::registry().with(filter(level, default)).with(journal).try_init().map_err(|e| e.to_string())
}

/// Replaces the default panic message (several lines with a backtrace hint) by one log line; the
/// panic itself is still caught or still aborts the thread as before.
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        tracing::error!("internal error: {info}");
    }));
}
