//! `edgeinferd`: the inference daemon. Wiring only — configuration, logging, the model registry,
//! the transports, systemd notifications and signals; everything else lives in the library.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use edgeinfer_daemon::cli::daemon_args::Args;
use edgeinfer_daemon::mqtt::{self, embedded_broker};
use edgeinfer_daemon::server::config::{self, Config};
use edgeinfer_daemon::server::registry::Registry;
use edgeinfer_daemon::server::systemd;
use edgeinfer_daemon::{dbus, logging};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    const DEFAULT_LOG: &str = "info,rumqttd=warn,rumqttc=warn";
    if systemd::logging_to_journal() {
        if let Err(e) = logging::init_journal(args.log.as_deref(), DEFAULT_LOG, "edgeinferd") {
            eprintln!("cannot log to the journal ({e}); logging to stderr");
            logging::init_cli(args.log.as_deref(), DEFAULT_LOG);
        }
    } else {
        logging::init_cli(args.log.as_deref(), DEFAULT_LOG);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();

    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: invalid configuration: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if args.check_config {
        let node = match config.node() {
            Ok(n) => n,
            Err(e) => {
                eprintln!("error: invalid configuration: no node name: {e}");
                return std::process::ExitCode::from(2);
            }
        };
        if config.mqtt.enabled
            && let Err(e) = edgeinfer_daemon::mqtt::server::check_settings(&config.mqtt)
        {
            eprintln!("error: invalid configuration: {e}");
            return std::process::ExitCode::from(2);
        }
        println!(
            "{}: OK (node '{node}'; {} models: {})",
            args.config.display(),
            config.models.len(),
            config.models.iter().map(|m| m.id.as_str()).collect::<Vec<_>>().join(", ")
        );
        // Not errors: the daemon starts and serves the others; these stay `failed` until their
        // folder is there.
        for m in &config.models {
            if let Some(why) = m.missing() {
                eprintln!("warning: model '{}' will be failed: {why}", m.id);
            }
        }
        if config.models.is_empty() {
            eprintln!("note: {}", no_models_hint(&args.config));
        }
        return std::process::ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("edgeinferd-io")
        // Under the unit's TasksMax=256: blocking work (file reads, model loads) queues beyond this.
        .max_blocking_threads(64)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(3);
        }
    };
    let result = runtime.block_on(run(args.config, config));
    // A model load that never returns (a weight file on a hung network mount, a FIFO) holds a
    // blocking thread: do not wait for it at exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

/// SIGTERM while a transport is still connecting (a broker that refuses us keeps the start
/// waiting up to 15 s): stop at once, cleanly.
async fn stop_while_starting(
    shutdown: &watch::Sender<bool>,
    transports: Vec<tokio::task::JoinHandle<()>>,
) -> Result<(), String> {
    tracing::info!("stopping while starting");
    systemd::stopping();
    stop_transports(shutdown, transports).await;
    Ok(())
}

/// Tells the transports to stop (they say offline and disconnect) and waits for each, bounded.
async fn stop_transports(shutdown: &watch::Sender<bool>, transports: Vec<tokio::task::JoinHandle<()>>) {
    let _ = shutdown.send(true);
    for t in transports {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
}

/// Runs a transport; its end while the daemon runs — an error, a panic, or a plain return — is
/// reported on `fatal`.
fn supervise(
    name: &'static str,
    serve: impl Future<Output = Result<(), String>> + Send + 'static,
    fatal: tokio::sync::mpsc::Sender<String>,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let inner = tokio::spawn(serve);
    tokio::spawn(async move {
        let why = match inner.await {
            Ok(Ok(())) if *shutdown.borrow() => return,
            Ok(Ok(())) => format!("the {name} transport stopped unexpectedly"),
            Ok(Err(e)) => e,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    format!("the {name} transport panicked: {message}")
                }
                Err(e) => format!("the {name} transport was cancelled: {e}"),
            },
        };
        tracing::error!(transport = name, "{why}");
        let _ = fatal.send(why).await;
    })
}

/// What to do about a config without models (a fresh install).
fn no_models_hint(config: &std::path::Path) -> String {
    format!(
        "no models configured: add a [[models]] table to {} (it has commented examples; `edgeinfer pull OWNER/NAME` \
         fetches a model from the Hugging Face Hub), then reload (systemctl reload edgeinferd)",
        config.display()
    )
}

