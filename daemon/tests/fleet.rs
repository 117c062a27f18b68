//! Fleets over one real Mosquitto (docs/fleet.md): several `edgeinferd` processes in one
//! `[mqtt] shared_group` take the requests published once on `edgeinfer/fleet/models/<id>/<task>`
//! through an MQTT 5 shared subscription. Checked here: the work spreads over the nodes and each
//! answer names its node; a node killed with SIGKILL in the middle of a stream loses at most the
//! requests it had taken, nothing is answered twice, and everything published after the broker
//! saw it die is answered; a restarted node takes work again; a node whose queue is full takes
//! none (it passes what the broker hands it back to the group).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const FLEET_GENERATE: &str = "edgeinfer/fleet/models/llm/generate";

/// One fleet member serving the tiny LLaMA as `llm` (or `llm_path`), its state under `state`.
fn member_config(broker: &str, node: &str, state: &Path, llm_model: &str) -> String {
    format!(
        r#"[daemon]
node = "{node}"
state_dir = "{state}"
request_timeout_ms = 20000

[mqtt]
url = "{broker}"
stats_interval_s = 0
shared_group = "line"

{llm_model}
"#,
        state = state.join(node).display(),
    )
}

fn tiny_llm() -> String {
    let path = fixtures().join("llama");
    format!(
        "[[models]]\nid = \"llm\"\npath = \"{}\"\nkeep_alive = -1\npreload = true\nqueue_depth = 16\n",
        path.display()
    )
}

/// Waits until `node`'s retained status says it holds its fleet subscription.
fn wait_joined(port: u16, node: &str) {
    Client::connect(port).wait_message(&format!("edgeinfer/{node}/status"), Duration::from_secs(60), |v| {
        v["state"] == "online" && v["transports"]["fleet"] == "connected"
    });
}

fn generate(tokens: u32) -> String {
    json!({"prompt": "Once upon a time", "max_new_tokens": tokens, "ignore_eos": true, "stream": false}).to_string()
}

/// Final answers per correlation, and how many final answers each got.
fn finals(replies: &[(String, Value)]) -> (BTreeMap<String, Value>, BTreeMap<String, usize>) {
    let (mut last, mut count) = (BTreeMap::new(), BTreeMap::new());
    for (corr, v) in replies.iter().filter(|(_, v)| v["done"] == true) {
        last.insert(corr.clone(), v.clone());
        *count.entry(corr.clone()).or_insert(0) += 1;
    }
    (last, count)
}

fn served_by(answers: &BTreeMap<String, Value>) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for v in answers.values() {
        *by.entry(v["node"].as_str().unwrap_or("?").to_string()).or_insert(0) += 1;
    }
    by
}

