//! Mask encodings: logits to a binary mask, COCO RLE (pycocotools' compressed counts) and PNG
//! (1-bit and 8-bit). Round trips must be exact; the PNGs are read back with the `png` crate.
//! Arbitrary strings are also fed to the RLE decoder.
//!
//! Input: width and height (u8 each, 0..=255), then logits as signed bytes (cycled to fill the
//! mask); the whole input is also tried as an RLE counts string.
#![no_main]

use edgeinfer_models::mask::{BinaryMask, CocoRle, PngDepth, decode_counts, encode_counts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_counts(&String::from_utf8_lossy(data));
    if data.len() < 3 {
        return;
    }
    let (width, height) = (u32::from(data[0]), u32::from(data[1]));
    let rle = CocoRle { size: [height, width], counts: String::from_utf8_lossy(&data[2..]).into_owned() };
    let _ = BinaryMask::from_coco_rle(&rle);

    let logits = &data[2..];
    let n = (width * height) as usize;
    let values = (0..n).map(|i| f32::from(logits[i % logits.len()] as i8) / 8.0);
    let mask = BinaryMask::from_logits(width, height, values, 0.0);
    assert_eq!(mask.data.len(), n);

    let counts = mask.rle_counts();
    assert_eq!(counts.iter().map(|&c| u64::from(c)).sum::<u64>(), n as u64);
    assert_eq!(decode_counts(&encode_counts(&counts)).unwrap(), counts);
    let rle = mask.to_coco_rle();
    assert_eq!(BinaryMask::from_coco_rle(&rle).unwrap(), mask);
    let area = mask.area();
    assert_eq!(area, mask.data.iter().map(|&v| u64::from(v)).sum::<u64>());
    // COCO's [x, y, w, h]: inside the mask, and empty only for an empty mask.
    let [x, y, w, h] = mask.bbox();
    if area > 0 {
        assert!(w >= 1 && h >= 1 && x + w <= width && y + h <= height, "bbox {x},{y},{w},{h}");
        assert!(u64::from(w) * u64::from(h) >= area);
    } else {
        assert_eq!([x, y, w, h], [0; 4]);
    }

    for depth in [PngDepth::One, PngDepth::Eight] {
        let Ok(png) = mask.to_png(depth) else {
            assert!(n == 0, "a {width}x{height} mask must encode");
            continue;
        };
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let frame = reader.next_frame(&mut buf).unwrap();
        assert_eq!((frame.width, frame.height), (width, height));
        for y in 0..height as usize {
            for x in 0..width as usize {
                let on = match depth {
                    PngDepth::One => buf[y * frame.line_size + x / 8] >> (7 - x % 8) & 1 == 1,
                    PngDepth::Eight => buf[y * frame.line_size + x] == 255,
                };
                assert_eq!(on, mask.data[y * width as usize + x] == 1, "pixel {x},{y} ({depth:?})");
            }
        }
    }
});
