//! `EdgeinferI8MatMul`: `Y = (A - a0) · (B - b0)` in i32 for `MatMulInteger` with a constant
//! int8 or uint8 weight, on x86-64 CPUs with AVX2 but no int8 dot-product instructions (AMD before Zen 4,
//! Intel client cores before Alder Lake and Xeons before Cascade Lake).
//!
//! tract 0.23.9 runs int8 products there in `avx2_mmm_i32_8x8`, which took 96 % of a DINOv2-S
//! int8 image on a 2-core AMD EPYC: 6.1 s against 0.16 s for the float32 graph (about 230 cycles
//! per 8×8 step of `K`; its VNNI and AMX siblings, which CPUs with those instructions run, are
//! faster than float32). This op replaces it for constant weights, the form every
//! `quantize_dynamic` and `quantize_static` linear layer has (`tract_matmul_integer` wires it).
//!
//! The weight is packed once, at load, into panels of [`PANEL`] columns: for each pair of rows
//! `2p, 2p + 1` of `B`, each column's two values side by side (32 bytes a pair), still one byte a
//! value (no widened copy; columns past `N` and a row past an odd `K` are zeros). `A` is widened
//! to i16 once a run with its zero point subtracted, so `(A - a0)` needs no compensation term and
//! uint8 and int8 activations are one case. The kernel widens a pair of weight rows with
//! `vpmovsxbw`, multiplies it against a broadcast pair of `A` values with `vpmaddwd` (two products
//! summed into each i32 lane: exact for any 9-bit × 8-bit operands) and accumulates [`ROWS`] rows
//! of `A` × 16 columns in 12 registers, the panel staying in L1 while the rows go by. Rows of `A`
//! are split between tract's threads, or, for the few rows of a decode step, the panels are.
//! Where the op runs on a CPU with AVX-512 VNNI (only when `EDGEINFER_TRACT_I8_KERNEL=ours` asks
//! for it: [`serves`] leaves those CPUs to tract's own VNNI kernel), the tile is one 512-bit
//! vector a row, widened with `vpmovsxbw` and accumulated with `vpdpwssd`.
//!
//! A uint8 weight is moved to int8 (`b - 128`, and its zero point with it). A weight zero point
//! `b0` other than 0 (`quantize_dynamic`'s asymmetric uint8 weights) is taken off at the end:
//! `Σ (a - a0)·(b - b0) = Σ (a - a0)·b - b0 · Σ (a - a0)`, with the row sums of `A` computed as it
//! is widened.

use std::ops::Range;
use std::sync::Arc;

use tract_onnx::tract_hir::internal::*;

use crate::tract_threads::{TASKS_PER_THREAD, Threads};

/// Columns of `B` a panel holds.
const PANEL: usize = 16;

/// Bytes of one pair of rows of a panel.
const PAIR_BYTES: usize = 2 * PANEL;

/// Rows of `A` the kernel computes together (two accumulators each, with two for the weight and
/// one for `A`: 15 of the 16 vector registers).
const ROWS: usize = 6;

/// For A/B runs: `tract` keeps tract's own int8 kernels everywhere, `ours` takes this op wherever
/// the CPU has AVX2. Unset, [`serves`] decides per CPU.
const KERNEL_SWITCH: &str = "EDGEINFER_TRACT_I8_KERNEL";

