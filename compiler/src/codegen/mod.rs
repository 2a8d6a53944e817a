//! Code generation from the fused graph: Cranelift functions for the CPU, WGSL compute
//! shaders for the GPU.

pub mod cpu;
pub mod gpu;
