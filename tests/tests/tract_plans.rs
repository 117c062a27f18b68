//! tract handles dynamic dimensions without re-optimising for shapes it has seen: one symbolic
//! plan where tract can (DINOv2, LLaMA with a growing KV cache), cached per-shape plans where it
//! cannot (the SAM decoder).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgeinfer_onnx::{BackendKind, ModelSource, SessionOptions, Tensor, TractPlanMode};
use edgeinfer_tests::{case_inputs, cases, fixtures};

fn tract() -> std::sync::Arc<dyn edgeinfer_onnx::Backend> {
    edgeinfer_onnx::backend(BackendKind::Tract, None).unwrap()
}

#[test]
fn the_sam_decoder_plans_once_per_point_count_and_reuses_plans() {
    let (dir, cases) = cases("sam");
    let session =
        tract().load(&ModelSource::File(fixtures().join("sam/decoder.onnx")), &SessionOptions::default()).unwrap();
    let decoder_cases: Vec<_> = cases.iter().filter(|c| c.model == "decoder.onnx").collect();
    for _ in 0..3 {
        for case in &decoder_cases {
            session.run(case_inputs(&dir, case)).unwrap();
        }
    }
    let stats = session.stats();
    assert_eq!(stats.runs, 3 * decoder_cases.len() as u64);
    // one_point (2 points), three_points (4), box (2, but has_mask_input differs: no), mask_prompt (3 points,
    // has_mask_input 1): the plans are keyed on shapes and the folded small inputs.
    assert!(stats.plans_built <= decoder_cases.len() as u64, "{stats:?}");
    assert!(stats.plans_built >= 3, "{stats:?}");
    let built = stats.plans_built;
    for case in &decoder_cases {
        session.run(case_inputs(&dir, case)).unwrap();
    }
    assert_eq!(session.stats().plans_built, built, "a seen shape was planned again");
}

#[test]
fn llama_decodes_step_after_step_on_one_symbolic_plan() {
    let (dir, cases) = cases("llama");
    let session =
        tract().load(&ModelSource::File(fixtures().join("llama/model.onnx")), &SessionOptions::default()).unwrap();
    let prefill = cases.iter().find(|c| c.name == "prefill").unwrap();
    let mut outputs = session.run(case_inputs(&dir, prefill)).unwrap();
    // Feed the presents back for a few decode steps: past length 14, 15, 16...
    let mut past_len = 14;
    for _ in 0..5 {
        let mut feed = vec![
            ("input_ids".to_string(), Tensor::from_shape_vec(&[1, 1], vec![5i64]).unwrap()),
            (
                "attention_mask".to_string(),
                Tensor::from_shape_vec(&[1, past_len + 1], vec![1i64; past_len + 1]).unwrap(),
            ),
            ("position_ids".to_string(), Tensor::from_shape_vec(&[1, 1], vec![past_len as i64]).unwrap()),
        ];
        for layer in 0..2 {
            for kind in ["key", "value"] {
                feed.push((
                    format!("past_key_values.{layer}.{kind}"),
                    outputs.take(&format!("present.{layer}.{kind}")).unwrap(),
                ));
            }
        }
        outputs = session.run(feed).unwrap();
        past_len += 1;
        assert_eq!(outputs.get("present.0.key").unwrap().shape(), &[1, 2, past_len, 16]);
    }
    assert_eq!(session.stats().plans_built, 1, "LLaMA should run on one symbolic plan");
}

#[test]
fn per_shape_mode_can_be_forced_and_is_bounded() {
    let options = SessionOptions { tract_plan: TractPlanMode::PerShape, tract_plan_cache: 2, ..Default::default() };
    let session = tract().load(&ModelSource::File(fixtures().join("dinov2/model.onnx")), &options).unwrap();
    let image = |h: usize, w: usize| {
        vec![("pixel_values".to_string(), Tensor::deterministic(edgeinfer_onnx::DType::F32, &[1, 3, h, w], 1).unwrap())]
    };
    for (h, w) in [(28, 28), (42, 28), (28, 28), (56, 56), (28, 28)] {
        session.run(image(h, w)).unwrap();
    }
    // 28x28, 42x28, 56x56 built; the LRU of 2 kept 28x28 (recently used) and evicted 42x28.
    assert_eq!(session.stats().plans_built, 3);
    session.run(image(42, 28)).unwrap();
    assert_eq!(session.stats().plans_built, 4);
}
