//! The MQTT adapter (rumqttc, MQTT 5): MQTT messages → [`Task`]s for the registry → replies, and
//! the daemon's retained status, per-model state and periodic stats. Nothing here knows models;
//! nothing below knows MQTT. Topic tree and payloads: docs/mqtt.md.
//!
//! Requests arrive on `<prefix>/<node>/models/<id>/<task>` (QoS 1). Replies go to the MQTT 5
//! response topic with the correlation data echoed, or, for MQTT 3.1.1 clients, to the JSON
//! `reply_to` with its `id`. Generation streams deltas with a sequence number, then a final
//! `done: true` message. A request that names no reply topic, or one that is not allowed, is
//! not run; the refusal goes to `<prefix>/<node>/errors` — never silently dropped. Replies only go to allowed topics
//! (`reply_topics`: `<prefix>/replies/#` and the configured patterns); a request naming any other
//! is refused there too. Cancellation is scoped to the (reply topic, id) pair that started the
//! request, so one client cannot cancel another's work.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, LastWill, Packet, Publish, PublishProperties};
use rumqttc::v5::{AsyncClient, Event as MqttEvent, MqttOptions};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::Instrument;

use crate::api::{ApiError, ErrorCode, Event, Task};
use crate::mqtt::homeassistant::Discovery;
use crate::mqtt::puback_order::PubackOrder;
use crate::mqtt::reply_topics::ReplyTopics;
use crate::server::config::{MqttConfig, parse_broker_url};
use crate::server::registry::Registry;
use crate::server::status::stats_json;

/// Topic names for one node.
#[derive(Clone, Debug)]
pub struct Topics {
    base: String,
    fleet: String,
}

impl Topics {
    /// Topics under `<prefix>/<node>` (and the fleet's, under `<prefix>/fleet`).
    pub fn new(prefix: &str, node: &str) -> Topics {
        let prefix = prefix.trim_end_matches('/');
        Topics { base: format!("{prefix}/{node}"), fleet: format!("{prefix}/fleet") }
    }
    /// The shared subscription that takes model `id`'s share of the fleet's requests.
    pub fn fleet_filter(&self, group: &str, id: &str) -> String {
        format!("$share/{group}/{}/models/{id}/#", self.fleet)
    }
    /// Whether `topic` is a fleet request (`<prefix>/fleet/models/<id>/<task>`).
    pub fn is_fleet(&self, topic: &str) -> bool {
        topic.strip_prefix(&self.fleet).is_some_and(|rest| rest.starts_with("/models/"))
    }
    /// Retained daemon status.
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }
    /// Periodic stats.
    pub fn stats(&self) -> String {
        format!("{}/stats", self.base)
    }
    /// Unanswerable requests are reported here.
    pub fn errors(&self) -> String {
        format!("{}/errors", self.base)
    }
    /// Retained state of a model.
    pub fn model_state(&self, id: &str) -> String {
        format!("{}/models/{id}/state", self.base)
    }
    /// Subscription for requests.
    pub fn requests(&self) -> String {
        format!("{}/models/#", self.base)
    }
    /// Subscription for daemon-level requests (`list`).
    pub fn list(&self) -> String {
        format!("{}/list", self.base)
    }
    /// Requests for the daemon's stats and Prometheus metrics.
    pub fn metrics(&self) -> String {
        format!("{}/metrics", self.base)
    }
    /// `(model id, task path)` of a request topic: this node's, or the fleet's.
    pub fn parse<'a>(&self, topic: &'a str) -> Option<(&'a str, &'a str)> {
        // Each base with its "/models/" as one prefix: a node named "fl" must not take
        // "<prefix>/fleet/..." for its own.
        let models = |base: &str| topic.strip_prefix(base).and_then(|rest| rest.strip_prefix("/models/"));
        models(&self.base).or_else(|| models(&self.fleet))?.split_once('/')
    }
}

/// Running requests that can be cancelled, by [`ReplyTo::request_key`]: one map for the node's
/// own connection and the fleet's, so that a cancel on the node's topic reaches a fleet request
/// that node runs.
pub type Running = Arc<Mutex<HashMap<RequestKey, Arc<AtomicBool>>>>;

/// What identifies a running request for cancellation: its reply topic and its id (or
/// correlation data). A client can only name requests answered on its own reply topic — which
/// the broker's ACL can make private to it (docs/security.md).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestKey {
    topic: String,
    id: RequestId,
}

/// A request's own id: its JSON `id` (as JSON text: `"5"` and `5` differ), else its MQTT 5
/// correlation data (bytes, compared exactly).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum RequestId {
    Json(String),
    Correlation(bytes::Bytes),
}

