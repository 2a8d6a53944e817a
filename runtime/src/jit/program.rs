//! The JIT backend: the compiler's fused graph, every kernel compiled by Cranelift into
//! a shape-specialized function (conv and dense calling the register tile), run over
//! the memory plan's buffers. A kernel the compiler has no generator for would run on
//! the reference kernels through the fused executor; `on_reference_path` lists any.
//! So does, in a program made to run once, a kernel that the reference kernels finish
//! sooner than Cranelift would compile it (`interpreted_kernels` counts those).
//!
//! The steady state allocates nothing but the output: the buffers, the threads'
//! scratch and every kernel's argument slots are kept from one run to the next of the
//! same batch size.

use super::gemm::{KC, pack_panels};
use super::guarded::{Floats, Guard};
use super::microkernel::Microkernel;
use super::team::Team;
use crate::Tensor;
use crate::error::{Result, RuntimeError};
use crate::fused::prepare::Rows;
use crate::fused::{self, Storage};
use crate::weights::Weights;
use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::codegen::cpu::tile;
use cnnc_compiler::codegen::cpu::{self, Arg, CpuTarget, Geometry, KernelCode};
use cnnc_compiler::ops::Op;
use cnnc_compiler::passes::{self, FusedGraph, Kernel, WinogradPolicy};
use cranelift_codegen::Context;
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::Function;
use cranelift_codegen::isa::TargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, ModuleReloc, default_libcall_names};
use rayon::prelude::*;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The most kernels one program compiles. The largest example (Inception-ResNet-v2)
/// has a few hundred; the fuzzer found that a legal network of a million tiny layers
/// (nested `repeat`s) exhausted memory in code generation instead of failing clearly.
pub const MAX_KERNELS: usize = 20_000;

type KernelFn = unsafe extern "C" fn(*const *mut f32, i64, i64, i64);

/// Which register tile the conv kernels call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileChoice {
    /// The widest precompiled FMA tile (AVX-512, AVX2+FMA), or the tile generated with
    /// Cranelift where the CPU has neither.
    Auto,
    /// The tile generated with Cranelift (f32x4), whatever the CPU: to cross-check it.
    Cranelift,
}

impl TileChoice {
    /// `CNNC_TILE=cranelift` asks for the generated tile; the one place it is read.
    pub fn from_env() -> TileChoice {
        match std::env::var("CNNC_TILE").as_deref() {
            Ok("cranelift") => TileChoice::Cranelift,
            _ => TileChoice::Auto,
        }
    }

    /// The precompiled tile to call, or `None` for the generated one.
    fn precompiled(self) -> Option<Microkernel> {
        match self {
            TileChoice::Auto => Microkernel::with_fma(),
            TileChoice::Cranelift => None,
        }
    }
}

/// A network compiled for the JIT backend.
pub struct Program<'a> {
    fused: fused::Program<'a>,
    kernels: Vec<Option<Compiled>>,
    /// By kernel index: the generated kernel that computes this one as it writes its
    /// rows (a pool, `KernelCode::pools`), which then does not run by itself.
    in_producer: Vec<Option<usize>>,
    microkernel: Option<Microkernel>,
    /// Whether the generated kernels' packed weights all fit in half the L2 and so stay
    /// there from one run to the next: dense kernels then call `gemv_resident` for
    /// their matrix-vector product (`Arg::Gemv`), otherwise `gemv`, which prefetches.
    weights_stay_in_l2: bool,
    scratch_floats: usize,
    threads: usize,
    /// The threads that share each kernel's chunks; a run that finds it taken (another
    /// run of the same program at the same time) runs on its own thread.
    team: Mutex<Team>,
    distinct_functions: usize,
    /// How many of them the baseline tier compiled.
    baseline_functions: usize,
    /// How many kernels run on the reference kernels because compiling them would
    /// take longer than interpreting them for the one run.
    interpreted_kernels: usize,
    /// What the last run used, for the next run of the same batch size.
    cache: Mutex<Option<Cache>>,
    /// Bounds-checked mode: the guard every run's buffers and scratch are mapped against.
    guard: Option<Guard>,
    /// Owns the generated code: the function pointers live as long as it does.
    _module: Option<JITModule>,
    pub compile_time: Duration,
    /// Where `compile_time` went.
    pub phases: Phases,
}

/// The phases of `Program::with_threads`, timed apart so that `cnnc bench` can report
/// compilation and weight preparation separately.
#[derive(Clone, Copy, Debug, Default)]
pub struct Phases {
    /// The passes and the memory plan.
    pub passes: Duration,
    /// Generating the kernels and compiling them with Cranelift.
    pub codegen: Duration,
    /// Folding the weights (batch norms into convs) as they are packed into the
    /// tile's panels.
    pub pack: Duration,
}

/// How a program is compiled: the threads its kernels are split for, the register tile,
/// and where Winograd is used.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The threads the kernels are split for; 0 for the machine's (`machine_threads`),
    /// asked for only where something is compiled.
    pub threads: usize,
    pub tile: TileChoice,
    pub winograd: WinogradPolicy,
    /// Whether the tiles finish the epilogues they can (`CpuTarget::tile_epilogue`).
    pub tile_epilogue: bool,
    /// Whether Winograd kernels call the runtime's transforms where the CPU has them
    /// (`CpuTarget::winograd_helpers`).
    pub winograd_helpers: bool,
    /// Bounds-checked mode: every buffer the generated code touches is mapped against
    /// this guard page, so code that strays past one faults instead of corrupting
    /// another.
    pub guard: Option<Guard>,
    /// How often the program will run: what compiling may spend to make it faster.
    pub runs: Runs,
}

/// How often a program is expected to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runs {
    /// Once (`cnnc run`), on a batch of `samples`: a kernel that the reference kernels
    /// run sooner than Cranelift compiles it is interpreted, and one the optimizer
    /// would spend longer on than it saves is compiled by the baseline tier.
    Once { samples: usize },
    /// Many times (`cnnc bench`, a server): every kernel is optimized.
    Many,
}

impl Options {
    /// `threads`, with the tile, the Winograd policy and the tiles' epilogues as the
    /// environment asks (`CNNC_TILE`, `CNNC_WINOGRAD`, `CNNC_TILE_EPILOGUE`,
    /// `CNNC_WINOGRAD_HELPERS`), the best ones by default for a program that runs many
    /// times: the runtime's Winograd transforms where they are faster than the kernels'
    /// own.
    pub fn from_env(threads: usize) -> Options {
        Options {
            threads,
            tile: TileChoice::from_env(),
            winograd: WinogradPolicy::from_env(),
            tile_epilogue: cpu::tile_epilogue_from_env(),
            winograd_helpers: cpu::winograd_helpers_from_env()
                && super::winograd::transforms_are_faster(),
            guard: None,
            runs: Runs::Many,
        }
    }

    /// As `from_env`, for a program that runs once on a batch of `samples`: the
    /// runtime's Winograd transforms wherever the CPU has them, faster or not, since
    /// they spare Cranelift the kernels' own (GoogLeNet's compile on a Zen 3, with
    /// AVX2: 117-158 -> 50-58 ms).
    pub fn once_from_env(threads: usize, samples: usize) -> Options {
        Options {
            winograd_helpers: cpu::winograd_helpers_from_env(),
            runs: Runs::Once { samples },
            ..Options::from_env(threads)
        }
    }
}

