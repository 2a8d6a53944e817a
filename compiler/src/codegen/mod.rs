//! Code generation from the fused graph: Cranelift functions for the CPU.

pub mod cpu;
