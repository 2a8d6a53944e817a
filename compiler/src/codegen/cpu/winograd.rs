//! Winograd F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2016) for the 3x3 stride-1 convolutions the compiler chose it for, and
//! its variants F(4x4, 3x3) and F(2x2, 5x5) (the same α = 6 points as F(4x4, 3x3)).
//!
//! The output is cut into 2x2 tiles, each computed from a 4x4 tile of the input. Per
//! chunk of tile rows and K block of channels, the input transform `V = Bᵀ d B` of
//! every tile of every channel is written as 16 matrices (channels x tiles) in the
//! tile's NR-column panel layout; the 16 products `M_ξ = U_ξ · V_ξ` (U the weights'
//! transforms `G g Gᵀ`, packed by the runtime into MR-row panels, one matrix per ξ)
//! run through the same tile nest as a direct convolution, accumulating over the K
//! blocks into a scratch of 16 (output channels x tiles) matrices; then the output
//! transform `Y = Aᵀ M A` writes each tile's 2x2 outputs, and the direct
//! convolution's epilogue runs over the chunk's rows. A product multiplies 16 values
//! per tile where direct multiplies 36 (2.25x fewer), for the price of the transforms.
//!
//! Four tiles of a tile row go through the transforms at once, one per f32x4 lane:
//! stride-2 input columns are gathered with shuffles, outputs interleaved back.
//! Padding is paid once per channel: the rows the chunk's tiles read are first copied
//! into a plane in the scratch whose border is zeros (the staged plane), so every
//! tile, at the edges too, reads inside it and takes the same four-tile code (edge
//! tiles written out one by one were a third of an F(4x4) kernel's code).

use super::Arg;
use super::CpuTarget;
use super::conv::{
    Block, Chunk, Gemm, Geometry, L2_BYTES, Panels, Product, TileFinish, load_at, offset,
    offset_by, store_at,
};
use super::loops::{counted, fixed, if_else};
use super::pack::{copy_floats, zero_floats};
use crate::winograd::Transforms;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    AbiParam, ConstantData, Endianness, Immediate, InstBuilder, MemFlagsData, Signature,
    StackSlotData, StackSlotKind, Type, Value, types,
};
use cranelift_frontend::FunctionBuilder;

/// Tiles that go through the transforms at once: one per f32x4 lane.
const LANES: u64 = 4;

/// The most tiles the runtime's transforms (`CpuTarget::winograd_helpers`) take at
/// once: one per AVX-512 lane (AVX2's take eight). Their panels must be as wide.
pub const WINOGRAD_HELPER_LANES: u64 = 16;

/// `CNNC_WINOGRAD_HELPERS=0` keeps the runtime's transforms out (the kernels' own f32x4
/// ones run, as on a CPU without AVX2): to cross-check them and measure the gain.
pub const WINOGRAD_HELPERS_ENV: &str = "CNNC_WINOGRAD_HELPERS";

/// Whether the environment lets Winograd kernels call the runtime's transforms: unless
/// `CNNC_WINOGRAD_HELPERS=0`.
pub fn winograd_helpers_from_env() -> bool {
    std::env::var(WINOGRAD_HELPERS_ENV).map_or(true, |v| v != "0")
}

/// Floats a chunk's transformed input (one K block) and products may take together:
/// at least 1.5 MiB (the L2 beside the weights' panels streaming through), and as much
/// as the transformed weights up to 16 MiB (within L3): every chunk streams all the
/// weights, so where they are large (16 MiB for 512 channels) fewer, wider chunks pay
/// even from L3 (512 channels at 28x28: 25 ms -> 15 ms), while small ones stay in L2.
fn chunk_floats(g: &Geometry) -> u64 {
    (g.products() * g.m() * g.k()).clamp(384 * 1024, 4 * 1024 * 1024)
}

/// Floats from one of the α² matrices to the next: past a multiple of 4 KiB by one
/// cache line, so that the 16 streams of a transform do not fall in one L1 set.
fn skewed(floats: u64) -> u64 {
    floats.next_multiple_of(1024) + 16
}

/// Tiles across the output.
fn tiles_wide(g: &Geometry, m: u64) -> u64 {
    g.out_width.div_ceil(m)
}

/// Output channels rounded up to the tile's rows: every product's tiles are full.
fn padded_channels(g: &Geometry, target: &CpuTarget) -> u64 {
    g.m().div_ceil(target.mr) * target.mr
}

/// The tiles of a chunk of `rows` output rows.
fn chunk_tiles(g: &Geometry, m: u64, rows: u64) -> u64 {
    rows.div_ceil(m) * tiles_wide(g, m)
}

/// Columns of a chunk's products: its tiles, rounded up to whole NR panels.
fn padded_columns(g: &Geometry, m: u64, rows: u64, nr: u64) -> u64 {
    chunk_tiles(g, m, rows).div_ceil(nr) * nr
}

