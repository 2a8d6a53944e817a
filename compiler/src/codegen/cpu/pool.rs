//! Pooling kernels: max and average windows (padding, ceil mode's partial windows,
//! dilation for max, both divisors for average) and global pooling, as the reference
//! interpreter computes them, with every size a constant. Threads split the channels.

use super::conv::{load_at, offset, offset_by};
use super::epilogue::{constant, larger};
use super::loops::{counted, fixed};
use super::winograd::shuffle;
use super::{Arg, CpuTarget, KernelCode, kernel_function, sample_stride};
use crate::ops::{Op, PoolKind};
use crate::passes::{FusedGraph, Kernel};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

/// A window's sizes, all constants; a global pool is one window over the whole plane.
struct Window {
    kind: PoolKind,
    channels: u64,
    height: u64,
    width: u64,
    out_height: u64,
    out_width: u64,
    kernel: [u64; 2],
    stride: [u64; 2],
    dilation: [u64; 2],
    pads: [u64; 4],
    count_include_pad: bool,
    global: bool,
}

impl Window {
    fn of(fused: &FusedGraph, kernel: &Kernel) -> Option<Window> {
        let input = fused.tensor(*kernel.inputs.first()?);
        let (&[c, h, w], &[_, oh, ow]) = (
            input.shape.0.as_slice(),
            fused.tensor(kernel.output).shape.0.as_slice(),
        ) else {
            return None;
        };
        let (kind, kernel_size, stride, dilation, pads, count_include_pad, global) =
            match &kernel.op {
                Op::Pool(pool) => (
                    pool.kind,
                    pool.window.kernel,
                    pool.window.stride,
                    pool.window.dilation,
                    pool.window.pads([h, w]),
                    pool.count_include_pad,
                    false,
                ),
                Op::GlobalPool(global) => (global.kind, [h, w], [1, 1], [1, 1], [0; 4], true, true),
                _ => return None,
            };
        Some(Window {
            kind,
            channels: c,
            height: h,
            width: w,
            out_height: oh,
            out_width: ow,
            kernel: kernel_size,
            stride,
            dilation,
            pads,
            count_include_pad,
            global,
        })
    }
}

pub fn generate(fused: &FusedGraph, index: usize, target: &CpuTarget) -> Option<KernelCode> {
    let kernel = &fused.kernels[index];
    let window = Window::of(fused, kernel)?;
    let input_sample = sample_stride(fused, kernel.inputs[0]);
    let output_sample = sample_stride(fused, kernel.output);
    let (plane, out_plane) = (
        window.height * window.width,
        window.out_height * window.out_width,
    );
    let function = kernel_function(index, target, |b, params| {
        let pointer = target.frontend.pointer_type();
        let flags = MemFlagsData::new().with_notrap();
        let input = b.ins().load(pointer, flags, params.args, 0);
        let output = b.ins().load(pointer, flags, params.args, 8);
        let zero = b.ins().iconst(types::I64, 0);
        counted(b, zero, params.batch, 1, |b, n| {
            let input = offset(b, input, n, input_sample);
            let output = offset(b, output, n, output_sample);
            counted(b, params.begin, params.end, 1, |b, c| {
                let source = offset(b, input, c, plane);
                let destination = offset(b, output, c, out_plane);
                if window.global {
                    global(b, &window, source, destination);
                } else {
                    windows(b, &window, source, destination);
                }
            });
        });
    });
    Some(KernelCode {
        kernel: index,
        function,
        args: vec![Arg::Input, Arg::Output],
        scratch_floats: 0,
        geometry: None,
        chunks: window.channels,
        cuts_channels: false,
        layout: None,
    })
}

