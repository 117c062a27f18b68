//! Binary masks and their encodings: PNG (1-bit or 8-bit greyscale) and COCO run-length
//! encoding in pycocotools' compressed-string form, plus bounding box and area.

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// A binary mask, row-major, one byte per pixel (0 or 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinaryMask {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height` values, 0 or 1.
    pub data: Vec<u8>,
}

/// COCO-style run-length encoding: `counts` is pycocotools' compressed string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CocoRle {
    /// `[height, width]`.
    pub size: [u32; 2],
    /// Column-major run lengths, starting with a run of zeros, LEB128-like ASCII as
    /// `pycocotools.mask.encode` writes them.
    pub counts: String,
}

/// PNG bit depth for [`BinaryMask::to_png`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PngDepth {
    /// 1 bit per pixel (smallest).
    #[default]
    One,
    /// 8 bits per pixel, 0 or 255 (what most viewers and overlays expect).
    Eight,
}

impl BinaryMask {
    /// A mask from logits: 1 where `logit > threshold`.
    pub fn from_logits(width: u32, height: u32, logits: impl IntoIterator<Item = f32>, threshold: f32) -> BinaryMask {
        let data = logits.into_iter().map(|v| u8::from(v > threshold)).collect();
        BinaryMask { width, height, data }
    }

    /// Number of set pixels.
    pub fn area(&self) -> u64 {
        self.data.iter().map(|&v| u64::from(v)).sum()
    }

    /// COCO bounding box `[x, y, w, h]` of the set pixels (zeros if none), as pycocotools'
    /// `toBbox` computes it.
    pub fn bbox(&self) -> [u32; 4] {
        let (w, h) = (self.width as usize, self.height as usize);
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0usize, 0usize);
        for y in 0..h {
            for x in 0..w {
                if self.data[y * w + x] != 0 {
                    x0 = x0.min(x);
                    y0 = y0.min(y);
                    x1 = x1.max(x);
                    y1 = y1.max(y);
                }
            }
        }
        if x0 == usize::MAX {
            return [0; 4];
        }
        [x0 as u32, y0 as u32, (x1 - x0 + 1) as u32, (y1 - y0 + 1) as u32]
    }

    /// Intersection over union with another mask of the same size.
    pub fn iou(&self, other: &BinaryMask) -> f64 {
        let (mut inter, mut union) = (0u64, 0u64);
        for (a, b) in self.data.iter().zip(&other.data) {
            inter += u64::from(*a & *b);
            union += u64::from(*a | *b);
        }
        if union == 0 { 1.0 } else { inter as f64 / union as f64 }
    }

    /// Column-major run lengths starting with zeros (pycocotools' `rleEncode`).
    pub fn rle_counts(&self) -> Vec<u32> {
        let (w, h) = (self.width as usize, self.height as usize);
        let mut counts = Vec::new();
        let mut current = 0u8;
        let mut run = 0u32;
        for x in 0..w {
            for y in 0..h {
                let v = self.data[y * w + x];
                if v != current {
                    counts.push(run);
                    run = 0;
                    current = v;
                }
                run += 1;
            }
        }
        counts.push(run);
        counts
    }

    /// COCO RLE, compressed string form.
    pub fn to_coco_rle(&self) -> CocoRle {
        CocoRle { size: [self.height, self.width], counts: encode_counts(&self.rle_counts()) }
    }

    /// Decodes a COCO RLE (compressed string form).
    pub fn from_coco_rle(rle: &CocoRle) -> Result<BinaryMask> {
        let [height, width] = rle.size;
        let counts = decode_counts(&rle.counts)?;
        let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
        if total != u64::from(width) * u64::from(height) {
            return Err(ModelError::BadInput(format!("RLE covers {total} pixels, size says {width}x{height}")));
        }
        let (w, h) = (width as usize, height as usize);
        let mut data = vec![0u8; w * h];
        let mut i = 0usize;
        let mut value = 0u8;
        for c in counts {
            for _ in 0..c {
                let (x, y) = (i / h, i % h);
                data[y * w + x] = value;
                i += 1;
            }
            value ^= 1;
        }
        Ok(BinaryMask { width, height, data })
    }

    /// Encodes as a greyscale PNG (1-bit, or 8-bit with 0/255).
    pub fn to_png(&self, depth: PngDepth) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, self.width, self.height);
        encoder.set_color(png::ColorType::Grayscale);
        let w = self.width as usize;
        let pixels: Vec<u8> = match depth {
            PngDepth::Eight => {
                encoder.set_depth(png::BitDepth::Eight);
                self.data.iter().map(|&v| if v != 0 { 255 } else { 0 }).collect()
            }
            PngDepth::One => {
                encoder.set_depth(png::BitDepth::One);
                let stride = w.div_ceil(8);
                let mut packed = vec![0u8; stride * self.height as usize];
                for (y, row) in self.data.chunks(w.max(1)).enumerate() {
                    for (x, &v) in row.iter().enumerate() {
                        if v != 0 {
                            packed[y * stride + x / 8] |= 0x80 >> (x % 8);
                        }
                    }
                }
                packed
            }
        };
        let err = |e: png::EncodingError| ModelError::Config(format!("PNG encoding: {e}"));
        let mut writer = encoder.write_header().map_err(err)?;
        writer.write_image_data(&pixels).map_err(err)?;
        writer.finish().map_err(err)?;
        Ok(out)
    }
}

