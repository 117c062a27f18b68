//! `EdgeinferQ4MatMul`: `Y = A @ Wᵀ` for a constant 4-bit `MatMulNBits` weight, computed straight
//! from the nibbles, scales and zero points as the file stores them, on x86-64 CPUs with AVX-512F,
//! or AVX2 and FMA (8-lane vectors: AMD before Zen 4, Intel's Atom and most client cores).
//!
//! tract 0.23 has one kernel that reads 4-bit weights, `fma_mmm_f32_32x1` (AVX2, Q4_0 panels),
//! and it took two thirds of a LLaMA-135M q4 decode step on tract
//! (`bench/results/variants-2core.txt`). This op unpacks 32 codes with a few 128-bit integer
//! instructions, widens them to 16-lane f32 vectors and multiplies them against the activations,
//! reordered once per row of `A` to match the nibbles' order, four weight rows at a time. Weight
//! rows are split between tract's threads in chunks, every row of `A` against each chunk, so a
//! prefill reads each weight once; matmuls under
//! [`PARALLEL_MACS`](crate::tract_threads::PARALLEL_MACS) stay on the calling thread.
//!
//! The value is `MatMulNBits`'s own: `Σ_blocks s · Σ (q - z) · a`, with the f32 scales of the
//! file (tract's Q4_0 packing rounds them to f16) and the weight held as the file holds it (no
//! repacked copy). [`crate::tract_matmul_nbits`] wires it in the place of tract's block-quant
//! matmul where the CPU has either instruction set at load time; elsewhere (and with
//! `EDGEINFER_TRACT_Q4_KERNEL=tract`) the graph keeps tract's kernel. Measured on this 2-core VM
//! in 3 alternating rounds against tract's kernel in the same binary: decode 25.3 against 28.5 ms
//! a step at 16 tokens of context, 33.0 against 33.6 at 256, 15-20 % less CPU time for the whole
//! run (load, prefill and decode).
//!
//! A weight whose node has `accuracy_level = 4` is computed in int8 instead, as ONNX Runtime does
//! for that level, by [`crate::tract_q4_int8`] (AVX-512 VNNI or AVX2)
//! (`EDGEINFER_TRACT_Q4_KERNEL=f32` keeps the float32 kernel, for A/B runs).
//!
//! `MatMulBnb4` weights (bitsandbytes' NF4/FP4 codes, [`crate::tract_matmul_bnb4`]) run in the
//! same kernels with the code book in a register in place of `q - z`: `vpermps` looks the codes up.
//!
//! From [`GEMM_ROWS`] rows of `A` on (a prefill; a vision model's hundreds of tokens), the float32
//! product decodes each tile of weight rows to float32 once and multiplies it as a GEMM, instead
//! of decoding each weight row again for every row of `A`: DINOv2-S q4 (257 tokens) went from
//! 306 to 141 ms on an AVX-512 EPYC, against 123 ms for its fp32 graph in tract's own GEMM in the
//! same run (`bench/results/variants-4bit-avx512vnni-2core.txt`).

use std::ops::Range;
use std::sync::Arc;

use tract_onnx::tract_hir::internal::*;

use crate::tract_q4_int8::{self, QuantizedA, WeightView};
use crate::tract_threads::{TASKS_PER_THREAD, Threads};

/// Codes per unpacking step: 16 bytes of nibbles.
const STEP: usize = 32;

/// The fewest weight rows a task takes.
const MIN_ROWS_PER_TASK: usize = 16;

/// From this many rows of `A` on (a prefill, a vision model's tokens), a float32 product decodes
/// each tile of weight rows once and multiplies it as a float32 GEMM, instead of decoding every
/// weight row again for every row of `A`.
const GEMM_ROWS: usize = 8;

/// Weight rows decoded at a time for the GEMM (512 rows of K = 576 are 1.1 MiB). The GEMM packs
/// `A` again for every tile, so tiles are large and a GEMM task takes a thread's whole share.
const GEMM_TILE: usize = 512;

/// How many weight rows ahead the kernels prefetch (the group of four after next).
pub(crate) const AHEAD: usize = 8;

/// Prefetches `bytes` from `start` into L1, a cache line at a time. A prefetch never faults, past
/// the weight's end included. (SSE, which the kernels that call it imply.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse")]
#[inline]
pub(crate) fn prefetch_lines(start: *const i8, bytes: usize) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    for line in (0..bytes).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(line));
    }
}

/// A `[N, K]` 4-bit weight in `MatMulNBits`' layout, with `K` a whole number of blocks and each
/// block a whole number of 32-code steps.
#[derive(Debug)]
pub(crate) struct Q4Weight {
    n: usize,
    k: usize,
    block_size: usize,
    /// `[N, K / 2]` u8: code `2i` in the low nibble of byte `i`, code `2i + 1` in the high one.
    /// The graph's own constant, not a copy: a weight other nodes read too (the tied `lm_head`
    /// an ORT-GenAI int4 folder's embedding gathers from) is held once.
    codes: Arc<Tensor>,
    /// `[N, K / block_size]` f32 (the graph's constant where it is f32 already).
    scales: Arc<Tensor>,
    /// `[N, K / block_size]` unpacked, or where the graph gives no zero points one row of 8s
    /// that every row reads (`zero_stride` 0), not an `[N, blocks]` array of them.
    zero_points: Vec<u8>,
    /// How far apart rows' zero points are in `zero_points`: `blocks`, or 0 for the shared row.
    zero_stride: usize,
    /// Whether the product is computed in int8 (`accuracy_level = 4` on a CPU with AVX-512 VNNI,
    /// see [`crate::tract_q4_int8`]).
    int8: bool,
    /// `None` for `MatMulNBits` codes (`q - z`, low nibble first). For `MatMulBnb4`'s, the code
    /// book a code indexes (NF4 or FP4; the weight is `book[q] · absmax`, `scales` holding the
    /// absmax of each block), with code `2i` in the high nibble of byte `i` (see
    /// [`crate::tract_matmul_bnb4`]).
    book: Option<&'static [f32; 16]>,
}

