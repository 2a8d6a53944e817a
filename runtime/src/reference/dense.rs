//! Fully connected: `y = x Wᵀ + b`, with `W` as `[out, in]` (PyTorch's Linear).

use crate::Tensor;
use ndarray::{ArrayViewD, Axis, Ix2};

pub fn dense(x: &Tensor, weight: ArrayViewD<f32>, bias: Option<&Tensor>) -> Tensor {
    let x = x
        .view()
        .into_dimensionality::<Ix2>()
        .expect("dense input is [N, F]");
    let weight = weight
        .into_dimensionality::<Ix2>()
        .expect("dense weight is [out, in]");
    // One sample is a matrix-vector product: `dot` of two matrices would pack the weights.
    let mut y = match x.nrows() {
        1 => weight.dot(&x.row(0)).insert_axis(Axis(0)),
        _ => x.dot(&weight.t()),
    };
    if let Some(bias) = bias {
        let bias = bias
            .view()
            .into_dimensionality::<ndarray::Ix1>()
            .expect("bias is [out]");
        y += &bias;
    }
    y.into_dyn()
}
