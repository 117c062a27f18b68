//! The daemon's log under a real `systemd-journald`: journald runs in a private mount namespace
//! with its own `/run` (root and `unshare`; the test command installs Debian's `systemd` for the
//! journald binary), edgeinferd runs with its stdout/stderr on the journal's stream socket and
//! `JOURNAL_STREAM` set, as a unit's would be, and `journalctl -o json` reads back what journald
//! stored. A failed request's entry carries the fields of its span (`MODEL=`, `TASK=`) and its own
//! (`CODE=`), and `--log` directives filter by target there as on stderr.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const JOURNALD: &str = "/lib/systemd/systemd-journald";

/// Runs inside the namespace: a tmpfs /run, journald, then the daemon under systemd-cat; prints
/// `started`, waits for a line on stdin, prints the daemon's entries as JSON, stops both.
const SCRIPT: &str = r#"
set -eu
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/journal /run/log/journal
"$JOURNALD" >"$WORK/journald.log" 2>&1 &
journald=$!
for _ in $(seq 200); do
  [ -S /run/systemd/journal/socket ] && [ -S /run/systemd/journal/stdout ] && break
  sleep 0.05
done
[ -S /run/systemd/journal/stdout ] || { echo "journald did not start: $(cat "$WORK/journald.log")" >&2; exit 1; }
systemd-cat -t edgeinferd-stderr sh -c 'JOURNAL_STREAM=$(stat -L -c "%d:%i" /proc/self/fd/2) exec "$0" "$@"' \
  "$DAEMON" --config "$WORK/edgeinferd.toml" --log "$FILTER" &
daemon=$!
echo started
read -r _
kill -TERM "$daemon"; wait "$daemon" || true
journalctl -D /run/log/journal -o json --no-pager
kill "$journald"; wait "$journald" || true
"#;

#[test]
fn journald_entries_keep_the_request_fields_and_the_filter() {
    assert!(
        std::path::Path::new(JOURNALD).exists(),
        "{JOURNALD} is missing: install Debian's systemd package (scripts/test.sh does)"
    );
    let broker = Mosquitto::start();
    let work = tempfile::tempdir().unwrap();
    let node = "journal";
    std::fs::write(work.path().join("edgeinferd.toml"), config(&broker.url(), node, "")).unwrap();
    let mut ns = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", SCRIPT])
        .env("JOURNALD", JOURNALD)
        .env("WORK", work.path())
        .env("DAEMON", env!("CARGO_BIN_EXE_edgeinferd"))
        // Our request events, not the rest (the start-up line is info from the binary's target).
        .env("FILTER", "warn,edgeinfer_daemon::server::worker=info,edgeinfer_daemon::server::registry=info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) must be installed; the test needs root for a mount namespace");
    let mut out = BufReader::new(ns.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "started", "the namespace script failed (is this root?)");

    let mut c = Client::connect(broker.port);
    c.wait_message(&format!("edgeinfer/{node}/status"), Duration::from_secs(60), |v| v["state"] == "online");
    let photo = photo_b64(&fixtures().join("sam/photo.png"));
    let r = c.call(
        &format!("edgeinfer/{node}/models/sam/segment"),
        json!({"image": photo, "points": [{"x": 5000, "y": 1}]}).to_string(),
    );
    assert_eq!(r["error"]["code"], "bad_input", "{r}");

    writeln!(ns.stdin.take().unwrap()).unwrap();
    let mut entries = Vec::new();
    for line in out.lines() {
        entries.push(serde_json::from_str::<Value>(&line.unwrap()).unwrap());
    }
    assert!(ns.wait().unwrap().success());
    let ours: Vec<&Value> = entries.iter().filter(|e| e["SYSLOG_IDENTIFIER"] == "edgeinferd").collect();
    let failed = ours
        .iter()
        .find(|e| e["MESSAGE"] == "request failed")
        .unwrap_or_else(|| panic!("no 'request failed' entry among {} entries: {ours:#?}", ours.len()));
    assert_eq!(failed["MODEL"], "sam", "{failed:#}");
    assert_eq!(failed["TASK"], "segment", "{failed:#}");
    assert_eq!(failed["CODE"], "bad_input", "{failed:#}");
    assert!(failed["ERROR"].as_str().unwrap().contains("outside"), "{failed:#}");
    assert_eq!(failed["TARGET"], "edgeinfer_daemon::server::worker", "{failed:#}");
    // The filter's directives hold: nothing at info from other targets (the start-up line).
    assert!(!ours.iter().any(|e| e["MESSAGE"] == "edgeinferd starting"), "{ours:#?}");
    // Nothing went to the stream as plain text: every line is a structured entry.
    assert!(!entries.iter().any(|e| e["SYSLOG_IDENTIFIER"] == "edgeinferd-stderr"), "{entries:#?}");
}
