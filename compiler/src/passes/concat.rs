//! Concat in place: each branch's last kernel writes straight into its channel slice of
//! the concat's output, and the concat itself disappears. Applied to a concat only when
//! every input can be a slice: written by a kernel (not a network input), owning its
//! storage (not a view, not already a slice), and read by nothing but this concat, once
//! (another reader would need the branch output in its own buffer).

use super::ir::{FusedGraph, Index, Place, TensorId};
use crate::ops::Op;

pub fn concat_in_place(fused: &mut FusedGraph) {
    let index = fused.index();
    let mut gone = vec![false; fused.kernels.len()];
    // Last concat first: an inner concat feeding an outer one becomes a slice of it
    // before its own branches become slices of the slice.
    for i in (0..fused.kernels.len()).rev() {
        let Some(slices) = slices(fused, &index, i) else {
            continue;
        };
        let parent = fused.kernels[i].output;
        for (tensor, offset) in slices {
            fused.tensors[tensor.0].place = Place::Slice { parent, offset };
        }
        gone[i] = true;
    }
    // Listed in network order.
    let removed = fused.kernels.iter().zip(&gone).filter(|(_, g)| **g);
    let removed: Vec<String> = removed
        .map(|(k, _)| format!("{} (concat: each branch writes its slice)", k.name))
        .collect();
    fused.removed.extend(removed);
    fused.retain_kernels(&gone);
}

/// Each input of the concat at `i` with its first channel, if all can be slices.
fn slices(fused: &FusedGraph, index: &Index, i: usize) -> Option<Vec<(TensorId, u64)>> {
    let concat = &fused.kernels[i];
    let Op::Concat(_) = concat.op else {
        return None;
    };
    let rank = fused.tensor(concat.output).shape.rank();
    let mut offset = 0u64;
    let mut slices = Vec::with_capacity(concat.inputs.len());
    for &input in &concat.inputs {
        let tensor = fused.tensor(input);
        let legal = index.producer[input.0].is_some()
            && tensor.place == Place::Own
            && tensor.shape.rank() == rank
            && index.readers[input.0] == 1;
        if !legal {
            return None;
        }
        slices.push((input, offset));
        offset = offset.saturating_add(*tensor.shape.0.first()?);
    }
    Some(slices)
}
