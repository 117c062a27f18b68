//! Faults an unattended device meets, against the real `edgeinferd`, a real Mosquitto and a
//! private `dbus-daemon`: hostile image geometry over both transports, requests that time out
//! while queued followed by idleness (the watchdog must keep being fed), a host name hidden the
//! way the shipped unit hides `/proc/sys`, and transport configurations that cannot work. In each
//! case the daemon answers on the channel the request came from and lives on, or, where it cannot
//! serve at all, exits non-zero saying why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Cursor;
use std::time::{Duration, Instant};

use edgeinfer_daemon::dbus::proxy::{Embedder1Proxy, Segmenter1Proxy};
use edgeinfer_daemon::dbus::{NAME, ROOT};
use edgeinfer_daemon::frame::sealed_memfd;
use image::ImageEncoder;
use serde_json::json;
use support::*;
use zbus::zvariant::{Fd, StructureBuilder, Value};

/// A `width` × `height` black PNG: about 120 KB for 40,000,000 × 1, within `max_pixels`.
fn png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new_with_quality(
        Cursor::new(&mut out),
        image::codecs::png::CompressionType::Best,
        image::codecs::png::FilterType::NoFilter,
    )
    .write_image(&vec![0u8; width as usize * height as usize * 3], width, height, image::ExtendedColorType::Rgb8)
    .unwrap();
    out
}

/// Starts a 240-token generation on `llm` and waits for its first delta (it is running then);
/// returns its correlation and that delta.
fn start_long_generation(c: &mut Client, daemon: &Daemon) -> (String, serde_json::Value) {
    let _ = c.call(&topic(daemon, "llm", "load"), "{}");
    let corr = c.send(
        &topic(daemon, "llm", "generate"),
        json!({"prompt": "Once upon a time", "max_new_tokens": 240, "ignore_eos": true}).to_string(),
        &[],
    );
    let (first, delta) = c.next_reply(Duration::from_secs(30));
    assert_eq!((first.as_str(), &delta["done"]), (corr.as_str(), &json!(false)), "{delta}");
    (corr, delta)
}

/// A DINOv2 model folder under `parent` whose load never returns: its gallery file (also
/// returned) is a FIFO nobody writes, like a file on a hung network mount.
fn b64(bytes: &[u8]) -> String {
    edgeinfer_daemon::api::b64::encode(bytes)
}

