//! The one TOML configuration of edgeinferd (default `/etc/edgeinfer/edgeinferd.toml`). Every key
//! and its default is documented in `daemon/edgeinferd.example.toml`. The MQTT password comes
//! from, first found: the environment (`EDGEINFER_MQTT_PASSWORD`), systemd credentials
//! (`$CREDENTIALS_DIRECTORY/mqtt-password`), `mqtt.password_file` (which others may not read), or
//! `mqtt.password`; the client key from `$CREDENTIALS_DIRECTORY/mqtt-client-key` or
//! `mqtt.client_key`. Secrets never appear in logs or in `--check-config` (docs/security.md).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use edgeinfer_models::manifest::Family;
use serde::{Deserialize, Deserializer, Serialize};

use crate::server::engine::EngineOptions;

/// Default location of the configuration.
pub const DEFAULT_PATH: &str = "/etc/edgeinfer/edgeinferd.toml";

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Daemon-wide settings.
    pub daemon: DaemonConfig,
    /// MQTT transport.
    pub mqtt: MqttConfig,
    /// D-Bus transport.
    pub dbus: DbusConfig,
    /// Prometheus metrics over HTTP.
    pub metrics: MetricsConfig,
    /// The models.
    pub models: Vec<ModelConfig>,
}

/// `[daemon]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// Node name in MQTT topics (default: the host name).
    pub node: Option<String>,
    /// ONNX Runtime library (else ORT_DYLIB_PATH, the Python package, system paths).
    pub ort_library: Option<PathBuf>,
    /// Memory budget for loaded models, in MiB (0 = unlimited). A model counts as the size of the
    /// ONNX files (and external data) it loads; loading peaks within about 1.2× that.
    pub memory_budget_mb: u64,
    /// When a load would exceed the budget, unload idle models least recently used first
    /// (otherwise the load is refused and nothing is unloaded).
    pub evict_lru: bool,
    /// Default per-request timeout in milliseconds.
    pub request_timeout_ms: u64,
    /// How long shutdown waits for in-flight requests, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// Where galleries and other state live (the service's StateDirectory).
    pub state_dir: PathBuf,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            node: None,
            ort_library: None,
            memory_budget_mb: 0,
            evict_lru: false,
            request_timeout_ms: 60_000,
            shutdown_grace_ms: 10_000,
            state_dir: PathBuf::from("/var/lib/edgeinfer"),
        }
    }
}

/// `[mqtt]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Serve over MQTT.
    pub enabled: bool,
    /// `mqtt://host:port` or `mqtts://host:port` (TLS).
    pub url: String,
    /// Client id (default `edgeinferd-<node>`).
    pub client_id: Option<String>,
    /// Topic prefix: topics are `<prefix>/<node>/...`.
    pub prefix: String,
    /// Username (env `EDGEINFER_MQTT_USERNAME` overrides).
    pub username: Option<String>,
    /// Password in the config itself (prefer `password_file` or systemd credentials).
    pub password: Option<String>,
    /// A file holding the password (one line), readable only by root and the service user.
    pub password_file: Option<PathBuf>,
    /// Topic patterns (MQTT filters) replies may go to besides `<prefix>/replies/#`. Any other
    /// reply topic is refused (`bad_input` on `<prefix>/<node>/errors`).
    pub reply_topics: Vec<String>,
    /// CA certificate (PEM) for TLS; system roots when unset.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub client_key: Option<PathBuf>,
    /// Keep the session across reconnects and restarts (clean start off): the broker keeps our
    /// subscriptions and re-sends the QoS 1 requests we had not acknowledged — which, since a
    /// request is acknowledged only once its final reply is published, are the ones a crash,
    /// an OOM kill or a broker outage interrupted (docs/reliability.md).
    pub persistent_session: bool,
    /// How long the broker keeps that session while we are away, in seconds.
    pub session_expiry_s: u32,
    /// Most requests handled at once over MQTT; beyond it a request is answered `busy` at once.
    pub max_inflight: usize,
    /// Keep-alive in seconds.
    pub keep_alive_s: u64,
    /// Seconds between `stats` messages (0 = off).
    pub stats_interval_s: u64,
    /// Largest MQTT packet accepted, in bytes (image payloads!).
    pub max_packet_bytes: usize,
    /// Start an embedded broker on the URL's port when none is reachable (demo/dev).
    pub embedded_broker: bool,
    /// Join the fleet work queue of this group: also take requests published on
    /// `<prefix>/fleet/models/<id>/<task>`, through the MQTT 5 shared subscription
    /// `$share/<group>/...`, for each model served here (docs/fleet.md). Off when unset.
    pub shared_group: Option<String>,
    /// How many times a fleet request that reached a device with a full queue is passed back to
    /// the group before it is answered `busy`.
    pub shared_max_hops: u32,
    /// Publish Home Assistant MQTT discovery configs (retained, under
    /// `homeassistant_prefix`) for this node and its models.
    pub homeassistant_discovery: bool,
    /// Home Assistant's discovery prefix.
    pub homeassistant_prefix: String,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: true,
            url: "mqtt://127.0.0.1:1883".into(),
            client_id: None,
            prefix: "edgeinfer".into(),
            username: None,
            password: None,
            password_file: None,
            reply_topics: Vec::new(),
            ca_file: None,
            client_cert: None,
            client_key: None,
            persistent_session: true,
            session_expiry_s: 3600,
            max_inflight: 64,
            keep_alive_s: 30,
            stats_interval_s: 30,
            max_packet_bytes: 64 * 1024 * 1024,
            embedded_broker: false,
            shared_group: None,
            shared_max_hops: 3,
            homeassistant_discovery: false,
            homeassistant_prefix: "homeassistant".into(),
        }
    }
}

