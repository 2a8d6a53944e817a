//! Matrix products over packed panels with a microkernel: C (M x N) = A (M x K) · B
//! (K x N). For a convolution A is the weights (packed once, when the network is
//! loaded), B the im2col of the input and C the output, already NCHW.
//!
//! This is the blocked loop nest the generated code follows (the BLIS order: K in
//! blocks that keep a B micro-panel in L1, every A panel of the block against it), kept
//! in Rust as the harness the microkernels are tested and measured with.

use super::microkernel::Microkernel;

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
        let panels = m.div_ceil(mr);
        let mut data = vec![0.0; panels * k * mr];
        for panel in 0..panels {
            let out = &mut data[panel * k * mr..(panel + 1) * k * mr];
            for r in 0..mr.min(m - panel * mr) {
                let row = &a[(panel * mr + r) * k..(panel * mr + r + 1) * k];
                for (p, &value) in row.iter().enumerate() {
                    out[p * mr + r] = value;
                }
            }
        }
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
    let mut edge = vec![0.0f32; mr * nr];
    for p0 in (0..k).step_by(KC) {
        let kc = KC.min(k - p0);
        pack_b(kernel, b, n, p0, kc, &mut packed_b);
        let accumulate = u32::from(p0 > 0);
        for j in 0..n.div_ceil(nr) {
            let b_panel = &packed_b[j * kc * nr..];
            let columns = nr.min(n - j * nr);
            for i in 0..m.div_ceil(mr) {
                let rows = mr.min(m - i * mr);
                let a_panel = a.panel(i, p0);
                let corner = i * mr * n + j * nr;
                if rows == mr && columns == nr {
                    // SAFETY: the panels hold kc steps, and C has mr rows of nr from
                    // `corner` at stride n.
                    unsafe {
                        (kernel.tile)(
                            kc,
                            a_panel.as_ptr(),
                            b_panel.as_ptr(),
                            c[corner..].as_mut_ptr(),
                            n,
                            accumulate,
                        )
                    };
                } else {
                    // A partial tile goes through a full-size scratch tile.
                    unsafe {
                        (kernel.tile)(
                            kc,
                            a_panel.as_ptr(),
                            b_panel.as_ptr(),
                            edge.as_mut_ptr(),
                            nr,
                            0,
                        )
                    };
                    for r in 0..rows {
                        let dst = &mut c[corner + r * n..][..columns];
                        for (d, s) in dst.iter_mut().zip(&edge[r * nr..r * nr + columns]) {
                            *d = if accumulate != 0 { *d + s } else { *s };
                        }
                    }
                }
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
