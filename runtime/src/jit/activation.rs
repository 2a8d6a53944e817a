//! Tanh and sigmoid over a row of floats, the helpers generated epilogues call for
//! those two activations (`Arg::Tanh`, `Arg::Sigmoid`). Inline, Cranelift's x64 backend
//! spends dozens of instructions on each f32x4 of them (the exponent's bit arithmetic,
//! the division, the NaN select); rustc compiles the same algorithm, with the same
//! constants (the codegen's `exp` module: Cephes' `expf` for the sigmoid, a rational
//! function for tanh), sixteen lanes at a time with FMA. One body, compiled for AVX-512, AVX2+FMA and
//! plain x86-64 (or any other target), the widest the CPU runs chosen at each call.
//!
//! A row is taken in blocks of sixteen, the same arithmetic in every lane, so every value
//! gets the same result wherever it falls in a row, and so whatever rows the threads cut:
//! a row that ends in a short block ends with the full block that ends it, overlapping
//! the one before (a row shorter than a block is copied into one).

use cnnc_compiler::codegen::cpu::exp::{
    EXP_RANGE, LN2_HIGH, LN2_LOW, POLYNOMIAL, ROUNDER, TANH_DENOMINATOR, TANH_NUMERATOR,
    TANH_SATURATES,
};

/// `fn(source, destination, count)`: `destination[i] = f(source[i])` for `i < count`;
/// the two may be the same row.
pub type ActivationFn = unsafe extern "C" fn(*const f32, *mut f32, usize);

const BLOCK: usize = 16;

/// `tanh` over a row, as `Arg::Tanh`.
///
/// # Safety
/// `source` and `destination` hold `count` floats each, and are the same row or do not
/// overlap.
pub unsafe extern "C" fn tanh(source: *const f32, destination: *mut f32, count: usize) {
    // SAFETY: as the caller promised.
    unsafe { dispatch(source, destination, count, Activation::Tanh) }
}

/// `1 / (1 + e^−x)` over a row, as `Arg::Sigmoid`.
///
/// # Safety
/// As `tanh`.
pub unsafe extern "C" fn sigmoid(source: *const f32, destination: *mut f32, count: usize) {
    // SAFETY: as the caller promised.
    unsafe { dispatch(source, destination, count, Activation::Sigmoid) }
}

/// `tanh` over `values`, in place: the fused executor's epilogues use it too.
pub fn tanh_in_place(values: &mut [f32]) {
    // SAFETY: source and destination are the same row of `values.len()` floats.
    unsafe { tanh(values.as_ptr(), values.as_mut_ptr(), values.len()) }
}

/// The sigmoid over `values`, in place, as `tanh_in_place`.
pub fn sigmoid_in_place(values: &mut [f32]) {
    // SAFETY: as in `tanh_in_place`.
    unsafe { sigmoid(values.as_ptr(), values.as_mut_ptr(), values.len()) }
}

#[derive(Clone, Copy)]
enum Activation {
    Tanh,
    Sigmoid,
}

