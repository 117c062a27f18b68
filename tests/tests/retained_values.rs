//! `Session::run_retaining` on both backends, with the LLaMA fixture's KV cache: retained outputs
//! equal what `run` returns, feeding them back gives the same next step as feeding copies, ORT
//! keeps them in its own memory, a value retained by one backend feeds the other, and misuse
//! gets clear errors. Both placements run: `Host`, and `Device`, which on ONNX Runtime goes
//! through an IoBinding (the path that keeps a KV cache in GPU memory; on these CPU sessions the
//! device memory is host memory).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use edgeinfer_models::llama::{LlamaLayout, ModelDir};
use edgeinfer_onnx::{
    Backend, BackendKind, ModelSource, Outputs, Placement, Retain, Retained, Session, SessionOptions, Tensor,
};
use edgeinfer_tests::{backends, fixtures};

struct Model {
    session: Box<dyn Session>,
    layout: LlamaLayout,
}

fn load(backend: &Arc<dyn Backend>) -> Model {
    load_with(backend, &SessionOptions::default())
}

fn load_with(backend: &Arc<dyn Backend>, options: &SessionOptions) -> Model {
    let dir = fixtures().join("llama");
    let model_dir = ModelDir::open(&dir).unwrap();
    let session = backend.load(&ModelSource::File(model_dir.onnx.clone()), options).unwrap();
    let layout = model_dir.layout(session.as_ref()).unwrap();
    Model { session, layout }
}

impl Model {
    /// `input_ids`, `attention_mask` (and `position_ids`) for `ids` after `past` cached tokens.
    fn token_inputs(&self, ids: &[i64], past: usize) -> Vec<(String, Tensor)> {
        let n = ids.len();
        let mut feed = vec![
            ("input_ids".to_string(), Tensor::from_shape_vec(&[1, n], ids.to_vec()).unwrap()),
            ("attention_mask".to_string(), Tensor::from_shape_vec(&[1, past + n], vec![1i64; past + n]).unwrap()),
        ];
        if self.layout.has_position_ids {
            let positions = (past..past + n).map(|p| p as i64).collect();
            feed.push(("position_ids".to_string(), Tensor::from_shape_vec(&[1, n], positions).unwrap()));
        }
        assert!(self.layout.use_cache_branch.is_none(), "the fixture is a plain KV-cache export");
        feed
    }

    fn past_names(&self) -> Vec<String> {
        (0..self.layout.layers).flat_map(|i| [self.layout.past_key(i), self.layout.past_value(i)]).collect()
    }

    fn present_names(&self) -> Vec<String> {
        (0..self.layout.layers).flat_map(|i| [self.layout.present_key(i), self.layout.present_value(i)]).collect()
    }

    fn present_retain(&self, placement: Placement) -> Vec<Retain> {
        self.present_names().into_iter().map(|name| Retain { name, placement }).collect()
    }

    fn empty_past(&self) -> Vec<(String, Tensor)> {
        let shape = [1, self.layout.kv_heads, 0, self.layout.head_dim];
        self.past_names().into_iter().map(|name| (name, Tensor::zeros(self.layout.kv_dtype, &shape).unwrap())).collect()
    }

    /// One step through plain `run`, every output copied out: the cache is taken from the
    /// previous step's outputs, or empty for a prefill (`None`).
    fn run_copied(&self, ids: &[i64], past: usize, previous: Option<&mut Outputs>) -> Outputs {
        let mut inputs = self.token_inputs(ids, past);
        match previous {
            None => inputs.extend(self.empty_past()),
            Some(previous) => {
                for (past_name, present_name) in self.past_names().into_iter().zip(self.present_names()) {
                    inputs.push((past_name, previous.take(&present_name).unwrap()));
                }
            }
        }
        self.session.run(inputs).unwrap()
    }

    fn empty_retained(&self) -> Vec<(String, Retained)> {
        self.empty_past().into_iter().map(|(name, t)| (name, t.into())).collect()
    }
}

fn assert_same(label: &str, ours: &Tensor, reference: &Tensor) {
    let diff = ours.compare(reference).unwrap_or_else(|e| panic!("{label}: {e}"));
    assert!(diff.within(1e-6, 1e-5), "{label}: {diff:?}");
}