/// A run's buffers and scratch, and every generated kernel's calls into them.
struct Cache {
    batch: usize,
    buffers: Vec<Floats>,
    /// One scratch area a thread.
    scratch: Vec<Floats>,
    /// By kernel index: the argument slots of each thread that takes part (none for a
    /// kernel on the reference path).
    calls: Vec<Calls>,
}

/// The threads a kernel runs on: each one's argument slots (its own scratch), how
/// many chunks a thread takes at once (`chunks_per_take`), and where each thread is in
/// its share of the chunks.
#[derive(Default)]
struct Calls {
    slots: Vec<Vec<*mut f32>>,
    take: usize,
    next: Vec<NextChunk>,
}

/// The next chunk of one thread's share, on a pair of cache lines of its own (the
/// hardware prefetches lines in pairs): each thread takes from its own counter until
/// its share is done, so the threads do not pass one line back and forth.
#[derive(Default)]
#[repr(align(128))]
struct NextChunk(AtomicUsize);

// SAFETY: the slots point into the buffers and scratch of the `Cache` that holds them
// (whose heap storage does not move with it) and at the program's weights and
// helpers; a cache is used by one run at a time, behind the program's mutex.
unsafe impl Send for Cache {}
// SAFETY: generated code only reads the slot arrays; threads running one kernel write
// disjoint chunks of its output and their own scratch.
unsafe impl Sync for Calls {}

/// A generated kernel and the data its argument slots point at.
struct Compiled {
    function: KernelFn,
    chunks: usize,
    /// `KernelCode::cuts_channels`: its threads take the chunks in turn.
    cuts_channels: bool,
    /// How the code computes where the fused graph does not say (`pixel-major`).
    layout: Option<&'static str>,
    /// Per sample, what decides how many threads the kernel is worth
    /// (`cpu::kernel_work`).
    work: u64,
    args: Vec<Arg>,
    /// The pool kernel it computes too (`KernelCode::pools`), whose output its
    /// `PooledOutput` slot points at.
    pools: Option<usize>,
    packed_weights: Floats,
    bias: Floats,
    /// Scale and shift vectors, in the order of the `Scale`/`Shift` slots.
    scale_shift: Vec<Floats>,
}

impl<'a> Program<'a> {
    /// Runs the passes, generates and compiles the kernels, and packs their weights.
    pub fn new(net: &'a CheckedGraph, weights: &'a Weights) -> Result<Self> {
        Self::with_threads(net, weights, rayon::current_num_threads())
    }

    /// As `new`, for a program that runs once on a batch of `samples`: the kernels
    /// the reference kernels run sooner than they compile are interpreted, and those
    /// whose optimisation would take longer than it saves are compiled by the baseline
    /// tier ([`Runs::Once`]).
    pub fn for_one_run(
        net: &'a CheckedGraph,
        weights: &'a Weights,
        samples: usize,
    ) -> Result<Self> {
        Self::with_options(net, weights, Options::once_from_env(0, samples))
    }

    /// As `new`, splitting each generated kernel over `threads` threads.
    pub fn with_threads(
        net: &'a CheckedGraph,
        weights: &'a Weights,
        threads: usize,
    ) -> Result<Self> {
        Self::with_options(net, weights, Options::from_env(threads))
    }

    /// As `with_threads`, in bounds-checked mode (`Options::guard`), with the runtime's
    /// Winograd transforms wherever `cnnc run` calls them (`Options::once_from_env`), so
    /// that those are checked too.
    pub fn bounds_checked(
        net: &'a CheckedGraph,
        weights: &'a Weights,
        threads: usize,
        guard: Guard,
    ) -> Result<Self> {
        let options = Options {
            guard: Some(guard),
            winograd_helpers: cpu::winograd_helpers_from_env(),
            ..Options::from_env(threads)
        };
        Self::with_options(net, weights, options)
    }

    /// As `with_threads`, compiled as `options` say (the tests' way to pick the tile
    /// and the Winograd policy).
    pub fn with_options(
        net: &'a CheckedGraph,
        weights: &'a Weights,
        options: Options,
    ) -> Result<Self> {
        let Options {
            threads,
            winograd,
            guard,
            runs,
            ..
        } = options;
        let started = Instant::now();
        let mut fused = fused::Program::unprepared(net, weights);
        let kernels = fused.fused.kernels.len();
        if kernels > MAX_KERNELS {
            return Err(RuntimeError::Invalid(format!(
                "the network has {kernels} kernels after fusion; the JIT compiles at most \
                 {MAX_KERNELS} (each is a function of its own, and compiling them all at once \
                 would take gigabytes): run it with --backend reference"
            )));
        }
        let fused_at = started.elapsed();
        passes::choose_algorithms(&mut fused.fused, winograd);
        // Each kernel's work per sample: what the tier choices weigh.
        let work: Vec<u64> = (0..kernels)
            .map(|index| cpu::kernel_work(net, &fused.fused, index))
            .collect();
        let unseen = interpreted_before_generating(runs, &fused.fused, &work);
        let to_generate: Vec<usize> = (0..kernels).filter(|&index| !unseen[index]).collect();
        // Only compiled kernels use more than the caller's thread.
        let threads = match (to_generate.is_empty(), threads) {
            (true, _) => 1,
            (false, 0) => machine_threads(),
            (false, threads) => threads,
        }
        .clamp(1, Team::MAX_THREADS);
        let generated = match to_generate.is_empty() {
            // Not even an ISA: a small network run once is interpreted whole.
            true => Generated::nothing(kernels, started.elapsed()),
            false => {
                let options = Options { threads, ..options };
                compile_kernels(&fused, &work, &to_generate, &options, started)?
            }
        };
        let interpreted_kernels =
            unseen.iter().filter(|&&skip| skip).count() + generated.interpreted;
        let Generated {
            module,
            kernels,
            in_producer,
            microkernel,
            distinct_functions,
            baseline_functions,
            weights_stay_in_l2,
            scratch_floats,
            compiled_at,
            ..
        } = generated;
        // Only the kernels left to the reference kernels use the fused executor's
        // folded weights.
        let unpacked = (kernels.iter().zip(&in_producer).enumerate())
            .filter(|(_, (k, producer))| k.is_none() && producer.is_none());
        for (index, _) in unpacked {
            fused.prepare_kernel(index)?;
        }
        // Started last: its workers would spin beside the compilation's threads. None
        // at all where every kernel is interpreted: they would spin beside the run.
        let team_threads = match kernels.iter().any(Option::is_some) {
            true => threads,
            false => 1,
        };
        let team = Team::new(team_threads).map_err(|e| {
            RuntimeError::Invalid(format!("cannot start {team_threads} JIT threads: {e}"))
        })?;
        let compile_time = started.elapsed();
        Ok(Program {
            distinct_functions,
            baseline_functions,
            interpreted_kernels,
            fused,
            kernels,
            in_producer,
            microkernel,
            weights_stay_in_l2,
            scratch_floats,
            threads,
            team: Mutex::new(team),
            cache: Mutex::new(None),
            guard,
            _module: module,
            compile_time,
            phases: Phases {
                passes: fused_at,
                codegen: compiled_at - fused_at,
                pack: compile_time - compiled_at,
            },
        })
    }

    /// How many distinct functions were compiled for the generated kernels (kernels
    /// with the same code share one).
    pub fn distinct_functions(&self) -> usize {
        self.distinct_functions
    }

    /// How many of the distinct functions the baseline tier compiled (none unless the
    /// program was made to run once).
    pub fn baseline_functions(&self) -> usize {
        self.baseline_functions
    }