#[cfg(test)]
thread_local! {
    /// [`KERNEL_SWITCH`] for the tests of this thread (`Some(true)`: `ours`, `Some(false)`: `tract`).
    pub(crate) static FORCE: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Whether the constant-weight `MatMulInteger` nodes of a model loaded now take this op: on a CPU
/// with AVX2 where tract would run `avx2_mmm_i32_8x8`, that is without AVX-512 VNNI, AVX-VNNI or
/// AMX in tract's view of the CPU (`TRACT_CPU_ISA` edits that view, so
/// `TRACT_CPU_ISA=-avx512vnni,-avxvnni,-amx-int8` shows on a newer CPU what an older one gets).
pub(crate) fn serves() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return false;
        }
        #[cfg(test)]
        if let Some(forced) = FORCE.with(|f| f.get()) {
            return forced;
        }
        match std::env::var(KERNEL_SWITCH).ok().as_deref() {
            Some("ours") => true,
            Some("tract") => false,
            _ => {
                use tract_linalg::isa::Isa;
                let isa = tract_linalg::isa::native();
                isa.has(Isa::X86_64Avx2)
                    && !isa.has(Isa::X86_64Avx512Vnni)
                    && !isa.has(Isa::X86_64AvxVnni)
                    && !isa.has(Isa::X86_64AmxInt8)
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A constant `[K, N]` int8 weight, packed as the module notes describe.
#[derive(Debug)]
pub(crate) struct I8Weight {
    k: usize,
    n: usize,
    /// `ceil(K / 2)`.
    pairs: usize,
    /// `[ceil(N / PANEL)][pairs][PAIR_BYTES]`.
    packed: Vec<i8>,
    /// The weight's zero point per column (after the shift to int8), empty where all are 0.
    zero_points: Vec<i32>,
    /// The kernel this CPU runs, chosen once, as the weight is packed.
    kernel: Kernel,
}

impl I8Weight {
    /// Packs `B` (`[K, N]`, row-major), whose element `i` is `value(i)`, in int8 (a uint8 weight
    /// moved by -128); `zero_points` are `B`'s, moved likewise: one, or one per column.
    pub(crate) fn new(k: usize, n: usize, value: impl Fn(usize) -> i16, zero_points: &[i32]) -> TractResult<I8Weight> {
        ensure!(zero_points.len() == 1 || zero_points.len() == n, "int8 matmul: {} zero points", zero_points.len());
        let zero_points = if zero_points.iter().all(|z| *z == 0) {
            Vec::new()
        } else {
            (0..n).map(|j| zero_points[j % zero_points.len()]).collect()
        };
        let pairs = k.div_ceil(2);
        let panels = n.div_ceil(PANEL);
        let size = panels
            .checked_mul(pairs)
            .and_then(|s| s.checked_mul(PAIR_BYTES))
            .context("int8 matmul: packed weight size")?;
        let mut packed = vec![0i8; size];
        for row in 0..k {
            let (pair, half) = (row / 2, row % 2);
            for col in 0..n {
                let (panel, c) = (col / PANEL, col % PANEL);
                let v = value(row * n + col);
                ensure!(i16::from(i8::MIN) <= v && v <= i16::from(i8::MAX), "int8 matmul: weight value {v}");
                packed[(panel * pairs + pair) * PAIR_BYTES + (c / 8) * 16 + (c % 8) * 2 + half] = v as i8;
            }
        }
        Ok(I8Weight { k, n, pairs, packed, zero_points, kernel: Kernel::detect() })
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(PANEL)
    }

    /// `(A - a0) · (B - b0)` for the rows of `a`, into `y` (`[rows, N]`).
    fn matmul(&self, a: &WidenedA, y: &mut [i32]) {
        let (m, n, panels) = (a.rows, self.n, self.panels());
        if m == 0 || n == 0 {
            return;
        }
        let threads = Threads::current();
        let tasks = threads.count() * TASKS_PER_THREAD;
        if !threads.worth(m.saturating_mul(n).saturating_mul(self.k)) {
            self.block(a.rows(0..m), 0..panels, y, n);
        } else if m >= ROWS * tasks {
            // Enough rows for every task: each takes whole kernel tiles of rows, every panel.
            let per_task = m.div_ceil(tasks).next_multiple_of(ROWS);
            threads.spawn_each(y.chunks_mut(per_task * n).enumerate(), |(task, y)| {
                let a = a.rows(task * per_task..task * per_task + y.len() / n);
                self.block(a, 0..panels, y, n);
            });
        } else {
            // A few rows (a decode step): each task takes the columns of some panels.
            let per_task = panels.div_ceil(tasks) * PANEL;
            let parts: Vec<Range<usize>> = (0..n).step_by(per_task).map(|c| c..(c + per_task).min(n)).collect();
            threads.split_columns(true, (m, n), &parts, y, |columns, out| {
                let panels = columns.start / PANEL..columns.end.div_ceil(PANEL);
                self.block(a.rows(0..m), panels, out, columns.len());
            });
        }
    }

    /// The columns of `B` that panels `panels` hold.
    fn columns(&self, panels: &Range<usize>) -> Range<usize> {
        panels.start * PANEL..(panels.end * PANEL).min(self.n)
    }

    /// The rows `a` holds against panels `panels`, into `out`: a row of `stride` values each, the
    /// first panel's columns at 0.
    fn block(&self, a: RowsOfA, panels: Range<usize>, out: &mut [i32], stride: usize) {
        let row_stride = 2 * self.pairs;
        let first = panels.start * PANEL;
        let RowsOfA { values: a, sums } = a;
        let m = a.len() / row_stride;
        assert!(out.len() >= m * stride && (self.zero_points.is_empty() || sums.len() == m));
        assert!(panels.end <= self.panels() && self.columns(&panels).len() <= stride);
        for panel in panels {
            let weight = &self.packed[panel * self.pairs * PAIR_BYTES..(panel + 1) * self.pairs * PAIR_BYTES];
            let columns = self.columns(&(panel..panel + 1));
            let (at, width) = (columns.start - first, columns.len());
            let mut row = 0;
            while row < m {
                let rows = (m - row).min(ROWS);
                let a = &a[row * row_stride..(row + rows) * row_stride];
                let mut tile = [[0i32; PANEL]; ROWS];
                let kernel = self.kernel;
                match rows {
                    6 => tile_of::<6>(kernel, a, weight, self.pairs, &mut tile),
                    5 => tile_of::<5>(kernel, a, weight, self.pairs, &mut tile),
                    4 => tile_of::<4>(kernel, a, weight, self.pairs, &mut tile),
                    3 => tile_of::<3>(kernel, a, weight, self.pairs, &mut tile),
                    2 => tile_of::<2>(kernel, a, weight, self.pairs, &mut tile),
                    _ => tile_of::<1>(kernel, a, weight, self.pairs, &mut tile),
                }
                for (r, values) in tile.iter().take(rows).enumerate() {
                    let start = (row + r) * stride + at;
                    let out = &mut out[start..start + width];
                    out.copy_from_slice(&values[..width]);
                    // Σ (a - a0)·(b - b0) = Σ (a - a0)·b - b0 · Σ (a - a0), in i32's wrapping
                    // arithmetic as the sums are.
                    if !self.zero_points.is_empty() {
                        let sum = sums[row + r];
                        for (y, b0) in out.iter_mut().zip(&self.zero_points[columns.clone()]) {
                            *y = y.wrapping_sub(b0.wrapping_mul(sum));
                        }
                    }
                }
                row += rows;
            }
        }
    }
}

/// The tile kernels, by instruction set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// Plain Rust (no AVX2).
    Scalar,
    /// `vpmovsxbw` and `vpmaddwd` on 256-bit vectors: a panel's 16 columns in two halves.
    Avx2,
    /// `vpmovsxbw` and `vpdpwssd` (AVX-512 BW and VNNI): a panel's 16 columns in one vector,
    /// multiplied and accumulated in one instruction.
    Avx512Vnni,
}

impl Kernel {
    /// The best kernel this CPU has, in tract's view of it too: `TRACT_CPU_ISA=-avx512f` (or
    /// `-avx512vnni`) gives the AVX2 kernel on a CPU with AVX-512, as it gives tract's AVX2 tier.
    fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            use tract_linalg::isa::Isa;
            let isa = tract_linalg::isa::native();
            if has!("avx512f")
                && has!("avx512bw")
                && has!("avx512vnni")
                && isa.has(Isa::X86_64Avx512f)
                && isa.has(Isa::X86_64Avx512Vnni)
            {
                return Kernel::Avx512Vnni;
            }
            if has!("avx2") {
                return Kernel::Avx2;
            }
        }
        Kernel::Scalar
    }

    /// Whether this CPU can run `self` (the tests run every tier it has).
    #[cfg(test)]
    fn available(self) -> bool {
        match (self, Kernel::detect()) {
            (Kernel::Scalar, _) => true,
            (Kernel::Avx2, best) => best != Kernel::Scalar,
            (Kernel::Avx512Vnni, best) => best == Kernel::Avx512Vnni,
        }
    }
}