#[test]
fn retained_kv_cache_equals_copied_outputs_and_feeds_the_next_step() {
    for (backend, placement) in
        backends().into_iter().flat_map(|b| [(b.clone(), Placement::Host), (b, Placement::Device)])
    {
        let kind = format!("{} {placement:?}", backend.kind());
        let model = load(&backend);
        let prompt = [1i64, 17, 42, 5];

        // Prefill through plain `run`: every output copied out.
        let mut copied = model.run_copied(&prompt, 0, None);

        // The same prefill, keeping the present values in the backend.
        let past = model.empty_retained();
        let present = model.present_names();
        let (mut outputs, kept) = model
            .session
            .run_retaining(model.token_inputs(&prompt, 0), past, &model.present_retain(placement))
            .unwrap();
        assert_eq!(kept.len(), present.len(), "{kind}");
        for name in &present {
            assert!(outputs.get(name).is_none(), "{kind}: retained output '{name}' also returned as a tensor");
        }
        assert_same(&format!("{kind} logits"), &outputs.take("logits").unwrap(), copied.get("logits").unwrap());
        let expected_shape = [1, model.layout.kv_heads, prompt.len(), model.layout.head_dim];
        for (name, value) in present.iter().zip(&kept) {
            assert_eq!(value.shape(), expected_shape, "{kind} {name}");
            assert_eq!(value.dtype(), model.layout.kv_dtype, "{kind} {name}");
            // ORT's own value, or tract's own tensor: no conversion either way.
            assert!(value.is_backend_owned(), "{kind} {name}: held by the backend");
            assert_eq!(value.memory_device(), "Cpu", "{kind} {name}: a CPU session keeps it in host memory");
            assert_same(&format!("{kind} {name}"), &value.to_tensor().unwrap(), copied.get(name).unwrap());
        }

        // One decode step: past fed as copies through `run`, and as retained values.
        let next = [7i64];
        let mut step_copied = model.run_copied(&next, prompt.len(), Some(&mut copied));
        // This time the logits stay in the backend too, read in place.
        let retained: Vec<(String, Retained)> = model.past_names().into_iter().zip(kept).collect();
        let retain: Vec<Retain> =
            std::iter::once(Retain::host("logits")).chain(model.present_retain(placement)).collect();
        let (step_retained, mut kept) =
            model.session.run_retaining(model.token_inputs(&next, prompt.len()), retained, &retain).unwrap();
        assert!(step_retained.is_empty(), "{kind}: every output was retained");
        let logits = kept.remove(0);
        let in_place = Tensor::F32(logits.view_f32().expect("f32 logits readable in place").to_owned());
        assert_same(&format!("{kind} decode logits"), &in_place, step_copied.get("logits").unwrap());
        // The values outlive their session, and feed another session of the same model.
        drop(model.session);
        for (name, value) in present.iter().zip(&kept) {
            assert_eq!(value.shape()[2], prompt.len() + 1, "{kind} {name}: the cache grew by one");
            assert_same(&format!("{kind} step {name}"), &value.to_tensor().unwrap(), step_copied.get(name).unwrap());
        }
        let other = load(&backend);
        let next = [9i64];
        let retained = other.past_names().into_iter().zip(kept).collect();
        let (from_other, _) =
            other.session.run_retaining(other.token_inputs(&next, prompt.len() + 1), retained, &[]).unwrap();
        let reference = other.run_copied(&next, prompt.len() + 1, Some(&mut step_copied));
        assert_same(
            &format!("{kind} next step in another session"),
            from_other.get("logits").unwrap(),
            reference.get("logits").unwrap(),
        );
    }
}

#[test]
fn values_retained_by_one_backend_feed_the_other() {
    let all = backends();
    if all.len() < 2 {
        eprintln!("EDGEINFER_SKIP_ORT=1: no second backend to cross with");
        return;
    }
    let models: Vec<Model> = all.iter().map(load).collect();
    let prompt = [3i64, 9, 11];
    let next = [2i64];
    let mut logits = Vec::new();
    for (producer, consumer) in [(0, 1), (1, 0)] {
        let (p, c) = (&models[producer], &models[consumer]);
        let past = p.empty_retained();
        let present = p.present_retain(Placement::Device);
        let (_, kept) = p.session.run_retaining(p.token_inputs(&prompt, 0), past, &present).unwrap();
        let retained = c.past_names().into_iter().zip(kept).collect();
        let (out, _) = c.session.run_retaining(c.token_inputs(&next, prompt.len()), retained, &[]).unwrap();
        logits.push(out.get("logits").unwrap().clone());
    }
    // Reference: the same two steps on tract with plain `run`, the cache copied.
    let tract = &models[0];
    let mut prefill = tract.run_copied(&prompt, 0, None);
    let reference = tract.run_copied(&next, prompt.len(), Some(&mut prefill));
    for (label, ours) in ["tract→ort", "ort→tract"].iter().zip(&logits) {
        let diff = ours.compare(reference.get("logits").unwrap()).unwrap();
        assert!(diff.within(1e-4, 1e-3), "{label} decode logits vs tract alone: {diff:?}");
    }
}

