//! Pillow-exact resampling of 8-bit RGB images, and the float resizes PyTorch applies to
//! tensors (mask logits; SAM 2's antialiased input resize).
//!
//! SAM and DINOv2 are trained on images resized by PIL (`Image.resize` with BILINEAR or BICUBIC,
//! antialiased when shrinking), so parity with the reference pre-processing needs the same
//! arithmetic, not just the same filter: separable convolution, horizontal pass first over the
//! rows the vertical pass needs, per-pixel weights normalised to sum 1, then converted to 22-bit
//! fixed point with round-half-away-from-zero, accumulation starting at one half, and the
//! intermediate image rounded and clamped to 8 bits between the passes. General-purpose resizers
//! differ from PIL by a level or two on real photos; this matches it.

/// A separable resampling filter: kernel and support (radius at scale 1).
#[derive(Clone, Copy, Debug)]
pub struct Filter {
    kernel: fn(f64) -> f64,
    support: f64,
}

/// PIL's BILINEAR (triangle).
pub const BILINEAR: Filter = Filter { kernel: triangle, support: 1.0 };
/// PIL's BICUBIC (Keys cubic, a = -0.5).
pub const BICUBIC: Filter = Filter { kernel: cubic, support: 2.0 };
/// PIL's LANCZOS (Lanczos-3).
pub const LANCZOS: Filter = Filter { kernel: lanczos3, support: 3.0 };

fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let px = x * std::f64::consts::PI;
        px.sin() / px
    }
}

fn lanczos3(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) { sinc(x) * sinc(x / 3.0) } else { 0.0 }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Fixed-point weights of each output position: the first input index, and the weights.
struct Coefficients {
    first: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

/// Normalised float weights of each output position (PIL's `precompute_coeffs`, which PyTorch's
/// antialiased interpolation also follows): the first input index, and the weights.
fn float_weights(in_size: usize, out_size: usize, filter: Filter) -> (Vec<usize>, Vec<Vec<f64>>) {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support * filter_scale;
    let inv = 1.0 / filter_scale;
    let mut first = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's (int) conversion truncates toward zero; clamp to the image.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64).max(xmin as i64) as usize;
        let mut w: Vec<f64> = (xmin..xmax).map(|x| (filter.kernel)((x as f64 - center + 0.5) * inv)).collect();
        let sum: f64 = w.iter().sum();
        if sum != 0.0 {
            w.iter_mut().for_each(|v| *v /= sum);
        }
        first.push(xmin);
        weights.push(w);
    }
    (first, weights)
}

fn coefficients(in_size: usize, out_size: usize, filter: Filter) -> Coefficients {
    let (first, float) = float_weights(in_size, out_size, filter);
    let one = f64::from(1u32 << PRECISION_BITS);
    let weights = float
        .iter()
        .map(|w| {
            w.iter()
                .map(|&v| if v < 0.0 { (v * one - 0.5).trunc() as i32 } else { (v * one + 0.5).trunc() as i32 })
                .collect()
        })
        .collect();
    Coefficients { first, weights }
}

