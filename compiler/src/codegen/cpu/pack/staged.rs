//! Tiles that read a staged plane in place, one output row's panels at a time, for a
//! padded or strided conv such as the 7x7/2 stems: no im2col at all.
//!
//! The chunk's input rows of every channel are staged once (`Packing::stage`: zero
//! borders for the padding, each row split into `stride` phases, phase φ holding the
//! padded row's columns φ, φ + s, ...). Then tap (c, ky, kx) of output row r's
//! columns ox..ox + NR is one run of consecutive floats: row `r·sy + ky` of channel c's
//! plane, phase `kx mod s`, from `ox + kx div s`. Its offset from the row's first
//! panel depends on the tap alone, so one table of K offsets (`tile::OFFSETS`) serves
//! every tile of the chunk, and a tile's B is where it lies. Panels stop at each
//! output row's end (112 columns are three panels of 32 and one of 16, which the tile
//! multiplies as one vector), which is why only rows that fill their panels well
//! read in place (`Geometry::staged_rows`).
//!
//! The scratch holds the staged planes, then the table (one i64 per K step, in the
//! packed weights' order: c, then ky, then kx).

use super::straight::Straight;
use super::{Packing, Pixels, TableChunk};
use crate::codegen::cpu::CpuTarget;
use crate::codegen::cpu::conv::{Geometry, offset_by};
use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;

/// The most floats of staged planes a chunk reads in place: twice a chunk's packed
/// input budget (`CHUNK_FLOATS`), in L2 beside the weights.
const MOST_STAGED_FLOATS: u64 = 2 * crate::codegen::cpu::conv::CHUNK_FLOATS;

/// The widest staged row: a phased row's staging is written out, two instructions a
/// float, so wider rows would make the kernel's code grow with them.
const MOST_PITCH: u64 = 1024;

/// The least share of the columns a row's panels pay for that its pixels fill.
const LEAST_FILLED: f64 = 0.9;

/// The fewest taps a kernel has for its packing to be worth skipping: a 1x1 conv's
/// im2col is a plain copy, and a 1x3's is cheap beside its product.
const LEAST_TAPS: u64 = 9;

impl Geometry {
    /// Whether a direct product's tiles read the chunk's staged plane in place
    /// (`pack/staged.rs`) instead of packed panels: a conv of one K block that pads or
    /// strides, with taps enough that im2col costs (the 7x7/2 stems: 15% of their
    /// time), whose output rows fill 90% of the columns their panels pay for (a last
    /// panel of at most half a panel, which the tile multiplies as one vector, paid
    /// as half; Inception-v3's 149-wide rows fill 93%), for a tile that reads only
    /// the columns it is asked for.
    pub fn staged_rows(&self, target: &CpuTarget) -> bool {
        let (ow, nr) = (self.out_width, target.nr);
        // The columns a row's panels pay for: whole panels, and a last one of at most
        // half a panel as half.
        let paid = match ow % nr {
            0 => ow,
            rest if rest <= nr / 2 => ow - rest + nr / 2,
            rest => ow - rest + nr,
        };
        let rows_fill_panels = ow >= nr && ow as f64 >= LEAST_FILLED * paid as f64;
        target.exact_edges
            && !self.dense
            && self.winograd.is_none()
            && !self.pixel_major(target)
            && !self.shifted_copies(target)
            && (self.pads != [0; 4] || self.stride != [1, 1])
            && self.dilation == [1, 1]
            && self.kernel[0] * self.kernel[1] >= LEAST_TAPS
            && self.k() <= target.kc
            && rows_fill_panels
            && self.staged_pitch() <= MOST_PITCH
            && self.staged_plane_floats(self.chunk_rows(target)) <= MOST_STAGED_FLOATS
    }

    /// Floats from one staged row to the next: the padded row, whole phases.
    fn staged_pitch(&self) -> u64 {
        self.padded_width().next_multiple_of(self.stride[1])
    }

    /// Floats of every channel's staged plane for chunks of `rows` output rows.
    fn staged_plane_floats(&self, rows: u64) -> u64 {
        let channels = self.channels / self.groups;
        channels * self.tap_rows(rows) * self.staged_pitch()
    }

    /// Where tap (ky, kx) of an output row's first column reads, from the row's
    /// first staged row of the channel's plane: row ky, phase kx mod s, kx div s
    /// into it.
    fn staged_tap(&self, ky: u64, kx: u64) -> u64 {
        let (pitch, s) = (self.staged_pitch(), self.stride[1]);
        ky * pitch + (kx % s) * (pitch / s) + kx / s
    }

