//! Code generation for the GPU: each kernel of the fused graph becomes one or more WGSL
//! compute shaders with every shape, stride, padding, offset and epilogue step a
//! constant. The runtime (the `cnnc-gpu` crate) compiles them with wgpu and runs them;
//! nothing here touches a device.
//!
//! The buffers are the memory plan's: one per storage root, each holding a chunk of the
//! batch's samples back to back (sample `n` of a tensor is at `n * stride + offset`,
//! `stride` the buffer's floats per sample), so a concat branch writes its channel slice
//! and flatten reads its base in place. The batch is the only size chosen at run time:
//! a dispatch covers `[x, y, samples]` workgroups, and a shader reads its sample from
//! `workgroup_id.z`.
//!
//! Storage bindings are capped (`GpuTarget::max_binding_bytes`: 128 MiB by default,
//! smaller than VGG-16's first dense layer), so a conv or dense kernel whose weights are
//! larger is split over its output channels into several shaders, each binding its own
//! rows. The runtime splits the batch so that each dispatch's buffers fit too.

mod conv;
mod elementwise;
mod epilogue;
mod pool;
mod wgsl;

use crate::ops::Op;
use crate::passes::{FusedGraph, Kernel, MemoryPlan, TensorId};
use std::fmt;
use std::ops::Range;

/// What the shaders are generated for: the device's limits that shape them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuTarget {
    /// The largest storage-buffer binding, in bytes.
    pub max_binding_bytes: u64,
    /// The most workgroups a dispatch may have along x (and y).
    pub max_workgroups_per_dimension: u32,
}

impl Default for GpuTarget {
    /// WebGPU's default limits, which every adapter meets.
    fn default() -> Self {
        GpuTarget {
            max_binding_bytes: 128 << 20,
            max_workgroups_per_dimension: 65535,
        }
    }
}

/// What the runtime binds at `@binding(i)` of a shader.
#[derive(Debug, Clone, PartialEq)]
pub enum Binding {
    /// Buffer `buffer` of the memory plan, the samples of the current dispatch.
    Activations { buffer: usize, write: bool },
    /// Output rows `rows` of the kernel's weights as `[out, in·kh·kw]` row-major floats,
    /// batch norm folded in.
    Weights { rows: Range<u64> },
    /// Per-channel vectors of the kernel's output channels, one after the other.
    Params(Vec<Param>),
}

/// One per-channel vector of a `Params` binding.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// The bias (a folded batch norm's shift included).
    Bias,
    /// A batch norm's `γ/√(σ²+ε)`.
    Scale { layer: String, eps: f64 },
    /// A batch norm's `β − μ·γ/√(σ²+ε)`.
    Shift { layer: String, eps: f64 },
}

/// One generated compute shader: part of kernel `kernel` (most kernels have one).
#[derive(Debug, Clone, PartialEq)]
pub struct Shader {
    pub kernel: usize,
    /// `conv1`, or `fc6 [rows 0..1024]` for one part of a split kernel.
    pub label: String,
    pub wgsl: String,
    pub bindings: Vec<Binding>,
    /// Workgroups per sample; the runtime spreads them over x and y with [`Shader::grid`].
    pub workgroups: u32,
}

impl Shader {
    /// The dispatch's x and y for one sample: the shader numbers its workgroup
    /// `x + y * max_workgroups_per_dimension`.
    pub fn grid(&self, target: &GpuTarget) -> [u32; 2] {
        let max = target.max_workgroups_per_dimension.max(1);
        [self.workgroups.min(max), self.workgroups.div_ceil(max)]
    }
}

