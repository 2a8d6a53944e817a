//! The register tile in Cranelift IR, for CPUs without the precompiled tiles' AVX2+FMA
//! (and as a cross-check of them): the microkernels' exact ABI, `fn(k, a, lda, b, ldb,
//! c, ldc, flags, rows, columns, bias, residual)`, C (MR x NR) += A (MR x K) · B (K x
//! NR) over the same panels (`a[p * lda + r]`, `b[p * ldb + c]`: `lda` is MR and `ldb`
//! NR where they are packed, wider where a panel is read in place), C row-major at row
//! stride `ldc`, overwritten unless `flags` has `ACCUMULATE`, only its first `rows`
//! rows and `columns` columns stored (an edge tile goes through a stack slot); with
//! `OFFSETS` in `flags`, B's steps are where a table of offsets puts them. Unlike
//! the precompiled tiles this one reads all MR rows of A and NR columns of B, so its
//! callers keep the panels packed.
//!
//! The last K block of a conv can finish its epilogue in the tile while the sums are in
//! registers, instead of a pass over C after the product: `bias` (non-null: row r adds
//! `bias[r]`), then `residual` (non-null: the tile at the same place of a tensor with
//! the same row stride is added), then `RELU` in `flags`. This order is the fused
//! graph's `Bias, Add, Relu` (`epilogue::TileEpilogue`).
//!
//! Cranelift's x64 backend has 16 xmm registers and no vector wider than f32x4, so the
//! tile is 6x8: 12 accumulators, two vectors of B and one broadcast of A. `fma` is used
//! where the ISA has it (`has_fma`), else a multiply and an add.

use super::function;
use super::loops::{counted, if_else};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    Function, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, UserFuncName, Value, types,
};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, Variable};

/// The generated tile's rows (MR) and columns (NR).
pub const MR: u64 = 6;
pub const NR: u64 = 8;

const LANES: u64 = 4;

/// `flags`: C is added to rather than overwritten.
pub const ACCUMULATE: u32 = 1;
/// `flags`: the stored values are `max(value, 0)`, after the bias and the residual.
pub const RELU: u32 = 2;
/// `flags`: `ldb` is the address of a table of K i64 offsets, in floats from `b`, of
/// each step of B (a conv's taps over shifted copies of its input, whose rows are not
/// one stride apart).
pub const OFFSETS: u32 = 4;

/// The types of every tile's parameters `(k, a, lda, b, ldb, c, ldc, flags, rows,
/// columns, bias, residual)`: the precompiled microkernels' and the generated one's, and
/// what the loop nests call.
pub fn parameters(pointer: types::Type) -> [types::Type; 12] {
    [
        types::I64,
        pointer,
        types::I64,
        pointer,
        types::I64,
        pointer,
        types::I64,
        types::I32,
        types::I32,
        types::I32,
        pointer,
        pointer,
    ]
}

/// The tile function, `extern "C" fn(k, a, lda, b, ldb, c, ldc, flags, rows, columns,
/// bias, residual)`, for `frontend`; `fma` when the ISA it is compiled for has fused
/// multiply-adds.
pub fn generate(frontend: TargetFrontendConfig, fma: bool) -> Function {
    let params = parameters(frontend.pointer_type());
    function(UserFuncName::user(1, 0), &params, frontend, |b, params| {
        let &[
            k,
            a,
            lda,
            bp,
            ldb,
            c,
            ldc,
            flags,
            rows,
            columns,
            bias,
            residual,
        ] = params
        else {
            unreachable!("twelve parameters declared")
        };
        let sums = products(b, fma, k, (a, lda), (bp, ldb), flags);
        let accumulate = b.ins().band_imm_u(flags, i64::from(ACCUMULATE));
        let relu = b.ins().band_imm_u(flags, i64::from(RELU));
        let whole = Store {
            c,
            ldc,
            accumulate,
            relu,
            bias,
            residual,
        };
        let full_rows = b.ins().icmp_imm_s(IntCC::Equal, rows, MR as i64);
        let full_columns = b.ins().icmp_imm_s(IntCC::Equal, columns, NR as i64);
        let full = b.ins().band(full_rows, full_columns);
        // The epilogue takes the one-float-at-a-time way: this tile is the fallback and
        // the cross-check, and the register way stays as simple as the plain product.
        let no_relu = b.ins().icmp_imm_s(IntCC::Equal, relu, 0);
        let pointers = b.ins().bor(bias, residual);
        let no_pointers = b.ins().icmp_imm_s(IntCC::Equal, pointers, 0);
        let plain = b.ins().band(no_relu, no_pointers);
        let fast = b.ins().band(full, plain);
        if_else(
            b,
            fast,
            |b| whole.registers(b, &sums),
            |b| whole.edge(b, &sums, rows, columns),
        );
    })
}

