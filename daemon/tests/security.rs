//! The security issues of docs/security.md, each shown with the tools an attacker on the device
//! or on the broker would use: `gdbus`, `busctl`, `dbus-monitor` run as other users (`setpriv`)
//! against a private dbus-daemon with the shipped policy; `mosquitto_pub`/`mosquitto_sub` against
//! a real Mosquitto with TLS, a password file and an ACL, with certificates made here (rcgen).
//!
//! The D-Bus tests need root (to call as other users, and to give the bus and the daemon a
//! private /etc/group with the edgeinfer groups in a mount namespace); CI runs as root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use edgeinfer_daemon::dbus::proxy::{Generator1Proxy, Models1Proxy};
use edgeinfer_daemon::dbus::{NAME, ROOT};
use futures_util::StreamExt;
use serde_json::{Value, json};
use support::*;
use zbus::{MatchRule, MessageStream};

/// The arguments of `Job1.Finished`.
type Finished = (String, String, Vec<u32>, String, u32, u32, f64, f64, f64, String, String);
/// A certificate for the broker: its names and validity years (None: valid now).
type ServerCert<'a> = Option<(&'a str, Option<(i32, i32)>)>;

const CLIENTS_GID: u32 = 64001;
const ADMIN_GID: u32 = 64002;
const CLIENT_UID: u32 = 64011;
const ADMIN_UID: u32 = 64012;
const NOBODY: u32 = 65534;

fn root() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root to act as other users (CI runs as root)");
    false
}

/// This system's /etc/passwd and /etc/group plus two users, a client app and an operator, and
/// the two edgeinfer groups they belong to, mounted over the real files for the processes run
/// through [`Groups::wrapper`] (the host's files are not touched). dbus-daemon applies group
/// policies from the user database, so the users must exist there.
struct Groups {
    dir: tempfile::TempDir,
}

impl Groups {
    fn new() -> Groups {
        let dir = tempfile::tempdir().unwrap();
        let mut text = std::fs::read_to_string("/etc/group").unwrap();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "edgeinfer-clients:x:{CLIENTS_GID}:test-app\nedgeinfer-admin:x:{ADMIN_GID}:test-operator\n"
        ));
        std::fs::write(dir.path().join("group"), text).unwrap();
        let mut text = std::fs::read_to_string("/etc/passwd").unwrap();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "test-app:x:{CLIENT_UID}:{CLIENT_UID}::/nonexistent:/usr/sbin/nologin\n\
             test-operator:x:{ADMIN_UID}:{ADMIN_UID}::/nonexistent:/usr/sbin/nologin\n"
        ));
        std::fs::write(dir.path().join("passwd"), text).unwrap();
        Groups { dir }
    }

    fn script(&self) -> String {
        let d = self.dir.path().display();
        format!("mount --bind {d}/group /etc/group && mount --bind {d}/passwd /etc/passwd && exec \"$0\" \"$@\"")
    }

    fn wrapper(&self) -> Vec<String> {
        ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
            .into_iter()
            .map(String::from)
            .chain([self.script()])
            .collect()
    }
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A private system-like bus with the shipped policy (or a permissive one), and the daemon on it.
fn bus_and_daemon(groups: &Groups, shipped_policy: bool, node: &str) -> (DbusBus, Daemon) {
    let policy = repo_file("daemon/dbus/org.edgeinfer.Daemon1.conf");
    let wrapper = groups.wrapper();
    let bus = DbusBus::start_wrapped(shipped_policy.then_some(policy.as_path()), &refs(&wrapper));
    let mut daemon = Daemon::spawn_wrapped(&dbus_config(&bus.address, None, node), &[], &refs(&wrapper));
    daemon.wait_notify("READY=1", Duration::from_secs(60));
    (bus, daemon)
}

/// `setpriv` prefix running a command as `uid` with supplementary `groups`.
fn as_user(uid: u32, groups: &[u32], program: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}")).arg(format!("--regid={uid}"));
    if groups.is_empty() {
        c.arg("--clear-groups");
    } else {
        c.arg(format!("--groups={}", groups.iter().map(u32::to_string).collect::<Vec<_>>().join(",")));
    }
    c.arg(program).env("HOME", "/tmp");
    c
}

