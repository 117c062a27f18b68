//! Panic containment at the native/third-party boundary: a malformed model must come back as an
//! error, never unwind through (or abort) the daemon.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `f`; a panic inside becomes `Err(message)`.
pub(crate) fn no_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        if let Some(s) = payload.downcast_ref::<&str>() {
            format!("internal panic: {s}")
        } else if let Some(s) = payload.downcast_ref::<String>() {
            format!("internal panic: {s}")
        } else {
            "internal panic".to_string()
        }
    })
}
