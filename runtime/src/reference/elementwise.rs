//! Activations, element by element; softmax over the channels (axis 1), stabilised by
//! subtracting the maximum.

use crate::Tensor;
use cnnc_compiler::ops::Activation;
use ndarray::Axis;

pub fn activation(x: &Tensor, activation: &Activation) -> Tensor {
    match activation {
        Activation::Relu => x.mapv(|v| v.max(0.0)),
        Activation::Relu6 => x.mapv(|v| v.clamp(0.0, 6.0)),
        Activation::LeakyRelu { slope } => {
            let slope = *slope as f32;
            x.mapv(|v| if v >= 0.0 { v } else { v * slope })
        }
        Activation::Tanh => x.mapv(f32::tanh),
        Activation::Sigmoid => x.mapv(|v| 1.0 / (1.0 + (-v).exp())),
        Activation::Identity => x.clone(),
        Activation::Softmax => softmax_channels(x),
    }
}

fn softmax_channels(x: &Tensor) -> Tensor {
    let max = x
        .fold_axis(Axis(1), f32::NEG_INFINITY, |m, &v| m.max(v))
        .insert_axis(Axis(1));
    let exps = (x - &max).mapv(f32::exp);
    let sum = exps.sum_axis(Axis(1)).insert_axis(Axis(1));
    exps / sum
}
