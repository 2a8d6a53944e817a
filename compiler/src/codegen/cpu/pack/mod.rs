//! im2col into the tile's panels: K rows `p0..p0 + kc` of the input, each output pixel
//! of the chunk a column, element (p, col) at `scratch[(col / W) * kc * W + p * W + col
//! % W]` for panels `W` columns wide (the tile's NR; its MR for a pixel-major product,
//! whose pixels are the tile's rows).
//!
//! A pointwise convolution (1x1, stride 1, no padding; and every dense layer) reads its
//! input as the matrix itself: whole panels are copied four floats at a time. Otherwise
//! a chunk of whole output rows is packed by straight-line code (`straight.rs`); other
//! chunks (pixel-major spans that start mid-row, or patterns too long to write out)
//! split each
//! row of the window's taps where it leaves the input: zeros for the padding, direct
//! loads for the interior, with no per-element test.

mod shifted;
mod staged;
mod straight;

pub(super) use straight::{copy_floats, zero_floats};

use super::conv::{Geometry, load_at, offset, offset_by};
use super::loops::{counted, divide, fixed, if_else};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;

/// A chunk of whole output rows whose tiles take B's steps from a table of offsets,
/// one per K step (`tile::OFFSETS`): over shifted copies of its input
/// (`TableChunk::shifted_copies`) or its staged plane (`TableChunk::staged_rows`).
pub struct TableChunk<'g> {
    pub geometry: &'g Geometry,
    /// Rows of a full chunk: every chunk lays its copies or planes out for that many,
    /// so that every chunk's table is the same.
    pub chunk_rows: u64,
    /// The chunk's output rows.
    pub first_row: Value,
    pub rows: u64,
    /// The group's input, and the scratch the copies or planes and the table go to.
    pub input: Value,
    pub scratch: Value,
}

impl TableChunk<'_> {
    /// The table at `table`, in the packed weights' order (c, then ky, then kx): tap
    /// (c, ky, kx) at `c·per_channel + tap(ky, kx)` floats; a loop over the channels.
    fn write_table(
        &self,
        b: &mut FunctionBuilder,
        table: Value,
        per_channel: u64,
        tap: impl Fn(u64, u64) -> u64,
    ) {
        let g = self.geometry;
        let channels = g.channels / g.groups;
        let (kh, kw) = (g.kernel[0], g.kernel[1]);
        let flags = MemFlagsData::new().with_notrap();
        fixed(b, channels, |b, c| {
            let entries = offset(b, table, c, 2 * kh * kw);
            let base = b.ins().imul_imm_s(c, per_channel as i64);
            for ky in 0..kh {
                for kx in 0..kw {
                    let value = b.ins().iadd_imm_s(base, tap(ky, kx) as i64);
                    b.ins()
                        .store(flags, value, entries, ((ky * kw + kx) * 8) as i32);
                }
            }
        });
    }
}

/// One row of one tap: where its inputs and its packed columns are.
struct Row {
    source: Value,
    destination: Value,
    /// The chunk column of the row's output 0.
    first: Value,
    /// The input column of output 0's tap.
    x0: Value,
}

/// The output pixels a chunk packs, numbered from 0 in its panels.
#[derive(Clone, Copy)]
pub enum Pixels {
    /// Whole output rows `first_row..first_row + rows`.
    Rows { first_row: Value, rows: u64 },
    /// `count` pixels from pixel `first`, which may start and end anywhere in a row.
    Span { first: Value, count: u64 },
}

/// One output row a chunk touches: the row, the chunk column of its pixel 0, and the
/// part of the row in the chunk (all of it for `Pixels::Rows`).
struct OutputRow {
    oy: Value,
    first: Value,
    window: Option<(Value, Value)>,
}

/// What a K block's packing needs.
pub struct Packing<'g> {
    pub geometry: &'g Geometry,
    /// Columns per panel.
    pub panel: u64,
    pub kc: u64,
    pub p0: Value,
    pub pixels: Pixels,
    pub input: Value,
    pub scratch: Value,
    /// Room for the staged plane of a padded or phased convolution
    /// (`Geometry::staged_floats`), which the straight-line packing uses.
    pub staging: Value,
}

