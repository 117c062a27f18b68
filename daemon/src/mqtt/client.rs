//! The `edgeinfer` client side of the MQTT API: send one request, print the streamed events and
//! the answer exactly as `edgeinfer local` prints them. Uses MQTT 5 response topics with
//! correlation data (and the JSON `id`, which any broker passes through).

use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event as MqttEvent, MqttOptions};
use serde_json::{Value, json};

use crate::api::{ApiError, ErrorCode, Event, Response, Task};
use crate::server::config::parse_broker_url;

/// Where the daemon is.
#[derive(Clone, Debug)]
pub struct Remote {
    /// Broker URL.
    pub url: String,
    /// Topic prefix.
    pub prefix: String,
    /// Node name; discovered from the retained status topics when `None`.
    pub node: Option<String>,
    /// How long to wait for the answer.
    pub timeout: Duration,
    /// Send tasks to the fleet's shared queue (`<prefix>/fleet/models/<id>/<task>`): any node of
    /// the group that serves the model answers (docs/fleet.md).
    pub fleet: bool,
}

struct Conn {
    client: AsyncClient,
    eventloop: rumqttc::v5::EventLoop,
    reply_topic: String,
}

async fn connect(remote: &Remote) -> Result<Conn, ApiError> {
    let (tls, host, port) = parse_broker_url(&remote.url).map_err(ApiError::bad_input)?;
    let id = format!("edgeinfer-cli-{}-{}", std::process::id(), nonce());
    let mut o = MqttOptions::new(id.clone(), host, port);
    o.set_network_options(crate::mqtt::server::no_delay());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(Some(256 * 1024 * 1024));
    if let (Ok(u), p) = (std::env::var("EDGEINFER_MQTT_USERNAME"), std::env::var("EDGEINFER_MQTT_PASSWORD")) {
        o.set_credentials(u, p.unwrap_or_default());
    }
    if tls {
        o.set_transport(rumqttc::Transport::tls_with_default_config());
    }
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    // Wait for the connection (bounded).
    let connected = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await;
    match connected {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(ApiError::new(
                ErrorCode::NotLoaded,
                format!("cannot reach the MQTT broker at {}: {e}", remote.url),
            ));
        }
        Err(_) => {
            return Err(ApiError::new(ErrorCode::Timeout, format!("no answer from the MQTT broker at {}", remote.url)));
        }
    }
    let reply_topic = reply_topic(&remote.prefix, std::env::var("EDGEINFER_MQTT_USERNAME").ok().as_deref(), &id);
    Ok(Conn { client, eventloop, reply_topic })
}

/// Where our answers come: `<prefix>/replies/<user name>/<client id>` when we log in with a
/// user name (so a broker ACL like `pattern read <prefix>/replies/%u/#` lets only us read it),
/// else `<prefix>/replies/<client id>`. The client id ends in 64 random bits.
fn reply_topic(prefix: &str, username: Option<&str>, id: &str) -> String {
    match username {
        Some(u) if !u.is_empty() && !u.contains(['/', '+', '#']) => format!("{prefix}/replies/{u}/{id}"),
        _ => format!("{prefix}/replies/{id}"),
    }
}

/// 64 random bits (the clock when the system has no randomness to give).
fn nonce() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    (t as u64) ^ u64::from(std::process::id()).rotate_left(32)
}

/// The retained messages on `filters` (topic and JSON payload, in arrival order): subscribes,
/// collects until `quiet` passes without a message once every subscription is acknowledged (the
/// retained messages come right after), at most `limit`, then unsubscribes. QoS 0: a QoS 1
/// subscriber gets at most the broker's in-flight window plus its queue of them (1,020 on a
/// default Mosquitto, measured by bench/fleet_sim), which would silently cut a large fleet short.
async fn retained(
    conn: &mut Conn,
    filters: &[String],
    limit: Duration,
    quiet: Duration,
) -> Result<Vec<(String, Value)>, ApiError> {
    for f in filters {
        conn.client.subscribe(f.clone(), QoS::AtMostOnce).await.map_err(|e| ApiError::internal(e.to_string()))?;
    }
    let mut messages = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut acks = 0;
        loop {
            let wait = if acks >= filters.len() { quiet } else { limit };
            match tokio::time::timeout(wait, conn.eventloop.poll()).await {
                Err(_) | Ok(Err(_)) => break,
                Ok(Ok(MqttEvent::Incoming(Packet::SubAck(_)))) => acks += 1,
                Ok(Ok(MqttEvent::Incoming(Packet::Publish(p)))) => {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    messages.push((topic, serde_json::from_slice(&p.payload).unwrap_or(Value::Null)));
                }
                Ok(Ok(_)) => {}
            }
        }
    })
    .await;
    for f in filters {
        let _ = conn.client.unsubscribe(f.clone()).await;
    }
    Ok(messages)
}

