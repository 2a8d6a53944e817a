//! The memory plan: every tensor that owns storage gets a buffer, and a buffer is
//! reused once the last reader of its tensor has run. Views and concat slices live in
//! their parent's buffer. Sizes are bytes per sample (f32); a batch multiplies them all.

use super::ir::{FusedGraph, Place, TensorId};

const BYTES_PER_ELEMENT: u64 = 4;

#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlan {
    /// Each buffer's size in bytes per sample.
    pub buffers: Vec<u64>,
    /// The buffer of each tensor that owns storage and is used; `None` for views and
    /// slices (see [`FusedGraph::root`]).
    pub buffer_of: Vec<Option<usize>>,
    /// The sum of the buffers: the activation memory one sample needs.
    pub peak_bytes: u64,
    /// Every storage-owning tensor in a buffer of its own, no reuse.
    pub unshared_bytes: u64,
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
    MemoryPlan {
        peak_bytes: buffers.iter().fold(0u64, |sum, &b| sum.saturating_add(b)),
        buffers,
        buffer_of,
        unshared_bytes,
    }
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
        touch(kernel.output, k + 1, true);
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
