//! Finding and loading the ONNX Runtime shared library (never downloaded, never linked at build
//! time). Search order:
//!
//! 1. an explicit path from config (`ort_library`) — used alone, no fallback;
//! 2. `ORT_DYLIB_PATH` — used alone, no fallback;
//! 3. the `capi/` folder of an installed `onnxruntime` Python package (the active virtualenv,
//!    `./.venv`, the user's and the system's site-packages);
//! 4. the system library paths (`LD_LIBRARY_PATH`, `/usr/local/lib`, `/usr/lib`, the multiarch
//!    folder, `/opt/onnxruntime/lib`), then the dynamic loader's own search by name.
//!
//! The library is loaded once per process; the environment built on it is shared by every
//! session.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ort::environment::Environment;
use ort::logging::LogLevel;

use crate::error::{OnnxError, Result};

/// A loaded ONNX Runtime: where it came from and its version.
pub struct OrtRuntime {
    /// The shared library that was loaded.
    pub path: PathBuf,
    /// How it was found (`config`, `ORT_DYLIB_PATH`, `python package`, `system`).
    pub origin: &'static str,
    /// The version it reports (`1.24.1`).
    pub version: String,
    /// Execution providers compiled into this build of ONNX Runtime.
    pub available_providers: Vec<String>,
    pub(crate) environment: Environment,
}

impl std::fmt::Debug for OrtRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtRuntime")
            .field("path", &self.path)
            .field("origin", &self.origin)
            .field("version", &self.version)
            .field("available_providers", &self.available_providers)
            .finish()
    }
}

static RUNTIME: OnceLock<Arc<OrtRuntime>> = OnceLock::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// The runtime loaded in this process, if any.
pub fn loaded() -> Option<Arc<OrtRuntime>> {
    RUNTIME.get().cloned()
}

/// Oldest ONNX Runtime this build accepts (`1.<ort API level>`).
pub fn minimum_version() -> String {
    format!("1.{}", ort::MINOR_VERSION)
}

/// Loads ONNX Runtime (once per process) and returns it. `explicit` is the config's library
/// path, if any. A later call with a different explicit path gets the already loaded runtime
/// and a warning.
pub fn runtime(explicit: Option<&Path>) -> Result<Arc<OrtRuntime>> {
    if let Some(rt) = RUNTIME.get() {
        warn_if_different(rt, explicit);
        return Ok(rt.clone());
    }
    let _guard = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(rt) = RUNTIME.get() {
        warn_if_different(rt, explicit);
        return Ok(rt.clone());
    }
    let rt = Arc::new(load(explicit)?);
    tracing::info!(path = %rt.path.display(), version = %rt.version, origin = rt.origin,
        providers = %rt.available_providers.join(","), "loaded ONNX Runtime");
    let _ = RUNTIME.set(rt.clone());
    Ok(rt)
}

fn warn_if_different(rt: &OrtRuntime, explicit: Option<&Path>) {
    if let Some(p) = explicit
        && p != rt.path
    {
        tracing::warn!(requested = %p.display(), loaded = %rt.path.display(),
            "ONNX Runtime is already loaded in this process; ignoring the other library path");
    }
}

/// A place the library may be.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// File to try.
    pub path: PathBuf,
    /// How it was found.
    pub origin: &'static str,
    /// Whether it was asked for explicitly (then no other place is tried).
    pub explicit: bool,
}

/// Every candidate in search order (existing files only, except explicit ones and the final
/// by-name loader lookups).
pub fn candidates(explicit: Option<&Path>) -> Vec<Candidate> {
    search(explicit).0
}

/// Candidates in search order, and a note for each place that held none.
fn search(explicit: Option<&Path>) -> (Vec<Candidate>, Vec<String>) {
    if let Some(p) = explicit {
        return (vec![Candidate { path: p.to_path_buf(), origin: "config", explicit: true }], Vec::new());
    }
    let mut notes = vec!["config `ort_library` / --ort-library: not set".to_string()];
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        return (vec![Candidate { path: PathBuf::from(p), origin: "ORT_DYLIB_PATH", explicit: true }], notes);
    }
    notes.push("ORT_DYLIB_PATH: not set".to_string());
    let mut out = Vec::new();
    let capi = python_capi_dirs();
    if capi.is_empty() {
        let roots: Vec<String> =
            python_roots().iter().map(|r| format!("{}/python3*/{{site,dist}}-packages", r.display())).collect();
        notes.push(format!("python package: no onnxruntime/capi folder in {}", roots.join(", ")));
    }
    for dir in capi {
        let libs = libraries_in(&dir);
        if libs.is_empty() {
            notes.push(format!("{}: no libonnxruntime.so*", dir.display()));
        }
        out.extend(libs.into_iter().map(|path| Candidate { path, origin: "python package", explicit: false }));
    }
    let mut empty_system = Vec::new();
    for dir in system_dirs() {
        let libs = libraries_in(&dir);
        if libs.is_empty() {
            empty_system.push(dir.display().to_string());
        }
        out.extend(libs.into_iter().map(|path| Candidate { path, origin: "system", explicit: false }));
    }
    if !empty_system.is_empty() {
        notes.push(format!("system library folders {}: no libonnxruntime.so*", empty_system.join(", ")));
    }
    for name in ["libonnxruntime.so", "libonnxruntime.so.1"] {
        out.push(Candidate { path: PathBuf::from(name), origin: "dynamic loader", explicit: false });
    }
    (out, notes)
}