/// `[metrics]`: the Prometheus text exposition on `http://<listen>/metrics` (docs/fleet.md).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `address:port` to serve on, e.g. `127.0.0.1:9464`. Off when unset.
    pub listen: Option<String>,
    /// Allow an address other than loopback (the metrics name the models and the node; put
    /// them behind a firewall or a reverse proxy with TLS).
    pub allow_remote: bool,
}

impl MetricsConfig {
    /// The address to listen on, if any, checked: an address other than loopback needs
    /// `allow_remote`.
    pub fn address(&self) -> Result<Option<std::net::SocketAddr>, String> {
        let Some(listen) = &self.listen else { return Ok(None) };
        let addr: std::net::SocketAddr = listen
            .parse()
            .map_err(|_| format!("metrics.listen '{listen}': expected address:port, e.g. 127.0.0.1:9464"))?;
        if !addr.ip().is_loopback() && !self.allow_remote {
            return Err(format!(
                "metrics.listen '{listen}' is not a loopback address: set metrics.allow_remote = true to serve \
                 metrics beyond this machine"
            ));
        }
        Ok(Some(addr))
    }
}

/// `[dbus]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DbusConfig {
    /// Serve over D-Bus.
    pub enabled: bool,
    /// `system` (production) or `session` (development), or a bus address.
    pub bus: String,
    /// Members may call inference methods (segment, embed, classify, generate, gallery list).
    pub client_group: String,
    /// Members may also load and unload models and change galleries. Root and the daemon's own
    /// user may do everything.
    pub admin_group: String,
}

impl Default for DbusConfig {
    fn default() -> Self {
        DbusConfig {
            enabled: false,
            bus: "system".into(),
            client_group: "edgeinfer-clients".into(),
            admin_group: "edgeinfer-admin".into(),
        }
    }
}

/// How long a model stays loaded after its last request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum KeepAlive {
    /// Never unloaded automatically (`-1`).
    Pinned,
    /// Unloaded as soon as it is idle (`0`).
    Immediate,
    /// Unloaded after this long idle.
    For(Duration),
}

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive::For(Duration::from_secs(300))
    }
}

impl std::str::FromStr for KeepAlive {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "-1" {
            return Ok(KeepAlive::Pinned);
        }
        let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
        let n: f64 =
            num.parse().map_err(|_| format!("keep_alive '{s}': expected -1, 0, seconds or a duration like 5m"))?;
        let secs = match unit {
            "" | "s" => n,
            "ms" => n / 1000.0,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            other => return Err(format!("keep_alive '{s}': unknown unit '{other}' (ms, s, m, h)")),
        };
        Ok(if secs == 0.0 { KeepAlive::Immediate } else { KeepAlive::For(Duration::from_secs_f64(secs)) })
    }
}