/// `R` rows of `a` (`[R, 2 · pairs]` i16) against one panel (`[pairs][PAIR_BYTES]`), into the
/// first `R` rows of `tile`, in `kernel` (what [`Kernel::detect`] said).
fn tile_of<const R: usize>(kernel: Kernel, a: &[i16], panel: &[i8], pairs: usize, tile: &mut [[i32; PANEL]; ROWS]) {
    assert!(R <= ROWS && a.len() == R * 2 * pairs && panel.len() == pairs * PAIR_BYTES);
    match kernel {
        // SAFETY (both): `kernel` is only a vector one where the CPU has its instructions
        // (`Kernel::detect`); the lengths were asserted above.
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        Kernel::Avx512Vnni => unsafe { tile_avx512_vnni::<R>(a, panel, pairs, tile) },
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        Kernel::Avx2 => unsafe { tile_avx2::<R>(a, panel, pairs, tile) },
        _ => tile_scalar::<R>(a, panel, pairs, tile),
    }
}

/// [`tile_of`] in plain Rust: the reference for the vector version, and the path without AVX2.
fn tile_scalar<const R: usize>(a: &[i16], panel: &[i8], pairs: usize, tile: &mut [[i32; PANEL]; ROWS]) {
    for r in 0..R {
        let a = &a[r * 2 * pairs..(r + 1) * 2 * pairs];
        for (c, value) in tile[r].iter_mut().enumerate() {
            *value = (0..pairs)
                .map(|p| {
                    let at = p * PAIR_BYTES + (c / 8) * 16 + (c % 8) * 2;
                    i32::from(a[2 * p]) * i32::from(panel[at]) + i32::from(a[2 * p + 1]) * i32::from(panel[at + 1])
                })
                .sum();
        }
    }
}

