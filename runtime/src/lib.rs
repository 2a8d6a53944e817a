//! The `cnnc` runtime: tensors, weights, inputs and outputs, and the executors that run
//! a checked graph. The compiler emits; the runtime runs: nothing here parses text.
//!
//! Tensors are f32 and batch-first at every interface: `[N, C, H, W]` or `[N, F]`.

pub mod error;
pub mod fused;
pub mod input;
pub mod jit;
pub mod memory;
pub mod output;
pub mod reference;
pub mod weights;

pub use error::RuntimeError;

/// A batch of activations, `[N, C, H, W]` or `[N, F]`.
pub type Tensor = ndarray::ArrayD<f32>;

/// The first network of `source`, checked, for the unit tests.
#[cfg(test)]
pub(crate) fn checked_network(source: &str) -> cnnc_compiler::check::CheckedGraph {
    let mut compilation = cnnc_compiler::compile(source);
    assert!(!compilation.has_errors(), "{:?}", compilation.diagnostics);
    compilation.networks.remove(0)
}