    /// How many kernels run on the reference kernels because, in a program made to
    /// run once, they finish there sooner than Cranelift would compile them.
    pub fn interpreted_kernels(&self) -> usize {
        self.interpreted_kernels
    }

    /// Whether the generated kernels' packed weights all fit in half the L2, so that
    /// they stay there from one run to the next: the dense kernels then read them
    /// without prefetching.
    pub fn weights_stay_in_l2(&self) -> bool {
        self.weights_stay_in_l2
    }

    /// How many kernels run generated code (their own, or their producer's), of how
    /// many.
    pub fn generated(&self) -> (usize, usize) {
        let in_producers = self.in_producer.iter().flatten().count();
        (
            self.kernels.iter().flatten().count() + in_producers,
            self.kernels.len(),
        )
    }

    /// The kernels that run on the reference path (no generated code), by name and op.
    pub fn on_reference_path(&self) -> Vec<String> {
        let fused = &self.fused.fused;
        (self
            .kernels
            .iter()
            .zip(&self.in_producer)
            .zip(&fused.kernels))
        .filter(|((compiled, producer), _)| compiled.is_none() && producer.is_none())
        .map(|(_, kernel)| format!("{} ({})", kernel.name, kernel.op.kind()))
        .collect()
    }

    /// Kernel `index`'s op as the profile shows it: the fused graph's, with how the
    /// generated code computes where that is not the usual product (`[pixel-major]`),
    /// or the kernel that computes it (`[in c1]`: its time is that kernel's).
    pub fn op_text(&self, index: usize) -> String {
        let kernels = &self.fused.fused.kernels;
        let op = kernels[index].op_text();
        if let Some(producer) = self.in_producer[index] {
            return format!("{op} [in {}]", kernels[producer].name);
        }
        match self.kernels[index].as_ref().and_then(|k| k.layout) {
            Some(layout) => format!("{op} [{layout}]"),
            None => op,
        }
    }

    /// The register tile the generated kernels call: none where nothing was compiled
    /// (a small network run once, interpreted whole).
    pub fn microkernel(&self) -> Option<Microkernel> {
        self.microkernel
    }

    /// Runs the network on `inputs` (one per network input, batch-first).
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Tensor> {
        self.execute(&inputs, None)
    }

    /// Runs the network and times each kernel of the fused graph (two reads of the
    /// clock a kernel, which `run` does without: a tenth of a microsecond each, 2% of
    /// LeNet-5's run).
    pub fn run_profiled(&self, inputs: Vec<Tensor>) -> Result<(Tensor, Vec<Duration>)> {
        let mut times = Vec::with_capacity(self.kernels.len());
        let output = self.execute(&inputs, Some(&mut times))?;
        Ok((output, times))
    }

    /// The fused graph the program runs: its kernels are what `run_profiled` times.
    pub fn fused(&self) -> &cnnc_compiler::passes::FusedGraph {
        &self.fused.fused
    }

    /// Runs every kernel, adding how long each took to `times` if given. The buffers,
    /// scratch and slots come from the cache when the last run had this batch size (a
    /// run while another holds the cache makes its own).
    fn execute(&self, inputs: &[Tensor], mut times: Option<&mut Vec<Duration>>) -> Result<Tensor> {
        let batch = self.fused.batch_of(inputs)?;
        let mut guard = self.cache.try_lock().ok();
        let cached = guard
            .as_mut()
            .and_then(|cache| cache.take())
            .filter(|cache| cache.batch == batch);
        let (fused, plan) = (&self.fused.fused, &self.fused.plan);
        let reused = cached.and_then(|cache| {
            let storage = Storage::reuse(fused, plan, batch, self.guard, cache.buffers)?;
            Some((storage, cache.scratch, Some(cache.calls)))
        });
        let (storage, mut scratch, calls) = match reused {
            Some(reused) => reused,
            None => (
                Storage::new(fused, plan, batch, self.guard)?,
                // At least one float a thread, so that every thread has its (possibly
                // unused) share.
                (0..self.threads)
                    .map(|_| Floats::zeroed(self.scratch_floats.max(1), self.guard))
                    .collect::<Result<Vec<_>>>()?,
                None,
            ),
        };
        let mut storage = self.fused.start_in(inputs, storage)?;
        let calls = match calls {
            Some(calls) => calls,
            None => self.calls(&mut storage, &mut scratch)?,
        };
        let team = self.team.try_lock().ok();
        for (index, kernel) in self.kernels.iter().enumerate() {
            let started = times.is_some().then(Instant::now);
            match (kernel, self.in_producer[index]) {
                (Some(compiled), _) => call(compiled, &calls[index], batch, team.as_deref()),
                (None, Some(_)) => {}
                (None, None) => self.fused.run_kernel(index, &mut storage)?,
            }
            if let (Some(times), Some(started)) = (times.as_deref_mut(), started) {
                times.push(started.elapsed());
            }
        }
        let output = storage.read(self.fused.fused.output)?;
        if let Some(slot) = guard.as_deref_mut() {
            *slot = Some(Cache {
                batch,
                buffers: storage.into_buffers(),
                scratch,
                calls,
            });
        }
        Ok(output)
    }

    /// Every generated kernel's calls for `storage`'s batch: the threads its work is
    /// worth (no more than it has chunks), each with its argument slots (buffer
    /// pointers with channel offsets of concat slices applied, and its thread's
    /// `scratch`).
    fn calls(&self, storage: &mut Storage, scratch: &mut [Floats]) -> Result<Vec<Calls>> {
        let mut all = Vec::with_capacity(self.kernels.len());
        for (index, kernel) in self.kernels.iter().enumerate() {
            let Some(compiled) = kernel else {
                all.push(Calls::default());
                continue;
            };
            let slots = self.slots(index, compiled, storage)?;
            let scratch_slot = compiled.args.iter().position(|a| *a == Arg::Scratch);
            let work = compiled.work.saturating_mul(storage.batch() as u64);
            let threads = cpu::threads_for(work, self.threads).min(compiled.chunks.max(1));
            let slots: Vec<Vec<*mut f32>> = scratch
                .iter_mut()
                .take(threads)
                .map(|scratch| {
                    let mut slots = slots.clone();
                    if let Some(slot) = scratch_slot {
                        slots[slot] = scratch.as_mut_ptr();
                    }
                    slots
                })
                .collect();
            let take = chunks_per_take(compiled.chunks, slots.len(), work);
            let next = slots.iter().map(|_| NextChunk::default()).collect();
            all.push(Calls { slots, take, next });
        }
        Ok(all)
    }

