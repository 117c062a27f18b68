//! Memory of one model in a fresh process: resident memory before loading, peak while loading
//! (the check that weights are not copied twice), and peak after one request (activations and
//! runtime arenas included). Used by `bench/pipelines.sh`.
//!
//!     cargo run --release --example load_rss -- <sam|dinov2|llama> <model dir> <tract|ort> [KEY=VALUE ...]
//!
//! (`KEY=VALUE`: ONNX Runtime session config entries, e.g. `session.disable_prepacking=1`.
//! `VARIANT=q4` in the environment loads that precision variant of a DINOv2 or LLaMA folder.
//! `WARM=1` first loads and drops the tiny DINOv2 fixture, then resets the peak (`clear_refs`):
//! the model's own cost in a process whose runtime is already initialised, as in a daemon that
//! serves several models; the backend column then says `(warm)`.)
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;

use edgeinfer_models::dinov2::{Dinov2, EmbedOptions};
use edgeinfer_models::image::{ImageInput, ImageLimits, decode};
use edgeinfer_models::layout::Variant;
use edgeinfer_models::llama::{GenerateRequest, Llama, PromptInput};
use edgeinfer_models::manifest::Family;
use edgeinfer_models::sam::{Point, Prompt, Sam, SegmentOptions};
use edgeinfer_onnx::{BackendKind, SessionOptions};

/// A `/proc/self/status` field in MiB.
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

/// The ONNX files (and external data) the model loads, in MiB.
fn onnx_mib(family: Family, dir: &Path, variant: Variant) -> f64 {
    let files = edgeinfer_models::manifest::model_files(family, dir, variant).unwrap();
    let bytes: u64 = files.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    bytes as f64 / 1048576.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (family, dir, kind) = (args[1].as_str(), Path::new(&args[2]), args[3].parse::<BackendKind>().unwrap());
    let backend = edgeinfer_onnx::backend(kind, None).unwrap();
    // Any further `KEY=VALUE` arguments are ONNX Runtime session config entries.
    let ort_config = args[4..].iter().filter_map(|a| a.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect();
    let options = SessionOptions { ort_config, ..Default::default() };
    let photo = std::fs::read(edgeinfer_tests::fixtures().join("photos/chelsea.png")).unwrap();
    let image = decode(ImageInput::Encoded(&photo), &ImageLimits::default()).unwrap();
    let variant = edgeinfer_tests::bench_variant();
    let warm = std::env::var_os("WARM").is_some_and(|v| v == "1");
    if warm {
        let probe = edgeinfer_tests::fixtures().join("dinov2");
        drop(Dinov2::load_variant(&probe, Variant::default(), backend.as_ref(), &options).unwrap());
        // "5" resets VmHWM to the current RSS (proc(5), /proc/pid/clear_refs).
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
    }
    let before = status_mib("VmRSS:");
    let (load_peak, run_peak) = match family {
        "sam" => {
            let model = Sam::load(dir, backend.as_ref(), &options).unwrap();
            let load = status_mib("VmHWM:");
            let embedding = model.embed(&image).unwrap();
            let prompt = Prompt { points: vec![Point { x: 200.0, y: 150.0, positive: true }], ..Default::default() };
            model.segment(&embedding, &prompt, &SegmentOptions::default()).unwrap();
            (load, status_mib("VmHWM:"))
        }
        "dinov2" => {
            let model = Dinov2::load_variant(dir, variant, backend.as_ref(), &options).unwrap();
            let load = status_mib("VmHWM:");
            model.embed(std::slice::from_ref(&image), &EmbedOptions::default()).unwrap();
            (load, status_mib("VmHWM:"))
        }
        "llama" => {
            let model = Llama::load_variant(dir, variant, backend.as_ref(), &options).unwrap();
            let load = status_mib("VmHWM:");
            let ids = (0..16).map(|i| 10 + i * 7).collect();
            let request = GenerateRequest {
                input: PromptInput::Ids(ids),
                max_new_tokens: Some(4),
                ignore_eos: true,
                ..Default::default()
            };
            model.complete(&request).unwrap();
            (load, status_mib("VmHWM:"))
        }
        other => panic!("unknown family {other}"),
    };
    let files = onnx_mib(family.parse().unwrap(), &dir.canonicalize().unwrap(), variant);
    let grown = load_peak - before;
    println!(
        "| {family} {variant} | {}{} | {files:.1} | {before:.1} | {grown:.1} | {:.2} | {run_peak:.1} |",
        kind.name(),
        if warm { " (warm)" } else { "" },
        grown / files
    );
}