/// Finds the node: the given one, or the only one whose retained status says online.
async fn node(conn: &mut Conn, remote: &Remote) -> Result<String, ApiError> {
    if remote.fleet {
        return Ok(FLEET.into());
    }
    if let Some(n) = &remote.node {
        return Ok(n.clone());
    }
    let statuses =
        retained(conn, &[format!("{}/+/status", remote.prefix)], Duration::from_secs(3), Duration::from_millis(300))
            .await?;
    let mut online: Vec<String> = Vec::new();
    for (_, v) in statuses {
        // A node's status can come twice (retained, then republished): count it once.
        if v["state"] == "online"
            && let Some(n) = v["node"].as_str()
            && !online.iter().any(|o| o == n)
        {
            online.push(n.to_string());
        }
    }
    match online.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ApiError::new(
            ErrorCode::NotLoaded,
            format!("no edgeinferd is online under '{}/' on {}", remote.prefix, remote.url),
        )),
        many => {
            Err(ApiError::bad_input(format!("several nodes are online ({}): choose one with --node", many.join(", "))))
        }
    }
}

/// The topic level of the fleet's shared queue, in place of a node name.
const FLEET: &str = "fleet";

/// What `edgeinfer nodes` shows of one node: its retained status and its last retained stats.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct NodeView {
    /// The node name.
    pub node: String,
    /// Its retained status document (`state`, `version`, `models`, `transports`, ...).
    pub status: Value,
    /// Its last retained stats document (`uptime_s`, `rss_mb`, per-model counters and rates, `at`).
    pub stats: Value,
}

/// Every node seen on the broker under `remote.prefix`, from the retained status and stats
/// topics, sorted by name.
pub async fn nodes(remote: &Remote) -> Result<Vec<NodeView>, ApiError> {
    let mut conn = connect(remote).await?;
    let filters = [format!("{}/+/status", remote.prefix), format!("{}/+/stats", remote.prefix)];
    let messages =
        retained(&mut conn, &filters, remote.timeout.min(Duration::from_secs(10)), Duration::from_millis(400)).await?;
    let mut seen: std::collections::BTreeMap<String, NodeView> = Default::default();
    for (topic, v) in messages {
        let Some(rest) = topic.strip_prefix(&format!("{}/", remote.prefix)) else { continue };
        let Some((node, kind)) = rest.split_once('/') else { continue };
        if node == FLEET || node == "replies" {
            continue;
        }
        let view = seen.entry(node.to_string()).or_insert_with(|| NodeView { node: node.into(), ..Default::default() });
        match kind {
            "status" => view.status = v,
            "stats" => view.stats = v,
            _ => {}
        }
    }
    let _ = conn.client.disconnect().await;
    Ok(seen.into_values().filter(|v| !v.status.is_null()).collect())
}

/// An open connection to the daemon's node (reused across requests by benchmarks).
pub struct Connection {
    conn: Conn,
    node: String,
    remote: Remote,
    subscribed: bool,
}

impl Connection {
    /// Connects and finds the node.
    pub async fn open(remote: &Remote) -> Result<Connection, ApiError> {
        let mut conn = connect(remote).await?;
        let node = node(&mut conn, remote).await?;
        Ok(Connection { conn, node, remote: remote.clone(), subscribed: false })
    }

