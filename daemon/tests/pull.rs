//! `edgeinfer pull` against a local stand-in for the Hugging Face Hub (`support/hub_server.py`:
//! the API routes and headers the Hub answers with; the network is not reachable here), with
//! huggingface_hub itself (the `.venv-hub` the test command installs) as the independent party:
//! it reads the cache `pull` writes, and writes a cache `hf:` paths then read. The repositories
//! are the tiny fixtures in the onnx-community layout (configs at the top, graphs under `onnx/`,
//! one file per precision variant), as users download them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;
use support::fixtures;

const DINO: &str = "onnx-community/tiny-dinov2";
const LLAMA: &str = "edgeinfer-tests/tiny-llama";

/// The hub stand-in on a free port (killed on drop).
struct Hub {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Hub {
    fn start(extra: &[&str]) -> Hub {
        let dir = tempfile::tempdir().unwrap();
        let dino = dir.path().join("dino");
        let llama = dir.path().join("llama");
        std::fs::create_dir_all(dino.join("onnx")).unwrap();
        std::fs::create_dir_all(llama.join("onnx")).unwrap();
        let f = fixtures();
        for name in ["config.json", "preprocessor_config.json"] {
            std::fs::copy(f.join("dinov2").join(name), dino.join(name)).unwrap();
        }
        for variant in ["model", "model_quantized", "model_fp16"] {
            std::fs::copy(f.join(format!("dinov2/{variant}.onnx")), dino.join(format!("onnx/{variant}.onnx"))).unwrap();
        }
        std::fs::write(dino.join("README.md"), "# tiny DINOv2\n").unwrap();
        std::fs::write(dino.join("model.safetensors"), vec![7u8; 50_000]).unwrap();
        for name in ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(f.join("llama").join(name), llama.join(name)).unwrap();
        }
        // The q4 graph keeps its weights in model_q4.onnx_data, as onnx-community's larger graphs do.
        for file in ["model.onnx", "model_q4.onnx", "model_q4.onnx_data"] {
            std::fs::copy(f.join("llama").join(file), llama.join("onnx").join(file)).unwrap();
        }
        let log = dir.path().join("requests.jsonl");
        let mut child = Command::new("python3")
            .arg(support::repo_file("daemon/tests/support/hub_server.py"))
            .args(["--repo", &format!("{DINO}={}", dino.display())])
            .args(["--repo", &format!("{LLAMA}={}", llama.display())])
            .args(["--log", log.to_str().unwrap()])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().strip_prefix("PORT ").unwrap_or_else(|| panic!("hub server said {line:?}"));
        Hub { child, url: format!("http://127.0.0.1:{port}"), log, _dir: dir }
    }

    /// The requests served so far.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `edgeinfer` with a private cache and the hub's endpoint (HF_* from the caller's environment
/// removed).
fn edgeinfer(cache: &Path, hub: Option<&Hub>, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgeinfer"));
    for var in ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HOME", "HF_HUB_OFFLINE", "HF_ENDPOINT"] {
        cmd.env_remove(var);
    }
    cmd.env("HF_HUB_CACHE", cache).env("HF_HOME", cache.join("home"));
    cmd.env("HF_ENDPOINT", hub.map(|h| h.url.as_str()).unwrap_or("http://127.0.0.1:9"));
    cmd.envs(env.iter().copied()).args(args).output().unwrap()
}

