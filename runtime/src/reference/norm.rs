//! Batch norm in inference form, and local response normalisation across channels.

use crate::Tensor;
use cnnc_compiler::ops::Lrn;
use ndarray::{Axis, Ix4};

pub fn batch_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> Tensor {
    let mut y = x.clone();
    for (c, mut channel) in y.axis_iter_mut(Axis(1)).enumerate() {
        let scale = gamma[c] / (var[c] + eps as f32).sqrt();
        let shift = beta[c] - mean[c] * scale;
        channel.mapv_inplace(|v| v * scale + shift);
    }
    y
}

/// `x / (k + a * Σ x²)^β` over `size` neighbouring channels, the window reaching
/// `size/2` channels before and `(size-1)/2` after, as PyTorch pads it. PyTorch and ONNX
/// take `a = alpha/size`; the AlexNet paper writes `a = alpha` (`alpha_scaled=false`).
pub fn lrn(x: &Tensor, lrn: &Lrn) -> Tensor {
    let view = x
        .view()
        .into_dimensionality::<Ix4>()
        .expect("lrn input is NCHW");
    let (batch, channels, height, width) = view.dim();
    let size = lrn.size as usize;
    let a = if lrn.alpha_scaled {
        lrn.alpha / lrn.size as f64
    } else {
        lrn.alpha
    };
    let mut y = x.clone();
    for n in 0..batch {
        for c in 0..channels {
            let first = c.saturating_sub(size / 2);
            let last = (c + (size - 1) / 2).min(channels - 1);
            for h in 0..height {
                for w in 0..width {
                    let sum: f64 = (first..=last)
                        .map(|j| f64::from(view[[n, j, h, w]]).powi(2))
                        .sum();
                    let divisor = (lrn.k + a * sum).powf(lrn.beta);
                    y[[n, c, h, w]] = (f64::from(view[[n, c, h, w]]) / divisor) as f32;
                }
            }
        }
    }
    y
}