/// Folders whose `python3*/{site,dist}-packages` are searched, in order.
fn python_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        roots.push(PathBuf::from(venv).join("lib"));
    }
    roots.push(PathBuf::from(".venv/lib"));
    if let Some(home) = std::env::var_os("HOME") {
        roots.push(PathBuf::from(home).join(".local/lib"));
    }
    roots.push(PathBuf::from("/usr/local/lib"));
    roots.push(PathBuf::from("/usr/lib"));
    roots
}

/// Folders searched for the `onnxruntime` Python package, in order.
pub fn python_capi_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for root in python_roots() {
        let Ok(entries) = std::fs::read_dir(&root) else { continue };
        let mut pythons: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
            .map(|e| e.path())
            .collect();
        pythons.sort();
        pythons.reverse();
        for py in pythons {
            for pkgs in ["site-packages", "dist-packages"] {
                let capi = py.join(pkgs).join("onnxruntime/capi");
                if capi.is_dir() {
                    dirs.push(capi);
                }
            }
        }
    }
    dirs
}

fn system_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var("LD_LIBRARY_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    let multiarch = format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH);
    for d in ["/usr/local/lib", "/usr/lib", multiarch.as_str(), "/usr/lib64", "/opt/onnxruntime/lib"] {
        dirs.push(PathBuf::from(d));
    }
    dirs
}

/// `libonnxruntime.so*` files in `dir` (not the provider plugins), newest version first.
fn libraries_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut libs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name == "libonnxruntime.so" || name.starts_with("libonnxruntime.so.")
        })
        .map(|e| e.path())
        .collect();
    libs.sort_by_key(|p| std::cmp::Reverse(version_key(p)));
    libs
}

fn version_key(p: &Path) -> Vec<u32> {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.trim_start_matches("libonnxruntime.so").split('.').filter_map(|s| s.parse().ok()).collect()
}

fn load(explicit: Option<&Path>) -> Result<OrtRuntime> {
    let (candidates, mut searched) = search(explicit);
    let mut loader_misses = Vec::new();
    for candidate in &candidates {
        match try_load(candidate) {
            Ok(rt) => return Ok(rt),
            Err(e) if candidate.explicit => return Err(e),
            Err(_) if candidate.origin == "dynamic loader" => loader_misses.push(candidate.path.display().to_string()),
            Err(OnnxError::RuntimeTooOld { path, found, required, .. }) => searched.push(format!(
                "{} ({}): version {found} is older than the required {required}",
                path.display(),
                candidate.origin
            )),
            Err(e) => searched.push(format!("{} ({}): {e}", candidate.path.display(), candidate.origin)),
        }
    }
    if !loader_misses.is_empty() {
        searched.push(format!(
            "{}: not found by the dynamic loader (ld.so.cache, LD_LIBRARY_PATH)",
            loader_misses.join(", ")
        ));
    }
    Err(OnnxError::RuntimeNotFound { searched })
}

fn try_load(candidate: &Candidate) -> Result<OrtRuntime> {
    let path = &candidate.path;
    if candidate.explicit && !path.exists() {
        return Err(OnnxError::RuntimeLoad {
            path: path.clone(),
            reason: format!("no such file (from {})", candidate.origin),
        });
    }
    let builder = ort::init_from(path).map_err(|e| match e {
        ort::LoadDynamicError::BadVersion { version_str, path } => {
            OnnxError::RuntimeTooOld { path, found: version_str, required: minimum_version(), api: ort::MINOR_VERSION }
        }
        other => OnnxError::RuntimeLoad { path: path.clone(), reason: other.to_string() },
    })?;
    let environment = builder
        .with_name("edgeinfer")
        .with_telemetry(false)
        .with_logger(Arc::new(forward_environment_log))
        .build()
        .map_err(|e| OnnxError::RuntimeLoad { path: path.clone(), reason: format!("creating the environment: {e}") })?;
    let resolved = resolve_loaded_path(path);
    Ok(OrtRuntime {
        path: resolved.clone(),
        origin: candidate.origin,
        version: version_string(&resolved).unwrap_or_else(|| "unknown".into()),
        available_providers: available_providers(),
        environment,
    })
}

