//! Pooling as PyTorch defines it: windows from the (asymmetric) padding, ceil mode's
//! partial windows, dilation for max, and both divisors for average.

use crate::Tensor;
use cnnc_compiler::ops::{AdaptivePool, Pool, PoolKind};
use ndarray::{Array4, Axis, Ix4};

pub fn pool2d(x: &Tensor, pool: &Pool) -> Tensor {
    let x = x
        .view()
        .into_dimensionality::<Ix4>()
        .expect("pool input is NCHW");
    let (batch, channels, height, width) = x.dim();
    let out = pool
        .window
        .output([height as u64, width as u64], &mut Vec::new())
        .expect("checked");
    let [top, left, bottom, right] = out.pads.map(|p| p as isize);
    let (out_h, out_w) = (out.size[0] as usize, out.size[1] as usize);
    let [kh, kw] = pool.window.kernel.map(|k| k as isize);
    let [sh, sw] = pool.window.stride.map(|s| s as isize);
    let [dh, dw] = pool.window.dilation.map(|d| d as isize);
    let (h, w) = (height as isize, width as isize);
    let x = x.as_standard_layout();
    let planes = x
        .as_slice()
        .expect("standard layout")
        .chunks_exact(height * width);
    let mut y = Array4::<f32>::zeros((batch, channels, out_h, out_w));
    let out_planes = y
        .as_slice_mut()
        .expect("fresh array")
        .chunks_exact_mut(out_h * out_w);
    for (plane, out_plane) in planes.zip(out_planes) {
        let at = |iy: isize, ix: isize| plane[iy as usize * width + ix as usize];
        let outputs = out_plane
            .chunks_exact_mut(out_w)
            .enumerate()
            .flat_map(|(oy, row)| {
                row.iter_mut()
                    .enumerate()
                    .map(move |(ox, value)| (oy as isize, ox as isize, value))
            });
        for (oy, ox, value) in outputs {
            let y0 = oy * sh - top;
            let x0 = ox * sw - left;
            *value = match pool.kind {
                PoolKind::Max => {
                    let mut best = f32::NEG_INFINITY;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let (iy, ix) = (y0 + ky * dh, x0 + kx * dw);
                            if (0..h).contains(&iy) && (0..w).contains(&ix) {
                                best = best.max(at(iy, ix));
                            }
                        }
                    }
                    best
                }
                PoolKind::Avg => {
                    // The window as far as the padding reaches, then clipped to the input.
                    let (y_end, x_end) = ((y0 + kh).min(h + bottom), (x0 + kw).min(w + right));
                    let padded_area = (y_end - y0) * (x_end - x0);
                    let (ya, yb) = (y0.max(0), y_end.min(h));
                    let (xa, xb) = (x0.max(0), x_end.min(w));
                    let mut sum = 0.0f32;
                    for iy in ya..yb {
                        for ix in xa..xb {
                            sum += at(iy, ix);
                        }
                    }
                    let divisor = if pool.count_include_pad {
                        padded_area
                    } else {
                        (yb - ya) * (xb - xa)
                    };
                    sum / divisor.max(1) as f32
                }
            };
        }
    }
    y.into_dyn()
}

pub fn global(x: &Tensor, kind: PoolKind) -> Tensor {
    let reduced = match kind {
        PoolKind::Avg => x
            .mean_axis(Axis(3))
            .and_then(|t| t.mean_axis(Axis(2)))
            .expect("non-empty"),
        PoolKind::Max => x
            .fold_axis(Axis(3), f32::NEG_INFINITY, |m, &v| m.max(v))
            .fold_axis(Axis(2), f32::NEG_INFINITY, |m, &v| m.max(v)),
    };
    reduced.insert_axis(Axis(2)).insert_axis(Axis(3))
}

/// Output cell `i` of `out` covers input `floor(i*in/out) .. ceil((i+1)*in/out)`.
pub fn adaptive(x: &Tensor, pool: &AdaptivePool) -> Tensor {
    let x = x
        .view()
        .into_dimensionality::<Ix4>()
        .expect("pool input is NCHW");
    let (batch, channels, height, width) = x.dim();
    let [out_h, out_w] = pool.size.map(|s| s as usize);
    let range = |i: usize, input: usize, output: usize| {
        (i * input / output, ((i + 1) * input).div_ceil(output))
    };
    let mut y = Array4::<f32>::zeros((batch, channels, out_h, out_w));
    for ((n, c, oy, ox), value) in y.indexed_iter_mut() {
        let (ya, yb) = range(oy, height, out_h);
        let (xa, xb) = range(ox, width, out_w);
        let window = x.slice(ndarray::s![n, c, ya..yb, xa..xb]);
        *value = match pool.kind {
            PoolKind::Avg => window.sum() / window.len() as f32,
            PoolKind::Max => window.fold(f32::NEG_INFINITY, |m, &v| m.max(v)),
        };
    }
    y.into_dyn()
}