/// Antialiased resize of planar float images (`channels` planes of `width` × `height`), as
/// PyTorch's `F.interpolate(..., antialias=True, align_corners=False)` and torchvision's tensor
/// `Resize` compute it: PIL's filter weights in floating point, horizontal pass then vertical,
/// no rounding in between. SAM 2 resizes its input this way, after scaling to 0..1.
pub fn resize_planes_f32(
    src: &[f32],
    channels: usize,
    (width, height): (usize, usize),
    (out_w, out_h): (usize, usize),
    filter: Filter,
) -> Vec<f32> {
    let (hx, hw) = float_weights(width, out_w, filter);
    let (vy, vw) = float_weights(height, out_h, filter);
    let mut out = vec![0f32; channels * out_w * out_h];
    let mut rows = vec![0f32; out_w * height];
    for c in 0..channels {
        let plane = &src[c * width * height..(c + 1) * width * height];
        for y in 0..height {
            let line = &plane[y * width..(y + 1) * width];
            for (xx, (&x0, w)) in hx.iter().zip(&hw).enumerate() {
                rows[y * out_w + xx] =
                    w.iter().enumerate().map(|(i, &k)| f64::from(line[x0 + i]) * k).sum::<f64>() as f32;
            }
        }
        let dst = &mut out[c * out_w * out_h..(c + 1) * out_w * out_h];
        for (yy, (&y0, w)) in vy.iter().zip(&vw).enumerate() {
            for x in 0..out_w {
                dst[yy * out_w + x] =
                    w.iter().enumerate().map(|(i, &k)| f64::from(rows[(y0 + i) * out_w + x]) * k).sum::<f64>() as f32;
            }
        }
    }
    out
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes interleaved RGB8 pixels (`width` × `height`) to `out_w` × `out_h` as PIL does.
pub fn resize_rgb8(data: &[u8], width: usize, height: usize, out_w: usize, out_h: usize, filter: Filter) -> Vec<u8> {
    let need_h = out_w != width;
    let need_v = out_h != height;
    let vert = coefficients(height, out_h, filter);
    // Rows of the source the vertical pass will read.
    let (row_first, row_last) = if need_v {
        let last = vert.first.last().copied().unwrap_or(0) + vert.weights.last().map(Vec::len).unwrap_or(0);
        (vert.first.first().copied().unwrap_or(0), last)
    } else {
        (0, height)
    };
    let half = 1i64 << (PRECISION_BITS - 1);
    let (mut cur, mut cur_w, mut cur_h, mut row_offset) = (std::borrow::Cow::Borrowed(data), width, height, 0usize);
    if need_h {
        let horiz = coefficients(width, out_w, filter);
        let rows = row_last - row_first;
        let mut out = vec![0u8; out_w * rows * 3];
        for y in 0..rows {
            let src = &data[(y + row_first) * width * 3..(y + row_first + 1) * width * 3];
            let dst = &mut out[y * out_w * 3..(y + 1) * out_w * 3];
            for xx in 0..out_w {
                let x0 = horiz.first[xx];
                let mut acc = [half; 3];
                for (i, &k) in horiz.weights[xx].iter().enumerate() {
                    let p = (x0 + i) * 3;
                    for c in 0..3 {
                        acc[c] += i64::from(src[p + c]) * i64::from(k);
                    }
                }
                for c in 0..3 {
                    dst[xx * 3 + c] = clip8(acc[c]);
                }
            }
        }
        cur = std::borrow::Cow::Owned(out);
        cur_w = out_w;
        cur_h = rows;
        row_offset = row_first;
    }
    if !need_v {
        return cur.into_owned();
    }
    let _ = cur_h;
    let mut out = vec![0u8; cur_w * out_h * 3];
    for yy in 0..out_h {
        let y0 = vert.first[yy] - row_offset;
        let dst = &mut out[yy * cur_w * 3..(yy + 1) * cur_w * 3];
        for x in 0..cur_w {
            let mut acc = [half; 3];
            for (i, &k) in vert.weights[yy].iter().enumerate() {
                let p = ((y0 + i) * cur_w + x) * 3;
                for c in 0..3 {
                    acc[c] += i64::from(cur[p + c]) * i64::from(k);
                }
            }
            for c in 0..3 {
                dst[x * 3 + c] = clip8(acc[c]);
            }
        }
    }
    out
}

/// PIL's NEAREST resize: source pixel `floor((x + 0.5) * in / out)`.
pub fn resize_nearest_rgb8(data: &[u8], width: usize, height: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    let mut out = vec![0u8; out_w * out_h * 3];
    let sx = width as f64 / out_w as f64;
    let sy = height as f64 / out_h as f64;
    for y in 0..out_h {
        let src_y = (((y as f64 + 0.5) * sy) as usize).min(height - 1);
        for x in 0..out_w {
            let src_x = (((x as f64 + 0.5) * sx) as usize).min(width - 1);
            let s = (src_y * width + src_x) * 3;
            out[(y * out_w + x) * 3..(y * out_w + x) * 3 + 3].copy_from_slice(&data[s..s + 3]);
        }
    }
    out
}

/// Bilinear resize of a float plane as PyTorch's `F.interpolate(mode="bilinear",
/// align_corners=False)` (no antialiasing): source coordinate `(dst + 0.5) * in/out - 0.5`,
/// clamped at 0, neighbours clamped at the edge. Used for mask logits.
pub fn resize_bilinear_f32(src: &[f32], width: usize, height: usize, out_w: usize, out_h: usize) -> Vec<f32> {
    let axis = |in_len: usize, out_len: usize| -> Vec<(usize, usize, f32)> {
        let scale = in_len as f32 / out_len as f32;
        (0..out_len)
            .map(|d| {
                let s = ((d as f32 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (s as usize).min(in_len - 1);
                let i1 = (i0 + 1).min(in_len - 1);
                (i0, i1, s - i0 as f32)
            })
            .collect()
    };
    let xs = axis(width, out_w);
    let ys = axis(height, out_h);
    let mut out = Vec::with_capacity(out_w * out_h);
    for &(y0, y1, ly) in &ys {
        for &(x0, x1, lx) in &xs {
            let top = src[y0 * width + x0] * (1.0 - lx) + src[y0 * width + x1] * lx;
            let bottom = src[y1 * width + x0] * (1.0 - lx) + src[y1 * width + x1] * lx;
            out.push(top * (1.0 - ly) + bottom * ly);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(451, 384), (200, 256), (1920, 1024), (7, 3)] {
            for f in [BILINEAR, BICUBIC, LANCZOS] {
                let c = coefficients(i, o, f);
                for w in &c.weights {
                    let s: i64 = w.iter().map(|&v| i64::from(v)).sum();
                    assert!((s - (1i64 << PRECISION_BITS)).abs() <= w.len() as i64, "{i}->{o}: {s}");
                }
            }
        }
    }

    #[test]
    fn float_bilinear_follows_torch() {
        // F.interpolate(torch.tensor([[[[0., 1.]]]]), size=(1, 4), mode="bilinear") = [0, .25, .75, 1]
        let out = resize_bilinear_f32(&[0.0, 1.0], 2, 1, 4, 1);
        assert_eq!(out, vec![0.0, 0.25, 0.75, 1.0]);
        let down = resize_bilinear_f32(&[0.0, 1.0, 2.0, 3.0], 4, 1, 2, 1);
        assert_eq!(down, vec![0.5, 2.5]);
    }

    #[test]
    fn antialiased_float_resize_follows_torch() {
        // x = [[0,1,2,3],[4,5,6,7]]; F.interpolate(x, size, mode="bilinear", antialias=True)
        let x: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let cases: [((usize, usize), &[f32]); 2] =
            [((2, 1), &[2.714_286, 4.285_715]), ((3, 3), &[0.3, 1.5, 2.7, 2.3, 3.5, 4.7, 4.3, 5.5, 6.7])];
        for (size, expected) in cases {
            let out = resize_planes_f32(&x, 1, (4, 2), size, BILINEAR);
            assert_eq!(out.len(), expected.len());
            for (a, b) in out.iter().zip(expected) {
                assert!((a - b).abs() < 1e-5, "{size:?}: {out:?} vs {expected:?}");
            }
        }
    }

    #[test]
    fn a_flat_image_stays_flat_and_identity_is_exact() {
        let data = vec![200u8; 10 * 8 * 3];
        let out = resize_rgb8(&data, 10, 8, 4, 13, BICUBIC);
        assert!(out.iter().all(|&v| v == 200));
        let ramp: Vec<u8> = (0..6 * 5 * 3).map(|v| v as u8).collect();
        assert_eq!(resize_rgb8(&ramp, 6, 5, 6, 5, BILINEAR), ramp);
    }
}
