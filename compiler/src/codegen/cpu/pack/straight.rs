//! Straight-line im2col for a direct product's chunk of whole output rows.
//!
//! Where a chunk's columns land is known at compile time: output row `r`, column `ox`
//! is chunk column `r·OW + ox`, in panel `(r·OW + ox) / NR`. So each K row (one input
//! channel and tap) is packed by code whose every load is a constant offset from the
//! tap's first input and every store a constant offset into the panels: no panel
//! arithmetic per vector and no padding test (the general packing spent about ten
//! instructions a float on those; it is half the time of a 64-channel 5x5 conv).
//!
//! Padding is paid once per K block instead of per tap: the block's input channels,
//! the rows the chunk reads, are first copied into a zero-bordered plane in the
//! scratch (the staged plane), so every tap reads inside it. At a horizontal stride of
//! 3 or more the staged rows are also split into phases (`Straight::phases`), padded
//! or not, so that a tap's columns are consecutive floats.
//!
//! The panel splits repeat every `NR / gcd(OW, NR)` rows (whose columns are a whole
//! number of panels), so the code for that many rows is written once and looped.

use super::Packing;
use crate::codegen::cpu::conv::{Geometry, offset, offset_by};
use crate::codegen::cpu::loops::{counted, fixed, if_else};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

/// The most vectors of four columns one written-out body packs per K row: it bounds
/// the code (about two instructions a vector at stride 1, eight where columns are
/// gathered), so chunks whose pattern is longer keep the general packing.
const MOST_VECTORS: u64 = 256;

/// Floats copied or zeroed by straight-line code; longer rows are copied in a loop.
const UNROLLED_FLOATS: u64 = 64;

/// How a chunk of whole output rows is packed by straight-line code.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Straight {
    /// Output rows one written-out body packs: the rows after which the panel splits
    /// repeat, or the chunk's rows if fewer.
    pub body_rows: u64,
    /// Floats from one input row to the next where the taps read: the staged plane's
    /// width, or the input's.
    pub pitch: u64,
    /// Rows of each channel's staged plane, when the convolution pads (or its rows
    /// are split into phases).
    pub band: Option<u64>,
    /// Phases each staged row is split into: the horizontal stride where the taps
    /// read each input several times (`PHASED_READS`), else 1. Phase φ holds the
    /// padded row's columns φ, φ + s, φ + 2s, ... in turn, `pitch / phases` floats,
    /// so a tap's inputs for consecutive output columns are consecutive floats.
    pub phases: u64,
}

/// Reads per input value (kernel area / stride area) from which a conv of horizontal
/// stride 3 or more splits its staged rows into phases: copying each value once into
/// its phase turns every later read into a vector load where it was gathered one float
/// at a time (AlexNet's 11x11/4, 7.6 reads: 1.06-1.10x on one thread). Stride 2 keeps its
/// two loads and a shuffle per four floats: phases made the 7x7/2 stems no faster (the
/// packing is bound by its stores either way).
const PHASED_READS: u64 = 4;

/// The widest padded row split into phases: its copy is written out, two instructions
/// a float, so wider rows would make the kernel's code grow with them.
const MOST_PHASED_WIDTH: u64 = 1024;

impl Geometry {
    /// The straight-line packing of chunks of `rows` output rows into panels `panel`
    /// columns wide, where its code stays small.
    pub fn straight_packing(&self, panel: u64, rows: u64) -> Option<Straight> {
        let (ow, [sh, sw]) = (self.out_width, self.stride);
        let body_rows = rows.min(panel / gcd(ow, panel));
        if body_rows == 0 || ow == 0 || (body_rows * ow).div_ceil(4) > MOST_VECTORS {
            return None;
        }
        let reads = self.kernel[0] * self.kernel[1] / (sh * sw).max(1);
        let padded_width = self.padded_width();
        let phased = sw > 2 && reads >= PHASED_READS && padded_width <= MOST_PHASED_WIDTH;
        let phases = if phased { sw } else { 1 };
        let staged = self.pads != [0; 4] || phases > 1;
        let pitch = match staged {
            true => padded_width.next_multiple_of(phases),
            false => self.width,
        };
        let band = self.tap_rows(rows);
        let plan = Straight {
            body_rows,
            pitch,
            band: staged.then_some(band),
            phases,
        };
        // Every load of a body is an immediate offset (bytes, i32).
        let farthest =
            ((body_rows - 1) * sh * pitch + ow * plan.column_step(self) + 8).checked_mul(4)?;
        if farthest > i32::MAX as u64 / 2 {
            return None;
        }
        Some(plan)
    }

