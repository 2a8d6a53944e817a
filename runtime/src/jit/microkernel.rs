//! The register tiles at the heart of every convolution and dense layer: C (MR x NR)
//! += A (MR x K) · B (K x NR), over panels packed so that each step of K reads MR
//! consecutive values of A and NR of B.
//!
//! Cranelift's x64 backend has no vector wider than 128 bits and 16 xmm registers, which
//! caps a generated tile at about a third of this machine's FMA peak; these tiles are
//! compiled by rustc for AVX-512 (12x32, 24 of 32 zmm registers accumulating) and
//! AVX2+FMA (6x16, 12 of 16 ymm), chosen at run time, and called from the loop nests
//! the JIT generates. One macro writes both, so they differ only in their parameters.
//!
//! Panels: A `a[p * lda + r]`, B `b[p * ldb + c]`: `lda` = MR and `ldb` = NR where
//! they are packed; a pointwise convolution's tiles read its input planes in place,
//! one K step a plane apart (A's for a pixel-major product, B's for a direct one). C
//! is row-major with row stride `ldc`. Without `ACCUMULATE` in its flags the tile
//! overwrites C. A tile at the edge of a product computes only its first `rows` rows
//! and reads and stores only its first `columns` columns (masked loads and stores
//! where the ISA has them: a row of B read in place may end where the input does), so
//! edges cost what their rows are worth and go straight into C.
//!
//! A conv's last K block finishes its epilogue here, on the sums still in registers:
//! a non-null `bias` adds `bias[r]` to row r, a non-null `residual` adds the tile at
//! the same place of a tensor with C's row stride, and `RELU` keeps `max(value, 0)`, in
//! that order (the codegen's `tile` module defines the ABI).

use cnnc_compiler::codegen::cpu::tile::{ACCUMULATE, OFFSETS, RELU};

/// A tile: `fn(k, a, lda, b, ldb, c, ldc, flags, rows, columns, bias, residual)`, the
/// C ABI so generated code can call it; `1 <= rows <= MR`, `1 <= columns <= NR`;
/// `bias` and `residual` may be null. The precompiled tiles read only A's first `rows`
/// rows and B's first `columns` columns. With `OFFSETS` in `flags`, `ldb` is the
/// address of a table of `k` i64 offsets (floats from `b`) of B's steps.
pub type TileFn = unsafe extern "C" fn(
    usize,
    *const f32,
    usize,
    *const f32,
    usize,
    *mut f32,
    usize,
    u32,
    u32,
    u32,
    *const f32,
    *const f32,
);

/// What a tile does after its product: the `flags`, `bias` and `residual` arguments.
#[derive(Clone, Copy)]
pub struct TileFinish {
    pub flags: u32,
    pub bias: *const f32,
    pub residual: *const f32,
}

impl TileFinish {
    /// C overwritten (or added to, with `accumulate`), nothing else.
    pub fn plain(accumulate: bool) -> TileFinish {
        TileFinish {
            flags: if accumulate { ACCUMULATE } else { 0 },
            bias: std::ptr::null(),
            residual: std::ptr::null(),
        }
    }
}

impl Microkernel {
    /// Calls the tile, A's step `p` at `a + p * lda`, B's at `b + p * ldb` (or where
    /// the table at `ldb` says, with `OFFSETS` in `then.flags`).
    ///
    /// # Safety
    /// `a` holds `k` steps of `mr` floats at stride `lda` (`rows` of them for a
    /// precompiled tile), `b` `k` steps of `nr` at stride `ldb` or at the table's
    /// offsets (`columns` of them);
    /// `c` (and `residual`, if not null) has `rows` rows of `columns` floats at stride
    /// `ldc`; `bias`, if not null, `rows`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn call(
        &self,
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        columns: usize,
        then: TileFinish,
    ) {
        // SAFETY: as the caller promised.
        unsafe {
            (self.tile)(
                k,
                a,
                lda,
                b,
                ldb,
                c,
                ldc,
                then.flags,
                rows as u32,
                columns as u32,
                then.bias,
                then.residual,
            )
        }
    }
}

