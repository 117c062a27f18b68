//! The SAM pipeline end to end against segment-anything's `SamPredictor`: from the same photo
//! and prompts in original-image pixels, our masks match the reference (IoU ≥ 0.99 per mask),
//! predicted IoUs within 1e-3, on both backends and both encoder layouts; RLE strings equal
//! pycocotools'. SAM 2 likewise against `SAM2ImagePredictor`, pre-processing included. SAM in the
//! transformers.js / Optimum layout (graphs written by Optimum) against transformers'
//! `SamProcessor` + `SamModel` + `post_process_masks`, loaded by path alone, every variant; SAM 2
//! in the onnx-community layout likewise against `Sam2Processor` + `Sam2Model`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use edgeinfer_models::image::{ImageInput, ImageLimits, RgbImage, decode};
use edgeinfer_models::layout::Variant;
use edgeinfer_models::mask::{BinaryMask, CocoRle};
use edgeinfer_models::sam::{
    BoxPrompt, DecoderLayout, Generation, ImageEmbedding, LowResMask, Point, Prompt, Sam, SegmentOptions,
};
use edgeinfer_onnx::{ModelSource, SessionOptions, Tensor};
use edgeinfer_tests::{backends, fixtures};
use serde_json::Value;

/// The fixture folder of each generation: SAM, SAM 2.
const SAM: &str = "sam";
const SAM2: &str = "sam2";
const SAM_HF: &str = "sam-hf";
const SAM2_HF: &str = "sam2-hf";

fn photo() -> RgbImage {
    // The same photo in both fixtures.
    let bytes = std::fs::read(fixtures().join("sam/photo.png")).unwrap();
    decode(ImageInput::Encoded(&bytes), &ImageLimits::default()).unwrap()
}

fn prompt(spec: &Value) -> Prompt {
    let mut p = Prompt::default();
    let coords = spec["point_coords"].as_array().or(spec["points"].as_array());
    let labels = spec["point_labels"].as_array().or(spec["labels"].as_array());
    if let (Some(coords), Some(labels)) = (coords, labels) {
        for (c, l) in coords.iter().zip(labels) {
            p.points.push(Point {
                x: c[0].as_f64().unwrap() as f32,
                y: c[1].as_f64().unwrap() as f32,
                positive: l.as_i64().unwrap() == 1,
            });
        }
    }
    if let Some(b) = spec["box"].as_array() {
        let v: Vec<f32> = b.iter().map(|x| x.as_f64().unwrap() as f32).collect();
        p.bbox = Some(BoxPrompt { x0: v[0], y0: v[1], x1: v[2], y1: v[3] });
    }
    p
}

fn golden_masks(fixture: &str, name: &str) -> (Vec<BinaryMask>, Vec<f32>) {
    let dir = fixtures().join(fixture).join("e2e");
    let masks = Tensor::read_npy(&dir.join(format!("{name}.masks.npy"))).unwrap();
    let Tensor::U8(masks) = masks else { panic!("masks are uint8") };
    let iou = Tensor::read_npy(&dir.join(format!("{name}.iou.npy"))).unwrap().into_f32().unwrap();
    let (k, h, w) = (masks.shape()[0], masks.shape()[1], masks.shape()[2]);
    let list = (0..k)
        .map(|i| BinaryMask {
            width: w as u32,
            height: h as u32,
            data: masks.index_axis(ndarray::Axis(0), i).iter().copied().collect(),
        })
        .collect();
    (list, iou.iter().copied().collect())
}

fn check_case(sam: &Sam, fixture: &str, label: &str, name: &str, p: &Prompt, options: &SegmentOptions) {
    let embedding = sam.embed(&photo()).unwrap();
    let ours = sam.segment(&embedding, p, options).unwrap();
    let (reference, iou) = golden_masks(fixture, name);
    assert_eq!(ours.len(), reference.len(), "{label} {name}");
    for (i, (m, r)) in ours.iter().zip(&reference).enumerate() {
        let overlap = m.mask.iou(r);
        println!("{label} {name}[{i}]: mask IoU {overlap:.5}, predicted IoU {:.5} vs {:.5}", m.score, iou[i]);
        assert!(overlap >= 0.99, "{label} {name}[{i}]: IoU {overlap}");
        assert!((m.score - iou[i]).abs() <= 1e-3, "{label} {name}[{i}]: {} vs {}", m.score, iou[i]);
        assert_eq!(m.area, m.mask.area());
    }
}

