//! The GPU on the command line: `--backend gpu`, `--device auto`, `cnnc devices` and
//! `cnnc build --emit wgsl`.

use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::codegen::gpu::{self, GpuTarget};
use cnnc_compiler::{passes, summary};
use cnnc_gpu::{AdapterReport, Gpu, GpuProgram};
use cnnc_runtime::reference::{self, RunOptions};
use cnnc_runtime::weights::Weights;
use cnnc_runtime::{RuntimeError, Tensor};
use std::time::Instant;

/// `--device`: where to run.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// The GPU for networks above a work threshold when a hardware adapter exists,
    /// else the CPU JIT; says which and why.
    Auto,
    /// The CPU JIT.
    Cpu,
    /// The GPU (`--backend gpu`).
    Gpu,
}

/// Below this many multiply-accumulates per batch, the JIT finishes before a GPU has
/// paid for its uploads and dispatches.
const GPU_THRESHOLD_MACS: u64 = 500_000_000;

/// `CNNC_SOFTWARE_GPU=1` lets `--device auto` choose a software adapter (lavapipe) as it
/// would a GPU: slower than the JIT, but the way to take the GPU path, and its fallback
/// to the JIT, on a machine without a GPU (the tests do).
const SOFTWARE_GPU: &str = "CNNC_SOFTWARE_GPU";

/// The backend `--device` picks for `net` at `batch`, and the reason, for the user.
pub fn choose(net: &CheckedGraph, device: Device, batch: usize) -> (crate::run::Backend, String) {
    use crate::run::Backend;
    match device {
        Device::Cpu => (Backend::Jit, "--device cpu".into()),
        Device::Gpu => (Backend::Gpu { fallback: false }, "--device gpu".into()),
        Device::Auto => {
            let macs = summary::summarize(net, None)
                .totals
                .inference
                .macs
                .saturating_mul(batch as u64);
            let work = format!("{} MACs per batch", summary::si(macs));
            let adapters = cnnc_gpu::adapters();
            let software = std::env::var(SOFTWARE_GPU).as_deref() == Ok("1");
            let hardware = adapters.iter().find(|a| a.device_type != "Cpu" || software);
            match hardware {
                _ if macs < GPU_THRESHOLD_MACS => (
                    Backend::Jit,
                    format!(
                        "CPU JIT: {work}, below the GPU's threshold of {}",
                        summary::si(GPU_THRESHOLD_MACS)
                    ),
                ),
                Some(adapter) => (
                    Backend::Gpu { fallback: true },
                    format!("GPU {}: {work}", adapter.describe()),
                ),
                None if adapters.is_empty() => {
                    (Backend::Jit, "CPU JIT: no GPU adapter found".into())
                }
                None => (
                    Backend::Jit,
                    format!(
                        "CPU JIT: the only adapter, {}, is a software renderer on this CPU, slower than the JIT",
                        adapters[0].describe()
                    ),
                ),
            }
        }
    }
}

/// Runs `net` on the GPU; the output and the time spent building the program (ms).
pub fn run(
    net: &CheckedGraph,
    weights: &Weights,
    inputs: Vec<Tensor>,
    options: &RunOptions,
) -> Result<(reference::Outputs, Option<f64>), RuntimeError> {
    crate::run::refuse_save(options, "gpu")?;
    let gpu_error = |e: cnnc_gpu::GpuError| RuntimeError::Invalid(e.to_string());
    let started = Instant::now();
    let gpu = Gpu::open().map_err(gpu_error)?;
    eprintln!("GPU: {}", gpu.adapter.describe());
    let mut program = GpuProgram::new(gpu, net, weights).map_err(gpu_error)?;
    let build = started.elapsed().as_secs_f64() * 1e3;
    let output = program.run(inputs).map_err(gpu_error)?;
    let outputs = reference::Outputs {
        output,
        ..Default::default()
    };
    Ok((outputs, Some(build)))
}

/// `cnnc devices`: every adapter wgpu finds, best first.
pub fn devices(json: bool) -> Result<(), String> {
    let adapters = cnnc_gpu::adapters();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&adapters).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    if adapters.is_empty() {
        println!(
            "no GPU adapter found (wgpu looked for Vulkan and OpenGL); `--device auto` uses the CPU JIT"
        );
    }
    for (i, adapter) in adapters.iter().enumerate() {
        print_adapter(i, adapter);
    }
    Ok(())
}

fn print_adapter(index: usize, a: &AdapterReport) {
    let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
    println!("{index}: {}", a.name);
    println!(
        "   backend {}, type {}, driver {} {}",
        a.backend, a.device_type, a.driver, a.driver_info
    );
    println!(
        "   storage binding {:.0} MiB, buffer {:.0} MiB, {} storage buffers per stage, {} workgroups per dimension, {} KiB workgroup memory, timestamp queries: {}",
        mib(a.max_storage_binding_bytes),
        mib(a.max_buffer_bytes),
        a.max_storage_buffers_per_stage,
        a.max_workgroups_per_dimension,
        a.max_workgroup_storage_bytes / 1024,
        if a.timestamp_queries { "yes" } else { "no" }
    );
}

/// `cnnc build --emit wgsl`: every shader, for WebGPU's default limits.
pub fn emit_wgsl(net: &CheckedGraph) -> Result<(), String> {
    let fused = gpu::fuse(net);
    let plan = passes::plan(&fused);
    let target = GpuTarget::default();
    let shaders = gpu::compile(&fused, &plan, &target).map_err(|e| e.to_string())?;
    for shader in shaders {
        let kernel = &fused.kernels[shader.kernel];
        println!("// `{}`: {}", shader.label, kernel.op.rule().describe());
        println!("// bindings: {:?}", shader.bindings);
        println!("// workgroups per sample: {}", shader.workgroups);
        println!("{}", shader.wgsl);
    }
    Ok(())
}
