//! `EdgeinferI8MatMul`: `Y = (A - a0) · (B - b0)` in i32 for `MatMulInteger` with a constant
//! int8 or uint8 weight, on x86-64 CPUs with AVX2, with or without AVX-512 VNNI.
//!
//! tract 0.23.9 runs int8 products without VNNI in `avx2_mmm_i32_8x8`, which took 96 % of a
//! DINOv2-S int8 image on a 2-core AMD EPYC: 6.1 s against 0.16 s for the float32 graph (about
//! 230 cycles per 8×8 step of `K`). With AVX-512 VNNI its `avx512vnni_mmm_i32_8x8` is fast, but
//! this op is faster still: about 2× on a LLaMA decode step (one row of `A`), where tract packs
//! `A` and runs 8-column tiles, and ahead on DINOv2's 257 rows. It replaces tract's op for
//! constant weights, the form every `quantize_dynamic` and `quantize_static` linear layer has
//! (`tract_matmul_integer` wires it; [`serves`] says on which CPUs).
//!
//! The weight is packed once, at load, into panels of [`PANEL`] columns: for each group of
//! `depth` consecutive rows of `B`, each column's values side by side, still one byte a value
//! (columns past `N` and rows past `K` are zeros). The group's depth is the kernel's:
//! - **AVX2** (and plain Rust): pairs. `A` is widened to i16 once a run with its zero point
//!   subtracted, so `(A - a0)` needs no compensation term and uint8 and int8 activations are one
//!   case. The kernel widens a pair of weight rows with `vpmovsxbw`, multiplies it against a
//!   broadcast pair of `A` with `vpmaddwd` (two products summed into each i32 lane: exact for any
//!   9-bit × 8-bit operands, where `vpmaddubsw` would saturate) and accumulates [`ROWS`] rows of
//!   `A` × 16 columns in 12 registers, the panel staying in L1 while the rows go by.
//! - **AVX-512 VNNI**: quads. `A` is read as u8 lanes, a uint8 `A` as it is (no copy where `K` is
//!   a multiple of 4), an int8 one moved by +128; one `vpdpbusd` a row multiplies four u8 values
//!   of `A` by the four int8 weights of each of the panel's 16 columns and adds the sum to the
//!   i32 lane, without saturation. The lanes hold `A - a0 + offset` (`offset` = `a0`, plus 128
//!   for int8), so `offset · Σₖ B` per column, packed with the weight, is where the sums start.
//!
//! Rows of `A` are split between tract's threads, or, for the few rows of a decode step, the
//! panels are.
//!
//! A uint8 weight is moved to int8 (`b - 128`, and its zero point with it). A weight zero point
//! `b0` other than 0 (`quantize_dynamic`'s asymmetric uint8 weights) is taken off at the end:
//! `Σ (a - a0)·(b - b0) = Σ (a - a0)·b - b0 · Σ (a - a0)`, with the row sums of `A - a0` computed
//! as it is prepared.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use tract_onnx::tract_hir::internal::*;

use crate::tract_threads::{TASKS_PER_THREAD, Threads};

/// Columns of `B` a panel holds.
const PANEL: usize = 16;

/// Rows of `A` the kernel computes together (in AVX2 two accumulators each, with two for the
/// weight and one for `A`: 15 of the 16 vector registers).
const ROWS: usize = 6;

/// One kernel tile of `Y`: [`ROWS`] rows of [`PANEL`] columns.
type Tile = [[i32; PANEL]; ROWS];

/// For A/B runs: `tract` keeps tract's own int8 kernels everywhere, `ours` takes this op wherever
/// the CPU has AVX2. Unset, [`serves`] decides per CPU.
const KERNEL_SWITCH: &str = "EDGEINFER_TRACT_I8_KERNEL";

