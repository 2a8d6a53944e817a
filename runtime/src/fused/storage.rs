//! The memory plan's storage for a batch, and each tensor's place in it: a tensor is
//! read out of (and written into) its root's place, at its channel offset for a concat
//! slice. The place is the root's offset in the plan's arena (one allocation, offsets
//! times the batch), or, in a guarded run, the root's buffer (each between guard
//! pages, so that an overrun faults rather than lands in a neighbour). A sample's part
//! of a tensor is contiguous, so each sample is one copy.

use crate::Tensor;
use crate::error::{Result, RuntimeError};
use crate::jit::guarded::{Floats, Guard};
use cnnc_compiler::passes::{FusedGraph, MemoryPlan, TensorId};

pub struct Storage<'a> {
    fused: &'a FusedGraph,
    plan: &'a MemoryPlan,
    batch: usize,
    /// The arena alone, or the plan's buffers (guarded).
    buffers: Vec<Floats>,
    guarded: bool,
}

/// Where one tensor's values sit: sample `n` is
/// `buffers[buffer][base + n * stride + start..][..len]`.
struct Location {
    buffer: usize,
    base: usize,
    stride: usize,
    start: usize,
    len: usize,
}

impl<'a> Storage<'a> {
    /// Reuses `buffers` (from `into_buffers`) if they were made for this plan, `batch`
    /// and guarding, else `None`. What is in them is overwritten: every kernel writes
    /// its whole output.
    pub fn reuse(
        fused: &'a FusedGraph,
        plan: &'a MemoryPlan,
        batch: usize,
        guard: Option<Guard>,
        buffers: Vec<Floats>,
    ) -> Option<Self> {
        let sizes = sizes(plan, guard.is_some());
        let fits = buffers.len() == sizes.len()
            && buffers
                .iter()
                .zip(sizes)
                .all(|(buffer, &bytes)| Some(buffer.len()) == elements_for(bytes, batch));
        fits.then_some(Storage {
            fused,
            plan,
            batch,
            buffers,
            guarded: guard.is_some(),
        })
    }

    /// The buffers, for `reuse` by a later run of the same batch size.
    pub fn into_buffers(self) -> Vec<Floats> {
        self.buffers
    }

    /// The plan's arena for `batch` samples, or with `guard`, its buffers between
    /// guard pages.
    pub fn new(
        fused: &'a FusedGraph,
        plan: &'a MemoryPlan,
        batch: usize,
        guard: Option<Guard>,
    ) -> Result<Self> {
        let buffers = sizes(plan, guard.is_some())
            .iter()
            .map(|&bytes| {
                let elements = elements_for(bytes, batch)
                    .ok_or_else(|| RuntimeError::Invalid("activations too large".into()))?;
                Floats::zeroed(elements, guard)
            })
            .collect::<Result<_>>()?;
        Ok(Storage {
            fused,
            plan,
            batch,
            buffers,
            guarded: guard.is_some(),
        })
    }

    fn location(&self, id: TensorId) -> Result<Location> {
        let (root, channel) = self.fused.root(id);
        let missing =
            || RuntimeError::Invalid(format!("tensor %{} has no place in the plan", id.0));
        let (buffer, base) = if self.guarded {
            (self.plan.buffer_of[root.0].ok_or_else(missing)?, 0)
        } else {
            let offset = self.plan.offsets[root.0].ok_or_else(missing)?;
            (0, (offset / 4) as usize * self.batch)
        };
        let root_shape = &self.fused.tensor(root).shape.0;
        let stride = elements(root_shape);
        let per_channel = stride / root_shape.first().copied().unwrap_or(1).max(1) as usize;
        Ok(Location {
            buffer,
            base,
            stride,
            start: channel as usize * per_channel,
            len: elements(&self.fused.tensor(id).shape.0),
        })
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Where sample 0 of tensor `id` starts (its channel offset applied): generated
    /// code reads and writes there, at the sample stride the compiler computed from the
    /// same plan.
    pub fn pointer(&mut self, id: TensorId) -> Result<*mut f32> {
        let at = self.location(id)?;
        let buffer = &mut self.buffers[at.buffer];
        let end = at.base + at.stride * self.batch.saturating_sub(1) + at.start + at.len;
        if at.start + at.len > at.stride || end > buffer.len() {
            return Err(RuntimeError::Invalid(format!(
                "tensor %{} does not fit its place",
                id.0
            )));
        }
        Ok(buffer[at.base + at.start..].as_mut_ptr())
    }

    /// A copy of a tensor, `[batch, ...shape]`.
    pub fn read(&self, id: TensorId) -> Result<Tensor> {
        let at = self.location(id)?;
        let buffer = &self.buffers[at.buffer];
        let mut values = Vec::with_capacity(at.len * self.batch);
        for n in 0..self.batch {
            let start = at.base + n * at.stride + at.start;
            values.extend_from_slice(&buffer[start..start + at.len]);
        }
        let dims = &self.fused.tensor(id).shape.0;
        let mut shape = Vec::with_capacity(1 + dims.len());
        shape.push(self.batch);
        shape.extend(dims.iter().map(|&d| d as usize));
        Tensor::from_shape_vec(shape, values)
            .map_err(|e| RuntimeError::Invalid(format!("tensor %{}: {e}", id.0)))
    }

    /// Stores `value` (`[batch, ...shape]`) as tensor `id`.
    pub fn write(&mut self, id: TensorId, value: &Tensor) -> Result<()> {
        let at = self.location(id)?;
        let value = value.as_standard_layout();
        let values = value.as_slice().unwrap_or_default();
        if values.len() != at.len * self.batch {
            return Err(RuntimeError::Invalid(format!(
                "tensor %{} has {} values, its place {}",
                id.0,
                values.len(),
                at.len * self.batch
            )));
        }
        let buffer = &mut self.buffers[at.buffer];
        for (n, sample) in values.chunks_exact(at.len.max(1)).enumerate() {
            let start = at.base + n * at.stride + at.start;
            buffer[start..start + at.len].copy_from_slice(sample);
        }
        Ok(())
    }
}

/// Bytes per sample of each allocation: the arena, or the buffers when guarded.
fn sizes(plan: &MemoryPlan, guarded: bool) -> &[u64] {
    match guarded {
        true => &plan.buffers,
        false => std::slice::from_ref(&plan.arena_bytes),
    }
}

/// Floats of a buffer of `bytes` per sample, for `batch` samples.
fn elements_for(bytes: u64, batch: usize) -> Option<usize> {
    usize::try_from(bytes / 4).ok()?.checked_mul(batch)
}

fn elements(shape: &[u64]) -> usize {
    shape.iter().map(|&d| d as usize).product()
}
