//! The passes: checked graph → fused graph → memory plan. Each pass is a function on
//! the fused graph, run in this order by [`fuse`]:
//!
//! 1. [`lower`]: one kernel per inference layer (side outputs pruned).
//! 2. [`remove_dropout`]: dropout and identity disappear.
//! 3. [`flatten_views`]: flatten becomes a view, no copy.
//! 4. [`fold_batch_norms`]: a BN right after a conv or dense layer goes into its weights.
//! 5. [`fuse_epilogues`]: bias, activations, unfolded BNs and residual adds become steps
//!    of the conv or dense kernel before them.
//! 6. [`concat_in_place`]: branches write their channel slices of a concat's output.
//! 7. [`merge_1x1_convs`]: 1x1 convs reading the same tensor become one conv.
//! 8. [`choose_algorithms`]: Winograd for the 3x3 and 5x5 stride-1 convs where it pays.
//! 9. [`pools_into_convs`]: a pool whose windows tile a direct conv's output may be
//!    computed by that conv, row chunk by row chunk.
//!
//! [`plan`] then assigns buffers by liveness. Shapes come from the checked graph's facts;
//! weights are not touched here: the runtime applies [`fold_batch_norm`] to them.

mod algorithm;
mod concat;
mod dropout;
mod epilogue;
mod flatten;
mod fold_bn;
mod ir;
mod lower;
mod merge_1x1;
mod order;
mod plan;
mod pool_rows;
mod render;

pub use algorithm::{WINOGRAD_ENV, WinogradPolicy, choose_algorithms};
pub use concat::concat_in_place;
pub use dropout::remove_dropout;
pub use epilogue::fuse_epilogues;
pub use flatten::flatten_views;
pub use fold_bn::{BnStats, fold_batch_norm, fold_batch_norms};
pub use ir::{Algorithm, FoldedBn, FusedGraph, Index, Kernel, Part, Place, Step, Tensor, TensorId};
pub use lower::lower;
pub use merge_1x1::merge_1x1_convs;
pub use plan::{MemoryPlan, plan};
pub use pool_rows::pools_into_convs;
pub use render::listing;

use crate::check::CheckedGraph;

/// Every pass, in order, on a checked graph, with Winograd as the environment asks
/// ([`WinogradPolicy::from_env`]).
pub fn fuse(net: &CheckedGraph) -> FusedGraph {
    fuse_with(net, WinogradPolicy::from_env())
}

/// Every pass, in order, with Winograd chosen under `winograd`.
pub fn fuse_with(net: &CheckedGraph, winograd: WinogradPolicy) -> FusedGraph {
    let mut fused = lower(net);
    remove_dropout(&mut fused);
    flatten_views(&mut fused);
    fold_batch_norms(&mut fused);
    fuse_epilogues(&mut fused);
    concat_in_place(&mut fused);
    merge_1x1_convs(&mut fused);
    choose_algorithms(&mut fused, winograd);
    pools_into_convs(&mut fused);
    compact(&mut fused);
    fused
}

/// Drops the tensors fusion left unused and numbers the rest in the order the listing
/// shows them, so it reads `%0, %1, ...`.
pub fn compact(fused: &mut FusedGraph) {
    let count = fused.tensors.len();
    let used = used(fused);
    let listed = order::entries(fused).into_iter().map(|e| e.tensor(fused));
    // Anything used but not listed (never, in a well-formed graph) goes last.
    let order: Vec<TensorId> = listed
        .chain((0..count).map(TensorId))
        .filter(|t| used[t.0])
        .collect();
    let mut map = vec![TensorId(0); count];
    let mut numbered = vec![false; count];
    let mut kept = Vec::new();
    for t in order {
        if !std::mem::replace(&mut numbered[t.0], true) {
            map[t.0] = TensorId(kept.len());
            kept.push(t);
        }
    }
    fused.remap(&map);
    let mut tensors: Vec<Option<Tensor>> = std::mem::take(&mut fused.tensors)
        .into_iter()
        .map(Some)
        .collect();
    fused.tensors = kept.iter().filter_map(|t| tensors[t.0].take()).collect();
}

/// The tensors the graph refers to: inputs, output, what kernels read and write, and
/// the storage of views and slices.
fn used(fused: &FusedGraph) -> Vec<bool> {
    let mut used = vec![false; fused.tensors.len()];
    let mut pending: Vec<TensorId> = fused.inputs.clone();
    pending.push(fused.output);
    for kernel in &fused.kernels {
        pending.push(kernel.output);
        pending.extend(kernel.reads());
    }
    while let Some(t) = pending.pop() {
        if std::mem::replace(&mut used[t.0], true) {
            continue;
        }
        match fused.tensors[t.0].place {
            Place::View(base) | Place::Slice { parent: base, .. } => pending.push(base),
            Place::Own => {}
        }
    }
    used
}

#[cfg(test)]
mod tests;
