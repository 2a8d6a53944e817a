//! A conv (or dense) kernel: per sample and group, im2col packing and the blocked
//! product, then the epilogue over the output.

use super::epilogue;
use super::loops::{counted, fixed, if_else};
use super::pack::{Packing, Pixels, TableChunk};
use super::{Arg, CpuTarget, KernelCode, kernel_function, sample_stride};
use super::{pool, winograd};
use crate::ops::Op;
use crate::passes::{Algorithm, FusedGraph, Kernel, Step};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{AbiParam, InstBuilder, MemFlagsData, Signature, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

/// Everything about a convolution's sizes, all known at compile time. A dense layer is
/// a 1x1 convolution of a 1x1 image with `channels` = its input features.
#[derive(Debug, Clone, PartialEq)]
pub struct Geometry {
    pub channels: u64,
    pub height: u64,
    pub width: u64,
    pub out_channels: u64,
    pub out_height: u64,
    pub out_width: u64,
    pub kernel: [u64; 2],
    pub stride: [u64; 2],
    pub dilation: [u64; 2],
    /// Top, left, bottom, right.
    pub pads: [u64; 4],
    pub groups: u64,
    /// Elements between samples of the input's and the output's buffers.
    pub input_sample: u64,
    pub output_sample: u64,
    /// A dense layer (or a conv whose kernel covers its whole unpadded input): one
    /// column per sample, a matrix-vector product (the runtime's
    /// `Gemv` helper over row-major weights) rather than tiles that would be 1/NR used.
    pub dense: bool,
    /// Winograd F(m x m, r x r)'s m, when the compiler chose it for this conv (r is
    /// the kernel's side).
    pub winograd: Option<u64>,
    /// Tensors the epilogue adds to the output (residuals): each is read as the
    /// output is written.
    pub residuals: u64,
    /// The pool after the conv that it may compute as it writes its rows
    /// (`Kernel::with_producer`; whether it does is `fuses_pool`).
    pub pool: Option<FollowingPool>,
}

/// A pool whose windows tile the conv's output, by its kernel's index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FollowingPool {
    pub kernel: usize,
    pub stride: [u64; 2],
}

impl FollowingPool {
    fn of(fused: &FusedGraph, conv: &Kernel) -> Option<FollowingPool> {
        let reads_conv = |k: &Kernel| k.with_producer && k.inputs.first() == Some(&conv.output);
        let kernel = fused.kernels.iter().position(reads_conv)?;
        match &fused.kernels[kernel].op {
            Op::Pool(pool) => Some(FollowingPool {
                kernel,
                stride: pool.window.stride,
            }),
            _ => None,
        }
    }
}

impl Geometry {
    pub fn of(fused: &FusedGraph, kernel: &Kernel) -> Option<Geometry> {
        let input = *kernel.inputs.first()?;
        let in_shape = &fused.tensor(input).shape.0;
        let out_shape = &fused.tensor(kernel.output).shape.0;
        let (input_sample, output_sample) = (
            sample_stride(fused, input),
            sample_stride(fused, kernel.output),
        );
        match &kernel.op {
            Op::Conv(conv) => {
                let (&[c, h, w], &[m, oh, ow]) = (in_shape.as_slice(), out_shape.as_slice()) else {
                    return None;
                };
                let whole_input = conv.groups == 1
                    && conv.window.kernel == [h, w]
                    && conv.window.dilation == [1, 1]
                    && conv.window.pads([h, w]) == [0; 4]
                    && kernel.algorithm == Algorithm::Direct;
                if whole_input {
                    // One output pixel from every input value (LeNet-5's C5): the
                    // weights [m, c, h, w] are a dense layer's [m, c·h·w].
                    return Some(Geometry::matrix_vector(
                        c * h * w,
                        m,
                        input_sample,
                        output_sample,
                    ));
                }
                Some(Geometry {
                    channels: c,
                    height: h,
                    width: w,
                    out_channels: m,
                    out_height: oh,
                    out_width: ow,
                    kernel: conv.window.kernel,
                    stride: conv.window.stride,
                    dilation: conv.window.dilation,
                    pads: conv.window.pads([h, w]),
                    groups: conv.groups,
                    input_sample,
                    output_sample,
                    dense: false,
                    winograd: match kernel.algorithm {
                        Algorithm::Winograd { m, r } if conv.window.kernel == [r, r] => {
                            crate::winograd::transforms(m, r).map(|t| t.m)
                        }
                        _ => None,
                    },
                    residuals: epilogue::add_inputs(&kernel.epilogue).count() as u64,
                    pool: FollowingPool::of(fused, kernel),
                })
            }
            Op::Dense(_) => Some(Geometry::matrix_vector(
                in_shape.iter().product(),
                *out_shape.first()?,
                input_sample,
                output_sample,
            )),
            _ => None,
        }
    }

    /// `outputs` values of a sample, each from all its `inputs`: a matrix-vector product.
    fn matrix_vector(inputs: u64, outputs: u64, input_sample: u64, output_sample: u64) -> Geometry {
        Geometry {
            channels: inputs,
            height: 1,
            width: 1,
            out_channels: outputs,
            out_height: 1,
            out_width: 1,
            kernel: [1, 1],
            stride: [1, 1],
            dilation: [1, 1],
            pads: [0; 4],
            groups: 1,
            input_sample,
            output_sample,
            dense: true,
            winograd: None,
            residuals: 0,
            pool: None,
        }
    }

    /// Output channels per group: M of each product.
    pub fn m(&self) -> u64 {
        self.out_channels / self.groups
    }

    /// Input channels x kernel area per group: K of each product (the channels alone
    /// for Winograd's products, which multiply transformed tiles).
    pub fn k(&self) -> u64 {
        let channels = self.channels / self.groups;
        match self.winograd {
            Some(_) => channels,
            None => channels * self.kernel[0] * self.kernel[1],
        }
    }