/// Connects to the broker and serves until `shutdown` turns true; then publishes `offline` and
/// disconnects. `running` is shared with the fleet connection ([`crate::mqtt::fleet`]). Connection failures are retried with backoff for ever; an error return means
/// the configuration cannot work (TLS files, URL), which retrying would not fix.
pub async fn serve(
    config: MqttConfig,
    node: String,
    registry: Arc<Registry>,
    running: Running,
    mut shutdown: watch::Receiver<bool>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<(), String> {
    let mut ready = Some(ready);
    let topics = Topics::new(&config.prefix, &node);
    let client_id = config.client_id.clone().unwrap_or_else(|| format!("edgeinferd-{node}"));
    let will = json!({"state": "offline", "node": node, "reason": "connection lost"}).to_string();
    let will = LastWill::new(topics.status(), will.into_bytes(), QoS::AtLeastOnce, true, None);
    let options = options(&config, client_id, Some(will), config.persistent_session)
        .map_err(|e| format!("MQTT is not usable: {e}"))?;
    let replies =
        ReplyTopics::new(&config.prefix, &config.reply_topics).map_err(|e| format!("MQTT is not usable: {e}"))?;
    tracing::info!(patterns = ?replies.patterns(), "MQTT replies are published only on these topics");
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    let ours_max_packet = u32::try_from(config.max_packet_bytes).unwrap_or(u32::MAX);
    let out = Outbox::new(client.clone(), topics.clone(), replies, &node, ours_max_packet);
    let handler = Handler::new(out.clone(), registry.clone(), &config, running);
    let started = Instant::now();
    let mut connected_before = false;
    let mut connected_now = false;

    // Home Assistant discovery configs (retained), when asked for.
    let discovery = config
        .homeassistant_discovery
        .then(|| Arc::new(Discovery::new(&config.homeassistant_prefix, &node, topics.clone())));

    // Model state changes → retained state topics (and, for models added or removed by a
    // reload, their discovery configs).
    let mut events = registry.subscribe();
    let (state_out, state_discovery) = (out.clone(), discovery.clone());
    let mut discovered: std::collections::HashSet<String> = registry.ids().into_iter().collect();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            let id = &e.status.id;
            let topic = state_out.topics.model_state(id);
            let payload = if e.removed { Vec::new() } else { serde_json::to_vec(&e.status).unwrap_or_default() };
            state_out.publish(topic, true, payload).await;
            // A model added by a reload gets its configs; a removed one loses them (an empty
            // retained config deletes the entity).
            let changed = if e.removed { discovered.remove(id) } else { discovered.insert(id.clone()) };
            if let Some(d) = state_discovery.as_ref().filter(|_| changed) {
                for (topic, config) in d.model_configs(id) {
                    let payload = if e.removed { String::new() } else { config.to_string() };
                    state_out.publish(topic, true, payload).await;
                }
            }
        }
    });

    // Another transport's state changed (the D-Bus connection lost or back) → the status topic.
    let mut transports = registry.watch_transports();
    let (status_out, status_registry, status_node) = (out.clone(), registry.clone(), node.clone());
    let republish = tokio::spawn(async move {
        let mut others_were = BTreeMap::new();
        while transports.changed().await.is_ok() {
            // Our own connection's changes are published at connect; here, the others' (D-Bus,
            // the fleet connection).
            let (online, others) = {
                let now = transports.borrow_and_update();
                let others: BTreeMap<&str, &str> =
                    now.iter().filter(|(k, _)| **k != "mqtt").map(|(k, v)| (*k, *v)).collect();
                (now.get("mqtt") == Some(&"connected"), others)
            };
            let changed = std::mem::replace(&mut others_were, others.clone()) != others;
            if online && changed {
                let payload = status_json(&status_registry, &status_node, "online").to_string();
                status_out.publish(status_out.topics.status(), true, payload).await;
            }
        }
    });

    // Periodic stats, retained: the last figures of a node stay readable (`edgeinfer nodes`,
    // Home Assistant) after it stops.
    if config.stats_interval_s > 0 {
        let stats_out = out.clone();
        let (stats_registry, stats_node) = (registry.clone(), node.clone());
        let every = Duration::from_secs(config.stats_interval_s);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            let mut rates = crate::server::status::Rates::default();
            loop {
                ticker.tick().await;
                let mut payload = stats_json(&stats_registry, started);
                rates.annotate(&mut payload);
                payload["node"] = json!(stats_node);
                stats_out.publish(stats_out.topics.stats(), true, payload.to_string()).await;
            }
        });
    }

    registry.set_transport("mqtt", "connecting");
    let mut announce: Option<tokio::task::JoinHandle<()>> = None;
    let mut reconnect = Reconnect::default();
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            polled = eventloop.poll() => match polled {
                Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                    // Requests are only routed to us once subscribed: that is "ready".
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                    reconnect.connected();
                    connected_now = true;
                    registry.set_transport("mqtt", "connected");
                    // The broker's Maximum Packet Size: a larger reply would fail in the codec and
                    // drop the connection (and, kept in a persistent session, again on every
                    // reconnect). Replies are checked against it before they are queued.
                    let broker_max = ack.properties.as_ref().and_then(|p| p.max_packet_size).unwrap_or(u32::MAX);
                    let max_packet = broker_max.min(ours_max_packet);
                    out.set_max_packet(max_packet);
                    tracing::info!(url = %config.url, session_present = ack.session_present, max_packet_bytes = max_packet, "connected to the MQTT broker");
                    if config.persistent_session && !ack.session_present && connected_before {
                        tracing::warn!("the broker kept no session for us (it expired or the broker lost it): requests it had delivered but we had not answered will not be re-sent");
                    } else if !config.persistent_session && connected_before {
                        tracing::warn!("reconnected with a clean session (mqtt.persistent_session = false): requests and replies in flight when the connection dropped are lost");
                    }
                    connected_before = true;
                    if !ack.session_present {
                        out.new_session();
                    }
                    // Subscribe and announce from a task of its own: this task polls the event
                    // loop, and awaiting the client's request queue (which replies may fill)
                    // from here could wait for ever.
                    if let Some(previous) = announce.take() {
                        previous.abort();
                    }
                    let (client, topics, out, registry, node, discovery) =
                        (client.clone(), topics.clone(), out.clone(), registry.clone(), node.clone(), discovery.clone());
                    announce = Some(tokio::spawn(async move {
                        let filters = [topics.requests(), topics.list(), topics.metrics()]
                            .into_iter()
                            .map(|t| Filter { nolocal: true, ..Filter::new(t, QoS::AtLeastOnce) })
                            .collect::<Vec<_>>();
                        if let Err(e) = client.subscribe_many(filters).await {
                            tracing::warn!(error = %e, "subscribe failed");
                        }
                        out.publish(topics.status(), true, status_json(&registry, &node, "online").to_string()).await;
                        for status in registry.statuses() {
                            let payload = serde_json::to_vec(&status).unwrap_or_default();
                            out.publish(topics.model_state(&status.id), true, payload).await;
                        }
                        if let Some(d) = &discovery {
                            let models = registry.ids();
                            let configs =
                                d.node_configs().into_iter().chain(models.iter().flat_map(|id| d.model_configs(id)));
                            for (topic, config) in configs {
                                out.publish(topic, true, config.to_string()).await;
                            }
                        }
                    }));
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => handler.dispatch(p),
                Ok(_) => {}
                Err(e) => {
                    registry.set_transport("mqtt", "reconnecting");
                    let (why, refused) = describe_connection_error(&e);
                    let why = if refused {
                        why
                    } else if std::mem::take(&mut connected_now) {
                        format!("MQTT connection lost ({why})")
                    } else {
                        format!("cannot reach the MQTT broker ({why})")
                    };
                    if reconnect.wait(&why, refused, &config.url, &mut shutdown).await {
                        break;
                    }
                }
            }
        }
    }
    // Nothing may publish "online" after the "offline" below.
    republish.abort();
    let _ = republish.await;
    if let Some(announce) = announce.take() {
        announce.abort();
        let _ = announce.await;
    }
    registry.set_transport("mqtt", "stopped");
    // Graceful: say offline (the will covers crashes), then disconnect.
    out.publish(topics.status(), true, status_json(&registry, &node, "offline").to_string()).await;
    let _ = client.disconnect().await;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await {
            Ok(Ok(MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect))) | Ok(Err(_)) => break,
            _ => {}
        }
    }
    Ok(())
}

