//! Model lifecycle and daemon behaviour with a real broker: keep_alive, load/unload, the memory
//! budget, a model that fails to load, SIGHUP reload, SIGTERM, the systemd watchdog, a broker
//! restart, and the `edgeinfer` client commands.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

fn state_is(state: &'static str) -> impl Fn(&Value) -> bool {
    move |v: &Value| v["state"] == state
}

#[test]
fn keep_alive_zero_unloads_after_each_request_and_load_unload_commands_work() {
    let broker = Mosquitto::start();
    let cfg = with_model_key(&config(&broker.url(), "keep", ""), "llm", "keep_alive", "0");
    let daemon = Daemon::start(&cfg);
    let mut c = Client::connect(broker.port);
    let r = c.call(&topic(&daemon, "llm", "generate"), json!({"prompt": "hi", "max_new_tokens": 2}).to_string());
    assert_eq!(r["result"]["usage"]["generated_tokens"], 2, "{r}");
    c.wait_message(&topic(&daemon, "llm", "state"), Duration::from_secs(10), state_is("unloaded"));
    // Explicit load and unload of a pinned model.
    let r = c.call(&topic(&daemon, "dino", "load"), "{}");
    assert_eq!(r["result"]["model"]["state"], "loaded", "{r}");
    let r = c.call(&topic(&daemon, "dino", "unload"), "{}");
    assert_eq!(r["result"]["was_loaded"], true, "{r}");
    assert_eq!(r["result"]["model"]["state"], "unloaded");
    let r = c.call(&topic(&daemon, "ghost", "load"), "{}");
    assert_eq!(r["error"]["code"], "unknown_model", "{r}");
}

#[test]
fn the_memory_budget_refuses_loads_unless_lru_eviction_is_on() {
    let broker = Mosquitto::start();
    // The files sam loads are ~1.07 MiB, llm's ~0.56 MiB, dino's ~0.62 MiB: a 2 MiB budget
    // holds sam and llm (both preloaded), not dino as well.
    let base =
        config(&broker.url(), "budget", "").replace("request_timeout_ms", "memory_budget_mb = 2\nrequest_timeout_ms");
    let base = with_model_key(&base, "llm", "preload", "true");
    let daemon = Daemon::start(&base);
    let mut c = Client::connect(broker.port);
    let r = c.call(&topic(&daemon, "dino", "load"), "{}");
    assert_eq!(r["error"]["code"], "too_large", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("memory budget of 2 MiB") && msg.contains("evict_lru"), "{msg}");
    // Nothing else was unloaded by surprise.
    let sam = c.wait_message(&topic(&daemon, "sam", "state"), Duration::from_secs(5), |_| true);
    assert_eq!(sam["state"], "loaded");
    drop(daemon);

    // With eviction, an idle non-pinned model makes room.
    let evicting = with_model_key(
        &base.replace("memory_budget_mb = 2", "memory_budget_mb = 2\nevict_lru = true"),
        "sam",
        "keep_alive",
        "\"1h\"",
    );
    let broker2 = Mosquitto::start();
    let evicting = evicting.replace(&broker.url(), &broker2.url()).replace("node = \"budget\"", "node = \"evict\"");
    let daemon = Daemon::start(&evicting);
    let mut c = Client::connect(broker2.port);
    let r = c.call(&topic(&daemon, "dino", "load"), "{}");
    assert_eq!(r["result"]["model"]["state"], "loaded", "{r}");
    c.wait_message(&topic(&daemon, "sam", "state"), Duration::from_secs(5), state_is("unloaded"));
}

