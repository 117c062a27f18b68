//! `edgeinfer local` as users run it: every family in-process through the real binary, JSON
//! answers checked against the PyTorch references, bad input as exit code 2 with the API code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn fixtures() -> std::path::PathBuf {
    edgeinfer_models::fixtures::fixtures_dir()
}

fn local(model: &str, args: &[&str]) -> Output {
    let dir = fixtures().join(model);
    Command::new(env!("CARGO_BIN_EXE_edgeinfer")).arg("local").arg("--model").arg(dir).args(args).output().unwrap()
}

fn json(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn segment_returns_the_reference_masks_and_writes_a_png() {
    let photo = fixtures().join("sam/photo.png");
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("mask.png");
    let out = local(
        "sam",
        &[
            "segment",
            photo.to_str().unwrap(),
            "--box",
            "40,15,150,110",
            "--json",
            "--png",
            png.to_str().unwrap(),
            "--png-depth",
            "1",
        ],
    );
    let r = json(&out);
    assert_eq!(r["kind"], "segmentation");
    assert_eq!((r["width"].as_u64(), r["height"].as_u64()), (Some(170), Some(120)));
    // The reference RLEs of the same prompt (pycocotools, from SamPredictor's masks).
    let reference: Vec<Value> =
        serde_json::from_slice(&std::fs::read(fixtures().join("sam/e2e/box.rle.json")).unwrap()).unwrap();
    let masks = r["masks"].as_array().unwrap();
    assert_eq!(masks.len(), 3);
    for (m, want) in masks.iter().zip(&reference) {
        assert!(m["png"].is_string(), "png requested");
        assert!(m["rle"].is_null());
        let _ = want;
    }
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (170, 120));
    // Default output: RLE strings equal pycocotools'.
    let r = json(&local("sam", &["segment", photo.to_str().unwrap(), "--box", "40,15,150,110", "--json"]));
    for (m, want) in r["masks"].as_array().unwrap().iter().zip(&reference) {
        assert_eq!(&m["rle"], want);
    }
}

#[test]
fn sam2_segments_from_the_cli_like_sam2_image_predictor() {
    let photo = fixtures().join("sam/photo.png");
    for (name, prompt) in [("box", vec!["--box", "40,15,150,110"]), ("point", vec!["--point", "100,60"])] {
        let mut args = vec!["segment", photo.to_str().unwrap(), "--json"];
        args.extend(prompt);
        let r = json(&local("sam2", &args));
        assert_eq!(r["kind"], "segmentation");
        let reference: Vec<Value> =
            serde_json::from_slice(&std::fs::read(fixtures().join(format!("sam2/e2e/{name}.rle.json"))).unwrap())
                .unwrap();
        let masks = r["masks"].as_array().unwrap();
        assert_eq!(masks.len(), 3, "{name}");
        for (m, want) in masks.iter().zip(&reference) {
            assert_eq!(&m["rle"], want, "{name}");
        }
    }
}

