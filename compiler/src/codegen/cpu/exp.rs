//! `exp` for f32 and f32x4, generated inline (Cranelift has no `exp`): Cephes' `expf`,
//! `e^x = 2^n · e^r` with `n = round(x·log2 e)`, `r = x − n·ln 2` (ln 2 in two parts,
//! so `r` is exact), `e^r` a degree-7 polynomial, and `2^n` built in the exponent bits.
//! Relative error within 2 ulp on `[−87.3, 88]`; inputs are clamped to that range, so
//! `exp` of anything below is about 1e-38 rather than 0 (softmax, its user, adds these
//! to a sum of at least 1). Tanh and sigmoid are built on it.

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

/// Below this magnitude tanh is Cephes' odd polynomial (`1 − 2/(e^2x + 1)` loses
/// digits to cancellation near 0); above it, the exp form.
pub const TANH_POLYNOMIAL_BELOW: f32 = 0.625;
/// Cephes' `tanhf` polynomial in x² for `(tanh x − x) / x³`, highest power first.
pub const TANH_POLYNOMIAL: [f32; 5] = [
    -5.704_988_7e-3,
    2.063_909e-2,
    -5.373_971_6e-2,
    0.133_314_42,
    -0.333_332_8,
];

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
    let int = bits_type(ty);
    let c = |b: &mut FunctionBuilder, value: f32| constant(b, ty, value);
    let (low, high) = (c(b, EXP_RANGE.0), c(b, EXP_RANGE.1));
    let x = larger(b, ty, x, low);
    let x = smaller(b, ty, x, high);
    // n = round(x·log2 e), as a float and in the low bits of `shifted`.
    let (log2e, rounder) = (c(b, std::f32::consts::LOG2_E), c(b, ROUNDER));
    let scaled = b.ins().fmul(x, log2e);
    let shifted = b.ins().fadd(scaled, rounder);
    let n = b.ins().fsub(shifted, rounder);
    // r = x − n·ln 2, ln 2 in two parts.
    let (ln2_high, ln2_low) = (c(b, LN2_HIGH), c(b, LN2_LOW));
    let part = b.ins().fmul(n, ln2_high);
    let r = b.ins().fsub(x, part);
    let part = b.ins().fmul(n, ln2_low);
    let r = b.ins().fsub(r, part);
    let mut p = c(b, POLYNOMIAL[0]);
    for coefficient in &POLYNOMIAL[1..] {
        let coefficient = c(b, *coefficient);
        let product = b.ins().fmul(p, r);
        p = b.ins().fadd(product, coefficient);
    }
    let square = b.ins().fmul(r, r);
    let p = b.ins().fmul(p, square);
    let p = b.ins().fadd(p, r);
    let one = c(b, 1.0);
    let er = b.ins().fadd(p, one);
    // 2^n: the biased exponent n + 127 in bits 23..31. `shifted`'s bits are those of
    // ROUNDER plus n.
    let flags = MemFlagsData::new();
    let bits = b.ins().bitcast(int, flags, shifted);
    // An i32 immediate is given zero-extended.
    let bias = 127u32.wrapping_sub(ROUNDER.to_bits());
    let bias = b.ins().iconst(types::I32, i64::from(bias));
    let bias = splat(b, int, bias);
    let biased = b.ins().iadd(bits, bias);
    let shift = b.ins().iconst(types::I32, 23);
    let exponent = b.ins().ishl(biased, shift);
    let power = b.ins().bitcast(ty, flags, exponent);
    b.ins().fmul(er, power)
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

/// `tanh x`: Cephes' `tanhf`, within a few ulp of `f32::tanh`. Both forms of
/// `tanh |x|` are computed and one chosen per lane, then x's sign put back (so that
/// tanh(−0) is −0, which `x + x³·P(x²)` made +0).
pub fn tanh(b: &mut FunctionBuilder, ty: Type, x: Value) -> Value {
    let int = bits_type(ty);
    let flags = MemFlagsData::new();
    let bits = b.ins().bitcast(int, flags, x);
    let mask = |b: &mut FunctionBuilder, m: u32| {
        let m = b.ins().iconst(types::I32, i64::from(m));
        splat(b, int, m)
    };
    let (magnitude_mask, sign_mask) = (mask(b, 0x7fff_ffff), mask(b, 0x8000_0000));
    let magnitude = b.ins().band(bits, magnitude_mask);
    let magnitude = b.ins().bitcast(ty, flags, magnitude);
    let sign = b.ins().band(bits, sign_mask);
    // |x| large: 1 − 2/(e^2|x| + 1).
    let twice = b.ins().fadd(magnitude, magnitude);
    let e = exp(b, ty, twice);
    let (one, two) = (constant(b, ty, 1.0), constant(b, ty, 2.0));
    let denominator = b.ins().fadd(e, one);
    let fraction = b.ins().fdiv(two, denominator);
    let large = b.ins().fsub(one, fraction);
    // |x| small: |x| + |x|³·P(x²).
    let square = b.ins().fmul(x, x);
    let mut p = constant(b, ty, TANH_POLYNOMIAL[0]);
    for coefficient in &TANH_POLYNOMIAL[1..] {
        let coefficient = constant(b, ty, *coefficient);
        let product = b.ins().fmul(p, square);
        p = b.ins().fadd(product, coefficient);
    }
    let p = b.ins().fmul(p, square);
    let p = b.ins().fmul(p, magnitude);
    let small = b.ins().fadd(p, magnitude);
    let threshold = constant(b, ty, TANH_POLYNOMIAL_BELOW);
    let is_small = b.ins().fcmp(FloatCC::LessThan, magnitude, threshold);
    let result = choose(b, ty, is_small, small, large);
    let result = b.ins().bitcast(int, flags, result);
    let result = b.ins().bor(result, sign);
    let result = b.ins().bitcast(ty, flags, result);
    nan_through(b, ty, x, result)
}

/// `result`, or `x` where `x` is NaN: `exp` clamps its input, which would turn a NaN
/// into a number.
fn nan_through(b: &mut FunctionBuilder, ty: Type, x: Value, result: Value) -> Value {
    let ordered = b.ins().fcmp(FloatCC::Ordered, x, x);
    choose(b, ty, ordered, result, x)
}
