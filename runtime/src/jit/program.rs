//! The JIT backend: the compiler's fused graph, every kernel compiled by Cranelift into
//! a shape-specialized function (conv and dense calling the register tile), run over
//! the memory plan's buffers. A kernel the compiler has no generator for would run on
//! the reference kernels through the fused executor; `on_reference_path` lists any.
//!
//! The steady state allocates nothing but the output: the buffers, the threads'
//! scratch and every kernel's argument slots are kept from one run to the next of the
//! same batch size.

use super::gemm::{KC, PackedA};
use super::guarded::{Floats, Guard};
use super::microkernel::Microkernel;
use crate::Tensor;
use crate::error::{Result, RuntimeError};
use crate::fused::{self, Storage};
use crate::weights::Weights;
use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::codegen::cpu::tile;
use cnnc_compiler::codegen::cpu::{self, Arg, CpuTarget, Geometry, KernelCode};
use cnnc_compiler::passes::{self, WinogradPolicy};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};
use rayon::prelude::*;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Mutex;
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
    microkernel: Microkernel,
    scratch_floats: usize,
    threads: usize,
    distinct_functions: usize,
    /// What the last run used, for the next run of the same batch size.
    cache: Mutex<Option<Cache>>,
    /// Bounds-checked mode: the guard every run's buffers and scratch are mapped against.
    guard: Option<Guard>,
    /// Owns the generated code: the function pointers live as long as it does.
    _module: JITModule,
    pub compile_time: Duration,
    /// Where `compile_time` went.
    pub phases: Phases,
}

/// The phases of `Program::with_threads`, timed apart so that `cnnc bench` can report
/// compilation and weight preparation separately.
#[derive(Clone, Copy, Debug, Default)]
pub struct Phases {
    /// `fused::Program::new`: the passes, the memory plan, and folding the weights
    /// (batch norms into convs), which it does together.
    pub fuse_and_fold: Duration,
    /// Generating the kernels and compiling them with Cranelift.
    pub codegen: Duration,
    /// Packing the weights into the tile's panels.
    pub pack: Duration,
}

/// How a program is compiled: the threads its kernels are split for, the register tile,
/// and where Winograd is used.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub threads: usize,
    pub tile: TileChoice,
    pub winograd: WinogradPolicy,
    /// Bounds-checked mode: every buffer the generated code touches is mapped against
    /// this guard page, so code that strays past one faults instead of corrupting
    /// another.
    pub guard: Option<Guard>,
}

impl Options {
    /// `threads`, with the tile and the Winograd policy the environment asks for
    /// (`CNNC_TILE`, `CNNC_WINOGRAD`), the best ones by default.
    pub fn from_env(threads: usize) -> Options {
        Options {
            threads,
            tile: TileChoice::from_env(),
            winograd: WinogradPolicy::from_env(),
            guard: None,
        }
    }
}

/// A run's buffers and scratch, and every generated kernel's calls into them.
struct Cache {
    batch: usize,
    buffers: Vec<Floats>,
    /// One scratch area a thread.
    scratch: Vec<Floats>,
    /// By kernel index: one call per thread's share of the chunks (none for a kernel
    /// on the reference path).
    calls: Vec<Vec<Call>>,
}

/// One thread's call of a kernel: its chunks and its argument slots.
struct Call {
    chunks: (usize, usize),
    slots: Vec<*mut f32>,
}

// SAFETY: the slots point into the buffers and scratch of the `Cache` that holds them
// (whose heap storage does not move with it) and at the program's weights and
// helpers; a cache is used by one run at a time, behind the program's mutex.
unsafe impl Send for Cache {}
// SAFETY: generated code only reads the slot arrays; threads running one kernel write
// disjoint chunks of its output and their own scratch.
unsafe impl Sync for Call {}

/// A generated kernel and the data its argument slots point at.
struct Compiled {
    function: KernelFn,
    chunks: usize,
    /// Per sample, what decides how many threads the kernel is worth
    /// (`cpu::kernel_work`).
    work: u64,
    args: Vec<Arg>,
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

    /// As `new`, splitting each generated kernel over `threads` threads.
    pub fn with_threads(
        net: &'a CheckedGraph,
        weights: &'a Weights,
        threads: usize,
    ) -> Result<Self> {
        Self::with_options(net, weights, Options::from_env(threads))
    }