    /// The transforms of the Winograd variant the compiler chose, if it chose one: F(m x
    /// m, r x r) with r the kernel's side.
    pub fn winograd_transforms(&self) -> Option<&'static crate::winograd::Transforms> {
        crate::winograd::transforms(self.winograd?, self.kernel[0])
    }

    /// Matrix products per sample and group: one, or one per point of Winograd's
    /// transformed tile.
    pub fn products(&self) -> u64 {
        self.winograd
            .map_or(1, |m| crate::winograd::points(m, self.kernel[0]))
    }

    /// Whether each group's input is its B as it lies (row p: channel p's plane): 1x1,
    /// stride 1, no padding (and every dense layer).
    pub fn pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.pads == [0; 4]
    }

    /// Whether a direct product's tiles may read B where it lies, a K step a plane
    /// apart, instead of a copy packed per chunk: a pointwise conv's chunk of whole
    /// output rows is NR consecutive floats of each channel per panel already. They do
    /// in the blocks whose column panels are the outer loop (`Product::rows_outer`),
    /// with a tile whose edge tiles read only their columns (a row's last panel may
    /// end where the input does).
    pub fn columns_in_place(&self, target: &CpuTarget) -> bool {
        target.exact_edges
            && self.pointwise()
            && !self.dense
            && self.winograd.is_none()
            && !self.pixel_major(target)
    }

    /// Whether a direct product's B is read from shifted copies of the input through a
    /// table of its steps (`pack/shifted.rs`) rather than packed by im2col: a conv of
    /// stride 1, no padding or dilation, taller than one row (the copies then hold each
    /// input value kw times rather than kh·kw), whose K is one block.
    pub fn shifted_copies(&self, target: &CpuTarget) -> bool {
        !self.dense
            && self.winograd.is_none()
            && !self.pixel_major(target)
            && self.kernel[0] > 1
            && self.stride == [1, 1]
            && self.dilation == [1, 1]
            && self.pads == [0; 4]
            && self.k() <= target.kc
    }

    /// Multiply-adds of a sample's product, all groups.
    fn macs(&self) -> u64 {
        (self.m().saturating_mul(self.k()))
            .saturating_mul(self.n())
            .saturating_mul(self.groups)
    }

    /// Output pixels: N of each product.
    pub fn n(&self) -> u64 {
        self.out_height * self.out_width
    }

    /// Output rows per chunk: as many as keep a K block of the chunk's packed input
    /// near 96 Ki floats (384 KiB, in L2 beside the weights' block), at least one.
    /// With several threads, chunks are also small enough that each thread gets two,
    /// and where it costs little, whole panels (rows x width a multiple of NR). Where
    /// the kernel pools its rows (`fuses_pool`), a whole number of the pool's rows.
    pub fn chunk_rows(&self, target: &CpuTarget) -> u64 {
        if let Some(m) = self.winograd {
            return winograd::chunk_rows(self, m, target);
        }
        self.pooled_rows(target)
            .unwrap_or_else(|| self.rows_in_multiples(1, target))
    }

    /// Whether the kernel computes the pool after it (`Kernel::with_producer`) chunk by
    /// chunk: a direct product in rows (not pixel-major, one group), whose chunks cut
    /// in whole pool rows cost its busiest thread no more than the chunks it would
    /// choose otherwise, or cost a small product's busiest thread less than a kernel
    /// of its own costs the pool: LeNet-5's C3 (`SMALL_PRODUCT`) on two threads, 6 + 4
    /// rows instead of 5 + 5 and S4 in them, LeNet-5 9.9-10.5 -> 9.7-9.9 us (the
    /// lowest of 3000 runs, 10 alternated rounds); S4 by itself read half of C3's rows
    /// from the other core, 0.53 us.
    pub fn fuses_pool(&self, target: &CpuTarget) -> bool {
        self.pooled_rows(target).is_some()
    }

    /// The chunks' rows, in whole pool rows, where the kernel pools them (`fuses_pool`).
    fn pooled_rows(&self, target: &CpuTarget) -> Option<u64> {
        let pool = self.pool?;
        if self.dense || self.winograd.is_some() || self.groups != 1 || self.pixel_major(target) {
            return None;
        }
        let pooled = self.rows_in_multiples(pool.stride[0], target);
        let free = self.rows_in_multiples(1, target);
        let pays = pooled == free
            || self.macs() < SMALL_PRODUCT
            || self.thread_cost(pooled, target) <= self.thread_cost(free, target);
        pays.then_some(pooled)
    }

    /// `chunk_rows` for chunks of a multiple of `multiple` rows (the output's height is
    /// one).
    fn rows_in_multiples(&self, multiple: u64, target: &CpuTarget) -> u64 {
        let (height, width) = (self.out_height.max(1), self.out_width.max(1));
        let columns = CHUNK_FLOATS / self.k_block(target);
        let mut rows = (columns / width).clamp(1, height);
        if target.threads > 1 {
            // Two chunks a thread, but no chunk under four panels: below that the
            // threads' start costs more than they save.
            let least = (4 * target.nr).div_ceil(width);
            rows = rows
                .min(height.div_ceil(2 * target.threads).max(least))
                .max(1);
        }
        // Between half and all of `rows`; for a pool's multiples, up to twice (one
        // chunk a thread rather than two: LeNet-5's C1, 28 rows on two threads, in
        // chunks of 14 rather than 7).
        let upper = if multiple > 1 { 2 * rows } else { rows };
        let mut candidates: Vec<u64> = (rows.div_ceil(2)..=upper.min(height))
            .filter(|r| r.is_multiple_of(multiple))
            .collect();
        if candidates.is_empty() {
            candidates.push(rows.next_multiple_of(multiple).min(height));
        }
        let whole_panels = |r: u64| (r * width).is_multiple_of(target.nr);
        // A short last chunk is a second copy of the chunk's code.
        let short = |r: u64| !height.is_multiple_of(r);
        if target.threads <= 1 {
            return candidates
                .into_iter()
                .rev()
                .min_by_key(|&r| (!whole_panels(r), short(r)))
                .unwrap_or(rows);
        }
        // The thread with the most rows decides the time (56 rows in chunks of 8 give
        // 2 threads 32 and 24; in chunks of 7, 28 each): the shortest longest share,
        // then whole panels, then no short chunk, then the bigger chunk.
        let by_rows = candidates
            .into_iter()
            .min_by_key(|&r| {
                let longest = longest_share(height, r, target.threads, |rows| rows);
                (longest, !whole_panels(r), short(r), std::cmp::Reverse(r))
            })
            .unwrap_or(rows);
        // Or one chunk of every row, its output channels cut among the threads
        // (`m_parts`), where that wastes fewer of the panels' columns than the threads'
        // row shares do, beyond packing every pixel once a part, and where a K block of
        // the whole output's packed pixels stays within twice a chunk's budget (768
        // KiB, beside the weights' block in the 2 MiB L2): ResNet-50's 28x28 1x1 convs
        // of 512 channels into 128, whose parts would pack 784 pixels of 256 channels
        // each, ran 35% slower cut by channels.
        let fits = self.k_block(target) * height * width <= 2 * CHUNK_FLOATS;
        match fits && self.thread_cost(by_rows, target) > self.thread_cost(height, target) {
            true => height,
            false => by_rows,
        }
    }

    /// The most work a thread does for chunks of `rows` output rows, in products of
    /// one tile row and one column (NR columns a panel, a started panel whole), plus
    /// packing: the thread with the longest share of the rows computes every output
    /// channel for it, while a single chunk's channel parts (`parts_for`) each pack the
    /// whole output's pixels and compute their tiles. A 14x14 output (196 pixels) on
    /// two threads pays 128 columns for 98 pixels a thread in rows, 224 for 196 in
    /// channels: ResNet-50's 1x1 convs there 8% sooner cut by channels.
    fn thread_cost(&self, rows: u64, target: &CpuTarget) -> f64 {
        let (height, width) = (self.out_height.max(1), self.out_width.max(1));
        let tiles = self.m().div_ceil(target.mr).max(1);
        let columns = |pixels: u64| pixels.div_ceil(target.nr) * target.nr;
        let cost = |pixels: u64, tiles: u64| {
            (columns(pixels) * tiles) as f64 + PACKED_PIXEL_COST * pixels as f64
        };
        let chunks = height.div_ceil(rows);
        let parts = self.parts_for(chunks, target);
        if parts == 1 {
            return longest_share(height, rows, target.threads, |r| {
                cost(r * width, tiles).round() as u64
            }) as f64;
        }
        let parts_a_thread = (chunks * parts).div_ceil(target.threads);
        parts_a_thread as f64 * cost(rows.min(height) * width, tiles.div_ceil(parts))
    }

    /// K per block: at most the target's, and the blocks as even as they go, so that no
    /// short last block pays a whole pass over C for a few steps of K (K = 576: three
    /// blocks of 192, not 256 + 256 + 64).
    pub fn k_block(&self, target: &CpuTarget) -> u64 {
        let k = self.k().max(1);
        k.div_ceil(k.div_ceil(target.kc))
    }

    /// Row chunks of a sample's output: full ones, then a short one if any.
    pub fn row_chunks(&self, target: &CpuTarget) -> u64 {
        self.out_height.div_ceil(self.chunk_rows(target))
    }

    /// Parts each row chunk's output channels are cut into, so that a small output (too
    /// few row chunks for every thread to get two) still spreads over the threads.
    pub fn m_parts(&self, target: &CpuTarget) -> u64 {
        self.parts_for(self.row_chunks(target), target)
    }

    /// `m_parts` for `chunks` row chunks.
    fn parts_for(&self, chunks: u64, target: &CpuTarget) -> u64 {
        if target.threads <= 1 || self.dense || chunks >= 2 * target.threads {
            return 1;
        }
        let tiles = self.m().div_ceil(target.mr);
        // Each part transforms (packs) the chunk's input again: Winograd's transform is
        // dearer than packing, and for a small product (all its groups: every unit
        // computes them all) a second part a thread balances less than its packing
        // costs, so one part a thread for those.
        let per_thread = match self.winograd.is_some() || self.macs() < SMALL_PRODUCT {
            true => 1,
            false => 2,
        };
        let wanted = (per_thread * target.threads)
            .div_ceil(chunks)
            .clamp(1, tiles);
        // As many parts as the tiles fill: no part is left empty.
        tiles.div_ceil(tiles.div_ceil(wanted))
    }

    /// Whether the units cut a span's output channels into parts (`m_parts`, or a
    /// pixel-major product's `channel_parts`).
    pub fn cuts_channels(&self, target: &CpuTarget) -> bool {
        match self.pixel_major(target) {
            true => self.channel_parts(target) > 1,
            false => self.m_parts(target) > 1,
        }
    }

    /// Units of work threads share: every row chunk times every part of its channels
    /// (a matrix-vector product's chunks of rows).
    pub fn chunk_count(&self, target: &CpuTarget) -> u64 {
        if self.dense {
            return self.m().div_ceil(self.dense_rows(target)).max(1);
        }
        if self.pixel_major(target) {
            return self.pixel_chunk_count(target);
        }
        self.row_chunks(target) * self.m_parts(target)
    }

    /// Output features per chunk of a matrix-vector product: all of them on one
    /// thread; otherwise two chunks a thread (a busy core then leaves the other thread
    /// a chunk to take), of at least 16 rows.
    pub fn dense_rows(&self, target: &CpuTarget) -> u64 {
        let m = self.m().max(1);
        if target.threads <= 1 {
            return m;
        }
        m.div_ceil(2 * target.threads).max(16).min(m)
    }

    /// Floats of one K block of one chunk's packed input.
    pub fn packed_input(&self, target: &CpuTarget) -> u64 {
        let columns = self.chunk_rows(target) * self.out_width;
        columns.div_ceil(target.nr) * target.nr * self.k_block(target)
    }

    /// Floats of each thread's scratch: the packed input, then a padded (or phased)
    /// conv's staged plane (`pack/straight.rs`); Winograd's transformed tiles and
    /// products, or the shifted copies and their table (`pack/shifted.rs`), instead.
    pub fn scratch_floats(&self, target: &CpuTarget) -> u64 {
        match self.winograd {
            Some(m) => winograd::Scratch::of(self, m, target).floats,
            None if self.pixel_major(target) => self.pixel_scratch(target).floats,
            None if self.shifted_copies(target) => {
                self.shifted_copies_scratch(self.chunk_rows(target))
            }
            None if self.staged_rows(target) => self.staged_rows_scratch(self.chunk_rows(target)),
            None => {
                let rows = self.chunk_rows(target);
                let staged = self.staged_floats(rows, target.nr, self.k_block(target));
                self.packed_input(target) + staged
            }
        }
    }

    /// Floats of the packed weights, for `target`'s tile (row-major for a dense layer;
    /// for Winograd, one packed matrix per product, one after another).
    pub fn packed_weights(&self, target: &CpuTarget) -> u64 {
        if self.dense {
            return self.m() * self.k();
        }
        if self.pixel_major(target) {
            return self.pixel_major_weights(target);
        }
        self.products() * self.groups * self.m().div_ceil(target.mr) * target.mr * self.k()
    }
}