    /// What each of a kernel's argument slots points at (the scratch slot is the
    /// caller's to fill).
    fn slots(
        &self,
        index: usize,
        compiled: &Compiled,
        storage: &mut Storage,
    ) -> Result<Vec<*mut f32>> {
        let kernel = &self.fused.fused.kernels[index];
        let input = *kernel
            .inputs
            .first()
            .ok_or_else(|| RuntimeError::Invalid(format!("{} has no input", kernel.name)))?;
        let mut scale_shift = compiled.scale_shift.iter();
        let mut slots: Vec<*mut f32> = Vec::with_capacity(compiled.args.len());
        for arg in &compiled.args {
            let pointer = match arg {
                Arg::Input => storage.pointer(input)?,
                Arg::Output => storage.pointer(kernel.output)?,
                Arg::AddInput(tensor) | Arg::ConcatInput(tensor) => storage.pointer(*tensor)?,
                Arg::PooledOutput => {
                    let pool = compiled.pools.and_then(|p| self.fused.fused.kernels.get(p));
                    let pool = pool.ok_or_else(|| codegen_error("no pool to write".into()))?;
                    storage.pointer(pool.output)?
                }
                Arg::PackedWeights => compiled.packed_weights.as_ptr().cast_mut(),
                Arg::Bias => compiled.bias.as_ptr().cast_mut(),
                Arg::Scale { .. } | Arg::Shift { .. } => scale_shift
                    .next()
                    .map(|v| v.as_ptr().cast_mut())
                    .ok_or_else(|| codegen_error("a scale or shift is missing".into()))?,
                Arg::Scratch => std::ptr::null_mut(),
                Arg::Tile => match self.microkernel {
                    Some(microkernel) => microkernel.tile as *mut f32,
                    None => return Err(codegen_error("a kernel calls a tile, but none".into())),
                },
                Arg::Gemv => match self.weights_stay_in_l2 {
                    true => super::gemv::gemv_resident as *mut f32,
                    false => super::gemv::gemv as *mut f32,
                },
                Arg::Pow => pow as *mut f32,
                Arg::Tanh => super::activation::tanh as *mut f32,
                Arg::Sigmoid => super::activation::sigmoid as *mut f32,
                Arg::WinogradInput { m, r } => {
                    super::winograd::input_transform(*m, *r).ok_or_else(|| {
                        codegen_error(format!("no input transform for F({m}x{m},{r}x{r})"))
                    })? as *mut f32
                }
                Arg::WinogradOutput { m, r } => super::winograd::output_transform(*m, *r)
                    .ok_or_else(|| {
                        codegen_error(format!("no output transform for F({m}x{m},{r}x{r})"))
                    })? as *mut f32,
            };
            slots.push(pointer);
        }
        Ok(slots)
    }
}

/// How many times each thread comes back for more chunks, at most: kernels cut per
/// channel (pools, LRN, element-wise rows) have hundreds of chunks of tens of
/// nanoseconds, and taking them one at a time moved the shared counter's cache line
/// between the cores at every chunk (Inception-v3's 8x8 average pool over 2048
/// channels took twice as long on two threads as on one).
const TAKES_PER_THREAD: usize = 8;

/// The work (`cpu::kernel_work`'s units) of a chunk taken by itself: VGG-16's first
/// layer has 112 chunks of 0.77 M; a channel of the classic networks' pools and LRNs is
/// at most a quarter of this (GoogLeNet's 56x56 LRN: 66 K).
const WORK_PER_TAKE: u64 = 262_144;

/// The chunks a thread takes at once for a kernel of `work` in all: one where a chunk
/// is worth `WORK_PER_TAKE` (a convolution's, so that its threads finish together),
/// else as many as let each thread come back `TAKES_PER_THREAD` times. Fewer, longer
/// runs of channels also keep an LRN's threads from reading each other's neighbour
/// channels: its 192x56x56 layer took 0.39 ms on two threads in runs of 5 channels
/// and 0.22 in runs of 12.
fn chunks_per_take(chunks: usize, threads: usize, work: u64) -> usize {
    if work / chunks.max(1) as u64 >= WORK_PER_TAKE {
        return 1;
    }
    (chunks / (threads.max(1) * TAKES_PER_THREAD)).max(1)
}

/// Runs one kernel: its chunks over the team's threads. Each thread has an even,
/// contiguous share of them, which it takes in order, and then helps with what is
/// left of the others' (so a thread the machine slows down leaves more of its work to
/// the others). Shares rather than one queue of chunks: consecutive kernels cut by
/// rows (or channels, for pools and LRN) then give each thread much of what it wrote
/// itself, in its own L2, where taking the next chunk from one counter scattered them
/// over both cores (ResNet-50's 56x56 and 112x112 layers 3-6% faster on two threads,
/// GoogLeNet's pools and LRNs 10-30%). Except where the chunks are parts of one
/// span's channels (`cuts_channels`): there the threads take them in turn, as
/// before, since contiguous shares made such layers (Inception-v3's at 8x8,
/// ResNet-50's at 14x14) 5-20% slower. Allocates nothing.
fn call(compiled: &Compiled, calls: &Calls, batch: usize, team: Option<&Team>) {
    let chunks = compiled.chunks;
    let run = |slots: &[*mut f32], (begin, end): (usize, usize)| {
        // SAFETY: every pointer is what the generated code expects in its slot: the
        // plan's buffers for `batch` samples (sizes checked when the storage was
        // made), the packed weights, and this thread's own scratch, sized by the
        // compiler's geometry. Threads write disjoint chunks of the output.
        unsafe { (compiled.function)(slots.as_ptr(), batch as i64, begin as i64, end as i64) }
    };
    match (team, calls.slots.as_slice()) {
        (Some(team), [_, _, ..]) => {
            let threads = calls.slots.len();
            let shares = Shares::new(&calls.next, chunks, threads, compiled.cuts_channels);
            let take = calls.take.max(1);
            team.run(threads, &|thread| {
                shares.take(thread, take, |range| run(&calls.slots[thread], range));
            });
        }
        (_, [first, ..]) => run(first, (0, chunks)),
        (_, []) => {}
    }
}

/// How a kernel's chunks are shared: `shares` contiguous shares, one counter each, as
/// even as they go.
struct Shares<'a> {
    next: &'a [NextChunk],
    chunks: usize,
    shares: usize,
}

impl<'a> Shares<'a> {
    /// One share a thread, or one for all where the chunks cut channels; the counters
    /// set to each share's start.
    fn new(next: &'a [NextChunk], chunks: usize, threads: usize, cuts_channels: bool) -> Self {
        let shares = if cuts_channels {
            1
        } else {
            threads.min(next.len()).max(1)
        };
        let this = Shares {
            next,
            chunks,
            shares,
        };
        for (owner, counter) in next.iter().take(shares).enumerate() {
            counter.0.store(this.range(owner).0, Ordering::Relaxed);
        }
        this
    }

    fn range(&self, owner: usize) -> (usize, usize) {
        let at = |share: usize| share * self.chunks / self.shares;
        (at(owner), at(owner + 1))
    }

    /// `run` over runs of at most `take` chunks for `thread`: its own share in order,
    /// then what is left of the others'.
    fn take(&self, thread: usize, take: usize, mut run: impl FnMut((usize, usize))) {
        for owner in (0..self.shares).map(|i| (thread + i) % self.shares) {
            let end = self.range(owner).1;
            loop {
                let chunk = self.next[owner].0.fetch_add(take, Ordering::Relaxed);
                if chunk >= end {
                    break;
                }
                run((chunk, (chunk + take).min(end)));
            }
        }
    }
}

/// What code is generated for on this machine: the tile `CNNC_TILE` asks for (the
/// best precompiled one by default), and the host ISA that compiles it.
pub fn host_target(threads: usize) -> Result<(CpuTarget, cranelift_codegen::isa::OwnedTargetIsa)> {
    let options = Options::from_env(threads);
    target_for(
        threads,
        options.tile,
        options.tile_epilogue,
        options.winograd_helpers,
    )
}

