//! Teach-by-example recognition on top of image embeddings: a labelled set of vectors,
//! classified by cosine similarity, persisted to disk.
//!
//! File format (JSON, UTF-8), written whole to a temporary file in the same folder, fsynced and
//! renamed over the old one — a crash leaves either the old or the new gallery, never half of one:
//!
//! ```json
//! { "format": "edgeinfer-gallery", "version": 1, "model": "dino", "dim": 384, "next_id": 3,
//!   "entries": [ { "id": 1, "label": "wrench", "vector": [0.01, ...] }, ... ] }
//! ```
//!
//! Vectors are stored L2-normalised. `model` and `dim` guard against mixing embeddings of
//! different models.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dinov2::{cosine, l2_normalize};
use crate::error::{ModelError, Result};

const FORMAT: &str = "edgeinfer-gallery";
const VERSION: u32 = 1;
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

#[derive(Serialize, Deserialize)]
struct File {
    format: String,
    version: u32,
    model: String,
    dim: usize,
    next_id: u64,
    entries: Vec<GalleryEntry>,
}

/// A gallery of labelled embeddings.
#[derive(Debug)]
pub struct Gallery {
    path: Option<PathBuf>,
    model: String,
    dim: Option<usize>,
    max_entries: usize,
    next_id: u64,
    entries: Vec<GalleryEntry>,
}

impl Gallery {
    /// An empty in-memory gallery.
    pub fn in_memory(model: &str, max_entries: usize) -> Gallery {
        Gallery { path: None, model: model.to_string(), dim: None, max_entries, next_id: 1, entries: Vec::new() }
    }

    /// Opens the gallery stored at `path` (an empty one if the file does not exist yet).
    pub fn open(path: &Path, model: &str, max_entries: usize) -> Result<Gallery> {
        let mut g = Gallery::in_memory(model, max_entries);
        g.path = Some(path.to_path_buf());
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(g),
            Err(source) => return Err(ModelError::Io { path: path.to_path_buf(), source }),
        };
        let bad = |why: String| ModelError::Config(format!("gallery {}: {why}", path.display()));
        let file: File = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if file.format != FORMAT || file.version != VERSION {
            return Err(bad(format!("not an {FORMAT} v{VERSION} file")));
        }
        if file.model != model {
            return Err(bad(format!("holds embeddings of model '{}', not '{model}'", file.model)));
        }
        if file.entries.iter().any(|e| e.vector.len() != file.dim) {
            return Err(bad("an entry's vector length differs from 'dim'".into()));
        }
        g.dim = Some(file.dim);
        g.next_id = file.next_id.max(file.entries.iter().map(|e| e.id + 1).max().unwrap_or(1));
        g.entries = file.entries;
        Ok(g)
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
        self.next_id += 1;
        self.dim = Some(v.len());
        self.entries.push(GalleryEntry { id, label: label.to_string(), vector: v });
        if let Err(e) = self.save() {
            self.entries.pop();
            return Err(e);
        }
        Ok(id)
    }

    /// Removes every example with this label; returns how many.
    pub fn remove_label(&mut self, label: &str) -> Result<usize> {
        let before = self.entries.len();
        let kept: Vec<GalleryEntry> = self.entries.iter().filter(|e| e.label != label).cloned().collect();
        let removed = before - kept.len();
        if removed > 0 {
            let old = std::mem::replace(&mut self.entries, kept);
            if let Err(e) = self.save() {
                self.entries = old;
                return Err(e);
            }
        }
        Ok(removed)
    }

    /// Removes one example by id; returns whether it existed.
    pub fn remove_id(&mut self, id: u64) -> Result<bool> {
        let Some(pos) = self.entries.iter().position(|e| e.id == id) else { return Ok(false) };
        let entry = self.entries.remove(pos);
        if let Err(e) = self.save() {
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

    /// Writes the gallery to its file atomically (no-op for in-memory galleries).
    pub fn save(&self) -> Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let file = File {
            format: FORMAT.into(),
            version: VERSION,
            model: self.model.clone(),
            dim: self.dim.unwrap_or(0),
            next_id: self.next_id,
            entries: self.entries.clone(),
        };
        let json = serde_json::to_vec(&file).map_err(|e| ModelError::Config(e.to_string()))?;
        write_atomically(path, &json)
    }
}

/// Writes `bytes` to `path` via a temporary file in the same folder, fsync and rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source: std::io::Error| ModelError::Io { path: path.to_path_buf(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "gallery".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
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

    #[test]
    fn persists_atomically_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        let mut g = Gallery::open(&path, "dino", 3).unwrap();
        assert!(g.is_empty());
        let id = g.add("cat", &[3.0, 4.0]).unwrap();
        g.add("dog", &[4.0, 3.0]).unwrap();
        let h = Gallery::open(&path, "dino", 3).unwrap();
        assert_eq!(h.len(), 2);
        assert!((h.entries()[0].vector[0] - 0.6).abs() < 1e-6);
        // Ids are never reused, also after reloading.
        let mut h = h;
        assert!(h.remove_id(id).unwrap());
        assert_eq!(h.add("cow", &[1.0, 1.0]).unwrap(), 3);
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // Wrong model, corrupt file.
        assert!(Gallery::open(&path, "other", 3).unwrap_err().to_string().contains("model 'dino'"));
        std::fs::write(&path, b"{ half a file").unwrap();
        assert!(Gallery::open(&path, "dino", 3).is_err());
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