/// The values a kernel's code works with, loaded from its argument array once.
pub(super) struct Pointers {
    pub slots: Vec<Value>,
    pub args: Vec<Arg>,
}

impl Pointers {
    pub fn get(&self, arg: &Arg) -> Value {
        self.find(arg).expect("slot declared")
    }

    /// The slot of `arg`, if the kernel declared one.
    pub fn find(&self, arg: &Arg) -> Option<Value> {
        let slot = self.args.iter().position(|a| a == arg)?;
        Some(self.slots[slot])
    }
}

pub fn generate(
    fused: &FusedGraph,
    index: usize,
    geometry: Geometry,
    target: &CpuTarget,
) -> KernelCode {
    let kernel = &fused.kernels[index];
    let mut args = vec![
        Arg::Input,
        Arg::Output,
        Arg::PackedWeights,
        Arg::Bias,
        Arg::Scratch,
        Arg::Tile,
        Arg::Gemv,
    ];
    if let Some(m) = geometry.winograd.filter(|_| target.winograd_helpers) {
        let r = geometry.kernel[0];
        args.extend([Arg::WinogradInput { m, r }, Arg::WinogradOutput { m, r }]);
    }
    args.extend(epilogue::args(kernel, target));
    if geometry.fuses_pool(target) {
        args.push(Arg::PooledOutput);
    }
    let pointer = target.frontend.pointer_type();
    let slots_declared = args.clone();
    let function = kernel_function(index, target, |b, params| {
        let slots = (0..slots_declared.len())
            .map(|i| {
                let flags = MemFlagsData::new().with_notrap();
                b.ins().load(pointer, flags, params.args, (i * 8) as i32)
            })
            .collect();
        let pointers = Pointers {
            slots,
            args: slots_declared.clone(),
        };
        let product = Product {
            fused,
            kernel,
            geometry: &geometry,
            target,
            pointers: &pointers,
            chunks: (params.begin, params.end),
        };
        let zero = b.ins().iconst(types::I64, 0);
        counted(b, zero, params.batch, 1, |b, n| product.sample(b, n));
    });
    let scratch_floats = geometry.scratch_floats(target);
    KernelCode {
        kernel: index,
        function,
        args,
        scratch_floats,
        chunks: geometry.chunk_count(target),
        cuts_channels: geometry.cuts_channels(target),
        layout: if geometry.pixel_major(target) {
            Some("pixel-major")
        } else if geometry.shifted_copies(target) {
            Some("shifted copies")
        } else if geometry.staged_rows(target) {
            Some("staged rows")
        } else {
            None
        },
        geometry: Some(geometry),
    }
}