#[cfg(test)]
thread_local! {
    /// [`KERNEL_SWITCH`] for the tests of this thread (`Some(true)`: `ours`, `Some(false)`: `tract`).
    pub(crate) static FORCE: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Whether the constant-weight `MatMulInteger` nodes of a model loaded now take this op: on a CPU
/// with AVX2, unless tract has a faster int8 kernel for it, in tract's view of the CPU
/// (`TRACT_CPU_ISA` edits that view, so `TRACT_CPU_ISA=-avx512vnni,-avxvnni,-amx-int8` shows on a
/// newer CPU what an older one gets). Ours is faster than tract's `avx2_mmm_i32_8x8` on AVX2 and
/// than its AVX-512 VNNI kernel (`vpdpbusd` in both); tract keeps CPUs with AMX, and those with
/// the 256-bit AVX-VNNI but no AVX-512 (Intel client cores since Alder Lake), where ours would
/// run its AVX2 tile against tract's VNNI one.
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
                    && !isa.has(Isa::X86_64AmxInt8)
                    && (Kernel::detect() == Kernel::Avx512Vnni || !isa.has(Isa::X86_64AvxVnni))
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
    /// `ceil(K / depth)`, the depth being the kernel's ([`Kernel::depth`]): rows of `B` whose
    /// values sit side by side in a column.
    groups: usize,
    /// `[ceil(N / PANEL)][groups][PANEL][depth]`.
    packed: Vec<i8>,
    /// The weight's zero point per column (after the shift to int8), empty where all are 0.
    zero_points: Vec<i32>,
    /// `Σₖ B` per column, where the kernel reads `A` moved into u8 (depth 4; else empty).
    column_sums: Vec<i32>,
    /// The kernel this CPU runs, chosen once, as the weight is packed.
    kernel: Kernel,
}

impl I8Weight {
    /// Packs `B` (`[K, N]`, row-major), whose element `i` is `value(i)`, in int8 (a uint8 weight
    /// moved by -128); `zero_points` are `B`'s, moved likewise: one, or one per column.
    pub(crate) fn new(k: usize, n: usize, value: impl Fn(usize) -> i16, zero_points: &[i32]) -> TractResult<I8Weight> {
        I8Weight::for_kernel(Kernel::detect(), k, n, value, zero_points)
    }

    /// The weight's rows (the product's depth).
    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// The weight's columns (the product's width).
    pub(crate) fn n(&self) -> usize {
        self.n
    }

    /// [`I8Weight::new`] for `kernel` (the tests pack for every kernel the CPU has).
    fn for_kernel(
        kernel: Kernel,
        k: usize,
        n: usize,
        value: impl Fn(usize) -> i16,
        zero_points: &[i32],
    ) -> TractResult<I8Weight> {
        ensure!(zero_points.len() == 1 || zero_points.len() == n, "int8 matmul: {} zero points", zero_points.len());
        let zero_points = if zero_points.iter().all(|z| *z == 0) {
            Vec::new()
        } else {
            (0..n).map(|j| zero_points[j % zero_points.len()]).collect()
        };
        let depth = kernel.depth();
        let groups = k.div_ceil(depth);
        let group_bytes = PANEL * depth;
        let size = n
            .div_ceil(PANEL)
            .checked_mul(groups)
            .and_then(|s| s.checked_mul(group_bytes))
            .context("int8 matmul: packed weight size")?;
        let mut packed = vec![0i8; size];
        let mut column_sums = if depth == u8::DEPTH { vec![0i32; n] } else { Vec::new() };
        for row in 0..k {
            let (group, j) = (row / depth, row % depth);
            for col in 0..n {
                let (panel, c) = (col / PANEL, col % PANEL);
                let v = value(row * n + col);
                ensure!(i16::from(i8::MIN) <= v && v <= i16::from(i8::MAX), "int8 matmul: weight value {v}");
                packed[(panel * groups + group) * group_bytes + c * depth + j] = v as i8;
                if let Some(sum) = column_sums.get_mut(col) {
                    *sum = sum.wrapping_add(i32::from(v));
                }
            }
        }
        Ok(I8Weight { k, n, groups, packed, zero_points, column_sums, kernel })
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(PANEL)
    }

    /// Bytes of one panel.
    fn panel_bytes(&self) -> usize {
        self.groups * PANEL * self.kernel.depth()
    }