/// Each prompt is refused as bad input, with the expected words in the message.
fn assert_refused(sam: &Sam, embedding: &ImageEmbedding, cases: Vec<(Prompt, &str)>) {
    for (p, expected) in cases {
        let err = sam.segment(embedding, &p, &SegmentOptions::default()).unwrap_err();
        assert!(err.is_input_error(), "{err}");
        assert!(err.to_string().contains(expected), "expected '{expected}' in '{err}'");
    }
}

fn prompts(fixture: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join(fixture).join("e2e/prompts.json")).unwrap()).unwrap()
}

#[test]
fn masks_match_segment_anything_on_both_backends() {
    for backend in backends() {
        let sam = Sam::load(&fixtures().join("sam"), backend.as_ref(), &SessionOptions::default()).unwrap();
        check_every_prompt(&sam, SAM, backend.kind().name());
    }
}

/// Every recorded prompt of `fixture`: the four multimask ones, the single-mask one (SAM only:
/// the SAM 2 export has no single-mask answer of its own), and a refinement feeding the best
/// low-res mask of a previous answer back.
fn check_every_prompt(sam: &Sam, fixture: &str, label: &str) {
    let specs = prompts(fixture);
    for name in ["point", "points", "box", "box_and_point"] {
        check_case(sam, fixture, label, name, &prompt(&specs[name]), &SegmentOptions::default());
    }
    if fixture == SAM {
        let single = SegmentOptions { multimask: false, best_only: false };
        check_case(sam, fixture, label, "point_single", &prompt(&specs["point_single"]), &single);
    }
    let low = fixtures().join(fixture).join("e2e/refine.mask_input.npy");
    let low = Tensor::read_npy(&low).unwrap().into_f32().unwrap();
    let mut refine = prompt(&specs["refine"]);
    refine.mask_input = Some(LowResMask(low.into_dimensionality().unwrap()));
    check_case(sam, fixture, label, "refine", &refine, &SegmentOptions::default());
}

#[test]
fn a_decoder_without_in_graph_upsampling_gives_the_same_masks_on_both_backends() {
    // `decoder_lowres.onnx` returns only low-res masks; the pipeline upsamples the ones it returns.
    let dir = edgeinfer_tests::sam_folder_with_decoder(&fixtures().join(SAM), "decoder_lowres.onnx");
    for backend in backends() {
        let sam = Sam::load(dir.path(), backend.as_ref(), &SessionOptions::default()).unwrap();
        check_every_prompt(&sam, SAM, &format!("{}/low-res decoder", backend.kind().name()));
    }
}

#[test]
fn the_plain_encoder_layout_gives_the_same_masks() {
    let specs = prompts(SAM);
    let tract = edgeinfer_onnx::backend(edgeinfer_onnx::BackendKind::Tract, None).unwrap();
    let load = |f: &str| -> Arc<dyn edgeinfer_onnx::Session> {
        Arc::from(tract.load(&ModelSource::File(fixtures().join("sam").join(f)), &SessionOptions::default()).unwrap())
    };
    let sam = Sam::from_sessions(
        load("encoder_plain.onnx"),
        load("decoder.onnx"),
        None,
        [123.675, 116.28, 103.53],
        [58.395, 57.12, 57.375],
        0.0,
    )
    .unwrap();
    assert!(matches!(sam.layout(), edgeinfer_models::sam::EncoderLayout::Plain { .. }));
    assert_eq!(sam.image_size(), 128);
    check_case(&sam, SAM, "tract/plain", "box", &prompt(&specs["box"]), &SegmentOptions::default());
}

#[test]
fn best_only_picks_the_highest_predicted_iou() {
    let tract = edgeinfer_onnx::backend(edgeinfer_onnx::BackendKind::Tract, None).unwrap();
    let sam = Sam::load(&fixtures().join("sam"), tract.as_ref(), &SessionOptions::default()).unwrap();
    let embedding = sam.embed(&photo()).unwrap();
    let p = prompt(&prompts(SAM)["points"]);
    let all = sam.segment(&embedding, &p, &SegmentOptions::default()).unwrap();
    let best = sam.segment(&embedding, &p, &SegmentOptions { multimask: true, best_only: true }).unwrap();
    assert_eq!(best.len(), 1);
    let max = all.iter().map(|m| m.score).fold(f32::MIN, f32::max);
    assert_eq!(best[0].score, max);
}

