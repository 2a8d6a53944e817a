//! The JIT backend's run-time half: the precompiled register tiles that generated loop
//! nests call, and the packing they read.

pub mod gemm;
pub mod microkernel;
