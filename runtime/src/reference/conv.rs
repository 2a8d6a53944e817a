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
            // A single output position (a conv over its whole input, as LeNet-5's C5) is
            // a matrix-vector product: `dot` of two matrices would pack the weights.
            let product = match columns.ncols() {
                1 => w.dot(&columns.column(0)).insert_axis(Axis(1)),
                _ => w.dot(&columns),
            };
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
/// Each row is filled an output row at a time from one input row, over the output
/// columns whose tap falls inside it (a slice copy at stride 1).
fn im2col(
    input: ArrayView4<f32>,
    conv: &Conv,
    [top, left]: [isize; 2],
    [out_h, out_w]: [usize; 2],
) -> Array2<f32> {
    let (_, channels, height, width) = input.dim();
    let [kh, kw] = conv.window.kernel.map(|k| k as usize);
    let [sh, sw] = conv.window.stride.map(|s| s as usize);
    let [dh, dw] = conv.window.dilation.map(|d| d as isize);
    let input = input.as_standard_layout();
    let input = input.as_slice().expect("standard layout");
    let mut columns = Array2::<f32>::zeros((channels * kh * kw, out_h * out_w));
    let rows = columns.as_slice_mut().expect("fresh array");
    let taps =
        (0..channels).flat_map(|c| (0..kh).flat_map(move |ky| (0..kw).map(move |kx| (c, ky, kx))));
    for ((c, ky, kx), row) in taps.zip(rows.chunks_exact_mut(out_h * out_w)) {
        let (first_x, first_y) = (kx as isize * dw - left, ky as isize * dh - top);
        let xs = inside(first_x, sw, width, out_w);
        if xs.is_empty() {
            continue;
        }
        for oy in inside(first_y, sh, height, out_h) {
            let iy = ((oy * sh) as isize + first_y) as usize;
            let source = &input[(c * height + iy) * width..][..width];
            let start = ((xs.start * sw) as isize + first_x) as usize;
            let columns = &mut row[oy * out_w..][xs.clone()];
            if sw == 1 {
                columns.copy_from_slice(&source[start..][..columns.len()]);
            } else {
                for (column, &value) in columns.iter_mut().zip(source[start..].iter().step_by(sw)) {
                    *column = value;
                }
            }
        }
    }
    columns
}

/// The outputs `o` in `0..count` whose tap `o * stride + offset` is in `0..len`.
fn inside(offset: isize, stride: usize, len: usize, count: usize) -> std::ops::Range<usize> {
    let stride = stride as isize;
    let first_at_least = |bound: isize| {
        let needed = bound - offset;
        if needed <= 0 {
            0
        } else {
            ((needed + stride - 1) / stride) as usize
        }
    };
    let start = first_at_least(0).min(count);
    start..first_at_least(len as isize).clamp(start, count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnnc_compiler::ops::Padding;
    use cnnc_compiler::ops::window::Window;
    use ndarray::{Array, ArrayD, IxDyn};

    /// The definition, one output at a time: the sum over the taps that land inside.
    fn direct(
        x: &Tensor,
        w: &Tensor,
        conv: &Conv,
        [top, left]: [isize; 2],
        [oh, ow]: [usize; 2],
    ) -> Tensor {
        let (x, w) = (
            x.view().into_dimensionality::<Ix4>().unwrap(),
            w.view().into_dimensionality::<Ix4>().unwrap(),
        );
        let (o, i, kh, kw) = w.dim();
        let [sh, sw] = conv.window.stride.map(|s| s as isize);
        let [dh, dw] = conv.window.dilation.map(|d| d as isize);
        let (h, wd) = (x.dim().2 as isize, x.dim().3 as isize);
        ArrayD::from_shape_fn(IxDyn(&[1, o, oh, ow]), |index| {
            let (oc, oy, ox) = (index[1], index[2] as isize, index[3] as isize);
            let mut sum = 0.0;
            for ic in 0..i {
                for ky in 0..kh as isize {
                    for kx in 0..kw as isize {
                        let (iy, ix) = (oy * sh - top + ky * dh, ox * sw - left + kx * dw);
                        if (0..h).contains(&iy) && (0..wd).contains(&ix) {
                            sum += x[[0, ic, iy as usize, ix as usize]]
                                * w[[oc, ic, ky as usize, kx as usize]];
                        }
                    }
                }
            }
            sum
        })
    }

    #[test]
    fn im2col_products_agree_with_the_definition_where_padding_covers_whole_rows_of_taps() {
        // Padding wider than the dilated kernel reaches: some taps miss every input row
        // or column; strides 1 and 2, both copy paths.
        for (stride, pads) in [
            ([1, 1], [3, 4, 1, 2]),
            ([2, 3], [4, 0, 0, 5]),
            ([1, 2], [0, 0, 0, 0]),
            // One output column, its every tap in the padding.
            ([1, 30], [3, 10, 1, 10]),
            // One output position: a matrix-vector product.
            ([30, 30], [0, 0, 0, 0]),
        ] {
            let window = Window {
                kernel: [3, 2],
                stride,
                dilation: [2, 1],
                padding: Padding::Explicit(pads),
                ceil: false,
            };
            let conv = Conv {
                out_channels: 3,
                window,
                groups: 1,
                bias: false,
            };
            let x = Array::from_shape_fn(IxDyn(&[1, 2, 5, 6]), |i| {
                (i[1] * 31 + i[2] * 7 + i[3]) as f32 * 0.1 - 1.0
            });
            let w = Array::from_shape_fn(IxDyn(&[3, 2, 3, 2]), |i| {
                (i[0] * 5 + i[1] * 3 + i[2] * 2 + i[3]) as f32 * 0.05 - 0.4
            });
            let out = conv.window.output([5, 6], &mut Vec::new()).unwrap();
            let [top, left, _, _] = out.pads.map(|p| p as isize);
            let expected = direct(&x, &w, &conv, [top, left], out.size.map(|s| s as usize));
            let found = conv2d(&x, w.view(), None, &conv);
            assert_eq!(found.shape(), expected.shape());
            for (f, e) in found.iter().zip(expected.iter()) {
                assert!(
                    (f - e).abs() < 1e-5,
                    "stride {stride:?}, pads {pads:?}: {f} vs {e}"
                );
            }
        }
    }
}