fn target_for(
    threads: usize,
    tile: TileChoice,
    tile_epilogue: bool,
    winograd_helpers: bool,
) -> Result<(CpuTarget, cranelift_codegen::isa::OwnedTargetIsa)> {
    let (mr, nr) = match tile.precompiled() {
        Some(microkernel) => (microkernel.mr as u64, microkernel.nr as u64),
        None => (tile::MR, tile::NR),
    };
    let isa = native_isa(Tier::Optimizing)?;
    let target = CpuTarget {
        mr,
        nr,
        kc: KC as u64,
        threads: threads.max(1) as u64,
        tile_epilogue,
        // With the tile generated, the whole of the code is Cranelift's: the cross-check.
        activation_helpers: tile.precompiled().is_some(),
        // The transforms write up to sixteen columns at a time into panels at least as
        // wide.
        winograd_helpers: winograd_helpers
            && tile.precompiled().is_some()
            && nr >= cpu::WINOGRAD_HELPER_LANES
            && super::winograd::input_transform(4, 3).is_some(),
        exact_edges: tile.precompiled().is_some(),
        frontend: isa.frontend_config(),
    };
    Ok((target, isa))
}

/// The module of a program that compiled something.
fn finalized(module: &Option<JITModule>) -> Result<&JITModule> {
    module
        .as_ref()
        .ok_or_else(|| codegen_error("no module: nothing was compiled".into()))
}

/// Whether the ISA compiles `fma` to one instruction.
fn has_fma(isa: &dyn cranelift_codegen::isa::TargetIsa) -> bool {
    isa.isa_flags()
        .iter()
        .any(|flag| flag.name == "has_fma" && flag.as_bool() == Some(true))
}

/// The generated tile, defined in `module` beside the kernels.
fn define_tile(module: &mut JITModule, target: &CpuTarget, fma: bool) -> Result<FuncId> {
    let function = tile::generate(target.frontend, fma);
    let id = module
        .declare_function("tile", Linkage::Local, &function.signature)
        .map_err(|e| codegen_error(format!("tile: {e}")))?;
    let mut context = module.make_context();
    context.func = function;
    module
        .define_function(id, &mut context)
        .map_err(|e| codegen_error(format!("tile: {e:?}")))?;
    Ok(id)
}

fn generated_microkernel(module: &JITModule, id: FuncId, fma: bool) -> Microkernel {
    let pointer = module.get_finalized_function(id);
    Microkernel {
        name: if fma {
            "cranelift f32x4 fma"
        } else {
            "cranelift f32x4"
        },
        mr: tile::MR as usize,
        nr: tile::NR as usize,
        // SAFETY: `tile::generate` builds exactly the microkernels' C ABI.
        tile: unsafe { std::mem::transmute::<*const u8, super::microkernel::TileFn>(pointer) },
    }
}

/// How hard Cranelift works on a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    /// No IR optimisation and the single-pass register allocator: a third of the
    /// compile time, for kernels whose run takes microseconds.
    Baseline,
    /// The e-graph optimisations and the backtracking allocator.
    Optimizing,
}

/// A kernel that runs once is compiled by the baseline tier when its work
/// (`cpu::kernel_work`'s units per sample, about a multiply-add each) is less than
/// this many times its IR instructions. The optimizer took about 2.4 us more per IR
/// instruction (LeNet-5's 2.2 k: 8.0 ms against 2.7), and baseline code ran up to
/// twice as long at about 0.2 ns a unit (ResNet-50's global pool over 100 k: 35 us
/// against 19): optimizing pays back in one run from about 12 k units an instruction.
const BASELINE_WORK_PER_INSTRUCTION: u64 = 10_000;

impl Tier {
    /// The tier for a kernel of `work` (per sample) compiled as `function`, run `runs`.
    fn choose(runs: Runs, work: u64, function: &Function) -> Tier {
        let instructions = function.dfg.num_insts() as u64;
        match runs {
            Runs::Once { samples }
                if work.saturating_mul(samples as u64)
                    < instructions.saturating_mul(BASELINE_WORK_PER_INSTRUCTION) =>
            {
                Tier::Baseline
            }
            _ => Tier::Optimizing,
        }
    }
}

/// What the baseline tier takes to compile a function: a fixed part and a part per IR
/// instruction, in nanoseconds. Measured on LeNet-5's eight functions (69 to 672
/// instructions: 50 us to 0.44 ms each on the Xeon).
const BASELINE_COMPILE_NANOSECONDS: (u64, u64) = (30_000, 600);

/// What compiling a program's kernels made: their functions (in the module), the tile
/// they call, their packed weights and argument slots; nothing at all for a program
/// whose every kernel is interpreted.
struct Generated {
    module: Option<JITModule>,
    kernels: Vec<Option<Compiled>>,
    /// `Program::in_producer`.
    in_producer: Vec<Option<usize>>,
    microkernel: Option<Microkernel>,
    distinct_functions: usize,
    baseline_functions: usize,
    /// Kernels generated but then left to the reference kernels, which run them sooner
    /// than Cranelift would compile them.
    interpreted: usize,
    weights_stay_in_l2: bool,
    scratch_floats: usize,
    /// When compilation ended, from the program's start.
    compiled_at: Duration,
}

impl Generated {
    fn nothing(kernels: usize, now: Duration) -> Generated {
        Generated {
            module: None,
            kernels: (0..kernels).map(|_| None).collect(),
            in_producer: vec![None; kernels],
            microkernel: None,
            distinct_functions: 0,
            baseline_functions: 0,
            interpreted: 0,
            weights_stay_in_l2: true,
            scratch_floats: 0,
            compiled_at: now,
        }
    }
}

