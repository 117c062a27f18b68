//! The daemon's metrics in the Prometheus text format (version 0.0.4, `prometheus-client`): what
//! `[metrics] listen` serves on `/metrics`, D-Bus `Metrics()` returns and `edgeinfer stats
//! --prometheus` prints for node_exporter's textfile collector. Names and meanings: docs/fleet.md.
//!
//! Counters and latency histograms are recorded as requests finish ([`Metrics::record`]), labelled
//! only with configured model ids, task names and error codes (never with anything a client
//! chose, so the series stay bounded). Gauges (queue depth, model state, memory, cache, uptime,
//! RSS, transport state) are read from the registry when the text is rendered.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry as Metrics_, Unit};

use crate::api::{ApiError, Response};
use crate::server::registry::{ModelState, ModelStatus};

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Latency buckets in seconds: 5 ms (a DINOv2-S embedding on a desktop) to 2 min (a long
/// generation on a small device).
const LATENCY_BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelTask {
    model: String,
    task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelCode {
    model: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelStateLabel {
    model: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    version: String,
    node: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Counters and histograms recorded as requests finish.
pub struct Metrics {
    registry: Metrics_,
    requests: Family<ModelTask, Counter>,
    errors: Family<ModelCode, Counter>,
    tokens: Family<ModelLabel, Counter>,
    latency: Family<ModelLabel, Histogram>,
    fleet_forwarded: Family<ModelLabel, Counter>,
    started: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Empty counters; uptime counts from now.
    pub fn new() -> Metrics {
        let mut registry = Metrics_::with_prefix("edgeinfer");
        let requests = Family::<ModelTask, Counter>::default();
        let errors = Family::<ModelCode, Counter>::default();
        let tokens = Family::<ModelLabel, Counter>::default();
        let latency = Family::<ModelLabel, Histogram>::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        let fleet_forwarded = Family::<ModelLabel, Counter>::default();
        registry.register("requests", "Requests a model answered, successfully or not, by task", requests.clone());
        registry.register("request_errors", "Requests answered with an error, by error code", errors.clone());
        registry.register("generated_tokens", "Tokens generated", tokens.clone());
        registry.register_with_unit(
            "request_duration",
            "Time from a request's arrival to its answer (queueing and loading included)",
            Unit::Seconds,
            latency.clone(),
        );
        registry.register(
            "fleet_forwarded",
            "Fleet requests passed back to the group because this node had no room for them",
            fleet_forwarded.clone(),
        );
        Metrics { registry, requests, errors, tokens, latency, fleet_forwarded, started: Instant::now() }
    }

    /// When the daemon started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Records one answered request of `model` (a configured id).
    pub fn record(&self, model: &str, task: &str, result: &Result<Response, ApiError>, took: Duration) {
        self.requests.get_or_create(&ModelTask { model: model.into(), task: task.into() }).inc();
        self.latency.get_or_create(&ModelLabel { model: model.into() }).observe(took.as_secs_f64());
        match result {
            Ok(Response::Generation(g)) => {
                self.tokens.get_or_create(&ModelLabel { model: model.into() }).inc_by(g.usage.generated_tokens as u64);
            }
            Ok(_) => {}
            Err(e) => {
                self.errors.get_or_create(&ModelCode { model: model.into(), code: e.code.as_str().into() }).inc();
            }
        }
    }

    /// Records a fleet request for `model` passed back to the group.
    pub fn forwarded(&self, model: &str) {
        self.fleet_forwarded.get_or_create(&ModelLabel { model: model.into() }).inc();
    }

    /// The text exposition: the recorded counters, then gauges read now from `models` and
    /// `transports`.
    pub fn render(&self, node: &str, models: &[ModelStatus], transports: &[(String, String)]) -> String {
        let mut now = Metrics_::with_prefix("edgeinfer");
        let build = Family::<BuildLabel, Gauge>::default();
        build.get_or_create(&BuildLabel { version: env!("CARGO_PKG_VERSION").into(), node: node.into() }).set(1);
        now.register("build_info", "Always 1; labels say the version and the node name", build);
        let uptime = FloatGauge::default();
        uptime.set(self.started.elapsed().as_secs_f64());
        now.register_with_unit("uptime", "Time since the daemon started", Unit::Seconds, uptime);
        let rss = Gauge::<i64>::default();
        rss.set((crate::server::status::rss_mb() * 1024.0 * 1024.0) as i64);
        now.register_with_unit("resident_memory", "Resident memory of the daemon", Unit::Bytes, rss);
        let connected = Family::<TransportLabel, Gauge>::default();
        for (transport, state) in transports {
            connected
                .get_or_create(&TransportLabel { transport: transport.clone() })
                .set(i64::from(state == "connected"));
        }
        now.register("transport_connected", "1 while a transport (mqtt, fleet, dbus) is connected, else 0", connected);
        let state = Family::<ModelStateLabel, Gauge>::default();
        let queue = Family::<ModelLabel, Gauge>::default();
        let memory = Family::<ModelLabel, Gauge>::default();
        let cache_hits = Family::<ModelLabel, Gauge>::default();
        let cache_misses = Family::<ModelLabel, Gauge>::default();
        let busy = Family::<ModelLabel, Gauge>::default();
        for m in models {
            let model = ModelLabel { model: m.id.clone() };
            for s in ModelState::ALL {
                state
                    .get_or_create(&ModelStateLabel { model: m.id.clone(), state: s.as_str().into() })
                    .set(i64::from(m.state == s));
            }
            memory.get_or_create(&model).set((m.memory_mb * 1024.0 * 1024.0) as i64);
            let stats = m.stats.clone().unwrap_or_default();
            queue.get_or_create(&model).set(i64::try_from(stats.queue_depth).unwrap_or(i64::MAX));
            busy.get_or_create(&model).set(i64::try_from(stats.busy).unwrap_or(i64::MAX));
            if let Some(cache) = &m.cache {
                cache_hits.get_or_create(&model).set(i64::try_from(cache.hits).unwrap_or(i64::MAX));
                cache_misses.get_or_create(&model).set(i64::try_from(cache.misses).unwrap_or(i64::MAX));
            }
        }
        now.register("model_state", "1 for the state each model is in, 0 for the others", state);
        now.register("queue_depth", "Requests waiting in a model's queue now", queue);
        now.register_with_unit("model_memory", "Estimated memory of a model (its ONNX files)", Unit::Bytes, memory);
        now.register("queue_full_refusals", "Requests refused busy by a full queue since the model was loaded", busy);
        now.register("embedding_cache_hits", "SAM image-embedding cache hits since the model was loaded", cache_hits);
        now.register(
            "embedding_cache_misses",
            "SAM image-embedding cache misses since the model was loaded",
            cache_misses,
        );
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        let _ = encode(&mut text, &now);
        text
    }
}