/// Reconnecting after a failed or lost connection: exponential backoff from 100 ms, up to 10 s,
/// or 60 s after a refusal (credentials, certificates do not heal in seconds); each failure
/// logged once, so a wrong password gives one clear line, not one per retry.
pub(crate) struct Reconnect {
    backoff: Duration,
    /// The last failure logged, without digits (TLS errors carry the time, socket errors ports).
    last_error: Option<String>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect { backoff: Duration::from_millis(100), last_error: None }
    }
}

impl Reconnect {
    /// Connected: the next failure starts the backoff again and is logged.
    pub(crate) fn connected(&mut self) {
        *self = Reconnect::default();
    }

    /// Logs `why` (at debug level when it is the same failure as last time) and waits the
    /// backoff, or until `shutdown` turns true; returns whether to stop.
    pub(crate) async fn wait(
        &mut self,
        why: &str,
        refused: bool,
        url: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let retry_in_ms = self.backoff.as_millis() as u64;
        let key: String = why.chars().filter(|c| !c.is_ascii_digit()).collect();
        if self.last_error.as_deref() == Some(key.as_str()) {
            tracing::debug!(retry_in_ms, "{why}");
        } else if refused {
            tracing::error!(url, retry_in_ms, "{why}; retrying with backoff");
        } else {
            tracing::warn!(url, retry_in_ms, "{why}; reconnecting");
        }
        self.last_error = Some(key);
        tokio::select! {
            _ = tokio::time::sleep(self.backoff) => {}
            _ = shutdown.changed() => {}
        }
        let cap = if refused { Duration::from_secs(60) } else { Duration::from_secs(10) };
        self.backoff = (self.backoff * 2).min(cap);
        *shutdown.borrow()
    }
}

/// One line saying why a connection attempt failed, and whether the broker or the TLS handshake
/// refused us (a configuration or credential problem) rather than the network failing.
pub(crate) fn describe_connection_error(e: &rumqttc::v5::ConnectionError) -> (String, bool) {
    use rumqttc::v5::ConnectionError as E;
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as Code;
    match e {
        E::ConnectionRefused(code @ (Code::BadUserNamePassword | Code::NotAuthorized)) => (
            format!(
                "the MQTT broker refused the connection ({code:?}): check mqtt.username and the password \
                 (mqtt.password_file, $CREDENTIALS_DIRECTORY/mqtt-password or EDGEINFER_MQTT_PASSWORD)"
            ),
            true,
        ),
        E::ConnectionRefused(code) => (format!("the MQTT broker refused the connection ({code:?})"), true),
        E::Tls(tls) => {
            let text = tls.to_string();
            let lower = text.to_lowercase().replace(' ', "");
            let hint = if lower.contains("unknownissuer") {
                ": the broker's certificate is not signed by a trusted CA (mqtt.ca_file, or the system CA bundle)"
            } else if lower.contains("expired") {
                ": the broker's certificate has expired (or the clock is wrong)"
            } else if lower.contains("notvalidforname") {
                ": the broker's certificate is not valid for the host name in mqtt.url"
            } else if text.contains("No valid key")
                || text.contains("private key")
                || text.contains("certificate for client")
            {
                ": mqtt.client_cert / mqtt.client_key"
            } else {
                ""
            };
            (format!("TLS with the MQTT broker failed: {text}{hint}"), true)
        }
        E::Io(io) if io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) => {
            (format!("TLS with the MQTT broker failed: {io}"), true)
        }
        other => (other.to_string(), false),
    }
}

/// Checks the MQTT settings that can be checked offline: the URL and the TLS files (readable,
/// PEM). `edgeinferd --check-config` runs it.
pub fn check_settings(config: &MqttConfig) -> Result<(), String> {
    let (tls, _, _) = parse_broker_url(&config.url)?;
    if tls {
        tls_transport(config)?;
    }
    Ok(())
}

/// Connection options: the broker, credentials and TLS from `config`; a persistent session
/// (clean start off, `session_expiry_s`) or none at all (clean start, expiry 0).
pub(crate) fn options(
    config: &MqttConfig,
    client_id: String,
    will: Option<LastWill>,
    persistent: bool,
) -> Result<MqttOptions, String> {
    let (tls, host, port) = parse_broker_url(&config.url)?;
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_network_options(no_delay());
    o.set_keep_alive(Duration::from_secs(config.keep_alive_s.max(5)));
    o.set_clean_start(!persistent);
    if persistent {
        o.set_session_expiry_interval(Some(config.session_expiry_s));
    }
    // A request is acknowledged when its final reply has been published (see `serve`).
    o.set_manual_acks(true);
    o.set_max_packet_size(Some(u32::try_from(config.max_packet_bytes).unwrap_or(u32::MAX)));
    if let Some(will) = will {
        o.set_last_will(will);
    }
    if let (Some(u), p) = (&config.username, &config.password) {
        o.set_credentials(u.clone(), p.clone().unwrap_or_default());
    }
    if tls {
        o.set_transport(tls_transport(config)?);
    }
    Ok(o)
}

/// TCP without Nagle's algorithm (rumqttc leaves it on). Replies are small writes after a request
/// the broker may not have acknowledged yet at the TCP level; with Nagle they wait for that ACK,
/// which the peer's delayed-ACK timer can hold back for tens of milliseconds.
pub(crate) fn no_delay() -> rumqttc::NetworkOptions {
    let mut n = rumqttc::NetworkOptions::new();
    n.set_tcp_nodelay(true);
    n
}

