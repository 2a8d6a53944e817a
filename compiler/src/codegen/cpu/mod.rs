//! Code generation for the CPU: every kernel of the fused graph becomes one Cranelift
//! function with every size, stride, padding and epilogue step a constant.
//!
//! A convolution is a matrix product per sample and group: C (M x N) = A (M x K) · B
//! (K x N), with A the weights (packed once by the runtime into MR-row panels), B the
//! im2col of the input, generated here as a packing loop into NR-column panels with the
//! padding resolved, and C the output, already NCHW. The loop nest over K blocks and
//! panels is generated; the MR x NR register tile it calls is a precompiled microkernel
//! (rustc's AVX-512 or AVX2 code: Cranelift lowers no vector wider than 128 bits). A
//! dense layer is the same product with a 1x1 image. The epilogue (bias, scale-shift,
//! activation, residual add) runs over each output row once its product is complete.
//!
//! Pooling, LRN, softmax and the element-wise kernels (a lone activation or batch norm,
//! an add or a concat the passes could not fuse) are generated whole. On CPUs without
//! the precompiled tiles' features, the tile itself is generated too (`tile.rs`).
//! A 3x3 or 5x5 stride-1 conv the passes chose Winograd for (`Algorithm::Winograd`) runs the
//! same tile nest over its transformed input (`winograd.rs`).
//!
//! The compiler only emits functions; the runtime defines them in a JIT module and
//! supplies what the argument slots name (`Arg`).

mod adaptive;
mod conv;
mod elementwise;
mod epilogue;
pub mod exp;
mod loops;
mod lrn;
mod pack;
mod pixel_major;
mod pool;
mod softmax;
pub mod tile;
mod winograd;

pub use conv::{FollowingPool, Geometry, L2_BYTES};
pub use epilogue::{TILE_EPILOGUE_ENV, tile_epilogue_from_env};
pub use winograd::{WINOGRAD_HELPER_LANES, WINOGRAD_HELPERS_ENV, winograd_helpers_from_env};

use crate::check::CheckedGraph;
use crate::ops::{Activation, Op};
use crate::passes::{FusedGraph, TensorId};
use cranelift_codegen::ir::{
    AbiParam, Function, InstBuilder, MemFlagsData, Signature, UserFuncName, Value, types,
};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

/// What code is generated for: the register tile's shape and the K block.
#[derive(Clone, Copy)]
pub struct CpuTarget {
    pub mr: u64,
    pub nr: u64,
    /// K per block: the B micro-panel of KC x NR floats stays in L1.
    pub kc: u64,
    /// Threads that will share each kernel's chunks.
    pub threads: u64,
    /// Whether the tiles finish the epilogues they can (`epilogue::TileEpilogue`);
    /// otherwise every epilogue is a pass over the output after the product.
    pub tile_epilogue: bool,
    /// Whether tanh and sigmoid call the runtime's precompiled row helpers (`Arg::Tanh`,
    /// `Arg::Sigmoid`: sixteen lanes with FMA) rather than run as inline f32x4 code.
    pub activation_helpers: bool,
    /// Whether Winograd kernels call the runtime's transforms of a tile row
    /// (`Arg::WinogradInput`, `Arg::WinogradOutput`: AVX-512's sixteen lanes, AVX2's
    /// eight) rather than run their own f32x4 ones.
    pub winograd_helpers: bool,
    /// Whether an edge tile reads only its own rows of A and columns of B (the
    /// precompiled tiles, by masked loads), so that a panel may be read where it lies,
    /// up to the end of its tensor; the generated tile reads whole packed panels.
    pub exact_edges: bool,
    pub frontend: TargetFrontendConfig,
}

impl CpuTarget {
    /// What a product of `columns` columns costs, in columns of whole panels: NR a
    /// panel, but half that for a last panel of at most NR / 2 columns, whose first
    /// vector alone the precompiled tiles multiply (the generated tile reads and
    /// multiplies whole panels).
    pub fn product_columns(&self, columns: u64) -> u64 {
        let (whole, rest) = (columns / self.nr, columns % self.nr);
        let last = match rest {
            0 => 0,
            narrow if self.exact_edges && narrow <= self.nr / 2 => self.nr / 2,
            _ => self.nr,
        };
        whole * self.nr + last
    }
}

