//! Shifted copies of the input for a stride-1, unpadded conv taller than one row,
//! instead of im2col's copy of every tap (kh·kw copies of each input value): one copy
//! of the chunk's input rows per input channel c and kernel column kx, input columns
//! `kx..kx + out_width`, its rows `out_width` floats apart. Output pixel p of the chunk
//! (numbered across its rows) reads tap (c, ky, kx) at float `p + ky·out_width` of copy
//! (c, kx): every tap's B row is consecutive floats across the chunk's rows, at an
//! offset of its own, which a table gives the tile (`tile::OFFSETS`). LeNet-5's C1 copies
//! 4.5 K floats a sample instead of im2col's 19.6 K, its C3 4.2 K instead of 15 K.
//!
//! The scratch holds the copies (each `pitch_rows` rows, those of a full chunk, so that
//! every chunk's table is the same), then the table: one i64 offset per K step, in
//! im2col's order (the packed weights'): c, then ky, then kx.

use super::super::conv::{Geometry, offset, offset_by};
use super::super::loops::fixed;
use super::super::tile::NR;
use super::TableChunk;
use super::straight::copy_floats;
use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;

/// Rows of a copy written per step of its loop, every address in a step a constant
/// offset. Two made LeNet-5 3% faster than one (the loop's overhead on C3's rows of
/// ten floats); writing the copies out whole did as well for 2.6 ms more of its
/// compile, four less well.
const ROWS_PER_STEP: u64 = 2;

impl Geometry {
    /// Input rows of each copy: a full chunk's output rows and the kernel's height.
    fn copy_rows(&self, chunk_rows: u64) -> u64 {
        chunk_rows + self.kernel[0] - 1
    }

    /// Floats from the scratch to the table: the copies, rounded up to an even count
    /// (the table's entries are two floats wide).
    fn copies_floats(&self, chunk_rows: u64) -> u64 {
        let channels = self.channels / self.groups;
        let copies = channels * self.kernel[1] * self.copy_rows(chunk_rows);
        (copies * self.out_width).next_multiple_of(2)
    }

    /// Floats of scratch a chunk of `chunk_rows` rows of shifted copies needs: the
    /// copies and the table, and at least the generated tile's NR − 1 floats after the
    /// copies, which its last panel reads (in columns it never stores; the precompiled
    /// tiles mask them).
    pub fn shifted_copies_scratch(&self, chunk_rows: u64) -> u64 {
        self.copies_floats(chunk_rows) + (2 * self.k()).max(NR)
    }
}

impl TableChunk<'_> {
    /// Writes the chunk's copies and the table; returns the table's address (the copies
    /// start at the scratch). Tap (c, ky, kx)'s row is row ky of copy (c, kx).
    pub fn shifted_copies(&self, b: &mut FunctionBuilder) -> Value {
        let g = self.geometry;
        let channels = g.channels / g.groups;
        let (kh, kw) = (g.kernel[0], g.kernel[1]);
        let pitch = g.copy_rows(self.chunk_rows) * g.out_width;
        let first_input = offset(b, self.input, self.first_row, g.width);
        fixed(b, channels, |b, c| {
            let plane = offset(b, first_input, c, g.height * g.width);
            let copies = offset(b, self.scratch, c, kw * pitch);
            for kx in 0..kw {
                let copy = offset_by(b, copies, kx * pitch);
                let source = offset_by(b, plane, kx);
                // Each copy written in order, ROWS_PER_STEP rows at a time.
                let rows = self.rows + kh - 1;
                let copy_rows = |b: &mut FunctionBuilder, first: Value, count: u64| {
                    let from = offset(b, source, first, g.width);
                    let to = offset(b, copy, first, g.out_width);
                    for y in 0..count {
                        let from = offset_by(b, from, y * g.width);
                        let to = offset_by(b, to, y * g.out_width);
                        copy_floats(b, from, to, g.out_width);
                    }
                };
                fixed(b, rows / ROWS_PER_STEP, |b, step| {
                    let first = b.ins().imul_imm_s(step, ROWS_PER_STEP as i64);
                    copy_rows(b, first, ROWS_PER_STEP);
                });
                if !rows.is_multiple_of(ROWS_PER_STEP) {
                    let first = b
                        .ins()
                        .iconst(types::I64, (rows - rows % ROWS_PER_STEP) as i64);
                    copy_rows(b, first, rows % ROWS_PER_STEP);
                }
            }
        });
        let table = offset_by(b, self.scratch, g.copies_floats(self.chunk_rows));
        self.write_table(b, table, kw * pitch, |ky, kx| kx * pitch + ky * g.out_width);
        table
    }
}