/// Pool kernel `index` over the rows a conv chunk wrote, for its channels
/// `[first, end)` (`conv::Geometry::fuses_pool`): `rows` input rows from `first_row` of
/// `source` (the pool's input at its sample) become the output rows from `first_row /
/// stride` of `destination` (its output at the sample). The windows tile the input, so
/// the rows start and end on window boundaries, and every window is interior.
pub(super) fn conv_rows(
    b: &mut FunctionBuilder,
    fused: &FusedGraph,
    index: usize,
    (source, destination): (Value, Value),
    (first, end): (Value, Value),
    (first_row, rows): (Value, u64),
) {
    let Some(w) = Window::of(fused, &fused.kernels[index]) else {
        return;
    };
    let (plane, out_plane) = (w.height * w.width, w.out_height * w.out_width);
    let first_out = b.ins().udiv_imm_u(first_row, w.stride[0] as i64);
    let end_out = b.ins().iadd_imm_s(first_out, (rows / w.stride[0]) as i64);
    let span = Axis::rows(&w).span(None);
    counted(b, first, end, 1, |b, c| {
        let source = offset(b, source, c, plane);
        let destination = offset(b, destination, c, out_plane);
        counted(b, first_out, end_out, 1, |b, oy| {
            window_row(b, &w, source, destination, oy, &span)
        });
    });
}

pub(super) fn load(b: &mut FunctionBuilder, base: Value, index: Value) -> Value {
    let at = offset(b, base, index, 1);
    b.ins()
        .load(types::F32, MemFlagsData::new().with_notrap(), at, 0)
}

/// Every output of one channel. Where the borders are narrow (padding of a few
/// pixels, ceil mode's last window), each border output is written by itself with the
/// taps it covers known at compile time, and the interior four outputs at a time;
/// otherwise every window outside the interior tests its taps.
fn windows(b: &mut FunctionBuilder, w: &Window, source: Value, destination: Value) {
    let rows = Axis::rows(w);
    let columns = Axis::columns(w);
    if rows.borders() > UNROLLED_BORDERS || columns.borders() > UNROLLED_BORDERS {
        return tested_windows(b, w, source, destination, &rows, &columns);
    }
    let (top, bottom) = rows.interior();
    for oy in (0..top).chain(bottom..w.out_height) {
        let row = b.ins().iconst(types::I64, oy as i64);
        window_row(b, w, source, destination, row, &rows.span(oy));
    }
    range(b, (top, bottom), |b, oy| {
        window_row(b, w, source, destination, oy, &rows.span(None))
    });
}

/// Border outputs per axis beyond which the border is a loop of tested windows.
const UNROLLED_BORDERS: u64 = 8;

/// The lanes of a vector of outputs.
const LANES: u64 = 4;

/// One axis of the windows, as constants.
struct Axis {
    out: u64,
    size: u64,
    kernel: u64,
    stride: u64,
    dilation: u64,
    pad: u64,
    pad_after: u64,
}

/// The taps of one output along an axis that fall inside the input, and the extent of
/// its window over the input and its padding (the divisor when padding counts).
struct Span {
    taps: Vec<u64>,
    padded_extent: u64,
}

impl Axis {
    fn rows(w: &Window) -> Axis {
        Axis::along(w, 0, (w.out_height, w.height))
    }

    fn columns(w: &Window) -> Axis {
        Axis::along(w, 1, (w.out_width, w.width))
    }

    fn along(w: &Window, axis: usize, (out, size): (u64, u64)) -> Axis {
        Axis {
            out,
            size,
            kernel: w.kernel[axis],
            stride: w.stride[axis],
            dilation: w.dilation[axis],
            pad: w.pads[axis],
            pad_after: w.pads[axis + 2],
        }
    }

    fn interior(&self) -> (u64, u64) {
        interior(
            self.out,
            self.size,
            self.kernel,
            self.stride,
            self.dilation,
            self.pad,
        )
    }

    fn borders(&self) -> u64 {
        let (lo, hi) = self.interior();
        lo + (self.out - hi)
    }

    /// Output `o`'s span; `None` for an interior output, whose every tap is inside.
    fn span(&self, o: impl Into<Option<u64>>) -> Span {
        let Some(o) = o.into() else {
            return Span {
                taps: (0..self.kernel).collect(),
                padded_extent: self.kernel,
            };
        };
        let start = (o * self.stride) as i64 - self.pad as i64;
        let inside =
            |k: &u64| (0..self.size as i64).contains(&(start + (k * self.dilation) as i64));
        let end = (start + self.kernel as i64).min((self.size + self.pad_after) as i64);
        Span {
            taps: (0..self.kernel).filter(inside).collect(),
            padded_extent: (end - start).max(0) as u64,
        }
    }
}