/// The most any thread does, each chunk of `r` rows costing `cost(r)`, when `height`
/// rows in chunks of `rows` are split as the runtime splits chunks: in `threads`
/// contiguous ranges, as even as they go.
fn longest_share(height: u64, rows: u64, threads: u64, cost: impl Fn(u64) -> u64) -> u64 {
    let chunks = height.div_ceil(rows);
    let parts = threads.clamp(1, chunks);
    (0..parts)
        .map(|p| {
            let (first, end) = (chunks * p / parts, chunks * (p + 1) / parts);
            (first..end)
                .map(|c| cost(rows.min(height - c * rows)))
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0)
}

/// Multiply-adds (of all groups) below which a product's threads take one unit each
/// (`parts_for`): LeNet-5's C3 (240 K, 10x10 outputs) alone at two threads, each
/// thread a chunk of five rows, ran in 4.54-4.63 us (the lowest five minimums of 20000
/// runs in 14 alternated rounds) against 4.59-5.09 with each chunk's channels cut in
/// two parts, which packed its rows twice; LeNet-5 at two threads 10.86-10.97 against
/// 11.03-11.33. Of the example networks only that layer is this small and cut in parts.
const SMALL_PRODUCT: u64 = 1 << 20;

/// What packing one pixel (its K values, into a panel) costs, in products of one tile
/// row and one column (MR x K multiply-adds): fitted to ResNet-50's 1x1 convs at two
/// threads, where cutting the channels made the 14x14 ones into 1024 channels 8% and
/// the 28x28 ones into 512 4% sooner, and Inception-v3's 8x8 ones into 832 channels 5%
/// slower.
const PACKED_PIXEL_COST: f64 = 1.0;

/// Floats of a chunk's packed input per K block: 384 KiB, in L2 beside the weights'
/// block.
pub(super) const CHUNK_FLOATS: u64 = 96 * 1024;

/// The L2 cache per core the loop nest is blocked for (2 MiB on this machine's Xeon).
pub const L2_BYTES: u64 = 2 * 1024 * 1024;

/// `base + index * stride` floats.
pub(super) fn offset(b: &mut FunctionBuilder, base: Value, index: Value, stride: u64) -> Value {
    let bytes = b.ins().imul_imm_s(index, (stride * 4) as i64);
    b.ins().iadd(base, bytes)
}

/// `base + constant` floats.
pub(super) fn offset_by(b: &mut FunctionBuilder, base: Value, floats: u64) -> Value {
    if floats == 0 {
        base
    } else {
        b.ins().iadd_imm_s(base, (floats * 4) as i64)
    }
}

/// `base + bytes` as a memory instruction's pointer and offset: the offset in the
/// instruction where it fits in its 32 bits, else added to the pointer first (a legal
/// plane or row can be longer than 2 GiB, and a wrapped offset reads somewhere else).
fn address(b: &mut FunctionBuilder, base: Value, bytes: i64) -> (Value, i32) {
    match i32::try_from(bytes) {
        Ok(bytes) => (base, bytes),
        Err(_) => (b.ins().iadd_imm_s(base, bytes), 0),
    }
}

/// A load of `ty` at `base + bytes`, however far.
pub(super) fn load_at(b: &mut FunctionBuilder, ty: Type, base: Value, bytes: i64) -> Value {
    let (at, offset) = address(b, base, bytes);
    b.ins()
        .load(ty, MemFlagsData::new().with_notrap(), at, offset)
}

/// A store of `value` at `base + bytes`, however far.
pub(super) fn store_at(b: &mut FunctionBuilder, value: Value, base: Value, bytes: i64) {
    let (at, offset) = address(b, base, bytes);
    b.ins()
        .store(MemFlagsData::new().with_notrap(), value, at, offset);
}

/// The matrix products of one sample.
pub(super) struct Product<'a> {
    pub fused: &'a FusedGraph,
    pub kernel: &'a Kernel,
    pub geometry: &'a Geometry,
    pub target: &'a CpuTarget,
    pub pointers: &'a Pointers,
    /// The chunks this call computes, `[begin, end)` of the kernel's numbering (full
    /// chunks first, then the short one): threads split a kernel by chunks.
    pub chunks: (Value, Value),
}

/// One K block: its size, and where it starts (a loop value or a constant).
pub(super) struct Block {
    pub kc: u64,
    pub p0: Value,
    /// Nonzero when earlier blocks have written C: the tile then adds to it.
    pub accumulate: Value,
    /// Nonzero for the last block of K: a tile that finishes the epilogue does it then.
    pub last: Value,
}

/// One matrix product of a K block through the tile nest: C (`m` x `n`, rows `ldc`
/// apart) of the weights' MR-row panels (`a_panel` floats each) times the packed
/// NR-column panels.
pub(super) struct Gemm {
    pub m: u64,
    pub n: u64,
    pub ldc: u64,
    pub a_panel: u64,
    pub weights: Value,
    pub columns: Panels,
    pub output: Value,
    /// The epilogue the tiles finish, at C's first row and column.
    pub finish: Option<TileFinish>,
}

/// Where a product's B is: panel j (NR columns) at `at` + j x `panel` floats, its K
/// steps as `steps` says; or, with `rows`, output row r's panels from `at` + r x its
/// step.
pub(super) struct Panels {
    pub at: Value,
    pub panel: u64,
    pub steps: Steps,
    pub rows: Option<RowPanels>,
}

/// Panels that stop at each output row's end (`pack/staged.rs`): row r's start
/// `step` floats after row r - 1's, its panels `width` columns in all.
#[derive(Clone, Copy)]
pub(super) struct RowPanels {
    pub width: u64,
    pub step: u64,
}

/// Where each K step of a B panel starts, from its first.
#[derive(Clone, Copy)]
pub(super) enum Steps {
    /// This many floats after the last.
    Stride(u64),
    /// Where the table at this address puts it (`tile::OFFSETS`).
    Table(Value),
}

impl Panels {
    /// B packed by K block: panels of `kc` steps of `nr` columns.
    pub fn packed(at: Value, kc: u64, nr: u64) -> Panels {
        Panels {
            at,
            panel: kc * nr,
            steps: Steps::Stride(nr),
            rows: None,
        }
    }
}

/// Where a tile finds the epilogue it finishes (`tile.rs`'s ABI): the bias of its first
/// row and the residual at its corner, if the epilogue has them.
#[derive(Clone, Copy)]
pub(super) struct TileFinish {
    pub bias: Option<Value>,
    pub residual: Option<Value>,
    pub relu: bool,
}