    /// A padded input row's floats.
    pub(super) fn padded_width(&self) -> u64 {
        self.width + self.pads[1] + self.pads[3]
    }

    /// Input rows (padding rows included) the taps of `rows` output rows read.
    pub(super) fn tap_rows(&self, rows: u64) -> u64 {
        (rows.max(1) - 1) * self.stride[0] + (self.kernel[0] - 1) * self.dilation[0] + 1
    }

    /// Floats of the staged plane behind a direct product's packed input: a K block's
    /// channels (one more than the block spans whole, as it may start mid-channel),
    /// each `band x pitch`, for the larger of the full and the short chunk.
    pub fn staged_floats(&self, chunk_rows: u64, panel: u64, k_block: u64) -> u64 {
        let short = self.out_height % chunk_rows.max(1);
        let area = (self.kernel[0] * self.kernel[1]).max(1);
        [chunk_rows, short]
            .into_iter()
            .filter(|&rows| rows > 0)
            .filter_map(|rows| self.straight_packing(panel, rows))
            .filter_map(|plan| Some(plan.band? * plan.pitch))
            .map(|plane| (k_block.div_ceil(area) + 1) * plane)
            .max()
            .unwrap_or(0)
    }
}

impl Straight {
    /// Floats from one output column's input to the next's in a row the taps read:
    /// the stride, or 1 within a phase.
    fn column_step(&self, g: &Geometry) -> u64 {
        if self.phases > 1 { 1 } else { g.stride[1] }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
}

impl Packing<'_> {
    /// Rows `first_row..first_row + rows` of the output, every K row of the block.
    pub(super) fn straight(
        &self,
        b: &mut FunctionBuilder,
        plan: Straight,
        first_row: Value,
        rows: u64,
    ) {
        let g = self.geometry;
        let (nr, kc) = (self.panel, self.kc);
        let area = g.kernel[0] * g.kernel[1];
        // Where channel `first_channel`'s plane starts, and planes' size.
        let (planes, first_channel, plane_floats) = match plan.band {
            Some(band) => {
                let staged = self.staging;
                let first_channel = self.stage(b, staged, band, plan, first_row);
                (staged, first_channel, band * plan.pitch)
            }
            None => {
                let top = b
                    .ins()
                    .imul_imm_s(first_row, (g.stride[0] * g.width) as i64);
                let zero = b.ins().iconst(types::I64, 0);
                (offset(b, self.input, top, 1), zero, g.height * g.width)
            }
        };
        let (body_rows, pitch) = (plan.body_rows, plan.pitch);
        let (bodies, rest) = (rows / body_rows, rows % body_rows);
        fixed(b, kc, |b, p| {
            let row = b.ins().iadd(self.p0, p);
            let channel = b.ins().udiv_imm_u(row, area as i64);
            let tap = b.ins().urem_imm_u(row, area as i64);
            let ky = b.ins().udiv_imm_u(tap, g.kernel[1] as i64);
            let kx = b.ins().urem_imm_u(tap, g.kernel[1] as i64);
            let relative = b.ins().isub(channel, first_channel);
            let plane = offset(b, planes, relative, plane_floats);
            let tap_row = b.ins().imul_imm_s(ky, (g.dilation[0] * pitch) as i64);
            let tap_column = b.ins().imul_imm_s(kx, g.dilation[1] as i64);
            let tap_column = if plan.phases > 1 {
                // Column c of the padded row: phase c mod s, c div s into it.
                let phase = b.ins().urem_imm_u(tap_column, plan.phases as i64);
                let phase = b.ins().imul_imm_s(phase, (pitch / plan.phases) as i64);
                let within = b.ins().udiv_imm_u(tap_column, plan.phases as i64);
                b.ins().iadd(phase, within)
            } else {
                tap_column
            };
            let tap = b.ins().iadd(tap_row, tap_column);
            let source = offset(b, plane, tap, 1);
            let destination = offset(b, self.scratch, p, nr);
            // Each body's columns are whole panels when there is more than one body.
            let source_step = body_rows * g.stride[0] * pitch;
            let destination_step = body_rows * g.out_width * kc;
            fixed(b, bodies, |b, i| {
                let from = offset(b, source, i, source_step);
                let to = offset(b, destination, i, destination_step);
                self.body(b, plan, from, to, body_rows);
            });
            if rest > 0 {
                let from = offset_by(b, source, bodies * source_step);
                let to = offset_by(b, destination, bodies * destination_step);
                self.body(b, plan, from, to, rest);
            }
        });
    }

