//! Teach-by-example recognition on top of image embeddings: a labelled set of vectors,
//! classified by cosine similarity, persisted to disk (see [`crate::gallery_store`] for the
//! files: an append-only JSON Lines index and a `.npy` of vectors).
//!
//! Vectors are stored L2-normalised. The model id in the files guards against mixing
//! embeddings of different models.
//!
//! One process holds one [`Gallery`] per file: [`Gallery::shared`] hands every engine that opens
//! the same path (the old and the new one during a reload) the same instance, so no add is made
//! on a copy that is then thrown away, and two writers never race on the files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use serde::{Deserialize, Serialize};

use crate::dinov2::{cosine, l2_normalize};
use crate::error::{ModelError, Result};
use crate::gallery_store::{OpenError, Store};

/// Longest label accepted.
pub const MAX_LABEL_CHARS: usize = 128;

/// One stored example.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GalleryEntry {
    /// Unique id (never reused).
    pub id: u64,
    /// What the example shows.
    pub label: String,
    /// Its embedding, L2-normalised.
    pub vector: Vec<f32>,
}

/// A classification result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Match {
    /// The label.
    pub label: String,
    /// Cosine similarity of the closest example with this label.
    pub score: f32,
    /// Id of that example.
    pub id: u64,
}

/// A gallery of labelled embeddings.
#[derive(Debug)]
pub struct Gallery {
    store: Option<Store>,
    model: String,
    dim: Option<usize>,
    max_entries: usize,
    next_id: u64,
    entries: Vec<GalleryEntry>,
}