#[test]
fn rle_strings_equal_pycocotools() {
    for name in ["point", "points", "box", "box_and_point", "refine"] {
        let (masks, _) = golden_masks(SAM, name);
        let reference: Vec<CocoRle> =
            serde_json::from_slice(&std::fs::read(fixtures().join(format!("sam/e2e/{name}.rle.json"))).unwrap())
                .unwrap();
        for (m, r) in masks.iter().zip(&reference) {
            assert_eq!(&m.to_coco_rle(), r, "{name}");
            assert_eq!(&BinaryMask::from_coco_rle(r).unwrap(), m);
        }
    }
}

#[test]
fn bad_prompts_are_typed_errors() {
    let tract = edgeinfer_onnx::backend(edgeinfer_onnx::BackendKind::Tract, None).unwrap();
    let sam = Sam::load(&fixtures().join("sam"), tract.as_ref(), &SessionOptions::default()).unwrap();
    let embedding = sam.embed(&photo()).unwrap(); // 170 x 120
    let pt = |x: f32, y: f32| Point { x, y, positive: true };
    let cases: Vec<(Prompt, &str)> = vec![
        (Prompt::default(), "at least one point or a box"),
        (Prompt { points: vec![pt(500.0, 10.0)], ..Default::default() }, "outside the 170x120 image"),
        (Prompt { points: vec![pt(-1.0, 10.0)], ..Default::default() }, "outside"),
        (Prompt { points: vec![pt(f32::NAN, 10.0)], ..Default::default() }, "outside"),
        (Prompt { bbox: Some(BoxPrompt { x0: 50.0, y0: 10.0, x1: 20.0, y1: 30.0 }), ..Default::default() }, "inverted"),
        (Prompt { points: vec![pt(1.0, 1.0); 70], ..Default::default() }, "the limit is 64"),
        (
            Prompt {
                points: vec![pt(1.0, 1.0)],
                mask_input: Some(LowResMask(ndarray::Array2::zeros((3, 3)))),
                ..Default::default()
            },
            "mask_input is (3, 3)",
        ),
    ];
    assert_refused(&sam, &embedding, cases);
}