/// How `MatMulNBits` computes the product (its `accuracy_level` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compute {
    /// Levels 0 to 3: the activations stay float32.
    Float,
    /// Level 4: the activations quantised to int8 per block, as ONNX Runtime's CPU kernels do.
    Int8,
}

impl Compute {
    /// From the node's `accuracy_level` (0 when absent).
    pub(crate) fn from_accuracy_level(level: i64) -> Compute {
        if level == 4 { Compute::Int8 } else { Compute::Float }
    }
}

/// `A` as the kernel reads it.
enum PreparedA {
    /// Each 32-code step's values reordered as the nibbles are: 16 even codes, then 16 odd ones.
    Float(Vec<f32>),
    /// Quantised per block.
    Int8(QuantizedA),
}

impl Q4Weight {
    /// Checks the sizes; `zero_points` is `MatMulNBits`' packed form (two per byte, per row).
    /// [`Compute::Int8`] is honoured where the CPU has the int8 kernel's instructions (and
    /// [`KERNEL_SWITCH`] is not `f32`), and computed in float32 elsewhere.
    pub(crate) fn new(
        n: usize,
        k: usize,
        block_size: usize,
        codes: Arc<Tensor>,
        scales: Arc<Tensor>,
        zero_points: Option<&[u8]>,
        compute: Compute,
    ) -> TractResult<Q4Weight> {
        ensure!(block_size > 0 && block_size.is_multiple_of(STEP) && k.is_multiple_of(block_size));
        let blocks = k / block_size;
        ensure!(plain::<u8>(&codes)?.len() == n * k / 2 && plain::<f32>(&scales)?.len() == n * blocks);
        let (zero_points, zero_stride) = match zero_points {
            Some(zp) => {
                ensure!(zp.len() == n * blocks.div_ceil(2));
                ((0..n * blocks).map(|i| zero_point(zp, blocks, i)).collect(), blocks)
            }
            None => (vec![8; blocks], 0),
        };
        let int8 = compute == Compute::Int8 && int8_enabled();
        Ok(Q4Weight { n, k, block_size, codes, scales, zero_points, zero_stride, int8, book: None })
    }

    /// A `MatMulBnb4` weight: `codes` `[N, K / 2]` (high nibble first), `absmax` `[N, K /
    /// block_size]` f32, each code indexing `book`. Its blocks run along the flattened `[N, K]`
    /// weight, so `K` must be a whole number of them (of whole 32-code steps) to be rows' blocks.
    pub(crate) fn bnb4(
        n: usize,
        k: usize,
        block_size: usize,
        codes: Arc<Tensor>,
        absmax: Arc<Tensor>,
        book: &'static [f32; 16],
    ) -> TractResult<Q4Weight> {
        let mut weight = Q4Weight::new(n, k, block_size, codes, absmax, None, Compute::Float)?;
        weight.book = Some(book);
        Ok(weight)
    }

    /// The codes and scales as slices (their types and lengths were checked by [`Q4Weight::new`]).
    fn data(&self) -> (&[u8], &[f32]) {
        (plain(&self.codes).unwrap_or_default(), plain(&self.scales).unwrap_or_default())
    }

    /// Whether the product is computed in int8.
    #[cfg(test)]
    fn computes_in_int8(&self) -> bool {
        self.int8
    }

    /// `A @ Wᵀ` for `m` rows of `a` (`[m, K]`), into `y` (`[m, N]`).
    fn matmul(&self, a: &[f32], m: usize, y: &mut [f32]) {
        let k = self.k;
        let prepared = if self.int8 {
            PreparedA::Int8(QuantizedA::new(a, m, k, self.block_size))
        } else {
            // The values the low nibbles multiply first: the even codes', or with a code book
            // (high nibble first) the odd codes'.
            let (low, high) = if self.book.is_some() { (1, 0) } else { (0, 1) };
            let mut reordered = vec![0f32; m * k];
            for (row, out) in a.chunks_exact(k).zip(reordered.chunks_exact_mut(k)) {
                for (step, out) in row.chunks_exact(STEP).zip(out.chunks_exact_mut(STEP)) {
                    for i in 0..STEP / 2 {
                        out[i] = step[2 * i + low];
                        out[STEP / 2 + i] = step[2 * i + high];
                    }
                }
            }
            PreparedA::Float(reordered)
        };
        let threads = Threads::current();
        // A few tasks per thread, to even out a slow one, of at least MIN_ROWS_PER_TASK weight
        // rows (columns of `y`); one per thread for the GEMM, which packs `A` for each.
        let tasks_per_thread = if self.gemm(m) { 1 } else { TASKS_PER_THREAD };
        let per_task = self.n.div_ceil(threads.count() * tasks_per_thread).max(MIN_ROWS_PER_TASK);
        let tasks: Vec<Range<usize>> =
            (0..self.n).step_by(per_task).map(|start| start..(start + per_task).min(self.n)).collect();
        let parallel = tasks.len() > 1 && threads.worth(m.saturating_mul(self.n * self.k));
        threads.split_columns(parallel, (m, self.n), &tasks, y, |rows, out| self.rows(&prepared, m, rows, out));
    }

    /// Weight rows `rows` against every row of A: `out` is `[m, rows.len()]`.
    fn rows(&self, a: &PreparedA, m: usize, rows: Range<usize>, out: &mut [f32]) {
        let width = rows.len();
        let start = rows.start;
        let (codes, scales) = self.data();
        let a = match a {
            PreparedA::Int8(a) => {
                let weight = WeightView {
                    k: self.k,
                    block_size: self.block_size,
                    codes,
                    scales,
                    zero_points: &self.zero_points,
                    zero_stride: self.zero_stride,
                };
                for (mi, out) in out.chunks_exact_mut(width).enumerate() {
                    tract_q4_int8::rows(weight, rows.clone(), a, mi, out);
                }
                return;
            }
            PreparedA::Float(a) if self.gemm(m) => return self.rows_gemm(a, m, rows, out),
            PreparedA::Float(a) => a,
        };
        // Four weight rows at a time (four independent sums in flight), then one at a time.
        let mut n = start;
        while n < rows.end {
            if rows.end - n >= GROUP {
                let group: [usize; GROUP] = std::array::from_fn(|i| n + i);
                for mi in 0..m {
                    let values = self.dot((codes, scales), &group, &a[mi * self.k..(mi + 1) * self.k]);
                    out[mi * width + n - start..mi * width + n - start + GROUP].copy_from_slice(&values);
                }
                n += GROUP;
            } else {
                for mi in 0..m {
                    let [value] = self.dot((codes, scales), &[n], &a[mi * self.k..(mi + 1) * self.k]);
                    out[mi * width + n - start] = value;
                }
                n += 1;
            }
        }
    }

