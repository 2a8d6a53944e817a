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
//! Packed layouts: A panel `a[p * MR + r]`, B panel `b[p * NR + c]`; C is row-major
//! with row stride `ldc`. With `accumulate == 0` the tile overwrites C. A tile at the
//! edge of a product computes only its first `rows` rows and stores only its first
//! `columns` columns (masked stores where the ISA has them), so edges cost what their
//! rows are worth and go straight into C.

/// A tile: `fn(k, a, b, c, ldc, accumulate, rows, columns)`, the C ABI so generated
/// code can call it; `1 <= rows <= MR`, `1 <= columns <= NR`.
pub type TileFn =
    unsafe extern "C" fn(usize, *const f32, *const f32, *mut f32, usize, u32, u32, u32);

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
                (self.tile)(
                    k,
                    a.as_ptr(),
                    b.as_ptr(),
                    c.as_mut_ptr(),
                    self.nr,
                    1,
                    self.mr as u32,
                    self.nr as u32,
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

/// Writes one tile function: `$rows` rows of `$vectors` vectors of `$lanes` floats,
/// accumulated in registers over all of K, then stored (or added) to C once. The
/// entry point dispatches on the rows asked for to a body compiled for that many rows
/// (an edge tile of 4 rows keeps 4 rows of accumulators, not 12), whose stores keep to
/// the columns asked for through `$mask` (which lanes of vector `v` are stored).
macro_rules! tile {
    (
        $(#[$attr:meta])* $name:ident, $vector:ty, $lanes:literal, $rows:literal, $vectors:literal,
        zero: $zero:expr, load: $load:expr, store: $store:expr,
        splat: $splat:expr, fma: $fma:expr, add: $add:expr,
        mask: $mask_type:ty = $mask:expr, masked_load: $masked_load:expr,
        masked_store: $masked_store:expr, rows: [$($r:literal)*]
    ) => {
        /// # Safety
        /// `a` holds `k * ROWS` floats, `b` `k * COLS`, `c` `rows` rows of `columns` at
        /// `ldc`; the CPU has the features the function is compiled for.
        pub unsafe extern "C" fn $name(
            k: usize,
            a: *const f32,
            b: *const f32,
            c: *mut f32,
            ldc: usize,
            accumulate: u32,
            rows: u32,
            columns: u32,
        ) {
            // SAFETY: as the caller promised, for the rows asked for.
            unsafe {
                match rows {
                    $($r => body::<$r>(k, a, b, c, ldc, accumulate, columns),)*
                    _ => {}
                }
            }
        }

        $(#[$attr])*
        #[inline]
        unsafe fn body<const R: usize>(
            k: usize,
            a: *const f32,
            b: *const f32,
            c: *mut f32,
            ldc: usize,
            accumulate: u32,
            columns: u32,
        ) {
            const COLS: usize = $lanes * $vectors;
            unsafe {
                let mut acc: [[$vector; $vectors]; R] = [[$zero; $vectors]; R];
                for p in 0..k {
                    let mut bv: [$vector; $vectors] = [$zero; $vectors];
                    for (v, slot) in bv.iter_mut().enumerate() {
                        *slot = $load(b.add(p * COLS + v * $lanes));
                    }
                    for (r, row) in acc.iter_mut().enumerate() {
                        let av = $splat(*a.add(p * $rows + r));
                        for (v, sum) in row.iter_mut().enumerate() {
                            *sum = $fma(av, bv[v], *sum);
                        }
                    }
                }
                if columns as usize >= COLS {
                    for (r, row) in acc.iter().enumerate() {
                        for (v, sum) in row.iter().enumerate() {
                            let out = c.add(r * ldc + v * $lanes);
                            let value = if accumulate != 0 { $add(*sum, $load(out)) } else { *sum };
                            $store(out, value);
                        }
                    }
                    return;
                }
                let masks: [$mask_type; $vectors] =
                    std::array::from_fn(|v| $mask(columns as usize, v * $lanes));
                for (r, row) in acc.iter().enumerate() {
                    for (v, sum) in row.iter().enumerate() {
                        let out = c.add(r * ldc + v * $lanes);
                        let value = if accumulate != 0 {
                            $add(*sum, $masked_load(out, masks[v]))
                        } else {
                            *sum
                        };
                        $masked_store(out, masks[v], value);
                    }
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Microkernel;
    use std::arch::x86_64::*;

    /// The lanes of a vector starting at column `first` that lie before `columns`.
    fn lanes_below(columns: usize, first: usize, lanes: usize) -> u32 {
        let valid = columns.saturating_sub(first).min(lanes);
        ((1u64 << valid) - 1) as u32
    }

    mod avx512 {
        use super::*;
        tile!(#[target_feature(enable = "avx512f")] tile, __m512, 16, 12, 2,
            zero: _mm512_setzero_ps(), load: _mm512_loadu_ps, store: _mm512_storeu_ps,
            splat: _mm512_set1_ps, fma: _mm512_fmadd_ps, add: _mm512_add_ps,
            mask: __mmask16 = |columns, first| lanes_below(columns, first, 16) as __mmask16,
            masked_load: |p, m| _mm512_maskz_loadu_ps(m, p),
            masked_store: |p, m, v| _mm512_mask_storeu_ps(p, m, v),
            rows: [1 2 3 4 5 6 7 8 9 10 11 12]);
    }

    mod avx2 {
        use super::*;
        /// AVX2 masks are vectors: lane i is all ones when it is stored.
        #[target_feature(enable = "avx2")]
        fn mask(columns: usize, first: usize) -> __m256i {
            let bits = lanes_below(columns, first, 8);
            let lane = |i: u32| if bits & (1 << i) != 0 { -1 } else { 0 };
            _mm256_setr_epi32(
                lane(0),
                lane(1),
                lane(2),
                lane(3),
                lane(4),
                lane(5),
                lane(6),
                lane(7),
            )
        }
        tile!(#[target_feature(enable = "avx2,fma")] tile, __m256, 8, 6, 2,
            zero: _mm256_setzero_ps(), load: _mm256_loadu_ps, store: _mm256_storeu_ps,
            splat: _mm256_set1_ps, fma: _mm256_fmadd_ps, add: _mm256_add_ps,
            mask: __m256i = |columns, first| mask(columns, first),
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
    /// Checks the tile against the naive product over its packed panels, for K of 0,
    /// 1, odd and long, whole and edge tiles, C overwritten then added to, with a row
    /// stride wider than the tile: every value it should write within 1e-4, every other
    /// one left alone. The first difference found is the error.
    pub fn check(&self) -> Result<(), String> {
        let (mr, nr) = (self.mr, self.nr);
        for k in [0, 1, 7, 300] {
            let a: Vec<f32> = (0..k * mr)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
                .collect();
            let b: Vec<f32> = (0..k * nr)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0)
                .collect();
            let expected =
                |r: usize, j: usize| -> f32 { (0..k).map(|p| a[p * mr + r] * b[p * nr + j]).sum() };
            let shapes = [
                (mr, nr),
                (1, nr),
                (mr, 1),
                (mr - 1, nr - 3),
                (2, nr / 2 + 1),
            ];
            for (rows, columns) in shapes {
                let what = format!("{self:?}, k = {k}, {rows} x {columns}");
                let ldc = nr + 3;
                let mut c = vec![1.0f32; mr * ldc];
                for (accumulate, factor) in [(0, 1.0), (1, 2.0)] {
                    // SAFETY: the panels hold k steps, C has mr rows of ldc.
                    unsafe {
                        (self.tile)(
                            k,
                            a.as_ptr(),
                            b.as_ptr(),
                            c.as_mut_ptr(),
                            ldc,
                            accumulate,
                            rows as u32,
                            columns as u32,
                        )
                    };
                    for r in 0..mr {
                        for j in 0..ldc {
                            let got = c[r * ldc + j];
                            let want = if r < rows && j < columns {
                                factor * expected(r, j)
                            } else {
                                1.0
                            };
                            if (got - want).abs() > 1e-4 * (1.0 + want.abs()) {
                                return Err(format!("{what}: ({r}, {j}) is {got}, not {want}"));
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
