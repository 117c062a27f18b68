//! Image decode and each family's pre-processing, with arbitrary sizes: an encoded file (PNG,
//! JPEG, BMP, WebP) or raw RGB8 with any width and height, through `image::decode` under the
//! daemon's limits, then DINOv2's processor (the fixture's and a fuzzed one), SAM's longest-side
//! resize and padding, and SAM 2's fixed-size resize.
//!
//! Input: byte 0 picks raw (odd) or encoded; raw takes width and height from the next 4 bytes
//! (u16 each); byte 5 is the aspect-ratio cap; bytes 6..10 shape the fuzzed DINOv2 processor;
//! the rest is the image.
#![no_main]

use std::sync::OnceLock;

use edgeinfer_models::dinov2::{Preprocessor, ResizeTo};
use edgeinfer_models::fixtures::fixtures_dir;
use edgeinfer_models::image::{ImageInput, ImageLimits, Resample, decode};
use edgeinfer_models::sam::Sam;
use edgeinfer_onnx::{Backend, SessionOptions};
use libfuzzer_sys::fuzz_target;

struct Models {
    dinov2: Preprocessor,
    sam: Sam,
    sam2: Sam,
}

fn models() -> &'static Models {
    static MODELS: OnceLock<Models> = OnceLock::new();
    MODELS.get_or_init(|| {
        let tract = edgeinfer_onnx::tract::TractBackend::new();
        let backend: &dyn Backend = &tract;
        let dir = fixtures_dir();
        let options = SessionOptions::default();
        Models {
            dinov2: Preprocessor::from_file(&dir.join("dinov2/preprocessor_config.json")).unwrap(),
            sam: Sam::load(&dir.join("sam"), backend, &options).unwrap(),
            sam2: Sam::load(&dir.join("sam2"), backend, &options).unwrap(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let models = models();
    let (head, body) = data.split_at(10);
    // Small limits keep each run fast; the checks are the same at any size.
    let limits = ImageLimits { max_bytes: 1 << 20, max_pixels: 1 << 20, max_aspect_ratio: u32::from(head[5]) };
    let input = if head[0] & 1 == 1 {
        let width = u32::from(u16::from_le_bytes([head[1], head[2]]));
        let height = u32::from(u16::from_le_bytes([head[3], head[4]]));
        ImageInput::Rgb8 { width, height, data: body }
    } else {
        ImageInput::Encoded(body)
    };
    let Ok(image) = decode(input, &limits) else { return };

    let _ = models.dinov2.apply(&image);
    // A processor as a model's preprocessor_config.json could set it (sizes up to 1023).
    let side = |b: u8| 1 + u32::from(b) * 4;
    let fuzzed = Preprocessor {
        resize: match head[6] % 3 {
            0 => None,
            1 => Some(ResizeTo::ShortestEdge {
                shortest: side(head[7]),
                longest: (head[8] > 127).then(|| side(head[8])),
            }),
            _ => Some(ResizeTo::Exact { width: side(head[7]), height: side(head[8]) }),
        },
        resample: Resample::from_pil_code(u32::from(head[9] % 6)).unwrap_or(Resample::Bilinear),
        crop: (head[9] & 0x80 != 0).then(|| (side(head[8]), side(head[7]))),
        rescale: Some(1.0 / 255.0),
        normalize: None,
    };
    let _ = fuzzed.apply(&image);
    let _ = models.sam.encoder_input(&image);
    let _ = models.sam2.sam2_input(&image);
});