/// Why a network cannot be lowered for a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Unsupported {
    pub kernel: String,
    pub reason: String,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` cannot run on the GPU: {}",
            self.kernel, self.reason
        )
    }
}

impl std::error::Error for Unsupported {}

/// The fused graph the GPU runs: every pass, but no Winograd (its shaders compute each
/// conv directly or as an implicit GEMM), so that what `--emit fused` and the profile
/// show about a kernel is what the GPU does.
pub fn fuse(net: &crate::check::CheckedGraph) -> crate::passes::FusedGraph {
    crate::passes::fuse_with(net, crate::passes::WinogradPolicy::Off)
}

/// Every kernel of the fused graph, as shaders in execution order.
pub fn compile(
    fused: &FusedGraph,
    plan: &MemoryPlan,
    target: &GpuTarget,
) -> Result<Vec<Shader>, Unsupported> {
    let mut shaders = Vec::new();
    for (index, kernel) in fused.kernels.iter().enumerate() {
        let context = Context {
            fused,
            plan,
            target,
            index,
            kernel,
        };
        shaders.extend(context.lower()?);
    }
    Ok(shaders)
}

/// A buffer's floats per sample on the GPU: the memory plan's size.
pub fn buffer_stride(plan: &MemoryPlan, buffer: usize) -> u64 {
    plan.buffers.get(buffer).map_or(0, |bytes| bytes / 4)
}

/// One kernel being lowered, with what every generator needs to see.
pub(crate) struct Context<'a> {
    pub fused: &'a FusedGraph,
    pub plan: &'a MemoryPlan,
    pub target: &'a GpuTarget,
    pub index: usize,
    pub kernel: &'a Kernel,
}

/// Where a tensor lives: sample `n`, element `i` is `{var}[n * stride + offset + i]`.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    pub buffer: usize,
    pub stride: u64,
    pub offset: u64,
}

impl Context<'_> {
    fn lower(&self) -> Result<Vec<Shader>, Unsupported> {
        match &self.kernel.op {
            Op::Conv(conv) => conv::conv(self, conv),
            Op::Dense(_) => conv::dense(self),
            Op::Pool(pool) => pool::window(self, pool).map(|s| vec![s]),
            Op::GlobalPool(pool) => pool::global(self, pool.kind).map(|s| vec![s]),
            Op::AdaptivePool(pool) => pool::adaptive(self, pool).map(|s| vec![s]),
            Op::Lrn(lrn) => elementwise::lrn(self, lrn).map(|s| vec![s]),
            Op::Activation(activation) => {
                elementwise::activation(self, activation).map(|s| vec![s])
            }
            Op::BatchNorm(bn) => elementwise::batch_norm(self, bn.eps).map(|s| vec![s]),
            Op::Add(add) => elementwise::add(self, add.scale).map(|s| vec![s]),
            Op::Concat(_) => elementwise::concat(self),
            other => Err(self.unsupported(format!(
                "no GPU kernel for `{}` (the passes remove it before code generation)",
                other.rule().describe()
            ))),
        }
    }

    pub fn unsupported(&self, reason: impl Into<String>) -> Unsupported {
        Unsupported {
            kernel: self.kernel.name.clone(),
            reason: reason.into(),
        }
    }

    pub fn shape(&self, tensor: TensorId) -> &[u64] {
        &self.fused.tensor(tensor).shape.0
    }

    /// The tensor's elements per sample, and per channel (1 for a vector).
    pub fn sizes(&self, tensor: TensorId) -> (u64, u64) {
        let shape = self.shape(tensor);
        let elements = shape.iter().product::<u64>();
        (elements, shape.get(1..).map_or(1, |s| s.iter().product()))
    }

    pub fn place(&self, tensor: TensorId) -> Result<Place, Unsupported> {
        let (root, channel) = self.fused.root(tensor);
        let buffer = self.plan.buffer_of[root.0].ok_or_else(|| {
            self.unsupported(format!(
                "tensor %{} has no buffer in the memory plan",
                tensor.0
            ))
        })?;
        let (_, per_channel) = self.sizes(root);
        Ok(Place {
            buffer,
            stride: buffer_stride(self.plan, buffer),
            offset: channel * per_channel,
        })
    }

    pub fn input(&self, i: usize) -> Result<TensorId, Unsupported> {
        self.kernel
            .inputs
            .get(i)
            .copied()
            .ok_or_else(|| self.unsupported(format!("it has no input {i}")))
    }
}

#[cfg(test)]
mod tests;