#[test]
fn a_model_that_fails_to_load_is_reported_and_the_others_keep_serving() {
    let broker = Mosquitto::start();
    let broken = tempfile::tempdir().unwrap();
    std::fs::copy(fixtures().join("dinov2/config.json"), broken.path().join("config.json")).unwrap();
    std::fs::copy(fixtures().join("dinov2/preprocessor_config.json"), broken.path().join("preprocessor_config.json"))
        .unwrap();
    std::fs::write(broken.path().join("model.onnx"), b"truncated garbage").unwrap();
    let extra = format!(
        "\n[[models]]\nid = \"broken\"\npath = \"{}\"\nfamily = \"dinov2\"\npreload = true\n",
        broken.path().display()
    );
    let daemon = Daemon::start(&config(&broker.url(), "broken", &extra));
    let ready = daemon.notifications.iter().find(|n| n.contains("READY=1")).unwrap().clone();
    assert!(ready.contains("failed to load: broken"), "{ready}");
    let mut c = Client::connect(broker.port);
    let state = c.wait_message(&topic(&daemon, "broken", "state"), Duration::from_secs(5), state_is("failed"));
    assert!(state["error"].as_str().unwrap().contains("not a valid ONNX protobuf"), "{state}");
    let photo = photo_b64(&fixtures().join("photos/coffee.png"));
    let r = c.call(&topic(&daemon, "broken", "embed"), json!({"images": [photo]}).to_string());
    assert_eq!(r["error"]["code"], "not_loaded", "{r}");
    let r = c.call(&topic(&daemon, "dino", "embed"), json!({"images": [photo]}).to_string());
    assert_eq!(r["result"]["dim"], 48, "{r}");
}

#[test]
fn first_boot_without_models_is_ready_and_a_missing_folder_is_that_models_failed_state() {
    let broker = Mosquitto::start();
    let full = config(&broker.url(), "fresh", "");
    let empty = full.split("[[models]]").next().unwrap().to_string();
    // A fresh install: no models. READY, status online with no models, and the hint logged.
    let mut daemon = Daemon::start(&empty);
    let mut c = Client::connect(broker.port);
    let status = c.wait_message(&format!("edgeinfer/{}/status", daemon.node), Duration::from_secs(10), |v| {
        v["state"] == "online"
    });
    assert_eq!(status["models"].as_array().map(Vec::len), Some(0), "{status}");
    assert!(daemon.log().contains("no models configured: add a [[models]] table to"), "{}", daemon.log());
    // A model whose folder is not there yet: the reload applies, the model is failed with the
    // reason, requests to it say so, and the daemon keeps running.
    let later = tempfile::tempdir().unwrap();
    let folder = later.path().join("dinov2-small");
    daemon.rewrite_config(&format!(
        "{empty}\n[[models]]\nid = \"dino\"\npath = \"{}\"\npreload = true\n",
        folder.display()
    ));
    daemon.notifications.clear();
    daemon.signal("HUP");
    daemon.wait_notify("READY=1", Duration::from_secs(30));
    let state = c.wait_message(&topic(&daemon, "dino", "state"), Duration::from_secs(10), state_is("failed"));
    assert!(state["error"].as_str().unwrap().contains("does not exist"), "{state}");
    let photo = photo_b64(&fixtures().join("photos/coffee.png"));
    let r = c.call(&topic(&daemon, "dino", "embed"), json!({"images": [photo]}).to_string());
    assert_eq!(r["error"]["code"], "not_loaded", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("does not exist"), "{r}");
    // The folder arrives; a reload (same config) retries the failed model.
    std::os::unix::fs::symlink(fixtures().join("dinov2"), &folder).unwrap();
    daemon.notifications.clear();
    daemon.signal("HUP");
    daemon.wait_notify("READY=1", Duration::from_secs(30));
    c.wait_message(&topic(&daemon, "dino", "state"), Duration::from_secs(10), state_is("loaded"));
    let r = c.call(&topic(&daemon, "dino", "embed"), json!({"images": [photo]}).to_string());
    assert_eq!(r["result"]["dim"], 48, "{r}");
}

