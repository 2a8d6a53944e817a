//! Counted loops over i64 induction variables: the shape of every generated loop nest.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;

/// `for i in start..end step step { body(i) }` with `end` a value known at run time.
pub fn counted(
    b: &mut FunctionBuilder,
    start: Value,
    end: Value,
    step: i64,
    mut body: impl FnMut(&mut FunctionBuilder, Value),
) {
    let header = b.create_block();
    let inner = b.create_block();
    let exit = b.create_block();
    b.append_block_param(header, types::I64);
    b.ins().jump(header, &[start.into()]);
    b.switch_to_block(header);
    let i = b.block_params(header)[0];
    let more = b.ins().icmp(IntCC::SignedLessThan, i, end);
    b.ins().brif(more, inner, &[], exit, &[]);
    b.switch_to_block(inner);
    b.seal_block(inner);
    body(b, i);
    let next = b.ins().iadd_imm_s(i, step);
    b.ins().jump(header, &[next.into()]);
    b.seal_block(header);
    b.switch_to_block(exit);
    b.seal_block(exit);
}

/// `for i in 0..count { body(i) }` with a trip count fixed at compile time; a loop of
/// one iteration is written straight, with `i` the constant 0.
pub fn fixed(
    b: &mut FunctionBuilder,
    count: u64,
    mut body: impl FnMut(&mut FunctionBuilder, Value),
) {
    match count {
        0 => {}
        1 => {
            let zero = b.ins().iconst(types::I64, 0);
            body(b, zero);
        }
        _ => {
            let start = b.ins().iconst(types::I64, 0);
            let end = b.ins().iconst(types::I64, count as i64);
            counted(b, start, end, 1, body);
        }
    }
}

/// `if cond { then } else { otherwise }`, `cond` an integer (nonzero is true).
pub fn if_else(
    b: &mut FunctionBuilder,
    cond: Value,
    then: impl FnOnce(&mut FunctionBuilder),
    otherwise: impl FnOnce(&mut FunctionBuilder),
) {
    let (yes, no, after) = (b.create_block(), b.create_block(), b.create_block());
    b.ins().brif(cond, yes, &[], no, &[]);
    for (block, body) in [
        (yes, Box::new(then) as Box<dyn FnOnce(&mut FunctionBuilder)>),
        (no, Box::new(otherwise)),
    ] {
        b.switch_to_block(block);
        b.seal_block(block);
        body(b);
        b.ins().jump(after, &[]);
    }
    b.switch_to_block(after);
    b.seal_block(after);
}

/// The largest value `divide` divides exactly: a chunk's column (chunks hold a few
/// thousand columns at most).
pub const DIVIDEND_LIMIT: u64 = 1 << 24;

/// `x / d` for `0 <= x < DIVIDEND_LIMIT` and a constant `d >= 1`: a shift for a power
/// of two, else a multiply by the rounded-up reciprocal and a shift (a division
/// instruction costs tens of cycles, and this runs per packed vector).
pub fn divide(b: &mut FunctionBuilder, x: Value, d: u64) -> Value {
    if d.is_power_of_two() {
        return b.ins().ushr_imm_u(x, d.trailing_zeros() as i64);
    }
    let (multiplier, shift) = reciprocal(d);
    let product = b.ins().imul_imm_s(x, multiplier as i64);
    b.ins().ushr_imm_u(product, i64::from(shift))
}

/// `(ceil(2^s / d), s)` with `s = 24 + ceil(log2 d)`: the reciprocal exceeds `1/d` by
/// `e / (d·2^s)` with `e < d`, so `x · m / 2^s` exceeds `x / d` by less than `x / 2^s <
/// 1/d` for `x < 2^24`, never reaching the next integer; and `x · m < 2^49` does not
/// overflow.
fn reciprocal(d: u64) -> (u64, u32) {
    let shift = 24 + (64 - (d - 1).leading_zeros());
    ((1u64 << shift).div_ceil(d), shift)
}

#[cfg(test)]
mod tests {
    use super::{DIVIDEND_LIMIT, reciprocal};

    #[test]
    fn the_reciprocal_divides_exactly_below_the_limit() {
        for d in [3u64, 5, 6, 7, 9, 10, 12, 14, 24, 48, 96, 1000] {
            let (m, s) = reciprocal(d);
            for x in (0..DIVIDEND_LIMIT)
                .step_by(7)
                .chain(DIVIDEND_LIMIT - 64..DIVIDEND_LIMIT)
            {
                assert_eq!((x * m) >> s, x / d, "{x} / {d}");
            }
        }
    }
}
