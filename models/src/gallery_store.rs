//! The gallery's files on disk, written so that an add costs one vector and one short line, not
//! a rewrite of the whole gallery (device flash wears out):
//!
//! - the **index** (the configured path): JSON Lines, append-only. The first line is a header,
//!   `{"format":"edgeinfer-gallery","version":2,"model":"dino","dim":384,"next_id":8,"vectors":"<file>"}`;
//!   each later line is an operation, `{"add":7,"label":"cup","row":6}` or `{"remove":7}`.
//! - the **vectors**: a NumPy `.npy` file (`<index file name>-vectors-<generation>.npy`, float32
//!   little-endian, shape `(rows, dim)`, L2-normalised rows) beside the index, readable with
//!   `numpy.load`. Rows are appended in place and the shape in its 128-byte header rewritten.
//!
//! An add appends the row and updates the header, syncs the vectors, then appends the index line
//! and syncs it: a crash in between leaves an unreferenced row, never a line pointing to a
//! missing one. A torn last index line is cut off when the gallery is opened. Anything else that
//! does not parse is corruption: the caller quarantines the files. Removed rows are dropped by a
//! compaction (a new vectors generation, then the index replaced by rename) when they outnumber
//! the live ones. Version 1 galleries (one JSON document) are converted the same way.
//!
//! A lock file beside the index (`.<index file name>.lock`) holds an exclusive advisory lock
//! (`flock`) while the gallery is open, so a second process (a CLI run with `--gallery`) is
//! refused instead of interleaving writes. A row count in the `.npy` header larger than the file
//! holds (the header reached the disk before the row at a power cut) is read as the rows
//! present; only rows that index lines name must exist.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{ModelError, Result};
use crate::gallery::GalleryEntry;

pub(crate) const FORMAT: &str = "edgeinfer-gallery";
const VERSION: u32 = 2;
/// Bytes of the `.npy` header we write: room for any `(rows, dim)` in place.
const NPY_HEADER: usize = 128;
/// Compaction runs when more than this many removed rows outnumber the live ones.
const COMPACT_MIN_DEAD: usize = 64;

/// What is wrong with a gallery's files.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The files do not parse: quarantine them.
    Corrupt(String),
    /// Usable files that this gallery may not use (another model's, or locked by another
    /// process), or an I/O error: refuse, touch nothing.
    Refused(ModelError),
}

/// A gallery's entries as read from disk.
pub(crate) struct Loaded {
    pub entries: Vec<GalleryEntry>,
    pub next_id: u64,
    pub dim: Option<usize>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    model: String,
    dim: usize,
    /// The next id to hand out (ids of removed entries are never reused, also after a
    /// compaction dropped their lines).
    #[serde(default)]
    next_id: u64,
    vectors: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Op {
    Add { add: u64, label: String, row: u64 },
    Remove { remove: u64 },
}

/// Version 1: one JSON document.
#[derive(Deserialize)]
struct V1 {
    format: String,
    version: u32,
    model: String,
    next_id: u64,
    entries: Vec<GalleryEntry>,
}

/// The open files of a persisted gallery.
#[derive(Debug)]
pub(crate) struct Store {
    index_path: PathBuf,
    model: String,
    /// Held (flock) while the gallery is open.
    _lock: File,
    /// Open for appending, locked; `None` until the first add creates the files.
    files: Option<Files>,
}

#[derive(Debug)]
struct Files {
    index: File,
    vectors: File,
    vectors_path: PathBuf,
    generation: u64,
    dim: usize,
    rows: u64,
    /// Rows of removed entries still in the vectors file.
    dead: usize,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ModelError + use<> {
    let path = path.to_path_buf();
    move |source| ModelError::Io { path: path.clone(), source }
}

fn folder(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "gallery".into())
}

fn vectors_name(index: &Path, generation: u64) -> String {
    format!("{}-vectors-{generation}.npy", file_name(index))
}

fn npy_header(rows: u64, dim: usize) -> [u8; NPY_HEADER] {
    let mut h = [b' '; NPY_HEADER];
    h[..8].copy_from_slice(b"\x93NUMPY\x01\x00");
    h[8..10].copy_from_slice(&((NPY_HEADER - 10) as u16).to_le_bytes());
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    h[10..10 + dict.len()].copy_from_slice(dict.as_bytes());
    h[NPY_HEADER - 1] = b'\n';
    h
}

/// `(rows, dim)` from a header we wrote.
fn parse_npy_header(h: &[u8]) -> Option<(u64, usize)> {
    if h.len() < NPY_HEADER || &h[..8] != b"\x93NUMPY\x01\x00" || h[8..10] != ((NPY_HEADER - 10) as u16).to_le_bytes() {
        return None;
    }
    let dict = std::str::from_utf8(&h[10..NPY_HEADER]).ok()?;
    if !dict.contains("'descr': '<f4'") || !dict.contains("'fortran_order': False") {
        return None;
    }
    let shape = dict.split("'shape': (").nth(1)?.split(')').next()?;
    let (rows, dim) = shape.split_once(',')?;
    Some((rows.trim().parse().ok()?, dim.trim().parse().ok()?))
}

/// Opens and locks `.<index name>.lock` beside the index.
fn lock(path: &Path) -> std::result::Result<File, OpenError> {
    let dir = folder(path);
    std::fs::create_dir_all(dir).map_err(|e| OpenError::Refused(io_err(dir)(e)))?;
    let lock_path = dir.join(format!(".{}.lock", file_name(path)));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| OpenError::Refused(io_err(&lock_path)(e)))?;
    file.try_lock().map_err(|e| {
        OpenError::Refused(ModelError::Config(format!(
            "gallery {} is in use by another process ({e}); stop it or use another gallery file",
            path.display()
        )))
    })?;
    Ok(file)
}