/// One output row: its border columns one by one, its interior four at a time where
/// the loads allow, the rest as one more group of four overlapping the last where its
/// loads allow too, else one at a time.
fn window_row(
    b: &mut FunctionBuilder,
    w: &Window,
    source: Value,
    destination: Value,
    oy: Value,
    row_span: &Span,
) {
    let columns = Axis::columns(w);
    let (left, right) = columns.interior();
    let y0 = b.ins().imul_imm_s(oy, w.stride[0] as i64);
    let y0 = b.ins().iadd_imm_s(y0, -(w.pads[0] as i64));
    let row = b.ins().imul_imm_s(oy, w.out_width as i64);
    let row_source = offset(b, source, y0, w.width);
    let row_destination = offset(b, destination, row, 1);
    let window = |b: &mut FunctionBuilder, ox: Value, column_span: &Span, ty| {
        let x0 = b.ins().imul_imm_s(ox, w.stride[1] as i64);
        let x0 = b.ins().iadd_imm_s(x0, -(w.pads[1] as i64));
        let corner = offset(b, row_source, x0, 1);
        let value = window_value(b, w, ty, corner, row_span, column_span);
        let at = offset(b, row_destination, ox, 1);
        b.ins()
            .store(MemFlagsData::new().with_notrap(), value, at, 0);
    };
    let inside = columns.span(None);
    for ox in 0..left {
        let at = b.ins().iconst(types::I64, ox as i64);
        window(b, at, &columns.span(ox), types::F32);
    }
    let groups = vector_columns(w, (left, right));
    let vector_end = left + groups * LANES;
    let rolling = Rolling::of(w).map(|r| {
        let count = r.groups(w, (left, right)).min(groups);
        (r, count)
    });
    let rolled = rolling.as_ref().map_or(0, |(_, count)| *count);
    if let Some((rolling, count)) = rolling.filter(|(_, count)| *count > 0) {
        rolling.generate(b, w, (row_source, row_destination), row_span, (left, count));
    }
    let rest = left + rolled * LANES;
    if vector_end > rest {
        let (start, end) = (
            b.ins().iconst(types::I64, rest as i64),
            b.ins().iconst(types::I64, vector_end as i64),
        );
        counted(b, start, end, LANES as i64, |b, ox| {
            window(b, ox, &inside, types::F32X4)
        });
    }
    // The columns after the last whole group: one more group ending at the last
    // interior column where its loads fit (it recomputes a few outputs, the same
    // values), else one at a time.
    let overlap = right
        .checked_sub(LANES)
        .filter(|&first| vector_end > left && vector_end < right && vector_fits(w, first, right));
    match overlap {
        Some(first) => {
            let at = b.ins().iconst(types::I64, first as i64);
            window(b, at, &inside, types::F32X4);
        }
        None => range(b, (vector_end, right), |b, ox| {
            window(b, ox, &inside, types::F32)
        }),
    }
    for ox in right..w.out_width {
        let at = b.ins().iconst(types::I64, ox as i64);
        window(b, at, &columns.span(ox), types::F32);
    }
}

/// Interior groups of a max pool computed column first: each vector of four input
/// columns is the maximum down the window's rows once, and the groups' windows along
/// the row are shuffles of those vectors, the last vectors of a group carried to the
/// next. A 3x3 window at stride 1 is then 3 loads, 2 shuffles and 4 maxima per four
/// outputs instead of 9 loads and 8 maxima; at stride 2, 6 loads and 3 shuffles
/// instead of 12 and 9. A maximum does not depend on the order: the same values.
struct Rolling {
    stride: u64,
    /// Vectors of four input columns a group's windows cover.
    vectors: u64,
}

impl Rolling {
    /// For max pools of stride 1 (windows up to 5 wide) or 2 (up to 3), undilated
    /// along the row.
    fn of(w: &Window) -> Option<Rolling> {
        let (kernel, stride) = (w.kernel[1], w.stride[1]);
        let fits = match stride {
            1 => kernel <= 5,
            2 => kernel <= 3,
            _ => false,
        };
        (w.kind == PoolKind::Max && w.dilation[1] == 1 && fits).then(|| Rolling {
            stride,
            vectors: (3 * stride + kernel).div_ceil(LANES),
        })
    }