#[test]
fn sam2_preprocessing_matches_sam2_transforms() {
    let tract = edgeinfer_onnx::backend(edgeinfer_onnx::BackendKind::Tract, None).unwrap();
    let sam = Sam::load(&fixtures().join(SAM2), tract.as_ref(), &SessionOptions::default()).unwrap();
    assert_eq!(sam.generation(), Generation::Sam2);
    let ours = sam.sam2_input(&photo()).unwrap();
    let reference = Tensor::read_npy(&fixtures().join("sam2/e2e/input_image.npy")).unwrap().into_f32().unwrap();
    assert_eq!(ours.shape(), reference.shape());
    let worst = ours.iter().zip(reference.iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    // Normalised values: 1/255 of the 0..1 range is 1/(255*0.229) = 0.017 here.
    println!("SAM 2 input: worst difference {worst:e}");
    assert!(worst <= 1e-4, "worst difference {worst}");
}

#[test]
fn sam2_masks_match_sam2_image_predictor_on_both_backends() {
    for backend in backends() {
        let sam = Sam::load(&fixtures().join(SAM2), backend.as_ref(), &SessionOptions::default()).unwrap();
        check_every_prompt(&sam, SAM2, backend.kind().name());
    }
}

#[test]
fn sam2_low_res_logits_and_rle_match_the_reference() {
    let tract = edgeinfer_onnx::backend(edgeinfer_onnx::BackendKind::Tract, None).unwrap();
    let sam = Sam::load(&fixtures().join(SAM2), tract.as_ref(), &SessionOptions::default()).unwrap();
    let embedding = sam.embed(&photo()).unwrap();
    assert_eq!(embedding.high_res_features.len(), 2);
    let specs = prompts(SAM2);
    for name in ["point", "box"] {
        let ours = sam.segment(&embedding, &prompt(&specs[name]), &SegmentOptions::default()).unwrap();
        let low =
            Tensor::read_npy(&fixtures().join(format!("sam2/e2e/{name}.low_res.npy"))).unwrap().into_f32().unwrap();
        for (i, m) in ours.iter().enumerate() {
            let reference = low.index_axis(ndarray::Axis(0), i);
            let worst = m.low_res.0.iter().zip(reference.iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst <= 1e-2, "{name}[{i}]: low-res logits differ by {worst}");
        }
        let (masks, _) = golden_masks(SAM2, name);
        let rle: Vec<CocoRle> =
            serde_json::from_slice(&std::fs::read(fixtures().join(format!("sam2/e2e/{name}.rle.json"))).unwrap())
                .unwrap();
        for (m, r) in masks.iter().zip(&rle) {
            assert_eq!(&m.to_coco_rle(), r, "{name}");
        }
    }
    // The export has no single-mask token: multimask = false answers the best candidate.
    let p = prompt(&specs["points"]);
    let all = sam.segment(&embedding, &p, &SegmentOptions::default()).unwrap();
    let single = sam.segment(&embedding, &p, &SegmentOptions { multimask: false, best_only: false }).unwrap();
    assert_eq!(single.len(), 1);
    assert_eq!(single[0].score, all.iter().map(|m| m.score).fold(f32::MIN, f32::max));
    // A SAM embedding is refused by the SAM 2 decoder with a typed error, not a graph failure.
    let sam1 = Sam::load(&fixtures().join(SAM), tract.as_ref(), &SessionOptions::default()).unwrap();
    let foreign = sam1.embed(&photo()).unwrap();
    let err = sam.segment(&foreign, &p, &SegmentOptions::default()).unwrap_err();
    assert!(err.is_input_error() && err.to_string().contains("SAM 2"), "{err}");
}

#[test]
fn transformers_layout_masks_match_sam_processor_on_both_backends() {
    let dir = fixtures().join(SAM_HF);
    assert_eq!(edgeinfer_models::manifest::detect(&dir).unwrap(), edgeinfer_models::manifest::Family::Sam);
    let specs = prompts(SAM_HF);
    for backend in backends() {
        let sam = Sam::load(&dir, backend.as_ref(), &SessionOptions::default()).unwrap();
        assert_eq!(sam.decoder_layout(), DecoderLayout::Transformers);
        // From preprocessor_config.json: pad size 128.
        assert_eq!(sam.image_size(), 128);
        for name in ["point", "points", "background"] {
            check_case(&sam, SAM_HF, backend.kind().name(), name, &prompt(&specs[name]), &SegmentOptions::default());
        }
        // No single-mask token in the export: multimask = false answers the best candidate.
        let embedding = sam.embed(&photo()).unwrap();
        let p = prompt(&specs["points"]);
        let all = sam.segment(&embedding, &p, &SegmentOptions::default()).unwrap();
        let single = sam.segment(&embedding, &p, &SegmentOptions { multimask: false, best_only: false }).unwrap();
        assert_eq!(single.len(), 1);
        assert_eq!(single[0].score, all.iter().map(|m| m.score).fold(f32::MIN, f32::max));
    }
}

#[test]
fn transformers_layout_variants_load_by_name_and_stay_close_to_fp32() {
    variants_stay_close_to_fp32(SAM_HF, &["point", "points", "background"]);
}

/// Each variant file of `fixture` runs through the whole pipeline on both backends; its masks
/// are compared with the fp32 graph's masks from the same backend. The tiny random-weight models
/// are fragile under 8-bit weights (fidelity.json: ORT's own quantized masks have IoU >= 0.78 to
/// PyTorch's), so the bar is what ORT itself reaches, not a trained model's 0.95.
fn variants_stay_close_to_fp32(fixture: &str, names: &[&str]) {
    let dir = fixtures().join(fixture);
    let fidelity: Value = serde_json::from_slice(&std::fs::read(dir.join("fidelity.json")).unwrap()).unwrap();
    let specs = prompts(fixture);
    for backend in backends() {
        let fp32 = Sam::load(&dir, backend.as_ref(), &SessionOptions::default()).unwrap();
        let reference = fp32.embed(&photo()).unwrap();
        for variant in [Variant::Fp16, Variant::Quantized] {
            let sam = Sam::load_variant(&dir, variant, backend.as_ref(), &SessionOptions::default()).unwrap();
            let embedding = sam.embed(&photo()).unwrap();
            let floor = fidelity[variant.name()]["mask_iou_min"].as_f64().unwrap() - 0.05;
            for name in names {
                let p = prompt(&specs[name]);
                let ours = sam.segment(&embedding, &p, &SegmentOptions::default()).unwrap();
                let full = fp32.segment(&reference, &p, &SegmentOptions::default()).unwrap();
                for (i, (a, b)) in ours.iter().zip(&full).enumerate() {
                    let iou = a.mask.iou(&b.mask);
                    let label = backend.kind().name();
                    println!("{fixture} {label} {variant} {name}[{i}]: mask IoU to fp32 {iou:.4}");
                    assert!(iou >= floor, "{fixture} {label} {variant} {name}[{i}]: IoU {iou} < {floor}");
                }
            }
        }
        let err = Sam::load_variant(&dir, Variant::Q4, backend.as_ref(), &SessionOptions::default()).err().unwrap();
        assert!(err.to_string().contains("fp32, fp16, quantized"), "{err}");
    }
}

#[test]
fn transformers_layout_refuses_what_its_decoder_cannot_take() {
    let tract = edgeinfer_onnx::backend(edgeinfer_onnx::BackendKind::Tract, None).unwrap();
    let sam = Sam::load(&fixtures().join(SAM_HF), tract.as_ref(), &SessionOptions::default()).unwrap();
    let embedding = sam.embed(&photo()).unwrap();
    let pt = Point { x: 10.0, y: 10.0, positive: true };
    let cases: Vec<(Prompt, &str)> = vec![
        (
            Prompt {
                points: vec![pt],
                bbox: Some(BoxPrompt { x0: 1.0, y0: 1.0, x1: 50.0, y1: 50.0 }),
                ..Default::default()
            },
            "no input_boxes",
        ),
        (
            Prompt {
                points: vec![pt],
                mask_input: Some(LowResMask(ndarray::Array2::zeros((64, 64)))),
                ..Default::default()
            },
            "no mask prompt",
        ),
    ];
    assert_refused(&sam, &embedding, cases);
}

#[test]
fn onnx_community_sam2_masks_match_sam2_processor_on_both_backends() {
    // models/fixtures/sam2-hf: transformers' Sam2Model in onnx-community/sam2*-ONNX's layout
    // (vision_encoder -> image_embeddings.0/1/2; input_boxes [1, 0, 4] without a box).
    let dir = fixtures().join(SAM2_HF);
    assert_eq!(edgeinfer_models::manifest::detect(&dir).unwrap(), edgeinfer_models::manifest::Family::Sam2);
    let specs = prompts(SAM2_HF);
    for backend in backends() {
        let sam = Sam::load(&dir, backend.as_ref(), &SessionOptions::default()).unwrap();
        assert_eq!(sam.generation(), Generation::Sam2);
        assert_eq!(sam.decoder_layout(), DecoderLayout::Sam2Transformers);
        // From preprocessor_config.json: size {height: 128, width: 128}.
        assert_eq!(sam.image_size(), 128);
        for name in ["point", "points", "background", "box", "box_point"] {
            check_case(&sam, SAM2_HF, backend.kind().name(), name, &prompt(&specs[name]), &SegmentOptions::default());
        }
        let embedding = sam.embed(&photo()).unwrap();
        let p = prompt(&specs["box_point"]);
        let all = sam.segment(&embedding, &p, &SegmentOptions::default()).unwrap();
        let single = sam.segment(&embedding, &p, &SegmentOptions { multimask: false, best_only: false }).unwrap();
        assert_eq!(single.len(), 1);
        assert_eq!(single[0].score, all.iter().map(|m| m.score).fold(f32::MIN, f32::max));
    }
}

#[test]
fn onnx_community_sam2_variants_load_by_name_and_stay_close_to_fp32() {
    variants_stay_close_to_fp32(SAM2_HF, &["point", "background", "box", "box_point"]);
}

#[test]
fn onnx_community_sam2_refuses_mask_prompts_and_foreign_embeddings() {
    let tract = edgeinfer_onnx::backend(edgeinfer_onnx::BackendKind::Tract, None).unwrap();
    let sam = Sam::load(&fixtures().join(SAM2_HF), tract.as_ref(), &SessionOptions::default()).unwrap();
    let embedding = sam.embed(&photo()).unwrap();
    let pt = Point { x: 10.0, y: 10.0, positive: true };
    let refine = Prompt {
        points: vec![pt],
        mask_input: Some(LowResMask(ndarray::Array2::zeros((32, 32)))),
        ..Default::default()
    };
    assert_refused(&sam, &embedding, vec![(refine, "no mask prompt")]);
    // A SAM embedding (no high-resolution maps) is refused with a typed error.
    let sam1 = Sam::load(&fixtures().join(SAM), tract.as_ref(), &SessionOptions::default()).unwrap();
    let foreign = sam1.embed(&photo()).unwrap();
    assert_refused(&sam, &foreign, vec![(Prompt { points: vec![pt], ..Default::default() }, "SAM 2")]);
}
