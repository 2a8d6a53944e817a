//! Pooling kernels: max and average windows (padding, ceil mode's partial windows,
//! dilation for max, both divisors for average) and global pooling, as the reference
//! interpreter computes them, with every size a constant. Threads split the channels.

use super::conv::offset;
use super::epilogue::larger;
use super::loops::{counted, fixed};
use super::{Arg, CpuTarget, KernelCode, kernel_function, sample_stride};
use crate::ops::{Op, PoolKind};
use crate::passes::{FusedGraph, Kernel};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;

/// A window's sizes, all constants; a global pool is one window over the whole plane.
struct Window {
    kind: PoolKind,
    channels: u64,
    height: u64,
    width: u64,
    out_height: u64,
    out_width: u64,
    kernel: [u64; 2],
    stride: [u64; 2],
    dilation: [u64; 2],
    pads: [u64; 4],
    count_include_pad: bool,
    global: bool,
}

impl Window {
    fn of(fused: &FusedGraph, kernel: &Kernel) -> Option<Window> {
        let input = fused.tensor(*kernel.inputs.first()?);
        let (&[c, h, w], &[_, oh, ow]) = (
            input.shape.0.as_slice(),
            fused.tensor(kernel.output).shape.0.as_slice(),
        ) else {
            return None;
        };
        let (kind, kernel_size, stride, dilation, pads, count_include_pad, global) =
            match &kernel.op {
                Op::Pool(pool) => (
                    pool.kind,
                    pool.window.kernel,
                    pool.window.stride,
                    pool.window.dilation,
                    pool.window.pads([h, w]),
                    pool.count_include_pad,
                    false,
                ),
                Op::GlobalPool(global) => (global.kind, [h, w], [1, 1], [1, 1], [0; 4], true, true),
                _ => return None,
            };
        Some(Window {
            kind,
            channels: c,
            height: h,
            width: w,
            out_height: oh,
            out_width: ow,
            kernel: kernel_size,
            stride,
            dilation,
            pads,
            count_include_pad,
            global,
        })
    }
}

pub fn generate(fused: &FusedGraph, index: usize, target: &CpuTarget) -> Option<KernelCode> {
    let kernel = &fused.kernels[index];
    let window = Window::of(fused, kernel)?;
    let input_sample = sample_stride(fused, kernel.inputs[0]);
    let output_sample = sample_stride(fused, kernel.output);
    let (plane, out_plane) = (
        window.height * window.width,
        window.out_height * window.out_width,
    );
    let function = kernel_function(index, target, |b, params| {
        let pointer = target.frontend.pointer_type();
        let flags = MemFlagsData::new().with_notrap();
        let input = b.ins().load(pointer, flags, params.args, 0);
        let output = b.ins().load(pointer, flags, params.args, 8);
        let zero = b.ins().iconst(types::I64, 0);
        counted(b, zero, params.batch, 1, |b, n| {
            let input = offset(b, input, n, input_sample);
            let output = offset(b, output, n, output_sample);
            counted(b, params.begin, params.end, 1, |b, c| {
                let source = offset(b, input, c, plane);
                let destination = offset(b, output, c, out_plane);
                if window.global {
                    global(b, &window, source, destination);
                } else {
                    windows(b, &window, source, destination);
                }
            });
        });
    });
    Some(KernelCode {
        kernel: index,
        function,
        args: vec![Arg::Input, Arg::Output],
        scratch_floats: 0,
        geometry: None,
        chunks: window.channels,
        layout: None,
    })
}

pub(super) fn load(b: &mut FunctionBuilder, base: Value, index: Value) -> Value {
    let at = offset(b, base, index, 1);
    b.ins()
        .load(types::F32, MemFlagsData::new().with_notrap(), at, 0)
}

/// Every output of one channel.
fn windows(b: &mut FunctionBuilder, w: &Window, source: Value, destination: Value) {
    let rows = interior(
        w.out_height,
        w.height,
        w.kernel[0],
        w.stride[0],
        w.dilation[0],
        w.pads[0],
    );
    let columns = interior(
        w.out_width,
        w.width,
        w.kernel[1],
        w.stride[1],
        w.dilation[1],
        w.pads[1],
    );
    for (row_range, rows_inside) in split(w.out_height, rows) {
        range(b, row_range, |b, oy| {
            let y0 = b.ins().imul_imm_s(oy, w.stride[0] as i64);
            let y0 = b.ins().iadd_imm_s(y0, -(w.pads[0] as i64));
            let row = b.ins().imul_imm_s(oy, w.out_width as i64);
            for (column_range, columns_inside) in split(w.out_width, columns) {
                range(b, column_range, |b, ox| {
                    let x0 = b.ins().imul_imm_s(ox, w.stride[1] as i64);
                    let x0 = b.ins().iadd_imm_s(x0, -(w.pads[1] as i64));
                    let value = if rows_inside && columns_inside {
                        inside_window(b, w, source, y0, x0)
                    } else {
                        match w.kind {
                            PoolKind::Max => max_window(b, w, source, y0, x0),
                            PoolKind::Avg => average_window(b, w, source, y0, x0),
                        }
                    };
                    let at = b.ins().iadd(row, ox);
                    let at = offset(b, destination, at, 1);
                    b.ins()
                        .store(MemFlagsData::new().with_notrap(), value, at, 0);
                });
            }
        });
    }
}

