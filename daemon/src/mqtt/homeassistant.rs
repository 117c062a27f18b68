//! Home Assistant MQTT discovery (`[mqtt] homeassistant_discovery = true`): the retained configs
//! that make each node a Home Assistant device with entities for its connectivity, memory,
//! uptime, and per model its state, request rate, error rate and latency. They read the topics the
//! daemon publishes anyway (the retained status, model state and stats documents); nothing is
//! published for Home Assistant alone but these configs. Single-component discovery,
//! `<discovery prefix>/<component>/<node id>/<object id>/config` (docs/fleet.md).

use serde_json::{Value, json};

use crate::mqtt::server::Topics;
use crate::server::registry::ModelState;

/// A name usable as a discovery node id or object id (`[a-zA-Z0-9_-]+`).
fn id_part(s: &str) -> String {
    let cleaned: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    if cleaned.is_empty() { "_".into() } else { cleaned }
}

/// `edgeinfer_<node>`, with the characters discovery ids cannot hold replaced; then also a short
/// hash of the real name, so that `robot.1` and `robot_1` stay two devices.
fn node_id(node: &str) -> String {
    let cleaned = id_part(node);
    if cleaned == node {
        return format!("edgeinfer_{cleaned}");
    }
    // FNV-1a: stable across versions and platforms (these ids live in Home Assistant's registry).
    let hash = node.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("edgeinfer_{cleaned}_{:08x}", hash as u32)
}

/// The discovery configs of one node.
pub struct Discovery {
    prefix: String,
    node: String,
    node_id: String,
    topics: Topics,
}

impl Discovery {
    /// Configs under `ha_prefix` for `node`, whose topics are `topics`.
    pub fn new(ha_prefix: &str, node: &str, topics: Topics) -> Discovery {
        Discovery {
            prefix: ha_prefix.trim_end_matches('/').to_string(),
            node: node.into(),
            node_id: node_id(node),
            topics,
        }
    }

    fn device(&self) -> Value {
        json!({
            "identifiers": [self.node_id],
            "name": format!("edgeinfer {}", self.node),
            "manufacturer": "edgeinfer",
            "model": "edgeinferd",
            "sw_version": env!("CARGO_PKG_VERSION"),
        })
    }

    fn availability(&self) -> Value {
        json!([{
            "topic": self.topics.status(),
            "value_template": "{{ value_json.state }}",
            "payload_available": "online",
            "payload_not_available": "offline",
        }])
    }

    fn config_topic(&self, component: &str, object: &str) -> String {
        format!("{}/{component}/{}/{}/config", self.prefix, self.node_id, id_part(object))
    }

    /// `(topic, payload)` for an entity: the common keys (unique id, device, origin,
    /// availability unless `always_available`) added to `entity`.
    fn entity(&self, component: &str, object: &str, mut entity: Value, always_available: bool) -> (String, Value) {
        let unique_id = format!("{}_{}", self.node_id, id_part(object));
        if let Some(o) = entity.as_object_mut() {
            o.insert("unique_id".into(), json!(unique_id));
            o.insert("device".into(), self.device());
            o.insert("origin".into(), json!({"name": "edgeinfer", "sw_version": env!("CARGO_PKG_VERSION")}));
            if !always_available {
                o.insert("availability".into(), self.availability());
            }
        }
        (self.config_topic(component, object), entity)
    }

    /// A measurement sensor reading the retained stats document with `template`; a diagnostic
    /// one (a property of the node rather than of its work) when `diagnostic`.
    fn stats_sensor(
        &self,
        object: &str,
        name: &str,
        template: String,
        device_class: Option<&str>,
        unit: &str,
        diagnostic: bool,
    ) -> (String, Value) {
        let mut sensor = json!({
            "name": name,
            "state_topic": self.topics.stats(),
            "value_template": template,
            "unit_of_measurement": unit,
            "state_class": "measurement",
        });
        if let Some(class) = device_class {
            sensor["device_class"] = json!(class);
        }
        if diagnostic {
            sensor["entity_category"] = json!("diagnostic");
        }
        self.entity("sensor", object, sensor, false)
    }