#[test]
fn misuse_gets_clear_errors_on_both_backends() {
    for backend in backends() {
        let kind = backend.kind();
        let model = load(&backend);
        let prompt = [1i64, 2];
        let past = || model.empty_retained();
        let run = |inputs: Vec<(String, Tensor)>, retained: Vec<(String, Retained)>, retain: &[Retain]| {
            model.session.run_retaining(inputs, retained, retain).map(|_| ()).unwrap_err().to_string()
        };

        let err = run(model.token_inputs(&prompt, 0), past(), &[Retain::device("present.99.key")]);
        assert!(err.contains("present.99.key"), "{kind}: unknown output: {err}");

        let twice = [Retain::host(model.layout.present_key(0)), Retain::device(model.layout.present_key(0))];
        let err = run(model.token_inputs(&prompt, 0), past(), &twice);
        assert!(err.contains("retained twice"), "{kind}: same output twice: {err}");

        let mut short = past();
        let (dropped, _) = short.pop().unwrap();
        let err = run(model.token_inputs(&prompt, 0), short, &[]);
        assert!(err.contains(&format!("missing input '{dropped}'")), "{kind}: missing past: {err}");

        let mut wrong = past();
        wrong[0].1 = Tensor::zeros(edgeinfer_onnx::DType::I64, wrong[0].1.shape()).unwrap().into();
        let err = run(model.token_inputs(&prompt, 0), wrong, &[]);
        assert!(err.contains("must be float32"), "{kind}: wrong element type: {err}");

        // A value ONNX Runtime holds is validated like a tensor.
        let present = model.present_retain(Placement::Host);
        let (_, held) = model.session.run_retaining(model.token_inputs(&prompt, 0), past(), &present).unwrap();
        let mut misplaced = past();
        misplaced.push(("input_ids".to_string(), held.into_iter().next().unwrap()));
        let err = run(vec![model.token_inputs(&prompt, 0).swap_remove(1)], misplaced, &[]);
        assert!(err.contains("input 'input_ids' must be int64"), "{kind}: cache value as input_ids: {err}");

        let mut doubled = past();
        doubled.push(("input_ids".to_string(), Tensor::zeros(edgeinfer_onnx::DType::I64, &[1, 2]).unwrap().into()));
        let err = run(model.token_inputs(&prompt, 0), doubled, &[]);
        assert!(err.contains("given more than once"), "{kind}: input given twice: {err}");
    }
}

#[test]
fn outputs_returned_in_an_input_buffer_are_copied_before_the_input_is_freed() {
    // `x` is both the graph's input and an output, `y = Identity(x)`, `z = x + x`: ORT may hand
    // back the first two in the buffer of the input tensor, which run_retaining frees on return.
    // (ORT only: tract cannot load a graph whose input is also an output.)
    let path = fixtures().join("probe/passthrough.onnx");
    if let Some(backend) = edgeinfer_tests::ort_backend() {
        let session = backend.load(&ModelSource::File(path.clone()), &SessionOptions::default()).unwrap();
        let x = Tensor::deterministic(edgeinfer_onnx::DType::F32, &[2, 3], 11).unwrap();
        for placement in [Placement::Host, Placement::Device] {
            let kind = format!("{} {placement:?}", backend.kind());
            let retain: Vec<Retain> = ["x", "y", "z"].map(|name| Retain { name: name.to_string(), placement }).to_vec();
            let (_, kept) = session.run_retaining(vec![("x".to_string(), x.clone())], Vec::new(), &retain).unwrap();
            // Overwrite freed memory the way a busy process would before the values are read.
            let scribble: Vec<Vec<f32>> = (0..64).map(|_| vec![-7.0f32; 6]).collect();
            let doubled = Tensor::F32(x.as_f32().unwrap().mapv(|v| v + v));
            for ((r, value), expected) in retain.iter().zip(&kept).zip([&x, &x, &doubled]) {
                println!("{kind} {}: held by the backend: {}", r.name, value.is_backend_owned());
                assert_same(&format!("{kind} {}", r.name), &value.to_tensor().unwrap(), expected);
            }
            drop(scribble);
            assert!(kept[2].is_backend_owned(), "{kind}: 'z' is a fresh ORT buffer and stays there");
            // ONNX Runtime 1.32 returns the graph input `x` in the buffer it was given (ours for
            // Host, the binding's copy for Device), freed on return: it must have been copied.
            assert!(!kept[0].is_backend_owned(), "{kind}: 'x' still points into the freed input");
        }
    }
}