    /// The groups from `left` whose vectors stay inside the row.
    fn groups(&self, w: &Window, (left, right): (u64, u64)) -> u64 {
        let fits = |first: u64| {
            let x0 = (first * self.stride) as i64 - w.pads[1] as i64;
            first + LANES <= right
                && x0 >= 0
                && x0 + (self.vectors * LANES) as i64 <= w.width as i64
        };
        (0..).take_while(|&g| fits(left + g * LANES)).count() as u64
    }

    /// The groups `[first, first + 4 * count)` of the output row at `row_destination`,
    /// whose window's top row (in the padding or not) starts at `row_source`.
    fn generate(
        &self,
        b: &mut FunctionBuilder,
        w: &Window,
        (row_source, row_destination): (Value, Value),
        row_span: &Span,
        (first, count): (u64, u64),
    ) {
        // The maximum down the window's rows of the four columns at `at`.
        let down = |b: &mut FunctionBuilder, at: Value| {
            let rows: Vec<Value> = row_span
                .taps
                .iter()
                .map(|&ky| {
                    let row = (ky * w.dilation[0] * w.width * 4) as i64;
                    load_at(b, types::F32X4, at, row)
                })
                .collect();
            maximum(b, types::F32X4, rows)
        };
        let x_of = |b: &mut FunctionBuilder, ox: Value| {
            let x0 = b.ins().imul_imm_s(ox, self.stride as i64);
            let x0 = b.ins().iadd_imm_s(x0, -(w.pads[1] as i64));
            offset(b, row_source, x0, 1)
        };
        let carried_count = (self.vectors - self.stride) as usize;
        let carried: Vec<_> = (0..carried_count)
            .map(|_| b.declare_var(types::F32X4))
            .collect();
        let start = b.ins().iconst(types::I64, first as i64);
        let at = x_of(b, start);
        for (j, &var) in carried.iter().enumerate() {
            let column = offset_by(b, at, j as u64 * LANES);
            let value = down(b, column);
            b.def_var(var, value);
        }
        let end = b.ins().iconst(types::I64, (first + count * LANES) as i64);
        counted(b, start, end, LANES as i64, |b, ox| {
            let at = x_of(b, ox);
            let mut vectors: Vec<Value> = carried.iter().map(|&var| b.use_var(var)).collect();
            for j in carried_count as u64..self.vectors {
                let column = offset_by(b, at, j * LANES);
                vectors.push(down(b, column));
            }
            let taps: Vec<Value> = (0..w.kernel[1])
                .map(|kx| self.tap(b, &vectors, kx))
                .collect();
            let value = maximum(b, types::F32X4, taps);
            let destination = offset(b, row_destination, ox, 1);
            b.ins()
                .store(MemFlagsData::new().with_notrap(), value, destination, 0);
            for (j, &var) in carried.iter().enumerate() {
                b.def_var(var, vectors[j + self.stride as usize]);
            }
        });
    }

    /// Lanes `stride * i + kx` (i = 0..4) of the vectors laid end to end.
    fn tap(&self, b: &mut FunctionBuilder, vectors: &[Value], kx: u64) -> Value {
        let kx = kx as u8;
        match self.stride {
            1 if kx == 0 => vectors[0],
            1 => shuffle(b, vectors[0], vectors[1], [kx, kx + 1, kx + 2, kx + 3]),
            _ => {
                let pair = shuffle(
                    b,
                    vectors[0],
                    vectors[1],
                    [kx & 1, 2 + (kx & 1), 4 + (kx & 1), 6 + (kx & 1)],
                );
                match kx {
                    0 | 1 => pair,
                    // Lanes 2, 4, 6 and 8: the even pair's last three and the next
                    // vector's first.
                    _ => shuffle(b, pair, vectors[2], [1, 2, 3, 4]),
                }
            }
        }
    }
}

/// The maximum of `values` (of type `ty`) as a tree, so the comparisons do not wait on
/// each other; minus infinity for none.
fn maximum(b: &mut FunctionBuilder, ty: Type, mut values: Vec<Value>) -> Value {
    if values.is_empty() {
        return constant(b, ty, f32::NEG_INFINITY);
    }
    while values.len() > 1 {
        values = values
            .chunks(2)
            .map(|pair| match pair {
                [x, y] => larger(b, ty, *x, *y),
                [x] => *x,
                _ => unreachable!("chunks of two"),
            })
            .collect();
    }
    values[0]
}

