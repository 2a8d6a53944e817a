//! The ops of the language, one module per family. Each op declares, side by side, its
//! signature, how it is built from arguments, and its shape rule together with its
//! parameter and multiply-accumulate counts ([`OpRule::infer`]); the checker, the
//! summary and every backend use these and nothing else.

pub mod args;
mod conv;
mod dense;
mod elementwise;
mod input;
mod merge;
mod norm;
mod pool;
mod reshape;
pub mod weights;
pub mod window;

pub use args::{Args, Padding, Value};
pub use conv::Conv;
pub use dense::Dense;
pub use elementwise::{Activation, Dropout};
pub use input::Input;
pub use merge::{Add, Concat, Residual};
pub use norm::{BatchNorm, Lrn};
pub use pool::{AdaptivePool, GlobalPool, Pool, PoolKind};
pub use reshape::Flatten;
pub use weights::{Init, WeightSpec};

use crate::diagnostics::Code;
use std::fmt;

/// A tensor's shape per sample, channels first: `[C, H, W]` or `[features]`. The batch
/// size is chosen at run time and never part of a shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Shape(pub Vec<u64>);

impl Shape {
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// `[C, H, W]` if the shape is an image-like tensor.
    pub fn chw(&self) -> Option<[u64; 3]> {
        match self.0[..] {
            [c, h, w] => Some([c, h, w]),
            _ => None,
        }
    }

    pub fn elements(&self) -> Result<u64, ShapeError> {
        self.0.iter().try_fold(1u64, |acc, &d| checked_mul(acc, d))
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u64::to_string).collect();
        f.write_str(&parts.join("x"))
    }
}

/// What a shape rule computes for one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Inferred {
    pub shape: Shape,
    /// The tensors the layer owns; its parameter count derives from them.
    pub weights: Vec<WeightSpec>,
    /// Multiply-accumulates per sample: one multiply-add is one MAC. Only convolutions
    /// and dense layers count; pooling, normalisation and activations are 0.
    pub macs: u64,
    pub warnings: Vec<ShapeWarning>,
}

impl Inferred {
    pub fn shape_only(shape: Shape) -> Self {
        Inferred {
            shape,
            weights: Vec::new(),
            macs: 0,
            warnings: Vec::new(),
        }
    }
}

/// A shape rule's refusal, before it is placed in the source by the checker.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeError {
    pub code: Code,
    pub message: String,
    pub label: Option<String>,
    pub help: Option<String>,
    /// The argument to point at, when one is to blame (else the whole call).
    pub arg: Option<&'static str>,
    /// Notes on inputs, by position: "this branch gives 64x28x28".
    pub input_labels: Vec<(usize, String)>,
}

impl ShapeError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ShapeError {
            code,
            message: message.into(),
            label: None,
            help: None,
            arg: None,
            input_labels: Vec::new(),
        }
    }

    pub fn at_arg(mut self, arg: &'static str) -> Self {
        self.arg = Some(arg);
        self
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn input_label(mut self, input: usize, label: impl Into<String>) -> Self {
        self.input_labels.push((input, label.into()));
        self
    }

    pub fn overflow() -> Self {
        ShapeError::new(Code::SizeOverflow, "a size or count overflows 64 bits")
            .label("sizes overflow here")
            .help("the tensors or weights this layer implies are impossibly large; check the sizes before it")
    }

    pub fn wrong_rank(op: &str, needs: &str, found: &Shape) -> Self {
        ShapeError::new(
            Code::WrongRank,
            format!("`{op}` needs {needs}, found a tensor of shape {found}"),
        )
        .label(format!("input is {found}"))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShapeWarning {
    pub code: Code,
    pub message: String,
    pub arg: Option<&'static str>,
    pub label: String,
    pub help: String,
}

pub fn checked_mul(a: u64, b: u64) -> Result<u64, ShapeError> {
    a.checked_mul(b).ok_or_else(ShapeError::overflow)
}

pub fn checked_product(factors: &[u64]) -> Result<u64, ShapeError> {
    factors.iter().try_fold(1u64, |acc, &f| checked_mul(acc, f))
}

pub fn checked_add(a: u64, b: u64) -> Result<u64, ShapeError> {
    a.checked_add(b).ok_or_else(ShapeError::overflow)
}

/// An op's shape rule and counts, and how the summary names it.
pub trait OpRule {
    fn infer(&self, inputs: &[&Shape]) -> Result<Inferred, ShapeError>;

    /// A short description for the summary: `conv 64 3x3 p1`.
    fn describe(&self) -> String;
}

/// A layer's operation with its attributes resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Input(Input),
    Conv(Conv),
    Pool(Pool),
    GlobalPool(GlobalPool),
    AdaptivePool(AdaptivePool),
    Lrn(Lrn),
    BatchNorm(BatchNorm),
    Dropout(Dropout),
    Flatten(Flatten),
    Dense(Dense),
    Activation(Activation),
    Concat(Concat),
    Add(Add),
}

impl Op {
    pub fn rule(&self) -> &dyn OpRule {
        match self {
            Op::Input(op) => op,
            Op::Conv(op) => op,
            Op::Pool(op) => op,
            Op::GlobalPool(op) => op,
            Op::AdaptivePool(op) => op,
            Op::Lrn(op) => op,
            Op::BatchNorm(op) => op,
            Op::Dropout(op) => op,
            Op::Flatten(op) => op,
            Op::Dense(op) => op,
            Op::Activation(op) => op,
            Op::Concat(op) => op,
            Op::Add(op) => op,
        }
    }

    /// The op's name as written in `.cnn` files (and used for default layer names).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input(_) => "input",
            Op::Conv(_) => "conv",
            Op::Pool(p) => p.kind.name(),
            Op::GlobalPool(p) => p.kind.global_name(),
            Op::AdaptivePool(p) => p.kind.adaptive_name(),
            Op::Lrn(_) => "lrn",
            Op::BatchNorm(_) => "bn",
            Op::Dropout(_) => "dropout",
            Op::Flatten(_) => "flatten",
            Op::Dense(_) => "dense",
            Op::Activation(a) => a.name(),
            Op::Concat(_) => "concat",
            Op::Add(_) => "add",
        }
    }
}

/// How a call's arguments reach an op: bound to named parameters, or (for `concat` and
/// `add`) a list of tensor names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operands {
    Params,
    Tensors,
}

/// An op as the language knows it: its name, parameters in positional order, and how
/// to build it.
pub struct OpDef {
    pub name: &'static str,
    pub params: &'static [&'static str],
    pub operands: Operands,
    pub build: fn(&mut Args) -> Op,
}

/// Every op of the language; aliases are separate entries with the same builder.
pub const OPS: &[OpDef] = &[
    conv::DEF,
    pool::MAXPOOL,
    pool::AVGPOOL,
    pool::GLOBAL_AVGPOOL,
    pool::GLOBAL_MAXPOOL,
    pool::ADAPTIVE_AVGPOOL,
    pool::ADAPTIVE_MAXPOOL,
    norm::LRN,
    norm::BATCHNORM,
    norm::BATCHNORM_ALIAS,
    elementwise::DROPOUT,
    reshape::FLATTEN,
    dense::DEF,
    elementwise::RELU,
    elementwise::RELU6,
    elementwise::LEAKY_RELU,
    elementwise::TANH,
    elementwise::SIGMOID,
    elementwise::SOFTMAX,
    elementwise::IDENTITY,
    merge::CONCAT,
    merge::ADD,
];

pub fn find(name: &str) -> Option<&'static OpDef> {
    OPS.iter().find(|def| def.name == name)
}