    /// `rows` output rows of one K row, from the tap's first input at `from` into the
    /// panels at `to` (the first column's panel, this K row), four columns a store.
    fn body(&self, b: &mut FunctionBuilder, plan: Straight, from: Value, to: Value, rows: u64) {
        let g = self.geometry;
        let (nr, kc, ow) = (self.panel, self.kc, g.out_width);
        let (sh, step) = (g.stride[0], plan.column_step(g));
        let flags = MemFlagsData::new().with_notrap();
        let source = |column: u64| {
            let (r, ox) = (column / ow, column % ow);
            ((r * sh * plan.pitch + ox * step) * 4) as i32
        };
        // A stride-2 vector reads eight floats; they stay in the row (and so in the
        // buffer) when the last tap's eighth does.
        let widest_tap = (g.kernel[1] - 1) * g.dilation[1];
        let columns = rows * ow;
        for column in (0..columns).step_by(4) {
            let count = 4.min(columns - column);
            let store_at = (((column / nr) * kc * nr + column % nr) * 4) as i32;
            let one_row = count == 4 && column / ow == (column + 3) / ow;
            let two_rows = count == 4 && column / ow + 1 == (column + 3) / ow;
            let ox = column % ow;
            if one_row && step == 1 {
                let values = b.ins().load(types::F32X4, flags, from, source(column));
                b.ins().store(flags, values, to, store_at);
            } else if two_rows && step == 1 {
                // The row's last `k` columns and the next row's first `4 - k`: a vector
                // from each, each read where its lanes lie (the first runs on past its
                // row's end, the second starts `k` floats before the next row's
                // start: both within the rows the taps read), then blended.
                let k = ow - ox;
                let end = b.ins().load(types::F32X4, flags, from, source(column));
                let next = source(column + k) - (k * 4) as i32;
                let start = b.ins().load(types::F32X4, flags, from, next);
                let lanes = std::array::from_fn(|lane| {
                    if lane < k as usize {
                        lane as u8
                    } else {
                        lane as u8 + 4
                    }
                });
                let values = crate::codegen::cpu::winograd::shuffle(b, end, start, lanes);
                b.ins().store(flags, values, to, store_at);
            } else if one_row && step == 2 && ox * 2 + 7 + widest_tap < plan.pitch {
                let low = b.ins().load(types::F32X4, flags, from, source(column));
                let high = b.ins().load(types::F32X4, flags, from, source(column) + 16);
                let even = crate::codegen::cpu::winograd::shuffle(b, low, high, [0, 2, 4, 6]);
                b.ins().store(flags, even, to, store_at);
            } else {
                for lane in 0..count {
                    let value = b.ins().load(types::F32, flags, from, source(column + lane));
                    b.ins()
                        .store(flags, value, to, store_at + (lane * 4) as i32);
                }
            }
        }
    }

