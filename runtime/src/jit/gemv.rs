//! y = W·x for a dense layer's row-major weights: the matrix-vector product generated
//! dense kernels call, each chunk of the kernel on its own rows (the threads split a
//! large layer by chunks). Memory-bound (each weight is read once per sample), so it
//! streams the rows, sixteen lanes of independent sums per row.

/// The C entry point generated code calls.
///
/// # Safety
/// `weights` holds `m * k` floats, `x` `k` and `y` `m`.
pub unsafe extern "C" fn gemv(m: usize, k: usize, weights: *const f32, x: *const f32, y: *mut f32) {
    // SAFETY: the caller passes buffers of these sizes.
    let (weights, x, y) = unsafe {
        (
            std::slice::from_raw_parts(weights, m * k),
            std::slice::from_raw_parts(x, k),
            std::slice::from_raw_parts_mut(y, m),
        )
    };
    rows(weights, x, y, k);
}

fn rows(weights: &[f32], x: &[f32], y: &mut [f32], k: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        unsafe { rows_avx512(weights, x, y, k) };
        return;
    }
    rows_portable(weights, x, y, k);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn rows_avx512(weights: &[f32], x: &[f32], y: &mut [f32], k: usize) {
    rows_portable(weights, x, y, k);
}

/// Sixteen partial sums per row, which the compiler keeps in one vector register.
#[inline(always)]
fn rows_portable(weights: &[f32], x: &[f32], y: &mut [f32], k: usize) {
    for (out, row) in y.iter_mut().zip(weights.chunks_exact(k.max(1))) {
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

    #[test]
    fn matches_the_naive_product() {
        for (m, k) in [(1, 1), (3, 17), (70, 33), (300, 300)] {
            let w: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 11) as f32 - 5.0) / 8.0)
                .collect();
            let x: Vec<f32> = (0..k).map(|i| ((i * 3 % 7) as f32 - 3.0) / 4.0).collect();
            let mut y = vec![f32::NAN; m];
            unsafe { gemv(m, k, w.as_ptr(), x.as_ptr(), y.as_mut_ptr()) };
            for (i, got) in y.iter().enumerate() {
                let want: f32 = (0..k).map(|p| w[i * k + p] * x[p]).sum();
                assert!(
                    (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "{m}x{k} row {i}"
                );
            }
        }
    }
}