/// Regression: a 40,000,000 × 1 PNG sent to DINOv2 aborted the process (a 32 GiB allocation
/// from a saturated resize target); 1 × 40,000,000 to SAM answered `backend`. Both are refused
/// up front as `too_large`, over MQTT and over D-Bus, and the daemon serves on.
#[test]
fn geometry_bombs_are_refused_over_mqtt_and_dbus_and_the_daemon_lives_on() {
    let broker = Mosquitto::start();
    let bus = DbusBus::start();
    let daemon = Daemon::start(&dbus_config(&bus.address, Some(&broker.url()), "bombs"));
    let (wide, tall) = (png(40_000_000, 1), png(1, 40_000_000));
    assert!(wide.len() < 1 << 20 && tall.len() < 1 << 20, "{} / {} bytes", wide.len(), tall.len());

    let mut c = Client::connect(broker.port);
    for (model, task, body) in [
        ("dino", "embed", json!({"images": [b64(&wide)]})),
        ("dino", "embed", json!({"images": [b64(&tall)]})),
        ("dino", "classify", json!({"image": b64(&wide)})),
        ("sam", "segment", json!({"image": b64(&tall), "points": [{"x": 0, "y": 0}]})),
        ("sam", "segment", json!({"image": b64(&wide), "points": [{"x": 0, "y": 0}]})),
    ] {
        let r = c.call(&topic(&daemon, model, task), body.to_string());
        assert_eq!(r["error"]["code"], "too_large", "{model}/{task}: {r}");
        assert!(r["error"]["message"].as_str().unwrap().contains("max_aspect_ratio"), "{r}");
    }

    // Too many images in one request: refused before any is decoded.
    let tiny = b64(&png(2, 2));
    let r = c.call(&topic(&daemon, "dino", "embed"), json!({"images": vec![tiny; 33]}).to_string());
    assert_eq!(r["error"]["code"], "too_large", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("max_images"), "{r}");

    rt().block_on(async {
        let conn = zbus::connection::Builder::address(bus.address.as_str()).unwrap().build().await.unwrap();
        let embedder: Embedder1Proxy =
            zbus::proxy::Builder::new(&conn).destination(NAME).unwrap().path(ROOT).unwrap().build().await.unwrap();
        let segmenter: Segmenter1Proxy =
            zbus::proxy::Builder::new(&conn).destination(NAME).unwrap().path(ROOT).unwrap().build().await.unwrap();
        let name = |e: zbus::Error| match e {
            zbus::Error::MethodError(name, message, _) => format!("{name}: {}", message.unwrap_or_default()),
            other => format!("not a method error: {other}"),
        };
        let e = name(embedder.embed("dino", &wide, Default::default()).await.unwrap_err());
        assert!(e.starts_with("org.edgeinfer.Error.TooLarge") && e.contains("max_aspect_ratio"), "{e}");
        let frame = sealed_memfd("bomb", &tall).unwrap();
        let e = name(embedder.embed_fd("dino", Fd::from(&frame), Default::default()).await.unwrap_err());
        assert!(e.starts_with("org.edgeinfer.Error.TooLarge"), "{e}");
        let point = Value::Structure(
            StructureBuilder::new().add_field(0.0f64).add_field(0.0f64).add_field(true).build().unwrap(),
        );
        let points = Value::Array(vec![point].try_into().unwrap());
        let options = std::collections::HashMap::from([("points", &points)]);
        let e = name(segmenter.segment("sam", &tall, options).await.unwrap_err());
        assert!(e.starts_with("org.edgeinfer.Error.TooLarge"), "{e}");
        // Still serving, on both transports.
        let photo = std::fs::read(fixtures().join("photos").join("coffee.png")).unwrap();
        assert_eq!(embedder.embed("dino", &photo, Default::default()).await.unwrap().len(), 48);
    });
    let r = c.call(
        &topic(&daemon, "dino", "embed"),
        json!({"images": [photo_b64(&fixtures().join("photos/coffee.png"))]}).to_string(),
    );
    assert_eq!(r["result"]["dim"], 48, "{r}");
    assert!(!daemon.log().contains("memory allocation"), "{}", daemon.log());
}

/// Regression: a request that timed out while queued (or was cancelled before it started) left
/// its worker marked as running, so after twice the request timeout the watchdog pings stopped
/// and systemd killed a healthy, idle daemon.
#[test]
fn after_requests_time_out_in_the_queue_the_idle_daemon_keeps_feeding_the_watchdog() {
    let broker = Mosquitto::start();
    // Every llm request gets 400 ms: the first one runs (and is cancelled at its timeout), the
    // ones queued behind it are past their deadline when their turn comes. (400 ms, not less:
    // all eight must arrive within one timeout, also on a loaded 2-core CI machine.)
    let cfg = with_model_key(&config(&broker.url(), "idle", ""), "llm", "timeout_ms", "400");
    let cfg = with_model_key(&cfg, "llm", "queue_depth", "8");
    let mut daemon = Daemon::spawn(&cfg, &[("WATCHDOG_USEC", "400000")]);
    daemon.wait_notify("READY=1", Duration::from_secs(60));
    let mut c = Client::connect(broker.port);
    let _ = c.call(&topic(&daemon, "llm", "load"), "{}");
    let request = json!({"prompt": "Once upon a time", "max_new_tokens": 200, "ignore_eos": true, "stream": false});
    let corrs: Vec<String> =
        (0..8).map(|_| c.send(&topic(&daemon, "llm", "generate"), request.to_string(), &[])).collect();
    let replies = c.replies(&corrs, Duration::from_secs(60));
    assert!(replies.iter().any(|(_, v)| v["error"]["code"] == "timeout"), "{replies:?}");
    // The transport answers `timeout` at the deadline; the worker drops the queued request when
    // it reaches it, which may be a moment later: wait for that (bounded).
    wait_for("a request to end in the queue, the case under test", Duration::from_secs(10), || {
        let log = daemon.log();
        (log.contains("timed out while queued") || log.contains("cancelled while queued")).then_some(())
    });
    // Idle now. The stuck check trips after 2 × max(400 ms, 1 s) = 2 s: pings (every 200 ms) must
    // go on well past that.
    let idle = Instant::now();
    while idle.elapsed() < Duration::from_secs(3) {
        daemon.notifications.clear();
        daemon.wait_notify("WATCHDOG=1", Duration::from_secs(1));
    }
    assert!(!daemon.log().contains("a model worker is stuck"), "{}", daemon.log());
}