/// `gdbus call` as `uid`: (success, stdout + stderr).
fn gdbus(bus: &DbusBus, uid: u32, groups: &[u32], path: &str, method: &str, args: &[&str]) -> (bool, String) {
    let out = as_user(uid, groups, "gdbus")
        .args(["call", "--address", &bus.address, "--dest", NAME, "--object-path", path, "--method", method])
        .args(args)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// A process whose output lines are collected into a file-backed buffer as they come.
struct Watcher {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Watcher {
    fn spawn(mut cmd: Command) -> Watcher {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Watcher { child, lines }
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn count(&self, needle: &str) -> usize {
        self.lines.lock().unwrap().iter().filter(|l| l.contains(needle)).count()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Before: `Job1.Token` and `Finished` were broadcast, so any local user's `gdbus monitor` read
/// every completion. Now they are unicast to the caller: monitors run by a user with no group
/// and by another client app see the daemon's broadcasts (model PropertiesChanged) but nothing
/// of a generation they did not start.
#[test]
fn job_signals_reach_only_their_caller() {
    if !root() {
        return;
    }
    let groups = Groups::new();
    let (bus, _daemon) = bus_and_daemon(&groups, true, "monitor");
    let mut gdbus_nobody = as_user(NOBODY, &[], "gdbus");
    gdbus_nobody.args(["monitor", "--address", &bus.address, "--dest", NAME]);
    let mut gdbus_client = as_user(CLIENT_UID, &[CLIENTS_GID], "gdbus");
    gdbus_client.args(["monitor", "--address", &bus.address, "--dest", NAME]);
    let mut dbus_monitor = as_user(CLIENT_UID, &[CLIENTS_GID], "dbus-monitor");
    dbus_monitor.args(["--address", &bus.address]);
    let monitors = [Watcher::spawn(gdbus_nobody), Watcher::spawn(gdbus_client), Watcher::spawn(dbus_monitor)];
    wait_for("the monitors to start", Duration::from_secs(20), || {
        (monitors[0].count("is owned by") > 0
            && monitors[1].count("is owned by") > 0
            && monitors[2].count("member=") > 0)
            .then_some(())
    });
    let seen = |n: usize| {
        wait_for("the monitors to see the daemon's broadcast PropertiesChanged", Duration::from_secs(30), || {
            monitors.iter().all(|m| m.count("PropertiesChanged") >= n).then_some(())
        })
    };
    rt().block_on(async {
        let conn = connect(&bus.address).await;
        let models: Models1Proxy = proxy(&conn, ROOT).await;
        models.load("llm").await.unwrap();
        seen(1);
        let rule =
            MatchRule::builder().msg_type(zbus::message::Type::Signal).interface("org.edgeinfer.Job1").unwrap().build();
        let mut signals = MessageStream::for_match_rule(rule, &conn, Some(1 << 12)).await.unwrap();
        let generator: Generator1Proxy = proxy(&conn, ROOT).await;
        let path = generator.generate("llm", "Once upon a time", std::collections::HashMap::new()).await.unwrap();
        // The caller gets its tokens and the end.
        let (mut tokens, mut text) = (0, String::new());
        tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(Ok(m)) = signals.next().await {
                let member = m.header().member().map(|m| m.to_string()).unwrap_or_default();
                if m.header().path().map(|p| p.as_str()) != Some(path.as_str()) {
                    continue;
                }
                if member == "Token" {
                    tokens += 1;
                } else if member == "Finished" {
                    let end: Finished = m.body().deserialize().unwrap();
                    text = end.1;
                    break;
                }
            }
        })
        .await
        .expect("the caller got no Finished within 60 s");
        assert!(tokens > 0 && !text.is_empty(), "the caller streams its own generation");
        // A later broadcast: by the time the monitors see it, they have seen anything the daemon
        // sent before it (one sender's messages arrive in order).
        models.unload("llm").await.unwrap();
        seen(2);
        for m in &monitors {
            let out = m.text();
            assert!(!out.contains("Token") && !out.contains("Finished"), "a monitor saw job signals:\n{out}");
            assert!(!out.contains(path.as_str()), "a monitor saw the job path:\n{out}");
            assert!(!out.contains(&text), "a monitor saw the completion:\n{out}");
        }
    });
}

/// Before: any member of the one `edgeinfer` group could unload models and change galleries.
/// Now the shipped policy and the daemon itself split the rights: clients infer, admins control.
#[test]
fn rights_are_split_between_clients_and_admins() {
    if !root() {
        return;
    }
    let groups = Groups::new();
    let client = (CLIENT_UID, &[CLIENTS_GID][..]);
    let admin = (ADMIN_UID, &[ADMIN_GID][..]);
    let nobody = (NOBODY, &[][..]);
    for shipped_policy in [true, false] {
        let (bus, _daemon) = bus_and_daemon(&groups, shipped_policy, if shipped_policy { "policy" } else { "daemon" });
        let call =
            |who: (u32, &[u32]), path: &str, method: &str, args: &[&str]| gdbus(&bus, who.0, who.1, path, method, args);
        let denied = |(ok, out): (bool, String), what: &str| {
            assert!(!ok && out.contains("org.freedesktop.DBus.Error.AccessDenied"), "{what} must be refused: {out}");
            out
        };
        let allowed = |(ok, out): (bool, String), what: &str| {
            assert!(ok, "{what} must be allowed: {out}\nbus log: {}", bus.log());
            out
        };
        let label = if shipped_policy { "under the shipped policy" } else { "by the daemon (permissive bus)" };
        // Inference and listing: clients and admins, not others.
        let out = allowed(call(client, ROOT, "org.edgeinfer.Models1.List", &[]), "List by a client");
        assert!(out.contains("'dino'"), "{out}");
        allowed(call(client, ROOT, "org.edgeinfer.Embedder1.GalleryList", &["dino"]), "GalleryList by a client");
        allowed(call(admin, ROOT, "org.edgeinfer.Models1.List", &[]), "List by an admin");
        let out = denied(call(nobody, ROOT, "org.edgeinfer.Models1.List", &[]), "List by a user without a group");
        if !shipped_policy {
            assert!(out.contains("needs membership of edgeinfer-clients or edgeinfer-admin"), "{label}: {out}");
        }
        // Model control and gallery changes: admins only.
        for (method, args) in [
            ("org.edgeinfer.Models1.Unload", &["sam"][..]),
            ("org.edgeinfer.Models1.Load", &["llm"][..]),
            ("org.edgeinfer.Embedder1.GalleryRemove", &["dino", "mug"][..]),
            ("org.edgeinfer.Embedder1.GalleryRemoveExample", &["dino", "1"][..]),
        ] {
            let out = denied(call(client, ROOT, method, args), &format!("{method} by a client {label}"));
            if !shipped_policy {
                assert!(out.contains("needs membership of edgeinfer-admin"), "{out}");
            }
        }
        let out = allowed(call(admin, ROOT, "org.edgeinfer.Models1.Unload", &["sam"]), "Unload by an admin");
        assert!(out.contains("true"), "{out}");
        allowed(
            call(admin, ROOT, "org.edgeinfer.Embedder1.GalleryRemove", &["dino", "mug"]),
            "GalleryRemove by an admin",
        );
        if shipped_policy {
            // Listing the running jobs by introspection is not granted to clients.
            denied(
                call(client, "/org/edgeinfer/jobs", "org.freedesktop.DBus.Introspectable.Introspect", &[]),
                "Introspect of the jobs",
            );
            allowed(
                call(client, ROOT, "org.freedesktop.DBus.Introspectable.Introspect", &[]),
                "Introspect of the root",
            );
        }
    }
}

/// Before: job paths were /org/edgeinfer/Daemon1/jobs/1, 2, 3... and any caller could cancel or
/// read any job. Now a job path is 128 random bits, announced to nobody, and only the caller
/// that started the job may cancel it or read its properties.
#[test]
fn jobs_belong_to_their_caller() {
    if !root() {
        return;
    }
    let groups = Groups::new();
    let (bus, _daemon) = bus_and_daemon(&groups, true, "jobs");
    rt().block_on(async {
        let conn = connect(&bus.address).await;
        let generator: Generator1Proxy = proxy(&conn, ROOT).await;
        let (n, eos) = (zbus::zvariant::Value::U32(230), zbus::zvariant::Value::Bool(true));
        let long = std::collections::HashMap::from([("max_new_tokens", &n), ("ignore_eos", &eos)]);
        let path = generator.generate("llm", "Once upon a time", long).await.unwrap();
        let id = path.as_str().strip_prefix("/org/edgeinfer/jobs/").unwrap_or_else(|| panic!("{path}"));
        assert!(id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()), "{path}");
        let client = (CLIENT_UID, &[CLIENTS_GID][..]);
        let admin = (ADMIN_UID, &[ADMIN_GID][..]);
        for who in [client, admin] {
            let (ok, out) = gdbus(&bus, who.0, who.1, path.as_str(), "org.edgeinfer.Job1.Cancel", &[]);
            assert!(!ok && out.contains("AccessDenied") && out.contains("belongs to another caller"), "{out}");
            let (ok, out) = gdbus(&bus, who.0, who.1, ROOT, "org.edgeinfer.Generator1.Cancel", &[path.as_str()]);
            assert!(!ok && out.contains("belongs to another caller"), "{out}");
            let out = as_user(who.0, who.1, "busctl")
                .args(["--address", &bus.address, "get-property", NAME, path.as_str(), "org.edgeinfer.Job1", "Text"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success() && text.contains("Access denied"), "busctl: {text}");
            let (ok, out) =
                gdbus(&bus, who.0, who.1, ROOT, "org.freedesktop.DBus.ObjectManager.GetManagedObjects", &[]);
            assert!(ok && !out.contains("/jobs/"), "the jobs are not managed objects: {out}");
        }
        // Its caller may.
        let job: edgeinfer_daemon::dbus::proxy::Job1Proxy = proxy(&conn, path.as_str()).await;
        job.cancel().await.unwrap();
        let state = wait_for_async(|| async { job.state().await.ok().filter(|s| s != "running") }).await;
        assert_eq!(state, "cancelled");
    });
}

async fn wait_for_async<T, F: std::future::Future<Output = Option<T>>>(mut f: impl FnMut() -> F) -> T {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(v) = f().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("timed out after 30 s")
}

// ---- MQTT ----

/// `mosquitto_sub -v` on `topics`, started and known subscribed (a retained probe came back).
fn subscriber(port: u16, extra: &[&str], topics: &[&str]) -> Watcher {
    let probe = format!("probe/{}", std::process::id());
    let ok = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", &probe, "-m", "probe", "-r", "-q", "1"])
        .args(extra)
        .status()
        .unwrap();
    assert!(ok.success());
    let mut cmd = Command::new("mosquitto_sub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "mqttv5", "-v", "-t", &probe]).args(extra);
    for t in topics {
        cmd.args(["-t", t]);
    }
    let w = Watcher::spawn(cmd);
    wait_for("mosquitto_sub to subscribe", Duration::from_secs(10), || (w.count(&probe) > 0).then_some(()));
    w
}

/// `text` in a file (image payloads are over the kernel's limit for one argument).
fn payload_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn mosquitto_pub(port: u16, args: &[&str]) {
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "mqttv5", "-q", "1"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "mosquitto_pub: {}", String::from_utf8_lossy(&out.stderr));
}

/// The JSON payload of the first line `<topic> <payload>` on `topic` containing `needle`.
fn message_on(w: &Watcher, topic: &str, needle: &str) -> Value {
    let line = wait_for(&format!("a message on {topic} with {needle}"), Duration::from_secs(30), || {
        w.lines.lock().unwrap().iter().find(|l| l.starts_with(&format!("{topic} ")) && l.contains(needle)).cloned()
    });
    serde_json::from_str(&line[topic.len() + 1..]).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Before: the daemon published a reply on whatever topic a request named, with its own broker
/// rights — e.g. another node's `.../unload`. Now replies go to `<prefix>/replies/#` and the
/// configured patterns only; anything else is refused on the errors topic and not run.
#[test]
fn replies_go_only_to_allowed_topics() {
    let broker = Mosquitto::start();
    let cfg =
        config(&broker.url(), "deputy", "").replacen("[mqtt]\n", "[mqtt]\nreply_topics = [\"apps/+/inbox\"]\n", 1);
    let _daemon = Daemon::start(&cfg);
    let all = subscriber(broker.port, &[], &["edgeinfer/#", "apps/#", "elsewhere/#"]);
    let photo = fixtures().join("photos/coffee.png");
    let embed_file = payload_file(&json!({"images": [photo_b64(&photo)]}).to_string());
    let embed = embed_file.path().to_str().unwrap().to_string();
    // MQTT 5 response topic aimed at another node's unload.
    let target = "edgeinfer/victim/models/sam/unload";
    mosquitto_pub(
        broker.port,
        &[
            "-t",
            "edgeinfer/deputy/models/dino/embed",
            "-f",
            &embed,
            "-D",
            "publish",
            "response-topic",
            target,
            "-D",
            "publish",
            "correlation-data",
            "c-1",
        ],
    );
    let e = message_on(&all, "edgeinfer/deputy/errors", "never publishes");
    assert_eq!(e["error"]["code"], "bad_input", "{e}");
    // MQTT 3.1.1 reply_to aimed outside the allowed patterns.
    let req =
        payload_file(&json!({"reply_to": "elsewhere/topic", "id": "x-2", "images": [photo_b64(&photo)]}).to_string());
    let req = req.path().to_str().unwrap().to_string();
    mosquitto_pub(broker.port, &["-V", "mqttv311", "-t", "edgeinfer/deputy/models/dino/embed", "-f", &req]);
    let e = message_on(&all, "edgeinfer/deputy/errors", "\"x-2\"");
    assert!(e["error"]["message"].as_str().unwrap().contains("not allowed"), "{e}");
    // Any text: a multi-byte first character once panicked in the topic matcher (and the
    // request, never acknowledged, came back after every reconnect).
    let req = payload_file(&json!({"reply_to": "é/x", "id": "x-3", "images": [photo_b64(&photo)]}).to_string());
    let req = req.path().to_str().unwrap().to_string();
    mosquitto_pub(broker.port, &["-V", "mqttv311", "-t", "edgeinfer/deputy/models/dino/embed", "-f", &req]);
    let e = message_on(&all, "edgeinfer/deputy/errors", "\"x-3\"");
    assert!(e["error"]["message"].as_str().unwrap().contains("'é/x' is not allowed"), "{e}");
    // No reply topic at all: not run (its answer would be readable by every reader of errors).
    mosquitto_pub(broker.port, &["-t", "edgeinfer/deputy/models/dino/embed", "-f", &embed]);
    let e = message_on(&all, "edgeinfer/deputy/errors", "no reply topic");
    assert!(e.get("result").is_none() && e["error"]["code"] == "bad_input", "{e}");
    // An allowed extra pattern works.
    mosquitto_pub(
        broker.port,
        &["-t", "edgeinfer/deputy/models/dino/embed", "-f", &embed, "-D", "publish", "response-topic", "apps/a1/inbox"],
    );
    let r = message_on(&all, "apps/a1/inbox", "\"done\":true");
    assert_eq!(r["result"]["dim"], 48, "{r}");
    let text = all.text();
    for forbidden in [target, "elsewhere/topic"] {
        assert!(!text.lines().any(|l| l.starts_with(&format!("{forbidden} "))), "published on {forbidden}:\n{text}");
    }
}

/// Before: cancel was keyed by the id alone, shared by all clients: anyone could cancel anyone's
/// generation by guessing or reading its id. Now it is scoped to (reply topic, id).
#[test]
fn cancel_reaches_only_requests_on_the_same_reply_topic() {
    let broker = Mosquitto::start();
    let daemon = Daemon::start(&config(&broker.url(), "scoped", ""));
    let mut owner = Client::connect(broker.port);
    let _ = owner.call(&topic(&daemon, "llm", "load"), "{}");
    let attacker = subscriber(broker.port, &[], &["edgeinfer/replies/attacker"]);
    let request = json!({"prompt": "Once upon a time", "max_new_tokens": 200, "ignore_eos": true, "stream": true});
    let corr = owner.send(&topic(&daemon, "llm", "generate"), request.to_string(), &[]);
    let (c, first) = owner.next_reply(Duration::from_secs(60));
    assert!(c == corr && first["done"] == false, "{first}");
    // The attacker knows the id (the correlation data) but answers on its own topic.
    let cancel = json!({"cancel": corr}).to_string();
    mosquitto_pub(
        broker.port,
        &[
            "-t",
            &topic(&daemon, "llm", "cancel"),
            "-m",
            &cancel,
            "-D",
            "publish",
            "response-topic",
            "edgeinfer/replies/attacker",
        ],
    );
    let e = message_on(&attacker, "edgeinfer/replies/attacker", "\"done\"");
    assert_eq!(e["error"]["code"], "bad_input", "{e}");
    let end = loop {
        let (c, v) = owner.next_reply(Duration::from_secs(60));
        if c == corr && v["done"] == true {
            break v;
        }
    };
    assert_eq!(end["result"]["finish_reason"], "length", "the attacker's cancel did nothing: {end}");
    // The owner's own cancel works.
    let corr = owner.send(&topic(&daemon, "llm", "generate"), request.to_string(), &[]);
    let _ = owner.next_reply(Duration::from_secs(60));
    let _ = owner.send(&topic(&daemon, "llm", "cancel"), json!({"cancel": corr}).to_string(), &[]);
    let end = loop {
        let (c, v) = owner.next_reply(Duration::from_secs(60));
        if c == corr && v["done"] == true {
            break v;
        }
    };
    assert_eq!(end["result"]["finish_reason"], "cancelled", "{end}");
}

/// A CA, and certificates it signs, written as PEM files in a folder.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} test CA"));
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}-ca.pem")), cert.pem()).unwrap();
        Pki { dir: dir.to_path_buf(), ca: rcgen::Issuer::new(params, key) }
    }

    fn ca_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-ca.pem"))
    }

    /// Writes `<file>.pem` and `<file>.key`: a certificate for `names`, valid `from`..`until`.
    fn issue(&self, file: &str, names: &[&str], valid: Option<(i32, i32)>) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, file);
        if let Some((from, until)) = valid {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(until, 1, 1);
        }
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (c, k) = (self.dir.join(format!("{file}.pem")), self.dir.join(format!("{file}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

const DAEMON_USER: &str = "edgeinferd-tls";
const DAEMON_PASSWORD: &str = "s3cret-Pa55word-9f2c";
const APP_USER: &str = "app";
const APP_PASSWORD: &str = "app-password";

/// A broker with a TLS listener that wants client certificates (the daemon's), a plain
/// loopback listener for the apps, a password file and a least-privilege ACL, both listeners
/// sharing them. Returns the broker and the TLS port.
fn secured_broker(pki_dir: &Path, node: &str) -> (Mosquitto, u16) {
    let tls_port = free_port();
    let pki = pki_dir.to_path_buf();
    let node = node.to_string();
    let broker = Mosquitto::start_raw(move |dir, port| {
        let passwd = dir.join("passwd");
        for (user, password) in [(DAEMON_USER, DAEMON_PASSWORD), (APP_USER, APP_PASSWORD)] {
            let mut c = Command::new("mosquitto_passwd");
            if !passwd.exists() {
                c.arg("-c");
            }
            let ok = c.arg("-b").arg(&passwd).arg(user).arg(password).status().unwrap();
            assert!(ok.success(), "mosquitto_passwd");
        }
        // Exactly the topics the daemon needs.
        let acl = format!(
            "user {DAEMON_USER}\n\
             topic read edgeinfer/{node}/models/#\n\
             topic read edgeinfer/{node}/list\n\
             topic write edgeinfer/{node}/models/+/state\n\
             topic write edgeinfer/{node}/status\n\
             topic write edgeinfer/{node}/stats\n\
             topic write edgeinfer/{node}/errors\n\
             topic write edgeinfer/replies/#\n\
             \n\
             user {APP_USER}\n\
             topic write edgeinfer/+/models/#\n\
             topic read edgeinfer/+/status\n\
             topic readwrite probe/#\n\
             pattern read edgeinfer/replies/%u/#\n"
        );
        std::fs::write(dir.join("acl"), acl).unwrap();
        format!(
            "user root\nper_listener_settings false\nallow_anonymous false\npersistence false\n\
             password_file {passwd}\nacl_file {acl}\nlog_type all\nlog_dest file {log}\n\
             listener {port} 127.0.0.1\n\
             listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\nrequire_certificate true\n",
            passwd = passwd.display(),
            acl = dir.join("acl").display(),
            log = dir.join("broker.log").display(),
            ca = pki.join("good-ca.pem").display(),
            cert = pki.join("server.pem").display(),
            key = pki.join("server.key").display(),
        )
    });
    wait_for("the TLS listener", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", tls_port)).ok()
    });
    (broker, tls_port)
}

/// The log of a broker from [`secured_broker`] (its own log file, all messages).
fn broker_log(broker: &Mosquitto) -> String {
    std::fs::read_to_string(broker.dir().join("broker.log")).unwrap_or_default()
}

fn tls_config(node: &str, tls_port: u16, mqtt: &str) -> String {
    config(&format!("mqtts://127.0.0.1:{tls_port}"), node, "").replacen(
        "[mqtt]\n",
        &format!("[mqtt]\nusername = \"{DAEMON_USER}\"\n{mqtt}\n"),
        1,
    )
}

/// A private folder of secrets, as systemd's LoadCredential= makes one.
fn credentials(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in files {
        let mut f = std::fs::File::create(dir.path().join(name)).unwrap();
        f.write_all(bytes).unwrap();
    }
    dir
}

/// The daemon over TLS with a client certificate, its password and key from systemd
/// credentials, under an ACL granting exactly its topics; an app (mosquitto_pub/sub with its own
/// password and reply namespace) gets answers. The password is nowhere in the logs, the status
/// topic or `--check-config`.
#[test]
fn tls_client_certificates_credentials_and_a_least_privilege_acl() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(pki_dir.path(), "good");
    pki.issue("server", &["127.0.0.1"], None);
    let (client_cert, client_key) = pki.issue("client", &["edgeinferd"], None);
    let (broker, tls_port) = secured_broker(pki_dir.path(), "tls1");
    let key = std::fs::read(&client_key).unwrap();
    let creds = credentials(&[("mqtt-password", format!("{DAEMON_PASSWORD}\n").as_bytes()), ("mqtt-client-key", &key)]);
    let mqtt = format!("ca_file = \"{}\"\nclient_cert = \"{}\"", pki.ca_file("good").display(), client_cert.display());
    let cfg = tls_config("tls1", tls_port, &mqtt);
    let env = [("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap())];
    let daemon = Daemon::start_with_env(&cfg, &env);
    let app = ["-u", APP_USER, "-P", APP_PASSWORD];
    let replies = subscriber(broker.port, &app, &["edgeinfer/replies/app/#", "edgeinfer/tls1/status"]);
    let status = message_on(&replies, "edgeinfer/tls1/status", "online");
    assert_eq!(status["transports"]["mqtt"], "connected", "{status}");
    let photo = fixtures().join("photos/coffee.png");
    let embed_file = payload_file(&json!({"images": [photo_b64(&photo)]}).to_string());
    let embed = embed_file.path().to_str().unwrap().to_string();
    let mut args = vec!["-t", "edgeinfer/tls1/models/dino/embed", "-f", &embed];
    args.extend(["-D", "publish", "response-topic", "edgeinfer/replies/app/1"]);
    args.extend(app);
    mosquitto_pub(broker.port, &args);
    let r = message_on(&replies, "edgeinfer/replies/app/1", "\"done\":true");
    assert_eq!(r["result"]["dim"], 48, "{r}");
    // The ACL held: the broker denied nothing the daemon does.
    let log = broker_log(&broker);
    assert!(log.contains("New client connected from 127.0.0.1") && log.contains(DAEMON_USER), "{log}");
    assert!(!log.contains("Denied PUBLISH"), "the ACL denied the daemon something:\n{log}");
    // The secret is nowhere.
    let check = Command::new(env!("CARGO_BIN_EXE_edgeinferd"))
        .arg("--config")
        .arg(&daemon.config)
        .arg("--check-config")
        .envs(env)
        .output()
        .unwrap();
    let check_out = String::from_utf8_lossy(&check.stdout).into_owned() + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{check_out}");
    for (what, text) in [("the log", daemon.log()), ("--check-config", check_out), ("the status topic", replies.text())]
    {
        assert!(!text.contains(DAEMON_PASSWORD), "the password is in {what}:\n{text}");
    }
}

/// Each way the broker or TLS can refuse us gives one clear error line, then retries with
/// backoff (seen by the broker as new connections), never a panic or an exit.
#[test]
fn broker_refusals_give_one_clear_line_and_back_off() {
    let pki_dir = tempfile::tempdir().unwrap();
    let good = Pki::new(pki_dir.path(), "good");
    let rogue = Pki::new(pki_dir.path(), "rogue");
    good.issue("server", &["127.0.0.1"], None);
    let (client_cert, client_key) = good.issue("client", &["edgeinferd"], None);
    let (_, other_key) = good.issue("other", &["other"], None);
    let (broker, tls_port) = secured_broker(pki_dir.path(), "refused");
    let password = pki_dir.path().join("password");
    std::fs::write(&password, format!("{DAEMON_PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&password, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let wrong = pki_dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let base = |ca: &Path, key: &Path, password: &Path| {
        format!(
            "ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\npassword_file = \"{}\"",
            ca.display(),
            client_cert.display(),
            key.display(),
            password.display()
        )
    };
    // Server certificates that must fail, swapped in by restarting the broker's TLS files.
    let cases: Vec<(&str, String, ServerCert, &str)> = vec![
        (
            "wrong password",
            base(&good.ca_file("good"), &client_key, &wrong),
            None,
            "check mqtt.username and the password",
        ),
        ("unknown CA", base(&rogue.ca_file("rogue"), &client_key, &password), None, "not signed by a trusted CA"),
        (
            "expired certificate",
            base(&good.ca_file("good"), &client_key, &password),
            Some(("127.0.0.1", Some((2020, 2021)))),
            "has expired",
        ),
        (
            "wrong host name",
            base(&good.ca_file("good"), &client_key, &password),
            Some(("broker.example", None)),
            "not valid for the host name",
        ),
        (
            "a key that is not the certificate's",
            base(&good.ca_file("good"), &other_key, &password),
            None,
            "TLS with the MQTT broker failed",
        ),
    ];
    let mut broker = broker;
    for (what, mqtt, server, expect) in cases {
        if let Some((name, valid)) = server {
            good.issue("server", &[name], valid);
        } else {
            good.issue("server", &["127.0.0.1"], None);
        }
        // Mosquitto logs each TLS connection once, in one of two ways depending on when the
        // handshake fails: "Client connection from ADDR failed: REASON." when it fails while
        // being accepted, else "New connection from ADDR:PORT on port LISTENER." (a failure
        // after that is logged without the address).
        let listener = format!(" on port {tls_port}.");
        let count = |broker: &Mosquitto| {
            broker_log(broker)
                .lines()
                .filter(|l| {
                    l.contains("Client connection from") || (l.contains("New connection from") && l.contains(&listener))
                })
                .count()
        };
        let before_restart = count(&broker);
        broker.restart();
        wait_for("the TLS listener", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", tls_port)).ok()
        });
        // Our readiness probe is one connection too: wait until the broker has logged it.
        wait_for("the broker to log the readiness probe", Duration::from_secs(10), || {
            (count(&broker) > before_restart).then_some(())
        });
        let count = || count(&broker);
        let before = count();
        let mut daemon = Daemon::spawn(&tls_config("refused", tls_port, &mqtt), &[]);
        // Three attempts seen by the broker: it retries (100, 200, 400 ms apart at first).
        let attempts = || count() - before;
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while attempts() < 3 {
            assert!(
                std::time::Instant::now() < until,
                "{what}: the broker saw {} connection attempts in 20 s\nbroker:\n{}\ndaemon:\n{}",
                attempts(),
                broker_log(&broker).lines().rev().take(30).collect::<Vec<_>>().join("\n"),
                daemon.log()
            );
            std::thread::park_timeout(Duration::from_millis(50));
        }
        assert!(daemon.child.try_wait().unwrap().is_none(), "{what}: the daemon exited:\n{}", daemon.log());
        let log = daemon.log();
        let lines: Vec<&str> =
            log.lines().filter(|l| l.contains(expect) && (l.contains("ERROR") || l.contains("WARN"))).collect();
        assert_eq!(lines.len(), 1, "{what}: one clear line saying '{expect}', got:\n{log}");
        assert!(lines[0].contains("retrying with backoff"), "{what}: {}", lines[0]);
        assert!(!log.contains("panicked"), "{what}:\n{log}");
        assert!(!log.contains(DAEMON_PASSWORD) && !log.contains("not-the-password"), "{what}: a password in the log");
        assert_eq!(daemon.terminate().code(), Some(0), "{what}: SIGTERM still ends it cleanly");
    }
}

/// `mqtts://` without `ca_file` trusts the system store (`SSL_CERT_FILE` here, as OpenSSL reads
/// it); an unreadable store is a clear error at start, not a panic nor a silent fallback.
#[test]
fn the_system_trust_store_works_and_an_unreadable_one_is_an_error() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(pki_dir.path(), "good");
    pki.issue("server", &["127.0.0.1"], None);
    let (client_cert, client_key) = pki.issue("client", &["edgeinferd"], None);
    let (_broker, tls_port) = secured_broker(pki_dir.path(), "store");
    let password = pki_dir.path().join("password");
    std::fs::write(&password, DAEMON_PASSWORD).unwrap();
    std::fs::set_permissions(&password, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let mqtt = format!(
        "client_cert = \"{}\"\nclient_key = \"{}\"\npassword_file = \"{}\"",
        client_cert.display(),
        client_key.display(),
        password.display()
    );
    let cfg = tls_config("store", tls_port, &mqtt);
    let ca = pki.ca_file("good");
    let mut daemon = Daemon::start_with_env(&cfg, &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    wait_for("connected over TLS", Duration::from_secs(20), || {
        daemon.log().contains("connected to the MQTT broker").then_some(())
    });
    assert_eq!(daemon.terminate().code(), Some(0));
    let mut daemon = Daemon::spawn(&cfg, &[("SSL_CERT_FILE", "/nonexistent/ca.pem")]);
    let status = daemon.wait_exit("an unreadable trust store", Duration::from_secs(20));
    assert!(!status.success(), "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("SSL_CERT_FILE /nonexistent/ca.pem") && !log.contains("panicked"), "{log}");
    // A password file others may read is refused before anything starts.
    std::fs::set_permissions(&password, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let mut daemon = Daemon::spawn(&cfg, &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let status = daemon.wait_exit("a world-readable password file", Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "{}", daemon.log());
    assert!(daemon.log().contains("readable by other users"), "{}", daemon.log());
}
