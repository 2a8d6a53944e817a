//! Batch norm folded into the conv (or dense layer) before it: the BN's per-channel
//! scale goes into the weights and its shift into the bias, so it costs nothing at run
//! time. The graph pass records which layer absorbs which BN; the arithmetic is
//! [`fold_batch_norm`], on plain slices, which the runtime applies to the weights.

use super::ir::{FoldedBn, FusedGraph, Index, Place, Step};
use crate::ops::Op;

/// Folds every batch norm that directly follows a conv or dense layer whose output
/// nothing else reads. A BN after anything else (a pool, an activation) stays.
pub fn fold_batch_norms(fused: &mut FusedGraph) {
    let mut index = fused.index();
    let gone: Vec<bool> = (0..fused.kernels.len())
        .map(|bn| {
            // A producer precedes its readers: the kernels are in topological order.
            let target = fold_target(fused, &index, bn).filter(|&t| t < bn);
            if let Some(target) = target {
                absorb(fused, &mut index, target, bn);
            }
            target.is_some()
        })
        .collect();
    fused.retain_kernels(&gone);
}

/// The kernel that can absorb the batch norm at `bn`, if any.
fn fold_target(fused: &FusedGraph, index: &Index, bn: usize) -> Option<usize> {
    let kernel = &fused.kernels[bn];
    let Op::BatchNorm(_) = kernel.op else {
        return None;
    };
    let &input = kernel.inputs.first()?;
    let target = index.producer[input.0]?;
    let producer = &fused.kernels[target];
    // Only a bias may stand between the weights and the BN: after an activation the
    // scale no longer commutes with the kernel.
    let bias_only = producer.epilogue.iter().all(|s| *s == Step::Bias);
    let alone = index.readers[input.0] == 1 && fused.tensor(input).place == Place::Own;
    (producer.takes_epilogue() && producer.folded_bn.is_none() && bias_only && alone)
        .then_some(target)
}

fn absorb(fused: &mut FusedGraph, index: &mut Index, target: usize, bn: usize) {
    let bn = fused.kernels[bn].clone();
    let Op::BatchNorm(op) = &bn.op else {
        return;
    };
    index.producer[bn.output.0] = Some(target);
    let kernel = &mut fused.kernels[target];
    kernel.folded_bn = Some(FoldedBn {
        node: bn.node,
        layer: bn.name.clone(),
        eps: op.eps,
    });
    // A folded BN always leaves a bias (its shift), even on a conv without one.
    kernel.epilogue = vec![Step::Bias];
    kernel.layers.push(bn.name);
    kernel.output = bn.output;
}

/// A batch norm's tensors, one value per channel.
#[derive(Debug, Clone, Copy)]
pub struct BnStats<'a> {
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub mean: &'a [f32],
    pub var: &'a [f32],
}

/// Folds a batch norm into the weights (`[out, ...]`, row-major) and bias (`[out]`)
/// of the layer before it. Per output channel c, with s = γ/√(σ²+ε):
/// w' = w·s, b' = (b − μ)·s + β. The scale is computed in f32 exactly as the reference
/// interpreter's batch norm computes it.
pub fn fold_batch_norm(
    weight: &mut [f32],
    bias: &mut [f32],
    bn: BnStats<'_>,
    eps: f64,
) -> Result<(), String> {
    let channels = bias.len();
    let stats = [bn.gamma, bn.beta, bn.mean, bn.var];
    if channels == 0
        || stats.iter().any(|s| s.len() != channels)
        || !weight.len().is_multiple_of(channels)
    {
        return Err(format!(
            "cannot fold a batch norm of {} channels into {} weights and {channels} biases",
            bn.gamma.len(),
            weight.len()
        ));
    }
    let per_channel = weight.len() / channels;
    for c in 0..channels {
        let scale = bn.gamma[c] / (bn.var[c] + eps as f32).sqrt();
        let row = &mut weight[c * per_channel..(c + 1) * per_channel];
        row.iter_mut().for_each(|w| *w *= scale);
        bias[c] = (bias[c] - bn.mean[c]) * scale + bn.beta[c];
    }
    Ok(())
}