    /// Copies the block's input channels, the `band` rows from the chunk's first tap row,
    /// into planes `pitch` wide with the padding as zeros (each row split into the
    /// plan's phases); returns the first channel.
    pub(super) fn stage(
        &self,
        b: &mut FunctionBuilder,
        staged: Value,
        band: u64,
        plan: Straight,
        first_row: Value,
    ) -> Value {
        let pitch = plan.pitch;
        let g = self.geometry;
        let area = (g.kernel[0] * g.kernel[1]) as i64;
        let first = b.ins().udiv_imm_u(self.p0, area);
        let last = b.ins().iadd_imm_s(self.p0, self.kc as i64 - 1);
        let last = b.ins().udiv_imm_u(last, area);
        let end = b.ins().iadd_imm_s(last, 1);
        let top = b.ins().imul_imm_s(first_row, g.stride[0] as i64);
        let top = b.ins().iadd_imm_s(top, -(g.pads[0] as i64));
        let (left, width) = (g.pads[1], g.width);
        counted(b, first, end, 1, |b, channel| {
            let plane = offset(b, self.input, channel, g.height * g.width);
            let relative = b.ins().isub(channel, first);
            let to_plane = offset(b, staged, relative, band * pitch);
            fixed(b, band, |b, t| {
                let iy = b.ins().iadd(top, t);
                let inside = b
                    .ins()
                    .icmp_imm_u(IntCC::UnsignedLessThan, iy, g.height as i64);
                let to = offset(b, to_plane, t, pitch);
                if_else(
                    b,
                    inside,
                    |b| {
                        let from = offset(b, plane, iy, width);
                        if plan.phases > 1 {
                            stage_phases(b, from, to, left, width, plan);
                        } else {
                            zero_floats(b, to, left);
                            let inner = offset_by(b, to, left);
                            copy_floats(b, from, inner, width);
                            let right = offset_by(b, to, left + width);
                            zero_floats(b, right, pitch - left - width);
                        }
                    },
                    |b| zero_floats(b, to, pitch),
                );
            });
        });
        first
    }
}

/// One input row of `width` floats at `from` into its staged row at `to`, `left` zeros
/// before it and zeros after it to the row's `pitch`, split into the plan's phases:
/// phase φ's floats are the padded row's columns φ + s·i, copied one by one.
fn stage_phases(
    b: &mut FunctionBuilder,
    from: Value,
    to: Value,
    left: u64,
    width: u64,
    plan: Straight,
) {
    let (s, phase_width) = (plan.phases, plan.pitch / plan.phases);
    let flags = MemFlagsData::new().with_notrap();
    for phase in 0..s {
        // Columns φ + s·i inside the input: i in [first, end).
        let first = left.saturating_sub(phase).div_ceil(s);
        let end = (left + width).saturating_sub(phase).div_ceil(s).max(first);
        let at = offset_by(b, to, phase * phase_width);
        zero_floats(b, at, first);
        let tail = offset_by(b, at, end);
        zero_floats(b, tail, phase_width - end);
        for i in first..end {
            let x = phase + s * i - left;
            let value = b.ins().load(types::F32, flags, from, (x * 4) as i32);
            b.ins().store(flags, value, at, (i * 4) as i32);
        }
    }
}

/// `write(b, index, byte_offset, type)` over `count` floats: vectors of four, then
/// single floats; a loop of 32-float steps (index its first float) for long rows.
fn sweep(
    b: &mut FunctionBuilder,
    count: u64,
    mut write: impl FnMut(&mut FunctionBuilder, Value, i32, Type),
) {
    let looped = if count > UNROLLED_FLOATS {
        count / 32 * 32
    } else {
        0
    };
    if looped > 0 {
        let (start, end) = (
            b.ins().iconst(types::I64, 0),
            b.ins().iconst(types::I64, looped as i64),
        );
        counted(b, start, end, 32, |b, index| {
            for v in 0..8 {
                write(b, index, v * 16, types::F32X4);
            }
        });
    }
    let index = b.ins().iconst(types::I64, looped as i64);
    let tail = count - looped;
    for v in 0..tail / 4 {
        write(b, index, (v * 16) as i32, types::F32X4);
    }
    for f in tail / 4 * 4..tail {
        write(b, index, (f * 4) as i32, types::F32);
    }
}