/// Where Debian, Fedora/RHEL and Alpine/OpenEmbedded keep the system's CA bundle (PEM).
const SYSTEM_CA_BUNDLES: [&str; 3] =
    ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

/// The TLS transport: the CA from `ca_file`, else the system bundle (`SSL_CERT_FILE`, else the
/// first of [`SYSTEM_CA_BUNDLES`] that can be read), and the client certificate when configured.
/// Everything is read and checked here, at start: a missing or unreadable CA is a configuration
/// error with the path in it, never a panic in the TLS library nor a silent retry loop.
fn tls_transport(config: &MqttConfig) -> Result<rumqttc::Transport, String> {
    let read =
        |p: &std::path::Path, what: &str| std::fs::read(p).map_err(|e| format!("mqtt.{what} {}: {e}", p.display()));
    let ca = match &config.ca_file {
        Some(ca) => read(ca, "ca_file")?,
        None => {
            // SSL_CERT_FILE, when set, is the trust store: unreadable is an error, not a reason
            // to quietly trust another bundle.
            if let Some(file) = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from) {
                let ca = std::fs::read(&file).map_err(|e| format!("SSL_CERT_FILE {}: {e}", file.display()))?;
                tracing::info!(ca = %file.display(), "MQTT over TLS: trusting SSL_CERT_FILE");
                ca
            } else {
                let candidates = SYSTEM_CA_BUNDLES.iter().map(std::path::PathBuf::from);
                let mut tried = Vec::new();
                let mut found = None;
                for path in candidates {
                    match std::fs::read(&path) {
                        Ok(bytes) => {
                            tracing::info!(ca = %path.display(), "MQTT over TLS: trusting the system CA bundle (set mqtt.ca_file to pin a CA)");
                            found = Some(bytes);
                            break;
                        }
                        Err(e) => tried.push(format!("{}: {e}", path.display())),
                    }
                }
                found.ok_or_else(|| {
                    format!(
                        "mqtts:// needs a CA: set mqtt.ca_file (no system CA bundle could be read: {})",
                        tried.join("; ")
                    )
                })?
            }
        }
    };
    if !contains_pem(&ca, "CERTIFICATE") {
        return Err("the MQTT CA file holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    let client_auth = match (&config.client_cert, &config.client_key) {
        (Some(c), Some(k)) => {
            let (cert, key) = (read(c, "client_cert")?, read(k, "client_key")?);
            if !contains_pem(&cert, "CERTIFICATE") {
                return Err(format!("mqtt.client_cert {}: no PEM certificate in it", c.display()));
            }
            if !contains_pem(&key, "PRIVATE KEY") {
                return Err(format!("mqtt.client_key {}: no PEM private key in it", k.display()));
            }
            Some((cert, key))
        }
        (None, None) => None,
        _ => return Err("mqtt.client_cert and mqtt.client_key go together".into()),
    };
    Ok(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Simple { ca, alpn: None, client_auth }))
}

/// Whether `pem` has a `-----BEGIN ...<kind>-----` block.
fn contains_pem(pem: &[u8], kind: &str) -> bool {
    String::from_utf8_lossy(pem)
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{kind}-----")))
}

/// The retained status payload.
pub fn status_json(registry: &Registry, node: &str, state: &str) -> Value {
    let providers = crate::server::status::loaded_execution_providers();
    json!({
        "state": state,
        "node": node,
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "models": registry.statuses().iter().map(|s| json!({"id": s.id, "state": s.state, "family": s.family})).collect::<Vec<_>>(),
        "transports": registry.transports(),
        "execution_providers": providers,
    })
}

/// Where and how to answer one request.
pub struct ReplyTo {
    topic: Option<String>,
    correlation: Option<bytes::Bytes>,
    id: Option<Value>,
}

/// The envelope fields of a JSON request (MQTT 3.1.1 clients), read without copying the rest.
#[derive(serde::Deserialize)]
struct Envelope {
    id: Option<Value>,
    reply_to: Option<String>,
}

impl ReplyTo {
    /// Where to answer `p`: the MQTT 5 response topic and correlation data, else the `reply_to`
    /// and `id` of its JSON body, or of its `params` user property for binary payloads.
    pub fn of(p: &Publish) -> ReplyTo {
        let props = p.properties.as_ref();
        let mut reply = ReplyTo {
            topic: props.and_then(|pp| pp.response_topic.clone()),
            correlation: props.and_then(|pp| pp.correlation_data.clone()),
            id: None,
        };
        let envelope: Option<Envelope> = if p.payload.first() == Some(&b'{') {
            serde_json::from_slice(&p.payload).ok()
        } else {
            props
                .and_then(|pp| pp.user_properties.iter().find(|(k, _)| k == "params"))
                .and_then(|(_, v)| serde_json::from_str(v).ok())
        };
        if let Some(e) = envelope {
            reply.id = e.id;
            if reply.topic.is_none() {
                reply.topic = e.reply_to;
            }
        }
        reply
    }

    /// `body` with the request's JSON `id` echoed, as text.
    fn stamp(&self, mut body: Value) -> String {
        if let (Some(id), Some(obj)) = (&self.id, body.as_object_mut()) {
            obj.insert("id".into(), id.clone());
        }
        body.to_string()
    }

    /// The reply topic the request named, if any.
    pub fn topic(&self) -> Option<&str> {
        self.topic.as_deref()
    }

    /// The key of this request while it runs: its reply topic with its JSON `id`, else its
    /// correlation data. None without a reply topic or without either.
    pub fn request_key(&self) -> Option<RequestKey> {
        let topic = self.topic.clone()?;
        let id = match (&self.id, &self.correlation) {
            (Some(id), _) => RequestId::Json(id.to_string()),
            (None, Some(c)) => RequestId::Correlation(c.clone()),
            (None, None) => return None,
        };
        Some(RequestKey { topic, id })
    }