/// Where a tile's sums go: C at row stride `ldc`, added to it when `accumulate`, then
/// the epilogue the other parameters ask for.
struct Store {
    c: Value,
    ldc: Value,
    accumulate: Value,
    relu: Value,
    bias: Value,
    residual: Value,
}

impl Store {
    /// Every row and column of the tile, straight from the registers.
    fn registers(&self, b: &mut FunctionBuilder, sums: &[Vec<Variable>]) {
        let flags = MemFlagsData::new().with_notrap();
        let row_bytes = b.ins().imul_imm_s(self.ldc, 4);
        let store = |b: &mut FunctionBuilder, add: bool| {
            let mut row_at = self.c;
            for row in sums {
                for (v, &var) in row.iter().enumerate() {
                    let offset = (v as u64 * LANES * 4) as i32;
                    let mut value = b.use_var(var);
                    if add {
                        let old = b.ins().load(types::F32X4, flags, row_at, offset);
                        value = b.ins().fadd(value, old);
                    }
                    b.ins().store(flags, value, row_at, offset);
                }
                row_at = b.ins().iadd(row_at, row_bytes);
            }
        };
        if_else(b, self.accumulate, |b| store(b, true), |b| store(b, false));
    }

    /// The first `rows` rows and `columns` columns, through a stack slot, one float at
    /// a time, with the epilogue.
    fn edge(&self, b: &mut FunctionBuilder, sums: &[Vec<Variable>], rows: Value, columns: Value) {
        let flags = MemFlagsData::new().with_notrap();
        let pointer = b.func.signature.params[1].value_type;
        let slot = b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            (MR * NR * 4) as u32,
            4,
        ));
        for (r, row) in sums.iter().enumerate() {
            for (v, &var) in row.iter().enumerate() {
                let value = b.use_var(var);
                let at = ((r as u64 * NR + v as u64 * LANES) * 4) as i32;
                b.ins().stack_store(pointer, value, slot, at);
            }
        }
        let tile = b.ins().stack_addr(pointer, slot, 0);
        let (rows, columns) = (
            b.ins().uextend(types::I64, rows),
            b.ins().uextend(types::I64, columns),
        );
        let start = b.ins().iconst(types::I64, 0);
        counted(b, start, rows, 1, |b, r| {
            let from_row = b.ins().imul_imm_s(r, (NR * 4) as i64);
            let from_row = b.ins().iadd(tile, from_row);
            let row_bytes = b.ins().imul(r, self.ldc);
            let row_bytes = b.ins().imul_imm_s(row_bytes, 4);
            let to_row = b.ins().iadd(self.c, row_bytes);
            let bias = self.bias_of_row(b, r);
            let start = b.ins().iconst(types::I64, 0);
            counted(b, start, columns, 1, |b, j| {
                let bytes = b.ins().imul_imm_s(j, 4);
                let from = b.ins().iadd(from_row, bytes);
                let to = b.ins().iadd(to_row, bytes);
                let mut value = b.ins().load(types::F32, flags, from, 0);
                let old = b.ins().load(types::F32, flags, to, 0);
                let added = b.ins().fadd(value, old);
                value = b.ins().select(self.accumulate, added, value);
                value = b.ins().fadd(value, bias);
                let element = b.ins().iadd(row_bytes, bytes);
                value = self.plus_residual(b, value, element);
                let zero = b.ins().f32const(0.0);
                let rectified = super::epilogue::larger(b, types::F32, value, zero);
                value = b.ins().select(self.relu, rectified, value);
                b.ins().store(flags, value, to, 0);
            });
        });
    }

    /// Row `r`'s bias; without one -0.0, which adds nothing (not even a sign: +0.0
    /// would turn a -0.0 sum into +0.0).
    fn bias_of_row(&self, b: &mut FunctionBuilder, r: Value) -> Value {
        let bias = b.declare_var(types::F32);
        let nothing = b.ins().f32const(-0.0);
        b.def_var(bias, nothing);
        let present = b.ins().icmp_imm_s(IntCC::NotEqual, self.bias, 0);
        if_else(
            b,
            present,
            |b| {
                let bytes = b.ins().imul_imm_s(r, 4);
                let at = b.ins().iadd(self.bias, bytes);
                let value = b
                    .ins()
                    .load(types::F32, MemFlagsData::new().with_notrap(), at, 0);
                b.def_var(bias, value);
            },
            |_| {},
        );
        b.use_var(bias)
    }

    /// `value` plus the residual's element `bytes` from its corner, if there is one.
    fn plus_residual(&self, b: &mut FunctionBuilder, value: Value, bytes: Value) -> Value {
        let sum = b.declare_var(types::F32);
        b.def_var(sum, value);
        let present = b.ins().icmp_imm_s(IntCC::NotEqual, self.residual, 0);
        if_else(
            b,
            present,
            |b| {
                let at = b.ins().iadd(self.residual, bytes);
                let other = b
                    .ins()
                    .load(types::F32, MemFlagsData::new().with_notrap(), at, 0);
                let added = b.ins().fadd(value, other);
                b.def_var(sum, added);
            },
            |_| {},
        );
        b.use_var(sum)
    }
}

