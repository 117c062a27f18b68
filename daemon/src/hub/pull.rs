//! `edgeinfer pull OWNER/NAME[@REVISION] [--variant V] [--out DIR]`: downloads the files a model
//! folder needs (see [`super::select`]) into the Hugging Face cache.
//!
//! Each file goes to `blobs/<id>.incomplete` first. A broken transfer is retried from where it
//! stopped (`Range`, checked against the server's `206`/`Content-Range`: a server that answers
//! `200` instead restarts the file), and a later `pull` resumes the same way. A finished file is
//! checked against the Hub's metadata (sha256 for LFS files, the git blob sha1 for the others)
//! before it becomes a blob; a mismatch deletes it and fails naming the file. The token goes only
//! to the endpoint's host, never along a redirect to a CDN.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use edgeinfer_models::layout::Variant;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::cache::Cache;
use super::select::{RemoteFile, select};
use super::{HubEnv, RepoRef};

/// `edgeinfer pull`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:\n  edgeinfer pull onnx-community/dinov2-small --variant quantized\n  \
                        edgeinfer pull onnx-community/SmolLM2-135M-Instruct --variant q4\n  \
                        edgeinfer pull Xenova/slimsam-77-uniform@main --out /var/lib/edgeinfer/models/sam\n\n\
                        Then: `path = \"hf:onnx-community/dinov2-small\"` in a model config, or\n  \
                        edgeinfer local -m hf:onnx-community/dinov2-small --variant quantized embed photo.jpg\n\n\
                        Environment: HF_ENDPOINT (mirror), HF_TOKEN (gated/private repos), HF_HUB_OFFLINE=1,\n\
                        HF_HUB_CACHE / HF_HOME (cache location), SSL_CERT_FILE (trust store).")]
pub struct PullArgs {
    /// The repository: OWNER/NAME, optionally @REVISION (branch, tag or commit).
    pub repo: String,
    /// The precision variant to fetch. Only that variant's graphs are downloaded.
    #[arg(long, default_value = "fp32", value_parser = crate::cli::values::variant())]
    pub variant: Variant,
    /// Also make a plain folder here (files hard-linked from the cache, or copied), e.g. for a
    /// config `path` outside the cache.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// How many times one file is tried before the pull fails.
const ATTEMPTS: u32 = 4;

/// What went wrong with one transfer: worth another try (network, 5xx), or not (4xx, disk).
enum Failure {
    Retry(String),
    Fatal(String),
}

/// The revision listing of `GET /api/models/{repo}/revision/{rev}?blobs=true`.
#[derive(Deserialize)]
struct RevisionInfo {
    sha: String,
    #[serde(default)]
    siblings: Vec<RemoteFile>,
}

/// Runs `edgeinfer pull`; prints the folder to load (stdout) and returns it.
pub fn run(args: &PullArgs) -> Result<PathBuf, String> {
    let reference = RepoRef::parse(&args.repo)?;
    let env = HubEnv::from_env();
    let cache = Cache::new(env.cache.clone());
    let snapshot = if env.offline {
        let dir = cache.snapshot_of(&reference).map_err(|e| format!("HF_HUB_OFFLINE is set and {e}"))?;
        let have = edgeinfer_models::layout::variants_present(&dir, &GRAPH_STEMS);
        if !have.contains(&args.variant) {
            return Err(format!(
                "HF_HUB_OFFLINE is set and the cached {reference} ({}) has no {} graph",
                dir.display(),
                args.variant
            ));
        }
        eprintln!("{reference}: offline, using the cache");
        dir
    } else {
        Puller::new(env, cache)?.pull(&reference, args.variant)?
    };
    let folder = match &args.out {
        Some(out) => {
            materialize(&snapshot, out)?;
            out.clone()
        }
        None => snapshot,
    };
    eprintln!(
        "load it with `path = \"hf:{reference}\"`{} in a model config, or `edgeinfer local -m hf:{reference}{}`",
        if args.variant == Variant::Fp32 { String::new() } else { format!(" and `variant = \"{}\"`", args.variant) },
        if args.variant == Variant::Fp32 { String::new() } else { format!(" --variant {}", args.variant) },
    );
    println!("{}", folder.display());
    Ok(folder)
}

/// The graph names of the layouts we load (top or `onnx/`), for the offline variant check.
const GRAPH_STEMS: [&str; 6] =
    ["model", "decoder_model_merged", "encoder", "decoder", "vision_encoder", "prompt_encoder_mask_decoder"];

/// A Hub client bound to one cache.
struct Puller {
    env: HubEnv,
    cache: Cache,
    agent: ureq::Agent,
    host: String,
}

impl Puller {
    fn new(env: HubEnv, cache: Cache) -> Result<Puller, String> {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(file) = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from) {
            // When set, it is the trust store: unreadable is an error, not a reason to fall back.
            let pem = std::fs::read(&file).map_err(|e| format!("SSL_CERT_FILE {}: {e}", file.display()))?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(format!("SSL_CERT_FILE {} holds no certificate", file.display()));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls.build())
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .max_redirects(8)
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .user_agent(format!("edgeinfer/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let host =
            env.endpoint.split("://").nth(1).unwrap_or(&env.endpoint).split('/').next().unwrap_or("").to_string();
        Ok(Puller { env, cache, agent, host })
    }

    fn get(&self, url: &str, range_from: Option<u64>) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        let mut request = self.agent.get(url);
        if let Some(token) = &self.env.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        if let Some(from) = range_from {
            request = request.header("Range", format!("bytes={from}-"));
        }
        request.call().map_err(|e| Failure::Retry(format!("{}: {e}", self.host)))
    }

