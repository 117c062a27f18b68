//! How the `edgeinfer` client reaches a running edgeinferd: over D-Bus (the default: system bus,
//! `--bus session` or an address) or over MQTT (`--mqtt URL`). Both give the same answers, so the
//! CLI prints the same either way.

use std::time::Duration;

use crate::api::{ApiError, Event, ModelSummary, Response, Task};
use crate::dbus::client::DbusClient;
use crate::mqtt::client::{Connection, Remote};

/// Where the daemon is.
#[derive(Clone, Debug)]
pub enum Target {
    /// D-Bus: `system`, `session` or an address.
    Dbus {
        /// The bus.
        bus: String,
        /// How long to wait for an answer.
        timeout: Duration,
    },
    /// MQTT.
    Mqtt(Remote),
}

/// An open connection to the daemon.
pub enum Daemon {
    /// Over D-Bus.
    Dbus(DbusClient),
    /// Over MQTT.
    Mqtt(Box<Connection>),
}

fn summary(v: &serde_json::Value) -> ModelSummary {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    ModelSummary {
        id: s("id"),
        family: s("family"),
        state: s("state"),
        backend: s("backend"),
        providers: v["providers"]
            .as_array()
            .map(|p| p.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
            .unwrap_or_default(),
        variant: s("variant"),
        graph: s("graph"),
        error: v["error"].as_str().map(str::to_string),
    }
}

impl Daemon {
    /// Connects.
    pub async fn connect(target: &Target) -> Result<Daemon, ApiError> {
        match target {
            Target::Dbus { bus, timeout } => Ok(Daemon::Dbus(DbusClient::connect(bus, *timeout).await?)),
            Target::Mqtt(remote) => Ok(Daemon::Mqtt(Box::new(Connection::open(remote).await?))),
        }
    }

    /// The models.
    pub async fn models(&mut self) -> Result<Vec<ModelSummary>, ApiError> {
        match self {
            Daemon::Dbus(c) => c.models().await,
            Daemon::Mqtt(c) => {
                let r = c.request("list", serde_json::json!({}), &mut |_| {}).await?;
                Ok(r["models"].as_array().into_iter().flatten().map(summary).collect())
            }
        }
    }

    /// The stats document (pretty JSON), or with `prometheus` the Prometheus text exposition.
    pub async fn stats(&mut self, prometheus: bool) -> Result<String, ApiError> {
        match self {
            Daemon::Dbus(c) => c.stats(prometheus).await,
            Daemon::Mqtt(c) => {
                let r = c.request("metrics", serde_json::json!({}), &mut |_| {}).await?;
                if prometheus {
                    Ok(r["prometheus"].as_str().unwrap_or_default().to_string())
                } else {
                    Ok(format!("{}\n", serde_json::to_string_pretty(&r["stats"]).unwrap_or_default()))
                }
            }
        }
    }

    /// Loads (`load = true`) or unloads a model; its state afterwards.
    pub async fn load(&mut self, model: &str, load: bool) -> Result<String, ApiError> {
        match self {
            Daemon::Dbus(c) if load => c.load(model).await,
            Daemon::Dbus(c) => c.unload(model).await,
            Daemon::Mqtt(c) => {
                let what = if load { "load" } else { "unload" };
                let r = c.request(&format!("models/{model}/{what}"), serde_json::json!({}), &mut |_| {}).await?;
                Ok(r["model"]["state"].as_str().unwrap_or("?").to_string())
            }
        }
    }

    /// Runs a task.
    pub async fn task(
        &mut self,
        model: &str,
        task: &Task,
        on_event: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Response, ApiError> {
        match self {
            Daemon::Dbus(c) => c.task(model, task, on_event).await,
            Daemon::Mqtt(c) => c.task(model, task, on_event).await,
        }
    }

    /// Disconnects.
    pub async fn close(self) {
        if let Daemon::Mqtt(c) = self {
            (*c).close().await;
        }
    }
}