impl Store {
    /// Opens (or, when the index does not exist, prepares) the gallery at `path` for `model`.
    pub(crate) fn open(path: &Path, model: &str) -> std::result::Result<(Store, Loaded), OpenError> {
        let _lock = lock(path)?;
        let mut store = Store { index_path: path.to_path_buf(), model: model.to_string(), _lock, files: None };
        let empty = Loaded { entries: Vec::new(), next_id: 1, dim: None };
        let mut index = match OpenOptions::new().read(true).append(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((store, empty)),
            Err(e) => return Err(OpenError::Refused(io_err(path)(e))),
        };
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut index, &mut bytes).map_err(|e| OpenError::Refused(io_err(path)(e)))?;
        if bytes.is_empty() {
            return Ok((store, empty));
        }
        let corrupt = |why: String| OpenError::Corrupt(format!("gallery {}: {why}", path.display()));
        let refused =
            |why: String| OpenError::Refused(ModelError::Config(format!("gallery {}: {why}", path.display())));

        // Version 1: one JSON document, converted to version 2 on the spot.
        if let Ok(v1) = serde_json::from_slice::<V1>(&bytes) {
            if v1.format != FORMAT || v1.version != 1 {
                return Err(corrupt(format!("not an {FORMAT} file")));
            }
            if v1.model != model {
                return Err(refused(format!("holds embeddings of model '{}', not '{model}'", v1.model)));
            }
            let dim = v1.entries.first().map(|e| e.vector.len());
            if v1.entries.iter().any(|e| Some(e.vector.len()) != dim || e.vector.iter().any(|v| !v.is_finite())) {
                return Err(corrupt("vectors of different lengths, or not finite".into()));
            }
            if v1.entries.iter().any(|e| e.id == u64::MAX) {
                return Err(corrupt("an id out of range".into()));
            }
            let next_id = v1.next_id.max(v1.entries.iter().map(|e| e.id + 1).max().unwrap_or(1));
            let entries = v1.entries;
            drop(index);
            if let Some(dim) = dim {
                store.compact(dim, &entries, 0, next_id).map_err(OpenError::Refused)?;
            }
            tracing::info!(path = %path.display(), entries = entries.len(), "converted a version 1 gallery");
            return Ok((store, Loaded { entries, next_id, dim }));
        }

