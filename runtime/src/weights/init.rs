//! Seeded initialisation, as PyTorch initialises each op's tensors by default.

use crate::Tensor;
use cnnc_compiler::ops::{Init, WeightSpec};
use rand::{RngExt as _, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A stable 64-bit hash (FNV-1a) of a tensor's name: seeds must not depend on the
/// standard library's randomised hasher.
pub(crate) fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub(crate) fn tensor(spec: &WeightSpec, seed: u64, name: &str) -> Tensor {
    let shape: Vec<usize> = spec.shape.iter().map(|&d| d as usize).collect();
    match spec.init {
        Init::Constant(value) => Tensor::from_elem(shape, value as f32),
        Init::Uniform { bound } => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ name_hash(name));
            let bound = bound as f32;
            Tensor::from_shape_simple_fn(shape, || rng.random_range(-bound..=bound))
        }
    }
}
