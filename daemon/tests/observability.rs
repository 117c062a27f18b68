//! What operators' tools read, checked with those tools: the Prometheus exposition (from
//! `[metrics] listen` and from `edgeinfer stats --prometheus`) passes `promtool check metrics`
//! and counts what happened; the Home Assistant discovery configs, read back with
//! `mosquitto_sub`, follow Home Assistant's MQTT discovery schema and point at topics that hold
//! the values their templates read.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

/// `GET path` over plain HTTP/1.1: (status line, headers, body).
fn http_get(port: u16, path: &str) -> (String, String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_lowercase(), body.to_string())
}

/// `promtool check metrics` on `text`: panics with its findings unless it is clean.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/test.sh installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let findings = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && findings.trim().is_empty(), "promtool check metrics: {findings}\n{text}");
}

/// The value of the sample `series` (name with its labels, as exposed).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn prometheus_metrics_pass_promtool_and_count_what_happened() {
    let broker = Mosquitto::start();
    let port = free_port();
    let cfg = format!("{}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n", config(&broker.url(), "metrics", ""));
    let daemon = Daemon::start(&cfg);
    let mut c = Client::connect(broker.port);
    let image = photo_b64(&fixtures().join("photos/coffee.png"));
    for _ in 0..2 {
        let r = c.call(&topic(&daemon, "dino", "embed"), json!({"images": [image]}).to_string());
        assert_eq!(r["result"]["kind"], "embeddings", "{r}");
    }
    // Not an image: refused by the model's pre-processing (bad_input, counted).
    let r = c.call(&topic(&daemon, "dino", "embed"), json!({"images": ["aGVsbG8="]}).to_string());
    assert_eq!(r["error"]["code"], "bad_input", "{r}");
    let r = c.call(
        &topic(&daemon, "llm", "generate"),
        json!({"prompt": "Once", "max_new_tokens": 3, "ignore_eos": true}).to_string(),
    );
    assert_eq!(r["result"]["usage"]["generated_tokens"], 3, "{r}");

    let (status, headers, text) = http_get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{headers}");
    assert!(headers.contains("content-type: text/plain; version=0.0.4"), "{headers}");
    promtool_check(&text);
    assert_eq!(sample(&text, r#"edgeinfer_requests_total{model="dino",task="embed"}"#), 3.0);
    assert_eq!(sample(&text, r#"edgeinfer_request_errors_total{model="dino",code="bad_input"}"#), 1.0);
    assert_eq!(sample(&text, r#"edgeinfer_generated_tokens_total{model="llm"}"#), 3.0);
    assert_eq!(sample(&text, r#"edgeinfer_request_duration_seconds_count{model="dino"}"#), 3.0);
    assert_eq!(sample(&text, r#"edgeinfer_request_duration_seconds_bucket{model="dino",le="+Inf"}"#), 3.0);
    assert_eq!(sample(&text, r#"edgeinfer_model_state{model="sam",state="loaded"}"#), 1.0);
    assert_eq!(sample(&text, r#"edgeinfer_transport_connected{transport="mqtt"}"#), 1.0);
    assert!(sample(&text, "edgeinfer_resident_memory_bytes") > 1e6);
    assert_eq!(sample(&text, r#"edgeinfer_build_info{version="0.1.0",node="metrics"}"#), 1.0);
    let (status, _, _) = http_get(port, "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    // The same exposition through the CLI (for node_exporter's textfile collector), and the
    // stats document.
    let url = broker.url();
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
            .args(["--mqtt", &url, "--node", "metrics"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = cli(&["stats", "--prometheus"]);
    promtool_check(&text);
    assert_eq!(sample(&text, r#"edgeinfer_requests_total{model="llm",task="generate"}"#), 1.0);
    let stats: Value = serde_json::from_str(&cli(&["stats"])).unwrap();
    assert!(stats["uptime_s"].is_u64() && stats["models"]["dino"]["stats"]["requests"] == 3, "{stats}");
}

/// Keys Home Assistant's MQTT sensor / binary_sensor discovery schemas know (the subset a
/// config may use here), and the nested blocks' keys (which Home Assistant validates strictly).
const ENTITY_KEYS: [&str; 16] = [
    "name",
    "unique_id",
    "state_topic",
    "value_template",
    "device_class",
    "state_class",
    "unit_of_measurement",
    "entity_category",
    "availability",
    "json_attributes_topic",
    "json_attributes_template",
    "device",
    "origin",
    "options",
    "expire_after",
    "icon",
];
const DEVICE_KEYS: [&str; 12] = [
    "identifiers",
    "connections",
    "manufacturer",
    "model",
    "model_id",
    "name",
    "hw_version",
    "serial_number",
    "sw_version",
    "via_device",
    "suggested_area",
    "configuration_url",
];
const AVAILABILITY_KEYS: [&str; 4] = ["topic", "payload_available", "payload_not_available", "value_template"];

/// Home Assistant's rules for one discovery message (homeassistant/components/mqtt: discovery
/// topic pattern, schemas.py, sensor.py, binary_sensor.py; sensor/const.py for units).
fn check_discovery(topic: &str, v: &Value) -> Result<(), String> {
    let parts: Vec<&str> = topic.split('/').collect();
    let id_ok = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !(parts.len() == 5 && parts[0] == "homeassistant" && parts[4] == "config" && id_ok(parts[2]) && id_ok(parts[3]))
    {
        return Err("topic is not <prefix>/<component>/<node_id>/<object_id>/config".into());
    }
    let component = parts[1];
    let o = v.as_object().ok_or("payload is not a JSON object")?;
    for k in o.keys() {
        if !ENTITY_KEYS.contains(&k.as_str()) {
            return Err(format!("unknown key {k}"));
        }
    }
    for k in ["state_topic", "unique_id", "name", "device"] {
        if !o.contains_key(k) {
            return Err(format!("missing {k}"));
        }
    }
    let device = o["device"].as_object().ok_or("device is not an object")?;
    if !device.keys().all(|k| DEVICE_KEYS.contains(&k.as_str())) || !device.contains_key("identifiers") {
        return Err(format!("bad device block {device:?}"));
    }
    let origin = o["origin"].as_object().ok_or("origin is not an object")?;
    if !origin.contains_key("name")
        || !origin.keys().all(|k| ["name", "sw_version", "support_url"].contains(&k.as_str()))
    {
        return Err("bad origin block".into());
    }
    if let Some(a) = o.get("availability") {
        for item in a.as_array().ok_or("availability is not a list")? {
            let item = item.as_object().ok_or("availability item is not an object")?;
            if !item.contains_key("topic") || !item.keys().all(|k| AVAILABILITY_KEYS.contains(&k.as_str())) {
                return Err(format!("bad availability item {item:?}"));
            }
        }
    }
    if let Some(c) = o.get("entity_category")
        && c != "diagnostic"
    {
        return Err("a read-only entity's category can only be diagnostic".into());
    }
    if let Some(sc) = o.get("state_class")
        && !["measurement", "measurement_angle", "total", "total_increasing"].contains(&sc.as_str().unwrap_or(""))
    {
        return Err(format!("state_class {sc}"));
    }
    let unit = o.get("unit_of_measurement").and_then(Value::as_str);
    match (component, o.get("device_class").and_then(Value::as_str)) {
        ("binary_sensor", Some("connectivity")) | ("binary_sensor", None) => {}
        ("sensor", Some("duration")) if ["d", "h", "min", "s", "ms"].contains(&unit.unwrap_or("")) => {}
        ("sensor", Some("data_size")) if ["B", "kB", "MB", "GB", "KiB", "MiB", "GiB"].contains(&unit.unwrap_or("")) => {
        }
        ("sensor", Some("enum")) if unit.is_none() && o.get("state_class").is_none() && o["options"].is_array() => {}
        ("sensor", None) => {}
        (c, d) => return Err(format!("{c} with device_class {d:?} and unit {unit:?}")),
    }
    Ok(())
}

#[test]
fn home_assistant_discovery_follows_the_schema_and_points_at_live_topics() {
    let broker = Mosquitto::start();
    let cfg = config(&broker.url(), "ha-node", "")
        .replace("stats_interval_s = 1", "stats_interval_s = 1\nhomeassistant_discovery = true");
    let mut daemon = Daemon::start(&cfg);
    // 3 node entities, 5 per model (sam, dino, llm).
    let expected = 3 + 5 * 3;
    let out = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port.to_string(),
            "-V",
            "mqttv5",
            "-t",
            "homeassistant/#",
            "-v",
            "-W",
            "10",
        ])
        .args(["-C", &expected.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let configs: BTreeMap<String, Value> = text
        .lines()
        .map(|l| {
            let (t, p) = l.split_once(' ').unwrap();
            (t.to_string(), serde_json::from_str(p).unwrap_or_else(|e| panic!("{t}: {e}")))
        })
        .collect();
    assert_eq!(configs.len(), expected, "{text}");
    let mut unique = BTreeSet::new();
    for (t, v) in &configs {
        if let Err(e) = check_discovery(t, v) {
            panic!("{t}: {e}: {v}");
        }
        assert!(unique.insert(v["unique_id"].as_str().unwrap().to_string()), "duplicate unique_id in {t}");
        assert_eq!(v["device"]["identifiers"], json!(["edgeinfer_ha-node"]), "{t}");
    }
    // Every state topic holds a retained document with what the templates read.
    let mut c = Client::connect(broker.port);
    let mut docs: BTreeMap<String, Value> = BTreeMap::new();
    for v in configs.values() {
        let st = v["state_topic"].as_str().unwrap().to_string();
        if let std::collections::btree_map::Entry::Vacant(e) = docs.entry(st) {
            let doc = c.wait_message(e.key(), Duration::from_secs(10), |_| true);
            e.insert(doc);
        }
    }
    assert_eq!(docs["edgeinfer/ha-node/status"]["state"], "online");
    let stats = &docs["edgeinfer/ha-node/stats"];
    assert!(stats["rss_mb"].is_number() && stats["uptime_s"].is_number(), "{stats}");
    for id in ["sam", "dino", "llm"] {
        assert!(stats["models"][id]["requests_per_s"].is_number(), "{stats}");
        assert!(docs[&format!("edgeinfer/ha-node/models/{id}/state")]["state"].is_string());
        let sensor = &configs[&format!("homeassistant/sensor/edgeinfer_ha-node/{id}_latency_p99/config")];
        assert!(sensor["value_template"].as_str().unwrap().contains(&format!("value_json.models['{id}']")), "{sensor}");
    }
    // A model removed by a reload loses its entities (an empty retained config).
    let removed = cfg.replace(
        &format!("[[models]]\nid = \"llm\"\npath = \"{}\"\nkeep_alive = -1\n", fixtures().join("llama").display()),
        "",
    );
    assert_ne!(removed, cfg);
    daemon.rewrite_config(&removed);
    daemon.signal("HUP");
    wait_for("the removed model's discovery config to be cleared", Duration::from_secs(20), || {
        let retained = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
            .args(["-t", "homeassistant/sensor/edgeinfer_ha-node/llm_state/config", "-W", "1", "-C", "1"])
            .output()
            .unwrap();
        retained.stdout.iter().all(u8::is_ascii_whitespace).then_some(())
    });
    assert!(daemon.terminate().success());
}

/// The exposition and the stats over D-Bus (`Daemon1.Metrics`, `Daemon1.Stats`), as
/// `edgeinfer stats` fetches them without `--mqtt`.
#[test]
fn stats_over_dbus_pass_promtool() {
    let bus = DbusBus::start();
    let _daemon = Daemon::start(&dbus_config(&bus.address, None, "dbus-metrics"));
    let cli = |args: &[&str]| {
        let out =
            Command::new(env!("CARGO_BIN_EXE_edgeinfer")).args(["--bus", &bus.address]).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let image = fixtures().join("photos/coffee.png");
    cli(&["embed", "-m", "dino", image.to_str().unwrap()]);
    let text = cli(&["stats", "--prometheus"]);
    promtool_check(&text);
    assert_eq!(sample(&text, r#"edgeinfer_requests_total{model="dino",task="embed"}"#), 1.0);
    assert_eq!(sample(&text, r#"edgeinfer_transport_connected{transport="dbus"}"#), 1.0);
    let stats: Value = serde_json::from_str(&cli(&["stats"])).unwrap();
    assert_eq!(stats["models"]["dino"]["stats"]["requests"], 1, "{stats}");
}
