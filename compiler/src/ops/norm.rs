//! Normalisation: batch norm (inference form) and local response normalisation.

use super::{Inferred, Init, Op, OpDef, OpRule, Operands, Shape, ShapeError, WeightSpec};

#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm {
    pub eps: f64,
}

pub const BATCHNORM: OpDef = OpDef {
    name: "bn",
    params: &["eps"],
    operands: Operands::Params,
    build: |args| {
        Op::BatchNorm(BatchNorm {
            eps: args.float_in("eps", 1e-5, 0.0, 1.0, false),
        })
    },
};

pub const BATCHNORM_ALIAS: OpDef = OpDef {
    name: "batchnorm",
    ..BATCHNORM
};

impl OpRule for BatchNorm {
    fn infer(&self, inputs: &[&Shape]) -> Result<Inferred, ShapeError> {
        let c = vec![inputs[0].0[0]];
        Ok(Inferred {
            // A scale and a shift per channel are learned; the running mean and variance
            // are state.
            weights: vec![
                WeightSpec::learned("weight", c.clone(), Init::Constant(1.0)),
                WeightSpec::learned("bias", c.clone(), Init::Constant(0.0)),
                WeightSpec::state("running_mean", c.clone(), Init::Constant(0.0)),
                WeightSpec::state("running_var", c, Init::Constant(1.0)),
            ],
            ..Inferred::shape_only(inputs[0].clone())
        })
    }

    fn describe(&self) -> String {
        "bn".to_string()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Lrn {
    pub size: u64,
    pub alpha: f64,
    pub beta: f64,
    pub k: f64,
    /// Divide `alpha` by `size` (PyTorch, ONNX) or not (the AlexNet paper).
    pub alpha_scaled: bool,
}

pub const LRN: OpDef = OpDef {
    name: "lrn",
    params: &["size", "alpha", "beta", "k", "alpha_scaled"],
    operands: Operands::Params,
    build: |args| {
        Op::Lrn(Lrn {
            size: args.count_or("size", 5),
            alpha: args.float_in("alpha", 1e-4, 0.0, f64::MAX, false),
            beta: args.float_in("beta", 0.75, 0.0, f64::MAX, false),
            k: args.float_in("k", 1.0, 0.0, f64::MAX, false),
            alpha_scaled: args.bool("alpha_scaled", true),
        })
    },
};

impl OpRule for Lrn {
    fn infer(&self, inputs: &[&Shape]) -> Result<Inferred, ShapeError> {
        if inputs[0].chw().is_none() {
            return Err(ShapeError::wrong_rank("lrn", "a CxHxW input", inputs[0]));
        }
        Ok(Inferred::shape_only(inputs[0].clone()))
    }

    fn describe(&self) -> String {
        format!("lrn {}", self.size)
    }
}
