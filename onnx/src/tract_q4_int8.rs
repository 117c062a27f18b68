//! Int8 compute for [`crate::tract_q4_matmul`]: what `MatMulNBits` asks for with
//! `accuracy_level = 4`, on CPUs with AVX-512 VNNI (and BW, VL), or with AVX2 and FMA.
//!
//! With that attribute ONNX Runtime's CPU kernels (MLAS `CompInt8`) quantise each row of `A` to
//! int8 per weight block before the product: `s = max|a| / 127`, `q = round_half_even(a · 127 /
//! max|a|)`, then `Σ_blocks s_a · s_w · Σ q_a · (q_w - z)`. onnxruntime-genai's model builder
//! writes it for every CPU int4 model, and `models/export/quantize.py --accuracy-level 4` for the
//! q4 graphs we benchmark. This module computes the same quantisation and the same sum, so a file
//! gives the numbers it was made for on both backends (the probe test holds ONNX Runtime and tract
//! to numpy's int8 reference); every other level keeps the float32 kernel.
//!
//! The kernel takes four 32-code steps of a weight row at a time: 64 bytes of nibbles split into
//! their low (even codes) and high (odd codes) halves, each multiplied against 64 int8
//! activations by one `vpdpbusd` (products summed in fours into 16 int32 lanes, four lanes per
//! step), then scaled per step in f32, four weight rows at a time. The zero point is not
//! subtracted code by code: `Σ q_a · z` is `z · Σ q_a`, a per-block sum of `A` computed once per
//! row of `A` and taken off at the end. The weight is read as the file stores it, the same
//! nibbles, scales and zero points as the float32 kernel's (no second copy). Without VNNI the
//! AVX2 kernel takes the same quads in two halves of two steps, through `vpmaddubsw` and
//! `vpmaddwd` from the same quantised `A`, into the same four int32 lanes per step.
//!
//! Measured on a 2-core AVX-512 VM (LLaMA-135M-sized weights, 30 layers' matmuls of one decode
//! step): 4 ms against 10-12 ms for the float32 kernel when one layer's weights sit in cache,
//! 11-13 ms against 14-18 ms when every layer comes from memory. There a step reads 70 MB, so the
//! kernel is bound by memory bandwidth, and splitting a decode step's matmuls over two threads did
//! not help either kernel. On a 2-core AMD EPYC (AVX2): 7-8 ms in cache, 13 ms from memory, where
//! reading the same bytes alone takes 11-12 ms; 24-25 ms from memory before the AVX2 kernel
//! prefetched the rows ahead (a weight row is 288-768 bytes, too short a stream for the hardware
//! prefetcher, and the loads waited on memory).

use std::ops::Range;

#[cfg(target_arch = "x86_64")]
use crate::tract_q4_matmul::{AHEAD, prefetch_lines, sum_lanes};

/// Codes per 32-code step, as in [`crate::tract_q4_matmul`].
const STEP: usize = 32;

/// Steps per kernel iteration.
const QUAD: usize = 4;

/// Bytes of one quad of quantised `A`: the even codes of its four steps, then the odd ones.
const QUAD_BYTES: usize = 2 * QUAD * STEP / 2;

/// Int32 lanes of the kernel's sums per quad (a 512-bit vector), four per step.
const LANES: usize = 16;

/// Weight rows the kernel computes together.
const GROUP: usize = 4;

/// Whether this CPU has one of the kernels' instruction sets ([`Kernel`]).
pub(crate) fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        Kernel::detect().is_some()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The int8 kernel this CPU runs.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// The int8 dot-product instruction (AVX-512 VNNI), and byte-masked loads (AVX-512 BW, VL).
    Vnni,
    /// `vpmaddubsw` and `vpmaddwd` (AVX2), and FMA: two steps at a time.
    Avx2,
}

#[cfg(target_arch = "x86_64")]
impl Kernel {
    fn detect() -> Option<Kernel> {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vnni") {
            Some(Kernel::Vnni)
        } else if has!("avx2") && has!("fma") {
            Some(Kernel::Avx2)
        } else {
            None
        }
    }
}

