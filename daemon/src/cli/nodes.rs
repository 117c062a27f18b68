//! `edgeinfer nodes`: the fleet at a glance, from the retained status and stats topics every
//! node keeps on the broker (like `ollama ps`, for many devices).

use std::fmt::Write;
use std::time::SystemTime;

use crate::mqtt::client::NodeView;

/// One line per node: name, state, version, models (`id:state`, the state from the latest stats), requests waiting and the
/// request rate over the last stats interval, and how long ago its last stats were published.
pub fn table(nodes: &[NodeView], now: SystemTime) -> String {
    let mut out = format!(
        "{:<20} {:<8} {:<8} {:<7} {:>8}  {:<10} {}\n",
        "NODE", "STATE", "VERSION", "QUEUED", "REQ/S", "LAST SEEN", "MODELS"
    );
    if nodes.is_empty() {
        out.push_str("(no node has published a status under this prefix)\n");
    }
    for n in nodes {
        let s = |k: &str| n.status[k].as_str().unwrap_or("-").to_string();
        let models: Vec<String> = n.status["models"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let id = m["id"].as_str().unwrap_or("?");
                // The status is republished on connection changes only; the stats, every
                // interval, carry each model's current state.
                let state = n.stats["models"][id]["state"].as_str().or_else(|| m["state"].as_str()).unwrap_or("?");
                format!("{id}:{state}")
            })
            .collect();
        let per_model = |key: &str| -> Option<f64> {
            let models = n.stats["models"].as_object()?;
            Some(models.values().map(|m| m[key].as_f64().or_else(|| m["stats"][key].as_f64()).unwrap_or(0.0)).sum())
        };
        let queued = per_model("queue_depth").map_or("-".to_string(), |q| format!("{q:.0}"));
        let rate = per_model("requests_per_s").map_or("-".to_string(), |r| format!("{r:.2}"));
        let seen = match n.stats["at"].as_u64() {
            Some(at) => {
                let now = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                ago(now.saturating_sub(at))
            }
            None => "-".into(),
        };
        let _ = writeln!(
            out,
            "{:<20} {:<8} {:<8} {:<7} {:>8}  {:<10} {}",
            n.node,
            s("state"),
            s("version"),
            queued,
            rate,
            seen,
            if models.is_empty() { "-".into() } else { models.join(" ") }
        );
    }
    out
}

fn ago(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn the_table_shows_state_models_load_and_last_seen() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let nodes = [
            NodeView {
                node: "robot-1".into(),
                status: json!({"state": "online", "version": "0.1.0", "models": [{"id": "dino", "state": "unloaded"}]}),
                stats: json!({"at": 999_990, "models": {"dino": {"state": "loaded", "stats": {"queue_depth": 2}, "requests_per_s": 1.5}}}),
            },
            NodeView { node: "robot-2".into(), status: json!({"state": "offline"}), stats: Value::Null },
        ];
        let t = table(&nodes, now);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].starts_with("robot-1") && lines[1].contains("online"), "{t}");
        assert!(lines[1].contains("dino:loaded") && lines[1].contains("1.50") && lines[1].contains("10s ago"), "{t}");
        assert!(lines[2].starts_with("robot-2") && lines[2].contains("offline"), "{t}");
    }
}