/// [`tile_of`] in AVX2: per pair of rows of `B`, its 16 columns widened into two vectors of
/// eight (column, row) pairs of i16, each `vpmaddwd`-ed against each row's broadcast pair of `A`.
///
/// # Safety
/// The CPU has AVX2; `a` holds `R · 2 · pairs` values and `panel` `pairs · PAIR_BYTES` bytes.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2<const R: usize>(a: &[i16], panel: &[i8], pairs: usize, tile: &mut [[i32; PANEL]; ROWS]) {
    use std::arch::x86_64::*;
    let mut low = [_mm256_setzero_si256(); R];
    let mut high = [_mm256_setzero_si256(); R];
    let a = a.as_ptr().cast::<i32>();
    let weight = panel.as_ptr();
    for p in 0..pairs {
        // SAFETY: `p < pairs`, so the pair's 32 bytes lie in `panel`, and each row's pair `p` in
        // `a` (row `r` starts at pair `r · pairs`). Unaligned loads.
        unsafe {
            let at = weight.add(p * PAIR_BYTES);
            let b_low = _mm256_cvtepi8_epi16(_mm_loadu_si128(at.cast()));
            let b_high = _mm256_cvtepi8_epi16(_mm_loadu_si128(at.add(16).cast()));
            for r in 0..R {
                let pair = _mm256_set1_epi32(a.add(r * pairs + p).read_unaligned());
                low[r] = _mm256_add_epi32(low[r], _mm256_madd_epi16(pair, b_low));
                high[r] = _mm256_add_epi32(high[r], _mm256_madd_epi16(pair, b_high));
            }
        }
    }
    for r in 0..R {
        // SAFETY: each row of `tile` holds 16 i32: two unaligned stores of eight.
        unsafe {
            _mm256_storeu_si256(tile[r].as_mut_ptr().cast(), low[r]);
            _mm256_storeu_si256(tile[r].as_mut_ptr().add(8).cast(), high[r]);
        }
    }
}

/// [`tile_of`] in AVX-512 with VNNI: per pair of rows of `B`, its 16 columns widened into one
/// vector of (column, row) pairs of i16, `vpdpwssd`-ed (multiplied pairwise, summed and added to
/// the i32 lane, without saturation) against each row's broadcast pair of `A`.
///
/// # Safety
/// The CPU has AVX-512 F, BW and VNNI; `a` holds `R · 2 · pairs` values and `panel`
/// `pairs · PAIR_BYTES` bytes.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_avx512_vnni<const R: usize>(a: &[i16], panel: &[i8], pairs: usize, tile: &mut [[i32; PANEL]; ROWS]) {
    use std::arch::x86_64::*;
    let mut sums = [_mm512_setzero_si512(); R];
    let a = a.as_ptr().cast::<i32>();
    let weight = panel.as_ptr();
    for p in 0..pairs {
        // SAFETY: as in `tile_avx2`: the pair's 32 bytes lie in `panel`, each row's pair `p` in `a`.
        unsafe {
            // Bytes 0..16 hold columns 0..8, bytes 16..32 columns 8..16: lane `c` is column `c`.
            let b = _mm512_cvtepi8_epi16(_mm256_loadu_si256(weight.add(p * PAIR_BYTES).cast()));
            for (r, sum) in sums.iter_mut().enumerate() {
                let pair = _mm512_set1_epi32(a.add(r * pairs + p).read_unaligned());
                *sum = _mm512_dpwssd_epi32(*sum, pair, b);
            }
        }
    }
    for (row, sum) in tile.iter_mut().zip(sums) {
        // SAFETY: each row of `tile` holds 16 i32: one unaligned store.
        unsafe { _mm512_storeu_si512(row.as_mut_ptr().cast(), sum) };
    }
}