fn ok(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn failed(out: &Output) -> String {
    assert_ne!(out.status.code(), Some(0), "succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// The huggingface_hub Python the test command installs.
fn hf_python() -> String {
    std::env::var("EDGEINFER_TEST_HUB_PYTHON")
        .unwrap_or_else(|_| panic!("EDGEINFER_TEST_HUB_PYTHON is not set: run the README's test command"))
}

fn python(code: &str, env: &[(&str, &str)]) -> String {
    let out = Command::new(hf_python()).arg("-c").arg(code).envs(env.iter().copied()).output().unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn pull_fetches_one_variant_into_the_hf_cache_and_hf_paths_load_it() {
    let hub = Hub::start(&[]);
    let cache = tempfile::tempdir().unwrap();
    let out = edgeinfer(cache.path(), Some(&hub), &[], &["pull", DINO, "--variant", "quantized"]);
    let snapshot = PathBuf::from(ok(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hf:onnx-community/tiny-dinov2") && stderr.contains("variant = \"quantized\""), "{stderr}");
    assert!(snapshot.starts_with(cache.path().join("models--onnx-community--tiny-dinov2/snapshots")), "{snapshot:?}");
    // Only that variant's graph and the small files; not the other graphs, not the safetensors.
    assert_eq!(
        files_under(&snapshot),
        ["README.md", "config.json", "onnx/model_quantized.onnx", "preprocessor_config.json"]
    );
    let fetched: Vec<String> = hub.requests().iter().map(|r| r["path"].as_str().unwrap().to_string()).collect();
    assert!(
        !fetched.iter().any(|p| p.contains("model.onnx") || p.contains("fp16") || p.contains("safetensors")),
        "{fetched:?}"
    );

    // huggingface_hub reads the cache as its own.
    let env = [("HF_HUB_CACHE", cache.path().to_str().unwrap()), ("HF_HUB_OFFLINE", "1")];
    let seen = python(
        &format!(
            "from huggingface_hub import scan_cache_dir, try_to_load_from_cache\n\
             info = scan_cache_dir()\n\
             repo = next(r for r in info.repos if r.repo_id == '{DINO}')\n\
             rev = next(iter(repo.revisions))\n\
             print(sorted(f.file_name for f in rev.files), sorted(repo.refs), info.warnings)\n\
             print(try_to_load_from_cache('{DINO}', 'onnx/model_quantized.onnx'))"
        ),
        &env,
    );
    assert!(
        seen.starts_with(
            "['README.md', 'config.json', 'model_quantized.onnx', 'preprocessor_config.json'] ['main'] []"
        ),
        "{seen}"
    );
    assert!(seen.ends_with("onnx/model_quantized.onnx"), "{seen}");

    // `hf:` loads it without the network (the endpoint points nowhere).
    let photo = fixtures().join("photos/chelsea.png");
    let hf = format!("hf:{DINO}");
    let embedded = edgeinfer(
        cache.path(),
        None,
        &[],
        &["local", "-m", &hf, "--variant", "quantized", "embed", photo.to_str().unwrap(), "--json"],
    );
    let answer: Value = serde_json::from_str(&ok(&embedded)).unwrap();
    assert_eq!(answer["embeddings"][0].as_array().unwrap().len(), 48, "{answer}");
    // A variant the cache does not hold names the command that fetches it.
    let missing = edgeinfer(cache.path(), None, &[], &["local", "-m", "hf:someone/else", "embed", "x.png"]);
    assert!(failed(&missing).contains("edgeinfer pull someone/else"));

    // A second pull of the same variant downloads nothing.
    let before = hub.requests().len();
    ok(&edgeinfer(cache.path(), Some(&hub), &[], &["pull", DINO, "--variant", "quantized"]));
    let again: Vec<Value> = hub.requests()[before..].to_vec();
    assert!(again.iter().all(|r| r["path"].as_str().unwrap().starts_with("/api/")), "{again:?}");

    // --out makes a plain folder (hard links to the blobs) that loads like any model folder.
    let out_dir = tempfile::tempdir().unwrap();
    let plain = out_dir.path().join("dino");
    let printed = ok(&edgeinfer(
        cache.path(),
        Some(&hub),
        &[],
        &["pull", DINO, "--variant", "quantized", "--out", plain.to_str().unwrap()],
    ));
    assert_eq!(PathBuf::from(printed), plain);
    assert_eq!(files_under(&plain), files_under(&snapshot));
    assert!(!std::fs::symlink_metadata(plain.join("onnx/model_quantized.onnx")).unwrap().file_type().is_symlink());

    // A variant the repository lacks lists the ones it has.
    let e = failed(&edgeinfer(cache.path(), Some(&hub), &[], &["pull", DINO, "--variant", "q4"]));
    assert!(e.contains("no q4 graph") && e.contains("fp16, fp32, quantized"), "{e}");
}

#[test]
fn interrupted_downloads_resume_and_bad_bytes_are_refused() {
    let hub = Hub::start(&["--fault", "drop:onnx/model_q4.onnx_data:100000"]);
    let cache = tempfile::tempdir().unwrap();
    let out = edgeinfer(cache.path(), Some(&hub), &[], &["pull", LLAMA, "--variant", "q4"]);
    let snapshot = PathBuf::from(ok(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("resuming at byte 100000"), "{stderr}");
    // The retry asked for the rest only, and got it.
    let cdn: Vec<Value> =
        hub.requests().into_iter().filter(|r| r["path"].as_str().unwrap().starts_with("/cdn/")).collect();
    assert!(cdn.iter().any(|r| r["range"] == "bytes=100000-" && r["status"] == 206), "{cdn:?}");
    for file in ["model_q4.onnx", "model_q4.onnx_data"] {
        let pulled = std::fs::read(snapshot.join("onnx").join(file)).unwrap();
        assert_eq!(pulled, std::fs::read(fixtures().join("llama").join(file)).unwrap(), "{file}");
    }
    // It generates.
    let hf = format!("hf:{LLAMA}");
    let text = edgeinfer(
        cache.path(),
        None,
        &[],
        &["local", "-m", &hf, "--variant", "q4", "generate", "Once upon a time", "--max-new-tokens", "4"],
    );
    ok(&text);

    // Bytes that do not match the Hub's sha256 never become a blob.
    let bad = Hub::start(&["--fault", "corrupt:onnx/model.onnx"]);
    let cache = tempfile::tempdir().unwrap();
    let e = failed(&edgeinfer(cache.path(), Some(&bad), &[], &["pull", DINO]));
    assert!(e.contains("onnx/model.onnx") && e.contains("sha256") && e.contains("differs from the Hub's"), "{e}");
    let repo = cache.path().join("models--onnx-community--tiny-dinov2");
    let blobs = files_under(&repo.join("blobs"));
    assert!(!blobs.iter().any(|b| b.ends_with(".incomplete")), "{blobs:?}");
    assert!(files_under(&repo.join("snapshots")).iter().all(|f| !f.ends_with("model.onnx")));
}

#[test]
fn tokens_reach_only_the_hub_and_offline_mode_uses_the_cache() {
    let hub = Hub::start(&["--token", "hf_test_secret"]);
    let cache = tempfile::tempdir().unwrap();
    let e = failed(&edgeinfer(cache.path(), Some(&hub), &[], &["pull", LLAMA]));
    assert!(e.contains("access denied (HTTP 401)") && e.contains("HF_TOKEN is not set"), "{e}");
    // The token from $HF_HOME/token, as huggingface-cli login leaves it.
    std::fs::create_dir_all(cache.path().join("home")).unwrap();
    std::fs::write(cache.path().join("home/token"), "hf_test_secret\n").unwrap();
    ok(&edgeinfer(cache.path(), Some(&hub), &[], &["pull", LLAMA]));
    let requests = hub.requests();
    assert!(requests.iter().any(|r| r["path"].as_str().unwrap().starts_with("/api/") && r["auth"] == true));
    let cdn: Vec<&Value> = requests.iter().filter(|r| r["path"].as_str().unwrap().starts_with("/cdn/")).collect();
    assert!(!cdn.is_empty() && cdn.iter().all(|r| r["auth"] == false), "the token followed the redirect: {cdn:?}");

    // Offline: the cache answers, the server is never asked.
    drop(hub);
    let offline = [("HF_HUB_OFFLINE", "1")];
    let snapshot = ok(&edgeinfer(cache.path(), None, &offline, &["pull", LLAMA]));
    assert!(Path::new(&snapshot).join("onnx/model.onnx").is_file());
    let e = failed(&edgeinfer(cache.path(), None, &offline, &["pull", LLAMA, "--variant", "q4"]));
    assert!(e.contains("HF_HUB_OFFLINE") && e.contains("no q4 graph"), "{e}");
}

#[test]
fn a_cache_written_by_huggingface_hub_is_read_by_hf_paths_and_the_daemon_config() {
    let hub = Hub::start(&[]);
    let cache = tempfile::tempdir().unwrap();
    let env = [("HF_ENDPOINT", hub.url.as_str()), ("HF_HUB_CACHE", cache.path().to_str().unwrap())];
    let snapshot = python(
        &format!(
            "from huggingface_hub import snapshot_download\n\
             print(snapshot_download('{LLAMA}', allow_patterns=['*.json', 'onnx/model_q4.onnx*']))"
        ),
        &env,
    );
    assert!(Path::new(&snapshot).join("onnx/model_q4.onnx_data").exists(), "{snapshot}");
    let hf = format!("hf:{LLAMA}");
    let out = edgeinfer(
        cache.path(),
        None,
        &[],
        &["local", "-m", &hf, "--variant", "q4", "generate", "Once upon a time", "--max-new-tokens", "3", "--json"],
    );
    let answer: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(answer["usage"]["generated_tokens"], 3, "{answer}");

    // A daemon config names it the same way; --check-config resolves it through the cache.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edgeinferd.toml");
    let write = |path: &str| {
        std::fs::write(
            &config,
            format!(
                "[daemon]\nstate_dir = \"{}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n[dbus]\nenabled = false\n\
                 [[models]]\nid = \"llm\"\npath = \"{path}\"\nvariant = \"q4\"\n",
                dir.path().display()
            ),
        )
        .unwrap();
    };
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_edgeinferd"))
            .args(["--config", config.to_str().unwrap(), "--check-config"])
            .env("HF_HUB_CACHE", cache.path())
            .output()
            .unwrap()
    };
    write(&hf);
    let out = check();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    write("hf:edgeinfer-tests/not-pulled");
    let out = check();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("edgeinfer pull edgeinfer-tests/not-pulled"), "{e}");
}
