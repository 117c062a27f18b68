//! MQTT: the daemon's adapter ([`server`]: topics in, one request type to the registry, replies
//! out), the `edgeinfer` client's side ([`client`]), the reply-topic allow-list, PUBACK ordering,
//! and the broker embedded for demos ([`embedded_broker`]). docs/mqtt.md is the API.

pub mod client;
pub mod embedded_broker;
pub mod fleet;
pub mod homeassistant;
pub(crate) mod puback_order;
pub mod reply_topics;
pub mod server;
