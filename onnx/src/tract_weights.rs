//! Reading an ONNX file for tract without holding two copies of its weights.
//!
//! tract's own path decodes the whole protobuf (one copy of every weight, in `raw_data`) and then
//! builds its tensors from it (a second copy) before the protobuf is dropped, so loading peaks at
//! about twice the file size. Here the file is decoded through a small read buffer (it is never
//! mapped or read whole), and every large `raw_data` is moved out of the protobuf into a slot
//! table. The tensor is re-described as external data whose file is the model itself and whose
//! offset is its slot number; when tract asks for that data, [`WeightSlots`] hands the bytes over
//! by move. A weight then exists twice only while tract copies it into its own aligned tensor:
//! the peak is the weights plus the largest single weight.
//!
//! Weights already in an external data file (`model_q4.onnx_data`) get slots too, which say where
//! in which file they are; they are read when tract asks for them. tract itself refuses a data
//! file whose canonical path leaves the model's directory, which every file of a Hugging Face
//! cache snapshot does (they are symlinks into `blobs/`), so the location is checked here instead:
//! a relative path without `..`, in the model's directory as given, whose canonical path is in
//! that directory or, for a snapshot (`<repo>/snapshots/<revision>/`), in `<repo>/blobs/`.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use tract_onnx::data_resolver::{MmapDataResolver, ModelDataResolver};
use tract_onnx::pb;
use tract_onnx::prelude::TractResult;
use tract_onnx::tract_core::internal::{bail, format_err};

/// Weights smaller than this stay inline in the protobuf (not worth a slot).
const MIN_SLOT_BYTES: usize = 4096;

/// Read buffer size for decoding.
const CHUNK: usize = 1 << 20;

/// Decodes the ONNX file at `path` through a 1 MiB read buffer.
pub(crate) fn decode_file(path: &Path) -> Result<pb::ModelProto, String> {
    let mut buf = FileBuf::open(path).map_err(|e| e.to_string())?;
    let decoded = <pb::ModelProto as prost::Message>::decode(&mut buf);
    match (decoded, buf.error.take()) {
        (_, Some(io)) => Err(format!("reading the file failed: {io}")),
        (Ok(proto), None) => Ok(proto),
        (Err(e), None) => Err(e.to_string()),
    }
}

/// The weights moved out of one model's protobuf, handed to tract one by one.
pub(crate) struct WeightSlots {
    /// The canonical path of the model file, which every weight now names as its data file.
    model_file: PathBuf,
    /// The canonical directory of the model file: what tract resolves the weights' location in.
    tract_dir: String,
    /// The model's directory as given (symlinks not followed), where external data files are.
    given_dir: PathBuf,
    /// The canonical directories external data may resolve into (see [`readable_dirs`]).
    readable: Vec<PathBuf>,
    slots: Mutex<Vec<Option<Slot>>>,
}

/// Where one weight's bytes are.
enum Slot {
    /// Moved out of the protobuf.
    Inline(Vec<u8>),
    /// In an external data file beside the model, as its `external_data` entries say.
    External { location: String, offset: usize, length: Option<usize> },
    /// External data entries that do not parse (said when tract asks for the weight).
    Unreadable(String),
}

impl WeightSlots {
    /// Moves every large inline weight of `proto` (initializers and `Constant` values, in
    /// subgraphs too) into slots, notes where every external one is, and points all of them at
    /// slots of the model file. `None` when the model's path does not resolve to a UTF-8 one:
    /// tract then reads it the ordinary way.
    ///
    /// tract resolves a weight's `location` in the directory it is given and refuses one whose
    /// canonical path leaves it, so it is given the model file's canonical directory and name,
    /// and external data is read here instead (see [`readable_dirs`]). A Hugging Face
    /// cache snapshot is made of symlinks into `../../blobs/`, and `model_q4.onnx_data` there is one.
    pub(crate) fn take_from(proto: &mut pb::ModelProto, path: &Path) -> Option<WeightSlots> {
        let model_file = path.canonicalize().ok()?;
        let tract_dir = model_file.parent()?.to_str()?.to_owned();
        let location = model_file.file_name()?.to_str()?.to_owned();
        let given_dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let graph = proto.graph.as_mut()?;
        let mut slots = Vec::new();
        visit_tensors(graph, &mut |tensor| {
            let external = tensor.data_location == Some(pb::tensor_proto::DataLocation::External as i32);
            let slot = if external {
                external_slot(&tensor.external_data)
            } else if tensor.raw_data.len() >= MIN_SLOT_BYTES {
                Slot::Inline(std::mem::take(&mut tensor.raw_data))
            } else {
                return;
            };
            let length = match &slot {
                Slot::Inline(data) => Some(data.len()),
                Slot::External { length, .. } => *length,
                Slot::Unreadable(_) => None,
            };
            let entry = |key: &str, value: String| pb::StringStringEntryProto { key: key.into(), value };
            tensor.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
            tensor.external_data = vec![entry("location", location.clone()), entry("offset", slots.len().to_string())];
            tensor.external_data.extend(length.map(|n| entry("length", n.to_string())));
            slots.push(Some(slot));
        });
        largest_first(&mut graph.initializer);
        let readable = readable_dirs(&given_dir);
        Some(WeightSlots { model_file, tract_dir, given_dir, readable, slots: Mutex::new(slots) })
    }

