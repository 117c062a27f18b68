//! Test harness: a real Mosquitto on a free loopback port, the real `edgeinferd` with a temporary
//! config and an sd_notify socket for readiness, and MQTT clients (rumqttc; mosquitto_pub/sub).
//! Every wait is bounded and fails with a message saying what did not happen.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use serde_json::Value;

pub fn fixtures() -> PathBuf {
    edgeinfer_models::fixtures::fixtures_dir()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `f` until it returns Some, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > until {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

/// A Mosquitto broker on a free port (killed on drop).
pub struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    persistent: bool,
    extra: String,
    raw: bool,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Mosquitto::start_with(false)
    }

    /// `persistent`: sessions and queued QoS-1 messages survive a restart.
    pub fn start_with(persistent: bool) -> Mosquitto {
        Mosquitto::start_conf(persistent, "")
    }

    /// With `extra` lines in mosquitto.conf (e.g. `max_packet_size 1024`).
    pub fn start_conf(persistent: bool, extra: &str) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Mosquitto { port: free_port(), dir, child: None, persistent, extra: extra.to_string(), raw: false };
        m.spawn();
        m
    }

    /// With a whole mosquitto.conf written by `conf(dir, port)` (listeners, TLS, auth: the
    /// files it names go in `dir`); `port` is the first listener's, waited for.
    pub fn start_raw(conf: impl FnOnce(&Path, u16) -> String) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let extra = conf(dir.path(), port);
        let mut m = Mosquitto { port, dir, child: None, persistent: false, extra, raw: true };
        m.spawn();
        m
    }

    /// The broker's folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        let mut text =
            if self.raw { String::new() } else { format!("listener {} 127.0.0.1\nallow_anonymous true\n", self.port) };
        if self.raw {
        } else if self.persistent {
            // Mosquitto started as root drops to the `mosquitto` user: let it write its database.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
            text.push_str(&format!(
                "persistence true\npersistence_location {}/\nautosave_interval 1\n",
                self.dir.path().display()
            ));
        } else {
            text.push_str("persistence false\n");
        }
        text.push_str(&self.extra);
        text.push('\n');
        std::fs::write(&conf, text).unwrap();
        let log = std::fs::File::create(self.dir.path().join("mosquitto.log")).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("mosquitto must be installed (the README test command installs it)");
        self.child = Some(child);
        let port = self.port;
        wait_for("mosquitto to listen", Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", port)).ok());
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Stops the broker (SIGTERM, so a persistent one saves its sessions).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The real daemon with a temporary config; readiness through its sd_notify socket.
pub struct Daemon {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    notify: UnixDatagram,
    pub notifications: Vec<String>,
    pub node: String,
}

impl Daemon {
    /// Starts edgeinferd with `config` (TOML) and waits for READY=1.
    pub fn start(config: &str) -> Daemon {
        Daemon::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Daemon {
        let mut d = Daemon::spawn(config, env);
        d.wait_notify("READY=1", Duration::from_secs(60));
        d
    }

    /// Starts it without waiting for readiness.
    pub fn spawn(config: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn_wrapped(config, env, &[])
    }

    /// Starts it through `wrapper` (a command that ends by executing its arguments, e.g.
    /// `unshare ... sh -c '...; exec "$0" "$@"'`), without waiting for readiness.
    pub fn spawn_wrapped(config: &str, env: &[(&str, &str)], wrapper: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("edgeinferd.toml");
        std::fs::write(&config_path, config).unwrap();
        let socket = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&socket).unwrap();
        let log = std::fs::File::create(dir.path().join("edgeinferd.log")).unwrap();
        let mut cmd = wrapped(wrapper, env!("CARGO_BIN_EXE_edgeinferd"));
        cmd.arg("--config").arg(&config_path).arg("--log").arg("debug");
        cmd.env("NOTIFY_SOCKET", &socket).env_remove("JOURNAL_STREAM");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.stdout(log.try_clone().unwrap()).stderr(log).stdin(Stdio::null()).spawn().unwrap();
        let node = config
            .lines()
            .find_map(|l| l.trim().strip_prefix("node = ").map(|v| v.trim_matches('"').to_string()))
            .unwrap_or_else(|| "test".into());
        Daemon { child, dir, config: config_path, notify, notifications: Vec::new(), node }
    }

    /// Waits for an sd_notify message containing `what`; returns it.
    pub fn wait_notify(&mut self, what: &str, timeout: Duration) -> String {
        if let Some(m) = self.notifications.iter().find(|m| m.contains(what)) {
            return m.clone();
        }
        let until = Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("no sd_notify '{what}' within {timeout:?}; got {:?}; log:\n{}", self.notifications, self.log());
            }
            self.notify.set_read_timeout(Some(left.min(Duration::from_millis(200)))).unwrap();
            match self.notify.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    self.notifications.push(msg.clone());
                    if msg.contains(what) {
                        return msg;
                    }
                }
                Err(_) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!("edgeinferd exited ({status}) before '{what}'; log:\n{}", self.log());
                    }
                }
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("edgeinferd.log")).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
    }

    /// SIGTERM and wait (bounded) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait_exit("edgeinferd to exit after SIGTERM", Duration::from_secs(30))
    }

    /// Waits (bounded) for the daemon to exit; its status.
    pub fn wait_exit(&mut self, what: &str, timeout: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        wait_for(what, timeout, || child.try_wait().unwrap())
    }

    pub fn rewrite_config(&self, config: &str) {
        let tmp = self.dir.path().join("edgeinferd.toml.new");
        let mut f = std::fs::File::create(&tmp).unwrap();
        f.write_all(config.as_bytes()).unwrap();
        f.sync_all().unwrap();
        std::fs::rename(tmp, &self.config).unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().filter(|l| !l.contains("onnxruntime") && !l.contains("DEBUG")).collect();
            eprintln!("---- edgeinferd log (last 60 lines) ----\n{}", tail[tail.len().saturating_sub(60)..].join("\n"));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config using the bundled fixtures: `sam` (preloaded), `dino` (with a gallery), `llm`.
pub fn config(broker: &str, node: &str, extra_models: &str) -> String {
    let f = fixtures();
    format!(
        r#"[daemon]
node = "{node}"
state_dir = "{state}"
request_timeout_ms = 30000
shutdown_grace_ms = 5000

[mqtt]
url = "{broker}"
stats_interval_s = 1

[[models]]
id = "sam"
path = "{sam}"
preload = true
keep_alive = -1

[[models]]
id = "dino"
path = "{dino}"
gallery = "dino-gallery.json"
keep_alive = -1
micro_batch = {{ max_batch = 4, max_wait_ms = 20 }}

[[models]]
id = "llm"
path = "{llm}"
keep_alive = -1
{extra_models}
"#,
        state = std::env::temp_dir().join(format!("edgeinfer-state-{node}-{}", std::process::id())).display(),
        sam = f.join("sam").display(),
        dino = f.join("dinov2").display(),
        llm = f.join("llama").display(),
    )
}

/// Sets `key = value` in the `[[models]]` block of model `id` (replacing an existing line).
pub fn with_model_key(cfg: &str, id: &str, key: &str, value: &str) -> String {
    let mut blocks: Vec<String> = cfg.split("[[models]]").map(str::to_string).collect();
    for block in blocks.iter_mut().skip(1) {
        if block.lines().any(|l| l.trim() == format!("id = \"{id}\"")) {
            let kept: Vec<&str> = block.lines().filter(|l| !l.trim_start().starts_with(&format!("{key} ="))).collect();
            *block = format!("{}\n{key} = {value}\n", kept.join("\n"));
        }
    }
    blocks.join("[[models]]")
}

/// A DINOv2 model folder whose load never finishes: its gallery file is a FIFO nobody writes.
/// Returns (folder, FIFO).
pub fn hung_dinov2(parent: &Path) -> (PathBuf, PathBuf) {
    let dir = parent.join("hung-model");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(fixtures().join("dinov2/model.onnx"), dir.join("model.onnx")).unwrap();
    let fifo = dir.join("gallery.json");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    (dir, fifo)
}

/// A `[[models]]` block for model `id` that never finishes loading (a [`hung_dinov2`] folder
/// under `parent`), with `queue_depth = 1` and a request timeout of `timeout_ms`.
pub fn hung_model(parent: &Path, id: &str, timeout_ms: u64) -> String {
    let (dir, fifo) = hung_dinov2(parent);
    format!(
        "[[models]]\nid = \"{id}\"\npath = \"{}\"\nfamily = \"dinov2\"\nqueue_depth = 1\ntimeout_ms = {timeout_ms}\ngallery = \"{}\"\n",
        dir.display(),
        fifo.display()
    )
}

/// An MQTT 5 test client.
pub struct Client {
    pub client: AsyncClient,
    eventloop: EventLoop,
    pub reply_topic: String,
    pub runtime: tokio::runtime::Runtime,
    seq: u64,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        Client::connect_with(port, false)
    }

    /// `persistent`: clean_start = false with a session expiry, so the broker keeps this
    /// client's subscription (and queued QoS-1 messages) across a broker restart.
    pub fn connect_with(port: u16, persistent: bool) -> Client {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let id = format!("test-{}-{}", std::process::id(), free_port());
        let mut o = MqttOptions::new(id.clone(), "127.0.0.1", port);
        if persistent {
            o.set_clean_start(false);
            o.set_session_expiry_interval(Some(3600));
        }
        o.set_max_packet_size(Some(64 * 1024 * 1024));
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(o, 64);
        let reply_topic = format!("edgeinfer/replies/test-{id}");
        runtime.block_on(async {
            client.subscribe(reply_topic.clone(), QoS::AtLeastOnce).await.unwrap();
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    if let Ok(Event::Incoming(Packet::SubAck(_))) = eventloop.poll().await {
                        break;
                    }
                }
            })
            .await
            .expect("test client could not connect/subscribe");
        });
        Client { client, eventloop, reply_topic, runtime, seq: 0 }
    }

    /// Publishes a request with a response topic and correlation data; returns the correlation.
    pub fn send(&mut self, topic: &str, payload: impl Into<Vec<u8>>, user: &[(&str, &str)]) -> String {
        self.seq += 1;
        let corr = format!("c{}", self.seq);
        let props = PublishProperties {
            response_topic: Some(self.reply_topic.clone()),
            correlation_data: Some(corr.clone().into_bytes().into()),
            user_properties: user.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        };
        let payload: Vec<u8> = payload.into();
        let (client, topic) = (self.client.clone(), topic.to_string());
        self.runtime.block_on(async move {
            client.publish_with_properties(topic, QoS::AtLeastOnce, false, payload, props).await.unwrap()
        });
        corr
    }

    /// The next reply (any correlation).
    pub fn next_reply(&mut self, timeout: Duration) -> (String, Value) {
        let eventloop = &mut self.eventloop;
        self.runtime.block_on(async {
            tokio::time::timeout(timeout, async {
                loop {
                    if let Ok(Event::Incoming(Packet::Publish(p))) = eventloop.poll().await {
                        let corr = p
                            .properties
                            .as_ref()
                            .and_then(|pp| pp.correlation_data.clone())
                            .map(|c| String::from_utf8_lossy(&c).into_owned())
                            .unwrap_or_default();
                        return (corr, serde_json::from_slice(&p.payload).unwrap());
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("no reply within {timeout:?}"))
        })
    }

    /// Collects replies until one per correlation in `corrs` is final (`done: true`).
    pub fn replies(&mut self, corrs: &[String], timeout: Duration) -> Vec<(String, Value)> {
        let (out, complete) = self.collect(corrs, timeout);
        if !complete {
            let done = out.iter().filter(|(_, v)| v["done"] == true).count();
            panic!("timed out after {timeout:?}: {done} of {} requests answered; got {out:?}", corrs.len());
        }
        out
    }

    /// Every reply received until one per correlation in `corrs` is final, or until `timeout`;
    /// and whether all were.
    pub fn collect(&mut self, corrs: &[String], timeout: Duration) -> (Vec<(String, Value)>, bool) {
        let mut out = Vec::new();
        let mut done = std::collections::HashSet::new();
        let eventloop = &mut self.eventloop;
        let (client, reply_topic) = (self.client.clone(), self.reply_topic.clone());
        let complete = self.runtime.block_on(async {
            let r = tokio::time::timeout(timeout, async {
                while done.len() < corrs.len() {
                    let polled = eventloop.poll().await;
                    if std::env::var_os("EDGEINFER_TEST_TRACE").is_some() {
                        eprintln!("client event: {polled:?}");
                    }
                    if let Ok(Event::Incoming(Packet::ConnAck(_))) = &polled {
                        // Reconnected after a broker restart: make sure we still get replies.
                        let _ = client.subscribe(reply_topic.clone(), QoS::AtLeastOnce).await;
                    }
                    if polled.is_err() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    if let Ok(Event::Incoming(Packet::Publish(p))) = polled {
                        let corr = p
                            .properties
                            .as_ref()
                            .and_then(|pp| pp.correlation_data.clone())
                            .map(|c| String::from_utf8_lossy(&c).into_owned())
                            .unwrap_or_default();
                        let v: Value = serde_json::from_slice(&p.payload).unwrap();
                        if v["done"] == true && corrs.contains(&corr) {
                            done.insert(corr.clone());
                        }
                        out.push((corr, v));
                    }
                }
            })
            .await;
            r.is_ok()
        });
        (out, complete)
    }

    /// One request, its final answer.
    pub fn call(&mut self, topic: &str, payload: impl Into<Vec<u8>>) -> Value {
        let c = self.send(topic, payload, &[]);
        let replies = self.replies(std::slice::from_ref(&c), Duration::from_secs(60));
        replies.into_iter().rev().find(|(k, v)| *k == c && v["done"] == true).unwrap().1
    }

    /// Waits for a message on `topic` (subscribing first) matching `pred`.
    pub fn wait_message(&mut self, topic: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let (client, t) = (self.client.clone(), topic.to_string());
        let eventloop = &mut self.eventloop;
        self.runtime.block_on(async {
            client.subscribe(t.clone(), QoS::AtLeastOnce).await.unwrap();
            let r = tokio::time::timeout(timeout, async {
                loop {
                    if let Ok(Event::Incoming(Packet::Publish(p))) = eventloop.poll().await
                        && String::from_utf8_lossy(&p.topic) == t
                    {
                        let v: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        if pred(&v) {
                            return v;
                        }
                    }
                }
            })
            .await;
            let _ = client.unsubscribe(t.clone()).await;
            r.unwrap_or_else(|_| panic!("no matching message on {t} within {timeout:?}"))
        })
    }
}

pub fn photo_b64(path: &Path) -> String {
    edgeinfer_daemon::api::b64::encode(&std::fs::read(path).unwrap())
}

/// A private `dbus-daemon` on a socket in its own directory (killed on drop). With `policy`, the
/// bus enforces the system bus's default rules plus that policy file, as on a device.
pub struct DbusBus {
    pub dir: tempfile::TempDir,
    pub address: String,
    config: PathBuf,
    child: Option<Child>,
    wrapper: Vec<String>,
}

impl DbusBus {
    /// A permissive private bus (like a session bus).
    pub fn start() -> DbusBus {
        DbusBus::start_with(None)
    }

    /// `policy`: a D-Bus policy file to include, under system-bus default rules.
    pub fn start_with(policy: Option<&Path>) -> DbusBus {
        DbusBus::start_wrapped(policy, &[])
    }

    /// `start_with`, the bus run through `wrapper` (see [`Daemon::spawn_wrapped`]).
    pub fn start_wrapped(policy: Option<&Path>, wrapper: &[&str]) -> DbusBus {
        let dir = tempfile::tempdir().unwrap();
        // Reachable by other users (the policy test calls as `nobody`).
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let socket = dir.path().join("bus");
        // The system bus's rules and the policy come from the file the package check uses too.
        let text = match policy {
            Some(p) => include_str!("../../../scripts/system-bus.conf.in")
                .replace("@SOCKET@", &socket.display().to_string())
                .replace("@POLICY@", &p.display().to_string()),
            None => format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        };
        let config = dir.path().join("bus.conf");
        std::fs::write(&config, text).unwrap();
        let address = format!("unix:path={}", socket.display());
        let wrapper = wrapper.iter().map(|s| s.to_string()).collect();
        let mut bus = DbusBus { dir, address, config, child: None, wrapper };
        bus.spawn();
        bus
    }

    fn spawn(&mut self) {
        let socket = self.dir.path().join("bus");
        let _ = std::fs::remove_file(&socket);
        let log = std::fs::File::create(self.dir.path().join("dbus-daemon.log")).unwrap();
        let mut child = wrapped(&self.wrapper, "dbus-daemon")
            .arg(format!("--config-file={}", self.config.display()))
            .arg("--nofork")
            .arg("--print-address")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("dbus-daemon (Debian package dbus-daemon) must be installed");
        // It prints its address once it listens.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| {
            panic!(
                "dbus-daemon did not start within 10 s: {}",
                std::fs::read_to_string(self.dir.path().join("dbus-daemon.log")).unwrap_or_default()
            )
        });
        assert!(line.starts_with("unix:"), "dbus-daemon printed {line:?}");
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dbus-daemon.log")).unwrap_or_default()
    }

    /// Kills the bus (every connection drops).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again at the same address.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for DbusBus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `config(...)` with a `[dbus]` section on `bus`; MQTT off unless `broker` is given.
pub fn dbus_config(bus: &str, broker: Option<&str>, node: &str) -> String {
    let cfg = config(broker.unwrap_or("mqtt://127.0.0.1:1"), node, "");
    let cfg = if broker.is_none() { cfg.replacen("[mqtt]\n", "[mqtt]\nenabled = false\n", 1) } else { cfg };
    cfg.replacen("\n[[models]]", &format!("\n[dbus]\nenabled = true\nbus = \"{bus}\"\n\n[[models]]"), 1)
}

/// The path of a file in the repository.
pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// `line` without ANSI colour codes (the daemon's log colours its fields).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `program` run through `wrapper` (a command that ends by executing its arguments, e.g.
/// `unshare ... sh -c '...; exec "$0" "$@"'`), or directly when `wrapper` is empty.
pub fn wrapped(wrapper: &[impl AsRef<std::ffi::OsStr>], program: &str) -> Command {
    match wrapper.split_first() {
        Some((first, args)) => {
            let mut c = Command::new(first);
            c.args(args).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// The request topic of `model`'s `task` on `d`'s node.
pub fn topic(d: &Daemon, model: &str, task: &str) -> String {
    format!("edgeinfer/{}/models/{model}/{task}", d.node)
}

/// A 2-thread runtime for the async (zbus) parts of a test.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A zbus connection to the bus at `address` (a deep queue: tests read signals late).
pub async fn connect(address: &str) -> zbus::Connection {
    zbus::connection::Builder::address(address).unwrap().max_queued(1 << 16).build().await.unwrap()
}

/// A generated proxy for the daemon's object at `path`, without property caching.
pub async fn proxy<'a, P>(conn: &'a zbus::Connection, path: &'a str) -> P
where
    P: From<zbus::Proxy<'a>> + zbus::proxy::Defaults,
{
    zbus::proxy::Builder::<P>::new(conn)
        .destination(edgeinfer_daemon::dbus::NAME)
        .unwrap()
        .path(path)
        .unwrap()
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap()
}