/// On a GPU machine only (`EDGEINFER_TEST_CUDA=1`, `ORT_DYLIB_PATH` naming an onnxruntime-gpu
/// build, CUDA libraries on the library path): values placed on the device really live in CUDA
/// memory, read back equal to a CPU session's outputs, and feed the next step on the CUDA
/// session, on a CPU ORT session and on tract (both copy them to the host first).
#[test]
fn device_values_live_in_cuda_memory_and_feed_any_session() {
    if std::env::var("EDGEINFER_TEST_CUDA").as_deref() != Ok("1") {
        eprintln!("EDGEINFER_TEST_CUDA is not 1: this test needs an NVIDIA GPU and onnxruntime-gpu");
        return;
    }
    let ort = edgeinfer_tests::ort_backend().expect("ONNX Runtime");
    let options =
        SessionOptions { execution_providers: edgeinfer_onnx::parse_ep_list("cuda!").unwrap(), ..Default::default() };
    let cuda = load_with(&ort, &options);
    let cpu = load(&ort);
    let tract = load(&edgeinfer_onnx::backend(BackendKind::Tract, None).unwrap());
    let prompt = [1i64, 17, 42, 5];
    let next = [7i64];
    let prefill_on_gpu = || {
        let present = cuda.present_retain(Placement::Device);
        cuda.session.run_retaining(cuda.token_inputs(&prompt, 0), cuda.empty_retained(), &present).unwrap().1
    };

    let mut reference = cpu.run_copied(&prompt, 0, None);
    for (name, value) in cuda.present_names().iter().zip(prefill_on_gpu()) {
        assert_eq!(value.memory_device(), "Cuda", "{name}: where the value lives");
        assert!(value.view_f32().is_none(), "{name}: GPU memory is not readable in place");
        let diff = value.to_tensor().unwrap().compare(reference.get(name).unwrap()).unwrap();
        assert!(diff.within(1e-4, 1e-3), "{name} copied from the GPU: {diff:?}");
    }
    let step = cpu.run_copied(&next, prompt.len(), Some(&mut reference));
    for (label, consumer) in [("cuda", &cuda), ("cpu", &cpu), ("tract", &tract)] {
        let retained = consumer.past_names().into_iter().zip(prefill_on_gpu()).collect();
        let (out, _) =
            consumer.session.run_retaining(consumer.token_inputs(&next, prompt.len()), retained, &[]).unwrap();
        let diff = out.get("logits").unwrap().compare(step.get("logits").unwrap()).unwrap();
        assert!(diff.within(1e-4, 1e-3), "GPU cache fed to {label}: next logits {diff:?}");
    }
}

