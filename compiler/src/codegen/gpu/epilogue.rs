//! The fused epilogue as a WGSL function `epilogue(n, c, p, v)`: the steps of a conv or
//! dense kernel applied in order to the value `v` of output channel `c`, position `p`
//! of sample `n`, reading the bias and batch-norm vectors from `params` and a residual
//! add's operand from its buffer.

use super::wgsl::{self, ShaderBuilder};
use super::{Param, Unsupported};
use crate::passes::Step;
use std::fmt::Write;

/// Declares `fn epilogue` in the shader; `channels` is the kernel's output channels,
/// `per_channel` the elements of each.
pub fn declare(
    builder: &mut ShaderBuilder,
    channels: u64,
    per_channel: u64,
) -> Result<(), Unsupported> {
    let steps = builder.ctx.kernel.epilogue.clone();
    let mut params = Vec::new();
    let mut lines = String::new();
    for step in &steps {
        match step {
            Step::Bias => {
                let _ = writeln!(
                    lines,
                    "    v = v + params[{}u + c];",
                    params.len() as u64 * channels
                );
                params.push(Param::Bias);
            }
            Step::ScaleShift { layer, eps } => {
                let scale = params.len() as u64 * channels;
                let _ = writeln!(
                    lines,
                    "    v = v * params[{scale}u + c] + params[{}u + c];",
                    scale + channels
                );
                params.push(Param::Scale {
                    layer: layer.clone(),
                    eps: *eps,
                });
                params.push(Param::Shift {
                    layer: layer.clone(),
                    eps: *eps,
                });
            }
            Step::Activation(activation) => {
                let _ = writeln!(lines, "    v = {};", wgsl::activation(activation, "v"));
            }
            Step::Add {
                input,
                self_scale,
                input_scale,
                ..
            } => {
                // `input_scale·input + self_scale·v`, with unit scales left out so it
                // rounds as the reference's `a + s·b` does.
                let operand = builder.tensor(*input, false)?;
                let read = operand.at(&format!("c * {per_channel}u + p"));
                let scaled = |scale: f64, term: &str| match scale == 1.0 {
                    true => term.to_string(),
                    false => format!("{} * {term}", wgsl::float(scale)),
                };
                let _ = writeln!(
                    lines,
                    "    v = {} + {};",
                    scaled(*input_scale, &read),
                    scaled(*self_scale, "v")
                );
            }
        }
    }
    if !params.is_empty() {
        builder.params(params);
    }
    let _ = write!(
        builder.decls,
        "{}\nfn epilogue(n: u32, c: u32, p: u32, v0: f32) -> f32 {{\n    var v = v0;\n{lines}    return v;\n}}\n",
        wgsl::HELPERS
    );
    Ok(())
}