/// pycocotools' `rleToString`: LEB128-like, 5 data bits per character (offset 48), counts after
/// the third stored as differences to the count two before.
pub fn encode_counts(counts: &[u32]) -> String {
    let mut s = String::new();
    for (i, &c) in counts.iter().enumerate() {
        let mut x = i64::from(c);
        if i > 2 {
            x -= i64::from(counts[i - 2]);
        }
        loop {
            let mut ch = (x & 0x1f) as u8;
            x >>= 5;
            let more = if ch & 0x10 != 0 { x != -1 } else { x != 0 };
            if more {
                ch |= 0x20;
            }
            s.push(char::from(ch + 48));
            if !more {
                break;
            }
        }
    }
    s
}

/// pycocotools' `rleFrString`.
pub fn decode_counts(s: &str) -> Result<Vec<u32>> {
    let bytes = s.as_bytes();
    let mut counts: Vec<u32> = Vec::new();
    let mut p = 0;
    while p < bytes.len() {
        let mut x: i64 = 0;
        let mut k = 0;
        loop {
            let c = i64::from(bytes[p]) - 48;
            // 7 characters carry 35 bits: any u32 count or difference. More would shift past
            // the i64 (a fuzzer found that pycocotools' bound of 13 overflows).
            if !(0..64).contains(&c) || k >= 7 {
                return Err(ModelError::BadInput("malformed RLE counts string".into()));
            }
            x |= (c & 0x1f) << (5 * k);
            p += 1;
            k += 1;
            let more = c & 0x20 != 0;
            if !more {
                if c & 0x10 != 0 {
                    x |= -1i64 << (5 * k);
                }
                break;
            }
            if p >= bytes.len() {
                return Err(ModelError::BadInput("truncated RLE counts string".into()));
            }
        }
        if counts.len() > 2 {
            x += i64::from(counts[counts.len() - 2]);
        }
        let c = u32::try_from(x).map_err(|_| ModelError::BadInput("negative run in RLE counts".into()))?;
        counts.push(c);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(w: u32, h: u32, f: impl Fn(u32, u32) -> bool) -> BinaryMask {
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                data.push(u8::from(f(x, y)));
            }
        }
        BinaryMask { width: w, height: h, data }
    }

    #[test]
    fn overlong_rle_values_are_refused_not_overflowed() {
        // Found by fuzz/fuzz_targets/mask_encoding.rs: 13 continuation characters shifted a
        // sign extension by 65 bits.
        let e = decode_counts("20oooooooooooo@ooo").unwrap_err();
        assert!(e.is_input_error(), "{e}");
        assert!(decode_counts(&"o".repeat(6)).is_err(), "truncated");
        let big = [u32::MAX, 0, u32::MAX, 1, u32::MAX];
        assert_eq!(decode_counts(&encode_counts(&big)).unwrap(), big);
    }

    #[test]
    fn rle_round_trips_and_is_column_major() {
        // 2x3 (w=3,h=2): column-major order is (0,0),(0,1),(1,0),(1,1),(2,0),(2,1).
        let m = mask(3, 2, |x, y| x == 1 && y == 1);
        assert_eq!(m.rle_counts(), vec![3, 1, 2]);
        for m in [m, mask(37, 23, |x, y| (x * y + x) % 7 < 3), mask(5, 5, |_, _| true), mask(4, 4, |_, _| false)] {
            let rle = m.to_coco_rle();
            assert_eq!(BinaryMask::from_coco_rle(&rle).unwrap(), m);
        }
    }

    #[test]
    fn bbox_and_area() {
        let m = mask(10, 8, |x, y| (2..5).contains(&x) && (3..7).contains(&y));
        assert_eq!(m.area(), 12);
        assert_eq!(m.bbox(), [2, 3, 3, 4]);
        assert_eq!(mask(3, 3, |_, _| false).bbox(), [0; 4]);
    }

    #[test]
    fn pngs_decode_back_to_the_mask() {
        let m = mask(13, 5, |x, y| (x + y) % 3 == 0);
        for depth in [PngDepth::One, PngDepth::Eight] {
            let png = m.to_png(depth).unwrap();
            let img = image::load_from_memory(&png).unwrap().into_luma8();
            assert_eq!(img.dimensions(), (13, 5));
            for (x, y, p) in img.enumerate_pixels() {
                assert_eq!(p.0[0] != 0, m.data[(y * 13 + x) as usize] != 0);
            }
        }
    }

    #[test]
    fn malformed_rle_is_an_error() {
        assert!(decode_counts("\u{7f}").is_err());
        assert!(decode_counts("0\u{60}").is_err());
        let bad = CocoRle { size: [2, 2], counts: encode_counts(&[1, 1]) };
        assert!(BinaryMask::from_coco_rle(&bad).is_err());
    }
}