/// Generates the kernels `to_generate` for `options`, compiles those worth it and
/// packs their weights (`Program::with_options`'s middle).
fn compile_kernels(
    fused: &fused::Program<'_>,
    work: &[u64],
    to_generate: &[usize],
    options: &Options,
    started: Instant,
) -> Result<Generated> {
    let Options {
        threads,
        tile,
        tile_epilogue,
        winograd_helpers,
        guard,
        runs,
        ..
    } = *options;
    let (target, isa) = target_for(threads, tile, tile_epilogue, winograd_helpers)?;
    let fma = has_fma(&*isa);
    // `cpu::kernel_threads`, from the work already computed.
    let kernel_threads: Vec<u64> = work
        .iter()
        .map(|&work| cpu::threads_for(work, threads) as u64)
        .collect();
    let mut interpreted = 0;
    let mut codes: Vec<Option<KernelCode>> = (0..fused.fused.kernels.len()).map(|_| None).collect();
    let generate = |&index: &usize| cpu::compile_one(&fused.fused, index, &target, &kernel_threads);
    for code in map_on_pool(to_generate, generate).into_iter().flatten() {
        let kernel = code.kernel;
        codes[kernel] = Some(code);
    }
    // By kernel index: whether the reference kernels finish it sooner than it compiles.
    let interpreting: Vec<bool> = (codes.iter())
        .map(|code| {
            code.as_ref().is_some_and(|code| {
                let op = &fused.fused.kernels[code.kernel].op;
                interpreting_is_sooner(runs, work[code.kernel], op, &code.function)
            })
        })
        .collect();
    // A pool that a compiled conv computes needs no code of its own.
    let mut in_producer = vec![None; codes.len()];
    for code in codes
        .iter()
        .flatten()
        .filter(|code| !interpreting[code.kernel])
    {
        if let Some(pool) = code.pools() {
            in_producer[pool] = Some(code.kernel);
        }
    }
    let codes: Vec<Option<KernelCode>> = codes
        .into_iter()
        .map(|code| {
            let code = code?;
            if in_producer[code.kernel].is_some() {
                return None;
            }
            if interpreting[code.kernel] {
                interpreted += 1;
                return None;
            }
            Some(code)
        })
        .collect();
    let generated: Vec<&KernelCode> = codes.iter().flatten().collect();
    let tiers: Vec<Tier> = generated
        .iter()
        .map(|code| Tier::choose(runs, work[code.kernel], &code.function))
        .collect();
    // No module at all where nothing is compiled (a small network run once), not
    // even for the generated tile.
    let mut module = (!generated.is_empty())
        .then(|| JITModule::new(JITBuilder::with_isa(isa, default_libcall_names())));
    let (ids, distinct_functions, baseline_functions) = match &mut module {
        Some(module) => define_all(module, &generated, &tiers)?,
        None => (Vec::new(), 0, 0),
    };
    let generated_tile = match (tile.precompiled(), &mut module) {
        (None, Some(module)) => Some(define_tile(module, &target, fma)?),
        _ => None,
    };
    if let Some(module) = &mut module {
        module
            .finalize_definitions()
            .map_err(|e| codegen_error(format!("{e}")))?;
    }
    let compiled_at = started.elapsed();
    let microkernel = match (tile.precompiled(), generated_tile) {
        (Some(precompiled), _) => Some(precompiled),
        (None, Some(id)) => Some(generated_microkernel(finalized(&module)?, id, fma)),
        (None, None) => None,
    };
    // Each kernel's weights folded and packed on its own: the layers' packing
    // loops are parallel too, but a network's many small layers are not. (Where
    // something is generated there is a tile.)
    let data = match &microkernel {
        Some(microkernel) => map_on_pool(&generated, |code| {
            kernel_data(fused, code, microkernel, &target, guard)
        })
        .into_iter()
        .collect::<Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    let weight_bytes: usize = data.iter().map(|d| d.packed_weights.len() * 4).sum();
    let weights_stay_in_l2 = weight_bytes as u64 <= cpu::L2_BYTES / 2;
    let mut kernels: Vec<Option<Compiled>> = (0..codes.len()).map(|_| None).collect();
    let mut scratch_floats = 0;
    let compiled = codes.into_iter().flatten().zip(ids).zip(data);
    for ((code, id), data) in compiled {
        let pointer = finalized(&module)?.get_finalized_function(id);
        // SAFETY: the function was generated with exactly this signature.
        let function = unsafe { std::mem::transmute::<*const u8, KernelFn>(pointer) };
        scratch_floats = scratch_floats.max(code.scratch_floats as usize);
        kernels[code.kernel] = Some(Compiled {
            function,
            chunks: code.chunks as usize,
            cuts_channels: code.cuts_channels,
            layout: code.layout,
            work: work[code.kernel],
            pools: code.pools(),
            args: code.args,
            packed_weights: data.packed_weights,
            bias: data.bias,
            scale_shift: data.scale_shift,
        });
    }
    Ok(Generated {
        module,
        kernels,
        in_producer,
        microkernel,
        distinct_functions,
        baseline_functions,
        interpreted,
        weights_stay_in_l2,
        scratch_floats,
        compiled_at,
    })
}

/// The threads a program made outside a pool splits its kernels for: the machine's
/// (its cores, or its share of them), not the pool's count, which starts the pool
/// when asked, and a network with nothing to compile never uses it.
pub fn machine_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Below this estimate of the reference kernels' time for a whole network, in
/// nanoseconds, a program that runs once compiles nothing: what compiling anything at
/// all costs (the code generators' and Cranelift's first use, their code paged in, the
/// pool's and the team's threads started) is more. Measured on the Xeon with LeNet-5's
/// `cnnc run` on batches of 8, 16 and 32 (estimates 2.0, 3.9 and 7.8 ms): 3.9, 4.9 and
/// 4.7 ms compiling its convs, 3.0, 4.6 and 7.6 interpreting it all; the estimate
/// runs a quarter over the reference kernels' time.
const COMPILER_START_NANOSECONDS: u64 = 3_000_000;

/// The kernels (by index) that a program run `runs` interprets without generating
/// their code: every kernel where the reference kernels run the whole network sooner
/// than the compiler starts, else those run sooner than the baseline tier's fixed cost
/// of a function (no code would compile sooner). None for programs that run many times.
fn interpreted_before_generating(runs: Runs, fused: &FusedGraph, work: &[u64]) -> Vec<bool> {
    let Runs::Once { samples } = runs else {
        return vec![false; fused.kernels.len()];
    };
    let interpreting: Vec<u64> = (fused.kernels.iter().zip(work))
        .map(|(kernel, &work)| {
            fused::reference_nanoseconds(&kernel.op, work.saturating_mul(samples as u64))
        })
        .collect();
    let whole_network = interpreting
        .iter()
        .fold(0u64, |sum, &t| sum.saturating_add(t));
    if whole_network < COMPILER_START_NANOSECONDS {
        return vec![true; interpreting.len()];
    }
    let (fixed, _) = BASELINE_COMPILE_NANOSECONDS;
    interpreting.iter().map(|&t| t < fixed).collect()
}

/// `f` of each item, on the pool's threads where there are several: for one or none,
/// on this thread, so that a network with nothing to compile starts no pool (its
/// threads' start and spin cost more than a small network's run).
fn map_on_pool<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync + Send) -> Vec<R> {
    match items.len() {
        0 | 1 => items.iter().map(f).collect(),
        _ => items.par_iter().map(f).collect(),
    }
}

/// Whether a kernel of `work` (per sample) and `op`, generated as `function`, is done
/// sooner by the reference kernels than by compiling it, in a program run `runs`.
/// LeNet-5's kernels all are: interpreted, its first output takes a third less time.
fn interpreting_is_sooner(runs: Runs, work: u64, op: &Op, function: &Function) -> bool {
    let Runs::Once { samples } = runs else {
        return false;
    };
    let (fixed, per_instruction) = BASELINE_COMPILE_NANOSECONDS;
    let instructions = function.dfg.num_insts() as u64;
    let compiling = fixed.saturating_add(instructions.saturating_mul(per_instruction));
    fused::reference_nanoseconds(op, work.saturating_mul(samples as u64)) < compiling
}

fn native_isa(tier: Tier) -> Result<cranelift_codegen::isa::OwnedTargetIsa> {
    let mut flags = settings::builder();
    let set = |flags: &mut settings::Builder, name: &str, value: &str| {
        flags
            .set(name, value)
            .map_err(|e| codegen_error(format!("setting {name}: {e}")))
    };
    match tier {
        Tier::Baseline => {
            set(&mut flags, "opt_level", "none")?;
            set(&mut flags, "regalloc_algorithm", "single_pass")?;
        }
        Tier::Optimizing => set(&mut flags, "opt_level", "speed")?,
    }
    set(&mut flags, "is_pic", "false")?;
    // A quarter of the compile time. The generators' output is verified in the tests
    // (`runtime/tests/generated_code.rs`), for every example.
    set(&mut flags, "enable_verifier", "false")?;
    let mut builder = cranelift_native::builder().map_err(|e| codegen_error(e.to_string()))?;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        builder
            .enable("has_fma")
            .map_err(|e| codegen_error(format!("has_fma: {e}")))?;
    }
    builder
        .finish(settings::Flags::new(flags))
        .map_err(|e| codegen_error(e.to_string()))
}