impl Product<'_> {
    /// `steps` of the kernel's epilogue over `columns` of the output at `at`.
    pub(super) fn epilogue(
        &self,
        b: &mut FunctionBuilder,
        steps: &[Step],
        at: &At,
        columns: &epilogue::Columns,
    ) {
        epilogue::generate(
            b,
            self.fused,
            steps,
            self.geometry,
            self.pointers,
            at,
            columns,
        );
    }

    fn sample(&self, b: &mut FunctionBuilder, n: Value) {
        let g = self.geometry;
        let input = offset(b, self.pointers.get(&Arg::Input), n, g.input_sample);
        let output = offset(b, self.pointers.get(&Arg::Output), n, g.output_sample);
        if g.dense {
            self.dense(b, n, input, output);
            return;
        }
        fixed(b, g.groups, |b, group| {
            let at = At {
                sample: n,
                group,
                input: offset(b, input, group, g.channels / g.groups * g.height * g.width),
                output: offset(b, output, group, g.m() * g.n()),
                weights: {
                    // A group's packed weights: one matrix per product (Winograd's α²).
                    let matrix = g.m().div_ceil(self.target.mr) * self.target.mr * g.k();
                    let per_group = g.products() * matrix;
                    offset(b, self.pointers.get(&Arg::PackedWeights), group, per_group)
                },
            };
            if g.pixel_major(self.target) {
                self.pixel_chunks(b, &at);
            } else {
                self.chunks(b, &at);
            }
        });
    }

    /// y = W·x for one sample through the runtime's matrix-vector helper, chunk by
    /// chunk of the output features, each followed by its epilogue.
    fn dense(&self, b: &mut FunctionBuilder, n: Value, input: Value, output: Value) {
        let g = self.geometry;
        let pointer = b.func.signature.params[0].value_type;
        let mut signature = Signature::new(b.func.signature.call_conv);
        for ty in [types::I64, types::I64, pointer, pointer, pointer] {
            signature.params.push(AbiParam::new(ty));
        }
        let signature = b.import_signature(signature);
        let rows = g.dense_rows(self.target);
        let k = b.ins().iconst(types::I64, g.k() as i64);
        let all = b.ins().iconst(types::I64, g.m() as i64);
        let (begin, end) = self.chunks;
        counted(b, begin, end, 1, |b, chunk| {
            let first = b.ins().imul_imm_s(chunk, rows as i64);
            let last = b.ins().iadd_imm_s(first, rows as i64);
            let last = b.ins().smin(last, all);
            let count = b.ins().isub(last, first);
            let weights = offset(b, self.pointers.get(&Arg::PackedWeights), first, g.k());
            let outputs = offset(b, output, first, 1);
            let callee = self.pointers.get(&Arg::Gemv);
            b.ins()
                .call_indirect(signature, callee, &[count, k, weights, input, outputs]);
            let zero = b.ins().iconst(types::I64, 0);
            let at = At {
                sample: n,
                group: zero,
                input,
                output,
                weights,
            };
            let columns = epilogue::Columns {
                first: zero,
                count: 1,
                channels: (first, last),
            };
            self.epilogue(b, &self.kernel.epilogue, &at, &columns);
        });
    }

    /// The chunks of `[begin, end)`: full ones in a loop, then the short one if asked.
    fn chunks(&self, b: &mut FunctionBuilder, at: &At) {
        let g = self.geometry;
        let (rows, oh) = (g.chunk_rows(self.target), g.out_height);
        let parts = g.m_parts(self.target);
        let full = oh / rows;
        let (begin, end) = self.chunks;
        // Units [0, full * parts) are the full row chunks, each cut into `parts`.
        let full_end = b.ins().iconst(types::I64, (full * parts) as i64);
        let full_end = b.ins().smin(end, full_end);
        counted(b, begin, full_end, 1, |b, unit| {
            let c = b.ins().udiv_imm_u(unit, parts as i64);
            let part = b.ins().urem_imm_u(unit, parts as i64);
            let first_row = b.ins().imul_imm_s(c, rows as i64);
            let chunk = Chunk {
                first_row,
                rows,
                columns: rows * g.out_width,
                part,
            };
            self.chunk(b, &chunk, at);
        });
        if oh % rows != 0 {
            // Then the short chunk's parts.
            let short_begin = b.ins().iconst(types::I64, (full * parts) as i64);
            let short_begin = b.ins().smax(begin, short_begin);
            let short_end = b.ins().iconst(types::I64, ((full + 1) * parts) as i64);
            let short_end = b.ins().smin(end, short_end);
            counted(b, short_begin, short_end, 1, |b, unit| {
                let part = b.ins().iadd_imm_s(unit, -((full * parts) as i64));
                let first_row = b.ins().iconst(types::I64, (full * rows) as i64);
                let short = oh % rows;
                let chunk = Chunk {
                    first_row,
                    rows: short,
                    columns: short * g.out_width,
                    part,
                };
                self.chunk(b, &chunk, at);
            });
        }
    }

    /// The row tiles `[first, end)` (of MR output channels) of a part.
    fn part_tiles(&self, b: &mut FunctionBuilder, part: Value) -> (Value, Value) {
        let g = self.geometry;
        let tiles = g.m().div_ceil(self.target.mr);
        let per_part = tiles.div_ceil(g.m_parts(self.target));
        let first = b.ins().imul_imm_s(part, per_part as i64);
        let end = b.ins().iadd_imm_s(first, per_part as i64);
        let all = b.ins().iconst(types::I64, tiles as i64);
        let end = b.ins().smin(end, all);
        (first, end)
    }

    /// `body` for every K block: the full ones in a loop, then the short one.
    pub(super) fn each_k_block(
        &self,
        b: &mut FunctionBuilder,
        mut body: impl FnMut(&mut FunctionBuilder, &Block),
    ) {
        let (k, kc) = (self.geometry.k(), self.geometry.k_block(self.target));
        let full_blocks = k / kc;
        let tail = k % kc != 0;
        fixed(b, full_blocks, |b, block| {
            let p0 = b.ins().imul_imm_s(block, kc as i64);
            let first = b.ins().icmp_imm_s(IntCC::NotEqual, block, 0);
            let accumulate = b.ins().uextend(types::I32, first);
            let last = if tail {
                b.ins().iconst(types::I32, 0)
            } else {
                let last = b
                    .ins()
                    .icmp_imm_s(IntCC::Equal, block, full_blocks as i64 - 1);
                b.ins().uextend(types::I32, last)
            };
            body(
                b,
                &Block {
                    kc,
                    p0,
                    accumulate,
                    last,
                },
            );
        });
        if tail {
            let p0 = b.ins().iconst(types::I64, (full_blocks * kc) as i64);
            let accumulate = b.ins().iconst(types::I32, i64::from(full_blocks > 0));
            let last = b.ins().iconst(types::I32, 1);
            let tail = Block {
                kc: k % kc,
                p0,
                accumulate,
                last,
            };
            body(b, &tail);
        }
    }

    /// The epilogue the tiles finish on their sums while they are in registers: for a
    /// direct product into the output, where the epilogue has the tile's form.
    fn tile_epilogue(&self) -> Option<epilogue::TileEpilogue> {
        let g = self.geometry;
        // Winograd's products are not the outputs: the runtime's output transform
        // finishes the epilogue instead, where the kernel calls it.
        let winograd_unfinished = g.winograd.is_some() && !self.target.winograd_helpers;
        if !self.target.tile_epilogue
            || winograd_unfinished
            || g.dense
            || g.pixel_major(self.target)
        {
            return None;
        }
        epilogue::TileEpilogue::of(&self.kernel.epilogue)
    }

    /// The K blocks of one chunk of output rows, then its epilogue (unless the tiles
    /// finished it).
    fn chunk(&self, b: &mut FunctionBuilder, chunk: &Chunk, at: &At) {
        let g = self.geometry;
        let first_column = b.ins().imul_imm_s(chunk.first_row, g.out_width as i64);
        let (input, weights) = (at.input, at.weights);
        let output = offset(b, at.output, first_column, 1);
        let tile_epilogue = self.tile_epilogue();
        let finish = tile_epilogue.map(|e| TileFinish {
            bias: e
                .bias
                .then(|| offset(b, self.pointers.get(&Arg::Bias), at.group, g.m())),
            residual: e.residual.map(|input| {
                epilogue::residual_at(b, self.fused, g, self.pointers, input, at, first_column)
            }),
            relu: e.relu,
        });
        self.each_k_block(b, |b, block| {
            self.block(b, block, chunk, input, weights, output, finish)
        });
        let (first_tile, end_tile) = self.part_tiles(b, chunk.part);
        let first_channel = b.ins().imul_imm_s(first_tile, self.target.mr as i64);
        let end_channel = b.ins().imul_imm_s(end_tile, self.target.mr as i64);
        let channels = b.ins().iconst(types::I64, self.geometry.m() as i64);
        let end_channel = b.ins().smin(end_channel, channels);
        if let Some(m) = self.geometry.winograd {
            let channels = (first_channel, end_channel);
            winograd::output_transform(b, self, m, chunk, at.output, channels, finish);
        }
        // What the tiles left of the epilogue.
        let rest = &self.kernel.epilogue[tile_epilogue.map_or(0, |e| e.steps)..];
        let columns = epilogue::Columns {
            first: first_column,
            count: chunk.columns,
            channels: (first_channel, end_channel),
        };
        self.epilogue(b, rest, at, &columns);
        if let Some(pooled) = self.pointers.find(&Arg::PooledOutput) {
            self.pool_rows(b, pooled, chunk, at, (first_channel, end_channel));
        }
    }

    /// The following pool over the chunk's rows, now finished and in cache
    /// (`Geometry::fuses_pool`).
    fn pool_rows(
        &self,
        b: &mut FunctionBuilder,
        pooled: Value,
        chunk: &Chunk,
        at: &At,
        channels: (Value, Value),
    ) {
        let Some(pool) = self.geometry.pool else {
            return;
        };
        let pool_output = self.fused.kernels[pool.kernel].output;
        let sample_stride = sample_stride(self.fused, pool_output);
        let destination = offset(b, pooled, at.sample, sample_stride);
        let ends = (at.output, destination);
        pool::conv_rows(
            b,
            self.fused,
            pool.kernel,
            ends,
            channels,
            (chunk.first_row, chunk.rows),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        b: &mut FunctionBuilder,
        block: &Block,
        chunk: &Chunk,
        input: Value,
        weights: Value,
        output: Value,
        finish: Option<TileFinish>,
    ) {
        if let Some(m) = self.geometry.winograd {
            self.winograd_block(b, m, block, chunk, input, weights);
            return;
        }
        let (g, nr) = (self.geometry, self.target.nr);
        // A panel read in place is a few more cache lines than a packed one (its rows
        // need not start a line): it pays where the panel stays in L1 across the row
        // tiles, 6-16% on 1x1 convs of 64-512 channels at 28x28-56x56; row tiles
        // outside read each panel again from L2, 9% slower (64 -> 256 at 56x56).
        let in_place = g.columns_in_place(self.target) && !self.rows_outer(block, chunk.columns);
        let scratch = self.pointers.get(&Arg::Scratch);
        let table_chunk = TableChunk {
            geometry: g,
            chunk_rows: g.chunk_rows(self.target),
            first_row: chunk.first_row,
            rows: chunk.rows,
            input,
            scratch,
        };
        let columns = if in_place {
            let channel = offset(b, input, block.p0, g.n());
            let first_column = b.ins().imul_imm_s(chunk.first_row, g.out_width as i64);
            Panels {
                at: offset(b, channel, first_column, 1),
                panel: nr,
                steps: Steps::Stride(g.n()),
                rows: None,
            }
        } else if g.shifted_copies(self.target) {
            Panels {
                at: scratch,
                panel: nr,
                steps: Steps::Table(table_chunk.shifted_copies(b)),
                rows: None,
            }
        } else if g.staged_rows(self.target) {
            let staged = table_chunk.staged_rows(b);
            Panels {
                at: scratch,
                panel: nr,
                steps: Steps::Table(staged.table),
                rows: Some(RowPanels {
                    width: g.out_width,
                    step: staged.row_step,
                }),
            }
        } else {
            Packing {
                geometry: g,
                panel: nr,
                kc: block.kc,
                p0: block.p0,
                pixels: Pixels::Rows {
                    first_row: chunk.first_row,
                    rows: chunk.rows,
                },
                input,
                scratch,
                staging: offset_by(b, scratch, g.packed_input(self.target)),
            }
            .generate(b);
            Panels::packed(scratch, block.kc, nr)
        };
        let gemm = Gemm {
            m: g.m(),
            n: chunk.columns,
            ldc: g.n(),
            a_panel: g.k() * self.target.mr,
            weights,
            columns,
            output,
            finish,
        };
        self.tiles(b, block, chunk.part, &gemm);
    }

    /// Every MR x NR tile of the block's product that `part` computes, edge ones
    /// included, straight into C. Column panels outside and
    /// row tiles inside keep one B panel in L1 while the weights' block streams from
    /// L2; where that block is too big for L2 the order turns, so each weight panel is
    /// read from memory once.
    pub(super) fn tiles(&self, b: &mut FunctionBuilder, block: &Block, part: Value, gemm: &Gemm) {
        let (mr, nr) = (self.target.mr, self.target.nr);
        let (m, ldc, n) = (gemm.m, gemm.ldc, gemm.n);
        let (weights, panels, output) = (gemm.weights, &gemm.columns, gemm.output);
        let (first_tile, end_tile) = self.part_tiles(b, part);
        let full_tiles = b.ins().iconst(types::I64, (m / mr) as i64);
        let full_end = b.ins().smin(end_tile, full_tiles);
        // The short row tile (if any) is the last; only the part whose range holds it
        // computes it.
        let reaches = b
            .ins()
            .icmp_imm_s(IntCC::SignedGreaterThan, end_tile, (m / mr) as i64);
        let starts = b
            .ins()
            .icmp_imm_s(IntCC::SignedLessThanOrEqual, first_tile, (m / mr) as i64);
        let has_short = b.ins().band(reaches, starts);
        let each_row =
            |b: &mut FunctionBuilder, body: &mut dyn FnMut(&mut FunctionBuilder, Value, u64)| {
                counted(b, first_tile, full_end, 1, |b, i| body(b, i, mr));
                if m % mr != 0 {
                    if_else(
                        b,
                        has_short,
                        |b| {
                            let i = b.ins().iconst(types::I64, (m / mr) as i64);
                            body(b, i, m % mr)
                        },
                        |_| {},
                    );
                }
            };
        // Each panel of `width` columns from `first` (its B at `at`, the next one a
        // panel on): whole ones in a loop, then the short one.
        let each_panel =
            |b: &mut FunctionBuilder,
             at: Value,
             first: Value,
             width: u64,
             body: &mut dyn FnMut(&mut FunctionBuilder, Value, Value, u64)| {
                let panel_at = |b: &mut FunctionBuilder, j: Value| {
                    let column = b.ins().imul_imm_s(j, nr as i64);
                    (offset(b, at, j, panels.panel), b.ins().iadd(first, column))
                };
                fixed(b, width / nr, |b, j| {
                    let (b_panel, column) = panel_at(b, j);
                    body(b, b_panel, column, nr)
                });
                if !width.is_multiple_of(nr) {
                    let j = b.ins().iconst(types::I64, (width / nr) as i64);
                    let (b_panel, column) = panel_at(b, j);
                    body(b, b_panel, column, width % nr);
                }
            };
        let each_column =
            |b: &mut FunctionBuilder,
             body: &mut dyn FnMut(&mut FunctionBuilder, Value, Value, u64)| {
                match panels.rows {
                    None => {
                        let first = b.ins().iconst(types::I64, 0);
                        each_panel(b, panels.at, first, n, body)
                    }
                    Some(row) => fixed(b, n / row.width, |b, r| {
                        let at = offset(b, panels.at, r, row.step);
                        let first = b.ins().imul_imm_s(r, row.width as i64);
                        each_panel(b, at, first, row.width, body)
                    }),
                }
            };
        let tile_at = |b: &mut FunctionBuilder,
                       i: Value,
                       rows: u64,
                       b_panel: Value,
                       column: Value,
                       columns: u64| {
            let a_panel = offset(b, weights, i, gemm.a_panel);
            let p0_offset = b.ins().imul_imm_s(block.p0, (mr * 4) as i64);
            let a_panel = b.ins().iadd(a_panel, p0_offset);
            let row = b.ins().imul_imm_s(i, (mr * ldc) as i64);
            let at = b.ins().iadd(row, column);
            let corner = offset(b, output, at, 1);
            let finish = gemm.finish.map(|f| TileFinish {
                bias: f.bias.map(|bias| offset(b, bias, i, mr)),
                residual: f.residual.map(|residual| offset(b, residual, at, 1)),
                relu: f.relu,
            });
            let tile = Tile {
                a_panel,
                a_step: mr,
                b_panel,
                b_steps: panels.steps,
                corner,
                ldc,
                rows,
                columns,
                finish,
            };
            self.tile(b, block, &tile);
        };
        if self.rows_outer(block, n) {
            each_row(b, &mut |b, i, rows| {
                each_column(b, &mut |b, b_panel, column, columns| {
                    tile_at(b, i, rows, b_panel, column, columns)
                })
            });
        } else {
            each_column(b, &mut |b, b_panel, column, columns| {
                each_row(b, &mut |b, i, rows| {
                    tile_at(b, i, rows, b_panel, column, columns)
                })
            });
        }
    }

    /// Whether the row tiles go outside. Measured on ResNet-50: it pays (up to 2x) when
    /// one part's weight block would not stay in L2, when there are at most two column
    /// panels (the weights are then read once instead of twice), and when the K block
    /// is short, so that each tile's writes to C weigh more than its reads (walking a
    /// row tile's columns writes C's rows in order). Mid-size 3x3 layers are 5-10%
    /// faster with the columns outside.
    fn rows_outer(&self, block: &Block, columns: u64) -> bool {
        let g = self.geometry;
        let tiles = g
            .m()
            .div_ceil(self.target.mr)
            .div_ceil(g.m_parts(self.target));
        let weight_block = tiles * self.target.mr * block.kc * 4;
        weight_block >= L2_BYTES / 2 || columns.div_ceil(self.target.nr) <= 2 || block.kc < 128
    }

    /// One tile through the microkernel, straight into C: an edge tile computes and
    /// stores only its rows and columns; in the last K block, it finishes the epilogue
    /// it was given.
    pub(super) fn tile(&self, b: &mut FunctionBuilder, block: &Block, tile: &Tile) {
        let kc = b.ins().iconst(types::I64, block.kc as i64);
        let lda = b.ins().iconst(types::I64, tile.a_step as i64);
        let (ldb, table) = match tile.b_steps {
            Steps::Stride(step) => (b.ins().iconst(types::I64, step as i64), false),
            Steps::Table(table) => (table, true),
        };
        let ldc = b.ins().iconst(types::I64, tile.ldc as i64);
        let rows = b.ins().iconst(types::I32, tile.rows as i64);
        let columns = b.ins().iconst(types::I32, tile.columns as i64);
        let pointer = b.func.signature.params[0].value_type;
        let null = b.ins().iconst(pointer, 0);
        let (mut flags, mut bias, mut residual) = (block.accumulate, null, null);
        if table {
            flags = b.ins().bor_imm_u(flags, i64::from(super::tile::OFFSETS));
        }
        if let Some(finish) = tile.finish {
            if finish.relu {
                let relu = b.ins().iconst(types::I32, i64::from(super::tile::RELU));
                let zero = b.ins().iconst(types::I32, 0);
                let relu = b.ins().select(block.last, relu, zero);
                flags = b.ins().bor(flags, relu);
            }
            let when_last = |b: &mut FunctionBuilder, p: Option<Value>| match p {
                Some(p) => b.ins().select(block.last, p, null),
                None => null,
            };
            bias = when_last(b, finish.bias);
            residual = when_last(b, finish.residual);
        }
        self.call_tile(
            b,
            &[
                kc,
                tile.a_panel,
                lda,
                tile.b_panel,
                ldb,
                tile.corner,
                ldc,
                flags,
                rows,
                columns,
                bias,
                residual,
            ],
        );
    }

    fn call_tile(&self, b: &mut FunctionBuilder, args: &[Value]) {
        let pointer = b.func.signature.params[0].value_type;
        let mut signature = Signature::new(b.func.signature.call_conv);
        for ty in super::tile::parameters(pointer) {
            signature.params.push(AbiParam::new(ty));
        }
        let signature = b.import_signature(signature);
        let callee = self.pointers.get(&Arg::Tile);
        b.ins().call_indirect(signature, callee, args);
    }
}