    /// Whether `m` rows of `A` take [`Q4Weight::rows_gemm`]: float32 products from
    /// [`GEMM_ROWS`] rows on.
    fn gemm(&self, m: usize) -> bool {
        !self.int8 && m >= GEMM_ROWS
    }

    /// [`Q4Weight::rows`] for many rows of `A`: each tile of weight rows is decoded to float32
    /// once, in the reordered order `a` is in, and multiplied as a float32 GEMM (ndarray's,
    /// `matrixmultiply`), as ONNX Runtime's CPU kernel does for more than one row.
    fn rows_gemm(&self, a: &[f32], m: usize, rows: Range<usize>, out: &mut [f32]) {
        use ndarray::{ArrayView2, ArrayViewMut2, s};
        let (k, width) = (self.k, rows.len());
        let (Ok(a), Ok(mut out)) = (ArrayView2::from_shape((m, k), a), ArrayViewMut2::from_shape((m, width), out))
        else {
            return;
        };
        let mut tile = vec![0f32; GEMM_TILE.min(width) * k];
        for first in (rows.start..rows.end).step_by(GEMM_TILE) {
            let last = (first + GEMM_TILE).min(rows.end);
            let decoded = &mut tile[..(last - first) * k];
            for (n, row) in (first..last).zip(decoded.chunks_exact_mut(k)) {
                self.decode_row(n, row);
            }
            let Ok(w) = ArrayView2::from_shape((last - first, k), &*decoded) else { return };
            let mut y = out.slice_mut(s![.., first - rows.start..last - rows.start]);
            ndarray::linalg::general_mat_mul(1.0, &a, &w.t(), 0.0, &mut y);
        }
    }

    /// Weight row `n` in float32, each 32-code step as the kernels order `A`: the 16 low
    /// nibbles' values, then the 16 high ones'.
    fn decode_row(&self, n: usize, out: &mut [f32]) {
        let (codes, scales) = self.data();
        let (k, blocks) = (self.k, self.k / self.block_size);
        let codes = &codes[n * k / 2..(n + 1) * k / 2];
        let scales = &scales[n * blocks..(n + 1) * blocks];
        let zero_points = &self.zero_points[n * self.zero_stride..n * self.zero_stride + blocks];
        for (step, (bytes, out)) in codes.chunks_exact(STEP / 2).zip(out.chunks_exact_mut(STEP)).enumerate() {
            let block = step * STEP / self.block_size;
            let s = scales[block];
            let (low, high) = out.split_at_mut(STEP / 2);
            for ((byte, low), high) in bytes.iter().zip(low).zip(high) {
                let (q_low, q_high) = (byte & 0x0F, byte >> 4);
                (*low, *high) = match self.book {
                    Some(book) => (book[usize::from(q_low)] * s, book[usize::from(q_high)] * s),
                    None => {
                        let z = i16::from(zero_points[block]);
                        (f32::from(i16::from(q_low) - z) * s, f32::from(i16::from(q_high) - z) * s)
                    }
                };
            }
        }
    }

    /// `Σ_blocks s · Σ (q - z) · a` for weight rows `rows` against `a`, a reordered row of A.
    fn dot<const R: usize>(&self, (codes, scales): (&[u8], &[f32]), rows: &[usize; R], a: &[f32]) -> [f32; R] {
        let (k, blocks) = (self.k, self.k / self.block_size);
        let codes: [&[u8]; R] = std::array::from_fn(|i| &codes[rows[i] * k / 2..(rows[i] + 1) * k / 2]);
        let scales: [&[f32]; R] = std::array::from_fn(|i| &scales[rows[i] * blocks..(rows[i] + 1) * blocks]);
        let zero_points: [&[u8]; R] = std::array::from_fn(|i| {
            let first = rows[i] * self.zero_stride;
            &self.zero_points[first..first + blocks]
        });
        let per_block = self.block_size / STEP;
        assert!(a.len() == k && codes.iter().all(|c| c.len() * 2 == k));
        if let Some(book) = self.book {
            #[cfg(target_arch = "x86_64")]
            match Vector::detect() {
                // SAFETY: as below.
                #[allow(unsafe_code)]
                Some(Vector::Avx512) => return unsafe { dot_book_avx512(&codes, a, &scales, book, per_block) },
                #[allow(unsafe_code)]
                Some(Vector::Avx2) => return unsafe { dot_book_avx2(&codes, a, &scales, book, per_block) },
                None => {}
            }
            return std::array::from_fn(|i| dot_book_scalar(codes[i], a, scales[i], book, per_block));
        }
        #[cfg(target_arch = "x86_64")]
        match Vector::detect() {
            // SAFETY: the CPU has the kernel's instructions (just detected). Each row's codes are
            // `K / 2` bytes and `a` is `K` values (asserted above); the kernels read both in
            // steps of 16 bytes and 32 values, `K / 32` steps; scales and zero points by block,
            // `blocks` of them per row.
            #[allow(unsafe_code)]
            Some(Vector::Avx512) => return unsafe { dot_avx512(&codes, a, &scales, &zero_points, per_block) },
            #[allow(unsafe_code)]
            Some(Vector::Avx2) => return unsafe { dot_avx2(&codes, a, &scales, &zero_points, per_block) },
            None => {}
        }
        std::array::from_fn(|i| dot_scalar(codes[i], a, scales[i], zero_points[i], per_block))
    }
}