/// Output rows per chunk (whole tile rows): as many tile rows as keep the chunk's
/// transformed input and products within `chunk_floats` (at least one), and among
/// those the count whose chunks' products cost the fewest columns
/// (`CpuTarget::product_columns`: a chunk's last panel may be narrow);
/// with several threads, the count that finishes first on them (`threads_finish`).
/// Where two counts do equally well, the one without a short last chunk: one body of
/// code instead of two.
pub fn chunk_rows(g: &Geometry, m: u64, target: &CpuTarget) -> u64 {
    let (tall, wide) = (g.out_height.div_ceil(m).max(1), tiles_wide(g, m).max(1));
    let kc = g.k_block(target);
    let per_column = g.products() * (kc + padded_channels(g, target));
    let most = (chunk_floats(g) / (per_column * wide)).clamp(1, tall);
    let cost = |rows: u64| product_columns(g, target, rows * wide);
    let multiplied = |rows: u64| (tall / rows) * cost(rows) + cost(tall % rows);
    // Whether chunks of `rows` tile rows leave a short one, which is code of its own.
    let short = |rows: u64| rows < tall && !g.out_height.is_multiple_of(rows * m);
    let best = |most: u64| {
        (1..=most)
            .min_by_key(|&rows| (multiplied(rows), short(rows), std::cmp::Reverse(rows)))
            .unwrap_or(1)
    };
    let alone = best(most);
    if target.threads <= 1 {
        return alone * m;
    }
    if (m, g.kernel[0]) == (2, 3) {
        // Two chunks a thread, else one, unless cutting the rows that fine costs more
        // products: a 14x14 output is 49 F(2x2) tiles, two panels of 32 in one chunk,
        // four narrow ones in chunks of two tile rows (14 tiles: half a panel's
        // products each, as much in all). Where neither does, the threads split the
        // output channels instead (`Geometry::m_parts`), each transforming the whole
        // input: ResNet-50's, GoogLeNet's and AlexNet's 14x14 and 13x13 layers ran
        // 7-12% sooner at two threads in one chunk a thread than in the channels
        // split. But each thread's rows stream all the transformed weights, half of
        // them each where the channels are split: VGG-16's 14x14 layers (16 MiB of
        // them) ran 2% slower in rows, so rows only up to `ROWS_WEIGHT_FLOATS`. (Those
        // were measured when all of them were F(2x2)'s; the 13x13 and 14x14 layers of
        // AlexNet, VGG-16, GoogLeNet and ResNet are F(4x4)'s now, their 7x7 layers
        // F(2x2)'s.)
        let per_thread: &[u64] = match g.products() * g.m() * g.k() <= ROWS_WEIGHT_FLOATS {
            true => &[2, 1],
            false => &[2],
        };
        let shared = per_thread
            .iter()
            .map(|&per| best(most.min(tall.div_ceil(per * target.threads)).max(1)))
            .find(|&rows| multiplied(rows) <= multiplied(alone));
        return shared.unwrap_or(alone) * m;
    }
    // An α = 6 transform (F(4x4, 3x3)'s, F(2x2, 5x5)'s) costs too much to be done
    // twice, so the threads split the rows
    // (ResNet-50's 28x28 layers were 1.4x slower with the channels split). Chunks of
    // two tile rows each for two threads filled a panel apiece with 14 of its 32
    // columns there, twice the products of chunks of four: 1.06x on two threads.
    // Each thread's chunk streams through L2 between the transforms and the products,
    // and what spills goes to the L3 both cores share: VGG-16's 256-channel 56x56
    // layers ran 15-18% faster on two threads in chunks of two tile rows (a chunk
    // within L2) than in one chunk a thread (3.5 times L2), the threads' finish 2.5%
    // apart.
    let spill = |rows: u64| {
        let floats = (per_column * wide * rows) as f64;
        let l2 = (L2_BYTES / 4) as f64;
        1.0 + SPILL_COST * ((floats - l2) / l2).max(0.0)
    };
    let (rows, finish) = (1..=most)
        .map(|rows| {
            (
                rows,
                threads_finish(g, target, tall, wide, rows) * spill(rows),
            )
        })
        .min_by(|&(a, finish_a), &(b, finish_b)| {
            finish_a
                .total_cmp(&finish_b)
                .then(multiplied(a).cmp(&multiplied(b)))
                .then(short(a).cmp(&short(b)))
                .then(b.cmp(&a))
        })
        .unwrap_or((1, f64::INFINITY));
    // But where the rows are too few to share (a 14x14 output is 4x4 tiles, one
    // narrow panel, which two chunks of eight tiles each cost whole), one chunk of
    // every row, its output channels cut among the threads (`Geometry::m_parts`), each
    // transforming the whole input.
    if most == tall && channels_finish(g, target, tall * wide) * spill(tall) < finish {
        return tall * m;
    }
    rows * m
}

/// When the threads finish one chunk of `tiles` tiles whose output channels they
/// share (`Geometry::m_parts`): each its part's products and output transforms, and
/// every tile's input transform.
fn channels_finish(g: &Geometry, target: &CpuTarget, tiles: u64) -> f64 {
    let row_tiles = g.m().div_ceil(target.mr).max(1);
    let parts = row_tiles.div_ceil(row_tiles.div_ceil(target.threads.max(1)));
    let share = row_tiles.div_ceil(parts) as f64 / row_tiles as f64;
    let (input, output) = (
        TRANSFORM_WORK / g.m().max(1) as f64,
        TRANSFORM_WORK / g.k().max(1) as f64,
    );
    product_columns(g, target, tiles) as f64 * share + tiles as f64 * (input + share * output)
}

/// The most transformed weights (floats) for which the threads of an F(2x2, 3x3) layer
/// take one chunk of rows each rather than split its channels: 8 MiB, between AlexNet's
/// 6 MiB (its 384 -> 256 layer, 7% sooner in rows) and VGG-16's 16 MiB (2% slower),
/// measured when those 13x13 and 14x14 layers were F(2x2)'s (they are F(4x4)'s now).
const ROWS_WEIGHT_FLOATS: u64 = 2 * 1024 * 1024;

/// What the products of a chunk of `tiles` tiles cost, in columns: a narrow last
/// panel half a panel (`CpuTarget::product_columns`) where the transformed weights
/// are at most `NARROW_WEIGHT_FLOATS`, a whole one where they are more: every chunk
/// streams all of them, from L3 or memory, and half a panel's multiplies no longer
/// hide the reads.
fn product_columns(g: &Geometry, target: &CpuTarget, tiles: u64) -> u64 {
    match g.products() * g.m() * g.k() <= NARROW_WEIGHT_FLOATS {
        true => target.product_columns(tiles),
        false => tiles.div_ceil(target.nr) * target.nr,
    }
}