/// A·B over `k` steps of the panels (`lda` and `ldb` floats apart, or B's steps where
/// the table at `ldb` puts them when `flags` has `OFFSETS`), in registers: MR rows of
/// NR / 4 vectors.
fn products(
    b: &mut FunctionBuilder,
    fma: bool,
    k: Value,
    (a, lda): (Value, Value),
    (bp, ldb): (Value, Value),
    flags: Value,
) -> Vec<Vec<Variable>> {
    let vectors = NR / LANES;
    let zero = b.ins().f32const(0.0);
    let zero = b.ins().splat(types::F32X4, zero);
    let sums: Vec<Vec<Variable>> = (0..MR)
        .map(|_| {
            (0..vectors)
                .map(|_| {
                    let var = b.declare_var(types::F32X4);
                    b.def_var(var, zero);
                    var
                })
                .collect()
        })
        .collect();
    let a_step = b.ins().imul_imm_s(lda, 4);
    let uses_table = b.ins().band_imm_u(flags, i64::from(OFFSETS));
    // One loop each way, so that neither tests the flag at every step.
    if_else(
        b,
        uses_table,
        |b| {
            each_step(b, fma, k, (a, a_step), &sums, &|b, p| {
                let entry = b.ins().imul_imm_s(p, 8);
                let entry = b.ins().iadd(ldb, entry);
                let offset = b
                    .ins()
                    .load(types::I64, MemFlagsData::new().with_notrap(), entry, 0);
                let bytes = b.ins().imul_imm_s(offset, 4);
                b.ins().iadd(bp, bytes)
            })
        },
        |b| {
            let b_step = b.ins().imul_imm_s(ldb, 4);
            each_step(b, fma, k, (a, a_step), &sums, &|b, p| {
                let bytes = b.ins().imul(p, b_step);
                b.ins().iadd(bp, bytes)
            })
        },
    );
    sums
}

/// Adds step p of A·B to `sums` for every p below `k`: A's step `a_step` bytes after
/// the last, B's where `b_row` says.
fn each_step(
    b: &mut FunctionBuilder,
    fma: bool,
    k: Value,
    (a, a_step): (Value, Value),
    sums: &[Vec<Variable>],
    b_row: &dyn Fn(&mut FunctionBuilder, Value) -> Value,
) {
    let pointer = b.func.signature.params[1].value_type;
    let a_at = b.declare_var(pointer);
    b.def_var(a_at, a);
    let flags = MemFlagsData::new().with_notrap();
    let start = b.ins().iconst(types::I64, 0);
    counted(b, start, k, 1, |b, p| {
        let a_panel = b.use_var(a_at);
        let b_panel = b_row(b, p);
        let columns: Vec<Value> = (0..NR / LANES)
            .map(|v| {
                b.ins()
                    .load(types::F32X4, flags, b_panel, (v * LANES * 4) as i32)
            })
            .collect();
        for (r, row) in sums.iter().enumerate() {
            let scalar = b.ins().load(types::F32, flags, a_panel, (r * 4) as i32);
            let broadcast = b.ins().splat(types::F32X4, scalar);
            for (&var, &column) in row.iter().zip(&columns) {
                let so_far = b.use_var(var);
                let next = if fma {
                    b.ins().fma(broadcast, column, so_far)
                } else {
                    let product = b.ins().fmul(broadcast, column);
                    b.ins().fadd(product, so_far)
                };
                b.def_var(var, next);
            }
        }
        let next_a = b.ins().iadd(a_panel, a_step);
        b.def_var(a_at, next_a);
    });
}
