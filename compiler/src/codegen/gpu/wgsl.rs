//! Writing one WGSL shader: its bindings (each plan buffer bound once, read-write if
//! anything writes it), the entry point that numbers workgroups and samples, and
//! tensor addressing with every offset and stride a literal.

use super::{Binding, Context, Param, Shader};
use crate::ops::Activation;
use crate::passes::TensorId;
use std::fmt::Write;

/// Threads per workgroup of the one-thread-per-element shaders.
pub const THREADS: u32 = 256;

pub struct ShaderBuilder<'c, 'a> {
    pub ctx: &'c Context<'a>,
    bindings: Vec<Binding>,
    /// Module-scope declarations after the bindings: workgroup arrays, functions.
    pub decls: String,
}

/// A tensor as the shader addresses it: `{var}[n * stride + offset + i]`.
pub struct TensorRef {
    var: String,
    base: String,
}

impl TensorRef {
    /// The element at `index` (a WGSL u32 expression) of the current sample.
    pub fn at(&self, index: &str) -> String {
        format!("{}[{} + {index}]", self.var, self.base)
    }
}

impl<'c, 'a> ShaderBuilder<'c, 'a> {
    pub fn new(ctx: &'c Context<'a>) -> Self {
        ShaderBuilder {
            ctx,
            bindings: Vec::new(),
            decls: String::new(),
        }
    }

    /// Binds the buffer holding `tensor` (once per buffer) and addresses the tensor in it.
    pub fn tensor(
        &mut self,
        tensor: TensorId,
        write: bool,
    ) -> Result<TensorRef, super::Unsupported> {
        let place = self.ctx.place(tensor)?;
        let existing = self
            .bindings
            .iter_mut()
            .enumerate()
            .find_map(|(i, b)| match b {
                Binding::Activations { buffer, write: w } if *buffer == place.buffer => {
                    Some((i, w))
                }
                _ => None,
            });
        let binding = match existing {
            Some((i, w)) => {
                *w |= write;
                i
            }
            None => {
                self.bindings.push(Binding::Activations {
                    buffer: place.buffer,
                    write,
                });
                self.bindings.len() - 1
            }
        };
        Ok(TensorRef {
            var: activations(binding),
            base: format!("n * {}u + {}u", place.stride, place.offset),
        })
    }

    /// A builder with the kernel's first input bound for reading and its output for
    /// writing: what almost every shader starts with.
    pub fn unary(ctx: &'c Context<'a>) -> Result<(Self, TensorRef, TensorRef), super::Unsupported> {
        let mut builder = ShaderBuilder::new(ctx);
        let x = builder.tensor(ctx.input(0)?, false)?;
        let y = builder.tensor(ctx.kernel.output, true)?;
        Ok((builder, x, y))
    }

    /// Binds rows of the kernel's weights as `w`.
    pub fn weights(&mut self, rows: std::ops::Range<u64>) -> &'static str {
        self.bindings.push(Binding::Weights { rows });
        "w"
    }

    /// Binds per-channel vectors as `params`; vector `k` starts at `k * channels`.
    pub fn params(&mut self, params: Vec<Param>) -> &'static str {
        self.bindings.push(Binding::Params(params));
        "params"
    }

    /// A one-thread-per-element shader over `total` elements, labelled with its kernel.
    pub fn finish_elements(self, total: u64, body: &str) -> Result<Shader, super::Unsupported> {
        let label = self.ctx.kernel.name.clone();
        self.finish(label, THREADS, element_workgroups(total), body)
    }

    /// The finished shader: `body` runs with `group` (this workgroup's number within
    /// the sample), `n` (the sample within the dispatch) and `lid` in scope.
    pub fn finish(
        self,
        label: String,
        threads: u32,
        workgroups: u64,
        body: &str,
    ) -> Result<Shader, super::Unsupported> {
        let max = u64::from(self.ctx.target.max_workgroups_per_dimension.max(1));
        let workgroups = u32::try_from(workgroups)
            .ok()
            .filter(|&w| u64::from(w) <= max * max)
            .ok_or_else(|| {
                self.ctx.unsupported(format!(
                    "{workgroups} workgroups per sample exceed the device's grid"
                ))
            })?;
        // Nothing of the kernel's identity (its name, its plan buffers' numbers) is in the
        // text, so that the kernels of repeated blocks give the same text and share one
        // pipeline (the runtime compiles each distinct text once: on lavapipe that cut
        // Inception-ResNet-v2's 238 shaders to 65 compilations).
        let mut wgsl = String::new();
        for (i, binding) in self.bindings.iter().enumerate() {
            let (access, name) = match binding {
                Binding::Activations { write, .. } => {
                    (if *write { "read_write" } else { "read" }, activations(i))
                }
                Binding::Weights { .. } => ("read", "w".to_string()),
                Binding::Params(_) => ("read", "params".to_string()),
            };
            let _ = writeln!(
                wgsl,
                "@group(0) @binding({i}) var<storage, {access}> {name}: array<f32>;"
            );
        }
        wgsl.push_str(&self.decls);
        let _ = write!(
            wgsl,
            "\n@compute @workgroup_size({threads})\n\
             fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{\n    \
             let group = wid.x + wid.y * {max}u;\n    let n = wid.z;\n{body}}}\n"
        );
        Ok(Shader {
            kernel: self.ctx.index,
            label,
            wgsl,
            bindings: self.bindings,
            workgroups,
        })
    }
}

/// The WGSL name of the activation buffer at binding `binding`.
fn activations(binding: usize) -> String {
    format!("act{binding}")
}

/// The body prologue of a one-thread-per-element shader over `total` elements: `i` is
/// the element; threads past the end return.
pub fn element_index(total: u64) -> String {
    format!("    let i = group * {THREADS}u + lid;\n    if (i >= {total}u) {{ return; }}\n")
}

pub fn element_workgroups(total: u64) -> u64 {
    total.div_ceil(u64::from(THREADS))
}

/// An f32 literal that WGSL reads back as the same value.
pub fn float(value: f64) -> String {
    let v = value as f32;
    if v.is_finite() {
        format!("{v:?}f")
    } else if v > 0.0 {
        "3.4028235e38f".into()
    } else {
        "-3.4028235e38f".into()
    }
}

/// `value` after `activation` (softmax is a kernel of its own, never an expression).
pub fn activation(activation: &Activation, value: &str) -> String {
    match activation {
        Activation::Relu => format!("max({value}, 0.0)"),
        Activation::Relu6 => format!("clamp({value}, 0.0, 6.0)"),
        Activation::LeakyRelu { slope } => {
            format!(
                "select({value} * {}, {value}, {value} >= 0.0)",
                float(*slope)
            )
        }
        // Through exp of a non-positive number, so large inputs give ±1, not NaN.
        Activation::Tanh => format!("tanh_stable({value})"),
        Activation::Sigmoid => format!("(1.0 / (1.0 + exp(-({value}))))"),
        Activation::Identity | Activation::Softmax => value.to_string(),
    }
}

/// Module-scope helpers `activation` expressions may call.
pub const HELPERS: &str = "
fn tanh_stable(v: f32) -> f32 {
    let e = exp(-2.0 * abs(v));
    let magnitude = (1.0 - e) / (1.0 + e);
    // v's sign bit, not sign(v), which is 0 at -0: tanh(-0) is -0.
    return bitcast<f32>(bitcast<u32>(magnitude) | (bitcast<u32>(v) & 0x80000000u));
}
";