impl Packing<'_> {
    pub fn generate(&self, b: &mut FunctionBuilder) {
        let g = self.geometry;
        if g.pointwise() {
            return self.pointwise(b);
        }
        if let Pixels::Rows { first_row, rows } = self.pixels
            && let Some(plan) = g.straight_packing(self.panel, rows)
        {
            return self.straight(b, plan, first_row, rows);
        }
        self.general(b);
    }

    /// Row p of B is input channel p0 + p, at the chunk's columns: copy it panel by
    /// panel.
    fn pointwise(&self, b: &mut FunctionBuilder) {
        let g = self.geometry;
        let (nr, kc) = (self.panel, self.kc);
        let (first_column, n) = match self.pixels {
            Pixels::Rows { first_row, rows } => {
                let first = b.ins().imul_imm_s(first_row, g.out_width as i64);
                (first, rows * g.out_width)
            }
            Pixels::Span { first, count } => (first, count),
        };
        let chunk = offset(b, self.input, first_column, 1);
        fixed(b, kc, |b, p| {
            let channel = b.ins().iadd(self.p0, p);
            let source = offset(b, chunk, channel, g.n());
            let destination = offset(b, self.scratch, p, nr);
            let copy = straight::copy_floats;
            fixed(b, n / nr, |b, j| {
                let from = offset(b, source, j, nr);
                let to = offset(b, destination, j, kc * nr);
                copy(b, from, to, nr);
            });
            if n % nr != 0 {
                let from = offset_by(b, source, (n / nr) * nr);
                let to = offset_by(b, destination, (n / nr) * kc * nr);
                copy(b, from, to, n % nr);
            }
        });
    }

    /// Where the chunk's rows start: for a span, its first row and how many of that
    /// row's pixels come before it. Computed once, before the taps.
    fn span_start(&self, b: &mut FunctionBuilder) -> (Value, Option<Value>) {
        match self.pixels {
            Pixels::Rows { first_row, .. } => (first_row, None),
            Pixels::Span { first, .. } => {
                let width = self.geometry.out_width as i64;
                let first_row = b.ins().udiv_imm_u(first, width);
                let row_start = b.ins().imul_imm_s(first_row, width);
                (first_row, Some(b.ins().isub(first, row_start)))
            }
        }
    }

    /// `body` for every output row the chunk touches (a loop), with the chunk column
    /// of the row's pixel 0 and, for a span, the part of the row in the chunk.
    fn each_output_row(
        &self,
        b: &mut FunctionBuilder,
        (first_row, skipped): (Value, Option<Value>),
        mut body: impl FnMut(&mut FunctionBuilder, OutputRow),
    ) {
        let g = self.geometry;
        let width = g.out_width as i64;
        let rows = match self.pixels {
            Pixels::Rows { rows, .. } => rows,
            Pixels::Span { count, .. } => (count.div_ceil(g.out_width) + 1).min(g.out_height),
        };
        fixed(b, rows, |b, r| {
            let oy = b.ins().iadd(first_row, r);
            let start = b.ins().imul_imm_s(r, width);
            let (Some(skipped), Pixels::Span { count, .. }) = (skipped, self.pixels) else {
                body(
                    b,
                    OutputRow {
                        oy,
                        first: start,
                        window: None,
                    },
                );
                return;
            };
            // The row's pixel 0 is at chunk column r * W - skipped; the chunk holds
            // its pixels [lo, hi).
            let column = b.ins().isub(start, skipped);
            let zero = b.ins().iconst(types::I64, 0);
            let lo = b.ins().ineg(column);
            let lo = b.ins().smax(lo, zero);
            let end = b.ins().iconst(types::I64, count as i64);
            let hi = b.ins().isub(end, column);
            let full = b.ins().iconst(types::I64, width);
            let hi = b.ins().smin(hi, full);
            let hi = b.ins().smax(hi, lo);
            body(
                b,
                OutputRow {
                    oy,
                    first: column,
                    window: Some((lo, hi)),
                },
            );
        });
    }

    fn general(&self, b: &mut FunctionBuilder) {
        let g = self.geometry;
        let area = g.kernel[0] * g.kernel[1];
        let span = self.span_start(b);
        fixed(b, self.kc, |b, p| {
            let row = b.ins().iadd(self.p0, p);
            let channel = b.ins().udiv_imm_u(row, area as i64);
            let tap = b.ins().urem_imm_u(row, area as i64);
            let ky = b.ins().udiv_imm_u(tap, g.kernel[1] as i64);
            let kx = b.ins().urem_imm_u(tap, g.kernel[1] as i64);
            let plane = offset(b, self.input, channel, g.height * g.width);
            // Output (oy, ox) reads input (oy * sh + y0, ox * sw + x0).
            let y0 = b.ins().imul_imm_s(ky, g.dilation[0] as i64);
            let y0 = b.ins().iadd_imm_s(y0, -(g.pads[0] as i64));
            let x0 = b.ins().imul_imm_s(kx, g.dilation[1] as i64);
            let x0 = b.ins().iadd_imm_s(x0, -(g.pads[1] as i64));
            let (lo, hi) = self.interior(b, x0);
            let destination = offset(b, self.scratch, p, self.panel);
            self.each_output_row(b, span, |b, output| {
                let iy = b.ins().imul_imm_s(output.oy, g.stride[0] as i64);
                let iy = b.ins().iadd(iy, y0);
                let inside = b
                    .ins()
                    .icmp_imm_u(IntCC::UnsignedLessThan, iy, g.height as i64);
                let (start, end) = match output.window {
                    Some(window) => window,
                    None => (
                        b.ins().iconst(types::I64, 0),
                        b.ins().iconst(types::I64, g.out_width as i64),
                    ),
                };
                // The interior within the window (all of it for whole rows).
                let (lo, hi) = match output.window {
                    Some(_) => {
                        let lo = b.ins().smax(lo, start);
                        let lo = b.ins().smin(lo, end);
                        let hi = b.ins().smax(hi, start);
                        let hi = b.ins().smin(hi, end);
                        (lo, hi)
                    }
                    None => (lo, hi),
                };
                let first = output.first;
                if_else(
                    b,
                    inside,
                    |b| {
                        let source_row = b.ins().imul_imm_s(iy, g.width as i64);
                        let source_row = offset(b, plane, source_row, 1);
                        self.zeros(b, destination, first, start, lo);
                        let row = Row {
                            source: source_row,
                            destination,
                            first,
                            x0,
                        };
                        self.interior_row(b, &row, lo, hi);
                        self.zeros(b, destination, first, hi, end);
                    },
                    |b| self.zeros(b, destination, first, start, end),
                );
            });
        });
    }

    /// Interior outputs `[from, to)` one at a time (any stride).
    fn scalars(&self, b: &mut FunctionBuilder, row: &Row, from: Value, to: Value) {
        let stride = self.geometry.stride[1] as i64;
        counted(b, from, to, 1, |b, ox| {
            let ix = b.ins().imul_imm_s(ox, stride);
            let ix = b.ins().iadd(ix, row.x0);
            let at = offset(b, row.source, ix, 1);
            let value = b
                .ins()
                .load(types::F32, MemFlagsData::new().with_notrap(), at, 0);
            self.store(b, row.destination, row.first, ox, value);
        });
    }

    /// Interior outputs `[lo, hi)` of a row, four at a time once the column is a
    /// multiple of four (four columns from there never cross a panel, NR being a
    /// multiple of four): one vector load at stride 1, four lanes gathered otherwise, so
    /// the store's panel arithmetic is paid once per four columns.
    fn interior_row(&self, b: &mut FunctionBuilder, row: &Row, lo: Value, hi: Value) {
        // Columns lo.. up to the next multiple of four, one at a time.
        let column = b.ins().iadd(row.first, lo);
        let misalign = b.ins().band_imm_u(column, 3);
        let to_aligned = b.ins().ineg(misalign);
        let to_aligned = b.ins().band_imm_u(to_aligned, 3);
        let head_end = b.ins().iadd(lo, to_aligned);
        let head_end = b.ins().smin(head_end, hi);
        self.scalars(b, row, lo, head_end);
        let left = b.ins().isub(hi, head_end);
        let vectors = b.ins().ushr_imm_u(left, 2);
        let body = b.ins().ishl_imm_u(vectors, 2);
        let body_end = b.ins().iadd(head_end, body);
        let stride = self.geometry.stride[1];
        counted(b, head_end, body_end, 4, |b, ox| {
            let ix = b.ins().imul_imm_s(ox, stride as i64);
            let ix = b.ins().iadd(ix, row.x0);
            let at = offset(b, row.source, ix, 1);
            let values = gather(b, at, stride);
            self.store(b, row.destination, row.first, ox, values);
        });
        self.scalars(b, row, body_end, hi);
    }

    /// The outputs `[lo, hi)` of a row whose tap column `ox * sw + x0` lies inside the
    /// input.
    fn interior(&self, b: &mut FunctionBuilder, x0: Value) -> (Value, Value) {
        let g = self.geometry;
        let sw = g.stride[1] as i64;
        // lo = ceil(-x0 / sw) when x0 < 0, else 0.
        let minus = b.ins().ineg(x0);
        let up = b.ins().iadd_imm_s(minus, sw - 1);
        let lo = b.ins().sdiv_imm_s(up, sw);
        let zero = b.ins().iconst(types::I64, 0);
        let lo = b.ins().smax(lo, zero);
        // hi = floor((W - 1 - x0) / sw) + 1, within [lo, OW].
        let last = b.ins().iconst(types::I64, g.width as i64 - 1);
        let room = b.ins().isub(last, x0);
        let negative = b.ins().icmp_imm_s(IntCC::SignedLessThan, room, 0);
        let steps = b.ins().sdiv_imm_s(room, sw);
        let hi = b.ins().iadd_imm_s(steps, 1);
        let hi = b.ins().select(negative, zero, hi);
        let width = b.ins().iconst(types::I64, g.out_width as i64);
        let hi = b.ins().smin(hi, width);
        let hi = b.ins().smax(hi, lo);
        (lo, hi)
    }

    fn zeros(
        &self,
        b: &mut FunctionBuilder,
        destination: Value,
        first: Value,
        from: Value,
        to: Value,
    ) {
        counted(b, from, to, 1, |b, ox| {
            let value = b.ins().f32const(0.0);
            self.store(b, destination, first, ox, value);
        });
    }

    /// Stores column `first + ox` of the current row of B (four columns, for a vector:
    /// four columns from a multiple of four never cross a panel, panels being a
    /// multiple of four wide).
    fn store(
        &self,
        b: &mut FunctionBuilder,
        destination: Value,
        first: Value,
        ox: Value,
        value: Value,
    ) {
        let column = b.ins().iadd(first, ox);
        let panel = divide(b, column, self.panel);
        let panel_first = b.ins().imul_imm_s(panel, self.panel as i64);
        let lane = b.ins().isub(column, panel_first);
        let panel_start = b.ins().imul_imm_s(panel, (self.kc * self.panel) as i64);
        let element = b.ins().iadd(panel_start, lane);
        let at = offset(b, destination, element, 1);
        b.ins()
            .store(MemFlagsData::new().with_notrap(), value, at, 0);
    }
}

/// Four floats `stride` apart from `at`, as one vector.
fn gather(b: &mut FunctionBuilder, at: Value, stride: u64) -> Value {
    let flags = MemFlagsData::new().with_notrap();
    if stride == 1 {
        return b.ins().load(types::F32X4, flags, at, 0);
    }
    let first = b.ins().load(types::F32, flags, at, 0);
    let mut lanes = b.ins().splat(types::F32X4, first);
    for lane in 1..4u8 {
        let value = load_at(b, types::F32, at, (u64::from(lane) * stride * 4) as i64);
        lanes = b.ins().insertlane(lanes, value, lane);
    }
    lanes
}