/// The most transformed weights (floats) for which a narrow last panel counts as half
/// a panel (`product_columns`): 12 MiB. VGG-16's 256-channel 56x56 layers (9 MiB of
/// them) ran 14% faster on two threads in chunks of one tile row (14 tiles, narrow),
/// its 512-channel 28x28 and 14x14 ones (36 MiB in F(4x4), and 16 MiB in F(2x2), as
/// the 14x14 ones were then) 7-30% slower in narrow chunks than in the whole panels'
/// choice. (`threads_finish` assumes no channel parts; from three threads, where a
/// few chunks may be cut into parts too, it is rougher.)
const NARROW_WEIGHT_FLOATS: u64 = 3 * 1024 * 1024;

/// What a thread's chunk costs for each L2's worth of its transformed input and
/// products beyond the first, as a fraction of its time (`chunk_rows`).
const SPILL_COST: f64 = 0.05;

/// A tile's input and output transforms, in columns of products (a panel's products
/// cost NR): `TRANSFORM_WORK / M + TRANSFORM_WORK / K` for F(4x4), from a 128-channel
/// 28x28 layer at one thread, where the transforms took 0.27 ms beside the products'
/// 0.65 ms for 49 tiles in two panels (`perf`).
const TRANSFORM_WORK: f64 = 35.0;

/// When the threads finish a sample's `tall` x `wide` tiles in chunks of `rows` tile
/// rows, in columns of products: each chunk costs its panels' products and its tiles'
/// transforms, and goes to the thread free first: the runtime's threads take their own
/// shares of the chunks in order and then help with the others', which ends about as
/// this greedy order does.
fn threads_finish(g: &Geometry, target: &CpuTarget, tall: u64, wide: u64, rows: u64) -> f64 {
    let transform = TRANSFORM_WORK / g.m().max(1) as f64 + TRANSFORM_WORK / g.k().max(1) as f64;
    let cost = |rows: u64| {
        let tiles = rows * wide;
        product_columns(g, target, tiles) as f64 + tiles as f64 * transform
    };
    let mut busy = vec![0.0f64; target.threads.max(1) as usize];
    let chunks = (0..tall).step_by(rows.max(1) as usize);
    for first in chunks {
        let free = busy
            .iter_mut()
            .min_by(|a, b| a.total_cmp(b))
            .expect("at least one thread");
        *free += cost(rows.min(tall - first));
    }
    busy.into_iter().fold(0.0, f64::max)
}

/// Where a thread's scratch holds what: the transformed input of a K block at 0, the
/// products from `products`, the staged plane of one channel from `staged`.
pub struct Scratch {
    pub products: u64,
    pub staged: u64,
    pub floats: u64,
}

impl Scratch {
    pub fn of(g: &Geometry, m: u64, target: &CpuTarget) -> Scratch {
        let rows = chunk_rows(g, m, target);
        let columns = padded_columns(g, m, rows, target.nr);
        let kc = g.k_block(target);
        let products = g.products() * skewed(kc * columns);
        let staged = products + g.products() * skewed(padded_channels(g, target) * columns);
        Scratch {
            products,
            staged,
            floats: staged + Staged::of(g, m, rows, target).floats(),
        }
    }
}

/// The staged plane of a chunk: `band` rows of `pitch` floats, the chunk's tiles'
/// rows of one channel with the padding (and whatever the last tiles read past the
/// output) as zeros. Tile `(r, tx)` reads rows `r·m..r·m + α` and columns
/// `tx·m..tx·m + α`; a vector of four tiles ending at the last tile of a row, at most
/// `wide·m + r - 1`.
#[derive(Clone, Copy)]
struct Staged {
    band: u64,
    pitch: u64,
}

impl Staged {
    /// The runtime's transforms read the input where it lies: no staged plane.
    fn of(g: &Geometry, m: u64, chunk_rows: u64, target: &CpuTarget) -> Staged {
        if target.winograd_helpers {
            return Staged { band: 0, pitch: 0 };
        }
        Staged {
            band: chunk_rows.div_ceil(m) * m + g.kernel[0] - 1,
            pitch: (tiles_wide(g, m) * m + g.kernel[0] - 1).next_multiple_of(LANES),
        }
    }

    fn floats(self) -> u64 {
        self.band * self.pitch
    }
}

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

impl Product<'_> {
    /// One K block of a chunk: the input transform, then the α² products into the
    /// products' scratch (added to what earlier blocks left there).
    pub(super) fn winograd_block(
        &self,
        b: &mut FunctionBuilder,
        m: u64,
        block: &Block,
        chunk: &Chunk,
        input: Value,
        weights: Value,
    ) {
        let (g, target) = (self.geometry, self.target);
        let Some(transforms) = g.winograd_transforms() else {
            return;
        };
        let layout = Scratch::of(g, m, target);
        let scratch = self.pointers.get(&Arg::Scratch);
        let columns = padded_columns(g, m, chunk.rows, target.nr);
        InputTransform {
            g,
            t: transforms,
            nr: target.nr,
            kc: block.kc,
            p0: block.p0,
            first_row: chunk.first_row,
            tile_rows: chunk.rows.div_ceil(m),
            input,
            transformed: scratch,
            columns,
            staged: offset_by(b, scratch, layout.staged),
            shape: Staged::of(g, m, chunk.rows, target),
            helper: self
                .pointers
                .find(&Arg::WinogradInput { m, r: g.kernel[0] }),
        }
        .generate(b);
        let products = offset_by(b, scratch, layout.products);
        let channels = padded_channels(g, target);
        // The padding of a narrow last panel is not multiplied (half a panel for the
        // precompiled tiles), that of a wider one is: whole panels need no masks.
        let tiles = chunk_tiles(g, m, chunk.rows);
        let multiplied = match target.product_columns(tiles) < columns {
            true => tiles,
            false => columns,
        };
        fixed(b, g.products(), |b, point| {
            let gemm = Gemm {
                m: channels,
                n: multiplied,
                ldc: columns,
                a_panel: g.k() * target.mr,
                weights: offset(b, weights, point, channels * g.k()),
                columns: Panels::packed(
                    offset(b, scratch, point, skewed(block.kc * columns)),
                    block.kc,
                    target.nr,
                ),
                output: offset(b, products, point, skewed(channels * columns)),
                finish: None,
            };
            self.tiles(b, block, chunk.part, &gemm);
        });
    }
}