/// # Safety
/// As `tanh`.
unsafe fn dispatch(source: *const f32, destination: *mut f32, count: usize, f: Activation) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("fma") {
            // SAFETY: the CPU has the features; the rows as the caller promised.
            return unsafe { row_avx512(source, destination, count, f) };
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: as above.
            return unsafe { row_avx2(source, destination, count, f) };
        }
    }
    // SAFETY: the rows as the caller promised.
    unsafe { row::<false>(source, destination, count, f) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn row_avx512(source: *const f32, destination: *mut f32, count: usize, f: Activation) {
    // SAFETY: as `dispatch`'s caller promised.
    unsafe { row::<true>(source, destination, count, f) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_avx2(source: *const f32, destination: *mut f32, count: usize, f: Activation) {
    // SAFETY: as `dispatch`'s caller promised.
    unsafe { row::<true>(source, destination, count, f) }
}

/// The row, block by block; `FMA` where the CPU fuses multiply-adds (without it,
/// `mul_add` would be a library call).
#[inline(always)]
unsafe fn row<const FMA: bool>(
    source: *const f32,
    destination: *mut f32,
    count: usize,
    f: Activation,
) {
    let apply = |block: &mut [f32; BLOCK]| match f {
        Activation::Tanh => each(block, tanh_of::<FMA>),
        Activation::Sigmoid => each(block, sigmoid_of::<FMA>),
    };
    let read = |at: usize| {
        // SAFETY: every call below has `at + BLOCK <= count`: within the row.
        unsafe { source.add(at).cast::<[f32; BLOCK]>().read_unaligned() }
    };
    let write = |at: usize, block: [f32; BLOCK]| {
        // SAFETY: as in `read`.
        unsafe {
            destination
                .add(at)
                .cast::<[f32; BLOCK]>()
                .write_unaligned(block)
        }
    };
    let whole = count - count % BLOCK;
    // A row of at least a block ends with the block that ends it, overlapping the
    // last whole one: read before any write (the row may be written in place), it is
    // stored after them, and where the two overlap both computed the same values.
    // Copied into a block of its own instead, the tail cost two `memmove` calls:
    // 4800 values in rows of 196 (LeNet-5's C1 at two threads is 24 such rows) took
    // 2.0 us against 1.4 in one row (1.6 now).
    let last = (whole < count && count >= BLOCK).then(|| {
        let mut block = read(count - BLOCK);
        apply(&mut block);
        block
    });
    for at in (0..whole).step_by(BLOCK) {
        let mut block = read(at);
        apply(&mut block);
        write(at, block);
    }
    if let Some(block) = last {
        write(count - BLOCK, block);
    } else if whole < count {
        let tail = count - whole;
        let mut block = [0.0f32; BLOCK];
        // SAFETY: the tail's `count - whole` floats are within both rows.
        unsafe {
            std::ptr::copy_nonoverlapping(source.add(whole), block.as_mut_ptr(), tail);
            apply(&mut block);
            std::ptr::copy_nonoverlapping(block.as_ptr(), destination.add(whole), tail);
        }
    }
}

/// `f` of every lane: a loop rustc vectorizes, every lane's arithmetic branch-free.
#[inline(always)]
fn each(block: &mut [f32; BLOCK], f: impl Fn(f32) -> f32) {
    for value in block.iter_mut() {
        *value = f(*value);
    }
}

/// `a·b + c`, fused where the CPU can.
#[inline(always)]
fn multiply_add<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// `x.max(low)` as one `max` instruction that passes a NaN `x` on: every step after
/// the clamps then keeps it NaN, with no select at the end (a tenth of tanh's
/// instructions).
#[inline(always)]
fn at_least(x: f32, low: f32) -> f32 {
    if x < low { low } else { x }
}

/// `x.min(high)`, as `at_least`.
#[inline(always)]
fn at_most(x: f32, high: f32) -> f32 {
    if high < x { high } else { x }
}

/// `x = n·ln 2 + r`, `|r| <= ln 2 / 2`, as the codegen's `exp::exp` splits it: n in
/// the low bits of the first value returned (n plus `ROUNDER`), and r.
#[inline(always)]
fn reduce<const FMA: bool>(x: f32) -> (f32, f32) {
    let shifted = multiply_add::<FMA>(x, std::f32::consts::LOG2_E, ROUNDER);
    let n = shifted - ROUNDER;
    let r = multiply_add::<FMA>(n, -LN2_HIGH, x);
    (shifted, multiply_add::<FMA>(n, -LN2_LOW, r))
}

/// `e^r − 1` of a reduced `r`: `r + r²·P(r)`.
#[inline(always)]
fn exp_minus_one_reduced<const FMA: bool>(r: f32) -> f32 {
    multiply_add::<FMA>(horner::<FMA>(&POLYNOMIAL, r), r * r, r)
}

/// `coefficients` (highest power first) as a polynomial in `x`.
#[inline(always)]
fn horner<const FMA: bool>(coefficients: &[f32], x: f32) -> f32 {
    coefficients[1..]
        .iter()
        .fold(coefficients[0], |sum, &c| multiply_add::<FMA>(sum, x, c))
}

/// `2^n` of `reduce`'s first value: the biased exponent n + 127 in bits 23..31 (its
/// bits are ROUNDER's plus n).
#[inline(always)]
fn power_of_two(shifted: f32) -> f32 {
    let biased = shifted
        .to_bits()
        .wrapping_add(127u32.wrapping_sub(ROUNDER.to_bits()));
    f32::from_bits(biased << 23)
}

/// `e^x`, as the codegen's `exp::exp`.
#[inline(always)]
fn exp_of<const FMA: bool>(x: f32) -> f32 {
    let x = at_most(at_least(x, EXP_RANGE.0), EXP_RANGE.1);
    let (shifted, r) = reduce::<FMA>(x);
    (exp_minus_one_reduced::<FMA>(r) + 1.0) * power_of_two(shifted)
}

/// `tanh x ≈ x·P(x²) / Q(x²)`, x clamped to ±`TANH_SATURATES` and the result to
/// [−1, 1], as the codegen's `exp::tanh`: within 5 ulp (`tools/fit_tanh.py`), where
/// the exponential form it replaced kept 2 in 1.3x the time.
#[inline(always)]
fn tanh_of<const FMA: bool>(x: f32) -> f32 {
    let x = at_most(at_least(x, -TANH_SATURATES), TANH_SATURATES);
    let square = x * x;
    let numerator = horner::<FMA>(&TANH_NUMERATOR, square) * x;
    let quotient = numerator / horner::<FMA>(&TANH_DENOMINATOR, square);
    at_most(at_least(quotient, -1.0), 1.0)
}

/// `1 / (1 + e^−x)`, the reference's formula.
#[inline(always)]
fn sigmoid_of<const FMA: bool>(x: f32) -> f32 {
    1.0 / (1.0 + exp_of::<FMA>(-x))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units of the last place between two finite floats of one sign.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    fn apply(f: ActivationFn, values: &[f32]) -> Vec<f32> {
        let mut out = vec![f32::NAN; values.len()];
        // SAFETY: both rows hold `values.len()` floats.
        unsafe { f(values.as_ptr(), out.as_mut_ptr(), values.len()) };
        out
    }

    /// Every 97th float bit pattern's value in [-20, 20], both signs.
    fn samples() -> Vec<f32> {
        (0..0x4200_0000u32)
            .step_by(97 * 1024)
            .map(f32::from_bits)
            .flat_map(|x| [x, -x])
            .collect()
    }

    #[test]
    fn tanh_is_within_a_few_ulp_of_the_library() {
        let xs = samples();
        for (x, y) in xs.iter().zip(apply(tanh, &xs)) {
            let expected = x.tanh();
            // 5 ulp is what `tools/fit_tanh.py` reports for the f32 evaluation.
            assert!(
                ulps(y, expected) <= 5 || (y - expected).abs() < 1e-7,
                "tanh({x}) = {y}, expected {expected}"
            );
        }
    }

    #[test]
    fn sigmoid_is_within_a_few_ulp_of_the_formula() {
        let xs: Vec<f32> = samples().into_iter().filter(|x| x.abs() < 80.0).collect();
        for (x, y) in xs.iter().zip(apply(sigmoid, &xs)) {
            let expected = (1.0 / (1.0 + (-f64::from(*x)).exp())) as f32;
            assert!(
                ulps(y, expected) <= 4,
                "sigmoid({x}) = {y}, expected {expected}"
            );
        }
    }

    #[test]
    fn extremes_saturate_and_nan_passes_through() {
        let xs = [
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e30,
            -1e30,
            f32::NAN,
            0.0,
            -0.0,
        ];
        let t = apply(tanh, &xs);
        assert_eq!(&t[..4], &[1.0, -1.0, 1.0, -1.0]);
        assert!(t[4].is_nan());
        assert_eq!(t[5].to_bits(), 0.0f32.to_bits());
        assert_eq!(t[6].to_bits(), (-0.0f32).to_bits(), "tanh(-0) is -0");
        let s = apply(sigmoid, &xs);
        assert_eq!(s[0], 1.0);
        assert!(s[1] >= 0.0 && s[1] < 1e-37);
        assert!(s[4].is_nan());
        assert_eq!(s[5], 0.5);
    }

    #[test]
    fn a_value_does_not_depend_on_where_it_falls_in_the_row() {
        let xs: Vec<f32> = (0..53).map(|i| (i as f32 - 26.0) * 0.173).collect();
        let whole = apply(tanh, &xs);
        for start in 0..xs.len() {
            for len in [1, 5, 16, 17] {
                let end = (start + len).min(xs.len());
                assert_eq!(apply(tanh, &xs[start..end]), whole[start..end]);
            }
        }
    }

    #[test]
    fn in_place_equals_out_of_place() {
        let xs: Vec<f32> = (0..40).map(|i| (i as f32 - 20.0) * 0.31).collect();
        let out = apply(sigmoid, &xs);
        let mut row = xs.clone();
        // SAFETY: the row holds its length, read and written in place.
        unsafe { sigmoid(row.as_ptr(), row.as_mut_ptr(), row.len()) };
        assert_eq!(row, out);
    }
}