impl<'de> Deserialize<'de> for KeepAlive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(-1) => Ok(KeepAlive::Pinned),
            Raw::Int(0) => Ok(KeepAlive::Immediate),
            Raw::Int(n) if n > 0 => Ok(KeepAlive::For(Duration::from_secs(n as u64))),
            Raw::Int(n) => Err(serde::de::Error::custom(format!("keep_alive {n}: expected -1, 0 or seconds"))),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// DINOv2 micro-batching: requests arriving together share a graph call.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MicroBatch {
    /// Most images per call (1 = off).
    pub max_batch: usize,
    /// How long the first request waits for others, in milliseconds.
    pub max_wait_ms: u64,
}

impl Default for MicroBatch {
    fn default() -> Self {
        MicroBatch { max_batch: 1, max_wait_ms: 2 }
    }
}

/// One `[[models]]` entry. (Unknown keys are refused by [`Config::parse`]: serde cannot do it
/// through the flattened engine options.)
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct ModelConfig {
    /// Id used in topics, D-Bus paths and the CLI.
    pub id: String,
    /// The model directory, or `hf:OWNER/NAME[@REVISION]`: a repository `edgeinfer pull` put in
    /// the Hugging Face cache (resolved to its snapshot when the config is read).
    pub path: PathBuf,
    /// sam, sam2, dinov2 or llama (default: detected from the directory).
    #[serde(default)]
    pub family: Option<Family>,
    /// Load at start (READY waits for it).
    #[serde(default)]
    pub preload: bool,
    /// Unload after being idle this long (`-1` pinned, `0` at once, seconds or `5m`).
    #[serde(default)]
    pub keep_alive: KeepAlive,
    /// Requests waiting beyond the one running; more are refused with `busy`.
    #[serde(default = "default_queue_depth")]
    pub queue_depth: usize,
    /// Per-request timeout (default: the daemon's).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// DINOv2 micro-batching.
    #[serde(default)]
    pub micro_batch: MicroBatch,
    /// Backend, providers, threads, limits, gallery...
    #[serde(flatten)]
    pub engine: EngineOptions,
}

impl ModelConfig {
    /// Why this model's folder is not there, if it is not: a path that does not exist, or an
    /// `hf:` repository not in the cache (with the `edgeinfer pull` command that fetches it).
    /// Such a model is `failed` with this reason until the folder appears; each request and each
    /// reload looks again.
    pub fn missing(&self) -> Option<String> {
        if let Err(e) = crate::hub::resolve_model_path(&self.path) {
            return Some(e);
        }
        (!self.path.exists()).then(|| {
            format!(
                "path {} does not exist: put the model folder there (or `edgeinfer pull` one and use an hf: path), \
                 then reload (systemctl reload edgeinferd)",
                self.path.display()
            )
        })
    }
}