    /// Sends a request on `topic_suffix` (`models/<id>/<task>`, `list`) and waits for the final
    /// answer, passing streamed events to `on_event`.
    pub async fn request(
        &mut self,
        topic_suffix: &str,
        body: Value,
        on_event: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Value, ApiError> {
        if self.remote.fleet && !topic_suffix.starts_with("models/") {
            return Err(ApiError::bad_input(format!(
                "'{topic_suffix}' is asked of one node, not of the fleet: give --node instead of --fleet"
            )));
        }
        let conn = &mut self.conn;
        let id = format!("{}", nonce());
        let mut body = body;
        if let Some(o) = body.as_object_mut() {
            o.insert("id".into(), Value::String(id.clone()));
            o.insert("reply_to".into(), Value::String(conn.reply_topic.clone()));
        }
        let topic = format!("{}/{}/{topic_suffix}", self.remote.prefix, self.node);
        let props = PublishProperties {
            response_topic: Some(conn.reply_topic.clone()),
            correlation_data: Some(id.clone().into_bytes().into()),
            content_type: Some("application/json".into()),
            ..Default::default()
        };
        let publish = |client: AsyncClient, topic: String, body: String, props: PublishProperties| async move {
            client
                .publish_with_properties(topic, QoS::AtLeastOnce, false, body, props)
                .await
                .map_err(|e| ApiError::internal(e.to_string()))
        };
        if self.subscribed {
            publish(conn.client.clone(), topic.clone(), body.to_string(), props.clone()).await?;
        } else {
            conn.client
                .subscribe(conn.reply_topic.clone(), QoS::AtLeastOnce)
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
        }
        let mut published = self.subscribed;
        let node = self.node.clone();
        let answer = tokio::time::timeout(self.remote.timeout, async {
            loop {
                match conn.eventloop.poll().await {
                    Ok(MqttEvent::Incoming(Packet::SubAck(_))) if !published => {
                        published = true;
                        publish(conn.client.clone(), topic.clone(), body.to_string(), props.clone()).await?;
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        let v: Value = serde_json::from_slice(&p.payload)
                            .map_err(|e| ApiError::internal(format!("bad reply: {e}")))?;
                        if v.get("id").and_then(|i| i.as_str()) != Some(id.as_str()) {
                            continue;
                        }
                        if v["done"] == true {
                            return Ok(v);
                        }
                        let delta =
                            json!({"event": "delta", "seq": v["seq"], "text": v["delta"], "token_ids": v["token_ids"]});
                        if let Ok(e) = serde_json::from_value(delta) {
                            on_event(Event::Token(e));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return Err(ApiError::new(ErrorCode::NotLoaded, format!("connection to the broker lost: {e}")));
                    }
                }
            }
        })
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::Timeout,
                format!("no answer from node '{node}' within {} s", self.remote.timeout.as_secs()),
            )
        })??;
        self.subscribed = true;
        if let Some(err) = answer.get("error") {
            let e: ApiError =
                serde_json::from_value(err.clone()).unwrap_or_else(|_| ApiError::internal(err.to_string()));
            return Err(e);
        }
        Ok(answer["result"].clone())
    }

    /// Runs a task on a model.
    pub async fn task(
        &mut self,
        model: &str,
        task: &Task,
        on_event: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Response, ApiError> {
        let mut body = serde_json::to_value(task).map_err(|e| ApiError::internal(e.to_string()))?;
        if let Some(o) = body.as_object_mut() {
            o.remove("task");
        }
        let result = self.request(&format!("models/{model}/{}", task.name()), body, on_event).await?;
        serde_json::from_value(result).map_err(|e| ApiError::internal(format!("unexpected answer: {e}")))
    }

    /// Disconnects.
    pub async fn close(self) {
        let _ = self.conn.client.disconnect().await;
    }
}

async fn request(
    remote: &Remote,
    topic_suffix: &str,
    body: Value,
    on_event: &mut (dyn FnMut(Event) + Send),
) -> Result<Value, ApiError> {
    let mut c = Connection::open(remote).await?;
    let r = c.request(topic_suffix, body, on_event).await;
    c.close().await;
    r
}

/// Runs a task on a model of the daemon.
pub async fn run_task(
    remote: &Remote,
    model: &str,
    task: &Task,
    on_event: &mut (dyn FnMut(Event) + Send),
) -> Result<Response, ApiError> {
    let mut c = Connection::open(remote).await?;
    let r = c.task(model, task, on_event).await;
    c.close().await;
    r
}

/// `list`, `load`, `unload`: returns the raw result JSON.
pub async fn control(remote: &Remote, what: &str, model: Option<&str>) -> Result<Value, ApiError> {
    let suffix = match model {
        Some(m) => format!("models/{m}/{what}"),
        None => what.to_string(),
    };
    request(remote, &suffix, json!({}), &mut |_| {}).await
}
