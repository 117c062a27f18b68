//! Where the bundled test fixtures live (tiny real-architecture models with PyTorch goldens,
//! made by `models/export/`). Used by tests, benches and the README's demo command.

use std::path::PathBuf;

/// The `models/fixtures` folder of this source tree (`EDGEINFER_FIXTURES` overrides it).
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("EDGEINFER_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures"),
    }
}