fn default_queue_depth() -> usize {
    8
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut config = Config::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        config.resolve_relative_paths(path.parent().unwrap_or(Path::new(".")));
        config.load_secrets()?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text, refusing unknown keys (no other validation).
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| toml_error(&e, text))?;
        let raw: toml::Value = toml::from_str(text).map_err(|e| toml_error(&e, text))?;
        let known = model_keys();
        if let Some(models) = raw.get("models").and_then(|m| m.as_array()) {
            for (i, m) in models.iter().enumerate() {
                let Some(table) = m.as_table() else { continue };
                for key in table.keys() {
                    if !known.contains(key) {
                        let id = table
                            .get("id")
                            .and_then(|v| v.as_str())
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("#{}", i + 1));
                        return Err(format!(
                            "model '{id}': unknown key '{key}' (known: {})",
                            known.iter().cloned().collect::<Vec<_>>().join(", ")
                        ));
                    }
                }
            }
        }
        Ok(config)
    }

    /// Model and gallery paths relative to the config file's folder.
    fn resolve_relative_paths(&mut self, base: &Path) {
        for m in &mut self.models {
            if m.path.to_str().is_some_and(|p| p.starts_with(crate::hub::HF_PREFIX)) {
                // Resolved against the Hugging Face cache when the config is read (and again on
                // every reload); a repository not in the cache keeps its hf: path, which
                // validation then reports with the `edgeinfer pull` command that fetches it.
                if let Ok(snapshot) = crate::hub::resolve_model_path(&m.path) {
                    m.path = snapshot;
                }
            } else if m.path.is_relative() {
                m.path = base.join(&m.path);
            }
            if let Some(g) = &mut m.engine.gallery
                && g.is_relative()
            {
                *g = self.daemon.state_dir.join(&*g);
            }
        }
    }

    /// Fills in the MQTT secrets from the environment, systemd credentials or the password file
    /// (the module comment gives the order).
    pub fn load_secrets(&mut self) -> Result<(), String> {
        if let Ok(u) = std::env::var("EDGEINFER_MQTT_USERNAME") {
            self.mqtt.username = Some(u);
        }
        if self.mqtt.password.is_some() && self.mqtt.password_file.is_some() {
            return Err("mqtt.password and mqtt.password_file are both set: keep one (the file)".into());
        }
        let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        let credential = |name: &str| credentials.as_ref().map(|d| d.join(name)).filter(|p| p.exists());
        if let Some(key) = credential("mqtt-client-key") {
            self.mqtt.client_key = Some(key);
        }
        if let Ok(p) = std::env::var("EDGEINFER_MQTT_PASSWORD") {
            self.mqtt.password = Some(p);
        } else if let Some(file) = credential("mqtt-password") {
            // systemd made it readable by the service only; no mode check needed.
            self.mqtt.password = Some(read_secret(&file, false)?);
        } else if let Some(file) = &self.mqtt.password_file {
            self.mqtt.password = Some(read_secret(file, true)?);
        }
        Ok(())
    }

    /// Checks what can be checked without loading models.
    pub fn validate(&self) -> Result<(), String> {
        let mut ids = BTreeSet::new();
        for m in &self.models {
            if m.id.is_empty() || !m.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(format!("model id '{}': use letters, digits, '-' and '_' only", m.id));
            }
            if !ids.insert(m.id.as_str()) {
                return Err(format!("model id '{}' is used twice", m.id));
            }
            // A folder that is not there (yet) is that model's `failed` state, not a bad config
            // (see ModelConfig::missing): the daemon still starts and serves the others.
            if let Err(e) = crate::hub::check_model_reference(&m.path) {
                return Err(format!("model '{}': {e}", m.id));
            }
            if m.queue_depth == 0 {
                return Err(format!("model '{}': queue_depth must be at least 1", m.id));
            }
        }
        if let Some(node) = &self.daemon.node {
            check_node_name(node)?;
        }
        if self.mqtt.enabled {
            parse_broker_url(&self.mqtt.url)?;
            let prefix = &self.mqtt.prefix;
            if prefix.is_empty()
                || prefix.starts_with(['/', '$'])
                || prefix.ends_with('/')
                || prefix.contains(['+', '#', '\0'])
                || prefix.split('/').any(str::is_empty)
            {
                return Err(format!(
                    "mqtt.prefix '{}': one or more topic levels without '+', '#', '$' or empty levels",
                    prefix.escape_debug()
                ));
            }
            if let Some(group) = &self.mqtt.shared_group
                && (group.is_empty() || group.contains(['/', '+', '#', '$']))
            {
                return Err(format!("mqtt.shared_group '{group}': one topic level without '/', '+', '#' or '$'"));
            }
            let ha = &self.mqtt.homeassistant_prefix;
            if ha.is_empty() || ha.contains(['+', '#']) || ha.split('/').any(str::is_empty) {
                return Err(format!("mqtt.homeassistant_prefix '{ha}': topic levels without '+', '#' or empty levels"));
            }
            for pattern in &self.mqtt.reply_topics {
                crate::mqtt::reply_topics::check_pattern(pattern)?;
            }
            if self.mqtt.client_cert.is_some() != self.mqtt.client_key.is_some() {
                return Err("mqtt.client_cert and mqtt.client_key go together".into());
            }
        }
        self.metrics.address()?;
        if !self.dbus.enabled && !self.mqtt.enabled {
            return Err("neither [mqtt] nor [dbus] is enabled: the daemon would serve nothing".into());
        }
        Ok(())
    }

    /// The node name: configured, else the host name from `uname(2)` (the system call, not
    /// `/proc/sys/kernel/hostname`, which the unit's `ProcSubset=pid` hides). A host name that
    /// every unconfigured device shares (empty, `(none)`, `localhost`) is refused: two devices
    /// with one name would take each other's topics and MQTT client id.
    pub fn node(&self) -> Result<String, String> {
        if let Some(node) = &self.daemon.node {
            return Ok(node.clone());
        }
        let uname = rustix::system::uname();
        let host = uname.nodename().to_string_lossy().trim().to_string();
        node_from_hostname(&host)
    }
}