/// The KV buffers of an ORT-GenAI folder (`past_present_share_buffer`), `[1, kv, capacity, hd]`
/// each, fed through `run_in_place`: `[1, 0, ...]`-past runs through `run_retaining` are the
/// reference.
#[test]
fn a_shared_kv_buffer_is_updated_in_place_and_gives_the_growing_caches_logits() {
    let Some(backend) = edgeinfer_tests::ort_backend() else { return };
    let dir = fixtures().join("llama-genai/fp32");
    let model_dir = ModelDir::open(&dir).unwrap();
    let session = backend.load(&ModelSource::File(model_dir.onnx.clone()), &SessionOptions::default()).unwrap();
    let layout = model_dir.layout(session.as_ref()).unwrap();
    assert!(layout.shares_kv_buffer, "genai_config.json says past_present_share_buffer");
    let model = Model { session, layout };
    let feed = |ids: &[i64], past: usize| {
        let n = ids.len();
        edgeinfer_onnx::conform_inputs(
            model.session.inputs(),
            vec![
                ("input_ids".to_string(), Tensor::from_shape_vec(&[1, n], ids.to_vec()).unwrap()),
                ("attention_mask".to_string(), Tensor::from_shape_vec(&[1, past + n], vec![1i64; past + n]).unwrap()),
            ],
        )
        .unwrap()
    };
    let logits = [Retain::host("logits")];
    let last_row = |r: &Retained| {
        let v = r.view_f32().unwrap();
        v.index_axis(ndarray::Axis(1), v.shape()[1] - 1).to_owned()
    };
    // Reference: the cache grows by the step's positions.
    let shape0 = [1, model.layout.kv_heads, 0, model.layout.head_dim];
    let mut past: Vec<(String, Retained)> = model
        .past_names()
        .into_iter()
        .map(|n| (n, Tensor::zeros(model.layout.kv_dtype, &shape0).unwrap().into()))
        .collect();
    let prompt = [5i64, 6, 7, 8, 9];
    let steps = [[11i64], [12], [13], [14]];
    let mut reference = Vec::new();
    let mut len = 0;
    for ids in std::iter::once(&prompt[..]).chain(steps.iter().map(|s| &s[..])) {
        let mut retain = logits.to_vec();
        retain.extend(model.present_retain(Placement::Device));
        let (_, mut kept) = model.session.run_retaining(feed(ids, len), past, &retain).unwrap();
        reference.push(last_row(&kept.remove(0)));
        past = model.past_names().into_iter().zip(kept).collect();
        len += ids.len();
    }
    // In place: one buffer per name, the length of the whole sequence.
    let capacity = prompt.len() + steps.len();
    let shape = [1, model.layout.kv_heads, capacity, model.layout.head_dim];
    let mut state: Vec<edgeinfer_onnx::InPlace> = model
        .past_names()
        .into_iter()
        .zip(model.present_names())
        .map(|(input, output)| edgeinfer_onnx::InPlace {
            input,
            output,
            value: Tensor::zeros(model.layout.kv_dtype, &shape).unwrap().into(),
        })
        .collect();
    let mut len = 0;
    let mut addresses = None;
    let built = || model.session.stats().bindings_built;
    for (i, ids) in std::iter::once(&prompt[..]).chain(steps.iter().map(|s| &s[..])).enumerate() {
        if i == steps.len() {
            // Every step so far fed back what the last handed back: one binding served them all.
            assert_eq!(built(), 1, "in-place bindings built for {i} runs");
            // Let go of it: the next step binds the same buffers again, and computes the same.
            model.session.release_in_place();
        }
        let (_, kept, next) = model.session.run_in_place(feed(ids, len), state, &logits).unwrap();
        state = next;
        len += ids.len();
        let worst = (last_row(&kept[0]) - &reference[i]).abs().fold(0.0f32, |a, &b| a.max(b));
        assert!(worst <= 1e-4, "step {i}: logits differ from the growing cache's by {worst}");
        for s in &state {
            assert_eq!(s.value.shape(), shape, "{}: the buffer keeps its length", s.input);
        }
        // The same buffers every step: ONNX Runtime wrote into them.
        let now: Vec<usize> = state.iter().map(|s| s.value.view_f32().unwrap().as_ptr() as usize).collect();
        assert_eq!(*addresses.get_or_insert_with(|| now.clone()), now, "step {i}: the KV buffers moved");
    }
    assert_eq!(built(), 2, "a binding after the release");
}

/// Where a backend cannot share buffers (tract), `run_in_place` hands each output back as the
/// new value: the same as `run_retaining`. ONNX Runtime writes into the buffer it is given, so
/// an output longer than its input (a cache that grows) is a clear run error there.
#[test]
fn run_in_place_elsewhere_hands_outputs_back_as_the_new_state() {
    for backend in backends() {
        let model = load(&backend);
        let prompt = [1i64, 2, 3];
        let shape0 = [1, model.layout.kv_heads, 0, model.layout.head_dim];
        let zeros = || -> Retained { Tensor::zeros(model.layout.kv_dtype, &shape0).unwrap().into() };
        let past: Vec<(String, Retained)> = model.past_names().into_iter().map(|n| (n, zeros())).collect();
        let mut retain = vec![Retain::host("logits")];
        retain.extend(model.present_retain(Placement::Device));
        let (_, want) = model.session.run_retaining(model.token_inputs(&prompt, 0), past, &retain).unwrap();
        let state = model
            .past_names()
            .into_iter()
            .zip(model.present_names())
            .map(|(input, output)| edgeinfer_onnx::InPlace { input, output, value: zeros() })
            .collect();
        let kind = backend.kind();
        let result = model.session.run_in_place(model.token_inputs(&prompt, 0), state, &retain[..1]);
        if kind == BackendKind::Ort {
            let err = result.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("'present.0.") && err.contains("shape"), "{err}");
            continue;
        }
        let (_, kept, state) = result.unwrap();
        assert_same(&format!("{kind} logits"), &kept[0].to_tensor().unwrap(), &want[0].to_tensor().unwrap());
        for (s, w) in state.iter().zip(&want[1..]) {
            assert_same(&format!("{kind} {}", s.output), &s.value.to_tensor().unwrap(), &w.to_tensor().unwrap());
        }
    }
}
