//! Matrix products over packed panels with a microkernel: C (M x N) = A (M x K) · B
//! (K x N). For a convolution A is the weights (packed once, when the network is
//! loaded), B the im2col of the input and C the output, already NCHW.
//!
//! This is the blocked loop nest the generated code follows (the BLIS order: K in
//! blocks that keep a B micro-panel in L1, every A panel of the block against it), kept
//! in Rust as the harness the microkernels are tested and measured with.

use super::microkernel::{Microkernel, TileFinish};
use crate::error::{Result, RuntimeError};
use rayon::prelude::*;

/// K per block: a 12x32 tile's B micro-panel of 256 steps is 32 KiB, within L1.
pub const KC: usize = 256;

/// A matrix packed into MR-row panels, each `K * MR` floats, rows past M zero.
pub struct PackedA {
    pub m: usize,
    pub k: usize,
    mr: usize,
    data: Vec<f32>,
}

impl PackedA {
    /// Packs row-major `a` (M x K) for `kernel`.
    pub fn new(kernel: &Microkernel, a: &[f32], m: usize, k: usize) -> PackedA {
        assert_eq!(a.len(), m * k, "A is M x K");
        let mr = kernel.mr;
        let mut data = vec![0.0; m.div_ceil(mr) * k * mr];
        let copy_rows = |first: usize, rows: &mut [f32]| {
            rows.copy_from_slice(&a[first * k..][..rows.len()]);
            Ok(())
        };
        pack_panels(mr, m, k, &mut data, copy_rows).expect("copying rows cannot fail");
        PackedA { m, k, mr, data }
    }

    /// The panels, one after another: what generated code reads.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Panel `i`'s steps from `p` on.
    fn panel(&self, i: usize, p: usize) -> &[f32] {
        &self.data[i * self.k * self.mr + p * self.mr..]
    }
}

/// Packs M rows of K values into `out` as MR-row panels (`K * MR` floats each, one
/// after another; rows past M are left as they are, zeros in a fresh buffer).
/// `fill(first, rows)` copies rows `first..` into `rows`, whole rows: from wherever the
/// matrix lies, folded as it goes. Panels are packed in parallel, each from a block of
/// its rows that stays in cache, and written in order.
pub fn pack_panels(
    mr: usize,
    m: usize,
    k: usize,
    out: &mut [f32],
    fill: impl Fn(usize, &mut [f32]) -> Result<()> + Sync,
) -> Result<()> {
    let panel_len = k * mr;
    if out.len() != m.div_ceil(mr) * panel_len {
        return Err(RuntimeError::Invalid(format!(
            "{} floats cannot hold {m} x {k} in panels of {mr} rows",
            out.len()
        )));
    }
    if out.is_empty() {
        return Ok(());
    }
    out.par_chunks_mut(panel_len)
        .enumerate()
        .try_for_each_init(Vec::new, |rows, (panel, out)| {
            let first = panel * mr;
            let count = mr.min(m - first);
            rows.resize(count * k, 0.0);
            fill(first, rows)?;
            transpose_into_panel(rows, count, k, out);
            Ok(())
        })
}

/// `rows` (`count` rows of K) into one panel: step p holds every row's value p.
fn transpose_into_panel(rows: &[f32], count: usize, k: usize, panel: &mut [f32]) {
    let mr = panel.len() / k;
    for (p, step) in panel.chunks_exact_mut(mr).enumerate() {
        for (r, value) in step[..count].iter_mut().enumerate() {
            *value = rows[r * k + p];
        }
    }
}

/// Packs rows `p0..p0 + kc` of row-major `b` (K x N) into NR-column panels, columns
/// past N zero.
pub fn pack_b(kernel: &Microkernel, b: &[f32], n: usize, p0: usize, kc: usize, out: &mut Vec<f32>) {
    let nr = kernel.nr;
    let panels = n.div_ceil(nr);
    out.clear();
    out.resize(panels * kc * nr, 0.0);
    for panel in 0..panels {
        let columns = nr.min(n - panel * nr);
        let dst = &mut out[panel * kc * nr..(panel + 1) * kc * nr];
        for p in 0..kc {
            let src = &b[(p0 + p) * n + panel * nr..][..columns];
            dst[p * nr..p * nr + columns].copy_from_slice(src);
        }
    }
}

