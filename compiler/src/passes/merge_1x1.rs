//! Horizontal fusion: 1x1 convs (stride 1, no padding, one group) that read the same
//! tensor and end in the same epilogue become one conv with their weights stacked, so
//! the input is read once and the product is one larger matrix. Each conv's output
//! becomes a channel slice of the merged output. Runs after concat in place: a conv
//! that already writes a concat's slice keeps doing so and is not merged.

use super::ir::{Algorithm, FusedGraph, Kernel, Part, Place, Step, Tensor, TensorId};
use crate::ops::{Conv, Op, Padding};
use std::collections::HashMap;

pub fn merge_1x1_convs(fused: &mut FusedGraph) {
    let mut gone = vec![false; fused.kernels.len()];
    for group in groups(fused) {
        let first = group[0];
        let merged = TensorId(fused.tensors.len());
        let (kernel, tensor) = merge(fused, &group, merged);
        let mut offset = 0u64;
        for &k in &group {
            let part = fused.kernels[k].output;
            fused.tensors[part.0].place = Place::Slice {
                parent: merged,
                offset,
            };
            offset = offset.saturating_add(out_channels(&fused.kernels[k]));
            gone[k] = k != first;
        }
        // Numbered last for now; `compact` numbers it before its parts.
        fused.tensors.push(tensor);
        fused.kernels[first] = kernel;
    }
    fused.retain_kernels(&gone);
}

/// Kernels that can merge, grouped by what they read and their epilogue, in order.
fn groups(fused: &FusedGraph) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_key: HashMap<(TensorId, String), usize> = HashMap::new();
    for (k, kernel) in fused.kernels.iter().enumerate() {
        if !mergeable(fused, kernel) {
            continue;
        }
        let key = (kernel.inputs[0], format!("{:?}", kernel.epilogue));
        let group = *by_key.entry(key).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[group].push(k);
    }
    groups.retain(|g| g.len() > 1);
    groups
}

/// A pointwise conv with one input, its own storage and a per-channel epilogue.
fn mergeable(fused: &FusedGraph, kernel: &Kernel) -> bool {
    let Op::Conv(conv) = &kernel.op else {
        return false;
    };
    let window = &conv.window;
    let pointwise = window.kernel == [1, 1]
        && window.stride == [1, 1]
        && window.padding == Padding::Explicit([0; 4])
        && conv.groups == 1;
    // A scale-shift names its BN's weights and an add reads another tensor: both
    // belong to one layer's channels only.
    let per_channel = kernel
        .epilogue
        .iter()
        .all(|s| matches!(s, Step::Bias | Step::Activation(_)));
    pointwise
        && per_channel
        && kernel.inputs.len() == 1
        && kernel.parts.is_empty()
        && fused.tensor(kernel.output).place == Place::Own
}

fn out_channels(kernel: &Kernel) -> u64 {
    match &kernel.op {
        Op::Conv(conv) => conv.out_channels,
        _ => 0,
    }
}

/// The merged kernel and its output tensor (`id`).
fn merge(fused: &FusedGraph, group: &[usize], id: TensorId) -> (Kernel, Tensor) {
    let members: Vec<&Kernel> = group.iter().map(|&k| &fused.kernels[k]).collect();
    let first = members[0];
    let total = members
        .iter()
        .fold(0u64, |sum, k| sum.saturating_add(out_channels(k)));
    let mut shape = fused.tensor(first.output).shape.clone();
    if let Some(channels) = shape.0.first_mut() {
        *channels = total;
    }
    let name = members
        .iter()
        .map(|k| k.name.as_str())
        .collect::<Vec<_>>()
        .join("+");
    let parts = members.iter().map(|k| part(k)).collect();
    let op = match &first.op {
        Op::Conv(conv) => Op::Conv(Conv {
            out_channels: total,
            bias: first.epilogue.contains(&Step::Bias),
            ..conv.clone()
        }),
        other => other.clone(),
    };
    let kernel = Kernel {
        node: first.node,
        name: name.clone(),
        op,
        inputs: first.inputs.clone(),
        output: id,
        folded_bn: None,
        epilogue: first.epilogue.clone(),
        layers: members.iter().flat_map(|k| k.layers.clone()).collect(),
        parts,
        algorithm: Algorithm::Direct,
        with_producer: false,
    };
    let tensor = Tensor {
        name,
        shape,
        place: Place::Own,
    };
    (kernel, tensor)
}

fn part(kernel: &Kernel) -> Part {
    Part {
        node: kernel.node,
        name: kernel.name.clone(),
        out_channels: out_channels(kernel),
        bias: matches!(&kernel.op, Op::Conv(c) if c.bias),
        folded_bn: kernel.folded_bn.clone(),
    }
}
