//! Joins of several tensors: concatenation along the channels, and addition.

use super::{Inferred, Op, OpDef, OpRule, Operands, Shape, ShapeError, checked_add};
use crate::diagnostics::Code;

#[derive(Debug, Clone, PartialEq)]
pub struct Concat;

pub const CONCAT: OpDef = OpDef {
    name: "concat",
    params: &[],
    operands: Operands::Tensors,
    build: |_| Op::Concat(Concat),
};

impl OpRule for Concat {
    fn infer(&self, inputs: &[&Shape]) -> Result<Inferred, ShapeError> {
        let first = inputs[0];
        let mut channels = 0u64;
        for (i, shape) in inputs.iter().enumerate() {
            if shape.rank() != first.rank() || shape.0[1..] != first.0[1..] {
                return Err(mismatch(inputs, i));
            }
            channels = checked_add(channels, shape.0[0])?;
        }
        let mut shape = first.clone();
        shape.0[0] = channels;
        Ok(Inferred::shape_only(shape))
    }

    fn describe(&self) -> String {
        "concat".to_string()
    }
}

fn mismatch(inputs: &[&Shape], culprit: usize) -> ShapeError {
    if inputs[culprit].rank() != inputs[0].rank() {
        let mut error = ShapeError::new(
            Code::ConcatMismatch,
            format!("cannot concatenate a {} tensor with a {} one", inputs[0], inputs[culprit]),
        )
        .label("joined here")
        .help("concatenate images with images (same height and width) or vectors with vectors; `flatten` the images first to join them with vectors");
        for (i, shape) in inputs.iter().enumerate() {
            error = error.input_label(i, format!("gives {shape}"));
        }
        return error;
    }
    let spatial = |s: &Shape| match s.chw() {
        Some([_, h, w]) => format!("{h}x{w}"),
        None => format!("a vector of {}", s.0[0]),
    };
    let mut error = ShapeError::new(
        Code::ConcatMismatch,
        format!(
            "cannot concatenate {} with {}: heights and widths must agree",
            inputs[0], inputs[culprit]
        ),
    )
    .label("joined here")
    .help(format!(
        "every input must be {} in height and width; check the strides and padding of the input that differs",
        spatial(inputs[0])
    ));
    for (i, shape) in inputs.iter().enumerate() {
        error = error.input_label(i, format!("gives {shape}"));
    }
    error
}

#[derive(Debug, Clone, PartialEq)]
pub struct Add {
    /// The result is `inputs[0] + scale * (inputs[1] + ...)`: in a residual, the
    /// shortcut plus the scaled residual path.
    pub scale: f64,
    pub residual: Option<Residual>,
}

/// How an `add` came from a `residual`, for its diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Residual {
    pub identity_shortcut: bool,
}

pub const ADD: OpDef = OpDef {
    name: "add",
    params: &[],
    operands: Operands::Tensors,
    build: |_| {
        Op::Add(Add {
            scale: 1.0,
            residual: None,
        })
    },
};

impl OpRule for Add {
    fn infer(&self, inputs: &[&Shape]) -> Result<Inferred, ShapeError> {
        if let Some(i) = inputs.iter().position(|s| s != &inputs[0]) {
            return Err(self.mismatch(inputs, i));
        }
        Ok(Inferred::shape_only(inputs[0].clone()))
    }

    fn describe(&self) -> String {
        if self.scale == 1.0 {
            "add".to_string()
        } else {
            format!("add ×{}", self.scale)
        }
    }
}

impl Add {
    fn mismatch(&self, inputs: &[&Shape], culprit: usize) -> ShapeError {
        let (shortcut, main) = (inputs[0], inputs[culprit]);
        let Some(residual) = self.residual else {
            let mut error = ShapeError::new(
                Code::ResidualMismatch,
                format!("cannot add tensors of shapes {shortcut} and {main}"),
            )
            .label("added here")
            .help("every operand of `add` must have the same shape");
            for (i, shape) in inputs.iter().enumerate() {
                error = error.input_label(i, format!("gives {shape}"));
            }
            return error;
        };
        let message = format!(
            "the residual path gives {main} but the {} gives {shortcut}",
            if residual.identity_shortcut {
                "identity shortcut"
            } else {
                "shortcut"
            }
        );
        let help = if residual.identity_shortcut {
            format!(
                "project the input to the residual path's shape: `shortcut {{ {} }}`",
                projection(shortcut, main)
            )
        } else {
            format!(
                "make the shortcut produce {main}: check its last convolution's channels and stride"
            )
        };
        ShapeError::new(Code::ResidualMismatch, message)
            .label("shapes differ at this addition")
            .help(help)
            .input_label(0, format!("shortcut gives {shortcut}"))
            .input_label(culprit, format!("residual path gives {main}"))
    }
}

/// The 1x1 convolution that maps `from` to `to`, when strides can do it.
fn projection(from: &Shape, to: &Shape) -> String {
    match (from.chw(), to.chw()) {
        (Some([_, h, w]), Some([c, oh, ow])) => {
            let stride_h = h.div_ceil(oh.max(1));
            let stride_w = w.div_ceil(ow.max(1));
            let stride = if stride_h == stride_w {
                stride_h.to_string()
            } else {
                format!("{stride_h}x{stride_w}")
            };
            if stride == "1" {
                format!("conv({c}, 1x1)")
            } else {
                format!("conv({c}, 1x1, stride={stride})")
            }
        }
        _ => format!("dense({})", to.0[0]),
    }
}