/// `A - a0` as the kernel reads it.
struct WidenedA {
    /// Rows of `A`: `m`.
    rows: usize,
    /// `[m, row_stride]` i16, `row_stride = 2 · ceil(K / 2)` (an odd `K` padded with a 0).
    values: Vec<i16>,
    row_stride: usize,
    /// `Σₖ (A - a0)` per row, where the weight has zero points (else empty).
    sums: Vec<i32>,
}

/// Some consecutive rows of a [`WidenedA`].
#[derive(Clone, Copy)]
struct RowsOfA<'a> {
    values: &'a [i16],
    sums: &'a [i32],
}

impl WidenedA {
    /// `A` (`[m, K]`, u8 or i8) minus `a0`, with the row sums if `sums`.
    fn new<T: Copy + Into<i16>>(a: &[T], (m, k): (usize, usize), a0: i16, sums: bool) -> TractResult<WidenedA> {
        ensure!(Some(a.len()) == m.checked_mul(k), "int8 matmul: {} values for {m}x{k}", a.len());
        let row_stride = 2 * k.div_ceil(2);
        let mut values = vec![0i16; m.checked_mul(row_stride).context("int8 matmul: widened A size")?];
        let mut row_sums = Vec::new();
        if k > 0 {
            for (row, out) in a.chunks_exact(k).zip(values.chunks_exact_mut(row_stride)) {
                for (o, v) in out.iter_mut().zip(row) {
                    *o = (*v).into() - a0;
                }
                if sums {
                    row_sums.push(out.iter().map(|v| i32::from(*v)).fold(0i32, i32::wrapping_add));
                }
            }
        }
        Ok(WidenedA { rows: m, values, row_stride, sums: row_sums })
    }

    /// Rows `rows`.
    fn rows(&self, rows: Range<usize>) -> RowsOfA<'_> {
        let stride = self.row_stride;
        let sums = if self.sums.is_empty() { &[][..] } else { &self.sums[rows.clone()] };
        RowsOfA { values: &self.values[rows.start * stride..rows.end * stride], sums }
    }
}

/// `(A - a0) · (B - b0)`, `A` u8 or i8 of any rank with `K` values along its last axis, and, when the
/// node has one, `a0` a scalar i32 second input.
#[derive(Debug, Clone)]
pub(crate) struct I8MatMul {
    pub(crate) weight: Arc<I8Weight>,
}

impl PartialEq for I8MatMul {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.weight, &other.weight)
    }
}

impl Eq for I8MatMul {}

impl Op for I8MatMul {
    fn name(&self) -> StaticName {
        "EdgeinferI8MatMul".into()
    }

    op_as_typed_op!();
}

impl EvalOp for I8MatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (k, n) = (self.weight.k, self.weight.n);
        let a = &inputs[0];
        ensure!(a.shape().last() == Some(&k), "int8 matmul: A of shape {:?}, K = {k}", a.shape());
        let a0 = match inputs.get(1) {
            Some(a0) => {
                let a0 = a0.cast_to_scalar::<i32>()?;
                ensure!((-128..=255).contains(&a0), "int8 matmul: zero point {a0}");
                a0 as i16
            }
            None => 0,
        };
        // Rows of `A`: every axis but the last (so a `K` of 0 still gives `[.., N]` zeros).
        let m = a.shape()[..a.rank() - 1]
            .iter()
            .try_fold(1usize, |m, d| m.checked_mul(*d))
            .context("int8 matmul: rows of A")?;
        let plain = a.try_as_plain_ram()?;
        let sums = !self.weight.zero_points.is_empty();
        let widened = match a.datum_type() {
            dt if dt == u8::datum_type() => WidenedA::new(plain.as_slice::<u8>()?, (m, k), a0, sums)?,
            dt if dt == i8::datum_type() => WidenedA::new(plain.as_slice::<i8>()?, (m, k), a0, sums)?,
            dt => bail!("int8 matmul: A is {dt:?}"),
        };
        let mut shape: TVec<usize> = a.shape().into();
        if let Some(last) = shape.last_mut() {
            *last = n;
        }
        let mut y = vec![0i32; widened.rows.checked_mul(n).context("int8 matmul: output size")?];
        if k > 0 {
            self.weight.matmul(&widened, &mut y);
        }
        Ok(tvec!(Tensor::from_shape(&shape, &y)?.into_tvalue()))
    }
}