/// A TOML error as "line L, column C: message", without the quoted source line toml adds: that
/// line may hold the MQTT password, and the error is logged and printed by `--check-config`.
fn toml_error(e: &toml::de::Error, text: &str) -> String {
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or_default();
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {}", e.message().trim_end())
        }
        None => e.message().trim_end().to_string(),
    }
}

/// The node name for host name `host`, unless it is one that devices share.
fn node_from_hostname(host: &str) -> Result<String, String> {
    let shared = ["", "(none)", "localhost", "localhost.localdomain"];
    if shared.contains(&host) {
        return Err(format!(
            "the host name is '{host}', which devices share; set [daemon] node (or the host name) to a name unique \
             to this device"
        ));
    }
    check_node_name(host).map_err(|e| format!("{e}; set [daemon] node"))?;
    Ok(host.to_string())
}

/// A node name must be one MQTT topic level, and not `replies` (`<prefix>/replies/...` is where
/// clients get their answers) nor `fleet` (`<prefix>/fleet/...` is the fleet's work queue).
fn check_node_name(node: &str) -> Result<(), String> {
    if node.is_empty() || node.contains(['/', '+', '#']) || node.chars().any(char::is_control) {
        return Err(format!("the node name '{node}' cannot be an MQTT topic level"));
    }
    if node == "replies" {
        return Err("the node name 'replies' is taken: <prefix>/replies/ holds the clients' reply topics".into());
    }
    if node == "fleet" {
        return Err("the node name 'fleet' is taken: <prefix>/fleet/ is the fleet's shared work queue".into());
    }
    Ok(())
}

/// Reads a one-line secret. With `private`, a file that users other than its owner and group
/// may read is refused: the password would be readable by every local user.
fn read_secret(path: &Path, private: bool) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    // One open file for the check and the read: nothing can swap the file in between.
    let mut file = std::fs::File::open(path).map_err(|e| format!("secret {}: {e}", path.display()))?;
    let meta = file.metadata().map_err(|e| format!("secret {}: {e}", path.display()))?;
    let mode = meta.permissions().mode();
    if private && mode & 0o007 != 0 {
        return Err(format!(
            "mqtt.password_file {}: readable by other users (mode {:o}); make it root:edgeinfer 0640 or 0600",
            path.display(),
            mode & 0o777
        ));
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(|e| format!("secret {}: {e}", path.display()))?;
    let secret = text.strip_suffix('\n').unwrap_or(&text);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    if secret.is_empty() || secret.contains('\n') {
        return Err(format!("secret {}: expected one non-empty line", path.display()));
    }
    Ok(secret.to_string())
}

/// Every key a `[[models]]` table may have (its own and the flattened engine options).
fn model_keys() -> BTreeSet<String> {
    let sample = ModelConfig {
        id: String::new(),
        path: PathBuf::new(),
        family: None,
        preload: false,
        keep_alive: KeepAlive::Pinned,
        queue_depth: 1,
        timeout_ms: None,
        micro_batch: MicroBatch::default(),
        engine: EngineOptions::default(),
    };
    match serde_json::to_value(&sample) {
        Ok(serde_json::Value::Object(o)) => o.keys().cloned().collect(),
        _ => BTreeSet::new(),
    }
}

