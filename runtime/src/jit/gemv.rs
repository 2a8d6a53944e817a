//! y = W·x for a dense layer's row-major weights: the matrix-vector product generated
//! dense kernels call, each chunk of the kernel on its own rows (the threads split a
//! large layer by chunks). Memory-bound (each weight is read once per sample), so it
//! streams the rows, a vector of independent sums per row (sixteen lanes with AVX-512,
//! eight with AVX2, sixteen floats in the portable loop).

/// The C entry point generated code calls, for weights that stream from memory: each
/// row is prefetched ahead.
///
/// # Safety
/// `weights` holds `m * k` floats, `x` `k` and `y` `m`.
pub unsafe extern "C" fn gemv(m: usize, k: usize, weights: *const f32, x: *const f32, y: *mut f32) {
    // SAFETY: as the caller promised.
    unsafe { entry::<true>(m, k, weights, x, y) }
}

/// As `gemv`, for weights that stay in L2 from one run to the next (a network whose
/// weights all fit there, LeNet-5's 244 KB): no prefetches, which only took load slots
/// from the rows (LeNet-5 3% faster without; AlexNet's dense layers, from memory, 3-7%
/// slower).
///
/// # Safety
/// As `gemv`.
pub unsafe extern "C" fn gemv_resident(
    m: usize,
    k: usize,
    weights: *const f32,
    x: *const f32,
    y: *mut f32,
) {
    // SAFETY: as the caller promised.
    unsafe { entry::<false>(m, k, weights, x, y) }
}

/// # Safety
/// As `gemv`.
unsafe fn entry<const PREFETCH: bool>(
    m: usize,
    k: usize,
    weights: *const f32,
    x: *const f32,
    y: *mut f32,
) {
    // SAFETY: the caller passes buffers of these sizes.
    let (weights, x, y) = unsafe {
        (
            std::slice::from_raw_parts(weights, m * k),
            std::slice::from_raw_parts(x, k),
            std::slice::from_raw_parts_mut(y, m),
        )
    };
    rows::<PREFETCH>(weights, x, y, k);
}

fn rows<const PREFETCH: bool>(weights: &[f32], x: &[f32], y: &mut [f32], k: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            unsafe { x86::avx512::rows::<PREFETCH>(weights, x, y, k) };
            return;
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: the CPU has AVX2 and FMA.
            unsafe { x86::avx2::rows::<PREFETCH>(weights, x, y, k) };
            return;
        }
    }
    rows_portable(weights, x, y, k);
}

/// Floats of a row each step reads: one cache line, so that one prefetch a step keeps
/// each row's stream ahead.
const STEP: usize = 16;

/// How far ahead (floats) each row's stream is prefetched: a kilobyte.
const AHEAD: usize = 256;