    /// Floats of scratch for chunks of `chunk_rows` rows: the staged planes, rounded to
    /// an even count, then the table's K entries of two floats each.
    pub fn staged_rows_scratch(&self, chunk_rows: u64) -> u64 {
        self.staged_plane_floats(chunk_rows).next_multiple_of(2) + 2 * self.k()
    }
}

/// Where a chunk's tiles read: output row r's panel q at the scratch's start
/// `+ r·row_step + q·NR`, each K step where `table` says.
pub struct StagedPanels {
    pub row_step: u64,
    pub table: Value,
}

impl TableChunk<'_> {
    /// Stages the chunk's input rows and writes the table; returns where the tiles
    /// read.
    pub fn staged_rows(&self, b: &mut FunctionBuilder) -> StagedPanels {
        let g = self.geometry;
        let pitch = g.staged_pitch();
        let band = g.tap_rows(self.chunk_rows);
        let plan = Straight {
            body_rows: 1,
            pitch,
            band: Some(band),
            phases: g.stride[1],
        };
        let p0 = b.ins().iconst(types::I64, 0);
        let packing = Packing {
            geometry: g,
            panel: 1,
            kc: g.k(),
            p0,
            pixels: Pixels::Rows {
                first_row: self.first_row,
                rows: self.rows,
            },
            input: self.input,
            scratch: self.scratch,
            staging: self.scratch,
        };
        packing.stage(b, self.scratch, band, plan, self.first_row);
        let table = offset_by(
            b,
            self.scratch,
            g.staged_plane_floats(self.chunk_rows).next_multiple_of(2),
        );
        self.write_table(b, table, band * pitch, |ky, kx| g.staged_tap(ky, kx));
        StagedPanels {
            row_step: g.stride[0] * pitch,
            table,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::codegen::cpu::test_support::{geometry, target};

    #[test]
    fn every_tap_reads_its_own_input_inside_its_own_staged_row() {
        // The stems, Inception-v3's first layer (rows of 149), a 5x5/3 with
        // asymmetric padding, a padded 3x3: each takes staged rows for the AVX-512
        // tile, and every output column's tap reads the padded input column
        // `ox·sx + kx` from its phase, never past the phase's end (where a row's last
        // panel would read another phase's or row's floats), nor past the planes.
        let shapes = [
            ("3x224x224", "conv(64, 7x7, stride=2, pad=3)"),
            ("3x299x299", "conv(32, 3x3, stride=2)"),
            ("4x30x143", "conv(20, 5x5, stride=3, pad=[2, 1, 0, 2])"),
            ("3x25x64", "conv(8, 3x3, pad=1)"),
        ];
        for (input, layer) in shapes {
            let g = geometry(input, layer);
            for threads in [1, 2] {
                assert!(g.staged_rows(&target(12, 32, threads)), "{layer}");
            }
            let (pitch, s) = (g.staged_pitch(), g.stride[1]);
            let phase_width = pitch / s;
            let rows = g.chunk_rows(&target(12, 32, 1));
            let channels = g.channels / g.groups;
            let band = g.tap_rows(rows);
            for ky in 0..g.kernel[0] {
                for kx in 0..g.kernel[1] {
                    let tap = g.staged_tap(ky, kx);
                    for ox in [0, g.out_width - 1] {
                        let at = tap + ox;
                        let (row, column) = (at / pitch, at % pitch);
                        let padded_column = (column % phase_width) * s + column / phase_width;
                        assert_eq!(row, ky, "{layer}: tap ({ky}, {kx})");
                        assert_eq!(padded_column, ox * g.stride[1] + kx, "{layer}");
                    }
                }
            }
            // The last channel's last row's farthest read lies in the planes.
            let farthest = (channels - 1) * band * pitch
                + (rows - 1) * g.stride[0] * pitch
                + g.staged_tap(g.kernel[0] - 1, g.kernel[1] - 1)
                + g.out_width
                - 1;
            assert!(farthest < g.staged_plane_floats(rows), "{layer}");
        }
        // Rows of 55 (AlexNet's 11x11/4) fill 86% of their panels: packed.
        let alexnet = geometry("3x224x224", "conv(64, 11x11, stride=4, pad=2)");
        assert!(!alexnet.staged_rows(&target(12, 32, 1)));
    }
}
