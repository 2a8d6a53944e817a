//! The JIT backend: the compiler's fused graph, with its conv, dense, pooling and LRN
//! kernels compiled by Cranelift into shape-specialized functions (calling the
//! microkernel for the register tile), run over the memory plan's buffers. The other
//! kernels (softmax, adaptive pooling, copying concats and adds, lone batch norms and
//! activations) still run on the reference kernels, through the fused executor, until
//! code is generated for them too.

use super::gemm::{KC, PackedA};
use super::guarded::{Floats, Guard};
use super::microkernel::Microkernel;
use crate::Tensor;
use crate::error::{Result, RuntimeError};
use crate::fused::{self, Storage};
use crate::weights::Weights;
use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::codegen::cpu::{self, Arg, CpuTarget, Geometry, KernelCode};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};
use std::time::{Duration, Instant};

type KernelFn = unsafe extern "C" fn(*const *mut f32, i64, i64, i64);

/// A network compiled for the JIT backend.
pub struct Program<'a> {
    fused: fused::Program<'a>,
    kernels: Vec<Option<Compiled>>,
    microkernel: Microkernel,
    scratch_floats: usize,
    threads: usize,
    /// Bounds-checked mode: every buffer the generated code touches against this guard.
    guard: Option<Guard>,
    /// Owns the generated code: the function pointers live as long as it does.
    _module: JITModule,
    pub compile_time: Duration,
}

/// A generated kernel and the data its argument slots point at.
struct Compiled {
    function: KernelFn,
    chunks: usize,
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
        Self::with_guard(net, weights, threads, None)
    }

    /// As `with_threads`, in bounds-checked mode: activations, scratch areas, packed
    /// weights, biases and scales are each mapped against a `guard` page, so generated
    /// code that strays past one faults instead of corrupting another.
    pub fn bounds_checked(
        net: &'a CheckedGraph,
        weights: &'a Weights,
        threads: usize,
        guard: Guard,
    ) -> Result<Self> {
        Self::with_guard(net, weights, threads, Some(guard))
    }

    fn with_guard(
        net: &'a CheckedGraph,
        weights: &'a Weights,
        threads: usize,
        guard: Option<Guard>,
    ) -> Result<Self> {
        let started = Instant::now();
        let threads = threads.max(1);
        let mut fused = fused::Program::new(net, weights)?;
        let microkernel = Microkernel::best();
        let (target, isa) = host_target(threads)?;
        let codes = cpu::compile(&fused.fused, &target);
        let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        let mut ids = Vec::new();
        for code in codes.iter().flatten() {
            ids.push((code.kernel, define(&mut module, code)?));
        }
        module
            .finalize_definitions()
            .map_err(|e| codegen_error(format!("{e}")))?;
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
        Ok(Program {
            fused,
            kernels,
            microkernel,
            scratch_floats,
            threads,
            guard,
            _module: module,
            compile_time: started.elapsed(),
        })
    }

    /// How many kernels run generated code, of how many.
    pub fn generated(&self) -> (usize, usize) {
        (self.kernels.iter().flatten().count(), self.kernels.len())
    }

    pub fn microkernel(&self) -> Microkernel {
        self.microkernel
    }

    /// Runs the network on `inputs` (one per network input, batch-first).
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Tensor> {
        Ok(self.run_profiled(inputs)?.0)
    }

    /// Runs the network and times each kernel of the fused graph.
    pub fn run_profiled(&self, inputs: Vec<Tensor>) -> Result<(Tensor, Vec<Duration>)> {
        let mut storage = self.fused.start_guarded(&inputs, self.guard)?;
        // At least one float a thread, so that every thread has its (possibly unused) share.
        let mut scratch = (0..self.threads)
            .map(|_| Floats::zeroed(self.scratch_floats.max(1), self.guard))
            .collect::<Result<Vec<_>>>()?;
        let mut times = Vec::with_capacity(self.kernels.len());
        for (index, kernel) in self.kernels.iter().enumerate() {
            let started = Instant::now();
            match kernel {
                Some(compiled) => self.call(index, compiled, &mut storage, &mut scratch)?,
                None => self.fused.run_kernel(index, &mut storage)?,
            }
            times.push(started.elapsed());
        }
        Ok((storage.read(self.fused.fused.output)?, times))
    }

    /// The fused graph the program runs: its kernels are what `run_profiled` times.
    pub fn fused(&self) -> &cnnc_compiler::passes::FusedGraph {
        &self.fused.fused
    }

    fn call(
        &self,
        index: usize,
        compiled: &Compiled,
        storage: &mut Storage,
        scratch: &mut [Floats],
    ) -> Result<()> {
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
                Arg::AddInput(tensor) => storage.pointer(*tensor)?,
                Arg::PackedWeights => compiled.packed_weights.as_ptr().cast_mut(),
                Arg::Bias => compiled.bias.as_ptr().cast_mut(),
                Arg::Scale { .. } | Arg::Shift { .. } => scale_shift
                    .next()
                    .map(|v| v.as_ptr().cast_mut())
                    .ok_or_else(|| codegen_error("a scale or shift is missing".into()))?,
                Arg::Scratch => scratch[0].as_mut_ptr(),
                Arg::Tile => self.microkernel.tile as *mut f32,
                Arg::Gemv => super::gemv::gemv as *mut f32,
                Arg::Pow => pow as *mut f32,
                Arg::Transcendental => transcendental as *mut f32,
            };
            slots.push(pointer);
        }
        let batch = storage.batch() as i64;
        let scratch_slot = compiled.args.iter().position(|a| *a == Arg::Scratch);
        let slots = Slots(slots);
        let function = compiled.function;
        let work = |range: (usize, usize), scratch: &mut [f32]| {
            let mut slots = slots.pointers();
            if let Some(slot) = scratch_slot {
                slots[slot] = scratch.as_mut_ptr();
            }
            // SAFETY: every pointer is what the generated code expects in its slot:
            // the plan's buffers for `batch` samples (sizes checked when the storage
            // was made), the packed weights, and this thread's own scratch, sized by
            // the compiler's geometry. Threads write disjoint chunks of the output.
            unsafe { function(slots.as_ptr(), batch, range.0 as i64, range.1 as i64) };
        };
        let ranges = split(compiled.chunks, self.threads);
        let mut scratches = scratch.iter_mut().map(|s| &mut s[..]);
        if ranges.len() == 1 {
            work(ranges[0], scratches.next().unwrap_or_default());
        } else {
            rayon::scope(|scope| {
                for (range, scratch) in ranges.into_iter().zip(scratches) {
                    let work = &work;
                    scope.spawn(move |_| work(range, scratch));
                }
            });
        }
        Ok(())
    }
}