#[test]
fn sighup_adds_removes_and_reloads_models_and_a_failed_reload_keeps_the_old_version() {
    let broker = Mosquitto::start();
    let mut daemon = Daemon::start(&config(&broker.url(), "hup", ""));
    let mut c = Client::connect(broker.port);
    let photo = photo_b64(&fixtures().join("photos/coffee.png"));
    let r = c.call(&topic(&daemon, "dino", "load"), "{}");
    assert_eq!(r["result"]["model"]["state"], "loaded");
    // New config: llm removed, dino2 added, dino pointed at a directory whose model is broken.
    let broken = tempfile::tempdir().unwrap();
    for f in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(fixtures().join("dinov2").join(f), broken.path().join(f)).unwrap();
    }
    std::fs::write(broken.path().join("model.onnx"), b"not onnx").unwrap();
    let old = config(&broker.url(), "hup", "");
    let mut new = String::new();
    let mut skip = false;
    for block in old.split("[[models]]") {
        if block.contains("id = \"llm\"") {
            skip = true;
            continue;
        }
        if !new.is_empty() {
            new.push_str("[[models]]");
        }
        new.push_str(block);
    }
    assert!(skip);
    let new = new.replace(&fixtures().join("dinov2").display().to_string(), &broken.path().display().to_string());
    let new = format!(
        "{new}\n[[models]]\nid = \"dino2\"\npath = \"{}\"\npreload = true\n",
        fixtures().join("dinov2").display()
    );
    daemon.rewrite_config(&new);
    daemon.notifications.clear();
    daemon.signal("HUP");
    daemon.wait_notify("RELOADING=1", Duration::from_secs(10));
    daemon.wait_notify("READY=1", Duration::from_secs(30));
    c.wait_message(&topic(&daemon, "dino2", "state"), Duration::from_secs(10), state_is("loaded"));
    let dino = c.wait_message(&topic(&daemon, "dino", "state"), Duration::from_secs(10), |v| v["error"].is_string());
    assert_eq!(dino["state"], "loaded");
    assert!(dino["error"].as_str().unwrap().contains("reload failed, previous version still serving"), "{dino}");
    let r = c.call(&topic(&daemon, "dino", "embed"), json!({"images": [photo]}).to_string());
    assert_eq!(r["result"]["dim"], 48, "the old version still answers: {r}");
    let r = c.call(&topic(&daemon, "llm", "generate"), json!({"prompt": "hi"}).to_string());
    assert_eq!(r["error"]["code"], "unknown_model", "{r}");
    // An invalid file is refused as a whole: everything keeps running.
    daemon.rewrite_config("this is [not toml");
    daemon.signal("HUP");
    daemon.wait_notify("READY=1", Duration::from_secs(10));
    let r = c.call(&topic(&daemon, "dino2", "embed"), json!({"images": [photo]}).to_string());
    assert_eq!(r["result"]["dim"], 48, "{r}");
    assert!(daemon.log().contains("the new configuration is invalid; keeping the current one"));
}

#[test]
fn sigterm_finishes_in_flight_work_says_offline_and_exits_0() {
    let broker = Mosquitto::start();
    let mut daemon = Daemon::start(&config(&broker.url(), "term", ""));
    let mut c = Client::connect(broker.port);
    let _ = c.call(&topic(&daemon, "llm", "load"), "{}");
    let corr = c.send(
        &topic(&daemon, "llm", "generate"),
        json!({"prompt": "Once", "max_new_tokens": 200, "ignore_eos": true}).to_string(),
        &[],
    );
    // It is running once its first delta arrives; then SIGTERM.
    let (first, _) = c.next_reply(Duration::from_secs(30));
    assert_eq!(first, corr);
    daemon.signal("TERM");
    let replies = c.replies(std::slice::from_ref(&corr), Duration::from_secs(30));
    let done = &replies.last().unwrap().1;
    assert_eq!(done["result"]["usage"]["generated_tokens"], 200, "the in-flight request finished: {done}");
    let status = c.wait_message("edgeinfer/term/status", Duration::from_secs(10), state_is("offline"));
    assert_eq!(status["node"], "term");
    let exit = daemon.wait_exit("edgeinferd to exit", Duration::from_secs(30));
    assert!(exit.success(), "{exit}");
    daemon.wait_notify("STOPPING=1", Duration::from_secs(1));
}