    /// The node's own entities: online (connectivity), resident memory, uptime.
    pub fn node_configs(&self) -> Vec<(String, Value)> {
        let status = self.topics.status();
        vec![
            // Connectivity is the one entity that stays available: it shows "off" when the
            // node is offline (its will or its clean stop).
            self.entity(
                "binary_sensor",
                "online",
                json!({
                    "name": "Online",
                    "state_topic": status,
                    "value_template": "{{ 'ON' if value_json.state == 'online' else 'OFF' }}",
                    "device_class": "connectivity",
                    "json_attributes_topic": status,
                    "json_attributes_template": "{{ {'version': value_json.version | default(none), 'pid': value_json.pid | default(none)} | tojson }}",
                }),
                true,
            ),
            self.stats_sensor(
                "memory",
                "Resident memory",
                "{{ value_json.rss_mb | round(1) }}".into(),
                Some("data_size"),
                "MiB",
                true,
            ),
            self.stats_sensor("uptime", "Uptime", "{{ value_json.uptime_s }}".into(), Some("duration"), "s", true),
        ]
    }

    /// The entities of model `id`: its state, request rate, error rate, and latency (p50, p99).
    pub fn model_configs(&self, id: &str) -> Vec<(String, Value)> {
        let state_topic = self.topics.model_state(id);
        // Stats of a model not loaded are null: the template answers 0 rather than failing.
        let of_model = |expr: &str| {
            format!(
                "{{{{ value_json.models['{id}'].{expr} if value_json.models['{id}'] is defined and value_json.models['{id}'].stats else 0 }}}}"
            )
        };
        vec![
            self.entity(
                "sensor",
                &format!("{id}_state"),
                json!({
                    "name": format!("{id} state"),
                    "state_topic": state_topic,
                    "value_template": "{{ value_json.state }}",
                    "device_class": "enum",
                    "options": ModelState::ALL.map(ModelState::as_str),
                    "json_attributes_topic": state_topic,
                    "json_attributes_template": "{{ {'family': value_json.family | default(none), 'backend': value_json.backend | default(none), 'variant': value_json.variant | default(none), 'error': value_json.error | default(none)} | tojson }}",
                }),
                false,
            ),
            self.stats_sensor(&format!("{id}_request_rate"), &format!("{id} request rate"), of_model("requests_per_s"), None, "req/s", false),
            self.stats_sensor(&format!("{id}_error_rate"), &format!("{id} error rate"), of_model("errors_per_s"), None, "err/s", false),
            self.stats_sensor(
                &format!("{id}_latency_p50"),
                &format!("{id} latency p50"),
                of_model("stats.latency_ms[0] | round(1)"),
                Some("duration"),
                "ms",
                false,
            ),
            self.stats_sensor(
                &format!("{id}_latency_p99"),
                &format!("{id} latency p99"),
                of_model("stats.latency_ms[2] | round(1)"),
                Some("duration"),
                "ms",
                false,
            ),
        ]
    }

    /// The node: its node id in discovery topics.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_discovery_safe_and_unique_per_entity() {
        let d = Discovery::new("homeassistant/", "robot 1.lab", Topics::new("edgeinfer", "robot 1.lab"));
        assert!(d.node_id().starts_with("edgeinfer_robot_1_lab_"), "{}", d.node_id());
        assert_ne!(node_id("robot.1"), node_id("robot_1"));
        assert_eq!(node_id("robot_1"), "edgeinfer_robot_1");
        let all: Vec<(String, Value)> = d.node_configs().into_iter().chain(d.model_configs("sam.vit/b")).collect();
        let re = |t: &str| {
            let parts: Vec<&str> = t.split('/').collect();
            parts.len() == 5
                && parts[0] == "homeassistant"
                && parts[4] == "config"
                && parts[2..4].iter().all(|p| p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        };
        assert!(all.iter().all(|(t, _)| re(t)), "{all:?}");
        let mut ids: Vec<&str> = all.iter().map(|(_, v)| v["unique_id"].as_str().unwrap_or("")).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all.len());
    }
}