    /// As `with_threads`, in bounds-checked mode (`Options::guard`).
    pub fn bounds_checked(
        net: &'a CheckedGraph,
        weights: &'a Weights,
        threads: usize,
        guard: Guard,
    ) -> Result<Self> {
        let options = Options {
            guard: Some(guard),
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
            tile,
            winograd,
            guard,
        } = options;
        let started = Instant::now();
        let threads = threads.max(1);
        let mut fused = fused::Program::new(net, weights)?;
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
        let (target, isa) = target_for(threads, tile)?;
        let fma = has_fma(&*isa);
        let codes = cpu::compile(
            &fused.fused,
            &target,
            &cpu::kernel_threads(net, &fused.fused, threads),
        );
        let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        // Kernels of the same shapes (a network's repeated blocks) have the same code:
        // each distinct function is compiled once.
        let mut defined: HashMap<String, FuncId> = HashMap::new();
        let mut ids = Vec::new();
        for code in codes.iter().flatten() {
            let id = match defined.entry(body_text(&code.function)) {
                Entry::Occupied(known) => *known.get(),
                Entry::Vacant(new) => *new.insert(define(&mut module, code)?),
            };
            ids.push((code.kernel, id));
        }
        let generated_tile = match tile.precompiled() {
            Some(_) => None,
            None => Some(define_tile(&mut module, &target, fma)?),
        };
        module
            .finalize_definitions()
            .map_err(|e| codegen_error(format!("{e}")))?;
        let compiled_at = started.elapsed();
        let microkernel = match (tile.precompiled(), generated_tile) {
            (Some(precompiled), _) => precompiled,
            (None, Some(id)) => generated_microkernel(&module, id, fma),
            (None, None) => {
                return Err(codegen_error(
                    "no register tile: none precompiled and none generated".into(),
                ));
            }
        };
        let mut kernels: Vec<Option<Compiled>> = (0..codes.len()).map(|_| None).collect();
        let mut scratch_floats = 0;
        for (code, (index, id)) in codes.into_iter().flatten().zip(ids) {
            let pointer = module.get_finalized_function(id);
            // SAFETY: the function was generated with exactly this signature.
            let function = unsafe { std::mem::transmute::<*const u8, KernelFn>(pointer) };
            scratch_floats = scratch_floats.max(code.scratch_floats as usize);
            kernels[index] = Some(compiled(
                &fused,
                index,
                code,
                function,
                &microkernel,
                &target,
                guard,
            )?);
            if kernels[index]
                .as_ref()
                .is_some_and(|c| !c.packed_weights.is_empty())
            {
                // Packed now: the fused executor's copy would only double the memory.
                fused.prepared[index] = None;
            }
        }
        let compile_time = started.elapsed();
        Ok(Program {
            distinct_functions: defined.len(),
            fused,
            kernels,
            microkernel,
            scratch_floats,
            threads,
            cache: Mutex::new(None),
            guard,
            _module: module,
            compile_time,
            phases: Phases {
                fuse_and_fold: fused_at,
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

    /// How many kernels run generated code, of how many.
    pub fn generated(&self) -> (usize, usize) {
        (self.kernels.iter().flatten().count(), self.kernels.len())
    }

    /// The kernels that run on the reference path (no generated code), by name and op.
    pub fn on_reference_path(&self) -> Vec<String> {
        let fused = &self.fused.fused;
        self.kernels
            .iter()
            .zip(&fused.kernels)
            .filter(|(compiled, _)| compiled.is_none())
            .map(|(_, kernel)| format!("{} ({})", kernel.name, kernel.op.kind()))
            .collect()
    }

    pub fn microkernel(&self) -> Microkernel {
        self.microkernel
    }

    /// Runs the network on `inputs` (one per network input, batch-first).
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Tensor> {
        self.execute(&inputs, |_, _| {})
    }

    /// Runs the network and times each kernel of the fused graph.
    pub fn run_profiled(&self, inputs: Vec<Tensor>) -> Result<(Tensor, Vec<Duration>)> {
        let mut times = Vec::with_capacity(self.kernels.len());
        let output = self.execute(&inputs, |_, time| times.push(time))?;
        Ok((output, times))
    }

    /// The fused graph the program runs: its kernels are what `run_profiled` times.
    pub fn fused(&self) -> &cnnc_compiler::passes::FusedGraph {
        &self.fused.fused
    }

    /// Runs every kernel, telling `timed` how long each took. The buffers, scratch and
    /// slots come from the cache when the last run had this batch size (a run while
    /// another holds the cache makes its own).
    fn execute(&self, inputs: &[Tensor], mut timed: impl FnMut(usize, Duration)) -> Result<Tensor> {
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
        for (index, kernel) in self.kernels.iter().enumerate() {
            let started = Instant::now();
            match kernel {
                Some(compiled) => call(compiled.function, &calls[index], batch),
                None => self.fused.run_kernel(index, &mut storage)?,
            }
            timed(index, started.elapsed());
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

    /// Every generated kernel's calls for `storage`'s batch: its chunks split over the
    /// threads, each part with its argument slots (buffer pointers with channel
    /// offsets of concat slices applied, and its thread's share of `scratch`).
    fn calls(&self, storage: &mut Storage, scratch: &mut [Floats]) -> Result<Vec<Vec<Call>>> {
        let mut all = Vec::with_capacity(self.kernels.len());
        for (index, kernel) in self.kernels.iter().enumerate() {
            let Some(compiled) = kernel else {
                all.push(Vec::new());
                continue;
            };
            let slots = self.slots(index, compiled, storage)?;
            let scratch_slot = compiled.args.iter().position(|a| *a == Arg::Scratch);
            let work = compiled.work.saturating_mul(storage.batch() as u64);
            let parts = split(compiled.chunks, cpu::threads_for(work, self.threads))
                .into_iter()
                .zip(scratch.iter_mut())
                .map(|(chunks, scratch)| {
                    let mut slots = slots.clone();
                    if let Some(slot) = scratch_slot {
                        slots[slot] = scratch.as_mut_ptr();
                    }
                    Call { chunks, slots }
                })
                .collect();
            all.push(parts);
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
                Arg::PackedWeights => compiled.packed_weights.as_ptr().cast_mut(),
                Arg::Bias => compiled.bias.as_ptr().cast_mut(),
                Arg::Scale { .. } | Arg::Shift { .. } => scale_shift
                    .next()
                    .map(|v| v.as_ptr().cast_mut())
                    .ok_or_else(|| codegen_error("a scale or shift is missing".into()))?,
                Arg::Scratch => std::ptr::null_mut(),
                Arg::Tile => self.microkernel.tile as *mut f32,
                Arg::Gemv => super::gemv::gemv as *mut f32,
                Arg::Pow => pow as *mut f32,
            };
            slots.push(pointer);
        }
        Ok(slots)
    }
}

/// Runs one kernel: its calls over the pool's threads (one call on this thread).
/// Allocates nothing.
fn call(function: KernelFn, calls: &[Call], batch: usize) {
    let run = |call: &Call| {
        // SAFETY: every pointer is what the generated code expects in its slot: the
        // plan's buffers for `batch` samples (sizes checked when the storage was
        // made), the packed weights, and this thread's own scratch, sized by the
        // compiler's geometry. Threads write disjoint chunks of the output.
        unsafe {
            function(
                call.slots.as_ptr(),
                batch as i64,
                call.chunks.0 as i64,
                call.chunks.1 as i64,
            )
        }
    };
    match calls {
        [one] => run(one),
        _ => calls.par_iter().for_each(run),
    }
}

/// What code is generated for on this machine: the tile `CNNC_TILE` asks for (the
/// best precompiled one by default), and the host ISA that compiles it.
pub fn host_target(threads: usize) -> Result<(CpuTarget, cranelift_codegen::isa::OwnedTargetIsa)> {
    target_for(threads, TileChoice::from_env())
}

fn target_for(
    threads: usize,
    tile: TileChoice,
) -> Result<(CpuTarget, cranelift_codegen::isa::OwnedTargetIsa)> {
    let (mr, nr) = match tile.precompiled() {
        Some(microkernel) => (microkernel.mr as u64, microkernel.nr as u64),
        None => (tile::MR, tile::NR),
    };
    let isa = native_isa()?;
    let target = CpuTarget {
        mr,
        nr,
        kc: KC as u64,
        threads: threads.max(1) as u64,
        frontend: isa.frontend_config(),
    };
    Ok((target, isa))
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

/// `[0, chunks)` in `threads` contiguous ranges, as even as they go; no empty ones.
fn split(chunks: usize, threads: usize) -> Vec<(usize, usize)> {
    let parts = threads.clamp(1, chunks.max(1));
    (0..parts)
        .map(|p| (chunks * p / parts, chunks * (p + 1) / parts))
        .collect()
}

fn native_isa() -> Result<cranelift_codegen::isa::OwnedTargetIsa> {
    let mut flags = settings::builder();
    let set = |flags: &mut settings::Builder, name: &str, value: &str| {
        flags
            .set(name, value)
            .map_err(|e| codegen_error(format!("setting {name}: {e}")))
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "is_pic", "false")?;
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

fn define(module: &mut JITModule, code: &KernelCode) -> Result<cranelift_module::FuncId> {
    let name = format!("kernel{}", code.kernel);
    let id = module
        .declare_function(&name, Linkage::Local, &code.function.signature)
        .map_err(|e| codegen_error(format!("{name}: {e}")))?;
    let mut context = module.make_context();
    context.func = code.function.clone();
    module
        .define_function(id, &mut context)
        .map_err(|e| codegen_error(format!("{name}: {e:?}")))?;
    Ok(id)
}

/// A function's instructions without its name: equal for kernels that compute the same
/// thing on different buffers and weights (those come through the argument slots).
fn body_text(function: &cranelift_codegen::ir::Function) -> String {
    let mut unnamed = function.clone();
    unnamed.name = cranelift_codegen::ir::UserFuncName::default();
    unnamed.display().to_string()
}

fn codegen_error(message: String) -> RuntimeError {
    RuntimeError::Invalid(format!("JIT code generation failed: {message}"))
}

/// The data a generated kernel reads: weights packed per group for the tile and the
/// bias (conv and dense), and each batch norm's scale and shift (epilogues, lone
/// batch norms).
fn compiled(
    program: &fused::Program,
    index: usize,
    code: KernelCode,
    function: KernelFn,
    microkernel: &Microkernel,
    target: &CpuTarget,
    guard: Option<Guard>,
) -> Result<Compiled> {
    let mut scale_shift = Vec::new();
    for arg in &code.args {
        if let Arg::Scale { layer, eps } = arg {
            let (scale, shift) = batch_norm_scale_shift(program.weights, layer, *eps)?;
            scale_shift.push(Floats::from_vec(scale, guard)?);
            scale_shift.push(Floats::from_vec(shift, guard)?);
        }
    }
    let (packed_weights, bias) = match &code.geometry {
        Some(geometry) => packed_weights_and_bias(program, index, geometry, microkernel, target)?,
        // A kernel without weights of its own.
        None => (Vec::new(), Vec::new()),
    };
    Ok(Compiled {
        function,
        chunks: code.chunks as usize,
        work: cpu::kernel_work(program.net, &program.fused, index),
        args: code.args,
        packed_weights: Floats::from_vec(packed_weights, guard)?,
        bias: Floats::from_vec(bias, guard)?,
        scale_shift,
    })
}

/// A conv or dense kernel's weights packed for the tile, and its bias (zeros where
/// the layer has none).
fn packed_weights_and_bias(
    program: &fused::Program,
    index: usize,
    geometry: &Geometry,
    microkernel: &Microkernel,
    target: &CpuTarget,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let prepared = program.prepared[index]
        .as_ref()
        .ok_or_else(|| codegen_error(format!("kernel {index} has no weights")))?;
    let packed_weights = pack_weights(&prepared.weight, geometry, microkernel)?;
    if packed_weights.len() as u64 != geometry.packed_weights(target) {
        return Err(codegen_error(
            "packed weights do not match the geometry".into(),
        ));
    }
    let bias = match &prepared.bias {
        Some(bias) => bias.iter().copied().collect(),
        None => vec![0.0; geometry.out_channels as usize],
    };
    Ok((packed_weights, bias))
}

fn pack_weights(
    weight: &Tensor,
    geometry: &Geometry,
    microkernel: &Microkernel,
) -> Result<Vec<f32>> {
    let weight = weight.as_standard_layout();
    let values = weight
        .as_slice()
        .ok_or_else(|| codegen_error("weights are not contiguous".into()))?;
    let (m, k) = (geometry.m() as usize, geometry.k() as usize);
    if geometry.dense {
        // The matrix-vector helper reads the weights as they are: row-major [out, in].
        return Ok(values.to_vec());
    }
    // Out x in/groups x kernel area, whatever K the products take.
    let [kh, kw] = geometry.kernel;
    let expected = geometry.out_channels * geometry.channels / geometry.groups * kh * kw;
    if values.len() as u64 != expected {
        return Err(codegen_error(format!(
            "weights hold {} values, the geometry {expected}",
            values.len(),
        )));
    }
    if let Some(transforms) = geometry.winograd.and_then(cpu::transforms) {
        let channels = geometry.channels as usize;
        return Ok(super::winograd::pack(
            transforms,
            values,
            m,
            channels,
            microkernel,
        ));
    }
    let mut packed = Vec::new();
    for group in values.chunks_exact((m * k).max(1)) {
        packed.extend_from_slice(PackedA::new(microkernel, group, m, k).data());
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
