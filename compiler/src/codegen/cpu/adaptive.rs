//! Adaptive pooling, as the reference computes it: output cell `i` of `out` covers
//! inputs `floor(i·in/out) .. ceil((i+1)·in/out)` along each axis, its mean (the sum
//! over the cell's size) or maximum. The bounds are computed from the cell's index by
//! divisions by constants, so the code stays one loop nest whatever the sizes. Threads
//! split the channels.

use super::conv::offset;
use super::loops::{counted, fixed};
use super::pool::{combine, load};
use super::{Arg, CpuTarget, KernelCode, at_sample, sample_stride, weightless_kernel};
use crate::ops::{Op, PoolKind};
use crate::passes::FusedGraph;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;

pub fn generate(fused: &FusedGraph, index: usize, target: &CpuTarget) -> Option<KernelCode> {
    let kernel = &fused.kernels[index];
    let Op::AdaptivePool(pool) = &kernel.op else {
        return None;
    };
    let input = *kernel.inputs.first()?;
    let (&[channels, height, width], &[_, out_height, out_width]) = (
        fused.tensor(input).shape.0.as_slice(),
        fused.tensor(kernel.output).shape.0.as_slice(),
    ) else {
        return None;
    };
    let (input_sample, output_sample) = (
        sample_stride(fused, input),
        sample_stride(fused, kernel.output),
    );
    let kind = pool.kind;
    let args = vec![Arg::Input, Arg::Output];
    let code = weightless_kernel(index, target, args, channels, |b, params, pointers, n| {
        let input = at_sample(b, pointers, &Arg::Input, n, input_sample);
        let output = at_sample(b, pointers, &Arg::Output, n, output_sample);
        counted(b, params.begin, params.end, 1, |b, c| {
            let source = offset(b, input, c, height * width);
            let destination = offset(b, output, c, out_height * out_width);
            fixed(b, out_height, |b, oy| {
                let rows = cell(b, oy, height, out_height);
                fixed(b, out_width, |b, ox| {
                    let columns = cell(b, ox, width, out_width);
                    let value = window(b, kind, source, width, rows, columns);
                    let at = b.ins().imul_imm_s(oy, out_width as i64);
                    let at = b.ins().iadd(at, ox);
                    let at = offset(b, destination, at, 1);
                    b.ins()
                        .store(MemFlagsData::new().with_notrap(), value, at, 0);
                });
            });
        });
    });
    Some(code)
}

/// Cell `i`'s input range along an axis of `size` pooled to `out`.
fn cell(b: &mut FunctionBuilder, i: Value, size: u64, out: u64) -> (Value, Value) {
    let start = b.ins().imul_imm_s(i, size as i64);
    let start = b.ins().udiv_imm_u(start, out as i64);
    let end = b.ins().iadd_imm_s(i, 1);
    let end = b.ins().imul_imm_s(end, size as i64);
    let end = b.ins().iadd_imm_s(end, out as i64 - 1);
    let end = b.ins().udiv_imm_u(end, out as i64);
    (start, end)
}

/// The mean or maximum of rows `[ya, yb)` and columns `[xa, xb)`, row by row.
fn window(
    b: &mut FunctionBuilder,
    kind: PoolKind,
    source: Value,
    width: u64,
    (ya, yb): (Value, Value),
    (xa, xb): (Value, Value),
) -> Value {
    let total = b.declare_var(types::F32);
    let initial = b.ins().f32const(match kind {
        PoolKind::Max => f32::NEG_INFINITY,
        PoolKind::Avg => 0.0,
    });
    b.def_var(total, initial);
    counted(b, ya, yb, 1, |b, y| {
        let row = b.ins().imul_imm_s(y, width as i64);
        counted(b, xa, xb, 1, |b, x| {
            let at = b.ins().iadd(row, x);
            let value = load(b, source, at);
            let so_far = b.use_var(total);
            let next = combine(b, kind, so_far, value);
            b.def_var(total, next);
        });
    });
    let total = b.use_var(total);
    match kind {
        PoolKind::Max => total,
        PoolKind::Avg => {
            let rows = b.ins().isub(yb, ya);
            let columns = b.ins().isub(xb, xa);
            let count = b.ins().imul(rows, columns);
            let count = b.ins().fcvt_from_sint(types::F32, count);
            b.ins().fdiv(total, count)
        }
    }
}