/// Rows of `A` quantised per block as `MatMulNBits` with `accuracy_level = 4` does, laid out for
/// the kernel, with zeros after the last step up to a whole quad.
pub(crate) struct QuantizedA {
    quads: usize,
    /// Per row and quad: the four steps' even codes (16 each), then their odd codes.
    codes: Vec<i8>,
    /// Per row and quad: each step's block scale `s_a` four times, as the kernel's int32 lanes
    /// hold the step's products (`LANES` per quad).
    scales: Vec<f32>,
    blocks: usize,
    /// Per row and block: `s_a · Σ q_a` over the block (the zero point's term).
    sums: Vec<f32>,
    /// Where each quad's steps lie in a weight row: the same for every row of `A` and of the
    /// weight, so worked out once per product.
    #[cfg(target_arch = "x86_64")]
    plan: Vec<Quad>,
}

/// One row of [`QuantizedA`].
#[derive(Clone, Copy)]
struct ARow<'a> {
    codes: &'a [i8],
    scales: &'a [f32],
    sums: &'a [f32],
    #[cfg(target_arch = "x86_64")]
    plan: &'a [Quad],
}

impl QuantizedA {
    /// Quantises the `m` rows of `a` (`[m, K]`) in blocks of `block_size` (a multiple of 32 that
    /// divides `K`, checked by [`crate::tract_q4_matmul::Q4Weight::new`]).
    pub(crate) fn new(a: &[f32], m: usize, k: usize, block_size: usize) -> QuantizedA {
        let steps = k / STEP;
        let quads = steps.div_ceil(QUAD);
        let mut codes = vec![0i8; m * quads * QUAD_BYTES];
        let mut scales = vec![0f32; m * quads * LANES];
        let blocks = k / block_size;
        let mut sums = vec![0f32; m * blocks];
        for row in 0..m {
            let a = &a[row * k..(row + 1) * k];
            let codes = &mut codes[row * quads * QUAD_BYTES..(row + 1) * quads * QUAD_BYTES];
            for (block_index, block) in a.chunks_exact(block_size).enumerate() {
                let (scale, inverse) = block_scale(block);
                let mut sum = 0i32;
                for (i, step_values) in block.chunks_exact(STEP).enumerate() {
                    let step = block_index * block_size / STEP + i;
                    let (quad, within) = (step / QUAD, step % QUAD);
                    for (j, value) in step_values.iter().enumerate() {
                        let q = quantize(*value, inverse);
                        sum += i32::from(q);
                        // Even codes first, then odd ones, each step's 16 after the previous step's.
                        let half = (j % 2) * QUAD * STEP / 2;
                        codes[quad * QUAD_BYTES + half + within * STEP / 2 + j / 2] = q;
                    }
                    let lanes = row * quads * LANES + step * LANES / QUAD;
                    scales[lanes..lanes + LANES / QUAD].fill(scale);
                }
                sums[row * blocks + block_index] = scale * sum as f32;
            }
        }
        QuantizedA {
            quads,
            codes,
            scales,
            blocks,
            sums,
            #[cfg(target_arch = "x86_64")]
            plan: quad_plan(steps, block_size / STEP),
        }
    }

    fn row(&self, row: usize) -> ARow<'_> {
        let lanes = self.quads * LANES;
        ARow {
            codes: &self.codes[row * self.quads * QUAD_BYTES..(row + 1) * self.quads * QUAD_BYTES],
            scales: &self.scales[row * lanes..(row + 1) * lanes],
            sums: &self.sums[row * self.blocks..(row + 1) * self.blocks],
            #[cfg(target_arch = "x86_64")]
            plan: &self.plan,
        }
    }
}

/// A block's scale `max|a| / 127` and the factor that quantises it (`127 / max|a|`, 0 for an all-zero
/// block), as ONNX Runtime's MLAS computes them.
fn block_scale(block: &[f32]) -> (f32, f32) {
    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
    let inverse = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    (amax / 127.0, inverse)
}