/// What the runtime puts in each slot of a kernel's argument array (all pointers).
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// The first input at sample 0 (its channel offset applied).
    Input,
    /// The output at sample 0 (its channel offset applied).
    Output,
    /// The weights packed for the tile: per group, MR-row panels over all of K.
    PackedWeights,
    /// The per-channel bias (a folded batch norm's shift included).
    Bias,
    /// A batch norm's per-channel `γ/√(σ²+ε)` and `β − μ·γ/√(σ²+ε)`.
    Scale {
        layer: String,
        eps: f64,
    },
    Shift {
        layer: String,
        eps: f64,
    },
    /// The tensor a residual add reads, at sample 0.
    AddInput(TensorId),
    /// One of a copying concat's inputs, at sample 0 (its channel offset applied).
    ConcatInput(TensorId),
    /// `scratch_floats` floats for the packed input.
    Scratch,
    /// The microkernel: `extern "C" fn(k, a, b, c, ldc, flags, rows, columns, bias,
    /// residual)` (`tile.rs`).
    Tile,
    /// `extern "C" fn(m, k, weights, x, y)`: y = W·x for row-major M x K weights.
    Gemv,
    /// `extern "C" fn(base: f64, exponent: f64) -> f64`, for an LRN's general beta.
    Pow,
    /// `extern "C" fn(source, destination, count)`: tanh of `count` floats, in place
    /// where the two are the same.
    Tanh,
    /// As `Tanh`, for the sigmoid.
    Sigmoid,
    /// The input transform of a tile row of F(m x m, r x r), read from the input plane
    /// where it lies: `extern "C" fn(plane, first_row, height, width, left, tiles,
    /// destination, first_column, nr, panel, matrix)` (the runtime's
    /// `winograd::tiles::InputFn`).
    WinogradInput {
        m: u64,
        r: u64,
    },
    /// Its output transform: `extern "C" fn(source, matrix, tiles, out, out_width,
    /// rows, bias, residual, relu)`, which also finishes the tile's part of the
    /// epilogue (`winograd::tiles::OutputFn`).
    WinogradOutput {
        m: u64,
        r: u64,
    },
    /// The output of the pool a conv computes over its rows (`Geometry::fuses_pool`), at
    /// sample 0 (its channel offset applied).
    PooledOutput,
}

/// One generated kernel: `fn(args: *const *mut f32, batch: i64, chunk_begin: i64,
/// chunk_end: i64)`, computing output chunks `[chunk_begin, chunk_end)` of every sample
/// (see `Geometry::chunk_count`); threads run disjoint ranges, each with its own scratch.
pub struct KernelCode {
    /// The fused kernel it computes.
    pub kernel: usize,
    pub function: Function,
    pub args: Vec<Arg>,
    pub scratch_floats: u64,
    /// The product's sizes, for conv and dense kernels (whose weights the runtime packs).
    pub geometry: Option<Geometry>,
    /// How many chunks the kernel's work is cut into, for threads to share.
    pub chunks: u64,
    /// Whether consecutive chunks are parts of one span's output channels (a small
    /// output's product split so that every thread has work, or a pixel-major
    /// product's weights too big for L2 split so that each streams its part): threads
    /// then take them in turn rather than each a contiguous share of them.
    pub cuts_channels: bool,
    /// How the code computes, where the fused graph does not say (`pixel-major`,
    /// `shifted copies`): the profile shows it beside the op.
    pub layout: Option<&'static str>,
}

impl KernelCode {
    /// The pool kernel this one computes as it writes its rows: the runtime skips it.
    pub fn pools(&self) -> Option<usize> {
        let pool = self.geometry.as_ref()?.pool?;
        self.args
            .contains(&Arg::PooledOutput)
            .then_some(pool.kernel)
    }
}

/// Work a kernel needs per thread before another thread joins. A worker spinning
/// between kernels joins in a few hundred nanoseconds (a sleeping one seldom wakes in
/// time to join: the caller runs its chunks, `jit::team`), and a kernel split for it
/// also moves its data between the cores: about a microsecond in all. LeNet-5's C1,
/// C3 and C5 (work 48-246 K, 2-6 us) took 13.6 us together with the rest on one
/// thread and 11.9 on two (min of 5000 runs, 8 alternated rounds, Zen 4), and the
/// pools over 7x7 to 13x13 maps (GoogLeNet's, AlexNet's: 50-370 K) ran 1.7-2.2x
/// faster on two; at 500 K all of those ran on one.
const WORK_PER_THREAD: u64 = 40_000;

/// A kernel's work per sample: its multiply-adds, and per output value the inputs it
/// reads that no multiply-add counts (a pool's window, an LRN's channels and its
/// square roots), at least four (an epilogue, a copy).
pub fn kernel_work(net: &CheckedGraph, fused: &FusedGraph, index: usize) -> u64 {
    let kernel = &fused.kernels[index];
    let outputs: u64 = fused.tensor(kernel.output).shape.0.iter().product();
    let input_plane = || {
        let input = kernel.inputs.first().map(|&id| &fused.tensor(id).shape.0);
        input.map_or(1, |shape| shape.iter().skip(1).product())
    };
    let per_output = match &kernel.op {
        Op::Pool(pool) => pool.window.kernel[0].saturating_mul(pool.window.kernel[1]),
        Op::GlobalPool(_) => input_plane(),
        Op::Lrn(lrn) => lrn.size.saturating_add(16),
        _ => 4,
    };
    let per_output = per_output.max(4);
    kernel
        .macs(net)
        .saturating_add(outputs.saturating_mul(per_output))
}