    /// The directory to give tract for this model (the weights resolve against it).
    pub(crate) fn model_dir(&self) -> &str {
        &self.tract_dir
    }

    /// How many weights tract has not taken (0 after a complete parse).
    pub(crate) fn left(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|s| s.is_some()).count()
    }
}

/// Orders initializers by size, largest first, as tract then loads them. tract copies each
/// weight from the bytes handed over into its own tensor, so while a weight loads it is held
/// twice: loaded last, the largest one (the tied `lm_head` of an ORT-GenAI int4 folder, 14 MB of
/// its 85) raised the peak by its size on top of every other weight; loaded first, by the size
/// of a small one. The order of initializers means nothing to the graph.
fn largest_first(initializers: &mut [pb::TensorProto]) {
    let bytes = |tensor: &pb::TensorProto| {
        let length = tensor.external_data.iter().find(|e| e.key == "length").and_then(|e| e.value.parse().ok());
        length.unwrap_or(tensor.raw_data.len())
    };
    // Each tensor's size read once (a plain `sort_by_key` re-parsed "length" at every comparison).
    initializers.sort_by_cached_key(|tensor| std::cmp::Reverse(bytes(tensor)));
}

/// The canonical directories external data of a model in `given_dir` may resolve into: that
/// directory and, when it is a Hugging Face cache snapshot (`<repo>/snapshots/<revision>/...`),
/// that repository's `blobs/`.
fn readable_dirs(given_dir: &Path) -> Vec<PathBuf> {
    let absolute = std::path::absolute(given_dir).unwrap_or_else(|_| given_dir.to_path_buf());
    let snapshot_of = absolute.ancestors().find(|a| a.parent().is_some_and(|p| p.ends_with("snapshots")));
    let blobs = snapshot_of.and_then(Path::parent).and_then(Path::parent).map(|repo| repo.join("blobs"));
    std::iter::once(given_dir.to_path_buf()).chain(blobs).filter_map(|dir| dir.canonicalize().ok()).collect()
}

/// Where a tensor's `external_data` entries say its bytes are.
fn external_slot(entries: &[pb::StringStringEntryProto]) -> Slot {
    let value = |key: &str| entries.iter().find(|e| e.key == key).map(|e| e.value.as_str());
    let number = |key: &str| value(key).map(|v| v.parse::<usize>().map_err(|_| format!("external data {key} {v:?}")));
    let Some(location) = value("location") else {
        return Slot::Unreadable("external data without a location".into());
    };
    match (number("offset").transpose(), number("length").transpose()) {
        (Ok(offset), Ok(length)) => {
            Slot::External { location: location.to_owned(), offset: offset.unwrap_or(0), length }
        }
        (Err(e), _) | (_, Err(e)) => Slot::Unreadable(e),
    }
}

impl ModelDataResolver for WeightSlots {
    fn read_bytes_from_path(
        &self,
        buf: &mut Vec<u8>,
        path: &Path,
        offset: usize,
        length: Option<usize>,
    ) -> TractResult<()> {
        if path != self.model_file {
            bail!("weight data asked for from {path:?}, which is not the model file");
        }
        let taken = self.slots.lock().unwrap_or_else(|p| p.into_inner()).get_mut(offset).and_then(Option::take);
        match taken {
            Some(Slot::Inline(data)) if length.is_none_or(|n| n == data.len()) => {
                *buf = data;
                Ok(())
            }
            Some(Slot::Inline(data)) => bail!("weight slot {offset} holds {} bytes, {length:?} asked for", data.len()),
            Some(Slot::External { location, offset, length }) => {
                let relative = Path::new(&location);
                if location.is_empty()
                    || relative.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
                {
                    bail!(
                        "external data location must be a relative path inside the model directory, got {location:?}"
                    );
                }
                let file = self.given_dir.join(relative);
                let resolved = file.canonicalize().map_err(|e| format_err!("external data {file:?}: {e}"))?;
                if !self.readable.iter().any(|dir| resolved.starts_with(dir)) {
                    bail!(
                        "external data {location:?} resolves to {resolved:?}, outside the model directory {:?} \
                         (and not a blob of the Hugging Face cache it is a snapshot of)",
                        self.given_dir
                    );
                }
                MmapDataResolver.read_bytes_from_path(buf, &resolved, offset, length)
            }
            Some(Slot::Unreadable(why)) => bail!("{why}"),
            None => bail!("weight slot {offset} does not exist or was already taken"),
        }
    }
}