/// Defines every distinct function of `codes` in `module`, compiled on the pool's
/// threads in its tier: the function id of each code, in order, how many were
/// compiled and how many of those by the baseline tier. Kernels of the same shapes (a
/// network's repeated blocks) have the same code: each distinct function is compiled
/// once.
fn define_all(
    module: &mut JITModule,
    codes: &[&KernelCode],
    tiers: &[Tier],
) -> Result<(Vec<FuncId>, usize, usize)> {
    let keys: Vec<u64> = codes.par_iter().map(|c| body_hash(&c.function)).collect();
    // The first code with each body, and each code's index among those.
    let mut firsts: Vec<usize> = Vec::new();
    let mut by_key: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut distinct_of = Vec::with_capacity(codes.len());
    for (i, (code, key)) in codes.iter().zip(keys).enumerate() {
        let same_key = by_key.entry(key).or_default();
        let known = same_key
            .iter()
            .copied()
            .find(|&d| same_body(&codes[firsts[d]].function, &code.function));
        distinct_of.push(known.unwrap_or_else(|| {
            firsts.push(i);
            same_key.push(firsts.len() - 1);
            firsts.len() - 1
        }));
    }
    let ids = firsts
        .iter()
        .map(|&i| declare(module, codes[i]))
        .collect::<Result<Vec<_>>>()?;
    // The baseline ISA only where some function needs it (never for `Runs::Many`).
    let baseline = match tiers.contains(&Tier::Baseline) {
        true => Some(native_isa(Tier::Baseline)?),
        false => None,
    };
    let optimizing = module.isa();
    let isa_for = |i: usize| match (tiers[i], &baseline) {
        (Tier::Baseline, Some(baseline)) => &**baseline,
        _ => optimizing,
    };
    let machine_codes = firsts
        .par_iter()
        .zip(&ids)
        .map(|(&i, &id)| machine_code(isa_for(i), &codes[i].function, id))
        .collect::<Result<Vec<_>>>()?;
    for (code, &id) in machine_codes.iter().zip(&ids) {
        module
            .define_function_bytes(id, code.alignment, &code.bytes, &code.relocs)
            .map_err(|e| codegen_error(format!("{e:?}")))?;
    }
    let ids_by_code = distinct_of.iter().map(|&d| ids[d]).collect();
    let baseline = firsts
        .iter()
        .filter(|&&i| tiers[i] == Tier::Baseline)
        .count();
    Ok((ids_by_code, firsts.len(), baseline))
}

fn declare(module: &mut JITModule, code: &KernelCode) -> Result<FuncId> {
    let name = format!("kernel{}", code.kernel);
    module
        .declare_function(&name, Linkage::Local, &code.function.signature)
        .map_err(|e| codegen_error(format!("{name}: {e}")))
}

/// A function compiled for `isa`, ready to be defined as function `id`.
struct MachineCode {
    bytes: Vec<u8>,
    alignment: u64,
    relocs: Vec<ModuleReloc>,
}

fn machine_code(isa: &dyn TargetIsa, function: &Function, id: FuncId) -> Result<MachineCode> {
    let mut context = Context::for_function(function.clone());
    context
        .compile(isa, &mut ControlPlane::default())
        .map_err(|e| codegen_error(format!("{}: {:?}", function.name, e.inner)))?;
    let compiled = context
        .compiled_code()
        .ok_or_else(|| codegen_error(format!("{}: no code", function.name)))?;
    Ok(MachineCode {
        bytes: compiled.code_buffer().to_vec(),
        alignment: u64::from(compiled.buffer.alignment),
        relocs: compiled
            .buffer
            .relocs()
            .iter()
            .map(|reloc| ModuleReloc::from_mach_reloc(reloc, &context.func, id))
            .collect(),
    })
}

/// Kernels that compute the same thing on different buffers and weights (those come
/// through the argument slots) have equal function bodies: everything but the name.
fn same_body(a: &Function, b: &Function) -> bool {
    a.stencil == b.stencil && a.params == b.params
}

/// A hash of what `same_body` compares (the parameters hold only names).
fn body_hash(function: &Function) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    function.stencil.hash(&mut hasher);
    hasher.finish()
}

fn codegen_error(message: String) -> RuntimeError {
    RuntimeError::Invalid(format!("JIT code generation failed: {message}"))
}

/// The data a generated kernel reads: weights packed per group for the tile and the
/// bias (conv and dense), and each batch norm's scale and shift (epilogues, lone
/// batch norms).
struct KernelData {
    packed_weights: Floats,
    bias: Floats,
    /// Scale and shift vectors, in the order of the `Scale`/`Shift` slots.
    scale_shift: Vec<Floats>,
}

fn kernel_data(
    program: &fused::Program,
    code: &KernelCode,
    microkernel: &Microkernel,
    target: &CpuTarget,
    guard: Option<Guard>,
) -> Result<KernelData> {
    let mut scale_shift = Vec::new();
    for arg in &code.args {
        if let Arg::Scale { layer, eps } = arg {
            let (scale, shift) = batch_norm_scale_shift(program.weights, layer, *eps)?;
            scale_shift.push(Floats::from_vec(scale, guard)?);
            scale_shift.push(Floats::from_vec(shift, guard)?);
        }
    }
    let (packed_weights, bias) = match &code.geometry {
        Some(geometry) => {
            let kernel = &program.fused.kernels[code.kernel];
            let packing = Packing {
                microkernel,
                target,
                guard,
            };
            packed_weights_and_bias(kernel, program.weights, geometry, &packing)?
        }
        // A kernel without weights of its own.
        None => (Floats::zeroed(0, guard)?, Vec::new()),
    };
    Ok(KernelData {
        packed_weights,
        bias: Floats::from_vec(bias, guard)?,
        scale_shift,
    })
}

/// What weights are packed for: the tile, the target, and the buffers' guard pages.
struct Packing<'a> {
    microkernel: &'a Microkernel,
    target: &'a CpuTarget,
    guard: Option<Guard>,
}

/// A conv or dense kernel's weights packed for the tile, folded as they are read from
/// where they lie, and its bias (zeros where the layer has none).
fn packed_weights_and_bias(
    kernel: &Kernel,
    weights: &Weights,
    geometry: &Geometry,
    packing: &Packing,
) -> Result<(Floats, Vec<f32>)> {
    let rows = Rows::of(kernel, weights)?
        .ok_or_else(|| codegen_error(format!("{} has no weights", kernel.name)))?;
    let packed_weights = pack_weights(&rows, geometry, packing)?;
    if packed_weights.len() as u64 != geometry.packed_weights(packing.target) {
        return Err(codegen_error(
            "packed weights do not match the geometry".into(),
        ));
    }
    let bias = match rows.bias()? {
        Some(bias) => bias,
        None => vec![0.0; geometry.out_channels as usize],
    };
    Ok((packed_weights, bias))
}

/// Rows of dense weights copied at a time: enough to spread a large layer over the
/// threads, few enough that each copy is long.
const DENSE_ROWS_PER_COPY: usize = 64;

