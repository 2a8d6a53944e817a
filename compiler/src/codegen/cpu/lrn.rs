//! Local response normalisation across channels, over the reference interpreter's
//! window (PyTorch's: `size / 2` channels before, `(size - 1) / 2` after). `beta` of
//! 0.75 (every classic network), 0.5 or 1 is computed with square roots in f32, four
//! pixels at a time: four times as many square roots per instruction as f64 scalars
//! (GoogLeNet's second LRN went from 9.5 to 2.5 ms in a profile under load), and
//! within 3e-7 of the largest output of the reference's f64 (`runtime/tests/jit.rs`).
//! Any other `beta` calls the runtime's `Pow` helper, in f64 as the reference does.
//! A channel whose window lies inside the tensor reads its taps at fixed offsets from
//! its own plane, where the first and last few loop over their clipped window (the
//! loop on every channel made GoogLeNet's second LRN twice as slow: 0.98 against
//! 0.48 ms). Threads split the channels.

use super::conv::{load_at, offset};
use super::epilogue::constant;
use super::loops::counted;
use super::{Arg, CpuTarget, KernelCode, kernel_function, sample_stride};
use crate::ops::Op;
use crate::passes::FusedGraph;
use cranelift_codegen::ir::{AbiParam, InstBuilder, MemFlagsData, Signature, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

pub fn generate(fused: &FusedGraph, index: usize, target: &CpuTarget) -> Option<KernelCode> {
    let kernel = &fused.kernels[index];
    let Op::Lrn(lrn) = &kernel.op else {
        return None;
    };
    let &[channels, height, width] = fused.tensor(*kernel.inputs.first()?).shape.0.as_slice()
    else {
        return None;
    };
    let plane = height * width;
    let alpha = if lrn.alpha_scaled {
        lrn.alpha / lrn.size as f64
    } else {
        lrn.alpha
    };
    let power = Power::of(lrn.beta);
    let mut args = vec![Arg::Input, Arg::Output];
    if power == Power::General {
        args.push(Arg::Pow);
    }
    let (input_sample, output_sample) = (
        sample_stride(fused, kernel.inputs[0]),
        sample_stride(fused, kernel.output),
    );
    let (before, after) = ((lrn.size / 2) as i64, ((lrn.size - 1) / 2) as i64);
    // Channels whose window lies inside [0, channels) read their taps at fixed offsets
    // (for windows of a few channels: each tap is code); the first and last few test
    // the window's bounds.
    let inner = if lrn.size > MOST_FIXED_TAPS {
        (0, 0)
    } else {
        (
            before.min(channels as i64),
            (channels as i64 - after).max(before),
        )
    };
    let function = kernel_function(index, target, |b, params| {
        let pointer = target.frontend.pointer_type();
        let flags = MemFlagsData::new().with_notrap();
        let input = b.ins().load(pointer, flags, params.args, 0);
        let output = b.ins().load(pointer, flags, params.args, 8);
        let pow = (power == Power::General).then(|| b.ins().load(pointer, flags, params.args, 16));
        let zero = b.ins().iconst(types::I64, 0);
        counted(b, zero, params.batch, 1, |b, n| {
            let input = offset(b, input, n, input_sample);
            let output = offset(b, output, n, output_sample);
            for (from, to, fixed_taps) in channel_ranges(b, (params.begin, params.end), inner) {
                counted(b, from, to, 1, |b, c| {
                    // The window's channels, clipped to [0, channels).
                    let first = b.ins().iadd_imm_s(c, -before);
                    let first = b.ins().smax(first, zero);
                    let last = b.ins().iadd_imm_s(c, after + 1);
                    let limit = b.ins().iconst(types::I64, channels as i64);
                    let end = b.ins().smin(last, limit);
                    let element = Element {
                        input,
                        own: offset(b, input, c, plane),
                        out: offset(b, output, c, plane),
                        first,
                        end,
                        taps: fixed_taps.then_some((before, after)),
                        plane,
                        k: lrn.k,
                        alpha,
                        beta: lrn.beta,
                        power,
                        pow,
                    };
                    element.every_pixel(b);
                });
            }
        });
    });
    Some(KernelCode {
        kernel: index,
        function,
        args,
        scratch_floats: 0,
        geometry: None,
        chunks: channels,
        cuts_channels: false,
        layout: None,
    })
}

/// The channels `[begin, end)` in three runs, with whether their taps are fixed: before
/// `lo`, from `lo` to `hi`, from `hi` on (`lo <= hi`).
fn channel_ranges(
    b: &mut FunctionBuilder,
    (begin, end): (Value, Value),
    (lo, hi): (i64, i64),
) -> [(Value, Value, bool); 3] {
    let (lo, hi) = (
        b.ins().iconst(types::I64, lo),
        b.ins().iconst(types::I64, hi),
    );
    let (to_lo, from_lo) = (b.ins().smin(end, lo), b.ins().smax(begin, lo));
    let (to_hi, from_hi) = (b.ins().smin(end, hi), b.ins().smax(begin, hi));
    [
        (begin, to_lo, false),
        (from_lo, to_hi, true),
        (from_hi, end, false),
    ]
}

/// The widest window whose taps are unrolled: the classic networks' are 5; a window of
/// thousands of channels would be thousands of loads of code.
const MOST_FIXED_TAPS: u64 = 16;

#[derive(Clone, Copy, PartialEq)]
enum Power {
    ThreeQuarters,
    Half,
    One,
    General,
}

impl Power {
    fn of(beta: f64) -> Power {
        match beta {
            0.75 => Power::ThreeQuarters,
            0.5 => Power::Half,
            1.0 => Power::One,
            _ => Power::General,
        }
    }
}

/// One output: `x / (k + alpha * sum of squares) ^ beta`.
struct Element {
    input: Value,
    own: Value,
    out: Value,
    first: Value,
    end: Value,
    /// The channels before and after the own one, where the window is known to lie
    /// inside: its taps are loads at fixed offsets from the own channel.
    taps: Option<(i64, i64)>,
    plane: u64,
    k: f64,
    alpha: f64,
    beta: f64,
    power: Power,
    pow: Option<Value>,
}

impl Element {
    /// Every output of the channel: four pixels at a time where the power is computed in
    /// f32 lanes, then one at a time.
    fn every_pixel(&self, b: &mut FunctionBuilder) {
        let vectors = match self.power {
            Power::General => 0,
            _ => self.plane / 4 * 4,
        };
        let zero = b.ins().iconst(types::I64, 0);
        if vectors > 0 {
            let end = b.ins().iconst(types::I64, vectors as i64);
            counted(b, zero, end, 4, |b, e| self.generate(b, e, types::F32X4));
        }
        let (start, end) = (
            b.ins().iconst(types::I64, vectors as i64),
            b.ins().iconst(types::I64, self.plane as i64),
        );
        counted(b, start, end, 1, |b, e| self.generate(b, e, types::F32));
    }

    /// The outputs at pixel `e` of the channel: one (`ty` f32) or four (f32x4).
    fn generate(&self, b: &mut FunctionBuilder, e: Value, ty: Type) {
        // The general power is the runtime's f64 helper; the others are f32 lanes.
        let wide = self.power == Power::General;
        let flags = MemFlagsData::new().with_notrap();
        let load = |b: &mut FunctionBuilder, at: Value| {
            let value = b.ins().load(ty, flags, at, 0);
            if wide {
                b.ins().fpromote(types::F64, value)
            } else {
                value
            }
        };
        let float = |b: &mut FunctionBuilder, value: f64| match wide {
            true => b.ins().f64const(value),
            false => constant(b, ty, value as f32),
        };
        let sum_type = if wide { types::F64 } else { ty };
        let sum = b.declare_var(sum_type);
        let nothing = float(b, 0.0);
        b.def_var(sum, nothing);
        let add_square = |b: &mut FunctionBuilder, value: Value| {
            let square = b.ins().fmul(value, value);
            let so_far = b.use_var(sum);
            let next = b.ins().fadd(so_far, square);
            b.def_var(sum, next);
        };
        match self.taps {
            Some((before, after)) => {
                // The same order as the loop: the window's first channel first.
                let own = offset(b, self.own, e, 1);
                for j in -before..=after {
                    let at = j * self.plane as i64 * 4;
                    let value = load_at(b, ty, own, at);
                    let value = if wide {
                        b.ins().fpromote(types::F64, value)
                    } else {
                        value
                    };
                    add_square(b, value);
                }
            }
            None => {
                let column = offset(b, self.input, e, 1);
                counted(b, self.first, self.end, 1, |b, j| {
                    let at = offset(b, column, j, self.plane);
                    let value = load(b, at);
                    add_square(b, value);
                });
            }
        }
        let total = b.use_var(sum);
        let alpha = float(b, self.alpha);
        let scaled = b.ins().fmul(alpha, total);
        let k = float(b, self.k);
        let base = b.ins().fadd(k, scaled);
        let divisor = self.power(b, base);
        let at = offset(b, self.own, e, 1);
        let x = load(b, at);
        let mut y = b.ins().fdiv(x, divisor);
        if wide {
            y = b.ins().fdemote(types::F32, y);
        }
        let at = offset(b, self.out, e, 1);
        b.ins().store(flags, y, at, 0);
    }

    fn power(&self, b: &mut FunctionBuilder, base: Value) -> Value {
        match self.power {
            Power::One => base,
            Power::Half => b.ins().sqrt(base),
            Power::ThreeQuarters => {
                let half = b.ins().sqrt(base);
                let quarter = b.ins().sqrt(half);
                b.ins().fmul(half, quarter)
            }
            Power::General => {
                let mut signature = Signature::new(b.func.signature.call_conv);
                signature.params.push(AbiParam::new(types::F64));
                signature.params.push(AbiParam::new(types::F64));
                signature.returns.push(AbiParam::new(types::F64));
                let signature = b.import_signature(signature);
                let beta = b.ins().f64const(self.beta);
                let callee = self
                    .pow
                    .expect("the Pow slot is declared for a general beta");
                let call = b.ins().call_indirect(signature, callee, &[base, beta]);
                b.inst_results(call)[0]
            }
        }
    }
}