    /// `(A - a0) · (B - b0)` for the rows of `a`, into `y` (`[rows, N]`).
    fn matmul<T: Lane>(&self, a: &PreparedA<'_, T>, y: &mut [i32]) {
        assert_eq!(T::DEPTH, self.kernel.depth(), "int8 matmul: lanes of A for another kernel");
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
    fn block<T: Lane>(&self, a: RowsOfA<T>, panels: Range<usize>, out: &mut [i32], stride: usize) {
        let row_stride = self.kernel.depth() * self.groups;
        let first = panels.start * PANEL;
        let RowsOfA { values: a, sums, offset } = a;
        let m = a.len() / row_stride;
        assert!(out.len() >= m * stride && (self.zero_points.is_empty() || sums.len() == m));
        assert!(offset == 0 || self.column_sums.len() == self.n);
        assert!(panels.end <= self.panels() && self.columns(&panels).len() <= stride);
        let kernel = self.kernel;
        for panel in panels {
            let weight = &self.packed[panel * self.panel_bytes()..(panel + 1) * self.panel_bytes()];
            let columns = self.columns(&(panel..panel + 1));
            let (at, width) = (columns.start - first, columns.len());
            // Lanes holding `A - a0 + offset`: Σ (A - a0)·b = Σ lanes·b - offset · Σ b, the
            // second term where the kernel's sums start.
            let mut start = [0i32; PANEL];
            if offset != 0 {
                for (s, sum) in start.iter_mut().zip(&self.column_sums[columns.clone()]) {
                    *s = offset.wrapping_mul(*sum).wrapping_neg();
                }
            }
            let mut row = 0;
            while row < m {
                let rows = (m - row).min(ROWS);
                let a = &a[row * row_stride..(row + rows) * row_stride];
                let mut tile = [start; ROWS];
                match rows {
                    6 => tile_of::<T, 6>(kernel, a, weight, self.groups, &mut tile),
                    5 => tile_of::<T, 5>(kernel, a, weight, self.groups, &mut tile),
                    4 => tile_of::<T, 4>(kernel, a, weight, self.groups, &mut tile),
                    3 => tile_of::<T, 3>(kernel, a, weight, self.groups, &mut tile),
                    2 => tile_of::<T, 2>(kernel, a, weight, self.groups, &mut tile),
                    _ => tile_of::<T, 1>(kernel, a, weight, self.groups, &mut tile),
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
    /// Plain Rust (no AVX2), on i16 lanes.
    Scalar,
    /// `vpmovsxbw` and `vpmaddwd` on 256-bit vectors: i16 lanes of `A - a0`, a panel's 16 columns
    /// in two halves, two rows of `B` a product.
    Avx2,
    /// `vpdpbusd` (AVX-512 VNNI): u8 lanes of `A` against the int8 weight as it is, a panel's 16
    /// columns in one vector, four rows of `B` a product, multiplied and accumulated in one
    /// instruction.
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
            if has!("avx512f") && has!("avx512vnni") && isa.has(Isa::X86_64Avx512f) && isa.has(Isa::X86_64Avx512Vnni) {
                return Kernel::Avx512Vnni;
            }
            if has!("avx2") {
                return Kernel::Avx2;
            }
        }
        Kernel::Scalar
    }

    /// Rows of `B` a column holds side by side, and of `A` a lane product takes: the [`Lane`]
    /// type's `DEPTH`.
    fn depth(self) -> usize {
        match self {
            Kernel::Scalar | Kernel::Avx2 => i16::DEPTH,
            Kernel::Avx512Vnni => u8::DEPTH,
        }
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

/// How a kernel reads `A`: i16 lanes holding `A - a0` (two rows of `B` a product), or u8 lanes
/// holding `A` moved into 0..=255 (four rows a product; the move and `a0` are taken off through
/// `B`'s column sums).
trait Lane: Copy + Default + Into<i32> + Send + Sync {
    /// Rows of `B` one product takes.
    const DEPTH: usize;

    /// `R` rows of `a` (`[R, DEPTH · groups]`) against one panel (`[groups][PANEL][DEPTH]`), added
    /// to the first `R` rows of `tile` (in i32's wrapping arithmetic), in `kernel` (its lengths
    /// checked by [`tile_of`]).
    fn tile<const R: usize>(kernel: Kernel, a: &[Self], panel: &[i8], groups: usize, tile: &mut Tile);
}

impl Lane for i16 {
    const DEPTH: usize = 2;

    fn tile<const R: usize>(kernel: Kernel, a: &[i16], panel: &[i8], groups: usize, tile: &mut Tile) {
        match kernel {
            // SAFETY: `Kernel::Avx2` only where the CPU has AVX2 (`Kernel::detect`); `tile_of`
            // checked the lengths.
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            Kernel::Avx2 => unsafe { tile_avx2::<R>(a, panel, groups, tile) },
            _ => tile_scalar::<i16, R>(a, panel, groups, tile),
        }
    }
}

impl Lane for u8 {
    const DEPTH: usize = 4;

    fn tile<const R: usize>(kernel: Kernel, a: &[u8], panel: &[i8], groups: usize, tile: &mut Tile) {
        match kernel {
            // SAFETY: `Kernel::Avx512Vnni` only where the CPU has AVX-512 F and VNNI
            // (`Kernel::detect`); `tile_of` checked the lengths.
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            Kernel::Avx512Vnni => unsafe { tile_avx512_vnni::<R>(a, panel, groups, tile) },
            _ => tile_scalar::<u8, R>(a, panel, groups, tile),
        }
    }
}

/// [`Lane::tile`], its lengths checked first (what the vector kernels' safety rests on).
fn tile_of<T: Lane, const R: usize>(kernel: Kernel, a: &[T], panel: &[i8], groups: usize, tile: &mut Tile) {
    assert!(R <= ROWS && a.len() == R * T::DEPTH * groups && panel.len() == groups * PANEL * T::DEPTH);
    T::tile::<R>(kernel, a, panel, groups, tile);
}

/// [`Lane::tile`] in plain Rust: the reference for the vector versions, and the path without
/// AVX2.
fn tile_scalar<T: Lane, const R: usize>(a: &[T], panel: &[i8], groups: usize, tile: &mut Tile) {
    let depth = T::DEPTH;
    for r in 0..R {
        let a = &a[r * depth * groups..(r + 1) * depth * groups];
        for (c, value) in tile[r].iter_mut().enumerate() {
            *value = a
                .iter()
                .enumerate()
                .map(|(i, v)| (*v).into() * i32::from(panel[(i / depth) * PANEL * depth + c * depth + i % depth]))
                .fold(*value, i32::wrapping_add);
        }
    }
}

/// [`Lane::tile`] in AVX2 on i16 lanes: per pair of rows of `B`, its 16 columns widened into two
/// vectors of eight (column, row) pairs of i16, each `vpmaddwd`-ed against each row's broadcast
/// pair of `A`.
///
/// # Safety
/// The CPU has AVX2; `a` holds `R · 2 · pairs` values and `panel` `pairs · 32` bytes.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2<const R: usize>(a: &[i16], panel: &[i8], pairs: usize, tile: &mut Tile) {
    use std::arch::x86_64::*;
    const PAIR_BYTES: usize = 2 * PANEL;
    // SAFETY: each row of `tile` holds 16 i32: two unaligned loads of eight.
    let mut low: [__m256i; R] = std::array::from_fn(|r| unsafe { _mm256_loadu_si256(tile[r].as_ptr().cast()) });
    let mut high: [__m256i; R] = std::array::from_fn(|r| unsafe { _mm256_loadu_si256(tile[r].as_ptr().add(8).cast()) });
    let a = a.as_ptr().cast::<i32>();
    let weight = panel.as_ptr();
    for p in 0..pairs {
        // SAFETY: `p < pairs`, so the pair's 32 bytes lie in `panel`, and each row's pair `p` in
        // `a` (row `r` starts at pair `r · pairs`). Unaligned loads.
        unsafe {
            // Bytes 0..16 hold columns 0..8, bytes 16..32 columns 8..16.
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

/// [`Lane::tile`] in AVX-512 VNNI on u8 lanes: per quad of rows of `B`, its 16 columns' four
/// bytes each in one vector, `vpdpbusd`-ed (u8 × i8, four products summed and added to the i32
/// lane, without saturation) against each row's broadcast quad of `A`.
///
/// # Safety
/// The CPU has AVX-512 F and VNNI; `a` holds `R · 4 · quads` values and `panel` `quads · 64`
/// bytes.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn tile_avx512_vnni<const R: usize>(a: &[u8], panel: &[i8], quads: usize, tile: &mut Tile) {
    use std::arch::x86_64::*;
    const QUAD_BYTES: usize = 4 * PANEL;
    // SAFETY: each row of `tile` holds 16 i32: one unaligned load.
    let mut sums: [__m512i; R] = std::array::from_fn(|r| unsafe { _mm512_loadu_si512(tile[r].as_ptr().cast()) });
    let a = a.as_ptr().cast::<i32>();
    let weight = panel.as_ptr();
    for q in 0..quads {
        // SAFETY: `q < quads`, so the quad's 64 bytes lie in `panel`, and each row's quad `q` in
        // `a` (row `r` starts at quad `r · quads`). Unaligned loads.
        unsafe {
            let b = _mm512_loadu_si512(weight.add(q * QUAD_BYTES).cast());
            for (r, sum) in sums.iter_mut().enumerate() {
                let quad = _mm512_set1_epi32(a.add(r * quads + q).read_unaligned());
                *sum = _mm512_dpbusd_epi32(*sum, quad, b);
            }
        }
    }
    for (row, sum) in tile.iter_mut().zip(sums) {
        // SAFETY: each row of `tile` holds 16 i32: one unaligned store.
        unsafe { _mm512_storeu_si512(row.as_mut_ptr().cast(), sum) };
    }
}

/// `A` as the kernel reads it: `m` rows of `DEPTH · ceil(K / DEPTH)` lanes (`K` padded with 0s).
struct PreparedA<'a, T: Clone> {
    rows: usize,
    /// `A` itself where its values are the lanes (a u8 `A` whose `K` is a multiple of 4).
    values: Cow<'a, [T]>,
    row_stride: usize,
    /// What the lanes hold above `A - a0` (0 in i16 lanes).
    offset: i32,
    /// `Σₖ (A - a0)` per row, where the weight has zero points (else empty).
    sums: Vec<i32>,
}

/// Some consecutive rows of a [`PreparedA`].
#[derive(Clone, Copy)]
struct RowsOfA<'a, T> {
    values: &'a [T],
    sums: &'a [i32],
    offset: i32,
}

impl<'a, T: Lane> PreparedA<'a, T> {
    /// `A` (`[m, K]`) as the lanes `lane(a)`, which hold `a - a0 + offset`, with the row sums of
    /// `A - a0` if `sums`.
    fn new<S: Copy>(
        a: &[S],
        (m, k): (usize, usize),
        lane: impl Fn(S) -> T,
        offset: i32,
        sums: bool,
    ) -> TractResult<PreparedA<'a, T>> {
        ensure!(Some(a.len()) == m.checked_mul(k), "int8 matmul: {} values for {m}x{k}", a.len());
        let row_stride = k.div_ceil(T::DEPTH) * T::DEPTH;
        let size = m.checked_mul(row_stride).context("int8 matmul: size of A")?;
        let mut values = vec![T::default(); size];
        let mut row_sums = Vec::new();
        if k > 0 {
            for (row, out) in a.chunks_exact(k).zip(values.chunks_exact_mut(row_stride)) {
                for (o, v) in out.iter_mut().zip(row) {
                    *o = lane(*v);
                }
                if sums {
                    let sum = out[..k].iter().map(|v| (*v).into() - offset).fold(0i32, i32::wrapping_add);
                    row_sums.push(sum);
                }
            }
        }
        Ok(PreparedA { rows: m, values: Cow::Owned(values), row_stride, offset, sums: row_sums })
    }

    /// `A` (`[m, K]`) as it is, where its values are the lanes, which hold `a - a0 + offset`
    /// (no copy; `K` a multiple of the depth), with the row sums of `A - a0` if `sums`.
    fn borrowed(a: &'a [T], (m, k): (usize, usize), offset: i32, sums: bool) -> TractResult<PreparedA<'a, T>> {
        ensure!(Some(a.len()) == m.checked_mul(k) && k % T::DEPTH == 0, "int8 matmul: {} values for {m}x{k}", a.len());
        let row_sums = if sums && k > 0 {
            a.chunks_exact(k)
                .map(|row| row.iter().map(|v| (*v).into() - offset).fold(0i32, i32::wrapping_add))
                .collect()
        } else {
            Vec::new()
        };
        Ok(PreparedA { rows: m, values: Cow::Borrowed(a), row_stride: k, offset, sums: row_sums })
    }

    /// Rows `rows`.
    fn rows(&self, rows: Range<usize>) -> RowsOfA<'_, T> {
        let stride = self.row_stride;
        let sums = if self.sums.is_empty() { &[][..] } else { &self.sums[rows.clone()] };
        RowsOfA { values: &self.values[rows.start * stride..rows.end * stride], sums, offset: self.offset }
    }
}

/// `(A - a0) · (B - b0)`, `A` u8 or i8 of any rank with `K` values along its last axis, and, when the
/// node has one, `a0` a scalar i32 second input.
#[derive(Debug, Clone)]
pub(crate) struct I8MatMul {
    pub(crate) weight: Arc<I8Weight>,
}

impl I8MatMul {
    /// `(A - a0) · (B - b0)` into `y`, `A` (`[m, K]`) read as the lanes `lane(a)`, which hold
    /// `a - a0 + offset`.
    fn product<S: Copy, T: Lane>(
        &self,
        a: &[S],
        m: usize,
        lane: impl Fn(S) -> T,
        offset: i32,
        y: &mut [i32],
    ) -> TractResult<()> {
        let sums = !self.weight.zero_points.is_empty();
        let a = PreparedA::new(a, (m, self.weight.k), lane, offset, sums)?;
        self.weight.matmul(&a, y);
        Ok(())
    }
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
                a0
            }
            None => 0,
        };
        // Rows of `A`: every axis but the last (so a `K` of 0 still gives `[.., N]` zeros).
        let m = a.shape()[..a.rank() - 1]
            .iter()
            .try_fold(1usize, |m, d| m.checked_mul(*d))
            .context("int8 matmul: rows of A")?;
        let mut y = vec![0i32; m.checked_mul(n).context("int8 matmul: output size")?];
        let plain = a.try_as_plain_ram()?;
        // i16 lanes hold `a - a0` (within ±383); u8 lanes hold `a` (an int8 `a` moved by +128).
        let wide = self.weight.kernel.depth() == i16::DEPTH;
        let a0_16 = a0 as i16;
        let dt = a.datum_type();
        ensure!(dt == u8::datum_type() || dt == i8::datum_type(), "int8 matmul: A is {dt:?}");
        if k > 0 && dt == u8::datum_type() {
            let a = plain.as_slice::<u8>()?;
            if wide {
                self.product(a, m, |v| i16::from(v) - a0_16, 0, &mut y)?;
            } else if k % u8::DEPTH == 0 {
                let sums = !self.weight.zero_points.is_empty();
                self.weight.matmul(&PreparedA::borrowed(a, (m, k), a0, sums)?, &mut y);
            } else {
                self.product(a, m, |v| v, a0, &mut y)?;
            }
        } else if k > 0 {
            let a = plain.as_slice::<i8>()?;
            if wide {
                self.product(a, m, |v| i16::from(v) - a0_16, 0, &mut y)?;
            } else {
                self.product(a, m, |v| (v as u8) ^ 0x80, a0 + 128, &mut y)?;
            }
        }
        let mut shape: TVec<usize> = a.shape().into();
        if let Some(last) = shape.last_mut() {
            *last = n;
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

    /// Every kernel this CPU has, the scalar one included.
    fn kernels() -> impl Iterator<Item = Kernel> {
        [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512Vnni].into_iter().filter(|k| k.available())
    }

    #[test]
    fn the_product_is_exact_for_every_shape_extreme_values_kernel_and_threads() {
        // Odd K and K not a multiple of 4, N not a multiple of the panel, every row tail, and the
        // extremes a uint8 A minus its zero point and an int8 B can reach (where vpmaddubsw would
        // saturate); int8 A too. And the weight's zero points: none, one for all, one per column.
        for (m, k, n) in [(1, 1, 1), (7, 3, 17), (13, 40, 24), (6, 385, 33), (257, 66, 48), (1, 1536, 400)] {
            for (seed, a0, zero_points) in [(1, 0, 0), (2, 255, 1), (3, 131, n), (4, -128, 1), (5, 77, 0)] {
                let signed = a0 < 0 || seed == 5;
                let a = if signed { values(m * k, seed, -128, 127) } else { values(m * k, seed, 0, 255) };
                let mut b = values(k * n, seed + 10, -128, 127);
                b[0] = -128;
                let b0: Vec<i16> = values(zero_points, seed + 20, -128, 127);
                let b0_per_column: Vec<i16> =
                    (0..n).map(|j| if b0.is_empty() { 0 } else { b0[j % b0.len()] }).collect();
                let b0_i32: Vec<i32> = if b0.is_empty() { vec![0] } else { b0.iter().map(|z| i32::from(*z)).collect() };
                let a_tensor = if signed {
                    let a: Vec<i8> = a.iter().map(|v| *v as i8).collect();
                    Tensor::from_shape(&[m, k], &a).unwrap()
                } else {
                    let a: Vec<u8> = a.iter().map(|v| *v as u8).collect();
                    Tensor::from_shape(&[m, k], &a).unwrap()
                };
                let want = reference(&a, &b, (m, k, n), a0, &b0_per_column);
                for kernel in kernels() {
                    let weight = I8Weight::for_kernel(kernel, k, n, |i| b[i], &b0_i32).unwrap();
                    let op = I8MatMul { weight: Arc::new(weight) };
                    for executor in [Executor::SingleThread, Executor::multithread(2)] {
                        let inputs = tvec!(a_tensor.clone().into_tvalue(), tensor0(i32::from(a0)).into_tvalue());
                        let y = tract_linalg::multithread::multithread_tract_scope(executor, || {
                            op.eval(&EvalContext::out_of_plan(), inputs).unwrap()
                        });
                        let y = y[0].try_as_plain_ram().unwrap().as_slice::<i32>().unwrap().to_vec();
                        assert_eq!(y, want, "{m}x{k}x{n}, a0 {a0}, {kernel:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_vector_tiles_are_the_scalar_tile() {
        let groups = 37;
        let a = values(ROWS * i16::DEPTH * groups, 3, -383, 383);
        let panel: Vec<i8> = values(groups * PANEL * 4, 4, -128, 127).iter().map(|v| *v as i8).collect();
        // The tiles add to what the tile holds (a start of offsets).
        let start: Tile = std::array::from_fn(|r| std::array::from_fn(|c| (r * PANEL + c) as i32 * 1000 - 40_000));
        let mut scalar = start;
        tile_scalar::<i16, ROWS>(&a, &panel[..groups * PANEL * 2], groups, &mut scalar);
        if Kernel::Avx2.available() {
            let mut vector = start;
            tile_of::<i16, ROWS>(Kernel::Avx2, &a, &panel[..groups * PANEL * 2], groups, &mut vector);
            assert_eq!(scalar, vector, "AVX2");
        }
        let a: Vec<u8> = values(ROWS * u8::DEPTH * groups, 5, 0, 255).iter().map(|v| *v as u8).collect();
        let mut scalar = start;
        tile_scalar::<u8, ROWS>(&a, &panel, groups, &mut scalar);
        if Kernel::Avx512Vnni.available() {
            let mut vector = start;
            tile_of::<u8, ROWS>(Kernel::Avx512Vnni, &a, &panel, groups, &mut vector);
            assert_eq!(scalar, vector, "AVX-512 VNNI");
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