/// The outputs `[lo, hi)` along one axis whose whole window lies inside the input.
fn interior(out: u64, size: u64, kernel: u64, stride: u64, dilation: u64, pad: u64) -> (u64, u64) {
    let lo = pad.div_ceil(stride);
    let reach = (kernel - 1) * dilation;
    let hi = if size + pad > reach {
        (size + pad - reach - 1) / stride + 1
    } else {
        0
    };
    let hi = hi.min(out);
    (lo.min(hi), hi)
}

/// `[0, out)` as the border before the interior, the interior, the border after.
fn split(out: u64, (lo, hi): (u64, u64)) -> [((u64, u64), bool); 3] {
    [((0, lo), false), ((lo, hi), true), ((hi, out), false)]
}

fn range(
    b: &mut FunctionBuilder,
    (from, to): (u64, u64),
    body: impl FnMut(&mut FunctionBuilder, Value),
) {
    if from >= to {
        return;
    }
    let start = b.ins().iconst(types::I64, from as i64);
    let end = b.ins().iconst(types::I64, to as i64);
    counted(b, start, end, 1, body);
}

/// A window wholly inside the input: every tap loaded unconditionally. The maximum is
/// taken as a tree, so the comparisons do not wait on each other (the order does not
/// change a maximum); the sum keeps the reference's order, row by row.
fn inside_window(
    b: &mut FunctionBuilder,
    w: &Window,
    source: Value,
    y0: Value,
    x0: Value,
) -> Value {
    let corner = b.ins().imul_imm_s(y0, w.width as i64);
    let corner = b.ins().iadd(corner, x0);
    let corner = offset(b, source, corner, 1);
    let flags = MemFlagsData::new().with_notrap();
    let mut taps = Vec::new();
    for ky in 0..w.kernel[0] {
        for kx in 0..w.kernel[1] {
            let tap = (ky * w.dilation[0] * w.width + kx * w.dilation[1]) * 4;
            taps.push(b.ins().load(types::F32, flags, corner, tap as i32));
        }
    }
    match w.kind {
        PoolKind::Max => {
            while taps.len() > 1 {
                let pairs: Vec<Value> = taps
                    .chunks(2)
                    .map(|pair| match pair {
                        [a, c] => combine(b, PoolKind::Max, *a, *c),
                        [a] => *a,
                        _ => unreachable!("chunks of two"),
                    })
                    .collect();
                taps = pairs;
            }
            taps[0]
        }
        PoolKind::Avg => {
            let mut sum = b.ins().f32const(0.0);
            for tap in taps {
                sum = b.ins().fadd(sum, tap);
            }
            let area = b.ins().f32const((w.kernel[0] * w.kernel[1]) as f32);
            b.ins().fdiv(sum, area)
        }
    }
}

/// The largest input the window covers (taps in the padding do not count).
fn max_window(b: &mut FunctionBuilder, w: &Window, source: Value, y0: Value, x0: Value) -> Value {
    let mut best = b.ins().f32const(f32::NEG_INFINITY);
    for ky in 0..w.kernel[0] {
        let iy = b.ins().iadd_imm_s(y0, (ky * w.dilation[0]) as i64);
        let row_inside = b
            .ins()
            .icmp_imm_u(IntCC::UnsignedLessThan, iy, w.height as i64);
        for kx in 0..w.kernel[1] {
            let ix = b.ins().iadd_imm_s(x0, (kx * w.dilation[1]) as i64);
            let inside = b
                .ins()
                .icmp_imm_u(IntCC::UnsignedLessThan, ix, w.width as i64);
            let inside = b.ins().band(row_inside, inside);
            let at = b.ins().imul_imm_s(iy, w.width as i64);
            let at = b.ins().iadd(at, ix);
            let zero = b.ins().iconst(types::I64, 0);
            let at = b.ins().select(inside, at, zero);
            let value = load(b, source, at);
            // As f32::max: a larger value wins, a NaN input does not.
            let larger = b.ins().fcmp(FloatCC::GreaterThan, value, best);
            let take = b.ins().band(larger, inside);
            best = b.ins().select(take, value, best);
        }
    }
    best
}