/// Where one sample and group of the kernel works.
pub(super) struct At {
    pub sample: Value,
    pub group: Value,
    pub input: Value,
    /// The group's first output channel of the sample.
    pub output: Value,
    pub weights: Value,
}

/// Output rows `first_row..first_row + rows` of a sample: the columns whose packed
/// input stays in L2 while every tile of the block reads it; and which part of the
/// output channels this unit computes.
pub(super) struct Chunk {
    pub first_row: Value,
    pub rows: u64,
    pub columns: u64,
    pub part: Value,
}

pub(super) struct Tile {
    pub a_panel: Value,
    /// Floats from one K step of A to the next: MR in a packed panel.
    pub a_step: u64,
    pub b_panel: Value,
    /// Where B's K steps are: NR floats apart in a packed panel.
    pub b_steps: Steps,
    pub corner: Value,
    /// C's row stride.
    pub ldc: u64,
    pub rows: u64,
    pub columns: u64,
    pub finish: Option<TileFinish>,
}

#[cfg(test)]
mod tests {
    use super::{Geometry, longest_share};

    #[test]
    fn a_conv_over_its_whole_unpadded_input_is_a_matrix_vector_product() {
        let geometry = |layer: &str| {
            let mut compilation =
                crate::compile(&format!("network N(input: 16x5x5) {{ {layer} }}"));
            assert!(!compilation.has_errors(), "{:?}", compilation.diagnostics);
            let fused = crate::passes::fuse(&compilation.networks.remove(0));
            Geometry::of(&fused, &fused.kernels[0]).expect("a conv")
        };
        let whole = geometry("conv(120, 5x5)");
        assert!(whole.dense);
        assert_eq!((whole.m(), whole.k(), whole.n()), (120, 16 * 5 * 5, 1));
        for layer in [
            "conv(8, 5x5, pad=1)",
            "conv(8, 3x3)",
            "conv(8, 5x5, groups=2)",
        ] {
            assert!(!geometry(layer).dense, "{layer}");
        }
    }

