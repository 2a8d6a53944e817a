//! A pixel-major product, for outputs whose pixels leave the tile's columns half
//! empty (a 7x7 output is 49 pixels: one full and one half-used 32-column panel;
//! 14x14 is 196 of 224): the product turned over, Cᵀ (pixels x channels) = Bᵀ · Aᵀ.
//! The packed input's pixels are the tile's rows, in panels of MR pixels (`pack/mod.rs`
//! with panels MR wide, a chunk's pixels starting anywhere in a row), the weights are
//! the tile's columns, in NR-channel panels (packed once by the runtime), so it is the
//! output channels, usually a multiple of NR, that fill the vectors, and a chunk's last
//! few pixels cost what they are worth (the tile keeps only their rows).
//!
//! A chunk of pixels accumulates Cᵀ in the scratch over the K blocks (weights panels
//! outside, pixel tiles inside: a panel of weights stays in L1 while the chunk's pixels
//! stream from L2), then writes it transposed into the NCHW output, applying the
//! epilogue to the values on their way out (or, where a step calls a runtime helper,
//! running it as the usual pass over the chunk's columns). Threads split the pixels,
//! each chunk packing only its own: the output-channel parts a direct product of a
//! small output needs (each packing the whole input again) are not needed — except
//! where the weights are too big for L2 (`Geometry::channel_parts`): the threads then
//! split the channels in whole weight panels, so that each streams only its part of
//! them.

use super::conv::{
    At, Block, CHUNK_FLOATS, Geometry, L2_BYTES, Product, Steps, Tile, load_at, offset, offset_by,
};
use super::epilogue::{self, Channel};
use super::loops::{DIVIDEND_LIMIT, counted, fixed, if_else};
use super::pack::{Packing, Pixels};
use super::winograd::transpose;
use super::{Arg, CpuTarget};
use crate::passes::Step;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;

/// What the transposing pass costs, in steps of K of the product: it writes every
/// output once more, which weighs more the fewer multiplies each output took; and
/// each residual it reads on the way (from L3: it is an earlier layer's output) as
/// much again. Measured at 14x14: ResNet-50's 256 -> 1024 channel 1x1 conv with its
/// residual ran 12-14% faster direct (its 196 pixels fill 7/8 of their panels), about
/// 85 steps in all; GoogLeNet's 1x1 convs of K = 480-832, none with a residual, 5-10%
/// faster turned over with channels that fill their panels 92-100%, at most 25.
const TRANSPOSE_STEPS: f64 = 20.0;
const RESIDUAL_STEPS: f64 = 65.0;

/// How much cheaper the turned product must come out to be chosen: the estimate is no
/// finer than that (ResNet-50's 3x3/2 conv at 28x28, within 0.3%, ran 7% faster on
/// one thread direct and 7% slower on two).
const TIE: f64 = 0.01;

/// The most weight panels for which a pointwise product's tiles read their pixels in
/// place. Each panel reads the chunk's pixels again, and in place an MR-pixel row of
/// a channel spans two cache lines more often than not, where a packed panel's rows
/// follow one another: 1x1 convs of 192-384 channels (6-12 panels) ran 4-9% faster
/// in place, ResNet-50's 512 -> 2048 (64 panels) 5% slower.
const IN_PLACE_PANELS: u64 = 16;

impl Geometry {
    /// Whether the product is pixel-major for `target`: a plain convolution (one
    /// group, no Winograd) whose output channels fill the tile's NR-wide vectors so
    /// much better than its pixels do that it pays for the transposing pass, for a tile
    /// whose MR-pixel panels keep vectors of four inside a panel.
    pub fn pixel_major(&self, target: &CpuTarget) -> bool {
        if self.dense || self.winograd.is_some() || self.groups != 1 || !target.mr.is_multiple_of(4)
        {
            return false;
        }
        let filled =
            |used: u64| used as f64 / used.div_ceil(target.nr).max(1) as f64 / target.nr as f64;
        // Time per useful multiply, each way round.
        let direct = 1.0 / filled(self.n());
        let transpose = TRANSPOSE_STEPS + RESIDUAL_STEPS * self.residuals as f64;
        let turned = 1.0 / filled(self.m()) + transpose / self.k().max(1) as f64;
        turned + TIE < direct
    }