/// Calls `f` on every initializer and `Constant` value tensor of `graph` and its subgraphs.
fn visit_tensors(graph: &mut pb::GraphProto, f: &mut dyn FnMut(&mut pb::TensorProto)) {
    graph.initializer.iter_mut().for_each(&mut *f);
    for node in &mut graph.node {
        for attr in &mut node.attribute {
            if node.op_type == "Constant"
                && attr.name == "value"
                && let Some(t) = attr.t.as_mut()
            {
                f(t);
            }
            for sub in attr.g.iter_mut().chain(attr.graphs.iter_mut()) {
                visit_tensors(sub, f);
            }
        }
    }
}

/// A [`bytes::Buf`] over a file, read `CHUNK` bytes at a time. An I/O error is kept, to be
/// reported instead of whatever the decoder makes of the zeros served after it.
struct FileBuf {
    file: File,
    chunk: Vec<u8>,
    start: usize,
    /// Bytes of the file not yet consumed, counting those in `chunk[start..]`.
    remaining: usize,
    error: Option<io::Error>,
}

impl FileBuf {
    fn open(path: &Path) -> io::Result<FileBuf> {
        let file = File::open(path)?;
        let remaining = usize::try_from(file.metadata()?.len()).map_err(io::Error::other)?;
        let mut buf =
            FileBuf { file, chunk: Vec::with_capacity(CHUNK.min(remaining)), start: 0, remaining, error: None };
        buf.refill();
        Ok(buf)
    }

    /// Reads the next chunk. After an error (or a file that got shorter) the rest of the data is
    /// served as zeros: `remaining` never shrinks under the decoder, which `Buf` users rely on.
    fn refill(&mut self) {
        self.chunk.clear();
        self.start = 0;
        let want = CHUNK.min(self.remaining);
        self.chunk.resize(want, 0);
        let mut filled = if self.error.is_some() { want } else { 0 };
        while filled < want {
            match self.file.read(&mut self.chunk[filled..]) {
                Ok(0) => {
                    self.error = Some(io::Error::new(io::ErrorKind::UnexpectedEof, "the file got shorter"));
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.error = Some(e);
                    break;
                }
            }
        }
    }
}

