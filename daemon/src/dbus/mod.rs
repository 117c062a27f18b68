//! The D-Bus adapter (zbus): owns the name `org.edgeinfer.Daemon1` on the configured bus and
//! serves the interfaces of daemon/dbus/org.edgeinfer.Daemon1.xml over the same registry as MQTT.
//! It keeps the model objects in step with the registry, cancels the generations of callers
//! that leave the bus, and survives the bus going away: when the connection drops it reconnects
//! with backoff and publishes everything again. Another owner of the name is fatal (two daemons
//! must not serve one bus): the daemon exits saying so, and systemd restarts it.
//!
//! Modules: `service` (root interfaces), `access` (who may call what), `jobs` (generation job
//! objects, private to their caller), `objects` (model objects), `options` (the `a{sv}`
//! arguments), `error` (error names), `client` (the CLI side), `proxy` (client proxies generated
//! from the XML).

pub mod access;
pub mod client;
pub mod error;
// The interface macro derives an undocumented `JobIfaceSignals` trait from the Job1 signals.
#[allow(missing_docs, clippy::too_many_arguments)]
pub mod jobs;
pub mod objects;
pub mod options;
#[allow(missing_docs, clippy::too_many_arguments, clippy::type_complexity)]
pub mod proxy;
pub mod service;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{oneshot, watch};
use zbus::fdo::ObjectManager;
use zbus::{Connection, connection};

use crate::server::config::DbusConfig;
use crate::server::registry::Registry;
use service::{DaemonIface, EmbedderIface, GeneratorIface, ModelsIface, SegmenterIface, Shared};

/// The well-known name.
pub const NAME: &str = "org.edgeinfer.Daemon1";
/// The root object.
pub const ROOT: &str = "/org/edgeinfer/Daemon1";

/// The introspection XML this adapter implements (installed as
/// /usr/share/dbus-1/interfaces/org.edgeinfer.Daemon1.xml).
pub const INTROSPECTION_XML: &str = include_str!("../../dbus/org.edgeinfer.Daemon1.xml");

/// A connection builder for `bus`: `system`, `session`, or a D-Bus address.
pub fn builder(bus: &str) -> zbus::Result<connection::Builder<'static>> {
    match bus {
        "system" => connection::Builder::system(),
        "session" => connection::Builder::session(),
        address => connection::Builder::address(address),
    }
}

async fn connect(bus: &str, shared: &Arc<Shared>) -> zbus::Result<Connection> {
    let conn = builder(bus)?
        .serve_at(ROOT, ObjectManager)?
        .serve_at(ROOT, DaemonIface(shared.clone()))?
        .serve_at(ROOT, ModelsIface(shared.clone()))?
        .serve_at(ROOT, SegmenterIface(shared.clone()))?
        .serve_at(ROOT, EmbedderIface(shared.clone()))?
        .serve_at(ROOT, GeneratorIface(shared.clone()))?
        // Never hand the name over to, or take it from, another process.
        .allow_name_replacements(false)
        .replace_existing_names(false)
        .name(NAME)?
        .build()
        .await?;
    for status in shared.registry.statuses() {
        objects::sync(conn.object_server(), status, false).await?;
    }
    Ok(conn)
}

/// Serves until `shutdown` turns true. `ready` fires once the name is owned. Returns an error
/// only when serving is impossible for a reason retrying cannot fix (the name is owned by
/// another process).
pub async fn serve(
    config: DbusConfig,
    node: String,
    registry: Arc<Registry>,
    mut shutdown: watch::Receiver<bool>,
    ready: oneshot::Sender<()>,
) -> Result<(), String> {
    registry.set_transport("dbus", "connecting");
    let access = access::Access::new(&config);
    let shared = Arc::new(Shared { registry, node, started: Instant::now(), jobs: Default::default(), access });
    let result = serve_shared(&config, &shared, &mut shutdown, ready).await;
    shared.registry.set_transport("dbus", "stopped");
    result
}

async fn serve_shared(
    config: &DbusConfig,
    shared: &Arc<Shared>,
    shutdown: &mut watch::Receiver<bool>,
    ready: oneshot::Sender<()>,
) -> Result<(), String> {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        match connect(&config.bus, shared).await {
            Ok(conn) => {
                backoff = Duration::from_millis(100);
                // Whatever we knew of the peers of a previous connection is void now.
                shared.access.forget_all();
                shared.jobs.cancel_all();
                shared.registry.set_transport("dbus", "connected");
                tracing::info!(bus = %config.bus, name = NAME, unique_name = ?conn.unique_name().map(|n| n.to_string()), "serving on D-Bus");
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
                let lost = run_connection(&conn, shared, shutdown).await;
                if !lost {
                    let _ = conn.release_name(NAME).await;
                    return Ok(());
                }
                shared.registry.set_transport("dbus", "reconnecting");
                tracing::warn!(bus = %config.bus, "the D-Bus connection was lost; reconnecting");
            }
            Err(zbus::Error::NameTaken) => {
                return Err(format!(
                    "the D-Bus name {NAME} is already owned on the {} bus: is another edgeinferd running?",
                    config.bus
                ));
            }
            Err(e) => {
                tracing::warn!(bus = %config.bus, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot serve on D-Bus; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Keeps one connection's model objects in step and watches for callers leaving, until the
/// connection drops (true) or shutdown (false).
async fn run_connection(conn: &Connection, shared: &Arc<Shared>, shutdown: &mut watch::Receiver<bool>) -> bool {
    let mut events = shared.registry.subscribe();
    let server = conn.object_server().clone();
    let models = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Err(err) = objects::sync(&server, e.status, e.removed).await {
                        tracing::debug!(error = %err, "cannot update a model object");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
    });
    // NameOwnerChanged tells us which callers left; the stream also ends (after an error) when
    // the connection is lost, which is how a dropped bus is noticed.
    let owners = match zbus::fdo::DBusProxy::new(conn).await {
        Ok(proxy) => proxy.receive_name_owner_changed().await.ok(),
        Err(_) => None,
    };
    let Some(mut owners) = owners else {
        models.abort();
        return true;
    };
    let lost = loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break false;
                }
            }
            signal = owners.next() => match signal {
                Some(s) => {
                    if let Ok(args) = s.args()
                        && args.new_owner().is_none()
                        && args.name().starts_with(':')
                    {
                        shared.jobs.cancel_owned_by(args.name());
                        shared.access.forget(args.name());
                    }
                }
                None => break true,
            },
        }
    };
    models.abort();
    lost
}