/// Regression: the node name was read from /proc/sys/kernel/hostname, which the shipped unit's
/// `ProcSubset=pid` hides, so every device called itself "edge" and they took each other's
/// topics and MQTT client id. Run as the unit runs it: /proc/sys hidden, in a UTS namespace with
/// a host name of its own.
#[test]
fn the_node_name_is_the_host_name_even_with_proc_sys_hidden() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: namespaces need root (CI runs as root)");
        return;
    }
    let broker = Mosquitto::start();
    let cfg = config(&broker.url(), "unused", "").replace("node = \"unused\"\n", "");
    assert!(!cfg.contains("node ="));
    let mut c = Client::connect(broker.port);
    let script = "hostname unit-host-7 && mount -t tmpfs none /proc/sys && \
                  ! test -e /proc/sys/kernel/hostname && exec \"$0\" \"$@\"";
    let mut daemon = Daemon::spawn_wrapped(
        &cfg,
        &[],
        &["unshare", "--uts", "--mount", "--propagation", "private", "sh", "-c", script],
    );
    daemon.wait_notify("READY=1", Duration::from_secs(60));
    let status = c.wait_message("edgeinfer/unit-host-7/status", Duration::from_secs(10), |v| v["state"] == "online");
    assert_eq!(status["node"], "unit-host-7");
    assert!(daemon.log().lines().any(|l| l.contains("edgeinferd starting") && l.contains("unit-host-7")));
}

/// A transport configuration that cannot work stops the daemon with a non-zero exit and the
/// reason, instead of running READY with MQTT dead (before, the adapter logged and returned, and
/// nothing watched it).
#[test]
fn an_unusable_mqtt_tls_configuration_fails_the_daemon_visibly() {
    let port = free_port();
    let not_pem = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_pem.path(), "not a certificate\n").unwrap();
    for (extra, expect) in [
        ("ca_file = \"/nonexistent/ca.pem\"".to_string(), "mqtt.ca_file /nonexistent/ca.pem"),
        (format!("ca_file = \"{}\"", not_pem.path().display()), "no PEM certificate"),
    ] {
        let cfg = config(&format!("mqtts://127.0.0.1:{port}"), "tls", "").replacen(
            "[mqtt]\n",
            &format!("[mqtt]\n{extra}\n"),
            1,
        );
        let mut daemon = Daemon::spawn(&cfg, &[]);
        let exit = daemon.wait_exit("edgeinferd to exit", Duration::from_secs(30));
        assert_eq!(exit.code(), Some(1), "{}", daemon.log());
        assert!(daemon.log().contains(expect), "{}", daemon.log());
        assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
    }
}

/// Regression: requests were acknowledged as soon as they were read, so a crash lost every
/// accepted request. Now a request is acknowledged after its final reply: `kill -9` in the middle
/// of a generation, a restart, and the broker re-sends it to the new process (same client id,
/// persistent session — the default), which answers it. At least once: the client sees the
/// deltas of the interrupted run, then the whole answer.
#[test]
fn a_request_interrupted_by_kill_9_is_answered_after_the_restart() {
    let broker = Mosquitto::start();
    let cfg = config(&broker.url(), "crash", "");
    let mut daemon = Daemon::start(&cfg);
    let mut c = Client::connect(broker.port);
    let (corr, delta) = start_long_generation(&mut c, &daemon);
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();

    let restarted = Daemon::start(&cfg);
    let replies = c.replies(std::slice::from_ref(&corr), Duration::from_secs(60));
    let done = &replies.last().unwrap().1;
    assert_eq!(done["result"]["usage"]["generated_tokens"], 240, "{done}");
    // The generation ran again from the start (it was not finished before the kill).
    let mut seqs: Vec<u64> =
        std::iter::once(&delta).chain(replies.iter().map(|(_, v)| v)).filter_map(|v| v["seq"].as_u64()).collect();
    let all = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert!(seqs.len() < all, "no delta was sent twice: the first run had finished before the kill");
    assert!(restarted.log().contains("session_present=true") || restarted.log().contains("session_present"));
}

