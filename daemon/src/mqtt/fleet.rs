//! The fleet's shared work queue (docs/fleet.md): with `[mqtt] shared_group` set, a second MQTT
//! connection holds the MQTT 5 shared subscriptions `$share/<group>/<prefix>/fleet/models/<id>/#`
//! for the models that have room here, and answers what the broker hands it exactly like a
//! request on the node's own topics (the same [`Handler`]).
//!
//! Why a second connection, without a session (clean start, session expiry 0): measured on
//! Mosquitto 2.0.11, a member whose session outlives its connection keeps being handed its
//! round-robin share of new requests while it is away, and the broker never gives those to
//! another member, not even when that session expires. A session that ends with its connection
//! leaves the group as soon as the broker sees the connection close; only the requests that
//! member had already taken are lost. The node's own connection keeps its persistent session.
//!
//! Back-pressure: Mosquitto hands shared requests out round-robin whether or not a member has
//! room (it ignores a member's Receive Maximum), so a device passes a request it has no room
//! for (its queue is full, the model failed to load or is being unloaded) back to the group,
//! with a hop count, at most `shared_max_hops` times; the last hop answers `busy` (or the
//! model's error). Leaving the group while full was measured and rejected: a request published
//! while every member has left is dropped by the broker, unanswered (docs/fleet.md).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event as MqttEvent};
use tokio::sync::{broadcast, watch};

use crate::mqtt::reply_topics::ReplyTopics;
use crate::mqtt::server::{Handler, Outbox, Reconnect, Running, Topics, describe_connection_error, options};
use crate::server::config::MqttConfig;
use crate::server::registry::Registry;

/// The models whose fleet subscription is held (or asked for) on the current connection: every
/// configured model, followed through reloads.
struct Membership {
    group: String,
    topics: Topics,
    joined: BTreeSet<String>,
    /// A subscribe or unsubscribe could not be queued (the client's queue was full): try again.
    behind: bool,
}

impl Membership {
    /// Joins the group for every configured model and leaves it for models no longer configured.
    fn sync(&mut self, client: &AsyncClient, registry: &Registry) {
        let want: BTreeSet<String> = registry.ids().into_iter().collect();
        self.behind = false;
        for id in want.difference(&self.joined.clone()) {
            // No Local must stay off: it is a protocol error on a shared subscription.
            let filter = Filter::new(self.topics.fleet_filter(&self.group, id), QoS::AtLeastOnce);
            match client.try_subscribe_many([filter]) {
                Ok(()) => {
                    tracing::debug!(model = %id, group = %self.group, "taking fleet requests");
                    self.joined.insert(id.clone());
                }
                Err(_) => self.behind = true,
            }
        }
        for id in self.joined.clone().difference(&want) {
            match client.try_unsubscribe(self.topics.fleet_filter(&self.group, id)) {
                Ok(()) => {
                    tracing::info!(model = %id, group = %self.group, "model removed: leaving the fleet queue");
                    self.joined.remove(id);
                }
                Err(_) => self.behind = true,
            }
        }
    }
}

/// Serves the fleet queue of `group` until `shutdown` turns true; then leaves the group, lets the
/// requests it took finish (bounded), and disconnects. Connection failures are retried with
/// backoff; an error return means the configuration cannot work.
pub async fn serve(
    config: MqttConfig,
    node: String,
    group: String,
    registry: Arc<Registry>,
    running: Running,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let topics = Topics::new(&config.prefix, &node);
    let base_id = config.client_id.clone().unwrap_or_else(|| format!("edgeinferd-{node}"));
    let options = options(&config, format!("{base_id}-fleet"), None, false)
        .map_err(|e| format!("MQTT (fleet) is not usable: {e}"))?;
    let replies = ReplyTopics::new(&config.prefix, &config.reply_topics)
        .map_err(|e| format!("MQTT (fleet) is not usable: {e}"))?;
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    let ours_max_packet = u32::try_from(config.max_packet_bytes).unwrap_or(u32::MAX);
    let out = Outbox::new(client.clone(), topics.clone(), replies, &node, ours_max_packet);
    let handler = Handler::new(out.clone(), registry.clone(), &config, running);
    let mut membership = Membership { group: group.clone(), topics, joined: BTreeSet::new(), behind: false };
    let mut events = registry.subscribe();
    let mut connected = false;
    let mut reconnect = Reconnect::default();
    registry.set_transport("fleet", "connecting");
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            event = events.recv(), if connected => match event {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => membership.sync(&client, &registry),
                Err(broadcast::error::RecvError::Closed) => {}
            },
            _ = tokio::time::sleep(Duration::from_millis(20)), if connected && membership.behind => {
                membership.sync(&client, &registry);
            }
            polled = eventloop.poll() => match polled {
                Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                    reconnect.connected();
                    connected = true;
                    let broker_max = ack.properties.as_ref().and_then(|p| p.max_packet_size).unwrap_or(u32::MAX);
                    out.set_max_packet(broker_max.min(ours_max_packet));
                    // A new session: nothing is subscribed, nothing owed from the old one.
                    out.new_session();
                    membership.joined.clear();
                    membership.sync(&client, &registry);
                    tracing::info!(%group, models = ?membership.joined, "joined the fleet work queue");
                    if membership.joined.is_empty() {
                        registry.set_transport("fleet", "connected");
                    }
                }
                Ok(MqttEvent::Incoming(Packet::SubAck(ack))) => {
                    // A refusal (no ACL right to the fleet topics, or a broker without shared
                    // subscriptions) must not pass for membership.
                    let refused: Vec<String> =
                        ack.return_codes.iter().filter(|c| !matches!(c, SubscribeReasonCode::Success(_))).map(|c| format!("{c:?}")).collect();
                    if refused.is_empty() {
                        registry.set_transport("fleet", "connected");
                    } else {
                        tracing::error!(%group, codes = ?refused, "the broker refused the fleet subscription (its ACL must let this node read <prefix>/fleet/models/#, and it must support shared subscriptions); retrying after the next reconnect");
                        registry.set_transport("fleet", "refused");
                    }
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => handler.dispatch(p),
                Ok(_) => {}
                Err(e) => {
                    connected = false;
                    registry.set_transport("fleet", "reconnecting");
                    let (why, refused) = describe_connection_error(&e);
                    if reconnect.wait(&format!("fleet connection: {why}"), refused, &config.url, &mut shutdown).await {
                        break;
                    }
                }
            }
        }
    }
    // Leave the group first, so that the broker stops handing us requests, then let the ones
    // taken finish: with no session, an unacknowledged request is lost when we disconnect.
    registry.set_transport("fleet", "stopped");
    if connected {
        for id in std::mem::take(&mut membership.joined) {
            let _ = client.try_unsubscribe(membership.topics.fleet_filter(&group, &id));
        }
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while !handler.idle() && tokio::time::Instant::now() < until {
            match tokio::time::timeout(Duration::from_millis(50), eventloop.poll()).await {
                Ok(Ok(MqttEvent::Incoming(Packet::Publish(p)))) => handler.dispatch(p),
                Ok(Err(_)) => break,
                _ => {}
            }
        }
        let _ = client.disconnect().await;
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        while tokio::time::Instant::now() < until {
            match tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await {
                Ok(Ok(MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect))) | Ok(Err(_)) => break,
                _ => {}
            }
        }
    }
    Ok(())
}