/// Writes one ISA's row loops (`rows`, and `rows_at` for a group): twelve rows at a
/// time (then four, then one), each with its own sums, and each row's stream
/// prefetched a kilobyte ahead: one row at a time kept too few lines in flight to reach
/// the core's memory bandwidth (AVX-512: 9.1 against 11.3 GB/s for OpenBLAS's on
/// AlexNet's dense1; AVX2 on a Zen 3, the portable loop: 8.5 GB/s against ONNX Runtime's
/// 12.6), and four left LeNet-5's C5 (120 x 400) waiting on L2, 1.2x slower than
/// twelve. A step is `STEP` floats, `STEP / $lanes` vectors, added into the row's one
/// vector of sums in order. Every row takes the same arithmetic whatever group it falls
/// in, so a row's value does not depend on how the threads cut the rows.
#[cfg(target_arch = "x86_64")]
macro_rules! row_loops {
    (
        $(#[$attr:meta])* $isa:ident, $vector:ty, lanes: $lanes:literal,
        zero: $zero:expr, load: $load:expr, fma: $fma:expr,
        mask: $mask_type:ty = $mask:expr, masked_load: $masked_load:expr, sum: $sum:expr
    ) => {
        pub mod $isa {
            use super::*;
            const VECTORS: usize = STEP / $lanes;

            /// # Safety
            /// The CPU has the features the function is compiled for.
            $(#[$attr])*
            pub unsafe fn rows<const PREFETCH: bool>(
                weights: &[f32],
                x: &[f32],
                y: &mut [f32],
                k: usize,
            ) {
                let mut first = 0;
                while first + 12 <= y.len() {
                    rows_at::<12, PREFETCH>(weights, x, y, k, first);
                    first += 12;
                }
                while first + 4 <= y.len() {
                    rows_at::<4, PREFETCH>(weights, x, y, k, first);
                    first += 4;
                }
                for row in first..y.len() {
                    rows_at::<1, PREFETCH>(weights, x, y, k, row);
                }
            }

            /// Rows `first..first + R`.
            $(#[$attr])*
            fn rows_at<const R: usize, const PREFETCH: bool>(
                weights: &[f32],
                x: &[f32],
                y: &mut [f32],
                k: usize,
                first: usize,
            ) {
                let body = k - k % STEP;
                // Loops, not `array::from_fn`, here and below: its closure was a call
                // per row, not inlined (LeNet-5's F6, 84 rows of 120, 18% sooner
                // without).
                let mut rows: [&[f32]; R] = [&[]; R];
                for (r, row) in rows.iter_mut().enumerate() {
                    *row = &weights[(first + r) * k..][..k];
                }
                let mut sums = [$zero; R];
                for p in (0..body).step_by(STEP) {
                    // SAFETY: p + STEP <= body <= k, the length of x and of each row; a
                    // prefetch past the end never faults.
                    unsafe {
                        let mut xv = [$zero; VECTORS];
                        for (v, xv) in xv.iter_mut().enumerate() {
                            *xv = $load(x.as_ptr().add(p + v * $lanes));
                        }
                        for (sum, row) in sums.iter_mut().zip(rows) {
                            if PREFETCH {
                                let ahead = row.as_ptr().wrapping_add(p + AHEAD) as *const i8;
                                _mm_prefetch::<_MM_HINT_T0>(ahead);
                            }
                            for (v, xv) in xv.iter().enumerate() {
                                let w = $load(row.as_ptr().add(p + v * $lanes));
                                *sum = $fma(w, *xv, *sum);
                            }
                        }
                    }
                }
                if body < k {
                    // The last k % STEP columns: masked loads read only them.
                    let mut masks: [$mask_type; VECTORS] = [$mask(0, 0); VECTORS];
                    for (v, mask) in masks.iter_mut().enumerate() {
                        *mask = $mask(k - body, v * $lanes);
                    }
                    // SAFETY: the masks' lanes lie within x and each row (a vector
                    // past the end has no lanes: its address is only wrapped to).
                    unsafe {
                        let mut xv = [$zero; VECTORS];
                        for (v, xv) in xv.iter_mut().enumerate() {
                            let at = x.as_ptr().wrapping_add(body + v * $lanes);
                            *xv = $masked_load(at, masks[v]);
                        }
                        for (sum, row) in sums.iter_mut().zip(rows) {
                            for (v, xv) in xv.iter().enumerate() {
                                let at = row.as_ptr().wrapping_add(body + v * $lanes);
                                *sum = $fma($masked_load(at, masks[v]), *xv, *sum);
                            }
                        }
                    }
                }
                for (r, sum) in sums.iter().enumerate() {
                    y[first + r] = $sum(*sum);
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{AHEAD, STEP};
    use crate::jit::microkernel::{avx2_mask, lanes_below};
    use std::arch::x86_64::*;

    row_loops!(#[target_feature(enable = "avx512f")] avx512, __m512, lanes: 16,
        zero: _mm512_setzero_ps(), load: _mm512_loadu_ps, fma: _mm512_fmadd_ps,
        mask: __mmask16 = |columns, first| lanes_below(columns, first, 16) as __mmask16,
        masked_load: |p, m| _mm512_maskz_loadu_ps(m, p), sum: _mm512_reduce_add_ps);

    row_loops!(#[target_feature(enable = "avx2,fma")] avx2, __m256, lanes: 8,
        zero: _mm256_setzero_ps(), load: _mm256_loadu_ps, fma: _mm256_fmadd_ps,
        mask: __m256i = |columns, first| avx2_mask(lanes_below(columns, first, 8)),
        masked_load: |p, m| _mm256_maskload_ps(p, m), sum: avx2_sum);

    /// The sum of the eight lanes.
    #[target_feature(enable = "avx2")]
    fn avx2_sum(v: __m256) -> f32 {
        let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let pairs = _mm_add_ps(half, _mm_movehl_ps(half, half));
        _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehdup_ps(pairs)))
    }
}

/// Sixteen partial sums per row, which the compiler keeps in one vector register.
#[inline(always)]
fn rows_portable(weights: &[f32], x: &[f32], y: &mut [f32], k: usize) {
    for (i, out) in y.iter_mut().enumerate() {
        let row = &weights[i * k..][..k];
        let mut lanes = [0.0f32; 16];
        let (body, tail) = row.split_at(k - k % 16);
        let (x_body, x_tail) = x.split_at(k - k % 16);
        for (w, v) in body.chunks_exact(16).zip(x_body.chunks_exact(16)) {
            for lane in 0..16 {
                lanes[lane] += w[lane] * v[lane];
            }
        }
        let mut sum: f32 = lanes.iter().sum();
        for (w, v) in tail.iter().zip(x_tail) {
            sum += w * v;
        }
        *out = sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Entry = unsafe extern "C" fn(usize, usize, *const f32, *const f32, *mut f32);

    type Rows = unsafe fn(&[f32], &[f32], &mut [f32], usize);

    /// Every row loop this CPU runs, the one `rows` takes first: the entry points
    /// test only that one.
    fn every_loop() -> Vec<(&'static str, Rows)> {
        let mut found: Vec<(&'static str, Rows)> = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") {
                found.push(("avx512", x86::avx512::rows::<true>));
            }
            if has!("avx2") && has!("fma") {
                found.push(("avx2", x86::avx2::rows::<true>));
            }
        }
        found.push(("portable", |w, x, y, k| rows_portable(w, x, y, k)));
        found
    }

    #[test]
    fn every_row_loop_matches_the_naive_product_and_itself_row_by_row() {
        // Tails of 1, 7 (the second AVX2 vector empty), 8, 12 and none.
        for (m, k) in [(1, 1), (29, 23), (13, 24), (70, 33), (30, 300), (9, 16)] {
            let w: Vec<f32> = (0..m * k)
                .map(|i| ((i * 13 % 17) as f32 - 8.0) / 9.0)
                .collect();
            let x: Vec<f32> = (0..k).map(|i| ((i * 5 % 9) as f32 - 4.0) / 3.0).collect();
            for (name, rows) in every_loop() {
                let mut together = vec![f32::NAN; m];
                // SAFETY: `every_loop` lists only loops this CPU runs.
                unsafe { rows(&w, &x, &mut together, k) };
                for (i, got) in together.iter().enumerate() {
                    let want: f32 = (0..k).map(|p| w[i * k + p] * x[p]).sum();
                    let close = (got - want).abs() <= 1e-4 * (1.0 + want.abs());
                    assert!(close, "{name}: {m}x{k} row {i}");
                    let mut alone = [f32::NAN];
                    unsafe { rows(&w[i * k..][..k], &x, &mut alone, k) };
                    assert_eq!(alone[0].to_bits(), got.to_bits(), "{name}: {m}x{k} row {i}");
                }
            }
        }
    }

    #[test]
    fn matches_the_naive_product() {
        let cases = [(1, 1), (3, 17), (70, 33), (300, 300), (9, 16), (5, 0)];
        for ((m, k), f) in cases
            .into_iter()
            .flat_map(|c| [(c, gemv as Entry), (c, gemv_resident)])
        {
            let w: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 11) as f32 - 5.0) / 8.0)
                .collect();
            let x: Vec<f32> = (0..k).map(|i| ((i * 3 % 7) as f32 - 3.0) / 4.0).collect();
            let mut y = vec![f32::NAN; m];
            unsafe { f(m, k, w.as_ptr(), x.as_ptr(), y.as_mut_ptr()) };
            for (i, got) in y.iter().enumerate() {
                let want: f32 = (0..k).map(|p| w[i * k + p] * x[p]).sum();
                assert!(
                    (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "{m}x{k} row {i}"
                );
            }
        }
    }

    #[test]
    fn a_rows_value_does_not_depend_on_the_rows_beside_it() {
        // Threads cut a layer's rows into chunks; each row must come out the same bits,
        // in a group of twelve, of four, or alone.
        let (m, k) = (29, 70);
        let w: Vec<f32> = (0..m * k)
            .map(|i| ((i * 13 % 17) as f32 - 8.0) / 9.0)
            .collect();
        let x: Vec<f32> = (0..k).map(|i| ((i * 5 % 9) as f32 - 4.0) / 3.0).collect();
        let mut together = vec![0.0; m];
        unsafe { gemv(m, k, w.as_ptr(), x.as_ptr(), together.as_mut_ptr()) };
        // Without the prefetches, the same arithmetic.
        let mut resident = vec![0.0; m];
        unsafe { gemv_resident(m, k, w.as_ptr(), x.as_ptr(), resident.as_mut_ptr()) };
        assert_eq!(resident, together);
        for row in 0..m {
            let mut alone = 0.0;
            unsafe { gemv(1, k, w[row * k..].as_ptr(), x.as_ptr(), &mut alone) };
            assert_eq!(alone.to_bits(), together[row].to_bits(), "row {row}");
        }
    }
}
