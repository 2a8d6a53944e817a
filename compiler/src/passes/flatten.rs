//! Flatten as a view: the tensor keeps its storage (channel-major is already the flat
//! order), only its shape changes, so no kernel runs and nothing is copied.

use super::ir::{FusedGraph, Place};
use crate::ops::Op;

pub fn flatten_views(fused: &mut FusedGraph) {
    let mut gone = vec![false; fused.kernels.len()];
    for (i, kernel) in fused.kernels.iter().enumerate() {
        let Some(&input) = kernel.inputs.first() else {
            continue;
        };
        if let Op::Flatten(_) = kernel.op {
            fused.tensors[kernel.output.0].place = Place::View(input);
            gone[i] = true;
            fused
                .removed
                .push(format!("{} (flatten: a view of its input)", kernel.name));
        }
    }
    fused.retain_kernels(&gone);
}