    #[test]
    fn the_longest_share_is_what_the_busiest_thread_computes() {
        assert_eq!(longest_share(56, 8, 2, |r| r), 32);
        assert_eq!(longest_share(56, 7, 2, |r| r), 28);
        // Chunks 9+9+9 | 9+9+9+2: the short chunk lands on the second thread.
        assert_eq!(longest_share(56, 9, 2, |r| r), 29);
        assert_eq!(longest_share(56, 9, 1, |r| r), 56);
        // More threads than chunks: one chunk each.
        assert_eq!(longest_share(7, 4, 8, |r| r), 4);
    }

    #[test]
    fn units_cut_channels_where_a_small_output_is_split_for_the_threads() {
        use crate::codegen::cpu::test_support::{geometry, target};
        let (one, two) = (target(12, 32, 1), target(12, 32, 2));
        // 8x8 in one row chunk: the threads split its channels.
        let small = geometry("448x8x8", "conv(384, 3x3, pad=1)");
        assert_eq!(small.winograd, Some(2));
        assert!(small.m_parts(&two) > 1 && small.cuts_channels(&two));
        assert!(!small.cuts_channels(&one));
        // 56x56: rows enough for both threads.
        let large = geometry("64x56x56", "conv(256, 1x1)");
        assert!(!large.cuts_channels(&two));
        // Pixel-major with weights too big for L2: channel parts.
        let last = geometry("512x14x14", "conv(512, 3x3, stride=2, pad=1)");
        assert!(last.pixel_major(&two) && last.cuts_channels(&two));
        // LeNet-5's C3, two row chunks of a 240 K product: one unit a thread, its
        // rows packed once.
        let tiny = geometry("6x14x14", "conv(16, 5x5)");
        assert_eq!((tiny.row_chunks(&two), tiny.m_parts(&two)), (2, 1));
    }