    /// The requests a cancel naming `target` (its `cancel` field) may mean, on this cancel's own
    /// reply topic: the one whose JSON `id` equals `target`, or, for a string, the one whose
    /// correlation data are its bytes.
    pub fn cancel_keys(&self, target: &Value) -> Vec<RequestKey> {
        let Some(topic) = self.topic.clone() else { return Vec::new() };
        let mut keys = vec![RequestKey { topic: topic.clone(), id: RequestId::Json(target.to_string()) }];
        if let Value::String(s) = target {
            keys.push(RequestKey { topic, id: RequestId::Correlation(bytes::Bytes::copy_from_slice(s.as_bytes())) });
        }
        keys
    }
}

/// The way out to the broker: every publish is checked against the largest packet the broker
/// takes (its CONNACK Maximum Packet Size, capped by our `max_packet_bytes`) before it is queued.
#[derive(Clone)]
pub(crate) struct Outbox {
    client: AsyncClient,
    topics: Topics,
    /// This node's name, in every answer (`"node"`): which device of a fleet served it.
    node: Arc<str>,
    replies: ReplyTopics,
    max_packet: Arc<AtomicU32>,
    /// Acknowledgements owed, released in arrival order.
    pubacks: Arc<PubackOrder>,
    /// Held while due acknowledgements are queued, so two finishing requests cannot interleave them.
    ack_queue: Arc<tokio::sync::Mutex<()>>,
}

/// Bytes of a PUBLISH packet beyond its topic, payload and correlation data, rounded up: fixed
/// header, topic length, packet id, property lengths, the content type property.
const PUBLISH_OVERHEAD: usize = 64;