/// (tls, host, port) of `mqtt://host:port` / `mqtts://host:port`.
pub fn parse_broker_url(url: &str) -> Result<(bool, String, u16), String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("tcp://") {
        (false, r)
    } else {
        return Err(format!("mqtt url '{url}': expected mqtt://host:port or mqtts://host:port"));
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('@') {
        // Not echoed: what precedes '@' is a password.
        return Err("mqtt url: a user name or password does not go in the URL (URLs are logged); set mqtt.username \
                    and mqtt.password_file"
            .into());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse::<u16>().map_err(|_| format!("mqtt url '{url}': bad port"))?),
        None => (rest.to_string(), if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() {
        return Err(format!("mqtt url '{url}': no host"));
    }
    Ok((tls, host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_forms() {
        assert_eq!("-1".parse::<KeepAlive>().unwrap(), KeepAlive::Pinned);
        assert_eq!("0".parse::<KeepAlive>().unwrap(), KeepAlive::Immediate);
        assert_eq!("5m".parse::<KeepAlive>().unwrap(), KeepAlive::For(Duration::from_secs(300)));
        assert_eq!("1.5s".parse::<KeepAlive>().unwrap(), KeepAlive::For(Duration::from_millis(1500)));
        assert!("5 days".parse::<KeepAlive>().is_err());
    }

    #[test]
    fn the_example_config_parses_and_every_model_field_is_known() {
        let text = include_str!("../../edgeinferd.example.toml");
        // As installed: no models, and valid.
        let c = Config::parse(text).unwrap();
        assert!(c.models.is_empty());
        c.validate().unwrap();
        // The commented examples, uncommented ("# key" lines; "##" lines stay comments), parse.
        let (head, models) = text.split_once("# One [[models]] table per model.\n").unwrap();
        let uncommented: String = models
            .lines()
            .map(|l| if l.starts_with("##") { l } else { l.strip_prefix("# ").unwrap_or(l) })
            .collect::<Vec<_>>()
            .join("\n");
        let c = Config::parse(&format!("{head}{uncommented}")).unwrap();
        assert_eq!(c.models.len(), 3);
        assert_eq!(c.models[0].keep_alive, KeepAlive::Pinned);
        // A model whose folder is missing is valid config; it says why it will not load.
        let c = Config::parse("[[models]]\nid = 'a'\npath = '/nonexistent/a'\n").unwrap();
        c.validate().unwrap();
        assert!(c.models[0].missing().unwrap().contains("/nonexistent/a does not exist"));
        assert!(Config::parse("[[models]]\nid = 'a'\npath = 'hf:not a repo'\n").unwrap().validate().is_err());
        assert!(Config::parse("[daemon]\nnode = 1\n").is_err());
        assert!(Config::parse("[[models]]\nid = 'a'\npath = '/x'\ntypo = 1\n").is_err());
    }

    #[test]
    fn the_node_name_comes_from_uname_and_shared_names_are_refused() {
        let config = Config::parse("[daemon]\n[dbus]\nenabled = true\n").unwrap_or_else(|_| Config::default());
        let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
        if node_from_hostname(&host).is_ok() {
            assert_eq!(config.node().unwrap(), host);
        }
        for shared in ["", "(none)", "localhost"] {
            let e = node_from_hostname(shared).unwrap_err();
            assert!(e.contains("set [daemon] node"), "{e}");
        }
        assert!(node_from_hostname("a/b").is_err());
        assert_eq!(node_from_hostname("robot-7").unwrap(), "robot-7");
    }

    #[test]
    fn config_errors_do_not_quote_the_line_that_holds_the_password() {
        let e = Config::parse("[mqtt]\nusername = \"robot\"\npassword = s3cret-unquoted\n").unwrap_err();
        assert!(e.starts_with("line 3, column ") && !e.contains("s3cret"), "{e}");
        let e = Config::parse("[mqtt]\npasword = \"s3cret\"\n").unwrap_err();
        assert!(e.contains("unknown field") && !e.contains("s3cret"), "{e}");
    }

    #[test]
    fn password_files_must_be_private_and_hold_one_line() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mqtt-password");
        std::fs::write(&file, "s3cret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_secret(&file, true).unwrap_err();
        assert!(e.contains("readable by other users") && !e.contains("s3cret"), "{e}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(read_secret(&file, true).unwrap(), "s3cret");
        std::fs::write(&file, "s3cret").unwrap();
        assert_eq!(read_secret(&file, true).unwrap(), "s3cret");
        std::fs::write(&file, "two\nlines\n").unwrap();
        assert!(read_secret(&file, true).unwrap_err().contains("one non-empty line"));
        std::fs::write(&file, "\n").unwrap();
        assert!(read_secret(&file, true).is_err());
        // Both ways at once is a mistake to point out, not to resolve silently.
        let mut c =
            Config::parse(&format!("[mqtt]\npassword = \"inline\"\npassword_file = \"{}\"\n", file.display())).unwrap();
        assert!(c.load_secrets().unwrap_err().contains("both set"));
    }

    #[test]
    fn broker_urls() {
        assert_eq!(parse_broker_url("mqtt://localhost:1884").unwrap(), (false, "localhost".into(), 1884));
        assert_eq!(parse_broker_url("mqtts://broker.example").unwrap(), (true, "broker.example".into(), 8883));
        assert!(parse_broker_url("http://x").is_err());
        let e = parse_broker_url("mqtts://robot:s3cret@broker:8883").unwrap_err();
        assert!(!e.contains("s3cret") && e.contains("password_file"), "{e}");
        assert!(parse_broker_url("mqtt://x:port").is_err());
    }
}