/// A plain tensor's values as a slice.
fn plain<T: Datum>(tensor: &Tensor) -> TractResult<&[T]> {
    tensor.try_as_plain_ram()?.as_slice::<T>()
}

/// The zero point of block `i` of `[N, blocks]` in `MatMulNBits`' packed 4-bit form: two per
/// byte along each row (rows padded to whole bytes), the low nibble first.
pub(crate) fn zero_point(packed: &[u8], blocks: usize, i: usize) -> u8 {
    let (row, block) = (i / blocks, i % blocks);
    (packed[row * blocks.div_ceil(2) + block / 2] >> (4 * (block % 2))) & 0x0F
}

/// Weight rows computed together.
const GROUP: usize = 4;

/// One row of [`Q4Weight::dot`] in plain Rust: the reference for the vector version.
fn dot_scalar(codes: &[u8], a: &[f32], scales: &[f32], zero_points: &[u8], per_scale: usize) -> f32 {
    let mut total = 0f32;
    for (step, (bytes, a)) in codes.chunks_exact(STEP / 2).zip(a.chunks_exact(STEP)).enumerate() {
        let z = i16::from(zero_points[step / per_scale]);
        let mut sum = 0f32;
        for (i, &byte) in bytes.iter().enumerate() {
            let (even, odd) = (i16::from(byte & 0x0F) - z, i16::from(byte >> 4) - z);
            sum += f32::from(even) * a[i] + f32::from(odd) * a[STEP / 2 + i];
        }
        total += scales[step / per_scale] * sum;
    }
    total
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512<const R: usize>(
    codes: &[&[u8]; R],
    a: &[f32],
    scales: &[&[f32]; R],
    zero_points: &[&[u8]; R],
    per_block: usize,
) -> [f32; R] {
    use std::arch::x86_64::*;
    let low = _mm_set1_epi8(0x0F);
    let blocks = scales[0].len();
    // The rows [`AHEAD`] on are prefetched meanwhile, as in [`dot_avx2`].
    let ahead_codes = codes[0].as_ptr().wrapping_add(AHEAD * codes[0].len()).cast::<i8>();
    let ahead_scales = scales[0].as_ptr().wrapping_add(AHEAD * blocks).cast::<i8>();
    prefetch_lines(ahead_scales, R * blocks * 4);
    let mut totals = [_mm512_setzero_ps(); R];
    for block in 0..blocks {
        let scale: [__m512; R] = std::array::from_fn(|r| _mm512_set1_ps(scales[r][block]));
        let zero: [__m128i; R] = std::array::from_fn(|r| _mm_set1_epi8(zero_points[r][block] as i8));
        for step in block * per_block..(block + 1) * per_block {
            _mm_prefetch::<_MM_HINT_T0>(ahead_codes.wrapping_add(step * R * STEP / 2));
            // SAFETY: `step < K / 32`, so `step * 32 + 32 <= a.len()` (K values); each row has
            // `K / 2` bytes of codes (the caller's checks). Unaligned loads.
            let (a_even, a_odd) = unsafe {
                (_mm512_loadu_ps(a.as_ptr().add(step * STEP)), _mm512_loadu_ps(a.as_ptr().add(step * STEP + STEP / 2)))
            };
            for r in 0..R {
                // SAFETY: as above.
                let bytes = unsafe { _mm_loadu_si128(codes[r].as_ptr().add(step * STEP / 2).cast()) };
                // q - z in [-15, 15], as i8, then widened with its sign.
                let even = _mm_sub_epi8(_mm_and_si128(bytes, low), zero[r]);
                let odd = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(bytes, 4), low), zero[r]);
                let q_even = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(even));
                let q_odd = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(odd));
                let sum = _mm512_fmadd_ps(q_odd, a_odd, _mm512_mul_ps(q_even, a_even));
                totals[r] = _mm512_fmadd_ps(sum, scale[r], totals[r]);
            }
        }
    }
    std::array::from_fn(|r| _mm512_reduce_add_ps(totals[r]))
}

/// The float32 kernel's instruction set: 16 lanes, or 8 with AVX2 and FMA (most x86-64 CPUs
/// without AVX-512: AMD before Zen 4, Intel's Atom and client cores).
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vector {
    Avx512,
    Avx2,
}

#[cfg(target_arch = "x86_64")]
impl Vector {
    fn detect() -> Option<Vector> {
        if std::arch::is_x86_feature_detected!("avx512f") {
            Some(Vector::Avx512)
        } else if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            Some(Vector::Avx2)
        } else {
            None
        }
    }
}