/// The absolute path of a library loaded by bare name, read from the process's mappings.
fn resolve_loaded_path(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            let name = Path::new(p).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            name == "libonnxruntime.so" || name.starts_with("libonnxruntime.so.")
        })
        .map(PathBuf::from)
        .unwrap_or_else(|| path.to_path_buf())
}

/// The version the library reports through `OrtGetApiBase()->GetVersionString()`.
#[allow(unsafe_code)]
fn version_string(path: &Path) -> Option<String> {
    // SAFETY: ort has already loaded this library, so dlopen hands back the same handle (and
    // dlclose on drop only drops our reference). `OrtGetApiBase` is a C function without
    // arguments returning a pointer to a static struct; `GetVersionString` returns a pointer to
    // a static NUL-terminated string. Both are checked for null before use.
    unsafe {
        let lib = libloading::Library::new(path).ok()?;
        let get_base: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
            lib.get(b"OrtGetApiBase").ok()?;
        let base = get_base();
        if base.is_null() {
            return None;
        }
        let version = ((*base).GetVersionString)();
        if version.is_null() {
            return None;
        }
        Some(std::ffi::CStr::from_ptr(version).to_string_lossy().into_owned())
    }
}

fn available_providers() -> Vec<String> {
    crate::ort::providers::available().unwrap_or_default()
}

thread_local! {
    /// Warnings and errors ONNX Runtime logs on this thread while a capture is active.
    static CAPTURED: std::cell::RefCell<Option<Vec<String>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f`, collecting the warnings and errors ONNX Runtime logs on this thread meanwhile:
/// providers often log the real cause ("[OpenVINO] Device NPU is not available") and return a
/// generic status ("Failed to load provider OpenVINO").
pub(crate) fn capture_log<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let out = f();
    let logged = CAPTURED.with(|c| c.borrow_mut().take()).unwrap_or_default();
    (out, logged)
}

/// Records a warning/error for an active [`capture_log`] on this thread. Returns whether it was
/// captured (the caller then reports it as part of its own error instead of logging it loudly).
pub(crate) fn note_for_capture(level: LogLevel, message: &str) -> bool {
    if !matches!(level, LogLevel::Warning | LogLevel::Error | LogLevel::Fatal) {
        return false;
    }
    CAPTURED.with(|c| match c.borrow_mut().as_mut() {
        Some(v) => {
            v.push(clean_message(message));
            true
        }
        None => false,
    })
}

/// Drops ORT's source-location prefixes (`/onnxruntime/.../file.cc:141 std::string f(...) [ERROR] `,
/// `... [ONNXRuntimeError] : 1 : FAIL : `), keeping the message a user can act on.
pub(crate) fn clean_message(message: &str) -> String {
    let mut text = message.rsplit_once("[ERROR] ").map(|(_, m)| m).unwrap_or(message);
    if let Some((_, rest)) = text.rsplit_once("[ONNXRuntimeError] : ") {
        // "1 : FAIL : message"
        text = rest.splitn(3, " : ").nth(2).unwrap_or(rest);
    }
    text.trim().to_string()
}

fn forward_environment_log(level: LogLevel, category: &str, id: &str, location: &str, message: &str) {
    if note_for_capture(level, message) {
        tracing::debug!(target: "onnxruntime", category, id, "{message}");
        return;
    }
    match level {
        LogLevel::Fatal | LogLevel::Error => {
            tracing::error!(target: "onnxruntime", category, id, location, "{message}")
        }
        LogLevel::Warning => tracing::warn!(target: "onnxruntime", category, id, "{message}"),
        LogLevel::Info => tracing::debug!(target: "onnxruntime", category, id, "{message}"),
        LogLevel::Verbose => tracing::trace!(target: "onnxruntime", category, id, "{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::clean_message;

    #[test]
    fn ort_prefixes_are_dropped() {
        assert_eq!(
            clean_message(
                "/onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:2043 onnxruntime::Provider& \
                 onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library x.so with error: y"
            ),
            "Failed to load library x.so with error: y"
        );
        assert_eq!(
            clean_message("/onnxruntime/x.cc:141 std::string f(a, b) [ERROR] [OpenVINO] Device NPU is not available"),
            "[OpenVINO] Device NPU is not available"
        );
        assert_eq!(clean_message("plain"), "plain");
    }
}