/// How many groups of four interior columns, from the first, are computed as vectors:
/// stride 1 loads each tap's four inputs at once, stride 2 two vectors of which it
/// keeps every other lane, the second reaching one float past the tap; every load
/// must stay inside the row.
fn vector_columns(w: &Window, (left, right): (u64, u64)) -> u64 {
    (0..)
        .take_while(|&group| vector_fits(w, left + group * LANES, right))
        .count() as u64
}

/// Whether the four interior columns from `first` can be computed as a vector: they
/// end by `right` and every load stays inside the row.
fn vector_fits(w: &Window, first: u64, right: u64) -> bool {
    let reach = (w.kernel[1] - 1) * w.dilation[1];
    let last_read = match w.stride[1] {
        1 => reach + LANES - 1,
        2 => (reach & !1) + 2 * LANES - 1,
        _ => return false,
    };
    let x0 = (first * w.stride[1]) as i64 - w.pads[1] as i64;
    first + LANES <= right && x0 + (last_read as i64) < w.width as i64
}

/// A window's value from its taps inside the input (`corner` is its top-left, in the
/// padding or not), for one output (`ty` f32) or four neighbours (`ty` f32x4). The
/// maximum is taken as a tree, so the comparisons do not wait on each other (the
/// order does not change a maximum); the sum keeps the reference's order, row by row.
fn window_value(
    b: &mut FunctionBuilder,
    w: &Window,
    ty: Type,
    corner: Value,
    rows: &Span,
    columns: &Span,
) -> Value {
    let mut taps = Vec::new();
    for &ky in &rows.taps {
        let row = (ky * w.dilation[0] * w.width) as i64;
        let bytes = |floats: u64| (row + floats as i64) * 4;
        let mut pairs: Vec<(u64, (Value, Value))> = Vec::new();
        for &kx in &columns.taps {
            let column = kx * w.dilation[1];
            let tap = if ty == types::F32 || w.stride[1] == 1 {
                load_at(b, ty, corner, bytes(column))
            } else {
                let even = column & !1;
                let (low, high) = match pairs.iter().find(|(at, _)| *at == even) {
                    Some((_, loaded)) => *loaded,
                    None => {
                        let low = load_at(b, ty, corner, bytes(even));
                        let high = load_at(b, ty, corner, bytes(even + LANES));
                        pairs.push((even, (low, high)));
                        (low, high)
                    }
                };
                let odd = (column & 1) as u8;
                shuffle(b, low, high, [odd, 2 + odd, 4 + odd, 6 + odd])
            };
            taps.push(tap);
        }
    }
    match w.kind {
        PoolKind::Max => maximum(b, ty, taps),
        PoolKind::Avg => {
            let mut sum = constant(b, ty, 0.0);
            for tap in taps {
                sum = b.ins().fadd(sum, tap);
            }
            let area = if w.count_include_pad {
                rows.padded_extent * columns.padded_extent
            } else {
                (rows.taps.len() * columns.taps.len()) as u64
            };
            let area = constant(b, ty, area.max(1) as f32);
            b.ins().fdiv(sum, area)
        }
    }
}

/// Every output of one channel, the windows outside the interior testing each tap.
fn tested_windows(
    b: &mut FunctionBuilder,
    w: &Window,
    source: Value,
    destination: Value,
    rows: &Axis,
    columns: &Axis,
) {
    let inside = (rows.span(None), columns.span(None));
    for (row_range, rows_inside) in split(w.out_height, rows.interior()) {
        range(b, row_range, |b, oy| {
            let y0 = b.ins().imul_imm_s(oy, w.stride[0] as i64);
            let y0 = b.ins().iadd_imm_s(y0, -(w.pads[0] as i64));
            let row = b.ins().imul_imm_s(oy, w.out_width as i64);
            for (column_range, columns_inside) in split(w.out_width, columns.interior()) {
                range(b, column_range, |b, ox| {
                    let x0 = b.ins().imul_imm_s(ox, w.stride[1] as i64);
                    let x0 = b.ins().iadd_imm_s(x0, -(w.pads[1] as i64));
                    let value = if rows_inside && columns_inside {
                        let corner = b.ins().imul_imm_s(y0, w.width as i64);
                        let corner = b.ins().iadd(corner, x0);
                        let corner = offset(b, source, corner, 1);
                        window_value(b, w, types::F32, corner, &inside.0, &inside.1)
                    } else {
                        match w.kind {
                            PoolKind::Max => max_window(b, w, source, y0, x0),
                            PoolKind::Avg => average_window(b, w, source, y0, x0),
                        }
                    };
                    let at = b.ins().iadd(row, ox);
                    let at = offset(b, destination, at, 1);
                    b.ins()
                        .store(MemFlagsData::new().with_notrap(), value, at, 0);
                });
            }
        });
    }
}

