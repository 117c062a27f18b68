//! The Hugging Face cache layout (the one `huggingface_hub` writes and reads): per repository
//! `models--OWNER--NAME/` with `blobs/<id>` (sha256 for LFS files, the git blob sha1 for the
//! others), `snapshots/<commit>/<path>` linking to the blobs with relative links, and
//! `refs/<revision>` holding the commit a branch or tag pointed to when it was fetched.

use std::path::{Path, PathBuf};

use super::{RepoRef, is_commit};

/// One cache folder.
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The cache at `root` (created on first write).
    pub fn new(root: PathBuf) -> Cache {
        Cache { root }
    }

    /// The cache folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `models--OWNER--NAME`.
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root.join(format!("models--{}", repo.replace('/', "--")))
    }

    /// Where blob `id` is stored.
    pub fn blob(&self, repo: &str, id: &str) -> PathBuf {
        self.repo_dir(repo).join("blobs").join(id)
    }

    /// The snapshot folder of `commit`.
    pub fn snapshot(&self, repo: &str, commit: &str) -> PathBuf {
        self.repo_dir(repo).join("snapshots").join(commit)
    }

    /// The commit `reference` names in the cache: itself when it is a commit hash, else what
    /// `refs/<revision>` holds.
    pub fn commit_of(&self, reference: &RepoRef) -> Option<String> {
        if reference.is_commit() {
            return Some(reference.revision.clone());
        }
        let text =
            std::fs::read_to_string(self.repo_dir(&reference.repo).join("refs").join(&reference.revision)).ok()?;
        let commit = text.trim().to_string();
        is_commit(&commit).then_some(commit)
    }

    /// The snapshot folder `reference` resolves to; an error saying how to fetch it when the
    /// cache does not hold it.
    pub fn snapshot_of(&self, reference: &RepoRef) -> Result<PathBuf, String> {
        let hint = format!("run `edgeinfer pull {reference}` (cache: {})", self.root.display());
        let commit = self
            .commit_of(reference)
            .ok_or_else(|| format!("hf:{reference} is not in the Hugging Face cache: {hint}"))?;
        let dir = self.snapshot(&reference.repo, &commit);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(format!("hf:{reference} (commit {commit}) has no snapshot in the cache: {hint}"))
        }
    }

    /// Records that `revision` of `repo` is `commit` (`refs/<revision>`), unless the revision is
    /// the commit itself.
    pub fn write_ref(&self, repo: &str, revision: &str, commit: &str) -> std::io::Result<()> {
        if revision == commit {
            return Ok(());
        }
        let path = self.repo_dir(repo).join("refs").join(revision);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        write_atomically(&path, commit.as_bytes())
    }

    /// Links `snapshots/<commit>/<file>` to blob `id` (relative, as huggingface_hub does),
    /// replacing an older link.
    pub fn link(&self, repo: &str, commit: &str, file: &str, id: &str) -> std::io::Result<PathBuf> {
        let link = self.snapshot(repo, commit).join(file);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // snapshots/<commit>/<a>/<b> → ../../../blobs/<id>: one `..` per folder below the repo.
        let depth = file.matches('/').count() + 2;
        let target = PathBuf::from("../".repeat(depth)).join("blobs").join(id);
        match std::fs::remove_file(&link) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::os::unix::fs::symlink(&target, &link)?;
        Ok(link)
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_relative_and_refs_resolve_to_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().to_path_buf());
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let repo = RepoRef::parse("org/tiny").unwrap();
        assert!(cache.snapshot_of(&repo).unwrap_err().contains("edgeinfer pull org/tiny"));
        std::fs::create_dir_all(cache.blob("org/tiny", "x").parent().unwrap()).unwrap();
        std::fs::write(cache.blob("org/tiny", "abc"), b"graph").unwrap();
        let link = cache.link("org/tiny", commit, "onnx/model.onnx", "abc").unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), PathBuf::from("../../../blobs/abc"));
        assert_eq!(std::fs::read(&link).unwrap(), b"graph");
        cache.write_ref("org/tiny", "main", commit).unwrap();
        assert_eq!(cache.snapshot_of(&repo).unwrap(), cache.snapshot("org/tiny", commit));
        let pinned = RepoRef::parse(&format!("org/tiny@{commit}")).unwrap();
        assert_eq!(cache.snapshot_of(&pinned).unwrap(), cache.snapshot("org/tiny", commit));
    }
}