/// [`dot_avx512`] in 8-lane vectors: each 16 even and 16 odd codes widened 8 at a time. The rows
/// [`AHEAD`] on are prefetched meanwhile (a row of a decode step's weight is too short a stream
/// for the hardware prefetcher), and the loop body has no closures: `std::array::from_fn` and
/// `map` there were calls, not inlined, and cost a third of the kernel's time.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2<const R: usize>(
    codes: &[&[u8]; R],
    a: &[f32],
    scales: &[&[f32]; R],
    zero_points: &[&[u8]; R],
    per_block: usize,
) -> [f32; R] {
    use std::arch::x86_64::*;
    let low = _mm_set1_epi8(0x0F);
    let blocks = scales[0].len();
    // The rows are consecutive (see [`Q4Weight::rows`]); prefetches never fault, past the
    // weight's end included.
    let ahead_codes = codes[0].as_ptr().wrapping_add(AHEAD * codes[0].len()).cast::<i8>();
    let ahead_scales = scales[0].as_ptr().wrapping_add(AHEAD * blocks).cast::<i8>();
    prefetch_lines(ahead_scales, R * blocks * 4);
    let mut totals = [_mm256_setzero_ps(); R];
    let mut zero = [_mm_setzero_si128(); R];
    let mut scale = [_mm256_setzero_ps(); R];
    for block in 0..blocks {
        for r in 0..R {
            zero[r] = _mm_set1_epi8(zero_points[r][block] as i8);
            scale[r] = _mm256_set1_ps(scales[r][block]);
        }
        for step in block * per_block..(block + 1) * per_block {
            _mm_prefetch::<_MM_HINT_T0>(ahead_codes.wrapping_add(step * R * STEP / 2));
            // SAFETY: `step < K / 32`, so `step * 32 + 32 <= a.len()` (K values); each row has
            // `K / 2` bytes of codes (the caller's checks). Unaligned loads.
            let (a0, a1, a2, a3) = unsafe {
                let at = a.as_ptr().add(step * STEP);
                (
                    _mm256_loadu_ps(at),
                    _mm256_loadu_ps(at.add(8)),
                    _mm256_loadu_ps(at.add(16)),
                    _mm256_loadu_ps(at.add(24)),
                )
            };
            for r in 0..R {
                // SAFETY: as above.
                let bytes = unsafe { _mm_loadu_si128(codes[r].as_ptr().add(step * STEP / 2).cast()) };
                // q - z in [-15, 15], as i8: 16 even codes, then 16 odd ones, as `a` is ordered.
                let even = _mm_sub_epi8(_mm_and_si128(bytes, low), zero[r]);
                let odd = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(bytes, 4), low), zero[r]);
                let q0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(even));
                let q1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(even, 8)));
                let q2 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(odd));
                let q3 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(odd, 8)));
                let sum = _mm256_fmadd_ps(q1, a1, _mm256_mul_ps(q0, a0));
                let sum = _mm256_fmadd_ps(q3, a3, _mm256_fmadd_ps(q2, a2, sum));
                totals[r] = _mm256_fmadd_ps(sum, scale[r], totals[r]);
            }
        }
    }
    let mut sums = [0f32; R];
    for r in 0..R {
        sums[r] = sum_lanes(totals[r]);
    }
    sums
}

/// One row of a code-book weight ([`Q4Weight::bnb4`]) in plain Rust: `Σ_blocks absmax ·
/// Σ book[q] · a`, `a` reordered so that its first 16 values of a step meet the low nibbles.
fn dot_book_scalar(codes: &[u8], a: &[f32], absmax: &[f32], book: &[f32; 16], per_scale: usize) -> f32 {
    let mut total = 0f32;
    for (step, (bytes, a)) in codes.chunks_exact(STEP / 2).zip(a.chunks_exact(STEP)).enumerate() {
        let mut sum = 0f32;
        for (i, &byte) in bytes.iter().enumerate() {
            sum += book[usize::from(byte & 0x0F)] * a[i] + book[usize::from(byte >> 4)] * a[STEP / 2 + i];
        }
        total += absmax[step / per_scale] * sum;
    }
    total
}

/// [`dot_book_scalar`] for `R` rows in 16-lane vectors: the 16-entry book is one register, and
/// `vpermps` looks 16 codes up at once.
#[cfg(target_arch = "x86_64")]
// `block` indexes each of the R rows' absmax and picks the block's steps.
#[allow(unsafe_code, clippy::needless_range_loop)]
#[target_feature(enable = "avx512f")]
unsafe fn dot_book_avx512<const R: usize>(
    codes: &[&[u8]; R],
    a: &[f32],
    absmax: &[&[f32]; R],
    book: &[f32; 16],
    per_block: usize,
) -> [f32; R] {
    use std::arch::x86_64::*;
    let low = _mm_set1_epi8(0x0F);
    // SAFETY: 16 values.
    let table = unsafe { _mm512_loadu_ps(book.as_ptr()) };
    let blocks = absmax[0].len();
    let ahead_codes = codes[0].as_ptr().wrapping_add(AHEAD * codes[0].len()).cast::<i8>();
    prefetch_lines(absmax[0].as_ptr().wrapping_add(AHEAD * blocks).cast::<i8>(), R * blocks * 4);
    let mut totals = [_mm512_setzero_ps(); R];
    for block in 0..blocks {
        let scale: [__m512; R] = std::array::from_fn(|r| _mm512_set1_ps(absmax[r][block]));
        for step in block * per_block..(block + 1) * per_block {
            _mm_prefetch::<_MM_HINT_T0>(ahead_codes.wrapping_add(step * R * STEP / 2));
            // SAFETY: `step < K / 32`, so `step * 32 + 32 <= a.len()` (K values); each row has
            // `K / 2` bytes of codes (the caller's checks). Unaligned loads.
            let (a_low, a_high) = unsafe {
                (_mm512_loadu_ps(a.as_ptr().add(step * STEP)), _mm512_loadu_ps(a.as_ptr().add(step * STEP + STEP / 2)))
            };
            for r in 0..R {
                // SAFETY: as above.
                let bytes = unsafe { _mm_loadu_si128(codes[r].as_ptr().add(step * STEP / 2).cast()) };
                let q_low = _mm512_cvtepu8_epi32(_mm_and_si128(bytes, low));
                let q_high = _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(bytes, 4), low));
                let w_low = _mm512_permutexvar_ps(q_low, table);
                let w_high = _mm512_permutexvar_ps(q_high, table);
                let sum = _mm512_fmadd_ps(w_high, a_high, _mm512_mul_ps(w_low, a_low));
                totals[r] = _mm512_fmadd_ps(sum, scale[r], totals[r]);
            }
        }
    }
    std::array::from_fn(|r| _mm512_reduce_add_ps(totals[r]))
}