/// What code is generated for on this machine: the best microkernel's tile, and the
/// host ISA that compiles it.
pub fn host_target(threads: usize) -> Result<(CpuTarget, cranelift_codegen::isa::OwnedTargetIsa)> {
    let microkernel = Microkernel::best();
    let isa = native_isa()?;
    let target = CpuTarget {
        mr: microkernel.mr as u64,
        nr: microkernel.nr as u64,
        kc: KC as u64,
        threads: threads.max(1) as u64,
        frontend: isa.frontend_config(),
    };
    Ok((target, isa))
}

/// The argument slots, shared by the threads of one kernel call.
struct Slots(Vec<*mut f32>);

// SAFETY: the pointers are only dereferenced by generated code, which each thread runs
// on disjoint chunks of the output while the buffers they point into stay alive (the
// call waits for every thread).
unsafe impl Sync for Slots {}

impl Slots {
    fn pointers(&self) -> Vec<*mut f32> {
        self.0.clone()
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
    let builder = cranelift_native::builder().map_err(|e| codegen_error(e.to_string()))?;
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

fn codegen_error(message: String) -> RuntimeError {
    RuntimeError::Invalid(format!("JIT code generation failed: {message}"))
}

/// The data a generated kernel reads: weights packed per group for the tile, the bias
/// (zeros where the layer has none), and each unfolded batch norm's scale and shift.
fn compiled(
    program: &fused::Program,
    index: usize,
    code: KernelCode,
    function: KernelFn,
    microkernel: &Microkernel,
    target: &CpuTarget,
    guard: Option<Guard>,
) -> Result<Compiled> {
    let chunks = code.chunks as usize;
    let Some(geometry) = &code.geometry else {
        // A kernel without weights: nothing to prepare.
        return Ok(Compiled {
            function,
            chunks,
            args: code.args,
            packed_weights: Floats::Heap(Vec::new()),
            bias: Floats::Heap(Vec::new()),
            scale_shift: Vec::new(),
        });
    };
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
    let mut scale_shift = Vec::new();
    for arg in &code.args {
        if let Arg::Scale { layer, eps } = arg {
            let (scale, shift) = batch_norm_scale_shift(program.weights, layer, *eps)?;
            scale_shift.push(Floats::from_vec(scale, guard)?);
            scale_shift.push(Floats::from_vec(shift, guard)?);
        }
    }
    Ok(Compiled {
        function,
        chunks,
        args: code.args,
        packed_weights: Floats::from_vec(packed_weights, guard)?,
        bias: Floats::from_vec(bias, guard)?,
        scale_shift,
    })
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
    if values.len() != m * k * geometry.groups as usize {
        return Err(codegen_error(format!(
            "weights hold {} values, the geometry {}",
            values.len(),
            m * k * geometry.groups as usize
        )));
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

/// Tanh (kind 0) or sigmoid (1) of a row in place, as the reference computes them.
unsafe extern "C" fn transcendental(row: *mut f32, len: usize, kind: u32) {
    // SAFETY: generated code passes an output row of `len` floats.
    let row = unsafe { std::slice::from_raw_parts_mut(row, len) };
    match kind {
        0 => row.iter_mut().for_each(|v| *v = v.tanh()),
        _ => row.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
    }
}