/// The weights packed where the kernel reads them: written straight into their
/// cache-aligned buffer (a copy of VGG-16's 400 MB dense layer cost 170 ms of load).
fn pack_weights(rows: &Rows, geometry: &Geometry, packing: &Packing) -> Result<Floats> {
    let (microkernel, target, guard) = (packing.microkernel, packing.target, packing.guard);
    let (m, k) = (geometry.m() as usize, geometry.k() as usize);
    let values = rows.count() * rows.row_len();
    if geometry.dense {
        // The matrix-vector helper reads the weights as they are: row-major [out, in].
        let mut dense = Floats::zeroed(values, guard)?;
        let block = (DENSE_ROWS_PER_COPY * rows.row_len()).max(1);
        dense
            .par_chunks_mut(block)
            .enumerate()
            .try_for_each(|(i, part)| rows.copy(i * DENSE_ROWS_PER_COPY, part))?;
        return Ok(dense);
    }
    // Out x in/groups x kernel area, whatever K the products take.
    let [kh, kw] = geometry.kernel;
    let expected = geometry.out_channels * geometry.channels / geometry.groups * kh * kw;
    if values as u64 != expected {
        return Err(codegen_error(format!(
            "weights hold {values} values, the geometry {expected}",
        )));
    }
    let mr = microkernel.mr;
    if let Some(transforms) = geometry.winograd_transforms() {
        // Each group's α² matrices, one group after another.
        let channels = (geometry.channels / geometry.groups) as usize;
        let group_len = super::winograd::packed_len(transforms, m, channels, mr);
        let mut packed = Floats::zeroed(geometry.groups as usize * group_len, guard)?;
        for (group, out) in packed.chunks_exact_mut(group_len.max(1)).enumerate() {
            super::winograd::pack(transforms, (m, channels, mr), out, |first, out| {
                rows.copy(group * m + first, out)
            })?;
        }
        return Ok(packed);
    }
    if geometry.pixel_major(target) {
        // The product turned over: the weights are the tile's columns, NR-channel
        // panels of the one group.
        let nr = target.nr as usize;
        let mut packed = Floats::zeroed(m.div_ceil(nr) * k * nr, guard)?;
        pack_panels(nr, m, k, &mut packed, |first, block| {
            rows.copy(first, block)
        })?;
        return Ok(packed);
    }
    let group_len = m.div_ceil(mr) * k * mr;
    let mut packed = Floats::zeroed(geometry.groups as usize * group_len, guard)?;
    for (group, out) in packed.chunks_exact_mut(group_len.max(1)).enumerate() {
        pack_panels(mr, m, k, out, |first, block| {
            rows.copy(group * m + first, block)
        })?;
    }
    Ok(packed)
}

fn batch_norm_scale_shift(
    weights: &Weights,
    layer: &str,
    eps: f64,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let get = |suffix| fused::prepare::weight(weights, layer, suffix);
    let (gamma, beta, mean, var) = (
        get("weight")?,
        get("bias")?,
        get("running_mean")?,
        get("running_var")?,
    );
    let mut scale = Vec::with_capacity(gamma.len());
    let mut shift = Vec::with_capacity(gamma.len());
    for (((g, b), m), v) in gamma.iter().zip(beta).zip(mean).zip(var) {
        let s = g / (v + eps as f32).sqrt();
        scale.push(s);
        shift.push(b - m * s);
    }
    Ok((scale, shift))
}

/// `base ^ exponent`, for an LRN whose beta has no square-root form.
extern "C" fn pow(base: f64, exponent: f64) -> f64 {
    base.powf(exponent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_take_their_own_share_first_then_help_with_the_rest() {
        for (chunks, threads, take) in [(7, 2, 1), (4, 3, 1), (100, 2, 6), (2, 3, 1), (0, 2, 1)] {
            for cuts_channels in [false, true] {
                let next: Vec<NextChunk> = (0..threads).map(|_| NextChunk::default()).collect();
                for starter in 0..threads {
                    let shares = Shares::new(&next, chunks, threads, cuts_channels);
                    let mut runs = vec![0usize; chunks];
                    let mut firsts = vec![None; threads];
                    // `starter` alone first (the others late), then the rest in turn.
                    let order = (0..threads).map(|i| (starter + i) % threads);
                    for thread in order {
                        shares.take(thread, take, |(begin, end)| {
                            assert!(begin < end && end - begin <= take && end <= chunks);
                            firsts[thread].get_or_insert(begin);
                            runs[begin..end].iter_mut().for_each(|r| *r += 1);
                        });
                    }
                    assert!(runs.iter().all(|&r| r == 1), "{chunks} chunks: {runs:?}");
                    // The first thread starts on its own share: its slice of the chunks,
                    // or all of them where the chunks cut channels.
                    let own = match cuts_channels {
                        true => 0,
                        false => starter * chunks / threads,
                    };
                    if chunks > 0 && own < chunks {
                        assert_eq!(
                            firsts[starter],
                            Some(own),
                            "{chunks} chunks, thread {starter}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn programs_run_once_take_the_runtime_transforms_wherever_the_cpu_has_them() {
        if !cpu::winograd_helpers_from_env() {
            return; // CNNC_WINOGRAD_HELPERS=0 keeps them out of both.
        }
        let available = super::super::winograd::input_transform(4, 3).is_some();
        let faster = super::super::winograd::transforms_are_faster();
        assert!(!faster || available);
        assert!(Options::once_from_env(1, 1).winograd_helpers);
        assert_eq!(Options::from_env(1).winograd_helpers, faster);
        let (once, _) = target_for(1, TileChoice::Auto, true, true).expect("a target");
        let (many, _) = target_for(1, TileChoice::Auto, true, faster).expect("a target");
        let wide = |target: &CpuTarget| target.nr >= cpu::WINOGRAD_HELPER_LANES;
        assert_eq!(once.winograd_helpers, available && wide(&once));
        assert_eq!(many.winograd_helpers, faster && wide(&many));
    }

    #[test]
    fn small_networks_run_once_are_interpreted_before_any_code_is_generated() {
        let lenet = crate::checked_network(include_str!("../../../examples/lenet5.cnn"));
        let fused = passes::fuse(&lenet);
        let work: Vec<u64> = (0..fused.kernels.len())
            .map(|index| cpu::kernel_work(&lenet, &fused, index))
            .collect();
        let interpreted = |runs| interpreted_before_generating(runs, &fused, &work);
        // One sample: the whole network interprets sooner than the compiler starts.
        assert!(interpreted(Runs::Once { samples: 1 }).iter().all(|&i| i));
        // 16 samples: only the kernels quicker interpreted than any function compiles
        // (the last dense layer and the softmax) are left out of generation.
        let many_samples = interpreted(Runs::Once { samples: 16 });
        let kinds: Vec<_> = (fused.kernels.iter().zip(&many_samples))
            .filter(|(_, interpreted)| **interpreted)
            .map(|(kernel, _)| kernel.op.kind())
            .collect();
        assert!(
            !kinds.is_empty() && kinds.len() < fused.kernels.len(),
            "{kinds:?}"
        );
        assert!(kinds.iter().all(|kind| *kind != "conv"), "{kinds:?}");
        // Run many times, every kernel is generated.
        assert!(interpreted(Runs::Many).iter().all(|&i| !i));
    }

    #[test]
    fn threads_take_many_fine_chunks_at_once_and_coarse_ones_singly() {
        // Inception-v3's last average pool: 2048 channels of 9 x 64 = 576 units, 8
        // takes of 128 a thread; GoogLeNet's second LRN: 192 channels, 12 a take.
        assert_eq!(chunks_per_take(2048, 2, 2048 * 576), 128);
        assert_eq!(chunks_per_take(192, 2, 192 * 3136 * 21), 12);
        // A convolution's chunks are each worth a take: one at a time, however many
        // (VGG-16's first layers have a hundred).
        assert_eq!(chunks_per_take(112, 2, 112 * 774_144), 1);
        assert_eq!(chunks_per_take(6, 2, 6 * 1_000_000), 1);
        // Degenerate counts stay at one.
        assert_eq!(chunks_per_take(0, 2, 0), 1);
        assert_eq!(chunks_per_take(100, 0, 0), 12);
    }
}
