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
        || (Vec::new(), vec![0.0f32; points * mr]),
        |(rows, steps), (panel, mut matrices)| {
            let first = panel * mr;
            let count = mr.min(out_channels - first);
            rows.resize(count * in_channels * area, 0.0);
            fill(first, rows)?;
            // Input channel outside, output channel inside: each matrix's step c (mr
            // consecutive floats) is transformed into `steps` (point-major) and then
            // copied whole, where single floats stored across the α² matrices waited
            // on their lines (a third of ResNet-18's fold and pack).
            for c in 0..in_channels {
                for r in 0..count {
                    let g = &rows[(r * in_channels + c) * area..][..area];
                    transform(transforms, g, |point, value| steps[point * mr + r] = value);
                }
                for (matrix, step) in matrices.iter_mut().zip(steps.chunks_exact(mr)) {
                    matrix[c * mr..][..count].copy_from_slice(&step[..count]);
                }
            }
            Ok(())
        },
    )
}

/// `G g Gᵀ` of one r x r kernel (row-major): `put(point, value)` for each of its α²
/// points, row-major. Each variant's sizes are constants, so the loops unroll.
fn transform(transforms: &Transforms, g: &[f32], put: impl FnMut(usize, f32)) {
    match (transforms.alpha(), transforms.r) {
        (4, 3) => transform_sized::<4, 3>(transforms.weights, g, put),
        (6, 3) => transform_sized::<6, 3>(transforms.weights, g, put),
        (6, 5) => transform_sized::<6, 5>(transforms.weights, g, put),
        (alpha, r) => unreachable!("no Winograd variant has α = {alpha} and r = {r}"),
    }
}

fn transform_sized<const ALPHA: usize, const R: usize>(
    weights: &[&[f64]],
    g: &[f32],
    mut put: impl FnMut(usize, f32),
) {
    let gm: [[f64; R]; ALPHA] = std::array::from_fn(|i| std::array::from_fn(|a| weights[i][a]));
    let g: [[f64; R]; R] =
        std::array::from_fn(|a| std::array::from_fn(|b| f64::from(g[a * R + b])));
    // G g: α x r.
    let mut left = [[0.0f64; R]; ALPHA];
    for (row, out) in gm.iter().zip(&mut left) {
        for (b, value) in out.iter_mut().enumerate() {
            *value = (0..R).map(|a| row[a] * g[a][b]).sum();
        }
    }
    for (i, row) in left.iter().enumerate() {
        for (j, column) in gm.iter().enumerate() {
            put(
                i * ALPHA + j,
                (0..R).map(|b| row[b] * column[b]).sum::<f64>() as f32,
            );
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
            transform(&F2X2_3X3, &g, |point, value| u[point] = value);
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
                |point, value| u[point] = value,
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