/// [`dot_book_avx512`] in 8-lane vectors: `vpermps` looks up 8 entries, so each code is looked
/// up in both halves of the book and bit 3 of the code picks one.
#[cfg(target_arch = "x86_64")]
// `block` indexes each of the R rows' absmax and picks the block's steps.
#[allow(unsafe_code, clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_book_avx2<const R: usize>(
    codes: &[&[u8]; R],
    a: &[f32],
    absmax: &[&[f32]; R],
    book: &[f32; 16],
    per_block: usize,
) -> [f32; R] {
    use std::arch::x86_64::*;
    let low = _mm_set1_epi8(0x0F);
    // SAFETY: 16 values.
    let (book_low, book_high) = unsafe { (_mm256_loadu_ps(book.as_ptr()), _mm256_loadu_ps(book.as_ptr().add(8))) };
    let blocks = absmax[0].len();
    let ahead_codes = codes[0].as_ptr().wrapping_add(AHEAD * codes[0].len()).cast::<i8>();
    prefetch_lines(absmax[0].as_ptr().wrapping_add(AHEAD * blocks).cast::<i8>(), R * blocks * 4);
    let mut totals = [_mm256_setzero_ps(); R];
    let mut scale = [_mm256_setzero_ps(); R];
    for block in 0..blocks {
        for r in 0..R {
            scale[r] = _mm256_set1_ps(absmax[r][block]);
        }
        for step in block * per_block..(block + 1) * per_block {
            _mm_prefetch::<_MM_HINT_T0>(ahead_codes.wrapping_add(step * R * STEP / 2));
            // SAFETY: `step < K / 32`, so `step * 32 + 32 <= a.len()` (K values); each row has
            // `K / 2` bytes of codes (the caller's checks). Unaligned loads.
            let (a0, a1, a2, a3) = unsafe {
                let at = a.as_ptr().add(step * STEP);
                (
                    _mm256_loadu_ps(at),
                    _mm256_loadu_ps(at.add(8)),
                    _mm256_loadu_ps(at.add(16)),
                    _mm256_loadu_ps(at.add(24)),
                )
            };
            for r in 0..R {
                // SAFETY: as above.
                let bytes = unsafe { _mm_loadu_si128(codes[r].as_ptr().add(step * STEP / 2).cast()) };
                let q_low = _mm_and_si128(bytes, low);
                let q_high = _mm_and_si128(_mm_srli_epi16(bytes, 4), low);
                let (b0, b1) = (
                    look_up_avx2(q_low, book_low, book_high),
                    look_up_avx2(_mm_srli_si128(q_low, 8), book_low, book_high),
                );
                let (b2, b3) = (
                    look_up_avx2(q_high, book_low, book_high),
                    look_up_avx2(_mm_srli_si128(q_high, 8), book_low, book_high),
                );
                let sum = _mm256_fmadd_ps(b1, a1, _mm256_mul_ps(b0, a0));
                let sum = _mm256_fmadd_ps(b3, a3, _mm256_fmadd_ps(b2, a2, sum));
                totals[r] = _mm256_fmadd_ps(sum, scale[r], totals[r]);
            }
        }
    }
    let mut sums = [0f32; R];
    for r in 0..R {
        sums[r] = sum_lanes(totals[r]);
    }
    sums
}

/// The book entries of the low 8 bytes of `q` (codes 0 to 15), the book in two 8-lane halves:
/// each code is looked up in both, and its bit 3, shifted to the sign, picks one.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn look_up_avx2(
    q: std::arch::x86_64::__m128i,
    book_low: std::arch::x86_64::__m256,
    book_high: std::arch::x86_64::__m256,
) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let q = _mm256_cvtepu8_epi32(q);
    let upper = _mm256_castsi256_ps(_mm256_slli_epi32(q, 28));
    _mm256_blendv_ps(_mm256_permutevar8x32_ps(book_low, q), _mm256_permutevar8x32_ps(book_high, q), upper)
}

/// The sum of a vector's eight lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
pub(crate) fn sum_lanes(total: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let half = _mm_add_ps(_mm256_castps256_ps128(total), _mm256_extractf128_ps(total, 1));
    let pair = _mm_add_ps(half, _mm_movehl_ps(half, half));
    _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1)))
}

/// For A/B runs: `tract` keeps tract's own 4-bit kernel for every weight, `ours` takes this op
/// for every weight the CPU can serve, `f32` the same with `accuracy_level = 4` computed in
/// float32. Unset, [`serves`] decides per CPU.
const KERNEL_SWITCH: &str = "EDGEINFER_TRACT_Q4_KERNEL";

/// Whether weights asking for int8 compute get it: the CPU has the instructions and
/// [`KERNEL_SWITCH`] is not `f32`.
fn int8_enabled() -> bool {
    std::env::var_os(KERNEL_SWITCH).is_none_or(|v| v != "f32") && tract_q4_int8::supported()
}

/// Whether [`Q4MatMul`] takes a weight (`shared`: other nodes read its constant too, as the tied
/// `lm_head` of an ORT-GenAI int4 folder is read by its embedding; `compute`: its
/// `accuracy_level`). With AVX-512F it takes every weight: faster than tract's kernel there.
/// With AVX2 alone it takes a shared weight, which tract's kernel would hold a Q4_0 copy of
/// beside the original (loading the GenAI int4 folder peaked at 1.61x its files warm, 1.26x
/// with this op), and a level-4 weight, whose int8 arithmetic (ONNX Runtime's) it computes
/// faster than tract's kernel (LLaMA-135M decode 1.91x / 1.75x its speed at 16 / 256 tokens on
/// an AMD EPYC, `bench/tract_q4.sh`); tract's kernel keeps the other float32 weights, where this
/// op's float32 product is 0.92x / 0.97x of it.
pub(crate) fn serves(shared: bool, compute: Compute) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let switch = std::env::var(KERNEL_SWITCH).ok();
        match (switch.as_deref(), Vector::detect()) {
            (_, None) | (Some("tract"), _) => false,
            (Some("ours" | "f32"), Some(_)) | (_, Some(Vector::Avx512)) => true,
            (_, Some(Vector::Avx2)) => shared || (compute == Compute::Int8 && int8_enabled()),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (shared, compute);
        false
    }
}