impl Outbox {
    /// The way out through `client`.
    pub(crate) fn new(
        client: AsyncClient,
        topics: Topics,
        replies: ReplyTopics,
        node: &str,
        max_packet: u32,
    ) -> Outbox {
        Outbox {
            client,
            topics,
            node: node.into(),
            replies,
            max_packet: Arc::new(AtomicU32::new(max_packet)),
            pubacks: Arc::new(PubackOrder::default()),
            ack_queue: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// A new session began (the broker kept none): forget the acknowledgements owed for the old one.
    pub(crate) fn new_session(&self) {
        self.pubacks.new_session();
    }

    /// Sets the largest packet the broker takes (from its CONNACK), capped by ours.
    pub(crate) fn set_max_packet(&self, max: u32) {
        self.max_packet.store(max, Ordering::Relaxed);
    }

    /// Passes a fleet request on to the group: the same payload and properties, published again
    /// on its fleet topic with the hop count one higher. The broker hands it to the next member.
    async fn forward(&self, p: &Publish, hops: u32) -> Result<(), String> {
        let mut props = p.properties.clone().unwrap_or_default();
        props.user_properties.retain(|(k, _)| k != HOPS_PROPERTY);
        props.user_properties.push((HOPS_PROPERTY.into(), hops.saturating_add(1).to_string()));
        // Set by the broker for us; a client may not send them.
        props.subscription_identifiers.clear();
        props.topic_alias = None;
        let topic = String::from_utf8_lossy(&p.topic).into_owned();
        self.client
            .publish_with_properties(topic, QoS::AtLeastOnce, false, p.payload.clone(), props)
            .await
            .map_err(|e| e.to_string())
    }

    fn fits(&self, topic: &str, payload: usize, correlation: usize) -> Result<(), usize> {
        let size = topic.len().saturating_add(payload).saturating_add(correlation).saturating_add(PUBLISH_OVERHEAD);
        let max = self.max_packet.load(Ordering::Relaxed) as usize;
        if size <= max { Ok(()) } else { Err(max) }
    }

    /// Publishes a status/state/stats message (QoS 1), or logs why it cannot.
    async fn publish(&self, topic: String, retain: bool, payload: impl Into<bytes::Bytes>) {
        let payload: bytes::Bytes = payload.into();
        if let Err(max) = self.fits(&topic, payload.len(), 0) {
            tracing::error!(%topic, bytes = payload.len(), max, "message larger than the broker accepts; not published");
            return;
        }
        if let Err(e) = self.client.publish(topic, QoS::AtLeastOnce, retain, payload).await {
            tracing::warn!(error = %e, "cannot publish");
        }
    }

    /// Publishes `body` as the answer to a request: on its reply topic, or on the errors topic
    /// when it named none or one that is not allowed (then the answer is that refusal). A body
    /// larger than the broker takes becomes a `too_large` error.
    async fn reply(&self, reply: &ReplyTo, body: Value) {
        // Nowhere to answer: report it on the errors topic, never drop it silently.
        let (topic, body) = match &reply.topic {
            None => (self.topics.errors(), body),
            Some(t) => match self.replies.check(t) {
                Ok(()) => (t.clone(), body),
                Err(why) => (self.topics.errors(), error_body(&ApiError::bad_input(why))),
            },
        };
        let mut body = body;
        if let Some(obj) = body.as_object_mut() {
            obj.insert("node".into(), Value::String(self.node.to_string()));
        }
        let correlation = reply.correlation.as_ref().map_or(0, |c| c.len());
        let mut payload = reply.stamp(body);
        if let Err(max) = self.fits(&topic, payload.len(), correlation) {
            tracing::warn!(%topic, bytes = payload.len(), max, "reply larger than the broker accepts; answering too_large");
            let e = ApiError::new(
                ErrorCode::TooLarge,
                format!(
                    "the answer is {} bytes, over the {max} bytes the broker accepts in one packet \
                     (its maximum packet size, or mqtt.max_packet_bytes); ask for less (fewer \
                     masks or tokens, RLE instead of PNG masks) or raise the limit",
                    payload.len()
                ),
            );
            let mut body = error_body(&e);
            body["node"] = Value::String(self.node.to_string());
            payload = reply.stamp(body);
            if self.fits(&topic, payload.len(), correlation).is_err() {
                tracing::error!(%topic, "even the too_large error does not fit in the broker's packet size; not answered");
                return;
            }
        }
        let props = PublishProperties {
            correlation_data: reply.correlation.clone(),
            content_type: Some("application/json".into()),
            ..Default::default()
        };
        if let Err(e) = self.client.publish_with_properties(topic, QoS::AtLeastOnce, false, payload, props).await {
            tracing::warn!(error = %e, "cannot publish a reply");
        }
    }

    /// Acknowledges a request (QoS 1 PUBACK) of session `generation`, queued after its final
    /// reply, once every request received before it is acknowledged too (see `puback_order`).
    async fn ack(&self, p: &Publish, generation: u64) {
        let _queue = self.ack_queue.lock().await;
        for due in self.pubacks.finished(p, generation) {
            if let Err(e) = self.client.ack(&due).await {
                tracing::warn!(error = %e, "cannot acknowledge a request");
            }
        }
    }
}

fn error_body(e: &ApiError) -> Value {
    json!({"done": true, "error": {"code": e.code, "message": e.message}})
}

/// Whether a request was answered (and may be acknowledged) or left to another handler.
#[derive(Debug, PartialEq, Eq)]
enum Handled {
    /// Its final answer is published.
    Answered,
    /// Not a request: our own retained model state (acknowledged, not answered).
    NotARequest,
    /// A redelivery of a request still running here: the first handler answers and acks it.
    Duplicate,
    /// A fleet request passed on to the group (this node has no room for it).
    Forwarded,
}

/// The user property counting how often a fleet request was passed on.
pub const HOPS_PROPERTY: &str = "edgeinfer-hops";

/// How often fleet request `p` was passed on already (absent: 0; unreadable: as many as allowed,
/// so it is not passed on again).
fn hops_of(p: &Publish) -> u32 {
    p.properties
        .as_ref()
        .and_then(|pp| pp.user_properties.iter().find(|(k, _)| k == HOPS_PROPERTY))
        .map_or(0, |(_, v)| v.parse().unwrap_or(u32::MAX))
}

/// Handles the requests of one connection: each in its own task, bounded by `max_inflight`,
/// acknowledged in arrival order once answered.
#[derive(Clone)]
pub(crate) struct Handler {
    out: Outbox,
    registry: Arc<Registry>,
    running: Running,
    inflight: Arc<Semaphore>,
    max_inflight: usize,
    max_hops: u32,
}

impl Handler {
    /// A handler answering through `out`.
    pub(crate) fn new(out: Outbox, registry: Arc<Registry>, config: &MqttConfig, running: Running) -> Handler {
        Handler {
            out,
            registry,
            running,
            inflight: Arc::new(Semaphore::new(config.max_inflight.max(1))),
            max_inflight: config.max_inflight,
            max_hops: config.shared_max_hops,
        }
    }

    /// Passes fleet request `p` (on `topic`) back to the group when it may go round once more
    /// (fewer than `shared_max_hops` passes so far); whether it did. Not a fleet request, hops
    /// used up, or the publish failed: false, and the caller answers it here.
    async fn pass_on(&self, p: &Publish, topic: &str) -> bool {
        let hops = hops_of(p);
        if !self.out.topics.is_fleet(topic) || hops >= self.max_hops {
            return false;
        }
        if let Err(e) = self.out.forward(p, hops).await {
            tracing::warn!(error = %e, "cannot pass a fleet request on; answering it here");
            return false;
        }
        if let Some((model, _)) = self.out.topics.parse(topic) {
            tracing::debug!(model, hops, "no room here: fleet request passed on to the group");
            if self.registry.status(model).is_some() {
                self.registry.metrics().forwarded(model);
            }
        }
        true
    }

    /// Whether no request of this connection is being handled.
    pub(crate) fn idle(&self) -> bool {
        self.inflight.available_permits() >= self.max_inflight.max(1)
    }

    /// Takes one incoming publish: runs it in its own task, or answers `busy` (a fleet request:
    /// passes it on) when `max_inflight` are running already.
    pub(crate) fn dispatch(&self, p: Publish) {
        let generation = self.out.pubacks.received(&p);
        let this = self.clone();
        // Bounded: beyond max_inflight a request is answered `busy` at once instead of holding
        // its payload in yet another task.
        match self.inflight.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    // A bug that panics on some request must not leave it unacknowledged (the
                    // broker would re-send it for ever, and hold back the rest once its
                    // in-flight window fills).
                    let handled = std::panic::AssertUnwindSafe(handle(&p, &this)).catch_unwind().await;
                    match handled {
                        Ok(Handled::Duplicate) => {}
                        Ok(_) => this.out.ack(&p, generation).await,
                        Err(_) => {
                            tracing::error!("a request handler panicked; answering internal");
                            let e = ApiError::internal("the daemon failed on this request (a bug); it was not run");
                            let reply = ReplyTo::of(&p);
                            let _ = std::panic::AssertUnwindSafe(this.out.reply(&reply, error_body(&e)))
                                .catch_unwind()
                                .await;
                            this.out.ack(&p, generation).await;
                        }
                    }
                    drop(permit);
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    if this.pass_on(&p, &topic).await {
                        return this.out.ack(&p, generation).await;
                    }
                    let reply = ReplyTo::of(&p);
                    let busy = ApiError::new(
                        ErrorCode::Busy,
                        format!("{} MQTT requests are in flight (mqtt.max_inflight); retry later", this.max_inflight),
                    );
                    this.out.reply(&reply, error_body(&busy)).await;
                    this.out.ack(&p, generation).await;
                });
            }
        }
    }
}

async fn handle(p: &Publish, handler: &Handler) -> Handled {
    let (out, registry, running) = (&handler.out, handler.registry.clone(), handler.running.clone());
    let topic = String::from_utf8_lossy(&p.topic).into_owned();
    let props = p.properties.clone().unwrap_or_default();
    let reply = ReplyTo::of(p);
    let span = tracing::info_span!("mqtt", topic = %topic);
    async move {
        if !out.topics.is_fleet(&topic) && out.topics.parse(&topic).is_some_and(|(_, task)| task == "state") {
            return Handled::NotARequest; // no-local should keep these away anyway
        }
        // A request without a reply topic is not run: its answer would go to the errors topic,
        // which every reader of the node's errors could see.
        if reply.topic.is_none() {
            let e = ApiError::bad_input(
                "no reply topic: set the MQTT 5 response topic, or \"reply_to\" in the JSON, under <prefix>/replies/",
            );
            out.reply(&reply, error_body(&e)).await;
            return Handled::Answered;
        }
        // The confused-deputy guard: a request whose reply topic is not allowed is not run.
        if let Some(t) = &reply.topic
            && let Err(why) = out.replies.check(t)
        {
            tracing::warn!(reply_topic = %t.chars().take(200).collect::<String>(), "request refused: {why}");
            out.reply(&reply, error_body(&ApiError::bad_input(why))).await;
            return Handled::Answered;
        }
        if p.dup
            && let Some(k) = reply.request_key()
            && running.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&k)
        {
            tracing::info!(key = ?k, "redelivered request is still running; answering it once");
            return Handled::Duplicate;
        }
        // A fleet request for a model whose queue is full here goes back to the group (the
        // subscription is being dropped; this one was already on its way).
        // A model not configured here (a reload removed it) is passed on too: another member may
        // serve it.
        if out.topics.is_fleet(&topic)
            && out.topics.parse(&topic).is_some_and(|(model, _)| !registry.has_room(model))
            && handler.pass_on(p, &topic).await
        {
            return Handled::Forwarded;
        }
        let body = answer(&topic, p, &props, out, &reply, &registry, &running).await;
        out.reply(&reply, body).await;
        Handled::Answered
    }
    .instrument(span)
    .await
}