/// A tile function and its shape.
#[derive(Clone, Copy)]
pub struct Microkernel {
    pub name: &'static str,
    pub mr: usize,
    pub nr: usize,
    pub tile: TileFn,
}

impl std::fmt::Debug for Microkernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}x{})", self.name, self.mr, self.nr)
    }
}

impl Microkernel {
    /// The widest tile this CPU runs.
    pub fn best() -> Microkernel {
        Self::available()[0]
    }

    /// The widest precompiled FMA tile this CPU runs (AVX-512 or AVX2+FMA), if any:
    /// without one the JIT generates its tile with Cranelift instead of calling the
    /// portable one.
    pub fn with_fma() -> Option<Microkernel> {
        Self::available()
            .into_iter()
            .find(|k| k.name != PORTABLE.name)
    }

    /// Every tile this CPU can run, widest first; the portable one is always there.
    pub fn available() -> Vec<Microkernel> {
        let mut found = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                found.push(x86::AVX512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                found.push(x86::AVX2);
            }
        }
        found.push(PORTABLE);
        found
    }
}

impl Microkernel {
    /// This tile's throughput on one core with its panels in L1, in GFLOP/s, measured
    /// for about `budget`: how close the tile comes to the FMA peak.
    pub fn measure_peak(&self, budget: std::time::Duration) -> f64 {
        let k = 256;
        let a = vec![0.5f32; k * self.mr];
        let b = vec![0.25f32; k * self.nr];
        let mut c = vec![0.0f32; self.mr * self.nr];
        let flops_per_call = 2.0 * (self.mr * self.nr * k) as f64;
        throughput(budget, flops_per_call, || {
            // SAFETY: the panels hold k steps and C one tile.
            unsafe {
                self.call(
                    k,
                    a.as_ptr(),
                    self.mr,
                    b.as_ptr(),
                    self.nr,
                    c.as_mut_ptr(),
                    self.nr,
                    self.mr,
                    self.nr,
                    TileFinish::plain(true),
                )
            };
        })
    }
}

/// The machine's in-register FMA peak: a loop of independent FMA chains on the widest
/// vector registers this CPU has, so that neither memory nor the FMA latency limits it.
#[derive(Clone, Copy)]
pub struct FmaPeak {
    pub name: &'static str,
    /// Independent accumulators: enough to cover the FMA latency on both FMA ports.
    pub chains: usize,
    pub lanes: usize,
    /// Runs the chains for the given number of rounds.
    rounds: unsafe fn(u64),
}

impl std::fmt::Debug for FmaPeak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, {} chains of {} floats",
            self.name, self.chains, self.lanes
        )
    }
}

impl FmaPeak {
    /// The widest FMA this CPU runs.
    pub fn best() -> FmaPeak {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return x86::AVX512_FMA;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return x86::AVX2_FMA;
            }
        }
        portable::PORTABLE_FMA
    }

    /// GFLOP/s on the calling thread, measured for about `budget`.
    pub fn measure(&self, budget: std::time::Duration) -> f64 {
        const ROUNDS: u64 = 4096;
        let flops_per_call = 2.0 * (self.chains * self.lanes) as f64 * ROUNDS as f64;
        // SAFETY: `best` chose a loop this CPU has the features for.
        throughput(budget, flops_per_call, || unsafe { (self.rounds)(ROUNDS) })
    }
}

/// Calls `call` (which does `flops_per_call` floating-point operations) for about
/// `budget`, and returns the rate in GFLOP/s.
fn throughput(budget: std::time::Duration, flops_per_call: f64, mut call: impl FnMut()) -> f64 {
    let started = std::time::Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < budget {
        for _ in 0..100 {
            call();
        }
        calls += 100;
    }
    flops_per_call * calls as f64 / started.elapsed().as_secs_f64() / 1e9
}