/// Writes the transformed tiles of one K block of a chunk: point ξ of tile t of
/// channel p at `transformed + ξ * kc * columns + (t / NR) * kc * NR + p * NR + t % NR`.
struct InputTransform<'a> {
    g: &'a Geometry,
    t: &'static Transforms,
    nr: u64,
    kc: u64,
    p0: Value,
    /// The chunk's first output row (a multiple of m).
    first_row: Value,
    tile_rows: u64,
    input: Value,
    transformed: Value,
    /// Columns of each transformed matrix: the chunk's tiles, padded to whole panels.
    columns: u64,
    staged: Value,
    shape: Staged,
    /// The runtime's transform of a tile row, where the kernel calls it.
    helper: Option<Value>,
}

/// A tile row of one channel: the staged rows its tiles read, and where its
/// transformed values go.
struct TileRow {
    rows: Vec<Value>,
    /// Row p of every transformed matrix's first panel.
    destination: Value,
    /// The chunk column of the row's tile 0.
    first: Value,
}

impl InputTransform<'_> {
    fn generate(&self, b: &mut FunctionBuilder) {
        if let Some(callee) = self.helper {
            return self.call_helper(b, callee);
        }
        let g = self.g;
        let Staged { band, pitch } = self.shape;
        // The staged rows that lie inside the input, `[inside_from, inside_to)`: the
        // same for every channel, so the rest of the plane stays zero after this.
        zero_floats(b, self.staged, self.shape.floats());
        let top = b.ins().iadd_imm_s(self.first_row, -(g.pads[0] as i64));
        let zero = b.ins().iconst(types::I64, 0);
        let above = b.ins().isub(zero, top);
        let inside_from = b.ins().smax(above, zero);
        let below = b.ins().iconst(types::I64, g.height as i64);
        let below = b.ins().isub(below, top);
        let inside_to = b.ins().iconst(types::I64, band as i64);
        let inside_to = b.ins().smin(below, inside_to);
        fixed(b, self.kc, |b, p| {
            let channel = b.ins().iadd(self.p0, p);
            let plane = offset(b, self.input, channel, g.height * g.width);
            counted(b, inside_from, inside_to, 1, |b, t| {
                let row = b.ins().iadd(top, t);
                let from = offset(b, plane, row, g.width);
                let to = offset(b, self.staged, t, pitch);
                let to = offset_by(b, to, g.pads[1]);
                copy_floats(b, from, to, g.width);
            });
            let destination = offset(b, self.transformed, p, self.nr);
            fixed(b, self.tile_rows, |b, r| self.tile_row(b, destination, r));
        });
    }

    /// The runtime's transform of each tile row of each channel, which reads the
    /// input plane where it lies (its padding as zeros): no staged plane.
    fn call_helper(&self, b: &mut FunctionBuilder, callee: Value) {
        let (g, m) = (self.g, self.t.m);
        let wide = tiles_wide(g, m);
        let matrix = skewed(self.kc * self.columns);
        let constants = [
            g.height,
            g.width,
            g.pads[1],
            wide,
            self.nr,
            self.kc * self.nr,
            matrix,
        ];
        let [height, width, left, wide_value, nr, panel, matrix] =
            constants.map(|c| b.ins().iconst(types::I64, c as i64));
        // The input row of the chunk's first tile row's first input row.
        let top = b.ins().iadd_imm_s(self.first_row, -(g.pads[0] as i64));
        fixed(b, self.kc, |b, p| {
            let channel = b.ins().iadd(self.p0, p);
            let plane = offset(b, self.input, channel, g.height * g.width);
            let destination = offset(b, self.transformed, p, self.nr);
            fixed(b, self.tile_rows, |b, r| {
                let first_row = b.ins().imul_imm_s(r, m as i64);
                let first_row = b.ins().iadd(top, first_row);
                let first = b.ins().imul_imm_s(r, wide as i64);
                let args = [
                    plane,
                    first_row,
                    height,
                    width,
                    left,
                    wide_value,
                    destination,
                    first,
                    nr,
                    panel,
                    matrix,
                ];
                call(b, callee, &args);
            });
        });
    }

    /// Tile row `r` of the chunk, of one channel.
    fn tile_row(&self, b: &mut FunctionBuilder, destination: Value, r: Value) {
        let (m, pitch) = (self.t.m, self.shape.pitch);
        let top = offset(b, self.staged, r, m * pitch);
        let wide = tiles_wide(self.g, m);
        let first = b.ins().imul_imm_s(r, wide as i64);
        let rows = (0..self.t.alpha() as u64)
            .map(|i| offset_by(b, top, i * pitch))
            .collect();
        let row = TileRow {
            rows,
            destination,
            first,
        };
        self.tiles(b, &row, wide);
    }

    /// The row's `wide` tiles four at a time, the last four ending at the last tile
    /// (recomputing up to three tiles rather than taking them one at a time); fewer
    /// than four one at a time.
    fn tiles(&self, b: &mut FunctionBuilder, row: &TileRow, wide: u64) {
        if wide < LANES {
            for tx in 0..wide {
                let tx = b.ins().iconst(types::I64, tx as i64);
                self.tile(b, row, tx, types::F32);
            }
            return;
        }
        // One copy of the code (a tile's is long, F(4x4)'s most): the last group's
        // start clamped back.
        fixed(b, wide.div_ceil(LANES), |b, group| {
            let tx = b.ins().imul_imm_s(group, LANES as i64);
            let last = b.ins().iconst(types::I64, (wide - LANES) as i64);
            let tx = b.ins().smin(tx, last);
            self.tile(b, row, tx, types::F32X4);
        });
    }

    /// Tile `tx` (f32), or tiles `tx..tx + 4` (f32x4, one per lane).
    fn tile(&self, b: &mut FunctionBuilder, row: &TileRow, tx: Value, ty: Type) {
        let alpha = self.t.alpha();
        let first = b.ins().imul_imm_s(tx, self.t.m as i64);
        let d: Vec<Vec<Value>> = row
            .rows
            .iter()
            .map(|&source| {
                let source = offset(b, source, first, 1);
                if ty == types::F32 {
                    (0..alpha)
                        .map(|k| b.ins().load(types::F32, flags(), source, (k * 4) as i32))
                        .collect()
                } else {
                    gather_columns(b, source, alpha, self.t.m)
                }
            })
            .collect();
        let column = b.ins().iadd(row.first, tx);
        let values = transform(b, self.t.input, &d);
        if ty == types::F32 {
            self.store(b, row, column, &values);
            return;
        }
        // Four columns are contiguous unless they cross into the next panel.
        let lane = b.ins().band_imm_u(column, (self.nr - 1) as i64);
        let within = b.ins().icmp_imm_u(
            IntCC::UnsignedLessThanOrEqual,
            lane,
            (self.nr - LANES) as i64,
        );
        if_else(
            b,
            within,
            |b| self.store(b, row, column, &values),
            |b| self.store_across_panels(b, row, column, &values),
        );
    }

    /// Four tiles' values whose columns cross into the next panel: through a stack
    /// slot, a loop storing one tile at a time (one copy of the stores, where lanes
    /// extracted one by one wrote four).
    fn store_across_panels(
        &self,
        b: &mut FunctionBuilder,
        row: &TileRow,
        column: Value,
        values: &[Value],
    ) {
        let pointer = b.func.signature.params[0].value_type;
        let vector_bytes = (LANES * 4) as u32;
        let slot = b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            values.len() as u32 * vector_bytes,
            4,
        ));
        for (point, &value) in values.iter().enumerate() {
            let at = (point as u32 * vector_bytes) as i32;
            b.ins().stack_store(pointer, value, slot, at);
        }
        let spilled = b.ins().stack_addr(pointer, slot, 0);
        fixed(b, LANES, |b, lane| {
            let lane_values = offset(b, spilled, lane, 1);
            let lanes: Vec<Value> = (0..values.len())
                .map(|point| {
                    let at = (point as u32 * vector_bytes) as i32;
                    b.ins().load(types::F32, flags(), lane_values, at)
                })
                .collect();
            let column = b.ins().iadd(column, lane);
            self.store(b, row, column, &lanes);
        });
    }

    /// The α² transformed values of the tile (or four tiles, in one panel) at chunk
    /// column `column`.
    fn store(&self, b: &mut FunctionBuilder, row: &TileRow, column: Value, values: &[Value]) {
        let panel = b.ins().ushr_imm_u(column, self.nr.trailing_zeros() as i64);
        let lane = b.ins().band_imm_u(column, (self.nr - 1) as i64);
        let panel_start = b.ins().imul_imm_s(panel, (self.kc * self.nr) as i64);
        let element = b.ins().iadd(panel_start, lane);
        let at = offset(b, row.destination, element, 1);
        let matrix = skewed(self.kc * self.columns) * 4;
        for (point, &value) in values.iter().enumerate() {
            b.ins()
                .store(flags(), value, at, (point as u64 * matrix) as i32);
        }
    }
}