/// The outputs `[lo, hi)` along one axis whose whole window lies inside the input.
fn interior(out: u64, size: u64, kernel: u64, stride: u64, dilation: u64, pad: u64) -> (u64, u64) {
    let lo = pad.div_ceil(stride);
    let reach = (kernel - 1) * dilation;
    let hi = if size + pad > reach {
        (size + pad - reach - 1) / stride + 1
    } else {
        0
    };
    let hi = hi.min(out);
    (lo.min(hi), hi)
}

/// `[0, out)` as the border before the interior, the interior, the border after.
fn split(out: u64, (lo, hi): (u64, u64)) -> [((u64, u64), bool); 3] {
    [((0, lo), false), ((lo, hi), true), ((hi, out), false)]
}

fn range(
    b: &mut FunctionBuilder,
    (from, to): (u64, u64),
    body: impl FnMut(&mut FunctionBuilder, Value),
) {
    if from >= to {
        return;
    }
    let start = b.ins().iconst(types::I64, from as i64);
    let end = b.ins().iconst(types::I64, to as i64);
    counted(b, start, end, 1, body);
}

/// The largest input the window covers (taps in the padding do not count).
fn max_window(b: &mut FunctionBuilder, w: &Window, source: Value, y0: Value, x0: Value) -> Value {
    let mut best = b.ins().f32const(f32::NEG_INFINITY);
    for ky in 0..w.kernel[0] {
        let iy = b.ins().iadd_imm_s(y0, (ky * w.dilation[0]) as i64);
        let row_inside = b
            .ins()
            .icmp_imm_u(IntCC::UnsignedLessThan, iy, w.height as i64);
        for kx in 0..w.kernel[1] {
            let ix = b.ins().iadd_imm_s(x0, (kx * w.dilation[1]) as i64);
            let inside = b
                .ins()
                .icmp_imm_u(IntCC::UnsignedLessThan, ix, w.width as i64);
            let inside = b.ins().band(row_inside, inside);
            let at = b.ins().imul_imm_s(iy, w.width as i64);
            let at = b.ins().iadd(at, ix);
            let zero = b.ins().iconst(types::I64, 0);
            let at = b.ins().select(inside, at, zero);
            let value = load(b, source, at);
            // As f32::max: a larger value wins, a NaN input does not.
            let larger = b.ins().fcmp(FloatCC::GreaterThan, value, best);
            let take = b.ins().band(larger, inside);
            best = b.ins().select(take, value, best);
        }
    }
    best
}

/// The mean over the window's part inside the input; the divisor counts the padding
/// (as far as it reaches) or not.
fn average_window(
    b: &mut FunctionBuilder,
    w: &Window,
    source: Value,
    y0: Value,
    x0: Value,
) -> Value {
    let (h, wd) = (w.height as i64, w.width as i64);
    let y_end = b.ins().iadd_imm_s(y0, w.kernel[0] as i64);
    let y_limit = b.ins().iconst(types::I64, h + w.pads[2] as i64);
    let y_end = b.ins().smin(y_end, y_limit);
    let x_end = b.ins().iadd_imm_s(x0, w.kernel[1] as i64);
    let x_limit = b.ins().iconst(types::I64, wd + w.pads[3] as i64);
    let x_end = b.ins().smin(x_end, x_limit);
    let zero = b.ins().iconst(types::I64, 0);
    let (ya, xa) = (b.ins().smax(y0, zero), b.ins().smax(x0, zero));
    let (height, width) = (
        b.ins().iconst(types::I64, h),
        b.ins().iconst(types::I64, wd),
    );
    let (yb, xb) = (b.ins().smin(y_end, height), b.ins().smin(x_end, width));
    let sum = b.declare_var(types::F32);
    let nothing = b.ins().f32const(0.0);
    b.def_var(sum, nothing);
    counted(b, ya, yb, 1, |b, iy| {
        let row = b.ins().imul_imm_s(iy, wd);
        counted(b, xa, xb, 1, |b, ix| {
            let at = b.ins().iadd(row, ix);
            let value = load(b, source, at);
            let so_far = b.use_var(sum);
            let total = b.ins().fadd(so_far, value);
            b.def_var(sum, total);
        });
    });
    let divisor = if w.count_include_pad {
        let rows = b.ins().isub(y_end, y0);
        let columns = b.ins().isub(x_end, x0);
        b.ins().imul(rows, columns)
    } else {
        let rows = b.ins().isub(yb, ya);
        let columns = b.ins().isub(xb, xa);
        b.ins().imul(rows, columns)
    };
    let one = b.ins().iconst(types::I64, 1);
    let divisor = b.ins().smax(divisor, one);
    let divisor = b.ins().fcvt_from_sint(types::F32, divisor);
    let total = b.use_var(sum);
    b.ins().fdiv(total, divisor)
}

