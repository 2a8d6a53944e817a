//! Dropout (and `identity`) do nothing at inference: their kernels go, and their readers
//! read the input instead.

use super::ir::{FusedGraph, TensorId};
use crate::ops::{Activation, Op};

pub fn remove_dropout(fused: &mut FusedGraph) {
    let mut alias: Vec<TensorId> = (0..fused.tensors.len()).map(TensorId).collect();
    let mut gone = vec![false; fused.kernels.len()];
    for (i, kernel) in fused.kernels.iter().enumerate() {
        let what = match kernel.op {
            Op::Dropout(_) => "dropout",
            Op::Activation(Activation::Identity) => "identity",
            _ => continue,
        };
        let Some(&input) = kernel.inputs.first() else {
            continue;
        };
        // In order, so a chain of them resolves to the first one's input.
        alias[kernel.output.0] = alias[input.0];
        gone[i] = true;
        fused.removed.push(format!(
            "{} ({what}: nothing to do at inference)",
            kernel.name
        ));
    }
    fused.retain_kernels(&gone);
    fused.remap(&alias);
}