/// `round_half_even(value · inverse)`, in `[-127, 127]` for a value of its block. Adding 1.5 · 2²³
/// leaves a float32 of that size no fraction bits, so the sum rounds to an integer, ties to even
/// (the floating-point environment's default), and taking it off again is exact: the rounding
/// without a call to `rintf` (3 % of a decode step's matmuls before).
fn quantize(value: f32, inverse: f32) -> i8 {
    const ROUND: f32 = 12_582_912.0;
    ((value * inverse + ROUND) - ROUND) as i8
}

/// A 4-bit weight as the kernel reads it: `[N, K / 2]` bytes of nibbles, and `[N, blocks]`
/// scales, and (unpacked) zero points `zero_stride` apart per row (0: one row all rows share).
#[derive(Clone, Copy)]
pub(crate) struct WeightView<'a> {
    pub(crate) k: usize,
    pub(crate) block_size: usize,
    pub(crate) codes: &'a [u8],
    pub(crate) scales: &'a [f32],
    pub(crate) zero_points: &'a [u8],
    pub(crate) zero_stride: usize,
}

impl WeightView<'_> {
    fn row(&self, n: usize) -> WeightView<'_> {
        let blocks = self.k / self.block_size;
        WeightView {
            codes: &self.codes[n * self.k / 2..(n + 1) * self.k / 2],
            scales: &self.scales[n * blocks..(n + 1) * blocks],
            zero_points: &self.zero_points[n * self.zero_stride..n * self.zero_stride + blocks],
            zero_stride: 0,
            ..*self
        }
    }
}

/// `Σ_blocks s_a · s_w · Σ q_a · (q_w - z)` for weight rows `rows` against row `a_row` of `a`,
/// into `out` (one value per row).
pub(crate) fn rows(weight: WeightView, rows: Range<usize>, a: &QuantizedA, a_row: usize, out: &mut [f32]) {
    let a = a.row(a_row);
    let (k, block_size) = (weight.k, weight.block_size);
    let blocks = k / block_size;
    let steps = k / STEP;
    assert!(block_size.is_multiple_of(STEP) && k.is_multiple_of(block_size) && out.len() == rows.len());
    assert!(weight.codes.len() >= rows.end * k / 2);
    assert!(weight.scales.len() >= rows.end * blocks);
    assert!(rows.is_empty() || weight.zero_points.len() >= (rows.end - 1) * weight.zero_stride + blocks);
    assert!(a.sums.len() == blocks && a.scales.len() == steps.div_ceil(QUAD) * LANES);
    assert!(a.codes.len() == steps.div_ceil(QUAD) * QUAD_BYTES);
    #[cfg(target_arch = "x86_64")]
    assert!(a.plan.len() == steps.div_ceil(QUAD));
    // SAFETY: the CPU has the kernel's instructions (just detected). The weight has `k / 2` bytes
    // of codes and `blocks` scales and zero points for each of `rows`, `a` holds whole quads
    // covering `steps` (and their plan) and `blocks` sums, and `out` a value per row (asserted
    // above), and `in_groups` asks only for rows inside `rows`; the kernels read what a partial
    // quad or a last group of blocks has with masked or narrower loads.
    #[cfg(target_arch = "x86_64")]
    match Kernel::detect() {
        #[allow(unsafe_code)]
        Some(Kernel::Vnni) => {
            return in_groups(
                rows,
                out,
                |n| unsafe { group_vnni(&weight, n, a) },
                |n| unsafe { group_vnni(&weight, n, a) },
            );
        }
        #[allow(unsafe_code)]
        Some(Kernel::Avx2) => {
            return in_groups(
                rows,
                out,
                |n| unsafe { group_avx2(&weight, n, a) },
                |n| unsafe { group_avx2(&weight, n, a) },
            );
        }
        None => {}
    }
    for (n, out) in rows.zip(out) {
        *out = dot_scalar(weight.row(n), a);
    }
}

