//! Element-wise ops: activations and dropout. Shape in, same shape out.

use super::{Inferred, Op, OpDef, OpRule, Operands, Shape, ShapeError};

#[derive(Debug, Clone, PartialEq)]
pub enum Activation {
    Relu,
    Relu6,
    LeakyRelu {
        slope: f64,
    },
    Tanh,
    Sigmoid,
    /// Over the channels (the first axis of a per-sample shape).
    Softmax,
    Identity,
}

impl Activation {
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Relu6 => "relu6",
            Activation::LeakyRelu { .. } => "leakyrelu",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
            Activation::Softmax => "softmax",
            Activation::Identity => "identity",
        }
    }
}

const fn plain(name: &'static str, build: fn(&mut super::Args) -> Op) -> OpDef {
    OpDef {
        name,
        params: &[],
        operands: Operands::Params,
        build,
    }
}

pub const RELU: OpDef = plain("relu", |_| Op::Activation(Activation::Relu));
pub const RELU6: OpDef = plain("relu6", |_| Op::Activation(Activation::Relu6));
pub const TANH: OpDef = plain("tanh", |_| Op::Activation(Activation::Tanh));
pub const SIGMOID: OpDef = plain("sigmoid", |_| Op::Activation(Activation::Sigmoid));
pub const SOFTMAX: OpDef = plain("softmax", |_| Op::Activation(Activation::Softmax));
pub const IDENTITY: OpDef = plain("identity", |_| Op::Activation(Activation::Identity));
pub const LEAKY_RELU: OpDef = OpDef {
    name: "leakyrelu",
    params: &["slope"],
    operands: Operands::Params,
    build: |args| {
        Op::Activation(Activation::LeakyRelu {
            slope: args.float("slope", 0.01),
        })
    },
};

impl OpRule for Activation {
    fn infer(&self, inputs: &[&Shape]) -> Result<Inferred, ShapeError> {
        Ok(Inferred::shape_only(inputs[0].clone()))
    }

    fn describe(&self) -> String {
        match self {
            Activation::LeakyRelu { slope } => format!("leakyrelu {slope}"),
            other => other.name().to_string(),
        }
    }
}

/// Dropout: trains with it, infers without it.
#[derive(Debug, Clone, PartialEq)]
pub struct Dropout {
    pub p: f64,
}

pub const DROPOUT: OpDef = OpDef {
    name: "dropout",
    params: &["p"],
    operands: Operands::Params,
    build: |args| {
        Op::Dropout(Dropout {
            p: args.float_in("p", 0.5, 0.0, 1.0, true),
        })
    },
};

impl OpRule for Dropout {
    fn infer(&self, inputs: &[&Shape]) -> Result<Inferred, ShapeError> {
        Ok(Inferred::shape_only(inputs[0].clone()))
    }

    fn describe(&self) -> String {
        format!("dropout {}", self.p)
    }
}
