//! The kernels that are element-wise over their output: a lone activation or batch norm
//! (scale-shift), an add the passes could not fuse, and a copying concat. Each is the
//! epilogue's row code (`epilogue::steps_over_row`, f32x4 with a scalar tail) run from
//! the input's rows into the output's, channel by channel: an activation is its step,
//! a batch norm its `ScaleShift` step, an add of `x0, x1, ...` the residual `Add` steps
//! of `x1, ...` over `x0`, and a concat no step at all from each input into its channels.
//! Threads split the channels.

use super::conv::offset;
use super::epilogue::{self, Row};
use super::loops::counted;
use super::{Arg, CpuTarget, KernelCode, at_sample, sample_stride, weightless_kernel};
use crate::ops::{Activation, Op};
use crate::passes::{FusedGraph, Kernel, Step, TensorId};
use cranelift_codegen::ir::{InstBuilder, Value, types};

/// A run of output channels read from one input: `count` channels from `first` on.
struct Source {
    arg: Arg,
    tensor: TensorId,
    first: u64,
    count: u64,
}

pub fn generate(fused: &FusedGraph, index: usize, target: &CpuTarget) -> Option<KernelCode> {
    let kernel = &fused.kernels[index];
    let steps = steps(kernel)?;
    let shape = &fused.tensor(kernel.output).shape.0;
    let channels = *shape.first()?;
    let plane: u64 = shape[1..].iter().product();
    let sources = sources(fused, kernel)?;
    // A vector with no per-channel step is one row: whole f32x4 lanes, not one float a
    // channel.
    let per_channel = plane > 1
        || matches!(kernel.op, Op::Concat(_))
        || steps.iter().any(|s| matches!(s, Step::ScaleShift { .. }));
    let (rows, len) = match per_channel {
        true => (channels, plane),
        false => (1, channels),
    };
    let mut args = vec![Arg::Output];
    args.extend(sources.iter().map(|s| s.arg.clone()));
    args.extend(epilogue::step_args(&steps, target));
    let output_sample = sample_stride(fused, kernel.output);
    let code = weightless_kernel(index, target, args, rows, |b, params, pointers, n| {
        let output = at_sample(b, pointers, &Arg::Output, n, output_sample);
        let adds: Vec<Value> = epilogue::add_inputs(&steps)
            .map(|input| {
                at_sample(
                    b,
                    pointers,
                    &Arg::AddInput(input),
                    n,
                    sample_stride(fused, input),
                )
            })
            .collect();
        for source in &sources {
            let input = at_sample(
                b,
                pointers,
                &source.arg,
                n,
                sample_stride(fused, source.tensor),
            );
            // This call's channels [begin, end) that come from this source.
            let first = b.ins().iconst(types::I64, source.first as i64);
            let last = b
                .ins()
                .iconst(types::I64, (source.first + source.count.min(rows)) as i64);
            let (from, to) = (
                b.ins().smax(params.begin, first),
                b.ins().smin(params.end, last),
            );
            counted(b, from, to, 1, |b, c| {
                let own = b.ins().iadd_imm_s(c, -(source.first as i64));
                let row = Row {
                    source: offset(b, input, own, len),
                    destination: offset(b, output, c, len),
                    channel: c,
                    add_rows: adds.iter().map(|&base| offset(b, base, c, len)).collect(),
                    len,
                };
                epilogue::steps_over_row(b, &steps, pointers, &row);
            });
        }
    });
    Some(code)
}

/// The kernel's op as epilogue steps; `None` for ops that are not element-wise.
fn steps(kernel: &Kernel) -> Option<Vec<Step>> {
    Some(match &kernel.op {
        Op::Activation(Activation::Softmax) => return None,
        Op::Activation(activation) => vec![Step::Activation(activation.clone())],
        Op::BatchNorm(bn) => vec![Step::ScaleShift {
            layer: kernel.name.clone(),
            eps: bn.eps,
        }],
        // As the reference: `x0 + scale·x1 + scale·x2 ...`, in that order.
        Op::Add(add) => kernel
            .inputs
            .get(1..)?
            .iter()
            .map(|&input| Step::Add {
                layer: kernel.name.clone(),
                input,
                self_scale: 1.0,
                input_scale: add.scale,
            })
            .collect(),
        Op::Concat(_) => Vec::new(),
        _ => return None,
    })
}

/// Where the output's channels come from: every input of a concat in turn, else the
/// first input for all of them.
fn sources(fused: &FusedGraph, kernel: &Kernel) -> Option<Vec<Source>> {
    let first = *kernel.inputs.first()?;
    if !matches!(kernel.op, Op::Concat(_)) {
        return Some(vec![Source {
            arg: Arg::Input,
            tensor: first,
            first: 0,
            count: u64::MAX,
        }]);
    }
    let mut at = 0;
    let mut sources = Vec::new();
    for &tensor in &kernel.inputs {
        let count = *fused.tensor(tensor).shape.0.first()?;
        sources.push(Source {
            arg: Arg::ConcatInput(tensor),
            tensor,
            first: at,
            count,
        });
        at += count;
    }
    Some(sources)
}
