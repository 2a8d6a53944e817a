//! cnnc's GPU executor: the WGSL shaders the compiler generates for each kernel of the
//! fused graph (`cnnc_compiler::codegen::gpu`), compiled and run through wgpu on a
//! Vulkan or OpenGL adapter (Mesa's lavapipe and llvmpipe where there is no GPU).
//!
//! It is a crate of its own, beside the runtime, so that wgpu and its hundred
//! dependencies are built and linked only where the GPU is used (the command line and
//! these tests), not into every runtime test.

mod device;
mod error;
mod program;

pub use device::{AdapterReport, Gpu, adapters};
pub use error::GpuError;
pub use program::{GpuProgram, GpuRun};
