//! The memory plan, in two forms over the same lifetimes. An arena (the CPU backends):
//! every tensor that owns storage gets an offset in one block, placed largest first at
//! the lowest offset free for its whole lifetime, which lands within a few percent of
//! the liveness lower bound. Buffers (the GPU, whose bindings are whole buffers, and
//! guarded runs, where each buffer sits between guard pages): a buffer is reused once
//! the last reader of its tensor has run. Views and concat slices live in their
//! parent's storage. Sizes are bytes per sample (f32); a batch multiplies them all.

use super::ir::{FusedGraph, Place, TensorId};

const BYTES_PER_ELEMENT: u64 = 4;
/// Arena offsets are whole cache lines (and so whole f32x16 vectors).
pub const ARENA_ALIGN: u64 = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlan {
    /// Each storage-owning, used tensor's offset in the arena, in bytes per sample
    /// (a multiple of [`ARENA_ALIGN`]); `None` for the rest.
    pub offsets: Vec<Option<u64>>,
    /// The arena's size: the activation memory one sample needs on the CPU.
    pub arena_bytes: u64,
    /// Each buffer's size in bytes per sample.
    pub buffers: Vec<u64>,
    /// The buffer of each tensor that owns storage and is used; `None` for views and
    /// slices (see [`FusedGraph::root`]).
    pub buffer_of: Vec<Option<usize>>,
    /// The sum of the buffers: the activation memory one sample needs in buffers.
    pub buffer_bytes: u64,
    /// Every storage-owning tensor in a buffer of its own, no reuse.
    pub unshared_bytes: u64,
    /// The most bytes live at one time: no plan can need less.
    pub lower_bound_bytes: u64,
}

/// When a storage-owning tensor is first written and last read. Time 0 is before the
/// first kernel (network inputs), kernel `k` runs at time `k + 1`, and the network
/// output is read after the last kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lifetime {
    first: usize,
    last: usize,
}

pub fn plan(fused: &FusedGraph) -> MemoryPlan {
    let lifetimes = lifetimes(fused);
    let sizes: Vec<u64> = fused.tensors.iter().map(tensor_bytes).collect();
    let steps = fused.kernels.len() + 2;
    let (mut starting, mut ending) = (vec![Vec::new(); steps], vec![Vec::new(); steps]);
    for (t, lifetime) in lifetimes.iter().enumerate() {
        if let Some(l) = lifetime {
            starting[l.first].push(t);
            ending[l.last].push(t);
        }
    }
    let mut buffers: Vec<u64> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut buffer_of = vec![None; fused.tensors.len()];
    for time in 0..steps {
        // Outputs are placed before inputs are released: a kernel never writes the
        // buffer it reads.
        for &t in &starting[time] {
            buffer_of[t] = Some(allocate(&mut buffers, &mut free, sizes[t]));
        }
        free.extend(ending[time].iter().filter_map(|&t| buffer_of[t]));
    }
    let unshared_bytes = lifetimes
        .iter()
        .zip(&sizes)
        .filter(|(l, _)| l.is_some())
        .fold(0u64, |sum, (_, &s)| sum.saturating_add(s));
    let lower_bound_bytes = most_live(&lifetimes, &sizes, steps);
    let (offsets, arena_bytes) = arena(&lifetimes, &sizes, steps);
    MemoryPlan {
        offsets,
        arena_bytes,
        lower_bound_bytes,
        buffer_bytes: buffers.iter().fold(0u64, |sum, &b| sum.saturating_add(b)),
        buffers,
        buffer_of,
        unshared_bytes,
    }
}

/// The most bytes live at one time step, in one sweep over the steps.
fn most_live(lifetimes: &[Option<Lifetime>], sizes: &[u64], steps: usize) -> u64 {
    let (mut starting, mut ending) = (vec![0u64; steps], vec![0u64; steps]);
    for (lifetime, &size) in lifetimes.iter().zip(sizes) {
        if let Some(l) = lifetime {
            starting[l.first] = starting[l.first].saturating_add(size);
            ending[l.last] = ending[l.last].saturating_add(size);
        }
    }
    let (mut live, mut most) = (0u64, 0u64);
    for time in 0..steps {
        live = live.saturating_add(starting[time]);
        most = most.max(live);
        live = live.saturating_sub(ending[time]);
    }
    most
}