        // A last line without its newline is an append that a crash cut short: it is dropped once
        // the rest has been read. The header line is written whole (by rename), never torn.
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut lines = bytes[..complete].split(|&b| b == b'\n').filter(|l| !l.is_empty());
        let header: Header = lines
            .next()
            .and_then(|l| serde_json::from_slice(l).ok())
            .ok_or_else(|| corrupt("no header line".into()))?;
        if header.format != FORMAT || header.version != VERSION {
            return Err(corrupt(format!("not an {FORMAT} version {VERSION} file")));
        }
        if header.model != model {
            return Err(refused(format!("holds embeddings of model '{}', not '{model}'", header.model)));
        }
        let generation = header
            .vectors
            .rsplit_once("-vectors-")
            .and_then(|(_, g)| g.strip_suffix(".npy")?.parse::<u64>().ok())
            .filter(|&g| header.vectors == vectors_name(path, g))
            .ok_or_else(|| corrupt(format!("unexpected vectors file name '{}'", header.vectors)))?;
        let vectors_path = folder(path).join(&header.vectors);
        let vectors = match OpenOptions::new().read(true).write(true).open(&vectors_path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(corrupt(format!("its vectors file {} is missing", vectors_path.display())));
            }
            Err(e) => return Err(OpenError::Refused(io_err(&vectors_path)(e))),
        };
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut &vectors, &mut data).map_err(|e| OpenError::Refused(io_err(path)(e)))?;
        let (header_rows, dim) = parse_npy_header(&data).ok_or_else(|| corrupt("vectors file header".into()))?;
        if dim == 0 || dim != header.dim || dim > (1 << 20) {
            return Err(corrupt(format!("vectors of {dim} values, the index says {}", header.dim)));
        }
        // Rows present: the header's count, or fewer when the header reached the disk before
        // the last row did (a power cut during an add). Index lines only name synced rows.
        let rows = header_rows.min(((data.len() - NPY_HEADER) / (dim * 4)) as u64);
        let row = |r: u64| -> Vec<f32> {
            let at = NPY_HEADER + r as usize * dim * 4;
            data[at..at + dim * 4].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        };

        let mut entries: Vec<GalleryEntry> = Vec::new();
        let (mut next_id, mut adds) = (header.next_id.max(1), 0usize);
        let mut last_add = 0u64;
        for (n, line) in lines.enumerate() {
            match serde_json::from_slice::<Op>(line) {
                Ok(Op::Add { add, label, row: r }) if r < rows && add > last_add && add < u64::MAX => {
                    let vector = row(r);
                    if vector.iter().any(|v| !v.is_finite()) {
                        return Err(corrupt(format!("row {r} is not finite")));
                    }
                    entries.push(GalleryEntry { id: add, label, vector });
                    last_add = add;
                    next_id = next_id.max(add + 1);
                    adds += 1;
                }
                Ok(Op::Remove { remove }) => entries.retain(|e| e.id != remove),
                _ => return Err(corrupt(format!("line {} is not a valid operation", n + 2))),
            }
        }
        if complete < bytes.len() {
            tracing::warn!(path = %path.display(), bytes = bytes.len() - complete, "dropping a torn last gallery line");
            index.set_len(complete as u64).map_err(|e| OpenError::Refused(io_err(path)(e)))?;
        }
        let dead = adds - entries.len();
        store.files = Some(Files { index, vectors, vectors_path, generation, dim, rows, dead });
        if store.compaction_due(entries.len()) {
            store.compact(dim, &entries, generation, next_id).map_err(OpenError::Refused)?;
        }
        store.remove_stray_vectors();
        Ok((store, Loaded { next_id, dim: Some(dim), entries }))
    }

    /// Deletes vectors generations of this index that it does not name (left by a crash
    /// during a compaction).
    fn remove_stray_vectors(&self) {
        let Some(current) = self.files.as_ref().map(|f| f.vectors_path.clone()) else { return };
        for stray in vectors_files(&self.index_path) {
            if stray != current {
                tracing::info!(path = %stray.display(), "removing an unreferenced gallery vectors file");
                let _ = std::fs::remove_file(stray);
            }
        }
    }

    /// Appends one entry: its row to the vectors, then its line to the index. `next_id` is the
    /// id after this one (recorded in the header when this add creates the files).
    pub(crate) fn append(&mut self, entry: &GalleryEntry, next_id: u64) -> Result<()> {
        if self.files.is_none() {
            self.compact(entry.vector.len(), &[], 0, next_id)?;
        }
        let index_path = self.index_path.clone();
        let files = self.files.as_mut().ok_or_else(|| ModelError::Config("gallery files not open".into()))?;
        if entry.vector.len() != files.dim {
            return Err(ModelError::BadInput(format!(
                "embedding has {} values, expected {}",
                entry.vector.len(),
                files.dim
            )));
        }
        let row = files.rows;
        let at = (NPY_HEADER as u64).saturating_add(row.saturating_mul(files.dim as u64 * 4));
        let bytes: Vec<u8> = entry.vector.iter().flat_map(|v| v.to_le_bytes()).collect();
        let vio = io_err(&files.vectors_path);
        files.vectors.write_all_at(&bytes, at).map_err(&vio)?;
        files.vectors.write_all_at(&npy_header(row + 1, files.dim), 0).map_err(&vio)?;
        files.vectors.sync_data().map_err(&vio)?;
        files.rows = row + 1;
        let line = json!({"add": entry.id, "label": entry.label, "row": row}).to_string() + "\n";
        append_line(&mut files.index, &line).map_err(io_err(&index_path))
    }

    /// Records that entry `id` is gone; `live` are the entries left, written anew (compacted)
    /// when removed rows outnumber them.
    pub(crate) fn remove(&mut self, id: u64, live: &[GalleryEntry], next_id: u64) -> Result<()> {
        let Some(files) = self.files.as_mut() else { return Ok(()) };
        let line = json!({ "remove": id }).to_string() + "\n";
        append_line(&mut files.index, &line).map_err(io_err(&self.index_path))?;
        files.dead += 1;
        let (dim, generation) = (files.dim, files.generation);
        if self.compaction_due(live.len())
            && let Err(e) = self.compact(dim, live, generation, next_id)
        {
            // The removal is on disk; compaction is retried at the next removal or start.
            tracing::warn!(path = %self.index_path.display(), error = %e, "gallery compaction failed");
        }
        Ok(())
    }

    fn compaction_due(&self, live: usize) -> bool {
        self.files.as_ref().is_some_and(|f| f.dead > COMPACT_MIN_DEAD && f.dead > live)
    }

    /// Writes `entries` as a new vectors generation and a new index (temporary file, fsync,
    /// rename), then deletes the old vectors. Rows are renumbered 0.. in order.
    pub(crate) fn compact(
        &mut self,
        dim: usize,
        entries: &[GalleryEntry],
        generation: u64,
        next_id: u64,
    ) -> Result<()> {
        static TMP: AtomicU64 = AtomicU64::new(0);
        let dir = folder(&self.index_path).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let next = generation + 1;
        let name = vectors_name(&self.index_path, next);
        let vectors_path = dir.join(&name);
        let mut npy = npy_header(entries.len() as u64, dim).to_vec();
        for e in entries {
            npy.extend(e.vector.iter().flat_map(|v| v.to_le_bytes()));
        }
        let vio = io_err(&vectors_path);
        let mut vectors =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&vectors_path).map_err(&vio)?;
        vectors.write_all(&npy).map_err(&vio)?;
        vectors.sync_all().map_err(&vio)?;

        let header =
            Header { format: FORMAT.into(), version: VERSION, model: self.model.clone(), dim, next_id, vectors: name };
        let mut text = serde_json::to_string(&header).map_err(|e| ModelError::Config(e.to_string()))? + "\n";
        for (row, e) in entries.iter().enumerate() {
            text += &(json!({"add": e.id, "label": e.label, "row": row}).to_string() + "\n");
        }
        let file_name = self.index_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dir.join(format!(".{file_name}.tmp-{}-{}", std::process::id(), TMP.fetch_add(1, Ordering::Relaxed)));
        let iio = io_err(&self.index_path);
        let written = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            Ok(f)
        })();
        let index = match written.and_then(|f| std::fs::rename(&tmp, &self.index_path).map(|()| f)) {
            Ok(f) => f,
            Err(e) => {
                // Nothing names the new generation yet: remove it.
                let _ = std::fs::remove_file(&tmp);
                let _ = std::fs::remove_file(&vectors_path);
                return Err(iio(e));
            }
        };
        // From here the new index is live: use it whatever happens.
        if let Err(e) = File::open(&dir).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot sync the gallery folder after a compaction");
        }
        // The handle from `File::create` writes at its offset, the end: appends go on there.
        if let Some(old) = self.files.take()
            && old.vectors_path != vectors_path
        {
            let _ = std::fs::remove_file(&old.vectors_path);
        }
        self.files =
            Some(Files { index, vectors, vectors_path, generation: next, dim, rows: entries.len() as u64, dead: 0 });
        Ok(())
    }
}