/// One row of [`rows`] in plain Rust: the reference for the vector version.
fn dot_scalar(w: WeightView, a: ARow) -> f32 {
    let per_block = w.block_size / STEP;
    let mut total = 0f32;
    for (step, bytes) in w.codes.chunks_exact(STEP / 2).enumerate() {
        let (quad, within) = (step / QUAD, step % QUAD);
        let even = &a.codes[quad * QUAD_BYTES + within * STEP / 2..][..STEP / 2];
        let odd = &a.codes[quad * QUAD_BYTES + QUAD * STEP / 2 + within * STEP / 2..][..STEP / 2];
        let mut sum = 0i32;
        for (i, byte) in bytes.iter().enumerate() {
            sum += i32::from(byte & 0x0F) * i32::from(even[i]) + i32::from(byte >> 4) * i32::from(odd[i]);
        }
        total += sum as f32 * (w.scales[step / per_block] * a.scales[quad * LANES + within * LANES / QUAD]);
    }
    let zero_term: f32 = (0..a.sums.len()).map(|b| w.scales[b] * f32::from(w.zero_points[b]) * a.sums[b]).sum();
    total - zero_term
}

/// Fills `out` (one value per row of `rows`) from a kernel's `four` ([`GROUP`] weight rows from
/// the one given) and `one` (that row alone): groups first, then the rows left over.
#[cfg(target_arch = "x86_64")]
fn in_groups(
    rows: Range<usize>,
    out: &mut [f32],
    four: impl Fn(usize) -> [f32; GROUP],
    one: impl Fn(usize) -> [f32; 1],
) {
    for (i, values) in out.chunks_mut(GROUP).enumerate() {
        let first = rows.start + i * GROUP;
        match <&mut [f32; GROUP]>::try_from(&mut *values) {
            Ok(group) => *group = four(first),
            Err(_) => values.iter_mut().enumerate().for_each(|(j, value)| [*value] = one(first + j)),
        }
    }
}

/// What the kernel needs to know of one quad, the same for every weight row.
#[cfg(target_arch = "x86_64")]
struct Quad {
    /// The first code byte of the quad in a weight row.
    first_byte: usize,
    /// The int32 lanes of the steps the quad has (all but in a partial last quad).
    lanes: u16,
    /// The first block of the quad's steps, and how many blocks they span (a mask of them).
    first_block: usize,
    blocks: u16,
    /// For each int32 lane, its step's block counted from `first_block`.
    lane_blocks: [i32; LANES],
    /// `blocks` as the AVX2 kernel's load mask: -1 for each block the quad spans (at most four).
    block_mask: [i32; QUAD],
}

#[cfg(target_arch = "x86_64")]
fn quad_plan(steps: usize, per_block: usize) -> Vec<Quad> {
    (0..steps.div_ceil(QUAD))
        .map(|quad| {
            let first = quad * QUAD;
            let in_quad = (steps - first).min(QUAD);
            let first_block = first / per_block;
            let block_count = (first + in_quad - 1) / per_block - first_block + 1;
            Quad {
                first_byte: first * STEP / 2,
                lanes: if in_quad == QUAD { u16::MAX } else { (1 << (LANES / QUAD * in_quad)) - 1 },
                first_block,
                blocks: (1 << block_count) - 1,
                lane_blocks: std::array::from_fn(|l| {
                    let step = first + (l / (LANES / QUAD)).min(in_quad - 1);
                    (step / per_block - first_block) as i32
                }),
                block_mask: std::array::from_fn(|b| if b < block_count { -1 } else { 0 }),
            }
        })
        .collect()
}