#[test]
fn fleet_spreads_work_survives_a_kill_and_takes_a_restarted_node_back() {
    let broker = Mosquitto::start();
    let state = tempfile::tempdir().unwrap();
    let configs: Vec<String> =
        ["a", "b", "c"].iter().map(|n| member_config(&broker.url(), n, state.path(), &tiny_llm())).collect();
    let mut nodes: Vec<Daemon> = configs.iter().map(|c| Daemon::start(c)).collect();
    for n in ["a", "b", "c"] {
        wait_joined(broker.port, n);
    }
    let mut c = Client::connect(broker.port);

    // 1. Spread: 30 requests published once each, on the fleet topic.
    let corrs: Vec<String> = (0..30).map(|_| c.send(FLEET_GENERATE, generate(2), &[])).collect();
    let (answers, counts) = finals(&c.replies(&corrs, Duration::from_secs(60)));
    assert!(counts.values().all(|&n| n == 1), "answered more than once: {counts:?}");
    assert!(answers.values().all(|v| v["result"]["kind"] == "generation"), "{answers:?}");
    let spread = served_by(&answers);
    eprintln!("fleet spread over 3 nodes, 30 requests: {spread:?}");
    for n in ["a", "b", "c"] {
        assert!(spread.get(n).copied().unwrap_or(0) >= 5, "node {n} served too few: {spread:?}");
    }

    // 2. kill -9 of node b in the middle of a stream.
    let before: Vec<String> = (0..15).map(|_| c.send(FLEET_GENERATE, generate(40), &[])).collect();
    let first = c.next_reply(Duration::from_secs(30)); // the requests are out
    nodes[1].child.kill().unwrap();
    nodes[1].child.wait().unwrap();
    Client::connect(broker.port)
        .wait_message("edgeinfer/b/status", Duration::from_secs(30), |v| v["state"] == "offline");
    let after: Vec<String> = (0..15).map(|_| c.send(FLEET_GENERATE, generate(40), &[])).collect();
    // Everything sent after the death was seen is answered (bounded generously: a loaded machine);
    // then a short wait for what b had taken, which never comes, and for any duplicate.
    let mut replies = c.replies(&after, Duration::from_secs(60));
    let (late, _) = c.collect(&before, Duration::from_secs(3));
    replies.extend(late);
    replies.insert(0, first);
    let (answers, counts) = finals(&replies);
    assert!(counts.values().all(|&n| n == 1), "answered more than once: {counts:?}");
    for corr in &after {
        let a = answers.get(corr).unwrap_or_else(|| panic!("{corr}, sent after b's death was seen, is unanswered"));
        assert_eq!(a["result"]["kind"], "generation", "{a}");
        assert_ne!(a["node"], "b", "{a}");
    }
    let lost: Vec<&String> = before.iter().filter(|c| !answers.contains_key(*c)).collect();
    eprintln!(
        "kill -9 of b: {} of 15 requests sent before the kill were lost (b had taken them), {} of 15 after it all answered; served {:?}",
        lost.len(),
        after.len(),
        served_by(&answers)
    );
    assert!(lost.len() <= 5, "more lost than b's round-robin share: {lost:?}");

    // 3. b restarts and takes work again.
    nodes[1] = Daemon::start(&configs[1]);
    wait_joined(broker.port, "b");
    let corrs: Vec<String> = (0..12).map(|_| c.send(FLEET_GENERATE, generate(2), &[])).collect();
    let (answers, counts) = finals(&c.replies(&corrs, Duration::from_secs(60)));
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    let spread = served_by(&answers);
    eprintln!("after b's restart, 12 requests: {spread:?}");
    assert!(spread.get("b").copied().unwrap_or(0) >= 2, "the restarted node took no work: {spread:?}");

    // Node topics still work next to the fleet, and requests for one node's state are refused on
    // the fleet topic.
    let r = c.call("edgeinfer/fleet/models/llm/load", "{}");
    assert_eq!(r["error"]["code"], "bad_input", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("acts on one node"), "{r}");
    let r = c.call("edgeinfer/c/models/llm/generate", generate(2));
    assert_eq!((r["node"].as_str(), r["result"]["kind"].as_str()), (Some("c"), Some("generation")), "{r}");

    // The CLI: `nodes` lists the three, `--fleet` sends to the shared queue.
    let url = broker.url();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
            .arg("--mqtt")
            .arg(&url)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, table, err) = cli(&["nodes"]);
    assert!(ok, "{err}");
    for n in ["a", "b", "c"] {
        let line =
            table.lines().find(|l| l.starts_with(&format!("{n} "))).unwrap_or_else(|| panic!("{n} missing:\n{table}"));
        assert!(line.contains("online") && line.contains("llm:loaded"), "{table}");
    }
    let (ok, json, err) = cli(&["nodes", "--json"]);
    assert!(ok, "{err}");
    let listed: Vec<Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(listed.len(), 3, "{json}");
    let (ok, out, err) = cli(&["--fleet", "generate", "-m", "llm", "--max-new-tokens", "3", "Once upon"]);
    assert!(ok && !out.trim().is_empty(), "{out}{err}");
    let (ok, _, err) = cli(&["--fleet", "models"]);
    assert!(!ok && err.contains("not of the fleet"), "{err}");
    for mut n in nodes {
        assert!(n.terminate().success(), "{}", n.log());
    }
}

/// A node whose model cannot take another request passes the fleet's requests for it back to
/// the group: here node c's `llm` is stuck loading with its waiting places taken, so every fleet
/// request it ran would be `busy`. None is: the others serve them all.
#[test]
fn a_node_with_a_full_queue_takes_no_fleet_work() {
    let broker = Mosquitto::start();
    let state = tempfile::tempdir().unwrap();
    let stuck = hung_model(state.path(), "llm", 60000);
    // Round-robin can hand a passed-on copy back to c; enough hops that one always reaches a or b.
    let hops = |cfg: String| cfg.replace("shared_group = \"line\"", "shared_group = \"line\"\nshared_max_hops = 10");
    let mut nodes = [
        Daemon::start(&hops(member_config(&broker.url(), "a", state.path(), &tiny_llm()))),
        Daemon::start(&hops(member_config(&broker.url(), "b", state.path(), &tiny_llm()))),
        Daemon::start(&hops(member_config(&broker.url(), "c", state.path(), &stuck))),
    ];
    for n in ["a", "b", "c"] {
        wait_joined(broker.port, n);
    }
    let mut c = Client::connect(broker.port);
    // Take c's two places (the one running and queue_depth 1): these wait for a load that
    // never ends.
    let embed = json!({"images": [photo_b64(&fixtures().join("photos/coffee.png"))]}).to_string();
    // Three requests (handled concurrently, in any order): two take the places, the third is
    // refused, and then c is full.
    let three: Vec<String> = (0..3).map(|_| c.send("edgeinfer/c/models/llm/embed", embed.clone(), &[])).collect();
    let (corr, refused) = c.next_reply(Duration::from_secs(30));
    assert!(three.contains(&corr) && refused["error"]["code"] == "busy", "{refused}");
    let corrs: Vec<String> = (0..24).map(|_| c.send(FLEET_GENERATE, generate(2), &[])).collect();
    let (answers, counts) = finals(&c.replies(&corrs, Duration::from_secs(60)));
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    let busy: Vec<&Value> = answers.values().filter(|v| v["error"]["code"] == "busy").collect();
    assert!(busy.is_empty(), "a full node answered fleet work busy: {busy:?}");
    let spread = served_by(&answers);
    eprintln!("with c full, 24 requests: {spread:?}");
    assert_eq!(spread.get("c"), None, "{spread:?}");
    assert_eq!(spread.values().sum::<usize>(), 24, "{answers:?}");
    for n in &mut nodes[..2] {
        assert!(n.terminate().success(), "{}", n.log());
    }
}
