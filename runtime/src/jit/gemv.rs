//! y = W·x for a dense layer's row-major weights: the matrix-vector product generated
//! dense kernels call, each chunk of the kernel on its own rows (the threads split a
//! large layer by chunks). Memory-bound (each weight is read once per sample), so it
//! streams the rows, sixteen lanes of independent sums per row.

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
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        unsafe { rows_avx512::<PREFETCH>(weights, x, y, k) };
        return;
    }
    rows_portable(weights, x, y, k);
}

/// Twelve rows at a time (then four, then one), each with its own sums, and each
/// row's stream prefetched a kilobyte ahead: one row at a time kept too few lines in
/// flight to reach the core's memory bandwidth (9.1 against 11.3 GB/s for OpenBLAS's
/// on AlexNet's dense1), and four left LeNet-5's C5 (120 x 400) waiting on L2, 1.2x
/// slower than twelve. Every row takes the same arithmetic whatever group it falls in,
/// so a row's value does not depend on how the threads cut the rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn rows_avx512<const PREFETCH: bool>(weights: &[f32], x: &[f32], y: &mut [f32], k: usize) {
    let mut first = 0;
    while first + 12 <= y.len() {
        rows_avx512_at::<12, PREFETCH>(weights, x, y, k, first);
        first += 12;
    }
    while first + 4 <= y.len() {
        rows_avx512_at::<4, PREFETCH>(weights, x, y, k, first);
        first += 4;
    }
    for row in first..y.len() {
        rows_avx512_at::<1, PREFETCH>(weights, x, y, k, row);
    }
}

/// Rows `first..first + R`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn rows_avx512_at<const R: usize, const PREFETCH: bool>(
    weights: &[f32],
    x: &[f32],
    y: &mut [f32],
    k: usize,
    first: usize,
) {
    use std::arch::x86_64::*;
    const AHEAD: usize = 256;
    let body = k - k % 16;
    let rows: [&[f32]; R] = std::array::from_fn(|r| &weights[(first + r) * k..][..k]);
    let mut sums = [_mm512_setzero_ps(); R];
    for p in (0..body).step_by(16) {
        // SAFETY: p + 16 <= body <= k, the length of x and of each row; a prefetch past
        // the end never faults.
        unsafe {
            let xv = _mm512_loadu_ps(x.as_ptr().add(p));
            for (sum, row) in sums.iter_mut().zip(rows) {
                if PREFETCH {
                    let ahead = row.as_ptr().wrapping_add(p + AHEAD) as *const i8;
                    _mm_prefetch::<_MM_HINT_T0>(ahead);
                }
                *sum = _mm512_fmadd_ps(_mm512_loadu_ps(row.as_ptr().add(p)), xv, *sum);
            }
        }
    }
    if body < k {
        // The last k % 16 columns: masked loads read only them.
        let mask: __mmask16 = (1u16 << (k - body)) - 1;
        // SAFETY: the mask's lanes lie within x and each row.
        unsafe {
            let xv = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(body));
            for (sum, row) in sums.iter_mut().zip(rows) {
                let w = _mm512_maskz_loadu_ps(mask, row.as_ptr().add(body));
                *sum = _mm512_fmadd_ps(w, xv, *sum);
            }
        }
    }
    for (r, sum) in sums.iter().enumerate() {
        y[first + r] = _mm512_reduce_add_ps(*sum);
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