/// `count` floats from `from` to `to`: straight-line vectors of four up to 64 floats.
pub(in crate::codegen::cpu) fn copy_floats(
    b: &mut FunctionBuilder,
    from: Value,
    to: Value,
    count: u64,
) {
    let flags = MemFlagsData::new().with_notrap();
    sweep(b, count, |b, index, at, ty| {
        let (from, to) = (offset(b, from, index, 1), offset(b, to, index, 1));
        let values = b.ins().load(ty, flags, from, at);
        b.ins().store(flags, values, to, at);
    });
}

/// `count` zeros at `to`, as `copy_floats` writes.
pub(in crate::codegen::cpu) fn zero_floats(b: &mut FunctionBuilder, to: Value, count: u64) {
    let flags = MemFlagsData::new().with_notrap();
    sweep(b, count, |b, index, at, ty| {
        let to = offset(b, to, index, 1);
        let zero = b.ins().f32const(0.0);
        let zero = if ty == types::F32 {
            zero
        } else {
            b.ins().splat(ty, zero)
        };
        b.ins().store(flags, zero, to, at);
    });
}

#[cfg(test)]
mod tests {
    use super::{Straight, gcd};
    use crate::codegen::cpu::test_support::geometry;

    #[test]
    fn panel_splits_repeat_after_a_whole_number_of_panels() {
        // 28-wide rows in 32-wide panels: 8 rows are 7 panels.
        assert_eq!(32 / gcd(28, 32), 8);
        assert_eq!(32 / gcd(112, 32), 2);
        assert_eq!(32 / gcd(35, 32), 32);
        assert_eq!(gcd(0, 32), 32);
    }

    #[test]
    fn padded_convolutions_read_a_staged_plane_and_long_patterns_keep_the_general_packing() {
        // LeNet-5's C1: no padding, so the taps read the input itself; 28 rows are
        // three bodies of 8 and one of 4.
        let c1 = geometry("1x32x32", "conv(6, 5x5)");
        let plan = c1.straight_packing(32, 28).expect("written out");
        assert_eq!(
            plan,
            Straight {
                body_rows: 8,
                pitch: 32,
                band: None,
                phases: 1
            }
        );
        // Padding 2 both sides: planes 4 wider, 5 rows of output read 9 input rows.
        let padded = geometry("48x35x35", "conv(64, 5x5, pad=2)");
        let plan = padded.straight_packing(32, 5).expect("written out");
        assert_eq!(
            plan,
            Straight {
                body_rows: 5,
                pitch: 39,
                band: Some(9),
                phases: 1
            }
        );
        assert!(padded.staged_floats(5, 32, 240) >= (240 / 25 + 2) * 9 * 39);
        // AlexNet's 11x11/4 reads each input 7.6 times: staged though unpadded, its
        // 227-float rows split into four phases of 57; a 7x7/2 stem keeps whole rows.
        let alexnet = geometry("3x227x227", "conv(96, 11x11, stride=4)");
        let plan = alexnet.straight_packing(32, 4).expect("written out");
        assert_eq!((plan.pitch, plan.band, plan.phases), (228, Some(23), 4));
        let stem = geometry("3x224x224", "conv(64, 7x7, stride=2, pad=3)");
        assert_eq!(
            stem.straight_packing(32, 2).map(|plan| plan.phases),
            Some(1)
        );
        // The shapes the JIT's phased-rows test runs take phases too: left padding
        // wider than the stride (14 padded columns, pitch 15), and a kernel narrower
        // than its stride (12x1 at 1x3: each row read by 12 taps).
        let padded = geometry("3x11x5", "conv(5, 7x7, stride=3, pad=[1, 5, 0, 4])");
        let plan = padded.straight_packing(32, 2).expect("written out");
        assert_eq!((plan.pitch, plan.phases), (15, 3));
        let tall = geometry("2x14x20", "conv(4, 12x1, stride=[1, 3])");
        assert_eq!(
            tall.straight_packing(32, 3).map(|plan| plan.phases),
            Some(3)
        );
        // 24 rows of 149 columns (3,576) would take too much code per K row.
        let wide = geometry("3x299x299", "conv(32, 3x3, stride=2)");
        assert_eq!(wide.straight_packing(32, 24), None);
        assert!(wide.straight_packing(32, 4).is_some());
    }
}