#[test]
fn the_watchdog_is_pinged_at_half_its_interval() {
    let broker = Mosquitto::start();
    let mut daemon = Daemon::spawn(&config(&broker.url(), "dog", ""), &[("WATCHDOG_USEC", "400000")]);
    daemon.wait_notify("READY=1", Duration::from_secs(60));
    daemon.notifications.clear();
    let started = Instant::now();
    for _ in 0..5 {
        daemon.notifications.clear();
        daemon.wait_notify("WATCHDOG=1", Duration::from_secs(2));
    }
    let elapsed = started.elapsed();
    // 5 pings at a 200 ms period: about a second, certainly under the 2 s a 400 ms period gives.
    assert!(elapsed < Duration::from_millis(1800), "{elapsed:?}");
}

#[test]
fn after_a_broker_restart_the_daemon_reconnects_republishes_and_answers_queued_requests() {
    let mut broker = Mosquitto::start_with(true);
    let cfg = config(&broker.url(), "flaky", "")
        .replace("stats_interval_s = 1", "stats_interval_s = 1\npersistent_session = true");
    let daemon = Daemon::start(&cfg);
    let port = broker.port;
    // A persistent test client (QoS 1, clean_start = false) so its subscription survives too.
    let mut c = Client::connect_with(port, true);
    c.wait_message("edgeinfer/flaky/status", Duration::from_secs(10), state_is("online"));
    broker.stop();
    broker.restart();
    // Sent as soon as the broker is back, typically before the daemon has reconnected (it backs
    // off): the broker holds it for the daemon's persistent session.
    let request =
        json!({"prompt": "hi", "max_new_tokens": 3, "stream": false, "reply_to": c.reply_topic, "id": "during-outage"})
            .to_string();
    let status = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            &topic(&daemon, "llm", "generate"),
            "-m",
            &request,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let corr = String::new();
    let replies = c.replies(std::slice::from_ref(&corr), Duration::from_secs(60));
    let answer = &replies.last().unwrap().1;
    assert_eq!(answer["id"], "during-outage");
    assert_eq!(answer["result"]["usage"]["generated_tokens"], 3, "{replies:?}");
    assert!(daemon.log().contains("MQTT connection lost ("));
    let online = daemon.log().matches("connected to the MQTT broker").count();
    assert!(online >= 2, "reconnected and republished its status");
    let status = c.wait_message("edgeinfer/flaky/status", Duration::from_secs(10), state_is("online"));
    assert_eq!(status["node"], "flaky");
}

