//! `exp` for f32 and f32x4, generated inline (Cranelift has no `exp`): Cephes' `expf`,
//! `e^x = 2^n · e^r` with `n = round(x·log2 e)`, `r = x − n·ln 2` (ln 2 in two parts,
//! so `r` is exact), `e^r` a degree-7 polynomial, and `2^n` built in the exponent bits.
//! Relative error within 2 ulp on `[−87.3, 88]`; inputs are clamped to that range, so
//! `exp` of anything below is about 1e-38 rather than 0 (softmax, its user, adds these
//! to a sum of at least 1). Sigmoid is built on it; tanh is a rational function of its
//! own (`tools/fit_tanh.py`).

use super::epilogue::{choose, constant, larger, smaller, splat};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

/// 1.5 · 2^23: adding it rounds a float below 2^22 to an integer, in the low bits.
pub const ROUNDER: f32 = 12_582_912.0;
/// The range `exp`'s input is clamped to: `e^x` is a normal f32 on it.
pub const EXP_RANGE: (f32, f32) = (-87.336_54, 88.0);
/// ln 2 in two parts, the first exact in f32 (so `x − n·LN2_HIGH` is exact).
pub const LN2_HIGH: f32 = 0.693_359_4;
pub const LN2_LOW: f32 = -2.121_944_4e-4;
/// Cephes' polynomial for `e^r − 1 − r` over `r²`, highest power first.
pub const POLYNOMIAL: [f32; 6] = [
    1.987_569_1e-4,
    1.398_2e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

/// Tanh's rational approximation, `x·P(x²) / Q(x²)` on |x| <= `TANH_SATURATES`, fitted
/// by `tools/fit_tanh.py` for the least largest relative error (9e-9 in exact
/// arithmetic; within 5 ulp of the correctly rounded value evaluated in f32 with fused
/// multiply-adds, 6 without). Highest power first, as Horner's loop takes them. Nine
/// multiply-adds and a division, where `e^−2|x|` and the sign's bit arithmetic took
/// about twenty operations: 15 cycles a sixteen-lane block against 20 (Zen 4).
pub const TANH_NUMERATOR: [f32; 7] = [
    -8.617_464_5e-14,
    5.331_083e-11,
    -2.034_25e-8,
    1.118_486_5e-5,
    3.106_991_5e-3,
    0.130_867_67,
    1.0,
];
pub const TANH_DENOMINATOR: [f32; 4] = [2.550_493_8e-4, 2.450_739e-2, 0.464_200_97, 1.0];

/// Where x is clamped: the least x from 9 (where tanh rounds to 1) at which the
/// rational function reaches 1 (`tools/fit_tanh.py`). Past it the function would turn
/// back; its results are clamped to [−1, 1] as well, since it overshoots 1 by up to two
/// ulp below the clamp.
pub const TANH_SATURATES: f32 = 9.000_005;

/// The integer type of `ty`'s bits.
fn bits_type(ty: Type) -> Type {
    if ty.is_vector() {
        types::I32X4
    } else {
        types::I32
    }
}

/// `e^x` of an f32 or f32x4 `x`.
pub fn exp(b: &mut FunctionBuilder, ty: Type, x: Value) -> Value {
    let (low, high) = (constant(b, ty, EXP_RANGE.0), constant(b, ty, EXP_RANGE.1));
    let x = larger(b, ty, x, low);
    let x = smaller(b, ty, x, high);
    let (shifted, r) = reduce(b, ty, x);
    let er = exp_minus_one_reduced(b, ty, r);
    let one = constant(b, ty, 1.0);
    let er = b.ins().fadd(er, one);
    let power = power_of_two(b, ty, shifted);
    b.ins().fmul(er, power)
}

/// `x = n·ln 2 + r`, `|r| <= ln 2 / 2`: n = round(x·log2 e) in the low bits of the
/// first value returned (n plus `ROUNDER`), and r (ln 2 in two parts, so it is exact).
fn reduce(b: &mut FunctionBuilder, ty: Type, x: Value) -> (Value, Value) {
    let c = |b: &mut FunctionBuilder, value: f32| constant(b, ty, value);
    let (log2e, rounder) = (c(b, std::f32::consts::LOG2_E), c(b, ROUNDER));
    let scaled = b.ins().fmul(x, log2e);
    let shifted = b.ins().fadd(scaled, rounder);
    let n = b.ins().fsub(shifted, rounder);
    let (ln2_high, ln2_low) = (c(b, LN2_HIGH), c(b, LN2_LOW));
    let part = b.ins().fmul(n, ln2_high);
    let r = b.ins().fsub(x, part);
    let part = b.ins().fmul(n, ln2_low);
    (shifted, b.ins().fsub(r, part))
}

/// `e^r − 1` of a reduced `r`: `r + r²·P(r)`.
fn exp_minus_one_reduced(b: &mut FunctionBuilder, ty: Type, r: Value) -> Value {
    let p = horner(b, ty, &POLYNOMIAL, r);
    let square = b.ins().fmul(r, r);
    let p = b.ins().fmul(p, square);
    b.ins().fadd(p, r)
}

/// `2^n` of `reduce`'s first value: the biased exponent n + 127 in bits 23..31 (its
/// bits are ROUNDER's plus n).
fn power_of_two(b: &mut FunctionBuilder, ty: Type, shifted: Value) -> Value {
    let int = bits_type(ty);
    let flags = MemFlagsData::new();
    let bits = b.ins().bitcast(int, flags, shifted);
    // An i32 immediate is given zero-extended.
    let bias = 127u32.wrapping_sub(ROUNDER.to_bits());
    let bias = b.ins().iconst(types::I32, i64::from(bias));
    let bias = splat(b, int, bias);
    let biased = b.ins().iadd(bits, bias);
    let shift = b.ins().iconst(types::I32, 23);
    let exponent = b.ins().ishl(biased, shift);
    b.ins().bitcast(ty, flags, exponent)
}

/// `1 / (1 + e^−x)`, the reference's formula.
pub fn sigmoid(b: &mut FunctionBuilder, ty: Type, x: Value) -> Value {
    let negated = b.ins().fneg(x);
    let e = exp(b, ty, negated);
    let one = constant(b, ty, 1.0);
    let denominator = b.ins().fadd(one, e);
    let result = b.ins().fdiv(one, denominator);
    nan_through(b, ty, x, result)
}

/// `tanh x ≈ x·P(x²) / Q(x²)` with x clamped to ±`TANH_SATURATES` and the result to
/// [−1, 1]; tanh(±0) is ±0, the sign of zero kept by the product.
pub fn tanh(b: &mut FunctionBuilder, ty: Type, x: Value) -> Value {
    let (low, high) = (
        constant(b, ty, -TANH_SATURATES),
        constant(b, ty, TANH_SATURATES),
    );
    let clamped = larger(b, ty, x, low);
    let clamped = smaller(b, ty, clamped, high);
    let square = b.ins().fmul(clamped, clamped);
    let numerator = horner(b, ty, &TANH_NUMERATOR, square);
    let numerator = b.ins().fmul(numerator, clamped);
    let denominator = horner(b, ty, &TANH_DENOMINATOR, square);
    let quotient = b.ins().fdiv(numerator, denominator);
    let (minus_one, one) = (constant(b, ty, -1.0), constant(b, ty, 1.0));
    let result = larger(b, ty, quotient, minus_one);
    let result = smaller(b, ty, result, one);
    nan_through(b, ty, x, result)
}

/// `coefficients` (highest power first) as a polynomial in `x`.
fn horner(b: &mut FunctionBuilder, ty: Type, coefficients: &[f32], x: Value) -> Value {
    let mut sum = constant(b, ty, coefficients[0]);
    for &coefficient in &coefficients[1..] {
        let coefficient = constant(b, ty, coefficient);
        let product = b.ins().fmul(sum, x);
        sum = b.ins().fadd(product, coefficient);
    }
    sum
}

/// `result`, or `x` where `x` is NaN: `exp` clamps its input, which would turn a NaN
/// into a number.
fn nan_through(b: &mut FunctionBuilder, ty: Type, x: Value, result: Value) -> Value {
    let ordered = b.ins().fcmp(FloatCC::Ordered, x, x);
    choose(b, ty, ordered, result, x)
}
