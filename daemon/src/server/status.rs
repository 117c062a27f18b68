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
