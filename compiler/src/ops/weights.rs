//! The tensors an op owns, declared by the op beside its shape rule: names, shapes,
//! whether they are learned, and how PyTorch initialises them. Parameter counts, weight
//! files and seeded initialisation all derive from these.

use super::{ShapeError, checked_add, checked_product};

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WeightSpec {
    /// Appended to the layer's name: `layer1.0.conv1.weight`.
    pub suffix: &'static str,
    pub shape: Vec<u64>,
    /// Learned parameters count in the summary; state (batch norm's running
    /// statistics) does not, as in PyTorch's `parameters()`.
    pub learnable: bool,
    pub init: Init,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Init {
    /// Uniform in `[-bound, bound]`.
    Uniform {
        bound: f64,
    },
    Constant(f64),
}

impl Init {
    /// PyTorch's default for conv and linear layers: `kaiming_uniform_(a=√5)` on the
    /// weight and `U(±1/√fan_in)` on the bias both come to a bound of `1/√fan_in`.
    pub fn fan_in(fan_in: u64) -> Init {
        Init::Uniform {
            bound: 1.0 / (fan_in.max(1) as f64).sqrt(),
        }
    }
}

impl WeightSpec {
    pub fn learned(suffix: &'static str, shape: Vec<u64>, init: Init) -> Self {
        WeightSpec {
            suffix,
            shape,
            learnable: true,
            init,
        }
    }

    pub fn state(suffix: &'static str, shape: Vec<u64>, init: Init) -> Self {
        WeightSpec {
            suffix,
            shape,
            learnable: false,
            init,
        }
    }

    pub fn elements(&self) -> Result<u64, ShapeError> {
        checked_product(&self.shape)
    }
}

/// The learnable parameters among `weights`.
pub fn parameter_count(weights: &[WeightSpec]) -> Result<u64, ShapeError> {
    weights
        .iter()
        .filter(|w| w.learnable)
        .try_fold(0u64, |sum, w| checked_add(sum, w.elements()?))
}