    /// Fails for HTTP errors, explaining the usual causes.
    fn check_status(&self, status: u16, what: &str) -> Result<(), Failure> {
        let token = if self.env.token.is_some() { "HF_TOKEN is set" } else { "HF_TOKEN is not set" };
        match status {
            200..=299 => Ok(()),
            401 | 403 => Err(Failure::Fatal(format!(
                "{what}: access denied (HTTP {status}): the repository is gated or private ({token}; use a token with read access, and accept the model's terms on the Hub)"
            ))),
            404 => Err(Failure::Fatal(format!(
                "{what}: not found (HTTP 404): check the name and revision ({token}; private repositories answer 404 without one)"
            ))),
            429 | 500..=599 => Err(Failure::Retry(format!("{what}: HTTP {status}"))),
            _ => Err(Failure::Fatal(format!("{what}: HTTP {status}"))),
        }
    }

    fn pull(&self, reference: &RepoRef, variant: Variant) -> Result<PathBuf, String> {
        let info = self.listing(reference)?;
        let commit = info.sha;
        if !super::is_commit(&commit) {
            return Err(format!("{}: the Hub answered a malformed commit id", self.env.endpoint));
        }
        let files = select(&info.siblings, variant).map_err(|e| format!("{reference}: {e}"))?;
        let total: u64 = files.iter().filter_map(RemoteFile::content_size).sum();
        eprintln!(
            "{reference}: {} files for {variant}, {} (commit {}, from {})",
            files.len(),
            human(total),
            &commit[..12],
            self.env.endpoint
        );
        let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        for file in &files {
            let id = file.blob_name().ok_or_else(|| format!("{}: the listing gives no blob id", file.path))?;
            if !(id.len() >= 40 && id.chars().all(|c| c.is_ascii_hexdigit())) {
                return Err(format!("{}: the listing gives a malformed blob id", file.path));
            }
            self.fetch(&reference.repo, &commit, file, id, &bars)?;
            self.cache
                .link(&reference.repo, &commit, &file.path, id)
                .map_err(|e| format!("{}: linking the snapshot: {e}", file.path))?;
        }
        self.cache
            .write_ref(&reference.repo, &reference.revision, &commit)
            .map_err(|e| format!("writing refs/{}: {e}", reference.revision))?;
        Ok(self.cache.snapshot(&reference.repo, &commit))
    }

