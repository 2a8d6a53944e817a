//! The weights of a Winograd convolution, transformed once at load: `U = G g Gᵀ` for
//! each (output channel, input channel) 3x3 kernel `g`, computed in f64 and rounded
//! once, then laid out as α² matrices (output channels x input channels), matrix ξ
//! holding point ξ of every U, each packed into the tile's MR-row panels.

use super::gemm::PackedA;
use super::microkernel::Microkernel;
use cnnc_compiler::codegen::cpu::Transforms;

/// The packed matrices, one after another (what generated code reads), for `weights`
/// as `[out_channels, in_channels, 3, 3]` row-major.
pub fn pack(
    transforms: &Transforms,
    weights: &[f32],
    out_channels: usize,
    in_channels: usize,
    microkernel: &Microkernel,
) -> Vec<f32> {
    let points = transforms.alpha() * transforms.alpha();
    let mut matrices = vec![vec![0.0f32; out_channels * in_channels]; points];
    let mut u = vec![0.0f32; points];
    for (pair, g) in weights.chunks_exact(9).enumerate() {
        transform(transforms, g, &mut u);
        for (matrix, &value) in matrices.iter_mut().zip(&u) {
            matrix[pair] = value;
        }
    }
    let mut packed = Vec::with_capacity(
        points * out_channels.div_ceil(microkernel.mr) * microkernel.mr * in_channels,
    );
    for matrix in &matrices {
        packed
            .extend_from_slice(PackedA::new(microkernel, matrix, out_channels, in_channels).data());
    }
    packed
}

/// The largest α of a variant: F(4x4,3x3)'s 6.
const MAX_ALPHA: usize = 6;

/// `G g Gᵀ` of one 3x3 kernel (row-major) into `u`, row-major α x α.
fn transform(transforms: &Transforms, g: &[f32], u: &mut [f32]) {
    let gm = transforms.weights;
    // G g: α x 3.
    let mut left = [[0.0f64; 3]; MAX_ALPHA];
    for (row, out) in gm.iter().zip(&mut left) {
        *out = std::array::from_fn(|b| (0..3).map(|a| row[a] * f64::from(g[a * 3 + b])).sum());
    }
    let mut values = u.iter_mut();
    for row in &left[..gm.len()] {
        for column in gm {
            if let Some(value) = values.next() {
                *value = (0..3).map(|b| row[b] * column[b]).sum::<f64>() as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnnc_compiler::codegen::cpu::F2X2_3X3;

    /// F(2,3) in one dimension, straight from the transforms: `Aᵀ [(G g) ⊙ (Bᵀ d)]`.
    fn one_dimension(g: [f64; 3], d: [f64; 4]) -> [f64; 2] {
        let t = &F2X2_3X3;
        let u: Vec<f64> = t
            .weights
            .iter()
            .map(|row| (0..3).map(|a| row[a] * g[a]).sum())
            .collect();
        let v: Vec<f64> = t
            .input
            .iter()
            .map(|row| (0..4).map(|k| f64::from(row[k]) * d[k]).sum())
            .collect();
        std::array::from_fn(|y| {
            (0..4)
                .map(|k| f64::from(t.output[y][k]) * u[k] * v[k])
                .sum()
        })
    }

    #[test]
    fn f2x3_computes_a_correlation() {
        let g = [0.5, -1.25, 2.0];
        let d = [1.0, 3.0, -2.0, 0.25];
        let direct: [f64; 2] = std::array::from_fn(|y| (0..3).map(|a| g[a] * d[y + a]).sum());
        assert_eq!(one_dimension(g, d), direct);
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
        let microkernel = Microkernel::best();
        let (out_channels, in_channels) = (3, 2);
        let weights: Vec<f32> = (0..out_channels * in_channels * 9)
            .map(|i| i as f32)
            .collect();
        let packed = pack(&F2X2_3X3, &weights, out_channels, in_channels, &microkernel);
        let matrix = out_channels.div_ceil(microkernel.mr) * microkernel.mr * in_channels;
        assert_eq!(packed.len(), 16 * matrix);
        // Point ξ of (output 2, input 1): panel 0, step 1, row 2.
        let mut u = [0.0f32; 16];
        transform(
            &F2X2_3X3,
            &weights[(2 * in_channels + 1) * 9..][..9],
            &mut u,
        );
        for (point, value) in u.iter().enumerate() {
            assert_eq!(packed[point * matrix + microkernel.mr + 2], *value);
        }
    }
}
