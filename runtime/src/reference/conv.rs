//! Convolution as PyTorch and ONNX define it (cross-correlation), with groups, dilation
//! and asymmetric padding: per sample and group, an im2col matrix times the weights.

use crate::Tensor;
use cnnc_compiler::ops::Conv;
use ndarray::{Array2, Array4, ArrayView4, ArrayViewD, Axis, Ix4, s};

pub fn conv2d(x: &Tensor, weight: ArrayViewD<f32>, bias: Option<&Tensor>, conv: &Conv) -> Tensor {
    let x = x
        .view()
        .into_dimensionality::<Ix4>()
        .expect("conv input is NCHW");
    let weight = weight
        .into_dimensionality::<Ix4>()
        .expect("conv weight is OIHW");
    let (batch, channels, height, width) = x.dim();
    let out = conv
        .window
        .output([height as u64, width as u64], &mut Vec::new())
        .expect("checked");
    let [top, left, _, _] = out.pads.map(|p| p as isize);
    let (out_h, out_w) = (out.size[0] as usize, out.size[1] as usize);
    let groups = conv.groups as usize;
    let (in_per_group, out_per_group) = (channels / groups, conv.out_channels as usize / groups);
    let [kh, kw] = conv.window.kernel.map(|k| k as usize);
    let mut y = Array4::<f32>::zeros((batch, conv.out_channels as usize, out_h, out_w));
    for n in 0..batch {
        for g in 0..groups {
            let input = x.slice(s![
                n..n + 1,
                g * in_per_group..(g + 1) * in_per_group,
                ..,
                ..
            ]);
            let columns = im2col(input, conv, [top, left], [out_h, out_w]);
            let w = weight.slice(s![g * out_per_group..(g + 1) * out_per_group, .., .., ..]);
            let w = w
                .to_shape((out_per_group, in_per_group * kh * kw))
                .expect("weights reshape");
            let product = w.dot(&columns);
            let product = product
                .to_shape((out_per_group, out_h, out_w))
                .expect("output reshape");
            y.slice_mut(s![n, g * out_per_group..(g + 1) * out_per_group, .., ..])
                .assign(&product);
        }
    }
    if let Some(bias) = bias {
        for (mut channel, &b) in y.axis_iter_mut(Axis(1)).zip(bias.iter()) {
            channel += b;
        }
    }
    y.into_dyn()
}

/// Rows: (channel, ky, kx); columns: output positions. Out-of-bounds taps read 0.
fn im2col(
    input: ArrayView4<f32>,
    conv: &Conv,
    [top, left]: [isize; 2],
    [out_h, out_w]: [usize; 2],
) -> Array2<f32> {
    let (_, channels, height, width) = input.dim();
    let [kh, kw] = conv.window.kernel.map(|k| k as usize);
    let [sh, sw] = conv.window.stride.map(|s| s as isize);
    let [dh, dw] = conv.window.dilation.map(|d| d as isize);
    let mut columns = Array2::<f32>::zeros((channels * kh * kw, out_h * out_w));
    for c in 0..channels {
        for ky in 0..kh {
            for kx in 0..kw {
                let row = (c * kh + ky) * kw + kx;
                for oy in 0..out_h {
                    let iy = oy as isize * sh - top + ky as isize * dh;
                    if iy < 0 || iy >= height as isize {
                        continue;
                    }
                    for ox in 0..out_w {
                        let ix = ox as isize * sw - left + kx as isize * dw;
                        if ix >= 0 && ix < width as isize {
                            columns[[row, oy * out_w + ox]] =
                                input[[0, c, iy as usize, ix as usize]];
                        }
                    }
                }
            }
        }
    }
    columns
}