    fn listing(&self, reference: &RepoRef) -> Result<RevisionInfo, String> {
        let url = format!(
            "{}/api/models/{}/revision/{}?blobs=true",
            self.env.endpoint,
            reference.repo,
            encode(&reference.revision).replace('/', "%2F")
        );
        let what = format!("{reference}");
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let result = self.get(&url, None).and_then(|mut response| {
                self.check_status(response.status().as_u16(), &what)?;
                response
                    .body_mut()
                    .with_config()
                    .limit(64 << 20)
                    .read_json::<RevisionInfo>()
                    .map_err(|e| Failure::Retry(format!("{what}: reading the file listing: {e}")))
            });
            match result {
                Ok(info) => return Ok(info),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(e)) => last = e,
            }
            backoff(attempt);
        }
        Err(last)
    }

    /// Downloads `file` into its blob (unless the blob is there and verifies).
    fn fetch(&self, repo: &str, commit: &str, file: &RemoteFile, id: &str, bars: &MultiProgress) -> Result<(), String> {
        let blob = self.cache.blob(repo, id);
        if blob.is_file() && verify(&blob, file).is_ok() {
            say(bars, format!("  {} (cached)", file.path));
            return Ok(());
        }
        let dir = blob.parent().ok_or("bad cache path")?;
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let part = dir.join(format!("{id}.incomplete"));
        let url = format!("{}/{}/resolve/{}/{}", self.env.endpoint, repo, commit, encode(&file.path));
        let size = file.content_size();
        let bar = bars.add(ProgressBar::new(size.unwrap_or(0)));
        bar.set_style(
            ProgressStyle::with_template("  {msg:40!} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {eta:>4}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(file.path.clone());
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            match self.transfer(&url, &part, size, &bar, &file.path) {
                Ok(()) => {
                    last.clear();
                    break;
                }
                Err(Failure::Fatal(e)) => {
                    bar.abandon();
                    return Err(e);
                }
                Err(Failure::Retry(e)) => {
                    let have = part.metadata().map(|m| m.len()).unwrap_or(0);
                    say(bars, format!("  {}: {e}; resuming at byte {have} (attempt {})", file.path, attempt + 1));
                    last = e;
                }
            }
            backoff(attempt);
        }
        if !last.is_empty() {
            bar.abandon();
            return Err(format!("{}: {last} (gave up after {ATTEMPTS} attempts; run pull again to resume)", file.path));
        }
        if let Err(e) = verify(&part, file) {
            let _ = std::fs::remove_file(&part);
            bar.abandon();
            return Err(format!("{}: {e}; the download was deleted", file.path));
        }
        std::fs::rename(&part, &blob).map_err(|e| format!("{}: {e}", blob.display()))?;
        bar.finish_and_clear();
        say(bars, format!("  {} ({}, verified)", file.path, human(size.unwrap_or(0))));
        Ok(())
    }

    /// One attempt at the rest of a file: appends to `part` from its current length.
    fn transfer(
        &self,
        url: &str,
        part: &Path,
        size: Option<u64>,
        bar: &ProgressBar,
        what: &str,
    ) -> Result<(), Failure> {
        let disk = |e: std::io::Error| Failure::Fatal(format!("{}: {e}", part.display()));
        let mut have = part.metadata().map(|m| m.len()).unwrap_or(0);
        if size.is_some_and(|s| have > s) {
            have = 0;
        }
        if size == Some(have) && have > 0 {
            return Ok(());
        }
        let mut response = self.get(url, (have > 0).then_some(have))?;
        let status = response.status().as_u16();
        let mut out = OpenOptions::new().create(true).append(true).open(part).map_err(disk)?;
        match status {
            206 => {
                let start = response
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if start != Some(have) {
                    out.set_len(0).map_err(disk)?;
                    return Err(Failure::Retry(format!("{what}: the server resumed at the wrong offset")));
                }
            }
            // Not resumed (no Range support, or the file changed): start over.
            200 => {
                out.set_len(0).map_err(disk)?;
                have = 0;
            }
            416 => {
                out.set_len(0).map_err(disk)?;
                return Err(Failure::Retry(format!("{what}: the server refused the resume offset")));
            }
            _ => self.check_status(status, what)?,
        }
        bar.set_position(have);
        let mut body = response.body_mut().with_config().limit(u64::MAX).reader();
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = match body.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Failure::Retry(format!("{what}: transfer broke: {e}"))),
            };
            out.write_all(&buffer[..n]).map_err(disk)?;
            have += n as u64;
            bar.set_position(have);
            if size.is_some_and(|s| have > s) {
                out.set_len(0).map_err(disk)?;
                return Err(Failure::Fatal(format!(
                    "{what}: the server sent more than the listed {} bytes",
                    size.unwrap_or(0)
                )));
            }
        }
        out.flush().map_err(disk)?;
        if size.is_some_and(|s| have != s) {
            return Err(Failure::Retry(format!("{what}: the transfer ended at byte {have}")));
        }
        Ok(())
    }
}