/// Weight rows `first_row..first_row + R` against `a`, the rows [`AHEAD`] on prefetched
/// meanwhile, as in [`group_avx2`].
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn group_vnni<const R: usize>(weight: &WeightView, first_row: usize, a: ARow) -> [f32; R] {
    use std::arch::x86_64::*;
    let blocks = weight.k / weight.block_size;
    let codes: [*const u8; R] = std::array::from_fn(|r| weight.codes[(first_row + r) * weight.k / 2..].as_ptr());
    let scales: [*const f32; R] = std::array::from_fn(|r| weight.scales[(first_row + r) * blocks..].as_ptr());
    let zero_points: [*const u8; R] =
        std::array::from_fn(|r| weight.zero_points[(first_row + r) * weight.zero_stride..].as_ptr());
    // The group's rows are consecutive: `R · K / 2` bytes of codes and `R · blocks` scales.
    // Prefetches never fault, past the weight's end included.
    let ahead_codes = codes[0].wrapping_add(AHEAD * weight.k / 2).cast::<i8>();
    let ahead_scales = scales[0].wrapping_add(AHEAD * blocks).cast::<i8>();
    prefetch_lines(ahead_scales, R * blocks * 4);
    let low = _mm512_set1_epi8(0x0F);
    let mut totals = [_mm512_setzero_ps(); R];
    for (index, quad) in a.plan.iter().enumerate() {
        for line in 0..R {
            _mm_prefetch::<_MM_HINT_T0>(ahead_codes.wrapping_add((index * R + line) * 64));
        }
        // SAFETY: `a` holds whole quads: 128 bytes and 16 lane scales each. `lane_blocks` is 16
        // i32s. Unaligned loads.
        let (a_even, a_odd, a_scales, lane_blocks) = unsafe {
            let base = a.codes.as_ptr().add(index * QUAD_BYTES);
            (
                _mm512_loadu_si512(base.cast()),
                _mm512_loadu_si512(base.add(QUAD_BYTES / 2).cast()),
                _mm512_loadu_ps(a.scales.as_ptr().add(index * LANES)),
                _mm512_loadu_si512(quad.lane_blocks.as_ptr().cast()),
            )
        };
        for r in 0..R {
            // SAFETY: each row has `K / 2` bytes of codes and `blocks` scales; the masks leave
            // out what lies past its last step and block.
            let (bytes, w_scales) = unsafe {
                (
                    _mm512_maskz_loadu_epi32(quad.lanes, codes[r].add(quad.first_byte).cast()),
                    _mm512_maskz_loadu_ps(quad.blocks, scales[r].add(quad.first_block)),
                )
            };
            let even = _mm512_and_si512(bytes, low);
            let odd = _mm512_and_si512(_mm512_srli_epi32(bytes, 4), low);
            let products = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), even, a_even), odd, a_odd);
            let scale = _mm512_mul_ps(_mm512_permutexvar_ps(lane_blocks, w_scales), a_scales);
            totals[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(products), scale, totals[r]);
        }
    }
    // The zero points' term, sixteen blocks at a time, taken off the totals.
    for first in (0..blocks).step_by(16) {
        let count = (blocks - first).min(16);
        let mask: __mmask16 = if count == 16 { u16::MAX } else { (1 << count) - 1 };
        // SAFETY: `a` has `blocks` sums, each row `blocks` scales and zero points; the mask
        // leaves out the rest.
        let sums = unsafe { _mm512_maskz_loadu_ps(mask, a.sums.as_ptr().add(first)) };
        for r in 0..R {
            // SAFETY: as above.
            let (w_scales, zero) = unsafe {
                (
                    _mm512_maskz_loadu_ps(mask, scales[r].add(first)),
                    _mm_maskz_loadu_epi8(mask, zero_points[r].add(first).cast()),
                )
            };
            let zero = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(zero));
            totals[r] = _mm512_fnmadd_ps(_mm512_mul_ps(w_scales, zero), sums, totals[r]);
        }
    }
    std::array::from_fn(|r| _mm512_reduce_add_ps(totals[r]))
}

