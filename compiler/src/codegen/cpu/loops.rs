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