async fn run(path: PathBuf, config: Config) -> Result<(), String> {
    let node = config.node().map_err(|e| format!("no node name: {e}"))?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), %node, config = %path.display(), "edgeinferd starting");
    let registry = Registry::new(&config);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    if config.mqtt.enabled && config.mqtt.embedded_broker {
        let (_, _, port) = config::parse_broker_url(&config.mqtt.url)?;
        embedded_broker::start_if_needed(port, config.mqtt.max_packet_bytes)?;
    }
    // Metrics first: a port already taken is a configuration error, reported before anything
    // else starts.
    let _metrics = match config.metrics.address()? {
        Some(addr) => Some(
            edgeinfer_daemon::server::metrics_http::start(addr, node.clone(), registry.clone(), shutdown_rx.clone())
                .await?,
        ),
        None => None,
    };
    let mut sighup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;

    systemd::status("loading models");
    registry.preload().await;

    // A transport that cannot serve for a reason retrying will not fix (bad TLS files, the D-Bus
    // name owned by another process), or that ends or panics while the daemon runs, stops the
    // daemon with a non-zero exit, saying why: systemd restarts it, and nothing stays READY
    // with a dead transport.
    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<String>(2);
    let mut transports = Vec::new();
    // Cancellable MQTT requests, shared by the node's own connection and the fleet's.
    let running = mqtt::server::Running::default();
    if config.mqtt.enabled {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        transports.push(supervise(
            "MQTT",
            mqtt::server::serve(
                config.mqtt.clone(),
                node.clone(),
                registry.clone(),
                running.clone(),
                shutdown_rx.clone(),
                ready_tx,
            ),
            fatal_tx.clone(),
            shutdown_rx.clone(),
        ));
        // READY means requests are routed to us: wait (bounded) for the broker subscription. An
        // unreachable broker does not keep the service from starting; the adapter keeps retrying.
        systemd::status("connecting to the MQTT broker");
        tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(15), ready_rx) => {
                if !matches!(r, Ok(Ok(()))) {
                    tracing::warn!(url = %config.mqtt.url, "MQTT broker not reachable yet; starting anyway and retrying in the background");
                }
            }
            Some(e) = fatal_rx.recv() => return Err(e),
            _ = sigterm.recv() => return stop_while_starting(&shutdown_tx, transports).await,
            _ = sigint.recv() => return stop_while_starting(&shutdown_tx, transports).await,
        }
    }

    // The fleet's shared queue (docs/fleet.md): its own connection, joined once the node's own
    // topics are served.
    if config.mqtt.enabled
        && let Some(group) = config.mqtt.shared_group.clone()
    {
        transports.push(supervise(
            "MQTT fleet",
            mqtt::fleet::serve(
                config.mqtt.clone(),
                node.clone(),
                group,
                registry.clone(),
                running.clone(),
                shutdown_rx.clone(),
            ),
            fatal_tx.clone(),
            shutdown_rx.clone(),
        ));
    }

    if config.dbus.enabled {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        transports.push(supervise(
            "D-Bus",
            dbus::serve(config.dbus.clone(), node.clone(), registry.clone(), shutdown_rx.clone(), ready_tx),
            fatal_tx.clone(),
            shutdown_rx.clone(),
        ));
        systemd::status("connecting to D-Bus");
        tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(15), ready_rx) => {
                if !matches!(r, Ok(Ok(()))) {
                    tracing::warn!(bus = %config.dbus.bus, "D-Bus not reachable yet; starting anyway and retrying in the background");
                }
            }
            Some(e) = fatal_rx.recv() => return Err(e),
            _ = sigterm.recv() => return stop_while_starting(&shutdown_tx, transports).await,
            _ = sigint.recv() => return stop_while_starting(&shutdown_tx, transports).await,
        }
    }

    // Keep-alive expiry.
    let expiry = {
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(250));
            loop {
                ticker.tick().await;
                registry.expire_idle().await;
            }
        })
    };
    let watchdog = systemd::watchdog_interval().map(|interval| {
        tracing::info!(interval_ms = interval.as_millis() as u64, "systemd watchdog enabled");
        tokio::spawn(systemd::watchdog(interval, registry.clone()))
    });

    let summary = |r: &Registry| {
        let s = r.statuses();
        let loaded = s.iter().filter(|m| m.state == edgeinfer_daemon::server::registry::ModelState::Loaded).count();
        let failed: Vec<&str> = s
            .iter()
            .filter(|m| m.state == edgeinfer_daemon::server::registry::ModelState::Failed)
            .map(|m| m.id.as_str())
            .collect();
        let mut line = format!("serving {} models ({loaded} loaded)", s.len());
        if !failed.is_empty() {
            line.push_str(&format!("; failed to load: {}", failed.join(", ")));
        }
        line
    };
    let line = summary(&registry);
    tracing::info!("{line}");
    if config.models.is_empty() {
        tracing::info!("{}", no_models_hint(&path));
    }
    systemd::ready(&line);

    // A reload runs beside the signal loop, so SIGTERM is handled at once even while a reload
    // waits on a slow (or hung) model load; the reload is then abandoned.
    let mut current = config.clone();
    let mut reload: Option<tokio::task::JoinHandle<Config>> = None;
    // `edgeinfer reload` (the unit's ExecReload=) waits for this file to count the reload.
    let reload_status = edgeinfer_daemon::server::reload::status_path(&config.daemon.state_dir);
    let mut reloads = 0u64;
    let mut report = |ok: bool, message: String| {
        reloads += 1;
        let status = edgeinfer_daemon::server::reload::ReloadStatus { pid: std::process::id(), reloads, ok, message };
        if let Err(e) = edgeinfer_daemon::server::reload::record(&reload_status, &status) {
            tracing::warn!(path = %reload_status.display(), error = %e, "cannot record the reload's outcome");
        }
    };
    // A SIGHUP during a reload is queued: it runs when the current one is done, so that the
    // newest file is always read (and `edgeinfer reload` never reports an older reload).
    let mut queued = false;
    loop {
        let mut start = false;
        tokio::select! {
            _ = sighup.recv() => {
                if reload.is_some() {
                    tracing::info!("SIGHUP during a reload: another reload follows this one");
                    queued = true;
                } else {
                    start = true;
                }
            }
            done = async {
                match reload.as_mut() {
                    Some(r) => r.await,
                    None => std::future::pending().await,
                }
            } => {
                reload = None;
                let ok = match done {
                    Ok(new) => {
                        current = new;
                        true
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the reload task failed");
                        false
                    }
                };
                let line = summary(&registry);
                tracing::info!("reload done: {line}");
                systemd::ready(&line);
                report(ok, if ok { line } else { format!("the reload failed: {line}") });
                start = std::mem::take(&mut queued);
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            Some(e) = fatal_rx.recv() => {
                systemd::stopping();
                let _ = shutdown_tx.send(true);
                registry.shutdown().await;
                return Err(e);
            }
        }
        if !start {
            continue;
        }
        systemd::reloading();
        tracing::info!(config = %path.display(), "SIGHUP: reloading the configuration");
        match Config::load(&path) {
            Ok(new) => {
                for (section, changed) in [
                    ("[mqtt]", new.mqtt != current.mqtt),
                    ("[dbus]", new.dbus != current.dbus),
                    ("[metrics]", new.metrics != current.metrics),
                    ("[daemon] node", new.daemon.node != current.daemon.node),
                ] {
                    if changed {
                        tracing::warn!("{section} changed: a reload does not apply it; restart the daemon for that");
                    }
                }
                let registry = registry.clone();
                reload = Some(tokio::spawn(async move {
                    registry.reconfigure(&new).await;
                    new
                }));
            }
            Err(e) => {
                tracing::error!(error = %e, "the new configuration is invalid; keeping the current one");
                systemd::ready(&summary(&registry));
                report(false, format!("the new configuration is invalid; keeping the current one: {e}"));
            }
        }
    }
    if let Some(r) = reload.take() {
        tracing::warn!("stopping during a reload: abandoning it");
        r.abort();
    }

    tracing::info!("stopping: no new requests, finishing in-flight ones");
    systemd::stopping();
    let grace = Duration::from_millis(config.daemon.shutdown_grace_ms);
    let drained = tokio::time::timeout(grace, async {
        let registry: Arc<Registry> = registry.clone();
        registry.shutdown().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("in-flight requests did not finish within the grace period");
    }
    stop_transports(&shutdown_tx, transports).await;
    expiry.abort();
    if let Some(w) = watchdog {
        w.abort();
    }
    tracing::info!("edgeinferd stopped");
    Ok(())
}
