//! Logging setup for the binaries: human-readable `tracing` output on stderr, filtered by
//! `--log`/`RUST_LOG` (default `warn` for the CLI).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `default` applies when neither `level` nor `RUST_LOG` is set.
pub fn init_cli(level: Option<&str>, default: &str) {
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)),
    };
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

/// Replaces the default panic message (several lines with a backtrace hint) by one log line; the
/// panic itself is still caught or still aborts the thread as before.
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        tracing::error!("internal error: {info}");
    }));
}
