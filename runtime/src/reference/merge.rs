//! Joins: concatenation along the channels, and (scaled) addition.

use crate::Tensor;
use ndarray::Axis;

pub fn concat(inputs: &[&Tensor]) -> Tensor {
    let views: Vec<_> = inputs.iter().map(|t| t.view()).collect();
    ndarray::concatenate(Axis(1), &views).expect("checked shapes")
}

/// `inputs[0] + scale * (inputs[1] + ...)`: a residual's shortcut plus its scaled path.
pub fn add(inputs: &[&Tensor], scale: f64) -> Tensor {
    let mut sum = inputs[0].clone();
    for other in &inputs[1..] {
        sum.scaled_add(scale as f32, *other);
    }
    sum
}