impl TypedOp for I8MatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape = inputs[0].shape.to_tvec();
        ensure!(shape.last().is_some_and(|d| *d == self.weight.k.to_dim()), "int8 matmul: A's last axis must be K");
        if let Some(last) = shape.last_mut() {
            *last = self.weight.n.to_dim();
        }
        Ok(tvec!(i32::fact(shape)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_linalg::multithread::Executor;

    /// Deterministic pseudo-random values in `[low, high]`.
    fn values(count: usize, seed: u64, low: i16, high: i16) -> Vec<i16> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..count)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                low + ((state >> 33) % (high - low + 1) as u64) as i16
            })
            .collect()
    }

    /// `(A - a0) · (B - b0)` element by element (`b0` per column).
    fn reference(a: &[i16], b: &[i16], (m, k, n): (usize, usize, usize), a0: i16, b0: &[i16]) -> Vec<i32> {
        let mut y = vec![0i32; m * n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = (0..k).map(|l| i32::from(a[i * k + l] - a0) * i32::from(b[l * n + j] - b0[j])).sum();
            }
        }
        y
    }

    #[test]
    fn the_product_is_exact_for_every_shape_extreme_values_and_threads() {
        // Odd K, N not a multiple of the panel, every row tail, and the extremes a uint8 A minus
        // its zero point and an int8 B can reach (where vpmaddubsw would saturate).
        // And the weight's zero points: none, one for all, one per column.
        for (m, k, n) in [(1, 1, 1), (7, 3, 17), (13, 40, 24), (6, 385, 33), (257, 64, 48), (1, 1536, 400)] {
            for (seed, a0, zero_points) in [(1, 0, 0), (2, 255, 1), (3, 131, n)] {
                let a = values(m * k, seed, 0, 255);
                let mut b = values(k * n, seed + 10, -128, 127);
                b[0] = -128;
                let b0: Vec<i16> = values(zero_points, seed + 20, -128, 127);
                let b0_per_column: Vec<i16> =
                    (0..n).map(|j| if b0.is_empty() { 0 } else { b0[j % b0.len()] }).collect();
                let b0_i32: Vec<i32> = if b0.is_empty() { vec![0] } else { b0.iter().map(|z| i32::from(*z)).collect() };
                let weight = I8Weight::new(k, n, |i| b[i], &b0_i32).unwrap();
                let a_u8: Vec<u8> = a.iter().map(|v| *v as u8).collect();
                let widened = WidenedA::new(&a_u8, (m, k), a0, zero_points > 0).unwrap();
                let want = reference(&a, &b, (m, k, n), a0, &b0_per_column);
                for executor in [Executor::SingleThread, Executor::multithread(2)] {
                    let mut y = vec![0i32; m * n];
                    tract_linalg::multithread::multithread_tract_scope(executor, || weight.matmul(&widened, &mut y));
                    assert_eq!(y, want, "{m}x{k}x{n}, a0 {a0}");
                }
            }
        }
    }

    #[test]
    fn the_vector_tile_is_the_scalar_tile() {
        let pairs = 37;
        let a = values(ROWS * 2 * pairs, 3, -255, 255);
        let panel: Vec<i8> = values(pairs * PAIR_BYTES, 4, -128, 127).iter().map(|v| *v as i8).collect();
        let mut scalar = [[0i32; PANEL]; ROWS];
        tile_scalar::<ROWS>(&a, &panel, pairs, &mut scalar);
        for kernel in [Kernel::Avx2, Kernel::Avx512Vnni].into_iter().filter(|k| k.available()) {
            let mut vector = [[0i32; PANEL]; ROWS];
            tile_of::<ROWS>(kernel, &a, &panel, pairs, &mut vector);
            assert_eq!(scalar, vector, "{kernel:?}");
        }
    }

    #[test]
    fn an_empty_k_gives_zeros_of_the_output_shape() {
        let op = I8MatMul { weight: Arc::new(I8Weight::new(0, 3, |_| 0, &[0]).unwrap()) };
        let a = Tensor::from_shape::<u8>(&[2, 0], &[]).unwrap();
        let y = op.eval(&EvalContext::out_of_plan(), tvec!(a.into_tvalue())).unwrap();
        assert_eq!(y[0].shape(), &[2, 3]);
        assert!(y[0].try_as_plain_ram().unwrap().as_slice::<i32>().unwrap().iter().all(|v| *v == 0));
    }

    #[test]
    fn a_weight_outside_int8_is_refused() {
        assert!(I8Weight::new(1, 1, |_| 128, &[0]).is_err());
        assert!(I8Weight::new(1, 2, |_| 1, &[0, 0, 0]).is_err());
    }
}