/// How [`Gallery::shared`] found the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// Read as they were (or not there yet).
    Clean,
    /// Already open in this process: the same gallery is shared.
    Shared,
    /// They did not parse and were moved aside to this path; the gallery starts empty.
    Quarantined {
        /// Where the corrupt index now is.
        moved_to: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// A gallery shared by the engines of one process.
pub type SharedGallery = Arc<Mutex<Gallery>>;

impl Gallery {
    /// An empty in-memory gallery.
    pub fn in_memory(model: &str, max_entries: usize) -> Gallery {
        Gallery { store: None, model: model.to_string(), dim: None, max_entries, next_id: 1, entries: Vec::new() }
    }

    /// Opens the gallery stored at `path` (an empty one if the file does not exist yet). Corrupt
    /// files are an error here; [`Gallery::shared`] quarantines them instead.
    pub fn open(path: &Path, model: &str, max_entries: usize) -> Result<Gallery> {
        Gallery::from_files(path, model, max_entries).map_err(|e| match e {
            OpenError::Corrupt(why) => ModelError::Config(why),
            OpenError::Refused(e) => e,
        })
    }

    fn from_files(path: &Path, model: &str, max_entries: usize) -> std::result::Result<Gallery, OpenError> {
        let (store, loaded) = Store::open(path, model)?;
        Ok(Gallery {
            store: Some(store),
            model: model.to_string(),
            dim: loaded.dim,
            max_entries,
            next_id: loaded.next_id,
            entries: loaded.entries,
        })
    }

    /// The gallery at `path` for this process: the instance already open (its `max_entries`
    /// updated), or the files opened now. Files that do not parse are moved aside and an empty
    /// gallery is used, so that the model keeps serving; files of another model, locked by
    /// another process or unreadable are an error and are left alone.
    pub fn shared(path: &Path, model: &str, max_entries: usize) -> Result<(SharedGallery, Opened)> {
        static OPEN: Mutex<Option<HashMap<PathBuf, Weak<Mutex<Gallery>>>>> = Mutex::new(None);
        let key = std::path::absolute(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        let open = open.get_or_insert_with(HashMap::new);
        open.retain(|_, g| g.strong_count() > 0);
        if let Some(g) = open.get(&key).and_then(Weak::upgrade) {
            {
                let mut gallery = g.lock().unwrap_or_else(|p| p.into_inner());
                if gallery.model != model {
                    return Err(ModelError::Config(format!(
                        "gallery {} is already used by model '{}'",
                        path.display(),
                        gallery.model
                    )));
                }
                gallery.max_entries = max_entries;
            }
            return Ok((g, Opened::Shared));
        }
        let (gallery, opened) = match Gallery::from_files(path, model, max_entries) {
            Ok(g) => (g, Opened::Clean),
            Err(OpenError::Corrupt(reason)) => {
                let moved_to = crate::gallery_store::quarantine(path)?;
                (Gallery::open(path, model, max_entries)?, Opened::Quarantined { moved_to, reason })
            }
            Err(OpenError::Refused(e)) => return Err(e),
        };
        let g = Arc::new(Mutex::new(gallery));
        open.insert(key, Arc::downgrade(&g));
        Ok((g, opened))
    }

    /// Adds an example; returns its id. Persists if the gallery has a file.
    pub fn add(&mut self, label: &str, vector: &[f32]) -> Result<u64> {
        let label = label.trim();
        if label.is_empty() {
            return Err(ModelError::BadInput("label is empty".into()));
        }
        if label.chars().count() > MAX_LABEL_CHARS {
            return Err(ModelError::BadInput(format!("label is longer than {MAX_LABEL_CHARS} characters")));
        }
        if vector.is_empty() || vector.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::BadInput("embedding is empty or not finite".into()));
        }
        if let Some(dim) = self.dim
            && dim != vector.len()
        {
            return Err(ModelError::BadInput(format!(
                "embedding has {} values, the gallery holds {dim}-value embeddings",
                vector.len()
            )));
        }
        if self.entries.len() >= self.max_entries {
            return Err(ModelError::TooLarge(format!(
                "gallery is full ({} entries); remove some first",
                self.max_entries
            )));
        }
        let mut v = vector.to_vec();
        l2_normalize(&mut v);
        let id = self.next_id;
        let next_id = id.checked_add(1).filter(|&n| n < u64::MAX).ok_or_else(|| {
            ModelError::TooLarge("gallery ids are exhausted; export the gallery and start a new one".into())
        })?;
        let entry = GalleryEntry { id, label: label.to_string(), vector: v };
        if let Some(store) = &mut self.store {
            store.append(&entry, next_id)?;
        }
        self.next_id = next_id;
        self.dim = Some(entry.vector.len());
        self.entries.push(entry);
        Ok(id)
    }

    /// Removes every example with this label; returns how many.
    pub fn remove_label(&mut self, label: &str) -> Result<usize> {
        let ids: Vec<u64> = self.entries.iter().filter(|e| e.label == label).map(|e| e.id).collect();
        for &id in &ids {
            self.remove_id(id)?;
        }
        Ok(ids.len())
    }

    /// Removes one example by id; returns whether it existed.
    pub fn remove_id(&mut self, id: u64) -> Result<bool> {
        let Some(pos) = self.entries.iter().position(|e| e.id == id) else { return Ok(false) };
        let entry = self.entries.remove(pos);
        if let Some(store) = &mut self.store
            && let Err(e) = store.remove(id, &self.entries, self.next_id)
        {
            self.entries.insert(pos, entry);
            return Err(e);
        }
        Ok(true)
    }

    /// The `k` labels closest to `vector`, each scored by its closest example, best first.
    pub fn classify(&self, vector: &[f32], k: usize) -> Result<Vec<Match>> {
        if let Some(dim) = self.dim
            && dim != vector.len()
        {
            return Err(ModelError::BadInput(format!("embedding has {} values, expected {dim}", vector.len())));
        }
        let mut best: Vec<Match> = Vec::new();
        for e in &self.entries {
            let score = cosine(vector, &e.vector);
            match best.iter_mut().find(|m| m.label == e.label) {
                Some(m) if m.score >= score => {}
                Some(m) => {
                    m.score = score;
                    m.id = e.id;
                }
                None => best.push(Match { label: e.label.clone(), score, id: e.id }),
            }
        }
        best.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.label.cmp(&b.label)));
        best.truncate(k);
        Ok(best)
    }

    /// Labels with their example counts, sorted by label.
    pub fn labels(&self) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = Vec::new();
        for e in &self.entries {
            match out.iter_mut().find(|(l, _)| l == &e.label) {
                Some((_, n)) => *n += 1,
                None => out.push((e.label.clone(), 1)),
            }
        }
        out.sort();
        out
    }

    /// All examples.
    pub fn entries(&self) -> &[GalleryEntry] {
        &self.entries
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the gallery is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_scores_labels_by_their_closest_example() {
        let mut g = Gallery::in_memory("m", 10);
        g.add("wrench", &[1.0, 0.0, 0.0]).unwrap();
        g.add("wrench", &[0.0, 1.0, 0.0]).unwrap();
        g.add("hammer", &[0.0, 0.0, 1.0]).unwrap();
        let m = g.classify(&[0.1, 0.9, 0.0], 5).unwrap();
        assert_eq!(m[0].label, "wrench");
        assert_eq!(m[0].id, 2);
        assert_eq!(m.len(), 2);
        assert_eq!(g.classify(&[0.0, 0.0, 1.0], 1).unwrap()[0].label, "hammer");
        assert_eq!(g.labels(), vec![("hammer".to_string(), 1), ("wrench".to_string(), 2)]);
    }

    /// The folder's files, but the lock file.
    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn persists_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        let mut g = Gallery::open(&path, "dino", 3).unwrap();
        assert!(g.is_empty());
        assert!(files(dir.path()).is_empty(), "nothing written before the first add");
        let id = g.add("cat", &[3.0, 4.0]).unwrap();
        g.add("dog", &[4.0, 3.0]).unwrap();
        // The index is locked while open: a second opener (another process) is refused.
        let e = Gallery::open(&path, "dino", 3).unwrap_err().to_string();
        assert!(e.contains("in use by another process"), "{e}");
        drop(g);
        let mut h = Gallery::open(&path, "dino", 3).unwrap();
        assert_eq!(h.len(), 2);
        assert!((h.entries()[0].vector[0] - 0.6).abs() < 1e-6);
        // Ids are never reused, also after reloading.
        assert!(h.remove_id(id).unwrap());
        assert_eq!(h.add("cow", &[1.0, 1.0]).unwrap(), 3);
        drop(h);
        let h = Gallery::open(&path, "dino", 3).unwrap();
        assert_eq!(h.labels(), vec![("cow".to_string(), 1), ("dog".to_string(), 1)]);
        assert_eq!(files(dir.path()), ["g.json", "g.json-vectors-1.npy"], "no temporary file left behind");
        drop(h);
        let e = Gallery::open(&path, "other", 3).unwrap_err().to_string();
        assert!(e.contains("model 'dino'"), "{e}");
    }

    #[test]
    fn adds_append_in_place() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        let vectors = dir.path().join("g.json-vectors-1.npy");
        let mut g = Gallery::open(&path, "dino", 1000).unwrap();
        g.add("first", &[1.0; 384]).unwrap();
        let (index_inode, vectors_inode) =
            (std::fs::metadata(&path).unwrap().ino(), std::fs::metadata(&vectors).unwrap().ino());
        for i in 0..200 {
            let before = (std::fs::metadata(&path).unwrap().len(), std::fs::metadata(&vectors).unwrap().len());
            g.add(&format!("label-{i}"), &[0.5; 384]).unwrap();
            let after = (std::fs::metadata(&path).unwrap().len(), std::fs::metadata(&vectors).unwrap().len());
            assert_eq!(after.1 - before.1, 384 * 4, "one row appended");
            assert!(after.0 - before.0 < 64, "one short index line appended");
        }
        // Same files (no rewrite-and-rename per add).
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), index_inode);
        assert_eq!(std::fs::metadata(&vectors).unwrap().ino(), vectors_inode);
    }

    #[test]
    fn crash_leftovers_are_recovered() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        let mut g = Gallery::open(&path, "dino", 10).unwrap();
        g.add("a", &[1.0, 0.0]).unwrap();
        g.add("b", &[0.0, 1.0]).unwrap();
        drop(g);
        // A torn index line (the crash came mid-write) and an unreferenced vectors generation
        // (the crash came mid-compaction).
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(br#"{"add":3,"lab"#).unwrap();
        std::fs::write(dir.path().join("g.json-vectors-2.npy"), b"partial").unwrap();
        // And a header that counts a row the file does not hold (it reached the disk first).
        let vectors = dir.path().join("g.json-vectors-1.npy");
        let mut header = std::fs::read(&vectors).unwrap()[..128].to_vec();
        let at = header.windows(6).position(|w| w == b"(2, 2)").unwrap();
        header[at..at + 6].copy_from_slice(b"(3, 2)");
        std::fs::OpenOptions::new().write(true).open(&vectors).unwrap().write_all(&header).unwrap();
        let mut g = Gallery::open(&path, "dino", 10).unwrap();
        assert_eq!(g.len(), 2);
        assert!(std::fs::read(&path).unwrap().ends_with(b"\n"), "torn line cut off");
        assert_eq!(files(dir.path()), ["g.json", "g.json-vectors-1.npy"]);
        assert_eq!(g.add("c", &[1.0, 1.0]).unwrap(), 3);
        drop(g);
        assert_eq!(Gallery::open(&path, "dino", 10).unwrap().len(), 3);
    }

    #[test]
    fn removed_rows_are_compacted_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        let mut g = Gallery::open(&path, "dino", 1000).unwrap();
        for i in 0..100 {
            g.add(if i < 10 { "keep" } else { "drop" }, &[i as f32 + 1.0, 1.0]).unwrap();
        }
        assert_eq!(g.remove_label("drop").unwrap(), 90);
        // Compacted as soon as removed rows outnumber the live ones (past 64), not only at open.
        assert_eq!(files(dir.path()), ["g.json", "g.json-vectors-2.npy"]);
        drop(g);
        let g = Gallery::open(&path, "dino", 1000).unwrap();
        assert_eq!(g.labels(), vec![("keep".to_string(), 10)]);
        // 65 removals triggered it (35 rows left); the 25 after are only index lines.
        assert_eq!(files(dir.path()), ["g.json", "g.json-vectors-2.npy"]);
        assert_eq!(std::fs::metadata(dir.path().join("g.json-vectors-2.npy")).unwrap().len(), 128 + 35 * 2 * 4);
        let ids: Vec<u64> = g.entries().iter().map(|e| e.id).collect();
        assert_eq!(ids, (1..=10).collect::<Vec<u64>>());
        drop(g);
        let mut g = Gallery::open(&path, "dino", 1000).unwrap();
        assert_eq!(g.len(), 10);
        // The compaction dropped the lines of ids 11..=100; they are still never handed out again.
        assert_eq!(g.add("new", &[1.0, 2.0]).unwrap(), 101);
    }

    #[test]
    fn version_1_files_are_converted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        let v1 = r#"{"format":"edgeinfer-gallery","version":1,"model":"dino","dim":2,"next_id":9,
            "entries":[{"id":4,"label":"cup","vector":[0.6,0.8]},{"id":7,"label":"pen","vector":[1.0,0.0]}]}"#;
        std::fs::write(&path, v1).unwrap();
        let mut g = Gallery::open(&path, "dino", 10).unwrap();
        assert_eq!(g.labels(), vec![("cup".to_string(), 1), ("pen".to_string(), 1)]);
        assert_eq!(g.add("mug", &[0.0, 2.0]).unwrap(), 9);
        drop(g);
        let g = Gallery::open(&path, "dino", 10).unwrap();
        assert_eq!(g.len(), 3);
        assert!(std::fs::read_to_string(&path).unwrap().starts_with(r#"{"format":"edgeinfer-gallery","version":2"#));
    }

    #[test]
    fn corrupt_files_are_quarantined_by_shared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        std::fs::write(&path, b"{ half a file").unwrap();
        assert!(Gallery::open(&path, "dino", 3).is_err());
        let (g, opened) = Gallery::shared(&path, "dino", 3).unwrap();
        let Opened::Quarantined { moved_to, .. } = opened else { panic!("{opened:?}") };
        assert_eq!(std::fs::read(&moved_to).unwrap(), b"{ half a file");
        assert!(g.lock().unwrap().is_empty());
        g.lock().unwrap().add("a", &[1.0]).unwrap();
        // A vectors file that lost rows the index points to is corruption too.
        drop(g);
        std::fs::write(dir.path().join("g.json-vectors-1.npy"), b"\x93NUMPY").unwrap();
        let (g, opened) = Gallery::shared(&path, "dino", 3).unwrap();
        assert!(matches!(opened, Opened::Quarantined { .. }), "{opened:?}");
        assert!(g.lock().unwrap().is_empty());
    }

    #[test]
    fn shared_galleries_are_one_instance_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        let (old, opened) = Gallery::shared(&path, "dino", 3).unwrap();
        assert_eq!(opened, Opened::Clean);
        // A reload opens the file again while the old engine still serves.
        let (new, opened) = Gallery::shared(&dir.path().join(".").join("g.json"), "dino", 5).unwrap();
        assert_eq!(opened, Opened::Shared);
        old.lock().unwrap().add("late", &[1.0, 0.0]).unwrap();
        assert_eq!(new.lock().unwrap().len(), 1, "an add on the old engine is seen by the new one");
        assert!(Gallery::shared(&path, "other", 3).is_err());
        drop((old, new));
        let (g, opened) = Gallery::shared(&path, "dino", 3).unwrap();
        assert_eq!(opened, Opened::Clean);
        assert_eq!(g.lock().unwrap().len(), 1);
    }

    #[test]
    fn limits_and_bad_input() {
        let mut g = Gallery::in_memory("m", 1);
        assert!(g.add("  ", &[1.0]).unwrap_err().is_input_error());
        assert!(g.add(&"x".repeat(200), &[1.0]).is_err());
        assert!(g.add("a", &[f32::NAN]).is_err());
        g.add("a", &[1.0, 0.0]).unwrap();
        assert!(g.add("b", &[1.0, 0.0]).unwrap_err().is_too_large());
        assert!(g.classify(&[1.0], 1).is_err());
        assert_eq!(g.remove_label("a").unwrap(), 1);
        assert!(g.add("c", &[1.0, 0.0, 2.0]).is_err(), "dim is fixed once set");
    }
}