/// A whole channel's plane into one value: four vectors of four floats at a time
/// (independent chains: one scalar chain per row, each row's mean divided out, had the
/// 2048 8x8 channels of Inception-v3 take 80 ns each), then their lanes, then the
/// floats after the last vector. An average is the plane's sum over its size: the
/// reference's mean of row means, summed in another order.
fn global(b: &mut FunctionBuilder, w: &Window, source: Value, destination: Value) {
    const CHAINS: u64 = 4;
    let flags = MemFlagsData::new().with_notrap();
    let start = match w.kind {
        PoolKind::Max => f32::NEG_INFINITY,
        PoolKind::Avg => 0.0,
    };
    let plane = w.height * w.width;
    let vectors = plane / 4;
    let chains = vectors.clamp(1, CHAINS);
    let accumulators: Vec<_> = (0..chains)
        .map(|_| {
            let accumulator = b.declare_var(types::F32X4);
            let initial = constant(b, types::F32X4, start);
            b.def_var(accumulator, initial);
            accumulator
        })
        .collect();
    let add = |b: &mut FunctionBuilder, chain: usize, at: Value, index: u64| {
        let value = load_at(b, types::F32X4, at, (index * 16) as i64);
        let so_far = b.use_var(accumulators[chain]);
        let next = combine_as(b, w.kind, types::F32X4, so_far, value);
        b.def_var(accumulators[chain], next);
    };
    fixed(b, vectors / chains, |b, i| {
        let at = offset(b, source, i, 4 * chains);
        for chain in 0..chains {
            add(b, chain as usize, at, chain);
        }
    });
    for index in vectors / chains * chains..vectors {
        add(b, (index % chains) as usize, source, index);
    }
    let mut vector = b.use_var(accumulators[0]);
    for &accumulator in &accumulators[1..] {
        let next = b.use_var(accumulator);
        vector = combine_as(b, w.kind, types::F32X4, vector, next);
    }
    let mut value = b.ins().extractlane(vector, 0);
    for lane in 1..4u8 {
        let next = b.ins().extractlane(vector, lane);
        value = combine(b, w.kind, value, next);
    }
    for index in vectors * 4..plane {
        let next = load_at(b, types::F32, source, (index * 4) as i64);
        value = combine(b, w.kind, value, next);
    }
    if w.kind == PoolKind::Avg {
        let size = b.ins().f32const(plane as f32);
        value = b.ins().fdiv(value, size);
    }
    b.ins().store(flags, value, destination, 0);
}

pub(super) fn combine(
    b: &mut FunctionBuilder,
    kind: PoolKind,
    so_far: Value,
    value: Value,
) -> Value {
    combine_as(b, kind, types::F32, so_far, value)
}

/// `combine` for values of type `ty` (f32 or f32x4).
fn combine_as(
    b: &mut FunctionBuilder,
    kind: PoolKind,
    ty: Type,
    so_far: Value,
    value: Value,
) -> Value {
    match kind {
        PoolKind::Avg => b.ins().fadd(so_far, value),
        // A NaN input loses, as with f32::max.
        PoolKind::Max => larger(b, ty, value, so_far),
    }
}