/// Weight rows `first_row..first_row + R` against `a`, a quad of four 32-code steps at a time in
/// two halves: a step's 16 bytes of nibbles split into even and odd codes, each half's codes
/// (unsigned) times 32 int8 activations by `vpmaddubsw` (at most 2 · 15 · 127 a pair, well inside
/// i16), the even and odd products added and summed in fours into 8 int32 lanes by `vpmaddwd`:
/// four lanes per step, as the VNNI kernel's. A row's scales for the quad are one (masked) load,
/// spread over the lanes by the plan's `lane_blocks`. The steps after the last whole quad go two
/// (or one) at a time; the zero points' term is taken off per block at the end.
///
/// The rows [`AHEAD`] on are prefetched meanwhile: a row of a decode step's weight is a few cache
/// lines, too short a stream for the hardware prefetcher: with the prefetch alone the matmuls of
/// a LLaMA-135M decode step went from 24-25 to about 19 ms.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn group_avx2<const R: usize>(weight: &WeightView, first_row: usize, a: ARow) -> [f32; R] {
    use std::arch::x86_64::*;
    let (k, per_block) = (weight.k, weight.block_size / STEP);
    let (steps, blocks, row_bytes) = (k / STEP, k / weight.block_size, k / 2);
    assert!(weight.codes.len() >= (first_row + R) * row_bytes && weight.scales.len() >= (first_row + R) * blocks);
    // Row `r` of the group: `row_bytes` of codes from `codes + r * row_bytes`, `blocks` scales
    // from `scales + r * blocks` (asserted above).
    let codes = weight.codes[first_row * row_bytes..].as_ptr();
    let scales = weight.scales[first_row * blocks..].as_ptr();
    // Prefetches never fault, past the weight's end included.
    let ahead_codes = codes.wrapping_add(AHEAD * row_bytes).cast::<i8>();
    let ahead_scales = scales.wrapping_add(AHEAD * blocks).cast::<i8>();
    prefetch_lines(ahead_scales, R * blocks * 4);
    let mut totals = [[_mm256_setzero_ps(); 2]; R];
    let whole_quads = steps / QUAD;
    for (index, quad) in a.plan[..whole_quads].iter().enumerate() {
        for line in 0..R {
            _mm_prefetch::<_MM_HINT_T0>(ahead_codes.wrapping_add((index * R + line) * 64));
        }
        // SAFETY: `a` holds whole quads: 128 bytes of codes and 16 lane scales each; the plan's
        // 16 `lane_blocks` and 4 `block_mask` lanes are i32s. Unaligned loads.
        let (a_even, a_odd, a_scales, lane_blocks, block_mask) = unsafe {
            let base = a.codes.as_ptr().add(index * QUAD_BYTES);
            let a_scales = a.scales.as_ptr().add(index * LANES);
            let lane_blocks = quad.lane_blocks.as_ptr().cast::<__m256i>();
            (
                [_mm256_loadu_si256(base.cast()), _mm256_loadu_si256(base.add(32).cast())],
                [
                    _mm256_loadu_si256(base.add(QUAD_BYTES / 2).cast()),
                    _mm256_loadu_si256(base.add(QUAD_BYTES / 2 + 32).cast()),
                ],
                [_mm256_loadu_ps(a_scales), _mm256_loadu_ps(a_scales.add(8))],
                [_mm256_loadu_si256(lane_blocks), _mm256_loadu_si256(lane_blocks.add(1))],
                _mm_loadu_si128(quad.block_mask.as_ptr().cast()),
            )
        };
        for (r, totals) in totals.iter_mut().enumerate() {
            // SAFETY: a whole quad's 64 bytes lie inside the row (`first_byte + 64 <= row_bytes`),
            // and its blocks (at most four from `first_block`) inside the row's scales; the mask
            // leaves out the lanes past them.
            let (bytes, w_scales) = unsafe {
                let row = codes.add(r * row_bytes + quad.first_byte);
                (
                    [_mm256_loadu_si256(row.cast()), _mm256_loadu_si256(row.add(32).cast())],
                    _mm256_castps128_ps256(_mm_maskload_ps(scales.add(r * blocks + quad.first_block), block_mask)),
                )
            };
            for half in 0..2 {
                let products = nibble_products(bytes[half], a_even[half], a_odd[half]);
                let scale = _mm256_mul_ps(_mm256_permutevar8x32_ps(w_scales, lane_blocks[half]), a_scales[half]);
                totals[half] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(products), scale, totals[half]);
            }
        }
    }
    // The one to three steps after the last whole quad: two, then one.
    let mut step = whole_quads * QUAD;
    while step < steps {
        let both = step + 1 < steps;
        let (first_block, second_block) = (step / per_block, (step + usize::from(both)) / per_block);
        let (quad, within) = (step / QUAD, step % QUAD);
        // SAFETY: `a` holds whole quads (zeros past the last step), and `within` is 0 or 2, so 32
        // bytes of each half and 8 lane scales from it lie inside the quad. Unaligned loads.
        let (a_even, a_odd, a_scales) = unsafe {
            let base = a.codes.as_ptr().add(quad * QUAD_BYTES + within * STEP / 2);
            (
                _mm256_loadu_si256(base.cast()),
                _mm256_loadu_si256(base.add(QUAD_BYTES / 2).cast()),
                _mm256_loadu_ps(a.scales.as_ptr().add(quad * LANES + within * LANES / QUAD)),
            )
        };
        for (r, totals) in totals.iter_mut().enumerate() {
            // SAFETY: a row has `steps * 16` bytes of codes: 32 from `step` when it has two steps
            // left, else the last 16 (the activations' padding is zero); and `blocks` scales.
            let (bytes, w_scales) = unsafe {
                let at = codes.add(r * row_bytes + step * STEP / 2);
                let row_scales = scales.add(r * blocks);
                (
                    if both {
                        _mm256_loadu_si256(at.cast())
                    } else {
                        _mm256_castsi128_si256(_mm_loadu_si128(at.cast()))
                    },
                    _mm256_set_m128(
                        _mm_set1_ps(*row_scales.add(second_block)),
                        _mm_set1_ps(*row_scales.add(first_block)),
                    ),
                )
            };
            let products = nibble_products(bytes, a_even, a_odd);
            totals[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(products), _mm256_mul_ps(w_scales, a_scales), totals[0]);
        }
        step += 2;
    }
    // The zero points' term, eight blocks at a time (then one at a time), taken off the totals.
    let whole = blocks - blocks % 8;
    let mut tail = [0f32; R];
    for (r, totals) in totals.iter_mut().enumerate() {
        let zero_points = &weight.zero_points[(first_row + r) * weight.zero_stride..][..blocks];
        let row_scales = &weight.scales[(first_row + r) * blocks..][..blocks];
        for first in (0..whole).step_by(8) {
            // SAFETY: `first + 8 <= blocks`: the row's scales and zero points and `a`'s sums hold
            // `blocks` each. Unaligned loads.
            let (w_scales, zero, sums) = unsafe {
                (
                    _mm256_loadu_ps(row_scales.as_ptr().add(first)),
                    _mm_loadl_epi64(zero_points.as_ptr().add(first).cast()),
                    _mm256_loadu_ps(a.sums.as_ptr().add(first)),
                )
            };
            let zero = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(zero));
            totals[0] = _mm256_fnmadd_ps(_mm256_mul_ps(w_scales, zero), sums, totals[0]);
        }
        tail[r] = (whole..blocks).map(|b| row_scales[b] * f32::from(zero_points[b]) * a.sums[b]).sum();
    }
    std::array::from_fn(|r| sum_lanes(_mm256_add_ps(totals[r][0], totals[r][1])) - tail[r])
}