/// C = A · B with `kernel`; `b` is row-major K x N and `c` row-major M x N.
pub fn gemm(kernel: &Microkernel, a: &PackedA, b: &[f32], n: usize, c: &mut [f32]) {
    let (m, k, mr, nr) = (a.m, a.k, kernel.mr, kernel.nr);
    assert_eq!(a.mr, mr, "A packed for this kernel");
    assert_eq!(b.len(), k * n, "B is K x N");
    assert_eq!(c.len(), m * n, "C is M x N");
    if k == 0 {
        c.fill(0.0);
        return;
    }
    let mut packed_b = Vec::new();
    for p0 in (0..k).step_by(KC) {
        let kc = KC.min(k - p0);
        pack_b(kernel, b, n, p0, kc, &mut packed_b);
        let accumulate = p0 > 0;
        for j in 0..n.div_ceil(nr) {
            let b_panel = &packed_b[j * kc * nr..];
            let columns = nr.min(n - j * nr);
            for i in 0..m.div_ceil(mr) {
                let rows = mr.min(m - i * mr);
                let a_panel = a.panel(i, p0);
                let corner = i * mr * n + j * nr;
                // SAFETY: the panels hold kc steps, and C has `rows` rows of `columns`
                // from `corner` at stride n.
                unsafe {
                    kernel.call(
                        kc,
                        a_panel.as_ptr(),
                        mr,
                        b_panel.as_ptr(),
                        nr,
                        c[corner..].as_mut_ptr(),
                        n,
                        rows,
                        columns,
                        TileFinish::plain(accumulate),
                    )
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    /// The panel layout, element by element: what the generated code reads.
    fn packed_one_by_one(a: &[f32], m: usize, k: usize, mr: usize) -> Vec<f32> {
        let mut data = vec![0.0; m.div_ceil(mr) * k * mr];
        for row in 0..m {
            for p in 0..k {
                data[(row / mr) * k * mr + p * mr + row % mr] = a[row * k + p];
            }
        }
        data
    }

    #[test]
    fn panels_packed_in_parallel_hold_each_value_where_the_layout_says() {
        for (m, k) in [(1, 1), (13, 5), (64, 27), (25, KC + 3), (12, 0), (0, 7)] {
            let a: Vec<f32> = (0..m * k).map(|i| i as f32).collect();
            for kernel in Microkernel::available() {
                let packed = PackedA::new(&kernel, &a, m, k);
                assert_eq!(
                    packed.data(),
                    packed_one_by_one(&a, m, k, kernel.mr),
                    "{m}x{k}"
                );
            }
        }
        let mut short = vec![0.0; 5];
        assert!(pack_panels(4, 3, 2, &mut short, |_, _| Ok(())).is_err());
    }

    #[test]
    fn gemm_matches_the_naive_product_for_every_kernel_and_edge() {
        // Edges in every dimension, and K over one block.
        for (m, k, n) in [
            (1, 1, 1),
            (13, 5, 33),
            (64, 27, 49),
            (25, KC + 3, 40),
            (12, 0, 32),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 31 % 17) as f32 - 8.0) / 16.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 13 % 19) as f32 - 9.0) / 16.0)
                .collect();
            let expected = naive(&a, &b, m, k, n);
            for kernel in Microkernel::available() {
                let packed = PackedA::new(&kernel, &a, m, k);
                let mut c = vec![f32::NAN; m * n];
                gemm(&kernel, &packed, &b, n, &mut c);
                for (got, want) in c.iter().zip(&expected) {
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{kernel:?} {m}x{k}x{n}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
