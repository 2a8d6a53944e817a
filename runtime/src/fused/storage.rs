//! The memory plan's buffers for a batch, and each tensor's place in them: a tensor is
//! read out of (and written into) its root's buffer, at its channel offset for a
//! concat slice. A sample's part of a tensor is contiguous, so each sample is one copy.

use crate::Tensor;
use crate::error::{Result, RuntimeError};
use crate::jit::guarded::{Floats, Guard};
use cnnc_compiler::passes::{FusedGraph, MemoryPlan, TensorId};

pub struct Storage<'a> {
    fused: &'a FusedGraph,
    plan: &'a MemoryPlan,
    batch: usize,
    buffers: Vec<Floats>,
}

/// Where one tensor's values sit: sample `n` is
/// `buffers[buffer][n * stride + start..][..len]`.
struct Location {
    buffer: usize,
    stride: usize,
    start: usize,
    len: usize,
}

impl<'a> Storage<'a> {
    /// Reuses `buffers` (from `into_buffers`) if they were made for this plan and
    /// `batch`, else `None`. What is in them is overwritten: every kernel writes its
    /// whole output.
    pub fn reuse(
        fused: &'a FusedGraph,
        plan: &'a MemoryPlan,
        batch: usize,
        buffers: Vec<Floats>,
    ) -> Option<Self> {
        let fits = buffers.len() == plan.buffers.len()
            && buffers
                .iter()
                .zip(&plan.buffers)
                .all(|(buffer, &bytes)| Some(buffer.len()) == elements_for(bytes, batch));
        fits.then_some(Storage {
            fused,
            plan,
            batch,
            buffers,
        })
    }

    /// The buffers, for `reuse` by a later run of the same batch size.
    pub fn into_buffers(self) -> Vec<Floats> {
        self.buffers
    }

    /// The plan's buffers for `batch` samples, between guard pages if `guard` is given.
    pub fn new(
        fused: &'a FusedGraph,
        plan: &'a MemoryPlan,
        batch: usize,
        guard: Option<Guard>,
    ) -> Result<Self> {
        let buffers = plan
            .buffers
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
        })
    }

    fn location(&self, id: TensorId) -> Result<Location> {
        let (root, channel) = self.fused.root(id);
        let buffer = self.plan.buffer_of[root.0].ok_or_else(|| {
            RuntimeError::Invalid(format!("tensor %{} has no buffer in the plan", id.0))
        })?;
        let root_shape = &self.fused.tensor(root).shape.0;
        let stride = elements(root_shape);
        let per_channel = stride / root_shape.first().copied().unwrap_or(1).max(1) as usize;
        Ok(Location {
            buffer,
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
        if at.start + at.len > buffer.len() / self.batch.max(1) {
            return Err(RuntimeError::Invalid(format!(
                "tensor %{} does not fit its buffer",
                id.0
            )));
        }
        Ok(buffer[at.start..].as_mut_ptr())
    }

    /// A copy of a tensor, `[batch, ...shape]`.
    pub fn read(&self, id: TensorId) -> Result<Tensor> {
        let at = self.location(id)?;
        let buffer = &self.buffers[at.buffer];
        let mut values = Vec::with_capacity(at.len * self.batch);
        for n in 0..self.batch {
            let start = n * at.stride + at.start;
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
            let start = n * at.stride + at.start;
            buffer[start..start + at.len].copy_from_slice(sample);
        }
        Ok(())
    }
}

/// Floats of a buffer of `bytes` per sample, for `batch` samples.
fn elements_for(bytes: u64, batch: usize) -> Option<usize> {
    usize::try_from(bytes / 4).ok()?.checked_mul(batch)
}

fn elements(shape: &[u64]) -> usize {
    shape.iter().map(|&d| d as usize).product()
}