/// Checks a downloaded file against the listing: size, then sha256 (LFS) or the git blob sha1.
fn verify(path: &Path, file: &RemoteFile) -> Result<(), String> {
    let len = path.metadata().map_err(|e| e.to_string())?.len();
    if let Some(size) = file.content_size()
        && size != len
    {
        return Err(format!("size {len} differs from the listed {size}"));
    }
    let mut reader = File::open(path).map_err(|e| e.to_string())?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut feed = |update: &mut dyn FnMut(&[u8])| -> Result<(), String> {
        loop {
            let n = reader.read(&mut buffer).map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok(());
            }
            update(&buffer[..n]);
        }
    };
    if let Some(lfs) = &file.lfs {
        let mut hash = Sha256::new();
        feed(&mut |b| hash.update(b))?;
        let got = hex(&hash.finalize());
        if !got.eq_ignore_ascii_case(&lfs.sha256) {
            return Err(format!("sha256 {got} differs from the Hub's {}", lfs.sha256));
        }
    } else if let Some(id) = &file.blob_id {
        let mut hash = Sha1::new();
        hash.update(format!("blob {len}\0").as_bytes());
        feed(&mut |b| hash.update(b))?;
        let got = hex(&hash.finalize());
        if !got.eq_ignore_ascii_case(id) {
            return Err(format!("git blob id {got} differs from the Hub's {id}"));
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Percent-encodes a path for a URL, keeping `/` between segments.
fn encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A line on stderr above the progress bars (plain when stderr is not a terminal, where indicatif
/// draws nothing).
fn say(bars: &MultiProgress, line: String) {
    if bars.is_hidden() {
        eprintln!("{line}");
    } else {
        let _ = bars.println(line);
    }
}

fn backoff(attempt: u32) {
    std::thread::sleep(Duration::from_millis(250 * u64::from(attempt)));
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Makes `out` a plain folder with the snapshot's files: hard links to the blobs where the
/// filesystem allows, copies elsewhere.
fn materialize(snapshot: &Path, out: &Path) -> Result<(), String> {
    fn walk(dir: &Path, rel: &Path, out: &Path) -> Result<(), String> {
        for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let entry = entry.map_err(|e| e.to_string())?;
            let name = entry.file_name();
            let source = entry.path();
            let target = out.join(rel).join(&name);
            if source.is_dir() {
                walk(&source, &rel.join(&name), out)?;
                continue;
            }
            let real = std::fs::canonicalize(&source).map_err(|e| format!("{}: {e}", source.display()))?;
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            let _ = std::fs::remove_file(&target);
            if std::fs::hard_link(&real, &target).is_err() {
                std::fs::copy(&real, &target).map_err(|e| format!("{}: {e}", target.display()))?;
            }
        }
        Ok(())
    }
    walk(snapshot, Path::new(""), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_percent_encoded_and_sizes_read_well() {
        assert_eq!(encode("onnx/model q4+.onnx"), "onnx/model%20q4%2B.onnx");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(12), "12 B");
    }
}