/// The final answer to one request (streamed deltas go out on the way).
async fn answer(
    topic: &str,
    p: &Publish,
    props: &PublishProperties,
    out: &Outbox,
    reply: &ReplyTo,
    registry: &Arc<Registry>,
    running: &Running,
) -> Value {
    let decoded = decode_request(&out.topics, topic, &p.payload, props, |model| match registry.status(model) {
        Some(_) => Ok(()),
        None => Err(ApiError::new(
            ErrorCode::UnknownModel,
            format!("no model '{model}' (configured: {})", registry.ids().join(", ")),
        )),
    });
    let (model, task) = match decoded {
        Err(e) => return error_body(&e),
        Ok(Request::List) => {
            return json!({"done": true, "result": {"kind": "models", "models": registry.statuses()}});
        }
        Ok(Request::Metrics) => {
            let stats = stats_json(registry, registry.metrics().started());
            let prometheus = registry.prometheus_text(&out.node);
            return json!({"done": true, "result": {"kind": "metrics", "stats": stats, "prometheus": prometheus}});
        }
        Ok(Request::Load(model)) => {
            return match registry.ensure_loaded(&model).await {
                Ok(_) => json!({"done": true, "result": {"kind": "model", "model": registry.status(&model)}}),
                Err(e) => error_body(&e),
            };
        }
        Ok(Request::Unload(model)) => {
            let was = registry.unload(&model).await;
            return json!({"done": true, "result": {"kind": "unloaded", "was_loaded": was, "model": registry.status(&model)}});
        }
        Ok(Request::Cancel { target }) => {
            let Some(target) = target else {
                return error_body(&ApiError::bad_input("a cancel names the request's id: {\"cancel\": \"<id>\"}"));
            };
            let keys = reply.cancel_keys(&target);
            if keys.is_empty() {
                return error_body(&ApiError::bad_input(
                    "a cancel is answered on the reply topic of the request it cancels: give it that response topic (or reply_to)",
                ));
            }
            let found = {
                let running = running.lock().unwrap_or_else(|p| p.into_inner());
                keys.iter().find_map(|k| running.get(k).cloned())
            };
            return match found {
                Some(flag) => {
                    flag.store(true, Ordering::Relaxed);
                    json!({"done": true, "result": {"kind": "cancelled"}})
                }
                None => error_body(&ApiError::bad_input(
                    "no running request with that id answered on this reply topic (a cancel only reaches requests \
                     with the same reply topic)",
                )),
            };
        }
        Ok(Request::Task { model, task }) => (model, task),
    };
    let stream = matches!(&task, Task::Generate(g) if g.stream.unwrap_or(true));
    let cancel = Arc::new(AtomicBool::new(false));
    let key = reply.request_key();
    if let Some(k) = &key {
        let mut running = running.lock().unwrap_or_else(|p| p.into_inner());
        if running.contains_key(k) {
            return error_body(&ApiError::bad_input(
                "a request with this id (or correlation data) is already running for this reply topic; use a new id",
            ));
        }
        running.insert(k.clone(), cancel.clone());
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let forwarder = {
        let out = out.clone();
        let reply =
            ReplyTo { topic: reply.topic.clone(), correlation: reply.correlation.clone(), id: reply.id.clone() };
        tokio::spawn(async move {
            while let Some(Event::Token(edgeinfer_models::llama::TokenEvent::Delta { seq, text, token_ids })) =
                rx.recv().await
            {
                out.reply(&reply, json!({"done": false, "seq": seq, "delta": text, "token_ids": token_ids})).await;
            }
        })
    };
    let result = registry.submit(&model, task, cancel, stream.then_some(tx)).await;
    let _ = forwarder.await;
    if let Some(k) = &key {
        running.lock().unwrap_or_else(|p| p.into_inner()).remove(k);
    }
    match result {
        Ok(response) => json!({"done": true, "result": response}),
        Err(e) => error_body(&e),
    }
}

/// What one publish asks for, read without touching the registry.
#[derive(Debug)]
pub enum Request {
    /// `<prefix>/<node>/list`.
    List,
    /// `<prefix>/<node>/metrics`: the stats document and the Prometheus text.
    Metrics,
    /// Load a model now.
    Load(String),
    /// Unload a model.
    Unload(String),
    /// Cancel the running request with this id (or correlation data).
    Cancel {
        /// The `cancel` field.
        target: Option<Value>,
    },
    /// A task for a model's worker.
    Task {
        /// The model id from the topic.
        model: String,
        /// The request.
        task: Task,
    },
}

/// Decodes one publish: the topic first, then whether the model exists (`known_model`), and
/// only then the payload (JSON, or a binary image with its parameters in the `params` user
/// property). Everything a client can send goes through here; it never panics (fuzzed by
/// `fuzz/fuzz_targets/mqtt_request.rs`).
pub fn decode_request(
    topics: &Topics,
    topic: &str,
    payload: &[u8],
    props: &PublishProperties,
    known_model: impl FnOnce(&str) -> Result<(), ApiError>,
) -> Result<Request, ApiError> {
    if topic == topics.list() {
        return Ok(Request::List);
    }
    if topic == topics.metrics() {
        return Ok(Request::Metrics);
    }
    // Topic and model first: a request for nothing we serve is refused before its payload is
    // parsed.
    let Some((model, task_name)) = topics.parse(topic) else {
        return Err(ApiError::bad_input(format!("unknown topic {topic}")));
    };
    known_model(model)?;
    if topics.is_fleet(topic) && !FLEET_TASKS.contains(&task_name) {
        return Err(ApiError::bad_input(format!(
            "'{task_name}' acts on one node's state: send it to <prefix>/<node>/models/{model}/{task_name} (the \
             fleet topic takes {})",
            FLEET_TASKS.join(", ")
        )));
    }
    let model = model.to_string();
    // JSON body (images as base64 allowed), or a binary image with the parameters in `params`.
    let json: Option<Value> = if payload.first() == Some(&b'{') {
        Some(
            serde_json::from_slice::<Value>(payload)
                .map_err(|e| ApiError::bad_input(format!("malformed JSON: {e}")))?,
        )
    } else {
        None
    };
    match task_name {
        "load" => Ok(Request::Load(model)),
        "unload" => Ok(Request::Unload(model)),
        "cancel" => {
            let target = json.as_ref().and_then(|v| v.get("cancel")).cloned();
            Ok(Request::Cancel { target })
        }
        _ => Ok(Request::Task { task: parse_task(task_name, json, payload, props)?, model }),
    }
}

/// The tasks any member of a fleet can serve alike (no per-node state: no gallery, no load or
/// cancel of one node's work).
const FLEET_TASKS: [&str; 4] = ["segment", "embed", "classify", "generate"];

/// Builds a task from a request: JSON fields (images as base64 strings allowed), or a binary
/// image payload with the JSON parameters in the `params` user property.
fn parse_task(name: &str, json: Option<Value>, payload: &[u8], props: &PublishProperties) -> Result<Task, ApiError> {
    let known = ["segment", "embed", "classify", "gallery/add", "gallery/remove", "gallery/list", "generate"];
    if !known.contains(&name) {
        return Err(ApiError::bad_input(format!(
            "unknown task '{name}' (tasks: {}, load, unload, cancel)",
            known.join(", ")
        )));
    }
    let mut v = match json {
        Some(v) => v,
        None => {
            let params =
                props.user_properties.iter().find(|(k, _)| k == "params").map(|(_, v)| v.as_str()).unwrap_or("{}");
            let mut v: Value =
                serde_json::from_str(params).map_err(|e| ApiError::bad_input(format!("params user property: {e}")))?;
            if payload.is_empty() {
                return Err(ApiError::bad_input("empty payload"));
            }
            let b64 = crate::api::b64::encode(payload);
            let obj = v.as_object_mut().ok_or_else(|| ApiError::bad_input("params must be a JSON object"))?;
            if name == "embed" {
                obj.insert("images".into(), json!([b64]));
            } else {
                obj.insert("image".into(), Value::String(b64));
            }
            v
        }
    };
    let obj = v.as_object_mut().ok_or_else(|| ApiError::bad_input("the payload must be a JSON object"))?;
    for envelope in ["id", "reply_to"] {
        obj.remove(envelope);
    }
    // Shorthands: "image": "<base64>" and "images": ["<base64>", ...].
    if let Some(img) = obj.get_mut("image") {
        normalise_image(img, name == "segment");
    }
    if let Some(Value::Array(list)) = obj.get_mut("images") {
        for img in list {
            normalise_image(img, false);
        }
    }
    let task_tag = name.replace('/', "_");
    obj.insert("task".into(), Value::String(task_tag));
    if name == "gallery/list" {
        return Ok(Task::GalleryList);
    }
    serde_json::from_value(v).map_err(|e| ApiError::bad_input(format!("bad '{name}' request: {e}")))
}

fn normalise_image(img: &mut Value, for_segment: bool) {
    let data = match img {
        Value::String(s) => json!({"encoded": s}),
        Value::Object(o) if o.contains_key("rgb8") || o.contains_key("encoded") => Value::Object(o.clone()),
        _ => return,
    };
    *img = if for_segment { json!({"data": data}) } else { data };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_parse() {
        let t = Topics::new("edgeinfer/", "robot");
        assert_eq!(t.parse("edgeinfer/robot/models/sam/segment"), Some(("sam", "segment")));
        assert_eq!(t.parse("edgeinfer/robot/models/dino/gallery/add"), Some(("dino", "gallery/add")));
        assert_eq!(t.parse("edgeinfer/other/models/sam/segment"), None);
        assert_eq!(t.status(), "edgeinfer/robot/status");
    }

    #[test]
    fn tasks_from_json_and_binary_payloads() {
        let props = PublishProperties::default();
        let t =
            parse_task("segment", Some(json!({"id": 7, "image": "aGk=", "points": [{"x": 1, "y": 2}]})), b"", &props)
                .unwrap();
        assert!(matches!(t, Task::Segment { .. }));
        let t = parse_task(
            "segment",
            Some(json!({"image": {"cached": "abc"}, "box": {"x0": 0, "y0": 0, "x1": 1, "y1": 1}})),
            b"",
            &props,
        )
        .unwrap();
        assert!(matches!(t, Task::Segment { image: crate::api::ImageRef::Cached(_), .. }));
        let props =
            PublishProperties { user_properties: vec![("params".into(), r#"{"k": 3}"#.into())], ..Default::default() };
        let t = parse_task("classify", None, b"\x89PNG...", &props).unwrap();
        assert!(matches!(t, Task::Classify { k: 3, .. }));
        let t = parse_task("embed", None, b"\xff\xd8jpeg", &PublishProperties::default()).unwrap();
        assert!(matches!(t, Task::Embed { ref images, .. } if images.len() == 1));
        assert!(parse_task("fly", Some(json!({})), b"", &PublishProperties::default()).is_err());
        let e = parse_task("generate", Some(json!({"prompt": 5})), b"", &PublishProperties::default()).unwrap_err();
        assert!(e.message.contains("bad 'generate' request"), "{e}");
        assert!(matches!(
            parse_task("gallery/list", Some(json!({})), b"", &PublishProperties::default()),
            Ok(Task::GalleryList)
        ));
    }
}