/// Whether [`Q4MatMul`] takes `MatMulBnb4` weights ([`Q4Weight::bnb4`]): on every CPU with
/// either kernel's instructions, unless [`KERNEL_SWITCH`] is `tract` (for A/B runs: the weight is
/// then decoded to float32 for tract's own matmul, as on other CPUs).
pub(crate) fn serves_books() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        Vector::detect().is_some() && std::env::var(KERNEL_SWITCH).ok().as_deref() != Some("tract")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `Y = A @ Wᵀ` in f32, `A` of any rank with `K` values along its last axis.
#[derive(Debug, Clone)]
pub(crate) struct Q4MatMul {
    pub(crate) weight: Arc<Q4Weight>,
}

impl PartialEq for Q4MatMul {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.weight, &other.weight)
    }
}

impl Eq for Q4MatMul {}

impl Op for Q4MatMul {
    fn name(&self) -> StaticName {
        "EdgeinferQ4MatMul".into()
    }

    op_as_typed_op!();
}

impl EvalOp for Q4MatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let a = args_1!(inputs);
        let (k, n) = (self.weight.k, self.weight.n);
        ensure!(a.datum_type() == f32::datum_type(), "q4 matmul: A is {:?}", a.datum_type());
        ensure!(a.shape().last() == Some(&k), "q4 matmul: A of shape {:?}, K = {k}", a.shape());
        let mut shape: TVec<usize> = a.shape().into();
        if let Some(last) = shape.last_mut() {
            *last = n;
        }
        let a = a.try_as_plain_ram()?;
        let a = a.as_slice::<f32>()?;
        let m = a.len() / k;
        let mut y = vec![0f32; m.checked_mul(n).context("q4 matmul: output size")?];
        self.weight.matmul(a, m, &mut y);
        Ok(tvec!(Tensor::from_shape(&shape, &y)?.into_tvalue()))
    }
}