/// Writes one FMA-peak loop and its `FmaPeak`: `$chains` accumulators of `$lanes`
/// floats, each updated by one FMA a round (`acc = acc * m + a`, which stays near 1 and
/// never goes subnormal).
macro_rules! fma_chains {
    (
        $(#[$attr:meta])* $peak:ident = $label:literal, $name:ident, $vector:ty,
        lanes: $lanes:literal, chains: $chains:literal, splat: $splat:expr, fma: $fma:expr
    ) => {
        /// # Safety
        /// The CPU has the features the function is compiled for.
        $(#[$attr])*
        pub unsafe fn $name(rounds: u64) {
            // Opaque, distinct starting values: the compiler may neither fold the
            // chains into constants nor merge identical ones into one.
            let m = $splat(std::hint::black_box(0.999_999));
            let a = $splat(std::hint::black_box(1e-6));
            let mut acc: [$vector; $chains] = [$splat(0.0); $chains];
            for (i, sum) in acc.iter_mut().enumerate() {
                *sum = $splat(std::hint::black_box(1.0 + i as f32 / 64.0));
            }
            for _ in 0..rounds {
                for sum in acc.iter_mut() {
                    *sum = $fma(*sum, m, a);
                }
            }
            // Keeps every chain alive: nothing may be optimised away.
            std::hint::black_box(&acc);
        }

        pub const $peak: $crate::jit::microkernel::FmaPeak = $crate::jit::microkernel::FmaPeak {
            name: $label,
            chains: $chains,
            lanes: $lanes,
            rounds: $name,
        };
    };
}

/// How many steps of K ahead the tiles prefetch B's panel: about 2-3 KiB for the
/// AVX-512 tile, a few hundred cycles of its work, which covers memory's latency.
pub const PREFETCH_STEPS: usize = 24;

/// How many steps of K ahead the tiles prefetch A: a step's row of A read in place is
/// a plane away from the last (`lda` floats), too far for the hardware to follow.
/// Measured on a 768 -> 192 channel 1x1 conv at 17x17: 0.49 ms without, 0.46 with 16.
/// Where A is a direct product's packed weights, the first tile over them reads them
/// from memory in the network (its layers' weights do not stay in cache from one run
/// to the next): 16 steps (768 bytes) was too short for that, 64 took Inception-v3's
/// 448 -> 384 3x3 at 8x8 (6 MB of weights) from 0.85 to 0.71 ms on two threads, in
/// the network; ResNet-50, VGG-16 and AlexNet 2-5% faster, none slower.
pub const A_AHEAD: usize = 64;

/// Writes one tile function: `$rows` rows of `$vectors` vectors of `$lanes` floats,
/// accumulated in registers over all of K, then stored (or added) to C once, with the
/// epilogue the flags and pointers ask for. The entry point dispatches on the rows
/// asked for to a body compiled for that many rows (an edge tile of 4 rows keeps 4 rows
/// of accumulators, not 12) and, where the columns asked for fit in one vector, for that
/// one vector; its stores keep to the columns asked for through `$mask` (which lanes of
/// vector `v` are stored).
macro_rules! tile {
    (
        $(#[$attr:meta])* $name:ident, $vector:ty, $lanes:literal, $rows:literal, $vectors:literal,
        zero: $zero:expr, load: $load:expr, store: $store:expr,
        splat: $splat:expr, fma: $fma:expr, add: $add:expr, max: $max:expr,
        prefetch: $prefetch:expr,
        mask: $mask_type:ty = $mask:expr, masked_load: $masked_load:expr,
        masked_store: $masked_store:expr, rows: [$($r:literal)*]
    ) => {
        /// # Safety
        /// `a` holds `k` steps of `rows` floats at stride `lda`, `b` `k` of `columns`
        /// at stride `ldb`, `c` (and `residual` if not null)
        /// `rows` rows of `columns` at `ldc`, `bias` (if not null) `rows`; the CPU has
        /// the features the function is compiled for.
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "C" fn $name(
            k: usize,
            a: *const f32,
            lda: usize,
            b: *const f32,
            ldb: usize,
            c: *mut f32,
            ldc: usize,
            flags: u32,
            rows: u32,
            columns: u32,
            bias: *const f32,
            residual: *const f32,
        ) {
            let out = Out { c, ldc, flags, bias, residual };
            // SAFETY: as the caller promised, for the rows asked for.
            unsafe {
                // A panel's last columns may fit in its first vector (a 100-column
                // output is three panels of 32 and one of 4): then only that vector
                // is multiplied.
                let narrow = columns as usize <= $lanes;
                // Fewer columns than the vectors used: B's loads are masked too.
                let edge = (columns as usize) < if narrow { $lanes } else { $lanes * $vectors };
                // With `OFFSETS`, `ldb` is the address of B's table of step offsets.
                let offsets = flags & $crate::jit::microkernel::OFFSETS != 0;
                let (a, b) = ((a, lda), (b, ldb));
                match (rows, narrow, edge, offsets) {
                    $(($r, true, false, false) => body::<$r, 1, false, false>(k, a, b, &out, columns),)*
                    $(($r, true, true, false) => body::<$r, 1, true, false>(k, a, b, &out, columns),)*
                    $(($r, false, false, false) => body::<$r, $vectors, false, false>(k, a, b, &out, columns),)*
                    $(($r, false, true, false) => body::<$r, $vectors, true, false>(k, a, b, &out, columns),)*
                    $(($r, true, false, true) => body::<$r, 1, false, true>(k, a, b, &out, columns),)*
                    $(($r, true, true, true) => body::<$r, 1, true, true>(k, a, b, &out, columns),)*
                    $(($r, false, false, true) => body::<$r, $vectors, false, true>(k, a, b, &out, columns),)*
                    $(($r, false, true, true) => body::<$r, $vectors, true, true>(k, a, b, &out, columns),)*
                    _ => {}
                }
            }
        }

        /// Where the sums go, and what is done to them on the way. The two pointers
        /// the caller passes side by side on the stack lie apart here: copied together,
        /// they were one 16-byte load over the caller's two 8-byte stores, which cannot
        /// be forwarded, so every call waited for the stores before it (the previous
        /// tile's C) to drain.
        #[repr(C)]
        struct Out {
            bias: *const f32,
            c: *mut f32,
            residual: *const f32,
            ldc: usize,
            flags: u32,
        }

        $(#[$attr])*
        #[inline]
        unsafe fn body<const R: usize, const V: usize, const EDGE: bool, const OFFSETS: bool>(
            k: usize,
            (a, lda): (*const f32, usize),
            (b, ldb): (*const f32, usize),
            out: &Out,
            columns: u32,
        ) {
            // The first V vectors of each step of B are used.
            let width = $lanes * V;
            let masks: [$mask_type; V] =
                std::array::from_fn(|v| $mask(columns as usize, v * $lanes));
            // Where B's step p starts: p steps of `ldb` floats, or the table's p-th
            // offset (`OFFSETS`), which need not lie on 8 bytes (it follows a scratch
            // area of floats that a guard may start anywhere).
            let table = ldb as *const i64;
            let row_of = |p: usize| {
                if OFFSETS {
                    // SAFETY: the table has an entry for each of the k steps read.
                    b.wrapping_offset(unsafe { table.add(p).read_unaligned() } as isize)
                } else {
                    b.wrapping_add(p * ldb)
                }
            };
            unsafe {
                let mut acc: [[$vector; V]; R] = [[$zero; V]; R];
                for p in 0..k {
                    // B's row `PREFETCH_STEPS` steps ahead, a line at a time and its
                    // last float (a row read in place need not start a line): the
                    // first tile over a block of weights reads them from memory, and
                    // the hardware's stream prefetch stops at every 4 KiB page. Not
                    // where a table places B's steps: shifted copies the thread has
                    // just written, in its L1 or L2, where the prefetches only took
                    // load slots from the product (LeNet-5 2% slower with them).
                    if !OFFSETS {
                        let ahead = row_of(p + $crate::jit::microkernel::PREFETCH_STEPS) as *const i8;
                        for line in (0..width * 4).step_by(64) {
                            $prefetch(ahead.wrapping_add(line));
                        }
                        $prefetch(ahead.wrapping_add(width * 4 - 4));
                    }
                    // A's row (its first and last float) that many steps ahead.
                    let a_ahead = a.wrapping_add((p + $crate::jit::microkernel::A_AHEAD) * lda) as *const i8;
                    $prefetch(a_ahead);
                    $prefetch(a_ahead.wrapping_add(R * 4 - 4));
                    let mut bv: [$vector; V] = [$zero; V];
                    let row = row_of(p);
                    for (v, slot) in bv.iter_mut().enumerate() {
                        let at = row.add(v * $lanes);
                        *slot = if EDGE { $masked_load(at, masks[v]) } else { $load(at) };
                    }
                    for (r, row) in acc.iter_mut().enumerate() {
                        let av = $splat(*a.add(p * lda + r));
                        for (v, sum) in row.iter_mut().enumerate() {
                            *sum = $fma(av, bv[v], *sum);
                        }
                    }
                }
                // The epilogue in the order of the fused graph's steps: the sum so far
                // (C's vector), the bias, the residual, the ReLU; one pass over the sums
                // per step, its test outside the pass. A pass is a few instructions a
                // vector, so the compiler unrolls it and the sums stay in registers
                // (one pass with every test inside kept all 24 on the stack: stored
                // and loaded again at every call).
                let load = |at: usize, from: *const f32, v: usize| {
                    if EDGE { $masked_load(from.add(at), masks[v]) } else { $load(from.add(at)) }
                };
                let at = |r: usize, v: usize| r * out.ldc + v * $lanes;
                if out.flags & $crate::jit::microkernel::ACCUMULATE != 0 {
                    for r in 0..R {
                        for v in 0..V {
                            acc[r][v] = $add(acc[r][v], load(at(r, v), out.c, v));
                        }
                    }
                }
                if !out.bias.is_null() {
                    for r in 0..R {
                        let bias = $splat(*out.bias.add(r));
                        for v in 0..V {
                            acc[r][v] = $add(acc[r][v], bias);
                        }
                    }
                }
                if !out.residual.is_null() {
                    for r in 0..R {
                        for v in 0..V {
                            acc[r][v] = $add(acc[r][v], load(at(r, v), out.residual, v));
                        }
                    }
                }
                if out.flags & $crate::jit::microkernel::RELU != 0 {
                    for r in 0..R {
                        for v in 0..V {
                            acc[r][v] = $max(acc[r][v], $zero);
                        }
                    }
                }
                for r in 0..R {
                    for v in 0..V {
                        if EDGE {
                            $masked_store(out.c.add(at(r, v)), masks[v], acc[r][v]);
                        } else {
                            $store(out.c.add(at(r, v)), acc[r][v]);
                        }
                    }
                }
            }
        }
    };
}

/// The lanes of a vector starting at column `first` that lie before `columns`, as bits.
#[cfg(target_arch = "x86_64")]
pub(crate) fn lanes_below(columns: usize, first: usize, lanes: usize) -> u32 {
    let valid = columns.saturating_sub(first).min(lanes);
    ((1u64 << valid) - 1) as u32
}

/// An AVX2 mask for `_mm256_maskload_ps` and `_mm256_maskstore_ps`: lane i all ones
/// where bit i of `bits` is set.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) fn avx2_mask(bits: u32) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    let set = _mm256_and_si256(_mm256_set1_epi32(bits as i32), lane);
    _mm256_cmpeq_epi32(set, lane)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Microkernel, avx2_mask, lanes_below};
    use std::arch::x86_64::*;

    mod avx512 {
        use super::*;
        tile!(#[target_feature(enable = "avx512f")] tile, __m512, 16, 12, 2,
            zero: _mm512_setzero_ps(), load: _mm512_loadu_ps, store: _mm512_storeu_ps,
            splat: _mm512_set1_ps, fma: _mm512_fmadd_ps, add: _mm512_add_ps,
            max: _mm512_max_ps, prefetch: |p| _mm_prefetch::<_MM_HINT_T0>(p),
            mask: __mmask16 = |columns, first| lanes_below(columns, first, 16) as __mmask16,
            masked_load: |p, m| _mm512_maskz_loadu_ps(m, p),
            masked_store: |p, m, v| _mm512_mask_storeu_ps(p, m, v),
            rows: [1 2 3 4 5 6 7 8 9 10 11 12]);
    }

    mod avx2 {
        use super::*;
        tile!(#[target_feature(enable = "avx2,fma")] tile, __m256, 8, 6, 2,
            zero: _mm256_setzero_ps(), load: _mm256_loadu_ps, store: _mm256_storeu_ps,
            splat: _mm256_set1_ps, fma: _mm256_fmadd_ps, add: _mm256_add_ps,
            max: _mm256_max_ps, prefetch: |p| _mm_prefetch::<_MM_HINT_T0>(p),
            mask: __m256i = |columns, first| avx2_mask(lanes_below(columns, first, 8)),
            masked_load: |p, m| _mm256_maskload_ps(p, m),
            masked_store: |p, m, v| _mm256_maskstore_ps(p, m, v),
            rows: [1 2 3 4 5 6]);
    }

    fma_chains!(#[target_feature(enable = "avx512f")] AVX512_FMA = "avx512", avx512_fma, __m512,
        lanes: 16, chains: 24, splat: _mm512_set1_ps, fma: _mm512_fmadd_ps);

    fma_chains!(#[target_feature(enable = "avx2,fma")] AVX2_FMA = "avx2+fma", avx2_fma, __m256,
        lanes: 8, chains: 12, splat: _mm256_set1_ps, fma: _mm256_fmadd_ps);

    pub const AVX512: Microkernel = Microkernel {
        name: "avx512",
        mr: 12,
        nr: 32,
        tile: avx512::tile,
    };

    pub const AVX2: Microkernel = Microkernel {
        name: "avx2+fma",
        mr: 6,
        nr: 16,
        tile: avx2::tile,
    };
}

/// The tile for CPUs without AVX2: plain floats, which the compiler vectorises as it can.
mod portable {
    #[inline(always)]
    pub unsafe fn load(p: *const f32) -> f32 {
        unsafe { *p }
    }

    #[inline(always)]
    pub unsafe fn store(p: *mut f32, v: f32) {
        unsafe { *p = v }
    }

    fma_chains!(PORTABLE_FMA = "portable", portable_fma, f32,
        lanes: 1, chains: 8, splat: |x: f32| x, fma: |s: f32, m: f32, a: f32| s * m + a);

    // Single floats: a "vector" is one lane, stored when it lies before the columns.
    tile!(tile, f32, 1, 4, 8,
        zero: 0.0f32, load: load, store: store,
        splat: |x: f32| x, fma: |a: f32, b: f32, c: f32| a * b + c, add: |a: f32, b: f32| a + b,
        // As the JIT's ReLU (`maxps` semantics): a NaN gives the second operand.
        max: |x: f32, y: f32| if y < x { x } else { y },
        prefetch: |_: *const i8| {},
        mask: bool = |columns: usize, first: usize| first < columns,
        masked_load: |p: *const f32, m: bool| if m { *p } else { 0.0 },
        masked_store: |p: *mut f32, m: bool, v: f32| if m { *p = v },
        rows: [1 2 3 4]);
}

pub const PORTABLE: Microkernel = Microkernel {
    name: "portable",
    mr: 4,
    nr: 8,
    tile: portable::tile,
};

impl Microkernel {
    /// Checks the tile against the naive product over its panels, for K of 0, 1, odd
    /// and long, panels packed and read at wider strides, whole and edge tiles, C
    /// overwritten and added to, with each epilogue (bias, residual, ReLU, all three)
    /// and without, with a row stride wider than the tile: every value it should write
    /// within 1e-4, every other one left alone. The first difference found is the
    /// error.
    pub fn check(&self) -> Result<(), String> {
        let (mr, nr) = (self.mr, self.nr);
        let ldc = nr + 3;
        let old = |r: usize, j: usize| 1.5 - ((r + 2 * j) % 5) as f32;
        let bias: Vec<f32> = (0..mr).map(|r| r as f32 / 2.0 - 1.0).collect();
        let residual: Vec<f32> = (0..mr * ldc).map(|i| (i % 7) as f32 / 4.0 - 0.75).collect();
        for (k, lda, ldb) in [
            (0, mr, nr),
            (1, mr, nr),
            (7, mr, nr),
            (300, mr, nr),
            (7, mr + 5, nr + 3),
            (300, 3 * mr, 2 * nr + 1),
        ] {
            let a: Vec<f32> = (0..k * lda)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
                .collect();
            let b: Vec<f32> = (0..k * ldb)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0)
                .collect();
            // With `OFFSETS`, a table takes B's steps in reverse.
            let table: Vec<i64> = (0..k).map(|p| ((k - 1 - p) * ldb) as i64).collect();
            for offsets in [false, true] {
                let step = |p: usize| if offsets { k - 1 - p } else { p };
                let product = |r: usize, j: usize| -> f32 {
                    (0..k).map(|p| a[p * lda + r] * b[step(p) * ldb + j]).sum()
                };
                let shapes = [
                    (mr, nr),
                    (1, nr),
                    (mr, 1),
                    (mr - 1, nr - 3),
                    (2, nr / 2 + 1),
                    // Within the first vector (every tile has two): its narrow body.
                    (mr, nr / 2),
                    (3, nr / 2 - 1),
                ];
                for (rows, columns) in shapes {
                    for flags in 0..4 {
                        for (with_bias, with_residual) in
                            [(false, false), (true, false), (false, true), (true, true)]
                        {
                            let what = format!(
                                "{self:?}, k = {k}, lda = {lda}, ldb = {ldb}, {rows} x {columns}, \
                             flags {flags}, bias {with_bias}, residual {with_residual}, \
                             offsets {offsets}"
                            );
                            let mut c: Vec<f32> =
                                (0..mr * ldc).map(|i| old(i / ldc, i % ldc)).collect();
                            let then = TileFinish {
                                flags: flags | if offsets { OFFSETS } else { 0 },
                                bias: if with_bias {
                                    bias.as_ptr()
                                } else {
                                    std::ptr::null()
                                },
                                residual: if with_residual {
                                    residual.as_ptr()
                                } else {
                                    std::ptr::null()
                                },
                            };
                            // SAFETY: the panels hold k steps (at strides lda, ldb; the
                            // table's offsets are those steps), C and the residual have mr
                            // rows of ldc, the bias mr values.
                            unsafe {
                                self.call(
                                    k,
                                    a.as_ptr(),
                                    lda,
                                    b.as_ptr(),
                                    if offsets {
                                        table.as_ptr() as usize
                                    } else {
                                        ldb
                                    },
                                    c.as_mut_ptr(),
                                    ldc,
                                    rows,
                                    columns,
                                    then,
                                )
                            };
                            let want = |r: usize, j: usize| {
                                if r >= rows || j >= columns {
                                    return old(r, j);
                                }
                                let mut value = product(r, j);
                                if flags & ACCUMULATE != 0 {
                                    value += old(r, j);
                                }
                                if with_bias {
                                    value += bias[r];
                                }
                                if with_residual {
                                    value += residual[r * ldc + j];
                                }
                                if flags & RELU != 0 {
                                    value.max(0.0)
                                } else {
                                    value
                                }
                            };
                            for r in 0..mr {
                                for j in 0..ldc {
                                    let (got, want) = (c[r * ldc + j], want(r, j));
                                    if (got - want).abs() > 1e-4 * (1.0 + want.abs()) {
                                        return Err(format!(
                                            "{what}: ({r}, {j}) is {got}, not {want}"
                                        ));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fma_peak_is_measured_and_positive() {
        let peak = FmaPeak::best();
        let gflops = peak.measure(std::time::Duration::from_millis(5));
        assert!(gflops > 0.0 && gflops.is_finite(), "{peak:?}: {gflops}");
    }

    #[test]
    fn every_tile_multiplies_and_accumulates() {
        for kernel in Microkernel::available() {
            kernel.check().unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