/// The threads `work` is worth, at most `threads`, at least one.
pub fn threads_for(work: u64, threads: usize) -> usize {
    usize::try_from(work.div_ceil(WORK_PER_THREAD))
        .unwrap_or(usize::MAX)
        .clamp(1, threads.max(1))
}

/// The threads each kernel of `fused` is worth at batch 1: its code is cut into chunks
/// for that many (a kernel on fewer threads than it was cut for pays for the cuts).
pub fn kernel_threads(net: &CheckedGraph, fused: &FusedGraph, threads: usize) -> Vec<u64> {
    (0..fused.kernels.len())
        .map(|index| threads_for(kernel_work(net, fused, index), threads) as u64)
        .collect()
}

/// Every kernel's code for `target`, each cut into chunks for its `threads`, by kernel
/// index. `None` marks a kernel no generator takes (an op the fused graph never holds,
/// such as flatten, or a shape none expects): the runtime runs those on its reference
/// kernels.
pub fn compile(fused: &FusedGraph, target: &CpuTarget, threads: &[u64]) -> Vec<Option<KernelCode>> {
    (0..fused.kernels.len())
        .map(|index| compile_one(fused, index, target, threads))
        .collect()
}

/// Kernel `index`'s code, as `compile` makes it: kernels are independent, so a caller
/// may generate them on threads of its own.
pub fn compile_one(
    fused: &FusedGraph,
    index: usize,
    target: &CpuTarget,
    threads: &[u64],
) -> Option<KernelCode> {
    let target = &CpuTarget {
        threads: threads.get(index).copied().unwrap_or(target.threads),
        ..*target
    };
    compile_kernel(fused, index, &fused.kernels[index], target)
}

fn compile_kernel(
    fused: &FusedGraph,
    index: usize,
    kernel: &crate::passes::Kernel,
    target: &CpuTarget,
) -> Option<KernelCode> {
    match &kernel.op {
        Op::Conv(_) | Op::Dense(_) => Geometry::of(fused, kernel)
            .map(|geometry| conv::generate(fused, index, geometry, target)),
        Op::Pool(_) | Op::GlobalPool(_) => pool::generate(fused, index, target),
        Op::AdaptivePool(_) => adaptive::generate(fused, index, target),
        Op::Lrn(_) => lrn::generate(fused, index, target),
        Op::Activation(Activation::Softmax) => softmax::generate(fused, index, target),
        Op::Activation(_) | Op::BatchNorm(_) | Op::Add(_) | Op::Concat(_) => {
            elementwise::generate(fused, index, target)
        }
        Op::Input(_) | Op::Dropout(_) | Op::Flatten(_) => None,
    }
}

/// The parameters every kernel function takes: `args` (the slot array), `batch`, and
/// the chunk range `[begin, end)`.
pub(crate) struct Params {
    pub args: Value,
    pub batch: Value,
    pub begin: Value,
    pub end: Value,
}

/// Kernel `index`'s function, `fn(args, batch, chunk_begin, chunk_end)`: `body` writes
/// what runs between its entry and its return.
fn kernel_function(
    index: usize,
    target: &CpuTarget,
    body: impl FnOnce(&mut FunctionBuilder, Params),
) -> Function {
    let pointer = target.frontend.pointer_type();
    let params = [pointer, types::I64, types::I64, types::I64];
    let name = UserFuncName::user(0, index as u32);
    function(name, &params, target.frontend, |b, p| {
        let params = Params {
            args: p[0],
            batch: p[1],
            begin: p[2],
            end: p[3],
        };
        body(b, params)
    })
}

/// A function without results taking `params` in the target's calling convention:
/// `body` writes what runs between its entry (given the parameters) and its return.
fn function(
    name: UserFuncName,
    params: &[types::Type],
    frontend: TargetFrontendConfig,
    body: impl FnOnce(&mut FunctionBuilder, &[Value]),
) -> Function {
    let mut signature = Signature::new(frontend.default_call_conv);
    for &ty in params {
        signature.params.push(AbiParam::new(ty));
    }
    let mut function = Function::with_name_signature(name, signature);
    let mut context = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut function, &mut context);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let values = b.block_params(entry).to_vec();
    body(&mut b, &values);
    b.ins().return_(&[]);
    b.finalize(frontend);
    function
}

