//! What the shipped systemd unit asks of the daemon, checked on the real binary: it stays within
//! `MemoryDenyWriteExecute=yes` (no anonymous executable or writable+executable mappings after
//! inference on tract and on ONNX Runtime), and the unit file itself verifies and scores within
//! the exposure limit (`systemd/check-unit.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use support::*;

/// Mappings that W^X (MemoryDenyWriteExecute) forbids: writable and executable at once, or
/// executable without a file behind them (code generated at run time).
fn wx_violations(pid: u32) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines()
        .filter(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let perms = fields.get(1).copied().unwrap_or("");
            let path = fields.get(5).copied().unwrap_or("");
            let exec = perms.contains('x');
            let special = matches!(path, "[vdso]" | "[vsyscall]" | "[uprobes]");
            (exec && perms.contains('w')) || (exec && !special && (path.is_empty() || path.starts_with("[anon")))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn inference_on_both_backends_needs_no_writable_executable_memory() {
    let bus = DbusBus::start();
    let mut cfg = dbus_config(&bus.address, None, "wx");
    let ort_available = std::env::var("ORT_DYLIB_PATH").is_ok();
    if ort_available {
        cfg.push_str(&format!(
            "\n[[models]]\nid = \"dino-ort\"\npath = \"{}\"\nbackend = \"ort\"\n",
            fixtures().join("dinov2").display()
        ));
    } else {
        assert!(
            std::env::var("EDGEINFER_SKIP_ORT").is_ok(),
            "ORT_DYLIB_PATH is not set: run through scripts/test.sh, or set EDGEINFER_SKIP_ORT=1 to skip ONNX Runtime"
        );
    }
    let daemon = Daemon::start(&cfg);
    let photo = fixtures().join("photos/chelsea.png");
    let mut models = vec!["sam", "dino", "llm"];
    if ort_available {
        models.push("dino-ort");
    }
    for model in models {
        let args: Vec<String> = match model {
            "sam" => vec![
                "segment".into(),
                "-m".into(),
                model.into(),
                photo.display().to_string(),
                "--point".into(),
                "200,150".into(),
            ],
            "llm" => vec![
                "generate".into(),
                "-m".into(),
                model.into(),
                "Hello".into(),
                "--max-new-tokens".into(),
                "4".into(),
            ],
            _ => vec!["embed".into(), "-m".into(), model.into(), photo.display().to_string()],
        };
        let out =
            Command::new(env!("CARGO_BIN_EXE_edgeinfer")).arg("--bus").arg(&bus.address).args(&args).output().unwrap();
        assert!(out.status.success(), "{model}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let bad = wx_violations(daemon.child.id());
    assert!(bad.is_empty(), "mappings MemoryDenyWriteExecute would forbid:\n{}", bad.join("\n"));
}

#[test]
fn the_shipped_unit_verifies_and_scores_within_the_exposure_limit() {
    let out = Command::new("bash")
        .arg(repo_file("systemd/check-unit.sh"))
        .arg(env!("CARGO_BIN_EXE_edgeinferd"))
        .output()
        .expect("systemd/check-unit.sh (needs systemd-analyze: Debian package systemd)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("security exposure of edgeinferd.service: "), "{text}");
    eprintln!("{text}");
}