impl bytes::Buf for FileBuf {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        &self.chunk[self.start..]
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 && self.remaining > 0 {
            let n = cnt.min(self.chunk.len() - self.start);
            self.start += n;
            self.remaining -= n;
            cnt -= n;
            if self.start == self.chunk.len() && self.remaining > 0 {
                self.refill();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;
    use std::io::Write;
    use std::sync::Arc;

    fn probe(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/probe").join(name)
    }

    #[test]
    fn large_weights_move_to_slots_and_tract_takes_every_one() {
        let path = probe("weights.onnx");
        let mut proto = decode_file(&path).unwrap();
        // The smallest initializer first, as a file may store them.
        proto.graph.as_mut().unwrap().initializer.reverse();
        let slots = Arc::new(WeightSlots::take_from(&mut proto, &path).unwrap());
        // w1 (32 KiB initializer) and w2 (8 KiB Constant) move; b1 (512 B) stays inline.
        assert_eq!(slots.left(), 2);
        let graph = proto.graph.as_ref().unwrap();
        assert!(graph.initializer.iter().all(|t| t.raw_data.len() < MIN_SLOT_BYTES));
        // tract loads the largest weight first, while it holds no other.
        let order: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(order, ["w1", "b1"]);
        let onnx = tract_onnx::onnx();
        let onnx = tract_onnx::model::Onnx { provider: slots.clone(), ..onnx };
        let parsed = onnx.parse(&proto, Some(slots.model_dir())).unwrap();
        assert!(parsed.unresolved_inputs.is_empty());
        assert_eq!(slots.left(), 0);
    }

    #[test]
    fn a_model_symlinked_from_outside_its_directory_uses_the_slots() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("model.onnx");
        std::os::unix::fs::symlink(probe("weights.onnx"), &link).unwrap();
        let mut proto = decode_file(&link).unwrap();
        let slots = Arc::new(WeightSlots::take_from(&mut proto, &link).unwrap());
        let onnx = tract_onnx::model::Onnx { provider: slots.clone(), ..tract_onnx::onnx() };
        onnx.parse(&proto, Some(slots.model_dir())).unwrap();
        assert_eq!(slots.left(), 0);
    }

    #[test]
    fn a_file_that_gets_shorter_while_read_is_an_error_not_a_hang() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&vec![7u8; CHUNK + 64]).unwrap();
        let mut buf = FileBuf::open(file.path()).unwrap();
        file.as_file().set_len(CHUNK as u64 - 2).unwrap();
        buf.advance(CHUNK - 2);
        // A u32 across the chunk boundary: two bytes read, two gone.
        assert_eq!(buf.get_u32_le(), 0x0000_0707);
        let rest = buf.copy_to_bytes(buf.remaining());
        assert_eq!(rest.len(), 62);
        assert_eq!(buf.error.as_ref().map(io::Error::kind), Some(io::ErrorKind::UnexpectedEof));
    }

    #[test]
    fn external_data_outside_the_model_directory_is_refused() {
        // A copy of the probe beside a symlink that leaves its directory.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model").join("weights_external.onnx");
        std::fs::create_dir(path.parent().unwrap()).unwrap();
        std::fs::copy(probe("weights_external.onnx"), &path).unwrap();
        std::fs::copy(probe("weights_external.onnx.data"), path.with_file_name("weights_external.onnx.data")).unwrap();
        std::fs::copy(probe("weights_external.onnx.data"), dir.path().join("outside.data")).unwrap();
        std::os::unix::fs::symlink("../outside.data", path.with_file_name("outside-link")).unwrap();
        for (location, refusal) in [
            ("../probe/weights_external.onnx.data", "relative path inside the model directory"),
            ("/etc/passwd", "relative path inside the model directory"),
            ("outside-link", "outside the model directory"),
            ("weights_external.onnx.data", "external data offset \"x\""),
        ] {
            let mut proto = decode_file(&path).unwrap();
            let graph = proto.graph.as_mut().unwrap();
            let tensor = graph.initializer.iter_mut().find(|t| !t.external_data.is_empty()).unwrap();
            for entry in &mut tensor.external_data {
                match entry.key.as_str() {
                    "location" => entry.value = location.into(),
                    "offset" if location == "weights_external.onnx.data" => entry.value = "x".into(),
                    _ => {}
                }
            }
            if location == "weights_external.onnx.data" && !tensor.external_data.iter().any(|e| e.key == "offset") {
                tensor.external_data.push(pb::StringStringEntryProto { key: "offset".into(), value: "x".into() });
            }
            let slots = Arc::new(WeightSlots::take_from(&mut proto, &path).unwrap());
            let onnx = tract_onnx::model::Onnx { provider: slots.clone(), ..tract_onnx::onnx() };
            let err = format!("{:?}", onnx.parse(&proto, Some(slots.model_dir())).unwrap_err());
            assert!(err.contains(refusal), "{location}: {err}");
        }
    }

    #[test]
    fn a_relative_model_path_uses_the_slots() {
        // Unit tests run from the package root.
        let path = Path::new("../models/fixtures/probe/weights.onnx");
        let mut proto = decode_file(path).unwrap();
        let slots = Arc::new(WeightSlots::take_from(&mut proto, path).unwrap());
        let onnx = tract_onnx::model::Onnx { provider: slots.clone(), ..tract_onnx::onnx() };
        onnx.parse(&proto, Some(slots.model_dir())).unwrap();
        assert_eq!(slots.left(), 0);
    }

    #[test]
    fn file_buf_reads_across_chunks() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..(CHUNK * 2 + 1234)).map(|i| (i * 7 % 251) as u8).collect();
        file.write_all(&data).unwrap();
        let mut buf = FileBuf::open(file.path()).unwrap();
        assert_eq!(buf.remaining(), data.len());
        let mut head = vec![0; 10];
        buf.copy_to_slice(&mut head);
        assert_eq!(head, data[..10]);
        buf.advance(CHUNK + 5);
        let rest = buf.copy_to_bytes(buf.remaining());
        assert_eq!(&rest[..], &data[CHUNK + 15..]);
        assert!(buf.error.is_none());
    }
}