/// Calls one of the runtime's transforms, whose parameters are all pointers and sizes.
fn call(b: &mut FunctionBuilder, callee: Value, args: &[Value]) {
    let mut signature = Signature::new(b.func.signature.call_conv);
    for &arg in args {
        let ty = b.func.dfg.value_type(arg);
        signature.params.push(AbiParam::new(ty));
    }
    let signature = b.import_signature(signature);
    b.ins().call_indirect(signature, callee, args);
}

/// Column k of four consecutive tiles, lane l holding input column `m * l + k` from
/// `source`. For m = 2, two loads of four and one `shufps` picking every second value;
/// for m = 4, the four tiles' first four columns are the transpose of four loads, and
/// their last two the transpose of the four loads one vector further.
fn gather_columns(b: &mut FunctionBuilder, source: Value, alpha: usize, m: u64) -> Vec<Value> {
    let load = |b: &mut FunctionBuilder, first: usize| {
        b.ins()
            .load(types::F32X4, flags(), source, (first * 4) as i32)
    };
    if m == 4 {
        // The tiles read columns 0..18: the last load takes 14..18 (not 16..20, past
        // the last tile's columns, perhaps past the buffer) and moves 16 and 17 down.
        let [v0, v1, v2, v3] = [0, 4, 8, 12].map(|first| load(b, first));
        let last = load(b, 14);
        let last = shuffle(b, last, last, [2, 3, 2, 3]);
        let mut columns = transpose(b, [v0, v1, v2, v3]).to_vec();
        columns.extend(transpose(b, [v1, v2, v3, last]));
        columns.truncate(alpha);
        return columns;
    }
    debug_assert_eq!(m, 2, "the gather picks every second column");
    let mut columns = Vec::with_capacity(alpha);
    for pair in (0..alpha).step_by(2) {
        let low = b
            .ins()
            .load(types::F32X4, flags(), source, (pair * 4) as i32);
        let high = b
            .ins()
            .load(types::F32X4, flags(), source, (pair * 4 + 16) as i32);
        columns.push(shuffle(b, low, high, [0, 2, 4, 6]));
        columns.push(shuffle(b, low, high, [1, 3, 5, 7]));
    }
    columns.truncate(alpha);
    columns
}