/// Offsets in one block: largest tensor first, each at the lowest offset that no
/// tensor placed before it and live at the same time covers. Live tensors are kept per
/// time step, so a tensor is checked only against those it meets.
fn arena(lifetimes: &[Option<Lifetime>], sizes: &[u64], steps: usize) -> (Vec<Option<u64>>, u64) {
    let mut order: Vec<usize> = (0..lifetimes.len())
        .filter(|&t| lifetimes[t].is_some())
        .collect();
    order.sort_by_key(|&t| (std::cmp::Reverse(sizes[t]), lifetimes[t].map(|l| l.first)));
    let mut placed: Vec<Vec<(u64, u64)>> = vec![Vec::new(); steps];
    let mut offsets = vec![None; lifetimes.len()];
    let mut end_of_arena = 0u64;
    for t in order {
        let Some(l) = lifetimes[t] else { continue };
        let size = sizes[t].div_ceil(ARENA_ALIGN).saturating_mul(ARENA_ALIGN);
        let mut taken: Vec<(u64, u64)> = placed[l.first..=l.last].concat();
        taken.sort_unstable();
        let mut offset = 0u64;
        for &(start, end) in &taken {
            if start >= offset.saturating_add(size) {
                break;
            }
            offset = offset.max(end);
        }
        let end = offset.saturating_add(size);
        for step in &mut placed[l.first..=l.last] {
            step.push((offset, end));
        }
        offsets[t] = Some(offset);
        end_of_arena = end_of_arena.max(end);
    }
    (offsets, end_of_arena)
}

fn tensor_bytes(tensor: &super::ir::Tensor) -> u64 {
    tensor
        .shape
        .0
        .iter()
        .fold(BYTES_PER_ELEMENT, |bytes, &d| bytes.saturating_mul(d))
}

/// The lifetime of each storage-owning tensor that is used, reads and writes of its
/// views and slices included; `None` for the rest.
fn lifetimes(fused: &FusedGraph) -> Vec<Option<Lifetime>> {
    let mut lifetimes: Vec<Option<Lifetime>> = vec![None; fused.tensors.len()];
    let mut touch = |tensor: TensorId, time: usize, write: bool| {
        let (root, _) = fused.root(tensor);
        let l = lifetimes[root.0].get_or_insert(Lifetime {
            first: time,
            last: time,
        });
        if write {
            l.first = l.first.min(time);
        }
        l.last = l.last.max(time);
    };
    for &input in &fused.inputs {
        touch(input, 0, true);
    }
    for (k, kernel) in fused.kernels.iter().enumerate() {
        // A pool its producer may compute is written while that kernel runs.
        let written = if kernel.with_producer { k } else { k + 1 };
        touch(kernel.output, written, true);
        for read in kernel.reads() {
            touch(read, k + 1, false);
        }
    }
    touch(fused.output, fused.kernels.len() + 1, false);
    for (t, tensor) in fused.tensors.iter().enumerate() {
        if tensor.place != Place::Own {
            lifetimes[t] = None;
        }
    }
    lifetimes
}

/// Best fit: the smallest free buffer that is large enough; else the largest free one,
/// grown (cheaper than a new one); else a new buffer.
fn allocate(buffers: &mut Vec<u64>, free: &mut Vec<usize>, size: u64) -> usize {
    let fitting = (0..free.len())
        .filter(|&i| buffers[free[i]] >= size)
        .min_by_key(|&i| buffers[free[i]]);
    let largest = (0..free.len()).max_by_key(|&i| buffers[free[i]]);
    match fitting.or(largest) {
        Some(i) => {
            let buffer = free.swap_remove(i);
            buffers[buffer] = buffers[buffer].max(size);
            buffer
        }
        None => {
            buffers.push(size);
            buffers.len() - 1
        }
    }
}