#[test]
fn the_edgeinfer_client_talks_to_the_daemon() {
    let broker = Mosquitto::start();
    let _daemon = Daemon::start(&config(&broker.url(), "cli", ""));
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_edgeinfer")).arg("--mqtt").arg(broker.url()).args(args).output().unwrap()
    };
    let out = cli(&["models"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("sam") && text.contains("loaded") && text.contains("llm"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("mask.png");
    let photo = fixtures().join("sam/photo.png");
    let out = cli(&[
        "segment",
        "-m",
        "sam",
        photo.to_str().unwrap(),
        "--point",
        "100,60",
        "--png",
        png.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["masks"].as_array().unwrap().len(), 3);
    assert_eq!(image::open(&png).unwrap().width(), 170);
    // Streaming generation: the same tokens as HF greedy, printed as they come.
    let reference: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("llama/golden/reference.json")).unwrap()).unwrap();
    let case = &reference["generate"][0];
    let out = cli(&["generate", "-m", "llm", case["prompt"].as_str().unwrap(), "--max-new-tokens", "40", "--json"]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["token_ids"], case["greedy_new_ids"]);
    // The same answer as `edgeinfer local`.
    let local = Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
        .args(["local", "--model"])
        .arg(fixtures().join("llama"))
        .args(["generate", case["prompt"].as_str().unwrap(), "--max-new-tokens", "40", "--json"])
        .output()
        .unwrap();
    let l: Value = serde_json::from_slice(&local.stdout).unwrap();
    assert_eq!(l["text"], r["text"]);
    // The prompt from stdin (`-`), and the connection flags after the command.
    let piped = |args: &[&str], input: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
            .args(args)
            .args(["--mqtt", &broker.url()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out =
        piped(&["generate", "-m", "llm", "-", "--max-new-tokens", "40", "--json"], case["prompt"].as_str().unwrap());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["token_ids"], case["greedy_new_ids"]);
    // chat: one answer per line, the conversation kept (the second turn's prompt holds the first:
    // with the same second message alone the answer would be that of a fresh conversation).
    let chat = |input: &str| {
        let out = piped(&["chat", "-m", "llm", "--max-new-tokens", "6", "--temperature", "0"], input);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (first, second, both) = (chat("hello\n"), chat("again\n"), chat("hello\nagain\n"));
    let rest = both.strip_prefix(&first).unwrap_or_else(|| panic!("{both:?} does not start with {first:?}"));
    assert!(!rest.is_empty(), "no second answer: {both:?}");
    assert_ne!(rest, second, "the second turn did not see the first");
    // A typo in a choice gets the list and a suggestion.
    let out = cli(&["embed", "-m", "dino", photo.to_str().unwrap(), "--pooling", "cls-mean"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("possible values: cls, mean, pooler, cls_mean") && err.contains("'cls_mean'"), "{err}");
    // Errors: exit code 2 with the API code.
    let out = cli(&["segment", "-m", "sam", photo.to_str().unwrap(), "--point", "999,1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad_input: point (999, 1) is outside"));
    let out = cli(&["embed", "-m", "nope", photo.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_model"));
}

/// `systemctl reload` runs `edgeinfer reload --pid $MAINPID` (Type=notify-reload needs systemd
/// ≥ 253): it returns only once the reload is applied — a model the new configuration adds is
/// loaded when it exits — and exits non-zero, saying why, when the new configuration is refused.
#[test]
fn edgeinfer_reload_returns_once_the_reload_is_applied() {
    let broker = Mosquitto::start();
    let runtime_dir = tempfile::tempdir().unwrap();
    let runtime = runtime_dir.path().to_str().unwrap();
    let cfg = config(&broker.url(), "sync", "");
    let daemon = Daemon::start_with_env(&cfg, &[("RUNTIME_DIRECTORY", runtime)]);
    let mut c = Client::connect(broker.port);
    let reload = || {
        Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
            .args(["reload", "--pid", &daemon.child.id().to_string(), "--wait", "60"])
            .env("RUNTIME_DIRECTORY", runtime)
            .output()
            .unwrap()
    };
    daemon.rewrite_config(&format!(
        "{cfg}\n[[models]]\nid = \"late\"\npath = \"{}\"\npreload = true\n",
        fixtures().join("dinov2").display()
    ));
    let out = reload();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("reloaded: "), "{out:?}");
    // Asked right after it returned: no waiting here.
    let list = c.call(&format!("edgeinfer/{}/list", daemon.node), "{}");
    let models = list["result"]["models"].as_array().unwrap_or_else(|| panic!("{list}"));
    let late = models.iter().find(|m| m["id"] == "late").cloned();
    assert_eq!(late.unwrap()["state"], "loaded", "{list}");

    daemon.rewrite_config("this is [not toml");
    let out = reload();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("the new configuration is invalid"), "{out:?}");
    // A second reload of a good file counts from where the failed one left off.
    daemon.rewrite_config(&cfg);
    assert!(reload().status.success());
}
