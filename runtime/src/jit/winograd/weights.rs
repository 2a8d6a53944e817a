//! The weights of a Winograd convolution, transformed once at load: `U = G g Gᵀ` for
//! each (output channel, input channel) r x r kernel `g`, computed in f64 and rounded
//! once, then laid out as α² matrices (output channels x input channels), matrix ξ
//! holding point ξ of every U, each packed into the tile's MR-row panels.

use crate::error::Result;
use cnnc_compiler::winograd::Transforms;
use rayon::prelude::*;

/// Floats of the packed matrices for `out_channels` x `in_channels` weights and a tile
/// of `mr` rows.
pub fn packed_len(
    transforms: &Transforms,
    out_channels: usize,
    in_channels: usize,
    mr: usize,
) -> usize {
    transforms.alpha() * transforms.alpha() * out_channels.div_ceil(mr) * in_channels * mr
}

/// The packed matrices, one after another (what generated code reads), into `packed`
/// (`packed_len` zeroed floats), for weights `[out_channels, in_channels, r, r]` whose
/// rows (output channels) `fill(first, rows)` copies out from `first` on, packed for a
/// tile of `mr` rows. Each panel of `mr` output channels is transformed from one block
/// of its rows, in parallel.
pub fn pack(
    transforms: &Transforms,
    (out_channels, in_channels, mr): (usize, usize, usize),
    packed: &mut [f32],
    fill: impl Fn(usize, &mut [f32]) -> Result<()> + Sync,
) -> Result<()> {
    let points = transforms.alpha() * transforms.alpha();
    let area = (transforms.r * transforms.r) as usize;
    let panel_len = in_channels * mr;
    let matrix_len = out_channels.div_ceil(mr) * panel_len;
    if packed.len() != packed_len(transforms, out_channels, in_channels, mr) {
        return Err(crate::error::RuntimeError::Invalid(format!(
            "{} floats cannot hold the transformed {out_channels} x {in_channels} weights",
            packed.len()
        )));
    }
    if packed.is_empty() {
        return Ok(());
    }
    // Panel j of every matrix, for the thread that transforms panel j's channels.
    let mut by_panel: Vec<Vec<&mut [f32]>> = (0..out_channels.div_ceil(mr))
        .map(|_| Vec::with_capacity(points))
        .collect();
    for matrix in packed.chunks_exact_mut(matrix_len) {
        for (panel, part) in matrix.chunks_exact_mut(panel_len).enumerate() {
            by_panel[panel].push(part);
        }
    }
    by_panel.into_par_iter().enumerate().try_for_each_init(
        || (Vec::new(), vec![0.0f32; points]),
        |(rows, u), (panel, mut matrices)| {
            let first = panel * mr;
            let count = mr.min(out_channels - first);
            rows.resize(count * in_channels * area, 0.0);
            fill(first, rows)?;
            // Input channel outside, output channel inside: each matrix's step c (mr
            // consecutive floats) is written whole before the next, where the other
            // order came back to every line of the α² matrices mr times.
            for c in 0..in_channels {
                for r in 0..count {
                    let g = &rows[(r * in_channels + c) * area..][..area];
                    transform(transforms, g, u);
                    for (matrix, &value) in matrices.iter_mut().zip(u.iter()) {
                        matrix[c * mr + r] = value;
                    }
                }
            }
            Ok(())
        },
    )
}

/// The largest α of a variant: 6 (F(4x4,3x3), F(2x2,5x5)).
const MAX_ALPHA: usize = 6;

/// The largest r of a variant: 5.
const MAX_R: usize = 5;