#[test]
fn embed_classify_and_the_gallery_work_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = dir.path().join("gallery.json");
    let g = gallery.to_str().unwrap();
    let photo = |n: &str| fixtures().join(format!("photos/{n}.png")).to_str().unwrap().to_string();
    let r = json(&local("dinov2", &["embed", &photo("chelsea"), &photo("coffee"), "--normalize", "--json"]));
    assert_eq!(r["dim"], 48);
    assert_eq!(r["embeddings"].as_array().unwrap().len(), 2);
    for (label, p) in [("cat", "chelsea"), ("mug", "coffee")] {
        let r = json(&local("dinov2", &["--gallery", g, "gallery", "add", "--label", label, &photo(p), "--json"]));
        assert_eq!(r["kind"], "gallery_added");
    }
    let r = json(&local("dinov2", &["--gallery", g, "classify", &photo("coffee"), "--json"]));
    assert_eq!(r["matches"][0]["label"], "mug");
    assert!((r["matches"][0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-4, "the same photo scores 1");
    let r = json(&local("dinov2", &["--gallery", g, "gallery", "list", "--json"]));
    assert_eq!(r["labels"], serde_json::json!([["cat", 1], ["mug", 1]]));
    let r = json(&local("dinov2", &["--gallery", g, "gallery", "remove", "--label", "cat", "--json"]));
    assert_eq!(r["removed"], 1);
    // The gallery files are the documented format, read here by NumPy (the ONNX Runtime venv of
    // the test command has it): a JSON Lines index whose live entries name rows of the .npy.
    let reader = r#"
import json, sys, numpy
lines = [json.loads(l) for l in open(sys.argv[1])]
header, ops = lines[0], lines[1:]
assert header["format"] == "edgeinfer-gallery" and header["version"] == 2, header
vectors = numpy.load(sys.argv[1].rsplit("/", 1)[0] + "/" + header["vectors"])
assert vectors.dtype == numpy.float32 and vectors.shape[1] == header["dim"], vectors.shape
live = {}
for op in ops:
    if "add" in op:
        live[op["add"]] = (op["label"], op["row"])
    else:
        live.pop(op["remove"])
print(json.dumps({l: vectors[r].tolist() for l, r in live.values()}))
"#;
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let out = std::process::Command::new(&python).args(["-c", reader, g]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stored: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mug: Vec<f64> = stored["mug"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(stored.as_object().unwrap().len(), 1, "{stored}");
    let expected = json(&local("dinov2", &["embed", &photo("coffee"), "--normalize", "--json"]));
    let expected: Vec<f64> =
        expected["embeddings"][0].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(mug.len(), 48);
    let dot: f64 = mug.iter().zip(&expected).map(|(a, b)| a * b).sum();
    assert!((dot - 1.0).abs() < 1e-4, "the stored row is the photo's normalised embedding (cosine {dot})");
}

#[test]
fn generate_json_has_the_reference_tokens_and_usage() {
    let reference: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("llama/golden/reference.json")).unwrap()).unwrap();
    let case = &reference["generate"][0];
    let out = local("llama", &["generate", case["prompt"].as_str().unwrap(), "--max-new-tokens", "40", "--json"]);
    let r = json(&out);
    assert_eq!(r["token_ids"], case["greedy_new_ids"]);
    assert_eq!(r["usage"]["generated_tokens"], 40);
    assert!(r["usage"]["tokens_per_second"].as_f64().unwrap() > 0.0);
    // Streaming mode prints the text as it comes, then the usage on stderr.
    let out = local("llama", &["generate", case["prompt"].as_str().unwrap(), "--max-new-tokens", "40"]);
    assert_eq!(out.status.code(), Some(0));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(printed.trim_end_matches('\n'), r["text"].as_str().unwrap());
    assert!(String::from_utf8_lossy(&out.stderr).contains("40 generated tokens"));
}

#[test]
fn bad_input_exits_2_with_the_api_code() {
    let photo = fixtures().join("sam/photo.png");
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "sam",
            vec!["segment".into(), photo.display().to_string(), "--point".into(), "900,1".into()],
            "bad_input: point (900, 1) is outside",
        ),
        ("sam", vec!["segment".into(), "/nonexistent.png".into(), "--point".into(), "1,1".into()], "cannot read image"),
        (
            "sam",
            vec![
                "segment".into(),
                fixtures().join("sam/decoder.onnx").display().to_string(),
                "--point".into(),
                "1,1".into(),
            ],
            "bad_input: cannot decode image",
        ),
        ("dinov2", vec!["generate".into(), "hi".into()], "is a dinov2 model; it does not do 'generate'"),
        ("dinov2", vec!["classify".into(), photo.display().to_string()], "no gallery configured"),
        ("llama", vec!["generate".into(), "robot ".repeat(300)], "too_large: the prompt has"),
    ];
    for (model, args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = local(model, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: expected '{expected}' in {err}");
    }
}

/// `fixture` re-laid as onnx-community publishes it: the JSON files at the top, the graph as
/// `onnx/model.onnx` (plus `extra` graphs, as other variants are named there).
fn onnx_community_layout(fixture: &str, extra: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let from = fixtures().join(fixture);
    std::fs::create_dir(dir.path().join("onnx")).unwrap();
    for entry in std::fs::read_dir(&from).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") {
            std::fs::copy(entry.path(), dir.path().join(&name)).unwrap();
        }
    }
    for graph in std::iter::once("model.onnx").chain(extra.iter().copied()) {
        std::fs::copy(from.join("model.onnx"), dir.path().join("onnx").join(graph)).unwrap();
    }
    dir
}

fn local_at(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgeinfer")).arg("local").arg("--model").arg(dir).args(args).output().unwrap()
}