    /// Whether the tiles read the chunk's pixels where they lie (a pointwise product
    /// of few weight panels): a channel's pixels are already consecutive floats, so
    /// the copy into MR-pixel panels (a sixth of a 768 -> 192 channel 1x1 conv's time
    /// at 17x17) is skipped and the tile steps a plane for each step of K.
    pub fn pixels_in_place(&self, target: &CpuTarget) -> bool {
        target.exact_edges && self.pointwise() && self.m().div_ceil(target.nr) <= IN_PLACE_PANELS
    }

    /// Pixels per chunk: every thread one chunk (each chunk reads all the weights), as
    /// even as they go, and no more than keep a K block of the packed pixels in L2;
    /// where the threads split the channels instead, as for one thread.
    pub(super) fn chunk_pixels(&self, target: &CpuTarget) -> u64 {
        let most = (CHUNK_FLOATS / self.k_block(target))
            .max(target.mr)
            .min(DIVIDEND_LIMIT / 2);
        let threads = match self.channel_parts(target) {
            1 => target.threads.max(1),
            _ => 1,
        };
        let chunks = threads.max(self.n().div_ceil(most));
        let even = self.n().div_ceil(chunks).max(1);
        // Whole output rows where they fit as well (17 rows for two threads: 9 and 8),
        // so every chunk is packed by the straight-line code.
        let whole_rows = self.out_height.div_ceil(chunks) * self.out_width;
        if whole_rows <= most && self.n().div_ceil(whole_rows) == self.n().div_ceil(even) {
            whole_rows
        } else {
            even
        }
    }

    /// Whether every chunk of pixels is whole output rows.
    fn rows_chunks(&self, target: &CpuTarget) -> bool {
        self.out_width > 0 && self.chunk_pixels(target).is_multiple_of(self.out_width)
    }

    /// Parts the output channels are cut into, whole weight panels each: one per
    /// thread where the weights are too big for L2 (ResNet-50's last stage: 4-9 MiB
    /// a layer for 49 pixels). Every thread splitting the pixels would read all of
    /// them from memory, so two threads took as long as one; each part reads its own,
    /// and packs the few pixels again.
    pub(super) fn channel_parts(&self, target: &CpuTarget) -> u64 {
        let panels = self.m().div_ceil(target.nr);
        if target.threads <= 1 || self.m() * self.k() * 4 < L2_BYTES {
            return 1;
        }
        let wanted = target.threads.min(panels).max(1);
        panels.div_ceil(panels.div_ceil(wanted))
    }

    /// Weight panels per channel part (the last part may have fewer).
    fn panels_per_part(&self, target: &CpuTarget) -> u64 {
        let panels = self.m().div_ceil(target.nr);
        panels.div_ceil(self.channel_parts(target))
    }

    pub(super) fn pixel_chunk_count(&self, target: &CpuTarget) -> u64 {
        self.n().div_ceil(self.chunk_pixels(target)) * self.channel_parts(target)
    }

    /// The output channels rounded up to whole weight panels: Cᵀ's row length.
    fn padded_channels(&self, target: &CpuTarget) -> u64 {
        self.m().div_ceil(target.nr) * target.nr
    }

    /// The scratch of a pixel-major chunk: a K block of its packed pixels (none where
    /// the tiles read them in place), then Cᵀ.
    pub(super) fn pixel_scratch(&self, target: &CpuTarget) -> PixelScratch {
        let rows = self.chunk_pixels(target).div_ceil(target.mr) * target.mr;
        let packed = match self.pixels_in_place(target) {
            true => 0,
            false => rows * self.k_block(target),
        };
        let transposed = rows * self.padded_channels(target);
        // Chunks of whole rows are packed by straight-line code.
        let staged = match self.rows_chunks(target) {
            true => {
                let rows = self.chunk_pixels(target) / self.out_width;
                self.staged_floats(rows, target.mr, self.k_block(target))
            }
            false => 0,
        };
        PixelScratch {
            packed,
            staged: packed + transposed,
            floats: packed + transposed + staged,
        }
    }

