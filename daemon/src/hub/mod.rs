//! Model folders from the Hugging Face Hub: `edgeinfer pull` downloads one into the standard
//! Hugging Face cache, and `hf:OWNER/NAME[@REVISION]` model paths (config `path`,
//! `edgeinfer local -m`) resolve to the cached snapshot without touching the network.
//!
//! The cache is the one `huggingface_hub` keeps (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`), in its layout: `models--OWNER--NAME/blobs/<sha256 or git sha1>`,
//! `snapshots/<commit>/<path>` as relative links to the blobs, `refs/<revision>` holding the
//! commit. Either tool reads what the other wrote. The daemon never downloads: a device loads
//! what was pulled (or copied) onto it.
//!
//! Environment, as `huggingface_hub` reads it: `HF_ENDPOINT` (a mirror or a local hub),
//! `HF_TOKEN` (else `$HF_HOME/token`), `HF_HUB_OFFLINE=1` (cache only), `HF_HUB_CACHE`, `HF_HOME`.

pub mod cache;
pub mod pull;
pub mod select;

use std::path::{Path, PathBuf};

/// A repository and revision: `OWNER/NAME` or `OWNER/NAME@REVISION` (a branch, tag or commit;
/// `main` when not given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoRef {
    /// `OWNER/NAME`.
    pub repo: String,
    /// Branch, tag or commit hash.
    pub revision: String,
}

impl RepoRef {
    /// Parses `OWNER/NAME[@REVISION]`. Names are what the Hub allows (letters, digits, `-`, `_`,
    /// `.`), so they are safe as cache folder names; revisions may hold `/` (`refs/pr/1`) but no
    /// `..` or control characters.
    pub fn parse(text: &str) -> Result<RepoRef, String> {
        let (repo, revision) = match text.split_once('@') {
            Some((repo, rev)) => (repo, rev),
            None => (text, "main"),
        };
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 96
                && !s.starts_with('.')
                && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        let parts: Vec<&str> = repo.split('/').collect();
        if parts.len() != 2 || !parts.iter().all(|p| name_ok(p)) {
            return Err(format!(
                "'{}' is not a Hub repository: expected OWNER/NAME[@REVISION], e.g. onnx-community/dinov2-small",
                text.escape_debug()
            ));
        }
        let revision_ok = !revision.is_empty()
            && revision.len() <= 256
            && !revision.split('/').any(|s| s.is_empty() || s == "." || s == "..")
            && revision.chars().all(|c| c.is_ascii_graphic() && c != '\\');
        if !revision_ok {
            return Err(format!("'{}' is not a usable revision", revision.escape_debug()));
        }
        Ok(RepoRef { repo: repo.to_string(), revision: revision.to_string() })
    }

    /// Whether the revision is a full commit hash.
    pub fn is_commit(&self) -> bool {
        is_commit(&self.revision)
    }
}

impl std::fmt::Display for RepoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.revision == "main" { f.write_str(&self.repo) } else { write!(f, "{}@{}", self.repo, self.revision) }
    }
}

/// Whether `s` is a 40-digit lowercase hex commit hash.
pub fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// Where the Hub is and how to talk to it, from the environment.
#[derive(Clone, Debug)]
pub struct HubEnv {
    /// Base URL, without a trailing `/` (`HF_ENDPOINT`, else `https://huggingface.co`).
    pub endpoint: String,
    /// Access token (`HF_TOKEN`, else `HUGGING_FACE_HUB_TOKEN`, else the `$HF_HOME/token` file).
    pub token: Option<String>,
    /// The cache folder (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub cache: PathBuf,
    /// `HF_HUB_OFFLINE` is set to 1/ON/YES/TRUE: only the cache is used.
    pub offline: bool,
}

impl HubEnv {
    /// Reads the environment as `huggingface_hub` does.
    pub fn from_env() -> HubEnv {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let cache = var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(var("HOME").unwrap_or_else(|| "/".into())).join(".cache"));
            cache.join("huggingface")
        });
        let token = var("HF_TOKEN").or_else(|| var("HUGGING_FACE_HUB_TOKEN")).or_else(|| {
            std::fs::read_to_string(home.join("token")).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
        });
        HubEnv {
            endpoint: var("HF_ENDPOINT")
                .unwrap_or_else(|| "https://huggingface.co".into())
                .trim_end_matches('/')
                .into(),
            token,
            cache: var("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| home.join("hub")),
            offline: var("HF_HUB_OFFLINE")
                .is_some_and(|v| matches!(v.to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE")),
        }
    }
}

/// The prefix of model paths that name a Hub repository.
pub const HF_PREFIX: &str = "hf:";

/// Resolves a model path: `hf:OWNER/NAME[@REVISION]` to its snapshot in the cache (which must
/// hold it: nothing is downloaded here), anything else unchanged.
/// Checks the syntax of an `hf:` path (other paths pass): a malformed reference is a
/// configuration error, a well-formed one not yet in the cache is a model to fetch.
pub fn check_model_reference(path: &Path) -> Result<(), String> {
    match path.to_str().and_then(|s| s.strip_prefix(HF_PREFIX)) {
        Some(spec) => RepoRef::parse(spec).map(|_| ()),
        None => Ok(()),
    }
}

/// The folder an `hf:OWNER/NAME[@REVISION]` path stands for in the cache (other paths as they
/// are); an error naming the `edgeinfer pull` command when it is not there.
pub fn resolve_model_path(path: &Path) -> Result<PathBuf, String> {
    match path.to_str().and_then(|s| s.strip_prefix(HF_PREFIX)) {
        Some(spec) => {
            let repo = RepoRef::parse(spec)?;
            cache::Cache::new(HubEnv::from_env().cache).snapshot_of(&repo)
        }
        None => Ok(path.to_path_buf()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_references_are_checked_before_they_become_paths() {
        let r = RepoRef::parse("onnx-community/dinov2-small").unwrap();
        assert_eq!((r.repo.as_str(), r.revision.as_str()), ("onnx-community/dinov2-small", "main"));
        assert_eq!(RepoRef::parse("a/b@refs/pr/1").unwrap().revision, "refs/pr/1");
        for bad in ["dinov2", "a/b/c", "../b", "a/..", "a/b@", "a/b@../x", "a/b c", "a/.b", "/b", "a/b@x\ny"] {
            assert!(RepoRef::parse(bad).is_err(), "{bad:?}");
        }
        assert!(is_commit(&"a".repeat(40)) && !is_commit("main"));
    }
}