    #[test]
    fn two_threads_cut_the_channels_where_their_rows_would_fill_panels_badly() {
        use crate::codegen::cpu::test_support::{geometry, target};
        let two = target(12, 32, 2);
        // A 14x14 1x1 conv into 1024 channels with a residual (as ResNet-50's last of
        // each block there): rows of 98 pixels a thread pay 128 columns, all 196
        // pixels 224 for half the channels each.
        let pointwise = geometry("1024x14x14", "residual { conv(1024, 1x1) }");
        assert_eq!(pointwise.chunk_rows(&two), 14);
        assert!(pointwise.m_parts(&two) >= 2 && pointwise.cuts_channels(&two));
        // At 28x28 into 512 channels, packing 784 pixels of 128 channels a part:
        // channels (800 columns for 784 pixels against two chunks of 224 for 196).
        let wide = geometry("128x28x28", "conv(512, 1x1)");
        assert_eq!(wide.chunk_rows(&two), 28);
        // Into 128 channels from 512: a K block of all 784 pixels (256 channels) would
        // not stay within twice a chunk's; rows.
        let narrow = geometry("512x28x28", "conv(128, 1x1)");
        assert!(narrow.chunk_rows(&two) < 28 && !narrow.cuts_channels(&two));
        // Inception-v3's 8x8 1x3 convs: one panel of 32 pixels a thread in rows, as
        // well filled as all 64 in two; packing twice as many pixels would cost more.
        let small = geometry("384x8x8", "conv(384, 1x3, pad=0x1)");
        assert_eq!(small.chunk_rows(&two), 4);
    }

    #[test]
    fn chunks_leave_no_short_one_where_no_whole_panels_are_lost() {
        use crate::codegen::cpu::test_support::{geometry, target};
        // AlexNet's conv1: 55 rows of 55 never fill whole panels of 32, so of the
        // chunk sizes the L2 allows (5 to 9 rows), 5 rows, where 9 left a chunk of one
        // row: a second copy of the chunk's code.
        let conv1 = geometry("3x224x224", "conv(64, 11x11, stride=4, pad=2)");
        assert_eq!(conv1.chunk_rows(&target(12, 32, 1)), 5);
        // Whole panels still come first: 28 rows of 28 in a chunk of 24 (21 panels)
        // and a short one of 4, not one chunk of 28 (24.5 panels).
        let whole = geometry("64x28x28", "conv(64, 1x1)");
        assert_eq!(whole.chunk_rows(&target(12, 32, 1)), 24);
    }

    #[test]
    fn unpadded_stride_one_convs_taller_than_a_row_read_shifted_copies() {
        use crate::codegen::cpu::test_support::{geometry, target};
        let one = target(12, 32, 1);
        // LeNet-5's C1 and C3; a 7x1 and a 2x4 of groups.
        for (input, layer) in [
            ("1x32x32", "conv(6, 5x5)"),
            ("6x14x14", "conv(16, 5x5)"),
            ("16x17x17", "conv(16, 7x1)"),
            ("8x12x13", "conv(8, 2x4, groups=4)"),
        ] {
            assert!(geometry(input, layer).shifted_copies(&one), "{layer}");
        }
        // Padded, strided, dilated, one row tall, pointwise, or K beyond one block.
        for (input, layer) in [
            ("6x14x14", "conv(16, 5x5, pad=2)"),
            ("3x32x32", "conv(16, 3x2, stride=2)"),
            ("3x32x32", "conv(16, 3x2, dilation=2)"),
            ("16x17x17", "conv(16, 1x7)"),
            ("16x17x17", "conv(16, 1x1)"),
            ("64x17x17", "conv(16, 7x1)"),
        ] {
            assert!(!geometry(input, layer).shifted_copies(&one), "{layer}");
        }
    }
}