    /// Floats of the weights packed for a pixel-major product: NR-channel panels over
    /// all of K.
    pub(super) fn pixel_major_weights(&self, target: &CpuTarget) -> u64 {
        self.padded_channels(target) * self.k()
    }
}

/// Where Cᵀ starts in a thread's scratch, and the scratch's size.
pub(super) struct PixelScratch {
    packed: u64,
    /// Where a padded (or phased) conv's staged plane goes (`pack/straight.rs`).
    staged: u64,
    pub floats: u64,
}

impl Product<'_> {
    /// The pixel chunks `[begin, end)` of one sample, each unit a span of pixels and a
    /// part of the channels: full spans in a loop, then the short one if asked.
    pub(super) fn pixel_chunks(&self, b: &mut FunctionBuilder, at: &At) {
        let (g, target) = (self.geometry, self.target);
        let (per_chunk, n) = (g.chunk_pixels(target), g.n());
        let parts = g.channel_parts(target);
        let full = n / per_chunk;
        let (begin, end) = self.chunks;
        let full_end = b.ins().iconst(types::I64, (full * parts) as i64);
        let full_end = b.ins().smin(end, full_end);
        counted(b, begin, full_end, 1, |b, unit| {
            let chunk = b.ins().udiv_imm_u(unit, parts as i64);
            let part = b.ins().urem_imm_u(unit, parts as i64);
            let first = b.ins().imul_imm_s(chunk, per_chunk as i64);
            self.pixel_chunk(b, first, per_chunk, part, at);
        });
        if n % per_chunk != 0 {
            let short_begin = b.ins().iconst(types::I64, (full * parts) as i64);
            let short_begin = b.ins().smax(begin, short_begin);
            let short_end = b.ins().iconst(types::I64, ((full + 1) * parts) as i64);
            let short_end = b.ins().smin(end, short_end);
            counted(b, short_begin, short_end, 1, |b, unit| {
                let part = b.ins().iadd_imm_s(unit, -((full * parts) as i64));
                let first = b.ins().iconst(types::I64, (full * per_chunk) as i64);
                self.pixel_chunk(b, first, n % per_chunk, part, at);
            });
        }
    }

    /// The weight panels `[first, end)` of a channel part.
    fn part_panels(&self, b: &mut FunctionBuilder, part: Value) -> (Value, Value) {
        let (g, target) = (self.geometry, self.target);
        let per_part = g.panels_per_part(target);
        let first = b.ins().imul_imm_s(part, per_part as i64);
        let end = b.ins().iadd_imm_s(first, per_part as i64);
        let panels = b.ins().iconst(types::I64, g.m().div_ceil(target.nr) as i64);
        (first, b.ins().smin(end, panels))
    }

    /// `count` pixels from `first`, the channels of `part`: their products over the K
    /// blocks into Cᵀ, Cᵀ into the output with the epilogue applied on the way (or the
    /// epilogue after, over those columns, where a step calls a runtime helper).
    fn pixel_chunk(&self, b: &mut FunctionBuilder, first: Value, count: u64, part: Value, at: &At) {
        let panels = self.part_panels(b, part);
        self.each_k_block(b, |b, block| {
            self.pixel_block(b, block, first, count, panels, at)
        });
        let nr = self.target.nr as i64;
        let first_channel = b.ins().imul_imm_s(panels.0, nr);
        let end_channel = b.ins().imul_imm_s(panels.1, nr);
        let all = b.ins().iconst(types::I64, self.geometry.m() as i64);
        let end_channel = b.ins().smin(end_channel, all);
        let channels = (first_channel, end_channel);
        let steps = &self.kernel.epilogue;
        match epilogue::in_registers(steps, self.pointers) {
            // Applied as the transposed values are stored: no second pass over them.
            Some(steps) => self.transpose_out(b, first, count, channels, steps, at),
            None => {
                self.transpose_out(b, first, count, channels, &[], at);
                let columns = epilogue::Columns {
                    first,
                    count,
                    channels,
                };
                self.epilogue(b, steps, at, &columns);
            }
        }
    }

    /// One K block: the chunk's pixels packed (or read in place), then every (weights
    /// panel, pixel tile) pair through the tile into Cᵀ.
    fn pixel_block(
        &self,
        b: &mut FunctionBuilder,
        block: &Block,
        first: Value,
        count: u64,
        (first_panel, end_panel): (Value, Value),
        at: &At,
    ) {
        let (g, target) = (self.geometry, self.target);
        let (mr, nr) = (target.mr, target.nr);
        let scratch = self.pointers.get(&Arg::Scratch);
        // Where tile i's A starts (`a_base` + i x `panel` floats) and its K step.
        let (a_base, panel, a_step) = match g.pixels_in_place(target) {
            true => {
                let channel = offset(b, at.input, block.p0, g.n());
                (offset(b, channel, first, 1), mr, g.n())
            }
            false => {
                self.pack_pixels(b, block, first, count, at);
                (scratch, block.kc * mr, mr)
            }
        };
        let transposed = offset_by(b, scratch, g.pixel_scratch(target).packed);
        let ldc = g.padded_channels(target);
        let k_offset = b.ins().imul_imm_s(block.p0, (nr * 4) as i64);
        let weights = b.ins().iadd(at.weights, k_offset);
        counted(b, first_panel, end_panel, 1, |b, j| {
            let b_panel = offset(b, weights, j, g.k() * nr);
            let column = b.ins().imul_imm_s(j, nr as i64);
            let corner = offset(b, transposed, column, 1);
            let tile_at = |b: &mut FunctionBuilder, i: Value, rows: u64| {
                let a_panel = offset(b, a_base, i, panel);
                let corner = offset(b, corner, i, mr * ldc);
                let tile = Tile {
                    a_panel,
                    a_step,
                    b_panel,
                    b_steps: Steps::Stride(nr),
                    corner,
                    ldc,
                    rows,
                    columns: nr,
                    finish: None,
                };
                self.tile(b, block, &tile);
            };
            fixed(b, count / mr, |b, i| tile_at(b, i, mr));
            if !count.is_multiple_of(mr) {
                let i = b.ins().iconst(types::I64, (count / mr) as i64);
                tile_at(b, i, count % mr);
            }
        });
    }

    /// The chunk's pixels of a K block into its MR-pixel panels.
    fn pack_pixels(
        &self,
        b: &mut FunctionBuilder,
        block: &Block,
        first: Value,
        count: u64,
        at: &At,
    ) {
        let (g, target) = (self.geometry, self.target);
        let mr = target.mr;
        let scratch = self.pointers.get(&Arg::Scratch);
        let staging = offset_by(b, scratch, g.pixel_scratch(target).staged);
        Packing {
            geometry: g,
            panel: mr,
            kc: block.kc,
            p0: block.p0,
            pixels: match g.rows_chunks(target) {
                true => Pixels::Rows {
                    first_row: b.ins().udiv_imm_u(first, g.out_width as i64),
                    rows: count / g.out_width,
                },
                false => Pixels::Span { first, count },
            },
            input: at.input,
            scratch,
            staging,
        }
        .generate(b);
    }

    /// Cᵀ's `count` rows into the output's columns `first..`, channels `[from, to)` (a
    /// part's: `from` a multiple of four), with `steps` (none a helper's) applied on the
    /// way: four channels by four pixels at a time, transposed in registers, so each of
    /// the four channels' rows gets one vector store. Channel quads outside: the
    /// chunk's Cᵀ column of a quad stays in L1 while its four output rows are written in
    /// order (one float per store, pixel outside, had a thousand output rows' lines in
    /// flight: a third of a 256 -> 1024 channel 1x1 conv's time at 14x14).
    fn transpose_out(
        &self,
        b: &mut FunctionBuilder,
        first: Value,
        count: u64,
        (first_channel, end_channel): (Value, Value),
        steps: &[Step],
        at: &At,
    ) {
        let (g, target) = (self.geometry, self.target);
        let flags = MemFlagsData::new().with_notrap();
        let scratch = self.pointers.get(&Arg::Scratch);
        let transposed = offset_by(b, scratch, g.pixel_scratch(target).packed);
        let ldc = g.padded_channels(target);
        let (m, n) = (g.m(), g.n());
        let output = offset(b, at.output, first, 1);
        // Residual inputs at column `first` of the group's first channel.
        let add_bases: Vec<Value> = epilogue::add_inputs(steps)
            .map(|input| epilogue::residual_at(b, self.fused, g, self.pointers, input, at, first))
            .collect();
        let listed: Vec<&Step> = steps.iter().collect();
        // Channel `m`'s scalars and residual rows.
        let channel = |b: &mut FunctionBuilder, m: Value| {
            let add_rows = add_bases
                .iter()
                .map(|&base| offset(b, base, m, n))
                .collect();
            epilogue::channel(b, steps, self.pointers, m, add_rows)
        };
        let first_quad = b.ins().ushr_imm_u(first_channel, 2);
        let end_quad = b.ins().ushr_imm_u(end_channel, 2);
        counted(b, first_quad, end_quad, 1, |b, quad| {
            let from = offset(b, transposed, quad, 4);
            let to = offset(b, output, quad, 4 * n);
            let first_of_quad = b.ins().ishl_imm_u(quad, 2);
            let channels: Vec<Channel> = (0..4)
                .map(|j| {
                    let m = b.ins().iadd_imm_s(first_of_quad, j);
                    channel(b, m)
                })
                .collect();
            fixed(b, count / 4, |b, four| {
                let from = offset(b, from, four, 4 * ldc);
                let rows = std::array::from_fn(|pixel| {
                    load_at(b, types::F32X4, from, (pixel as u64 * ldc * 4) as i64)
                });
                let columns = transpose(b, rows);
                let pixel = b.ins().ishl_imm_u(four, 2);
                let to = offset(b, to, pixel, 1);
                for (j, column) in columns.into_iter().enumerate() {
                    let value =
                        epilogue::apply(b, types::F32X4, &listed, &channels[j], column, pixel);
                    b.ins().store(flags, value, to, (j as u64 * n * 4) as i32);
                }
            });
            for pixel in count / 4 * 4..count {
                let lanes = load_at(b, types::F32X4, from, (pixel * ldc * 4) as i64);
                let at = b.ins().iconst(types::I64, pixel as i64);
                for (j, channel) in channels.iter().enumerate() {
                    let value = b.ins().extractlane(lanes, j as u8);
                    let value = epilogue::apply(b, types::F32, &listed, channel, value, at);
                    let element = (j as u64 * n + pixel) * 4;
                    b.ins().store(flags, value, to, element as i32);
                }
            }
        });
        if !m.is_multiple_of(4) {
            // The channels after the last whole quad, written by the part that ends at m.
            let has_tail = b.ins().icmp_imm_s(IntCC::Equal, end_channel, m as i64);
            if_else(
                b,
                has_tail,
                |b| {
                    for tail in (m / 4) * 4..m {
                        let m = b.ins().iconst(types::I64, tail as i64);
                        let channel = channel(b, m);
                        let to = offset_by(b, output, tail * n);
                        fixed(b, count, |b, pixel| {
                            let from = offset(b, transposed, pixel, ldc);
                            let value = load_at(b, types::F32, from, (tail * 4) as i64);
                            let value =
                                epilogue::apply(b, types::F32, &listed, &channel, value, pixel);
                            let destination = offset(b, to, pixel, 1);
                            b.ins().store(flags, value, destination, 0);
                        });
                    }
                },
                |_| {},
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{geometry, target};

    #[test]
    fn small_outputs_of_many_channels_are_pixel_major() {
        let avx512 = target(12, 32, 1);
        // 49 pixels fill 49 of 64 lanes; 512 channels fill every one.
        let strided = geometry("512x14x14", "conv(512, 3x3, stride=2, pad=1)");
        assert!(strided.pixel_major(&avx512));
        assert!(geometry("256x14x14", "conv(256, 1x1)").pixel_major(&avx512));
        // 784 pixels fill 98% of their panels: the direct product stays.
        assert!(!geometry("64x28x28", "conv(64, 3x3, pad=1)").pixel_major(&avx512));
        // 16 channels would fill half a panel.
        assert!(!geometry("6x14x14", "conv(16, 5x5)").pixel_major(&avx512));
        // Grouped convolutions and tiles whose rows are not a multiple of four stay direct.
        assert!(!geometry("64x7x7", "conv(64, 3x3, pad=1, groups=2)").pixel_major(&avx512));
        assert!(!geometry("512x7x7", "conv(512, 3x3, pad=1)").pixel_major(&target(6, 16, 1)));
    }

    #[test]
    fn a_residual_read_on_the_way_out_keeps_a_short_k_product_direct() {
        let avx512 = target(12, 32, 1);
        let mut compilation = crate::compile(
            "network N(input: 1024x14x14) { residual { conv(256, 1x1) relu conv(1024, 1x1) } relu }",
        );
        assert!(!compilation.has_errors(), "{:?}", compilation.diagnostics);
        let fused = crate::passes::fuse(&compilation.networks.remove(0));
        let kernels: Vec<_> = fused
            .kernels
            .iter()
            .filter_map(|k| super::Geometry::of(&fused, k))
            .collect();
        let [reduce, expand] = kernels.as_slice() else {
            panic!("two convs: {kernels:?}")
        };
        // 1024 -> 256: K = 1024 pays for the transposing pass.
        assert_eq!(reduce.residuals, 0);
        assert!(reduce.pixel_major(&avx512));
        // 256 -> 1024 adds the block's input as it writes: with K = 256 the pass
        // and the residual's read cost more than the pixels' 7/8-full panels.
        assert_eq!(expand.residuals, 1);
        assert!(!expand.pixel_major(&avx512));
        // The same product without the residual turns over.
        let plain = geometry("256x14x14", "conv(1024, 1x1)");
        assert!(plain.pixel_major(&avx512));
    }

    #[test]
    fn threads_get_spans_of_whole_rows_of_pixels() {
        // Weights that stay in L2 (256 KiB).
        let g = geometry("256x7x7", "conv(256, 1x1)");
        assert!(g.pixel_major(&target(12, 32, 2)));
        // Whole rows where they make as many chunks: 4 and 3 rows of 7 for two threads.
        assert_eq!(g.chunk_pixels(&target(12, 32, 1)), 49);
        assert_eq!(g.chunk_pixels(&target(12, 32, 2)), 28);
        assert_eq!(g.chunk_pixels(&target(12, 32, 3)), 21);
        assert_eq!(g.pixel_chunk_count(&target(12, 32, 2)), 2);
        assert_eq!(g.pixel_chunk_count(&target(12, 32, 3)), 3);
    }

    #[test]
    fn threads_split_the_channels_of_weights_too_big_for_l2() {
        // 512 x 4608 weights (9 MiB) for 49 pixels: each thread its half of the
        // channels, every pixel in one span, packed as whole rows.
        let big = geometry("512x14x14", "conv(512, 3x3, stride=2, pad=1)");
        assert_eq!(big.channel_parts(&target(12, 32, 1)), 1);
        assert_eq!(big.channel_parts(&target(12, 32, 2)), 2);
        assert_eq!(big.chunk_pixels(&target(12, 32, 2)), 49);
        assert_eq!(big.pixel_chunk_count(&target(12, 32, 2)), 2);
        assert!(big.pixel_scratch(&target(12, 32, 2)).staged > 0);
        // 256 x 256 weights stay in L2: the threads split the pixels.
        let small = geometry("256x14x14", "conv(256, 1x1)");
        assert_eq!(small.channel_parts(&target(12, 32, 2)), 1);
        assert_eq!(small.chunk_pixels(&target(12, 32, 2)), 98);
    }
}