/// The mean over the window's part inside the input; the divisor counts the padding
/// (as far as it reaches) or not.
fn average_window(
    b: &mut FunctionBuilder,
    w: &Window,
    source: Value,
    y0: Value,
    x0: Value,
) -> Value {
    let (h, wd) = (w.height as i64, w.width as i64);
    let y_end = b.ins().iadd_imm_s(y0, w.kernel[0] as i64);
    let y_limit = b.ins().iconst(types::I64, h + w.pads[2] as i64);
    let y_end = b.ins().smin(y_end, y_limit);
    let x_end = b.ins().iadd_imm_s(x0, w.kernel[1] as i64);
    let x_limit = b.ins().iconst(types::I64, wd + w.pads[3] as i64);
    let x_end = b.ins().smin(x_end, x_limit);
    let zero = b.ins().iconst(types::I64, 0);
    let (ya, xa) = (b.ins().smax(y0, zero), b.ins().smax(x0, zero));
    let (height, width) = (
        b.ins().iconst(types::I64, h),
        b.ins().iconst(types::I64, wd),
    );
    let (yb, xb) = (b.ins().smin(y_end, height), b.ins().smin(x_end, width));
    let sum = b.declare_var(types::F32);
    let nothing = b.ins().f32const(0.0);
    b.def_var(sum, nothing);
    counted(b, ya, yb, 1, |b, iy| {
        let row = b.ins().imul_imm_s(iy, wd);
        counted(b, xa, xb, 1, |b, ix| {
            let at = b.ins().iadd(row, ix);
            let value = load(b, source, at);
            let so_far = b.use_var(sum);
            let total = b.ins().fadd(so_far, value);
            b.def_var(sum, total);
        });
    });
    let divisor = if w.count_include_pad {
        let rows = b.ins().isub(y_end, y0);
        let columns = b.ins().isub(x_end, x0);
        b.ins().imul(rows, columns)
    } else {
        let rows = b.ins().isub(yb, ya);
        let columns = b.ins().isub(xb, xa);
        b.ins().imul(rows, columns)
    };
    let one = b.ins().iconst(types::I64, 1);
    let divisor = b.ins().smax(divisor, one);
    let divisor = b.ins().fcvt_from_sint(types::F32, divisor);
    let total = b.use_var(sum);
    b.ins().fdiv(total, divisor)
}

/// A whole plane to one value: the mean of the row means (as the reference computes
/// it), or the maximum.
fn global(b: &mut FunctionBuilder, w: &Window, source: Value, destination: Value) {
    let outer = b.declare_var(types::F32);
    let start = match w.kind {
        PoolKind::Max => f32::NEG_INFINITY,
        PoolKind::Avg => 0.0,
    };
    let initial = b.ins().f32const(start);
    b.def_var(outer, initial);
    fixed(b, w.height, |b, y| {
        let inner = b.declare_var(types::F32);
        let initial = b.ins().f32const(start);
        b.def_var(inner, initial);
        let row = offset(b, source, y, w.width);
        fixed(b, w.width, |b, x| {
            let value = load(b, row, x);
            let so_far = b.use_var(inner);
            let next = combine(b, w.kind, so_far, value);
            b.def_var(inner, next);
        });
        let row_value = b.use_var(inner);
        let row_value = match w.kind {
            PoolKind::Avg => {
                let width = b.ins().f32const(w.width as f32);
                b.ins().fdiv(row_value, width)
            }
            PoolKind::Max => row_value,
        };
        let so_far = b.use_var(outer);
        let next = combine(b, w.kind, so_far, row_value);
        b.def_var(outer, next);
    });
    let mut value = b.use_var(outer);
    if w.kind == PoolKind::Avg {
        let height = b.ins().f32const(w.height as f32);
        value = b.ins().fdiv(value, height);
    }
    b.ins()
        .store(MemFlagsData::new().with_notrap(), value, destination, 0);
}

pub(super) fn combine(
    b: &mut FunctionBuilder,
    kind: PoolKind,
    so_far: Value,
    value: Value,
) -> Value {
    match kind {
        PoolKind::Avg => b.ins().fadd(so_far, value),
        // A NaN input loses, as with f32::max.
        PoolKind::Max => larger(b, types::F32, value, so_far),
    }
}