/// Lanes of `x` (0-3) and `y` (4-7) picked by `lanes`, through the byte shuffle
/// Cranelift offers (lowered to one `shufps`/`punpck*` for these patterns).
pub(super) fn shuffle(b: &mut FunctionBuilder, x: Value, y: Value, lanes: [u8; 4]) -> Value {
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let bytes: Vec<u8> = lanes
        .iter()
        .flat_map(|&lane| (0..4).map(move |byte| lane * 4 + byte))
        .collect();
    let mask: Immediate = b.func.dfg.immediates.push(ConstantData::from(bytes));
    let x = b.ins().bitcast(types::I8X16, little, x);
    let y = b.ins().bitcast(types::I8X16, little, y);
    let picked = b.ins().shuffle(x, y, mask);
    b.ins().bitcast(types::F32X4, little, picked)
}

/// The 4x4 transpose of `rows`: lane i of result j is lane j of row i.
pub(super) fn transpose(b: &mut FunctionBuilder, [r0, r1, r2, r3]: [Value; 4]) -> [Value; 4] {
    let low01 = shuffle(b, r0, r1, [0, 4, 1, 5]);
    let high01 = shuffle(b, r0, r1, [2, 6, 3, 7]);
    let low23 = shuffle(b, r2, r3, [0, 4, 1, 5]);
    let high23 = shuffle(b, r2, r3, [2, 6, 3, 7]);
    [
        shuffle(b, low01, low23, [0, 1, 4, 5]),
        shuffle(b, low01, low23, [2, 3, 6, 7]),
        shuffle(b, high01, high23, [0, 1, 4, 5]),
        shuffle(b, high01, high23, [2, 3, 6, 7]),
    ]
}

/// `L d Lᵀ` for a square or wide matrix `L` (rows x α) and α x α values `d` (f32 or
/// f32x4): rows x rows values, row-major.
fn transform(b: &mut FunctionBuilder, l: &[&[f32]], d: &[Vec<Value>]) -> Vec<Value> {
    let mut constants = Constants::default();
    let mut combine = |b: &mut FunctionBuilder, c: &[f32], values: &[Value]| {
        combine(b, &mut constants, c, values)
    };
    // Each row of d through L, then each column of the result.
    let across: Vec<Vec<Value>> = d
        .iter()
        .map(|row| l.iter().map(|c| combine(b, c, row)).collect())
        .collect();
    let mut out = vec![Vec::new(); l.len()];
    for i in 0..l.len() {
        let column: Vec<Value> = across.iter().map(|row| row[i]).collect();
        for (j, c) in l.iter().enumerate() {
            out[j].push(combine(b, c, &column));
        }
    }
    out.concat()
}

/// The coefficients a transform has put in registers (splat for vectors), by their
/// bits and type: F(4x4)'s transforms multiply by a few values 288 times, and one
/// constant each time was a fifth of its kernels' instructions for Cranelift to
/// compile. A transform's code is one straight run, so each use follows the first.
#[derive(Default)]
struct Constants(Vec<((u32, Type), Value)>);

impl Constants {
    fn get(&mut self, b: &mut FunctionBuilder, ty: Type, value: f32) -> Value {
        let key = (value.to_bits(), ty);
        if let Some(&(_, known)) = self.0.iter().find(|(k, _)| *k == key) {
            return known;
        }
        let scalar = b.ins().f32const(value);
        let constant = if ty.is_vector() {
            b.ins().splat(ty, scalar)
        } else {
            scalar
        };
        self.0.push((key, constant));
        constant
    }
}

/// `Σ c_k · v_k`, with the zero coefficients skipped and the terms grouped by the
/// coefficients' magnitude: `4a - 4b + c` is `4(a - b) + c`, one multiply instead of
/// two (F(4x4)'s transforms halve their multiplies so).
fn combine(
    b: &mut FunctionBuilder,
    constants: &mut Constants,
    coefficients: &[f32],
    values: &[Value],
) -> Value {
    let ty = values
        .first()
        .map_or(types::F32, |&v| b.func.dfg.value_type(v));
    let mut magnitudes: Vec<f32> = Vec::new();
    for &c in coefficients {
        if c != 0.0 && !magnitudes.contains(&c.abs()) {
            magnitudes.push(c.abs());
        }
    }
    // Each group's sum, with its first term's sign taken out.
    let mut groups: Vec<(bool, Value)> = magnitudes
        .iter()
        .map(|&magnitude| {
            let mut terms = coefficients
                .iter()
                .zip(values)
                .filter(|(c, _)| c.abs() == magnitude)
                .map(|(&c, &v)| (c < 0.0, v));
            let (negative, mut sum) = terms.next().expect("a magnitude has a term");
            for (minus, v) in terms {
                sum = match minus == negative {
                    true => b.ins().fadd(sum, v),
                    false => b.ins().fsub(sum, v),
                };
            }
            if magnitude != 1.0 {
                let factor = constants.get(b, ty, magnitude);
                sum = b.ins().fmul(sum, factor);
            }
            (negative, sum)
        })
        .collect();
    // Start from a positive group, so that no negation is needed.
    if let Some(first) = groups.iter().position(|(negative, _)| !negative) {
        groups.swap(0, first);
    }
    let mut groups = groups.into_iter();
    let Some((negative, first)) = groups.next() else {
        return constants.get(b, ty, 0.0);
    };
    let mut sum = if negative { b.ins().fneg(first) } else { first };
    for (negative, group) in groups {
        sum = match negative {
            true => b.ins().fsub(sum, group),
            false => b.ins().fadd(sum, group),
        };
    }
    sum
}