/// Appends `line` and syncs; on failure cuts the file back, so a half-written line never ends
/// up in the middle of the index.
fn append_line(index: &mut File, line: &str) -> std::io::Result<()> {
    let before = index.metadata()?.len();
    let result = index.write_all(line.as_bytes()).and_then(|()| index.sync_data());
    if result.is_err() {
        let _ = index.set_len(before);
    }
    result
}

/// The vectors files (every generation) beside the index at `path`.
fn vectors_files(path: &Path) -> Vec<PathBuf> {
    let prefix = vectors_name(path, 0).trim_end_matches("0.npy").to_string();
    let Ok(list) = std::fs::read_dir(folder(path)) else { return Vec::new() };
    list.flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix(&prefix)
                .and_then(|g| g.strip_suffix(".npy"))
                .is_some_and(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|e| e.path())
        .collect()
}

/// Moves a corrupt gallery's files aside (`<name>.corrupt-<unix seconds>`); returns the new
/// index path.
pub(crate) fn quarantine(path: &Path) -> Result<PathBuf> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let aside = |p: &Path| -> PathBuf {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        p.with_file_name(format!("{name}.corrupt-{stamp}"))
    };
    // The vectors files of this index go with it.
    for vectors in vectors_files(path) {
        let _ = std::fs::rename(&vectors, aside(&vectors));
    }
    let to = aside(path);
    std::fs::rename(path, &to).map_err(io_err(path))?;
    Ok(to)
}
