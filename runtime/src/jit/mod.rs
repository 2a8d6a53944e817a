//! The JIT backend's run-time half: the generated kernels defined in a Cranelift JIT
//! module and run over the memory plan, the precompiled register tiles they call, and
//! the packing they read.

pub mod activation;
pub mod gemm;
pub mod gemv;
pub mod guarded;
pub mod microkernel;
mod program;
mod team;
mod winograd;

pub use program::{
    MAX_KERNELS, Options, Phases, Program, Runs, TileChoice, host_target, machine_threads,
};

/// The most threads a program's kernels are split over.
pub const MAX_THREADS: usize = team::Team::MAX_THREADS;