impl TypedOp for Q4MatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape = inputs[0].shape.to_tvec();
        ensure!(shape.last().is_some_and(|d| *d == self.weight.k.to_dim()), "q4 matmul: A's last axis must be K");
        if let Some(last) = shape.last_mut() {
            *last = self.weight.n.to_dim();
        }
        Ok(tvec!(f32::fact(shape)))
    }

    as_op!();
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tract_linalg::multithread::Executor;

    fn arc<T: Datum + Copy>(values: &[T]) -> Arc<Tensor> {
        tensor1(values).into_arc_tensor()
    }

    /// Deterministic values in `[0, 1)`.
    pub(crate) fn values(count: usize, seed: usize) -> impl Iterator<Item = f32> {
        (0..count).map(move |i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 1000.0)
    }

    #[test]
    fn the_vector_kernel_computes_the_scalar_sum() {
        for per_scale in [1, 2] {
            let steps = 8;
            let codes: Vec<u8> = values(steps * 16, 1).map(|v| (v * 256.0) as u8).collect();
            let a: Vec<f32> = values(steps * 32, 2).map(|v| v * 4.0 - 2.0).collect();
            let scales: Vec<f32> = values(steps / per_scale, 3).map(|v| v * 0.1 + 0.01).collect();
            let zero_points: Vec<u8> = values(steps / per_scale, 4).map(|v| (v * 16.0) as u8).collect();
            let scalar = dot_scalar(&codes, &a, &scales, &zero_points, per_scale);
            // The same row as a one-row weight, through the kernel this CPU runs.
            let packed: Vec<u8> = zero_points.chunks(2).map(|p| p[0] | p.get(1).map_or(0, |z| z << 4)).collect();
            let weight =
                Q4Weight::new(1, steps * 32, per_scale * 32, arc(&codes), arc(&scales), Some(&packed), Compute::Float)
                    .unwrap();
            let [vector] = weight.dot(weight.data(), &[0], &a);
            assert!((scalar - vector).abs() <= 1e-4 * scalar.abs().max(1.0), "{scalar} vs {vector}");
            // The 8-lane kernel too, where an AVX-512 CPU dispatches to the 16-lane one.
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                #[allow(unsafe_code)]
                // SAFETY: the CPU has AVX2 and FMA; one row of `steps * 16` bytes against
                // `steps * 32` values, `steps / per_scale` scales and zero points.
                let [avx2] = unsafe { dot_avx2(&[&codes], &a, &[&scales], &[&zero_points], per_scale) };
                assert!((scalar - avx2).abs() <= 1e-4 * scalar.abs().max(1.0), "{scalar} vs {avx2}");
            }
        }
    }

    #[test]
    fn the_book_kernels_compute_the_scalar_sum() {
        use crate::tract_matmul_bnb4::{FP4, NF4};
        for (book, per_scale) in [(&NF4, 2), (&FP4, 1)] {
            let steps = 8;
            let codes: Vec<u8> = values(steps * 16, 1).map(|v| (v * 256.0) as u8).collect();
            let a: Vec<f32> = values(steps * 32, 2).map(|v| v * 4.0 - 2.0).collect();
            let absmax: Vec<f32> = values(steps / per_scale, 3).map(|v| v * 0.1 + 0.01).collect();
            let scalar = dot_book_scalar(&codes, &a, &absmax, book, per_scale);
            let weight = Q4Weight::bnb4(1, steps * 32, per_scale * 32, arc(&codes), arc(&absmax), book).unwrap();
            let [vector] = weight.dot(weight.data(), &[0], &a);
            assert!((scalar - vector).abs() <= 1e-4 * scalar.abs().max(1.0), "{scalar} vs {vector}");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                #[allow(unsafe_code)]
                // SAFETY: the CPU has AVX2 and FMA; one row of `steps * 16` bytes against
                // `steps * 32` values and `steps / per_scale` absmax values.
                let [avx2] = unsafe { dot_book_avx2(&[&codes], &a, &[&absmax], book, per_scale) };
                assert!((scalar - avx2).abs() <= 1e-4 * scalar.abs().max(1.0), "{scalar} vs {avx2}");
            }
        }
    }

    #[test]
    fn a_bnb4_product_is_the_decoded_weights() {
        use crate::tract_matmul_bnb4::NF4;
        // 70 rows (two tasks, the second partial), blocks of 64 and 32, 3 rows of A (the dot
        // kernels) and GEMM_ROWS + 1 (the GEMM).
        for ((k, bs), m) in [(128, 64), (96, 32)].into_iter().flat_map(|f| [(f, 3), (f, GEMM_ROWS + 1)]) {
            let n = 70;
            let codes: Vec<u8> = values(n * k / 2, 4).map(|v| (v * 256.0) as u8).collect();
            let absmax: Vec<f32> = values(n * k / bs, 5).map(|v| v * 0.2 + 0.01).collect();
            let a: Vec<f32> = values(m * k, 7).map(|v| v * 2.0 - 1.0).collect();
            let weight = Q4Weight::bnb4(n, k, bs, arc(&codes), arc(&absmax), &NF4).unwrap();
            // bitsandbytes' decoding of the flattened [N, K] weight: element 2i in the high nibble.
            let w = |col: usize, i: usize| -> f64 {
                let flat = col * k + i;
                let byte = codes[flat / 2];
                let q = if flat.is_multiple_of(2) { byte >> 4 } else { byte & 0x0F };
                f64::from(NF4[usize::from(q)] * absmax[flat / bs])
            };
            for executor in [Executor::SingleThread, Executor::multithread(2)] {
                let mut y = vec![0f32; m * n];
                tract_linalg::multithread::multithread_tract_scope(executor, || weight.matmul(&a, m, &mut y));
                for (i, got) in y.iter().enumerate() {
                    let (mi, col) = (i / n, i % n);
                    let want: f64 = (0..k).map(|j| f64::from(a[mi * k + j]) * w(col, j)).sum();
                    assert!(
                        (f64::from(*got) - want).abs() <= 1e-4 * want.abs().max(1.0),
                        "m {m} k {k} [{i}]: {got} vs {want}"
                    );
                }
            }
        }
    }

    /// `A @ Wᵀ` with `W` dequantized element by element as `MatMulNBits` defines it, in f64;
    /// with [`Compute::Int8`], `A` first quantised as its `accuracy_level = 4` does: per block of
    /// `bs`, `s = max|a| / 127` and `round_half_even(a · 127 / max|a|)` in f32, times `s`.
    fn reference(
        a: &[f32],
        (m, n, k, bs): (usize, usize, usize, usize),
        codes: &[u8],
        scales: &[f32],
        zp: Option<&[u8]>,
        compute: Compute,
    ) -> Vec<f64> {
        let a: Vec<f64> = match compute {
            Compute::Float => a.iter().map(|v| f64::from(*v)).collect(),
            Compute::Int8 => a
                .chunks_exact(bs)
                .flat_map(|block| {
                    let amax = block.iter().map(|v| v.abs()).fold(0f32, f32::max);
                    let inverse = if amax == 0.0 { 0.0 } else { 127.0 / amax };
                    block.iter().map(move |v| (v * inverse).round_ties_even() as f64 * f64::from(amax / 127.0))
                })
                .collect(),
        };
        let blocks = k / bs;
        let weight = |col: usize, i: usize| -> f64 {
            let byte = codes[col * k / 2 + i / 2];
            let q = if i.is_multiple_of(2) { byte & 0x0F } else { byte >> 4 };
            let blk = i / bs;
            let z = zp.map_or(8, |zp| (zp[col * blocks.div_ceil(2) + blk / 2] >> (4 * (blk % 2))) & 0x0F);
            (f64::from(q) - f64::from(z)) * f64::from(scales[col * blocks + blk])
        };
        let mut y = vec![0f64; m * n];
        for mi in 0..m {
            for col in 0..n {
                y[mi * n + col] = (0..k).map(|i| a[mi * k + i] * weight(col, i)).sum();
            }
        }
        y
    }

    #[test]
    fn the_product_is_matmul_nbits_with_zero_points_odd_blocks_and_threads() {
        // 70 rows: two tasks, the second partial; 3 blocks of 32 (zero points end mid-byte), 2
        // blocks of 64, and (for the int8 kernel's four steps at a time) 5 and 8 blocks of 32.
        let shapes = [(96, 32, true), (96, 32, false), (128, 64, true), (160, 32, true), (256, 32, false)];
        let forms = shapes.into_iter().flat_map(|s| [(s, Compute::Float), (s, Compute::Int8)]);
        // 3 rows of A through the dot kernels, GEMM_ROWS + 1 through the GEMM (float32).
        for (((k, bs, with_zp), compute), m) in forms.flat_map(|f| [(f, 3), (f, GEMM_ROWS + 1)]) {
            let n = 70;
            let blocks = k / bs;
            let codes: Vec<u8> = values(n * k / 2, 4).map(|v| (v * 256.0) as u8).collect();
            let scales: Vec<f32> = values(n * blocks, 5).map(|v| v * 0.2 - 0.1).collect();
            let zp: Vec<u8> = values(n * blocks.div_ceil(2), 6).map(|v| (v * 256.0) as u8).collect();
            let zp = with_zp.then_some(&zp[..]);
            let a: Vec<f32> = values(m * k, 7).map(|v| v * 2.0 - 1.0).collect();
            let weight = Q4Weight::new(n, k, bs, arc(&codes), arc(&scales), zp, compute).unwrap();
            // Int8 where the CPU has the instructions, float32 elsewhere.
            let computed = if weight.computes_in_int8() { Compute::Int8 } else { Compute::Float };
            assert_eq!(weight.computes_in_int8(), compute == Compute::Int8 && int8_enabled());
            let expected = reference(&a, (m, n, k, bs), &codes, &scales, zp, computed);
            for executor in [Executor::SingleThread, Executor::multithread(2)] {
                let mut y = vec![0f32; m * n];
                tract_linalg::multithread::multithread_tract_scope(executor, || weight.matmul(&a, m, &mut y));
                for (i, (got, want)) in y.iter().zip(&expected).enumerate() {
                    assert!(
                        (f64::from(*got) - want).abs() <= 1e-4 * want.abs().max(1.0),
                        "m {m} k {k} bs {bs} {computed:?} [{i}]: {got} vs {want}"
                    );
                }
            }
        }
    }
}