/// The output transform of a chunk for output channels `[first, end)` of the group:
/// each tile's m x m outputs from its α² products, into the output rows the epilogue
/// then runs over, or, by the runtime's transform, finished with the tile's part of the
/// epilogue (`finish`, whose residual is at the chunk's first output).
pub(super) fn output_transform(
    b: &mut FunctionBuilder,
    product: &Product,
    m: u64,
    chunk: &Chunk,
    output: Value,
    (first, end): (Value, Value),
    finish: Option<TileFinish>,
) {
    let (g, target) = (product.geometry, product.target);
    let Some(t) = g.winograd_transforms() else {
        return;
    };
    let layout = Scratch::of(g, m, target);
    let scratch = product.pointers.get(&Arg::Scratch);
    let products = offset_by(b, scratch, layout.products);
    let writer = OutputTransform {
        g,
        t,
        first_row: chunk.first_row,
        columns: padded_columns(g, m, chunk.rows, target.nr),
        channels: padded_channels(g, target),
        helper: product
            .pointers
            .find(&Arg::WinogradOutput { m, r: g.kernel[0] }),
    };
    counted(b, first, end, 1, |b, channel| {
        let plane = offset(b, output, channel, g.n());
        let source = offset(b, products, channel, writer.columns);
        let finish = finish.map(|f| ChannelFinish {
            bias: f.bias.map(|bias| offset(b, bias, channel, 1)),
            residual: f
                .residual
                .map(|residual| offset(b, residual, channel, g.n())),
            relu: f.relu,
        });
        let row = |b: &mut FunctionBuilder, r: Value, valid: u64| {
            writer.tile_row(b, plane, source, (r, valid), finish.as_ref())
        };
        fixed(b, chunk.rows / m, |b, r| row(b, r, m));
        if !chunk.rows.is_multiple_of(m) {
            let r = b.ins().iconst(types::I64, (chunk.rows / m) as i64);
            row(b, r, chunk.rows % m);
        }
    });
}

/// One output row of four tiles, `row[x]` holding column x of each tile (lane l for
/// tile l), as 4m contiguous columns: interleaved for m = 2, transposed for m = 4.
fn interleave(b: &mut FunctionBuilder, row: &[Value]) -> Vec<Value> {
    match *row {
        [y0, y1] => vec![
            shuffle(b, y0, y1, [0, 4, 1, 5]),
            shuffle(b, y0, y1, [2, 6, 3, 7]),
        ],
        [y0, y1, y2, y3] => transpose(b, [y0, y1, y2, y3]).to_vec(),
        _ => unreachable!("F(2x2) and F(4x4) tiles"),
    }
}

struct OutputTransform<'a> {
    g: &'a Geometry,
    t: &'static Transforms,
    first_row: Value,
    columns: u64,
    channels: u64,
    /// The runtime's transform of a tile row, where the kernel calls it.
    helper: Option<Value>,
}

/// One channel's part of the epilogue the runtime's output transform finishes: its
/// bias, its residual plane from the chunk's first output on, and the ReLU.
struct ChannelFinish {
    bias: Option<Value>,
    residual: Option<Value>,
    relu: bool,
}