/// `G g Gᵀ` of one r x r kernel (row-major) into `u`, row-major α x α.
fn transform(transforms: &Transforms, g: &[f32], u: &mut [f32]) {
    let (gm, r) = (transforms.weights, transforms.r as usize);
    // G g: α x r.
    let mut left = [[0.0f64; MAX_R]; MAX_ALPHA];
    for (row, out) in gm.iter().zip(&mut left) {
        for (b, value) in out[..r].iter_mut().enumerate() {
            *value = (0..r).map(|a| row[a] * f64::from(g[a * r + b])).sum();
        }
    }
    let mut values = u.iter_mut();
    for row in &left[..gm.len()] {
        for column in gm {
            if let Some(value) = values.next() {
                *value = (0..r).map(|b| row[b] * column[b]).sum::<f64>() as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnnc_compiler::winograd::{F2X2_3X3, VARIANTS};

    /// Each variant in one dimension, straight from its transforms, `Aᵀ [(G g) ⊙ (Bᵀ
    /// d)]`, against the correlation it stands for.
    #[test]
    fn every_variant_computes_a_correlation() {
        for t in VARIANTS {
            let (m, r, alpha) = (t.m as usize, t.r as usize, t.alpha());
            let g: Vec<f64> = (0..r).map(|a| 0.5 - 0.75 * a as f64).collect();
            let d: Vec<f64> = (0..alpha)
                .map(|k| ((k * 7 % 5) as f64 - 2.0) / 3.0)
                .collect();
            let u: Vec<f64> = t
                .weights
                .iter()
                .map(|row| (0..r).map(|a| row[a] * g[a]).sum())
                .collect();
            let v: Vec<f64> = t
                .input
                .iter()
                .map(|row| (0..alpha).map(|k| f64::from(row[k]) * d[k]).sum())
                .collect();
            for y in 0..m {
                let winograd: f64 = (0..alpha)
                    .map(|k| f64::from(t.output[y][k]) * u[k] * v[k])
                    .sum();
                let direct: f64 = (0..r).map(|a| g[a] * d[y + a]).sum();
                assert!((winograd - direct).abs() < 1e-12, "F({m},{r}) output {y}");
            }
        }
    }

    #[test]
    fn the_weight_transform_is_g_times_g_times_g_transposed() {
        // A kernel with a single 1 at (a, b) transforms to the outer product of G's
        // columns a and b.
        for (a, b) in [(0, 0), (1, 2), (2, 1)] {
            let mut g = [0.0f32; 9];
            g[a * 3 + b] = 1.0;
            let mut u = [0.0f32; 16];
            transform(&F2X2_3X3, &g, &mut u);
            for j in 0..4 {
                for i in 0..4 {
                    let expected = F2X2_3X3.weights[j][a] * F2X2_3X3.weights[i][b];
                    assert_eq!(
                        f64::from(u[j * 4 + i]),
                        expected,
                        "({a}, {b}) at ({j}, {i})"
                    );
                }
            }
        }
    }

    #[test]
    fn matrices_are_packed_per_point() {
        let (out_channels, in_channels, mr) = (13, 2, 12);
        let weights: Vec<f32> = (0..out_channels * in_channels * 9)
            .map(|i| i as f32)
            .collect();
        let rows = |first: usize, out: &mut [f32]| {
            out.copy_from_slice(&weights[first * in_channels * 9..][..out.len()]);
            Ok(())
        };
        let mut packed = vec![0.0; packed_len(&F2X2_3X3, out_channels, in_channels, mr)];
        pack(
            &F2X2_3X3,
            (out_channels, in_channels, mr),
            &mut packed,
            rows,
        )
        .expect("packs");
        let matrix = out_channels.div_ceil(mr) * mr * in_channels;
        assert_eq!(packed.len(), 16 * matrix);
        let mut u = [0.0f32; 16];
        for (o, c) in [(2, 1), (0, 0), (12, 1)] {
            // Point ξ of (output o, input c): panel o / mr, step c, row o % mr.
            transform(
                &F2X2_3X3,
                &weights[(o * in_channels + c) * 9..][..9],
                &mut u,
            );
            for (point, value) in u.iter().enumerate() {
                let at = point * matrix + (o / mr) * mr * in_channels + c * mr + o % mr;
                assert_eq!(packed[at], *value, "({o}, {c}) at {point}");
            }
        }
        // The second panel's rows past the 13th channel stay zero.
        assert!(
            packed[mr * in_channels + 1..][..mr - 1]
                .iter()
                .all(|&v| v == 0.0)
        );
    }
}
