//! What the daemon reports about itself on every transport: the stats payload (uptime, memory,
//! per-model counters) and the execution providers of the loaded ONNX Runtime.

use std::time::Instant;

use serde_json::{Value, json};

use crate::server::registry::Registry;

/// Execution providers of the loaded ONNX Runtime, if one is loaded.
pub fn loaded_execution_providers() -> Vec<String> {
    #[cfg(any(feature = "ort", feature = "ort-legacy"))]
    {
        edgeinfer_onnx::ort::library::loaded().map(|rt| rt.available_providers.clone()).unwrap_or_default()
    }
    #[cfg(not(any(feature = "ort", feature = "ort-legacy")))]
    {
        Vec::new()
    }
}

/// The stats payload.
pub fn stats_json(registry: &Registry, started: Instant) -> Value {
    let models: serde_json::Map<String, Value> = registry
        .statuses()
        .into_iter()
        .map(|s| (s.id.clone(), json!({"state": s.state, "stats": s.stats, "cache": s.cache})))
        .collect();
    json!({ "uptime_s": started.elapsed().as_secs(), "rss_mb": rss_mb(), "models": models })
}

/// (requests, errors) of each model.
type Counts = std::collections::HashMap<String, (u64, u64)>;

/// Request and error rates between two stats documents of the same daemon.
#[derive(Default)]
pub struct Rates {
    last: Option<(Instant, Counts)>,
}

impl Rates {
    /// Adds `requests_per_s` and `errors_per_s` to each model of `stats` (a [`stats_json`]
    /// document), over the time since the previous call (0 the first time, or after a reload
    /// reset the counters), and `at`, the Unix time in seconds.
    pub fn annotate(&mut self, stats: &mut Value) {
        let now = Instant::now();
        let mut counts = std::collections::HashMap::new();
        if let Some(models) = stats["models"].as_object_mut() {
            for (id, m) in models.iter_mut() {
                let requests = m["stats"]["requests"].as_u64().unwrap_or(0);
                let errors = m["stats"]["errors"].as_u64().unwrap_or(0);
                let (mut rps, mut eps) = (0.0, 0.0);
                if let Some((then, before)) = &self.last
                    && let Some(&(r0, e0)) = before.get(id)
                {
                    let dt = now.duration_since(*then).as_secs_f64().max(1e-3);
                    rps = requests.saturating_sub(r0) as f64 / dt;
                    eps = errors.saturating_sub(e0) as f64 / dt;
                }
                m["requests_per_s"] = json!((rps * 1000.0).round() / 1000.0);
                m["errors_per_s"] = json!((eps * 1000.0).round() / 1000.0);
                counts.insert(id.clone(), (requests, errors));
            }
        }
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        stats["at"] = json!(unix);
        self.last = Some((now, counts));
    }
}

/// Resident memory of this process in MiB.
pub fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}