impl OutputTransform<'_> {
    /// Tile row `r` of one channel, of which `valid` output rows exist; `finish` only
    /// with the runtime's transform.
    fn tile_row(
        &self,
        b: &mut FunctionBuilder,
        plane: Value,
        source: Value,
        (r, valid): (Value, u64),
        finish: Option<&ChannelFinish>,
    ) {
        let (g, m) = (self.g, self.t.m);
        let top = b.ins().imul_imm_s(r, m as i64);
        let top = b.ins().iadd(self.first_row, top);
        let out = offset(b, plane, top, g.out_width);
        let first = b.ins().imul_imm_s(r, tiles_wide(g, m) as i64);
        let source = offset(b, source, first, 1);
        if let Some(callee) = self.helper {
            let matrix = skewed(self.channels * self.columns);
            let relu = finish.is_some_and(|f| f.relu);
            let constants = [matrix, tiles_wide(g, m), g.out_width, valid, relu as u64]
                .map(|c| b.ins().iconst(types::I64, c as i64));
            let [matrix, tiles, width, rows, relu] = constants;
            let pointer = b.func.dfg.value_type(out);
            let null = b.ins().iconst(pointer, 0);
            let bias = finish.and_then(|f| f.bias).unwrap_or(null);
            let residual = match finish.and_then(|f| f.residual) {
                Some(residual) => {
                    let row = b.ins().imul_imm_s(r, (m * g.out_width) as i64);
                    offset(b, residual, row, 1)
                }
                None => null,
            };
            let args = [
                source, matrix, tiles, out, width, rows, bias, residual, relu,
            ];
            call(b, callee, &args);
            return;
        }
        // Tiles whose m columns all exist four at a time, the last four ending at the
        // last of them (rewriting up to three tiles' same values); then one at a time.
        let whole = g.out_width / m;
        let vector_end = if whole >= LANES { whole } else { 0 };
        let groups = vector_end.div_ceil(LANES);
        fixed(b, groups, |b, group| {
            let tx = b.ins().imul_imm_s(group, LANES as i64);
            let last = b
                .ins()
                .iconst(types::I64, vector_end.saturating_sub(LANES) as i64);
            let tx = b.ins().smin(tx, last);
            let y = self.outputs(b, source, tx, types::F32X4);
            let out = offset(b, out, tx, m);
            for row in 0..valid {
                let at = (row * g.out_width * 4) as i64;
                let row = &y[(row * m) as usize..((row + 1) * m) as usize];
                for (v, &columns) in interleave(b, row).iter().enumerate() {
                    store_at(b, columns, out, at + (v * 16) as i64);
                }
            }
        });
        for tx in vector_end..g.out_width.div_ceil(m) {
            let columns = m.min(g.out_width - tx * m);
            let tx = b.ins().iconst(types::I64, tx as i64);
            let y = self.outputs(b, source, tx, types::F32);
            let out = offset(b, out, tx, m);
            for row in 0..valid {
                for x in 0..columns {
                    let at = ((row * g.out_width + x) * 4) as i64;
                    store_at(b, y[(row * m + x) as usize], out, at);
                }
            }
        }
    }

    /// The m x m outputs (row-major) of tile `tx` (or of `tx..tx + 4`, one per lane).
    fn outputs(&self, b: &mut FunctionBuilder, source: Value, tx: Value, ty: Type) -> Vec<Value> {
        let alpha = self.t.alpha();
        let at = offset(b, source, tx, 1);
        let matrix = skewed(self.channels * self.columns) * 4;
        let products: Vec<Vec<Value>> = (0..alpha)
            .map(|j| {
                (0..alpha)
                    .map(|i| {
                        let point = (j * alpha + i) as u64;
                        load_at(b, ty, at, (point * matrix) as i64)
                    })
                    .collect()
            })
            .collect();
        transform(b, self.t.output, &products)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{geometry, target};
    use super::chunk_rows;

    #[test]
    fn threads_split_f2x2s_channels_where_splitting_the_rows_would_add_panels() {
        let two = target(12, 32, 2);
        // (input, layer, rows a chunk on two threads, channel parts)
        for (input, layer, rows, parts) in [
            // 14x14 in F(2x2) is 7x7 tiles: one chunk fills two panels of 32; chunks
            // of two tile rows (14 tiles, a narrow panel: half a panel's products
            // each) cost as much in all and give each thread two.
            ("64x14x14", "conv(64, 3x3, pad=1)", 4, 1),
            // 1024 -> 512 at 14x14: 32 MiB of transformed weights, which each
            // thread's rows would stream whole; the channels split.
            ("1024x14x14", "conv(512, 3x3, pad=1)", 14, 2),
            // 10x10 is 5x5 tiles, one panel of 25: one chunk a thread (15 and 10
            // tiles) costs half a panel each, as much as the whole, and transforms
            // the input once (0.355 -> 0.343 ms against the channels split).
            ("256x10x10", "conv(256, 3x3, pad=1)", 6, 1),
        ] {
            let g = geometry(input, layer);
            assert_eq!(g.winograd, Some(2), "{input}");
            assert_eq!(
                chunk_rows(&g, 2, &target(12, 32, 1)),
                g.out_height,
                "{input}"
            );
            assert_eq!(chunk_rows(&g, 2, &two), rows, "{input}");
            assert_eq!(g.m_parts(&two), parts, "{input}");
        }
        // In F(4x4) 14x14 is 4x4 tiles, one narrow panel: two chunks of two tile rows
        // would each cost the whole panel's products, so one chunk, its channels cut
        // among the threads.
        let few = geometry("256x14x14", "conv(256, 3x3, pad=1)");
        assert_eq!(few.winograd, Some(4));
        assert_eq!(chunk_rows(&few, 4, &target(12, 32, 2)), 16);
        assert_eq!(few.m_parts(&target(12, 32, 2)), 2);
        assert_eq!(chunk_rows(&few, 4, &target(12, 32, 1)), 16);
        // The same 7x7 tiles in F(4x4) (28x28): rows cut, F(4x4)'s transform being
        // dear, in two chunks of one panel each (four and three tile rows), where
        // chunks of two tile rows gave the threads two half-empty panels each.
        let dear = geometry("128x28x28", "conv(128, 3x3, pad=1)");
        assert_eq!(dear.winograd, Some(4));
        assert_eq!(chunk_rows(&dear, 4, &target(12, 32, 2)), 16);
        assert_eq!(dear.m_parts(&target(12, 32, 2)), 1);
        // 35x35 is 9x9 tiles: chunks of five and four tile rows (two panels each, 45
        // and 36 tiles) finish before three chunks of three (one panel each, one
        // thread taking two).
        let odd = geometry("96x35x35", "conv(96, 3x3, pad=1)");
        assert_eq!(chunk_rows(&odd, 4, &target(12, 32, 2)), 20);
        // 56x56 in F(4x4) has rows enough for both threads at no cost in panels.
        let large = geometry("64x56x56", "conv(64, 3x3, pad=1)");
        assert_eq!(large.winograd, Some(4));
        let rows = chunk_rows(&large, 4, &target(12, 32, 2));
        assert!(large.out_height.div_ceil(rows) >= 4, "{rows}");
        assert_eq!(large.m_parts(&target(12, 32, 2)), 1);
        // 14 tile rows in chunks of two or of four both fill seven panels; chunks of
        // two leave no short chunk to write code for. Two threads take chunks of one
        // tile row: 14 tiles, half a panel's products each, seven chunks a thread.
        assert_eq!(chunk_rows(&large, 4, &target(12, 32, 1)), 8);
        assert_eq!(rows, 4);
    }

    #[test]
    fn threads_keep_their_chunks_near_l2_where_that_costs_them_little() {
        // VGG-16's 256 -> 256 at 56x56: one chunk of seven tile rows a thread (98
        // tiles in four panels, 7 MiB of transformed input and products) would finish
        // sooner on paper than seven chunks of two (28 tiles in one panel, 2 MiB) or
        // fourteen of one (14 tiles, half a panel, 1 MiB); the spill to L3 makes the
        // small chunks the faster, and the smallest balance best.
        let vgg = geometry("256x56x56", "conv(256, 3x3, pad=1)");
        assert_eq!(vgg.winograd, Some(4));
        assert_eq!(chunk_rows(&vgg, 4, &target(12, 32, 2)), 4);
        // Its 512 -> 512 at 28x28 streams 36 MiB of transformed weights through every
        // chunk: narrow chunks do not pay there, so two chunks of whole panels (four
        // and three tile rows), one a thread.
        let deep = geometry("512x28x28", "conv(512, 3x3, pad=1)");
        assert_eq!(chunk_rows(&deep, 4, &target(12, 32, 2)), 16);
        // Where the small chunks would fill their panels much worse, they stay large:
        // Inception-v3's 80 -> 192 at 71x71 in chunks of three tile rows (54 tiles in
        // two panels), not two (36 tiles, the same two panels).
        let wide = geometry("80x71x71", "conv(192, 3x3, pad=1)");
        assert_eq!(wide.winograd, Some(4));
        assert_eq!(chunk_rows(&wide, 4, &target(12, 32, 2)), 12);
    }
}