/// Before: an onnx-community folder (graphs under `onnx/`) gave "no .onnx file" for DINOv2 and
/// "cannot tell which model family" for LLaMA. Now it loads by path alone, with the same answers
/// as the flat layout, and a variant the folder lacks is a one-line error naming what it has.
#[test]
fn onnx_community_folders_load_by_path_alone() {
    let photo = fixtures().join("photos/coffee.png");
    let photo = photo.to_str().unwrap();
    let flat = json(&local("dinov2", &["embed", photo, "--json"]));
    let dino = onnx_community_layout("dinov2", &["model_quantized.onnx"]);
    let r = json(&local_at(dino.path(), &["embed", photo, "--json"]));
    assert_eq!(r["embeddings"], flat["embeddings"]);
    let r = json(&local_at(dino.path(), &["--variant", "quantized", "embed", photo, "--json"]));
    assert_eq!(r["dim"], 48, "the quantized file name is found");
    let out = local_at(dino.path(), &["--variant", "q4", "embed", photo, "--json"]);
    assert_eq!(out.status.code(), Some(4), "not_loaded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no q4 graph") && err.contains("onnx/model_q4.onnx") && err.contains("variants fp32, quantized"),
        "{err}"
    );

    let reference: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("llama/golden/reference.json")).unwrap()).unwrap();
    let case = &reference["generate"][0];
    let llama = onnx_community_layout("llama", &[]);
    let r = json(&local_at(
        llama.path(),
        &["generate", case["prompt"].as_str().unwrap(), "--max-new-tokens", "40", "--json"],
    ));
    assert_eq!(r["token_ids"], case["greedy_new_ids"]);
}

/// The three masks of a `segment --json` answer on the 170 × 120 photo each have at least
/// `floor` IoU to transformers' fp32 masks in `golden` (a uint8 `[3, H, W]` .npy).
fn assert_masks_close(answer: &Value, golden: &Path, floor: f64, label: &str) {
    let edgeinfer_onnx::Tensor::U8(golden) = edgeinfer_onnx::Tensor::read_npy(golden).unwrap() else {
        panic!("masks are uint8")
    };
    let masks = answer["masks"].as_array().unwrap();
    assert_eq!(masks.len(), 3, "{label}");
    for (i, m) in masks.iter().enumerate() {
        let rle: edgeinfer_models::mask::CocoRle = serde_json::from_value(m["rle"].clone()).unwrap();
        let ours = edgeinfer_models::mask::BinaryMask::from_coco_rle(&rle).unwrap();
        let reference = edgeinfer_models::mask::BinaryMask {
            width: 170,
            height: 120,
            data: golden.index_axis(ndarray::Axis(0), i).iter().copied().collect(),
        };
        let iou = ours.iou(&reference);
        assert!(iou >= floor, "{label} mask {i}: IoU {iou} to transformers' fp32 mask");
    }
}

#[test]
fn a_transformers_js_sam_folder_segments_by_path_alone_in_each_variant() {
    // models/fixtures/sam-hf: graphs written by Optimum under onnx/, as Xenova/slimsam-* ships them.
    let photo = fixtures().join("sam/photo.png");
    let golden = fixtures().join("sam-hf/e2e/point.masks.npy");
    for (variant, floor) in [("fp32", 0.99), ("fp16", 0.9), ("quantized", 0.7)] {
        let r = json(&local(
            "sam-hf",
            &["--variant", variant, "segment", photo.to_str().unwrap(), "--point", "100,60", "--json"],
        ));
        assert_masks_close(&r, &golden, floor, variant);
    }
    // A box needs an input_boxes the Optimum export lacks: a typed error, exit code 2.
    let out = local("sam-hf", &["segment", photo.to_str().unwrap(), "--box", "40,15,150,110"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad_input") && err.contains("input_boxes"), "{err}");
}

#[test]
fn an_onnx_community_sam2_folder_segments_a_box_by_path_alone() {
    // models/fixtures/sam2-hf: onnx-community/sam2*-ONNX's layout (image_embeddings.0/1/2,
    // input_boxes), detected as SAM 2 from config.json and loaded by path alone.
    let photo = fixtures().join("sam/photo.png");
    let golden = fixtures().join("sam2-hf/e2e/box.masks.npy");
    for (variant, floor) in [("fp32", 0.99), ("fp16", 0.95), ("quantized", 0.85)] {
        let r = json(&local(
            "sam2-hf",
            &["--variant", variant, "segment", photo.to_str().unwrap(), "--box", "60,20,150,100", "--json"],
        ));
        assert_masks_close(&r, &golden, floor, variant);
    }
}