/// Two steps of [`group_avx2`]: their 32 bytes of nibbles split into even and odd codes
/// (unsigned), each times its 32 int8 activations by `vpmaddubsw`, the even and odd products
/// added and summed in fours by `vpmaddwd`: four int32 lanes per step.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn nibble_products(
    bytes: std::arch::x86_64::__m256i,
    a_even: std::arch::x86_64::__m256i,
    a_odd: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let low = _mm256_set1_epi8(0x0F);
    let even = _mm256_and_si256(bytes, low);
    let odd = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low);
    let pairs = _mm256_add_epi16(_mm256_maddubs_epi16(even, a_even), _mm256_maddubs_epi16(odd, a_odd));
    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tract_q4_matmul::tests::values;

    #[test]
    fn quantising_rounds_half_to_even() {
        // Every quarter in [-127, 127] (the ties among them), and values in between.
        let quarters = (-508..=508).map(|i| i as f32 / 4.0);
        let between = values(10_000, 9).map(|v| v * 254.0 - 127.0);
        for value in quarters.chain(between) {
            assert_eq!(quantize(value, 1.0), value.round_ties_even() as i8, "{value}");
        }
        assert_eq!(quantize(0.7, 127.0 / 0.7), 127);
        assert_eq!(quantize(f32::NAN, 1.0), 0);
    }

    #[test]
    fn activations_are_quantised_per_block_as_mlas_does() {
        // One block of 32: max |a| = 2.54, so s = 0.02 and q = round_half_even(a / 0.02).
        let mut a = vec![0f32; 32];
        a[0] = -2.54;
        a[1] = 0.03; // 1.5 -> 2
        a[2] = 0.05; // 2.5 -> 2 (half to even)
        a[3] = 1.27;
        let quantized = QuantizedA::new(&a, 1, 32, 32);
        let row = quantized.row(0);
        assert!((row.scales[0] - 0.02).abs() < 1e-7);
        // Codes 0, 2 are even (first half), 1, 3 odd (after the quad's 64 even codes).
        assert_eq!(
            [row.codes[0], row.codes[1], row.codes[64], row.codes[65]],
            [-127, 2, 2, 64],
            "even: a[0], a[2]; odd: a[1], a[3]"
        );
        assert!((row.sums[0] - 0.02 * (-127 + 2 + 2 + 64) as f32).abs() < 1e-6);
        // An all-zero block quantises to zeros with a zero scale.
        let zeros = QuantizedA::new(&[0.0; 64], 1, 64, 64);
        assert!(zeros.codes.iter().all(|c| *c == 0) && zeros.scales.iter().all(|s| *s == 0.0));
    }

    #[test]
    fn the_vector_kernel_computes_the_scalar_sum() {
        // 1 to 18 steps: whole quads and every partial one; blocks of 1, 2, 3 and 4 steps (a
        // quad over two or three blocks); more than 16 blocks.
        for (steps, per_block) in [(1, 1), (3, 1), (4, 1), (6, 2), (9, 1), (18, 2), (9, 3), (12, 4), (36, 1)] {
            let k = steps * STEP;
            let blocks = steps / per_block;
            let codes: Vec<u8> = values(k / 2, steps).map(|v| (v * 256.0) as u8).collect();
            let scales: Vec<f32> = values(blocks, 3).map(|v| v * 0.1 + 0.01).collect();
            let zero_points: Vec<u8> = values(blocks, 4).map(|v| (v * 16.0) as u8).collect();
            let a: Vec<f32> = values(k, 2).map(|v| v * 4.0 - 2.0).collect();
            let quantized = QuantizedA::new(&a, 1, k, per_block * STEP);
            let weight = WeightView {
                k,
                block_size: per_block * STEP,
                codes: &codes,
                scales: &scales,
                zero_points: &zero_points,
                zero_stride: blocks,
            };
            let scalar = dot_scalar(weight, quantized.row(0));
            let mut vector = [0f32];
            rows(weight, 0..1, &quantized, 0, &mut vector);
            let [vector] = vector;
            assert!(
                (scalar - vector).abs() <= 1e-4 * scalar.abs().max(1.0),
                "{steps} steps of {per_block}: {scalar} vs {vector}"
            );
            // The AVX2 kernel too, where an AVX-512 VNNI CPU dispatches to the other one.
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU has AVX2 and FMA; the one-row weight and `a` are as `rows` checks.
                #[allow(unsafe_code)]
                let [avx2]: [f32; 1] = unsafe { group_avx2(&weight, 0, quantized.row(0)) };
                assert!(
                    (scalar - avx2).abs() <= 1e-4 * scalar.abs().max(1.0),
                    "{steps} steps of {per_block}: {scalar} vs AVX2 {avx2}"
                );
            }
        }
    }
}