/// Regression: a reply larger than the broker's Maximum Packet Size failed in the codec, which
/// dropped the connection (and, kept in the session, again at every reconnect). Now the reply
/// becomes a small `too_large` error on the same reply topic and the connection stays up.
#[test]
fn a_reply_larger_than_the_broker_takes_becomes_a_too_large_error() {
    let broker = Mosquitto::start_conf(false, "max_packet_size 600");
    let daemon = Daemon::start(&config(&broker.url(), "small", ""));
    let mut c = Client::connect(broker.port);
    // The model list (three models with their status) is well over 600 bytes.
    let r = c.call(&format!("edgeinfer/{}/list", daemon.node), "{}");
    assert_eq!(r["error"]["code"], "too_large", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("600"), "{r}");
    let r = c.call(
        &topic(&daemon, "llm", "generate"),
        json!({"prompt": "hi", "max_new_tokens": 2, "stream": false}).to_string(),
    );
    assert_eq!(r["result"]["usage"]["generated_tokens"], 2, "{r}");
    assert_eq!(daemon.log().matches("connected to the MQTT broker").count(), 1, "{}", daemon.log());
    assert!(!daemon.log().contains("MQTT connection lost"));
}

/// Regression: a SIGHUP reload ran inside the signal loop, so a SIGTERM during a slow reload
/// waited for it, and systemd's stop timeout then SIGKILLed the daemon. Here the reload adds a
/// DINOv2 model whose gallery file is a FIFO, so its load never returns (like a file on a hung
/// network mount): SIGTERM still stops the daemon cleanly, within its grace.
#[test]
fn sigterm_during_a_reload_that_hangs_stops_the_daemon_cleanly() {
    let broker = Mosquitto::start();
    let cfg = config(&broker.url(), "hup", "");
    let mut daemon = Daemon::start(&cfg);
    let mut c = Client::connect(broker.port);
    let (hung, fifo) = hung_dinov2(daemon.dir.path());
    daemon.rewrite_config(&format!(
        "{cfg}\n[[models]]\nid = \"hung\"\npath = \"{}\"\nfamily = \"dinov2\"\npreload = true\ngallery = \"{}\"\n",
        hung.display(),
        fifo.display()
    ));
    daemon.signal("HUP");
    daemon.wait_notify("RELOADING=1", Duration::from_secs(10));
    c.wait_message("edgeinfer/hup/models/hung/state", Duration::from_secs(10), |v| v["state"] == "loading");
    let asked = Instant::now();
    daemon.signal("TERM");
    let exit = daemon.wait_exit("edgeinferd to exit after SIGTERM during a reload", Duration::from_secs(20));
    assert!(exit.success(), "{exit}: {}", daemon.log());
    assert!(asked.elapsed() < Duration::from_secs(10), "{:?}", asked.elapsed());
    assert!(daemon.log().contains("stopping during a reload"), "{}", daemon.log());
}

/// The broker stops and comes back while a generation runs: the daemon reconnects with its
/// persistent session and the client (persistent too) gets the whole answer; the status topic
/// says the MQTT transport is connected again.
#[test]
fn a_generation_running_while_the_broker_restarts_is_answered() {
    let mut broker = Mosquitto::start_with(true);
    let daemon = Daemon::start(&config(&broker.url(), "outage", ""));
    let mut c = Client::connect_with(broker.port, true);
    let (corr, _) = start_long_generation(&mut c, &daemon);
    broker.stop();
    broker.restart();
    let replies = c.replies(std::slice::from_ref(&corr), Duration::from_secs(60));
    let done = &replies.last().unwrap().1;
    assert_eq!(done["result"]["usage"]["generated_tokens"], 240, "{done}");
    assert!(daemon.log().contains("MQTT connection lost ("), "{}", daemon.log());
    let status = c.wait_message("edgeinfer/outage/status", Duration::from_secs(10), |v| {
        v["state"] == "online" && v["transports"]["mqtt"] == "connected"
    });
    assert_eq!(status["node"], "outage");
}

