//! Softmax over the channels, as the reference computes it: the maximum subtracted,
//! `exp` (generated inline, `exp.rs`), divided by the sum. A vector (`[C]`, a
//! classifier's output) is one contiguous row, reduced four lanes at a time; an image
//! (`[C, H, W]`) is reduced across its channel rows, four pixels at a time. One chunk:
//! a softmax is a few thousand floats.

use super::conv::offset;
use super::epilogue::{constant, larger, splat};
use super::exp::exp;
use super::loops::fixed;
use super::{Arg, CpuTarget, KernelCode, at_sample, sample_stride, weightless_kernel};
use crate::passes::FusedGraph;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::{FunctionBuilder, Variable};

const LANES: u64 = 4;

pub fn generate(fused: &FusedGraph, index: usize, target: &CpuTarget) -> Option<KernelCode> {
    let kernel = &fused.kernels[index];
    let input = *kernel.inputs.first()?;
    let shape = &fused.tensor(kernel.output).shape.0;
    let channels = *shape.first()?;
    let plane: u64 = shape[1..].iter().product();
    let (input_sample, output_sample) = (
        sample_stride(fused, input),
        sample_stride(fused, kernel.output),
    );
    let args = vec![Arg::Input, Arg::Output];
    Some(weightless_kernel(
        index,
        target,
        args,
        1,
        |b, _, pointers, n| {
            let input = at_sample(b, pointers, &Arg::Input, n, input_sample);
            let output = at_sample(b, pointers, &Arg::Output, n, output_sample);
            if plane == 1 {
                along_row(b, input, output, channels);
            } else {
                across_rows(b, input, output, channels, plane);
            }
        },
    ))
}

fn load(b: &mut FunctionBuilder, ty: Type, base: Value, at: Value) -> Value {
    let address = offset(b, base, at, 1);
    b.ins()
        .load(ty, MemFlagsData::new().with_notrap(), address, 0)
}

fn store(b: &mut FunctionBuilder, value: Value, base: Value, at: Value) {
    let address = offset(b, base, at, 1);
    b.ins()
        .store(MemFlagsData::new().with_notrap(), value, address, 0);
}

/// A variable of type `ty` holding `initial`.
fn variable(b: &mut FunctionBuilder, ty: Type, initial: f32) -> Variable {
    let var = b.declare_var(ty);
    let value = constant(b, ty, initial);
    b.def_var(var, value);
    var
}

/// `body(ty, element)` over a row of `len` floats: f32x4 vectors, then the scalar tail.
fn lanes(
    b: &mut FunctionBuilder,
    len: u64,
    mut body: impl FnMut(&mut FunctionBuilder, Type, Value),
) {
    fixed(b, len / LANES, |b, v| {
        let at = b.ins().imul_imm_s(v, LANES as i64);
        body(b, types::F32X4, at);
    });
    for e in (len / LANES) * LANES..len {
        let at = b.ins().iconst(types::I64, e as i64);
        body(b, types::F32, at);
    }
}

/// A row reduced to one float: `combine` over a vector and a scalar accumulator, the
/// vector's lanes folded into the scalar at the end.
fn reduce(
    b: &mut FunctionBuilder,
    len: u64,
    initial: f32,
    mut term: impl FnMut(&mut FunctionBuilder, Type, Value) -> Value,
    combine: impl Fn(&mut FunctionBuilder, Type, Value, Value) -> Value,
) -> Value {
    let (vector, scalar) = (
        variable(b, types::F32X4, initial),
        variable(b, types::F32, initial),
    );
    lanes(b, len, |b, ty, at| {
        let var = if ty.is_vector() { vector } else { scalar };
        let value = term(b, ty, at);
        let so_far = b.use_var(var);
        let next = combine(b, ty, so_far, value);
        b.def_var(var, next);
    });
    let (vector, mut total) = (b.use_var(vector), b.use_var(scalar));
    for lane in 0..LANES as u8 {
        let value = b.ins().extractlane(vector, lane);
        total = combine(b, types::F32, total, value);
    }
    total
}

fn add(b: &mut FunctionBuilder, _: Type, x: Value, y: Value) -> Value {
    b.ins().fadd(x, y)
}

/// A contiguous row of `channels`: its maximum, the exponentials written out with
/// their sum, then each divided by the sum.
fn along_row(b: &mut FunctionBuilder, input: Value, output: Value, channels: u64) {
    let max = reduce(
        b,
        channels,
        f32::NEG_INFINITY,
        |b, ty, at| load(b, ty, input, at),
        |b, ty, so_far, value| larger(b, ty, value, so_far),
    );
    let sum = reduce(
        b,
        channels,
        0.0,
        |b, ty, at| {
            let x = load(b, ty, input, at);
            let max = splat(b, ty, max);
            let shifted = b.ins().fsub(x, max);
            let e = exp(b, ty, shifted);
            store(b, e, output, at);
            e
        },
        add,
    );
    lanes(b, channels, |b, ty, at| {
        let e = load(b, ty, output, at);
        let sum = splat(b, ty, sum);
        let y = b.ins().fdiv(e, sum);
        store(b, y, output, at);
    });
}

/// `channels` rows of `plane` pixels: each pixel's softmax across the rows, four
/// pixels at a time.
fn across_rows(b: &mut FunctionBuilder, input: Value, output: Value, channels: u64, plane: u64) {
    lanes(b, plane, |b, ty, pixel| {
        let (input, output) = (offset(b, input, pixel, 1), offset(b, output, pixel, 1));
        let each_channel =
            |b: &mut FunctionBuilder, body: &mut dyn FnMut(&mut FunctionBuilder, Value)| {
                fixed(b, channels, |b, c| {
                    let at = b.ins().imul_imm_s(c, plane as i64);
                    body(b, at);
                });
            };
        let max = variable(b, ty, f32::NEG_INFINITY);
        each_channel(b, &mut |b, at| {
            let x = load(b, ty, input, at);
            let so_far = b.use_var(max);
            let next = larger(b, ty, x, so_far);
            b.def_var(max, next);
        });
        let sum = variable(b, ty, 0.0);
        each_channel(b, &mut |b, at| {
            let x = load(b, ty, input, at);
            let max = b.use_var(max);
            let shifted = b.ins().fsub(x, max);
            let e = exp(b, ty, shifted);
            store(b, e, output, at);
            let so_far = b.use_var(sum);
            let next = b.ins().fadd(so_far, e);
            b.def_var(sum, next);
        });
        each_channel(b, &mut |b, at| {
            let e = load(b, ty, output, at);
            let sum = b.use_var(sum);
            let y = b.ins().fdiv(e, sum);
            store(b, y, output, at);
        });
    });
}
