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

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tract_onnx::data_resolver::{MmapDataResolver, ModelDataResolver};
use tract_onnx::pb;
use tract_onnx::prelude::TractResult;
use tract_onnx::tract_core::internal::bail;

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
    /// The canonical path of the model file: requests for any other file are real external data.
    model_file: PathBuf,
    model_dir: String,
    slots: Mutex<Vec<Option<Vec<u8>>>>,
}

impl WeightSlots {
    /// Moves every large inline weight of `proto` (initializers and `Constant` values, in
    /// subgraphs too) into slots and points the tensors at them. `None` when the model cannot be
    /// addressed that way (its path is not UTF-8, it is a symlink to outside its directory, or
    /// it already names itself as external data): tract then reads it the ordinary way.
    pub(crate) fn take_from(proto: &mut pb::ModelProto, path: &Path) -> Option<WeightSlots> {
        // tract resolves `<model dir>/<location>` and insists it stays inside the model dir (a
        // model file symlinked from elsewhere does not): only then can the model name itself.
        let model_dir = path.parent()?.to_str()?.to_owned();
        let location = path.file_name()?.to_str()?.to_owned();
        let model_file = path.canonicalize().ok()?;
        let dir = if model_dir.is_empty() { Path::new(".") } else { Path::new(&model_dir) };
        if !model_file.starts_with(dir.canonicalize().ok()?) {
            return None;
        }
        let graph = proto.graph.as_mut()?;
        if refers_to(graph, dir, &model_file) {
            return None;
        }
        let mut slots = Vec::new();
        visit_tensors(graph, &mut |tensor| {
            if tensor.raw_data.len() < MIN_SLOT_BYTES {
                return;
            }
            let data = std::mem::take(&mut tensor.raw_data);
            let entry = |key: &str, value: String| pb::StringStringEntryProto { key: key.into(), value };
            tensor.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
            tensor.external_data = vec![
                entry("location", location.clone()),
                entry("offset", slots.len().to_string()),
                entry("length", data.len().to_string()),
            ];
            slots.push(Some(data));
        });
        Some(WeightSlots { model_file, model_dir, slots: Mutex::new(slots) })
    }

    /// The model's directory, as given (external data resolves against it).
    pub(crate) fn model_dir(&self) -> &str {
        &self.model_dir
    }

    /// How many weights tract has not taken (0 after a complete parse).
    pub(crate) fn left(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|s| s.is_some()).count()
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
            return MmapDataResolver.read_bytes_from_path(buf, path, offset, length);
        }
        let taken = self.slots.lock().unwrap_or_else(|p| p.into_inner()).get_mut(offset).and_then(Option::take);
        match taken {
            Some(data) if length.is_none_or(|n| n == data.len()) => {
                *buf = data;
                Ok(())
            }
            Some(data) => bail!("weight slot {offset} holds {} bytes, {length:?} asked for", data.len()),
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

/// Whether any tensor of `graph` (initializers and every tensor attribute, in subgraphs too)
/// already keeps its data in `model_file` itself, however the location is spelled.
fn refers_to(graph: &pb::GraphProto, dir: &Path, model_file: &Path) -> bool {
    let names_model = |t: &pb::TensorProto| {
        t.external_data
            .iter()
            .any(|e| e.key == "location" && dir.join(&e.value).canonicalize().is_ok_and(|p| p == model_file))
    };
    graph.initializer.iter().any(names_model)
        || graph.node.iter().flat_map(|n| &n.attribute).any(|a| {
            a.t.iter().chain(&a.tensors).any(names_model)
                || a.g.iter().chain(&a.graphs).any(|g| refers_to(g, dir, model_file))
        })
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
        let slots = Arc::new(WeightSlots::take_from(&mut proto, &path).unwrap());
        // w1 (32 KiB initializer) and w2 (8 KiB Constant) move; b1 (512 B) stays inline.
        assert_eq!(slots.left(), 2);
        let graph = proto.graph.as_ref().unwrap();
        assert!(graph.initializer.iter().all(|t| t.raw_data.len() < MIN_SLOT_BYTES));
        let onnx = tract_onnx::onnx();
        let onnx = tract_onnx::model::Onnx { provider: slots.clone(), ..onnx };
        let parsed = onnx.parse(&proto, Some(slots.model_dir())).unwrap();
        assert!(parsed.unresolved_inputs.is_empty());
        assert_eq!(slots.left(), 0);
    }

    #[test]
    fn a_model_symlinked_from_outside_its_directory_keeps_its_weights_inline() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("model.onnx");
        std::os::unix::fs::symlink(probe("weights.onnx"), &link).unwrap();
        let mut proto = decode_file(&link).unwrap();
        assert!(WeightSlots::take_from(&mut proto, &link).is_none());
        assert!(proto.graph.unwrap().initializer.iter().any(|t| t.raw_data.len() >= MIN_SLOT_BYTES));
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
    fn a_model_whose_external_data_names_itself_keeps_its_weights_inline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.onnx");
        std::fs::copy(probe("weights.onnx"), &path).unwrap();
        let mut proto = decode_file(&path).unwrap();
        let graph = proto.graph.as_mut().unwrap();
        graph.initializer[1].external_data =
            vec![pb::StringStringEntryProto { key: "location".into(), value: "./model.onnx".into() }];
        assert!(WeightSlots::take_from(&mut proto, &path).is_none());
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