/// The system bus restarts while a D-Bus generation job runs: the daemon reconnects and serves
/// again (its caller is gone; the job runs to its end with nobody to tell), nothing crashes, and
/// the transport state goes `reconnecting` → `connected` in the MQTT status topic and in the
/// `Transports` property as `busctl` reads it.
#[test]
fn a_job_running_while_the_bus_restarts_leaves_the_daemon_serving() {
    use edgeinfer_daemon::dbus::proxy::Generator1Proxy;
    let broker = Mosquitto::start();
    let mut bus = DbusBus::start();
    let mut daemon = Daemon::start(&dbus_config(&bus.address, Some(&broker.url()), "busjob"));
    let mut c = Client::connect(broker.port);
    let status = "edgeinfer/busjob/status";
    c.wait_message(status, Duration::from_secs(10), |v| v["transports"]["dbus"] == "connected");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let address = bus.address.clone();
    let job = runtime.block_on(async {
        let conn = zbus::connection::Builder::address(address.as_str()).unwrap().build().await.unwrap();
        let generator =
            Generator1Proxy::builder(&conn).destination(NAME).unwrap().path(ROOT).unwrap().build().await.unwrap();
        let (tokens, eos) = (Value::U32(240), Value::Bool(true));
        let options = std::collections::HashMap::from([("max_new_tokens", &tokens), ("ignore_eos", &eos)]);
        let job = generator.generate("llm", "Once upon a time", options).await.unwrap();
        (conn, job)
    });
    bus.restart();
    c.wait_message(status, Duration::from_secs(30), |v| v["transports"]["dbus"] == "reconnecting");
    c.wait_message(status, Duration::from_secs(30), |v| v["transports"]["dbus"] == "connected");
    drop(job);

    // Serving again: a generation over the new bus, and the transport states through busctl.
    let (address, generated) = (
        bus.address.clone(),
        runtime.block_on(async {
            let conn = zbus::connection::Builder::address(bus.address.as_str()).unwrap().build().await.unwrap();
            let generator =
                Generator1Proxy::builder(&conn).destination(NAME).unwrap().path(ROOT).unwrap().build().await.unwrap();
            let tokens = Value::U32(3);
            generator
                .complete("llm", "hi", std::collections::HashMap::from([("max_new_tokens", &tokens)]))
                .await
                .unwrap()
                .4
        }),
    );
    assert_eq!(generated, 3);
    let out = std::process::Command::new("busctl")
        .args([&format!("--address={address}"), "get-property", NAME, ROOT, NAME, "Transports"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.trim(), r#"a{ss} 2 "dbus" "connected" "mqtt" "connected""#);
    assert!(daemon.log().contains("the D-Bus connection was lost; reconnecting"), "{}", daemon.log());
    assert!(daemon.child.try_wait().unwrap().is_none(), "edgeinferd died with the bus");
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

/// Regression: requests for a model still loading waited outside any bound, and without a time
/// limit (a load that never returns kept them for ever). Now as many wait as its queue takes
/// (queue_depth 1: the running one plus one), each at most its timeout, and the rest are `busy`
/// at once. The model here never finishes loading (its gallery file is a FIFO).
#[test]
fn requests_waiting_for_a_load_are_bounded_and_time_out() {
    let broker = Mosquitto::start();
    let parent = tempfile::tempdir().unwrap();
    let cfg = format!("{}\n{}", config(&broker.url(), "waiters", ""), hung_model(parent.path(), "slow", 3000));
    let mut daemon = Daemon::start(&cfg);
    let mut c = Client::connect(broker.port);
    let image = photo_b64(&fixtures().join("photos/coffee.png"));
    let body = json!({"images": [image]}).to_string();
    let corrs: Vec<String> = (0..4).map(|_| c.send(&topic(&daemon, "slow", "embed"), body.clone(), &[])).collect();
    let replies = c.replies(&corrs, Duration::from_secs(30));
    let mut codes: Vec<String> =
        replies.iter().map(|(_, v)| v["error"]["code"].as_str().unwrap_or("none").to_string()).collect();
    codes.sort();
    assert_eq!(codes, ["busy", "busy", "timeout", "timeout"], "{replies:?}");
    let timeout = replies.iter().find(|(_, v)| v["error"]["code"] == "timeout").unwrap();
    assert!(timeout.1["error"]["message"].as_str().unwrap().contains("still loading"), "{timeout:?}");
    // The other models are not held up, and stopping does not wait for the hung load.
    assert_eq!(
        c.call(&topic(&daemon, "llm", "generate"), r#"{"prompt": "hi", "max_new_tokens": 2, "stream": false}"#)["done"],
        true
    );
    daemon.signal("TERM");
    let exit = daemon.wait_exit("edgeinferd to exit with a load hung", Duration::from_secs(20));
    assert!(exit.success(), "{exit}: {}", daemon.log());
}