/// A kernel without weights or scratch: `args` loaded at its entry, then
/// `each_sample(b, params, pointers, n)` for every sample `n` of the batch; threads
/// share its `chunks`.
fn weightless_kernel(
    index: usize,
    target: &CpuTarget,
    args: Vec<Arg>,
    chunks: u64,
    each_sample: impl Fn(&mut FunctionBuilder, &Params, &conv::Pointers, Value),
) -> KernelCode {
    let function = kernel_function(index, target, |b, params| {
        let pointers = load_pointers(b, &params, &args);
        let zero = b.ins().iconst(types::I64, 0);
        loops::counted(b, zero, params.batch, 1, |b, n| {
            each_sample(b, &params, &pointers, n)
        });
    });
    KernelCode {
        kernel: index,
        function,
        args,
        scratch_floats: 0,
        geometry: None,
        chunks,
        cuts_channels: false,
        layout: None,
    }
}

/// Where sample `n` of the tensor in slot `arg` starts: `sample` elements apart.
fn at_sample(
    b: &mut FunctionBuilder,
    pointers: &conv::Pointers,
    arg: &Arg,
    n: Value,
    sample: u64,
) -> Value {
    conv::offset(b, pointers.get(arg), n, sample)
}

/// Every slot of `args` loaded from the argument array at the function's entry.
fn load_pointers(b: &mut FunctionBuilder, params: &Params, args: &[Arg]) -> conv::Pointers {
    let pointer = b.func.signature.params[0].value_type;
    let flags = MemFlagsData::new().with_notrap();
    let slots = (0..args.len())
        .map(|i| b.ins().load(pointer, flags, params.args, (i * 8) as i32))
        .collect();
    conv::Pointers {
        slots,
        args: args.to_vec(),
    }
}

/// Elements of one sample of the tensor that holds `id`'s storage: the distance
/// between samples in its buffer.
fn sample_stride(fused: &FusedGraph, id: TensorId) -> u64 {
    let (root, _) = fused.root(id);
    fused.tensor(root).shape.0.iter().product()
}

#[cfg(test)]
mod tests {
    use super::{CpuTarget, threads_for};

    #[test]
    fn small_kernels_stay_on_one_thread() {
        // LeNet-5's F6 (10,080 multiply-adds, 84 outputs) and S2 (1,176 outputs of a
        // 2x2 window) stay on one; its C3 (240,000 and 1,600 outputs) takes two.
        assert_eq!(threads_for(10_416, 2), 1);
        assert_eq!(threads_for(4_704, 2), 1);
        assert_eq!(threads_for(246_400, 2), 2);
        assert_eq!(threads_for(100_000, 8), 3);
        assert_eq!(threads_for(u64::MAX, 8), 8);
        assert_eq!(threads_for(0, 0), 1);
    }

    #[test]
    fn a_narrow_last_panel_costs_the_precompiled_tiles_half_a_panel() {
        let precompiled = super::test_support::target(12, 32, 1);
        let costs = [
            (0, 0),
            (16, 16),
            (17, 32),
            (32, 32),
            (45, 48),
            (49, 64),
            (81, 96),
        ];
        for (columns, cost) in costs {
            assert_eq!(precompiled.product_columns(columns), cost, "{columns}");
        }
        let generated = CpuTarget {
            exact_edges: false,
            ..precompiled
        };
        assert_eq!(generated.product_columns(45), 64);
        assert_eq!(generated.product_columns(9), 32);
    }
}

/// What the code generator's unit tests share: a fused conv's geometry, and a target
/// for a tile's shape and a thread count.
#[cfg(test)]
mod test_support {
    use super::CpuTarget;
    use super::conv::Geometry;

    pub fn geometry(input: &str, layer: &str) -> Geometry {
        let mut compilation = crate::compile(&format!("network N(input: {input}) {{ {layer} }}"));
        assert!(!compilation.has_errors(), "{:?}", compilation.diagnostics);
        let fused = crate::passes::fuse(&compilation.networks.remove(0));
        Geometry::of(&fused, &fused.kernels[0]).expect("a conv")
    }

    pub fn target(mr: u64, nr: u64, threads: u64) -> CpuTarget {
        CpuTarget {
            tile_epilogue: true,
            activation_helpers: true,
            winograd_helpers: false,
            exact_edges: true,
            mr,
            nr,
            kc: 256,
            threads,
            // The geometry's choices depend on the tile, not on the ISA's details.
            frontend: cranelift_codegen::isa::lookup_by_name("x86_64")
                .expect("the x64 backend")
                .finish(cranelift_codegen::settings::Flags::new(
                    cranelift_codegen::settings::builder(),
                ))
                .expect("an ISA")
                .frontend_config(),
        }
    }
}
