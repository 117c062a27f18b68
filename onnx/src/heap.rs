//! Where a model's weights are allocated while it loads (glibc's `malloc` only).
//!
//! glibc serves a large allocation (128 KiB and up, at first) with a mapping of its own, which it
//! returns to the system when freed. But the first time such a block is freed, glibc raises that
//! threshold to the freed block's size (up to 32 MiB), and from then on blocks below it come from
//! the heap, where freed memory mostly stays with the process. Loading a model does exactly that:
//! it frees many large transient blocks (protobuf fields, ONNX Runtime's pre-packing sources,
//! tract's layout copies) while it allocates the final weights, so the heap ends up holding both.
//! Measured on SAM ViT-B, DINOv2-S and a 135M LLaMA, loading peaked at 1.3–2.0× the model file.
//!
//! While any model loads, [`LoadPhase`] pins the threshold at 128 KiB, so every weight-sized block
//! gets its own mapping and goes back to the system when freed (the peak drops to 1.1–1.2× the
//! file). Pinned for good it would slow inference down (every large activation buffer mapped and
//! faulted in afresh: +4 to +98 % measured), so when the last load ends the threshold is set to
//! glibc's own ceiling, where the moving threshold would have ended up anyway: inference keeps
//! reusing heap memory. The setting is process-wide: requests to models already loaded also run
//! under it while another model loads. A threshold the user set (`MALLOC_MMAP_THRESHOLD_`, or
//! `glibc.malloc.mmap_threshold` in `GLIBC_TUNABLES`) turns this module off; a trim threshold the
//! user set is left alone.

use std::sync::Mutex;

/// The threshold while loading: glibc's initial value.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const LOADING: usize = 128 * 1024;

/// The threshold for inference: glibc's ceiling for its moving threshold (32 MiB on 64-bit).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const SERVING: usize = 4 * 1024 * 1024 * std::mem::size_of::<std::ffi::c_long>();

/// Loads in progress (several models may load at once).
static LOADS: Mutex<usize> = Mutex::new(0);

/// Held for the duration of one model load. See the module documentation.
pub struct LoadPhase(());

impl LoadPhase {
    /// Starts a load phase (pins the threshold if this is the only load in progress).
    pub fn begin() -> LoadPhase {
        let mut loads = LOADS.lock().unwrap_or_else(|p| p.into_inner());
        if *loads == 0 {
            set_mmap_threshold(Phase::Loading);
        }
        *loads += 1;
        LoadPhase(())
    }
}

impl Drop for LoadPhase {
    fn drop(&mut self) {
        let mut loads = LOADS.lock().unwrap_or_else(|p| p.into_inner());
        *loads = loads.saturating_sub(1);
        if *loads == 0 {
            set_mmap_threshold(Phase::Serving);
        }
    }
}

enum Phase {
    Loading,
    Serving,
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_mmap_threshold(phase: Phase) {
    if user_set("MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold") {
        return;
    }
    let bytes = match phase {
        Phase::Loading => LOADING,
        Phase::Serving => SERVING,
    };
    let mut params = vec![(libc::M_MMAP_THRESHOLD, bytes)];
    // As glibc's moving threshold does, heap tops beyond twice the threshold go back to the
    // system (a lower trim threshold would shrink and regrow the heap on every request).
    if !user_set("MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold") {
        params.push((libc::M_TRIM_THRESHOLD, 2 * bytes));
    }
    for (param, bytes) in params {
        let value = std::ffi::c_int::try_from(bytes).unwrap_or(std::ffi::c_int::MAX);
        // SAFETY: mallopt only changes glibc's allocation policy for later calls; it takes no
        // pointers and is thread-safe (it takes the arena locks).
        #[allow(unsafe_code)]
        let ok = unsafe { libc::mallopt(param, value) };
        if ok != 1 {
            tracing::debug!(param, bytes, "glibc refused a malloc parameter");
        }
    }
}

/// Whether the user set this malloc parameter, by its environment variable or as a tunable.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn user_set(variable: &str, tunable: &str) -> bool {
    std::env::var_os(variable).is_some()
        || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.split(':').any(|kv| kv.starts_with(tunable)))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_mmap_threshold(_phase: Phase) {}
