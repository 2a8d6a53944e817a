//! `cnnc bench --backend gpu`: the GPU backend on one network. Build time (shader
//! compilation and weight upload), warm-up, then per run the end-to-end time (inputs
//! written, every dispatch, output read back) and, where the adapter has timestamp
//! queries, the time of the dispatches on the device; medians, GFLOP/s and images/s.
//! `--profile` adds one run with each shader in a pass of its own, timed on the device,
//! and a per-kernel table, slowest first.

use crate::bench::{KernelTime, print_profile};
use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::summary;
use cnnc_gpu::{Gpu, GpuProgram};
use cnnc_runtime::input;
use cnnc_runtime::weights::Weights;
use serde::Serialize;
use std::time::Instant;

pub struct Request {
    pub batch: usize,
    pub runs: usize,
    pub warmup: usize,
    pub seed: u64,
    pub profile: bool,
}

#[derive(Serialize)]
struct Report {
    network: String,
    backend: &'static str,
    adapter: String,
    batch: usize,
    runs: usize,
    /// Shaders compiled into pipelines and weights uploaded.
    build_milliseconds: f64,
    /// Median of one batch, from writing the input to reading the output.
    end_to_end_milliseconds: f64,
    /// Median of the dispatches alone, by timestamp queries; absent without them.
    kernel_milliseconds: Option<f64>,
    /// 2 x MACs x batch over the end-to-end (and kernel) median.
    gflops: f64,
    kernel_gflops: Option<f64>,
    images_per_second: f64,
    /// Kernels, slowest first (with --profile and timestamp queries).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    profile: Vec<KernelTime>,
}

pub fn bench(net: &CheckedGraph, request: &Request, json: bool) -> Result<(), String> {
    let report = measure(net, request).map_err(|e| e.to_string())?;
    match json {
        true => println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        ),
        false => print(&report),
    }
    Ok(())
}

fn measure(net: &CheckedGraph, request: &Request) -> Result<Report, Box<dyn std::error::Error>> {
    let weights = Weights::seeded(net, request.seed);
    let started = Instant::now();
    let gpu = Gpu::open()?;
    let adapter = gpu.adapter.describe();
    let mut program = GpuProgram::new(gpu, net, &weights)?;
    let build_milliseconds = started.elapsed().as_secs_f64() * 1e3;
    let shape = &net.facts[net.graph.inputs[0].0].shape;
    let source = input::InputSource::Random { seed: request.seed };
    let normalize = input::Normalize::default_for(shape.0.first().copied().unwrap_or(1) as usize);
    let sample = input::load(&source, shape, request.batch, &normalize)?;
    for _ in 0..request.warmup {
        program.run(vec![sample.clone()])?;
    }
    let (mut total, mut kernel) = (Vec::new(), Vec::new());
    for _ in 0..request.runs {
        let run = program.run_timed(vec![sample.clone()], true)?;
        total.push(run.seconds * 1e3);
        kernel.extend(run.kernel_seconds.map(|s| s * 1e3));
    }
    let end_to_end = median(&mut total);
    let kernel_milliseconds = (!kernel.is_empty()).then(|| median(&mut kernel));
    let profile = match request.profile {
        true => profile(net, &mut program, sample, request.batch)?,
        false => Vec::new(),
    };
    let flop =
        2.0 * summary::summarize(net, None).totals.inference.macs as f64 * request.batch as f64;
    let gflops = |ms: f64| flop / ms / 1e6;
    Ok(Report {
        network: net.graph.name.clone(),
        backend: "gpu",
        adapter,
        batch: request.batch,
        runs: request.runs,
        build_milliseconds,
        end_to_end_milliseconds: end_to_end,
        kernel_milliseconds,
        gflops: gflops(end_to_end),
        kernel_gflops: kernel_milliseconds.map(gflops),
        images_per_second: request.batch as f64 / end_to_end * 1e3,
        profile,
    })
}

/// One run with every shader timed; the shaders of a kernel (the parts of a split
/// one, a copying concat's inputs) summed into its line.
fn profile(
    net: &CheckedGraph,
    program: &mut GpuProgram,
    sample: cnnc_runtime::Tensor,
    batch: usize,
) -> Result<Vec<KernelTime>, Box<dyn std::error::Error>> {
    let run = program.run_profiled(vec![sample])?;
    if run.shader_seconds.is_empty() {
        return Err("--profile needs timestamp queries, which this adapter lacks".into());
    }
    let mut per_kernel = vec![0.0; program.fused.kernels.len()];
    for (shader, seconds) in program.shaders.iter().zip(&run.shader_seconds) {
        per_kernel[shader.kernel] += seconds * 1e3;
    }
    let total: f64 = per_kernel.iter().sum();
    let mut times: Vec<KernelTime> = program
        .fused
        .kernels
        .iter()
        .zip(per_kernel)
        .map(|(kernel, ms)| KernelTime::new(net, kernel, ms, total, batch))
        .collect();
    KernelTime::slowest_first(&mut times);
    Ok(times)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn print(r: &Report) {
    println!("{} on the GPU: {}", r.network, r.adapter);
    println!(
        "batch {}, {} runs; build (shaders, weights) {:.1} ms",
        r.batch, r.runs, r.build_milliseconds
    );
    println!(
        "end to end: {:.2} ms median, {:.1} GFLOP/s, {:.1} images/s",
        r.end_to_end_milliseconds, r.gflops, r.images_per_second
    );
    match (r.kernel_milliseconds, r.kernel_gflops) {
        (Some(ms), Some(gflops)) => {
            println!("kernels (timestamp queries): {ms:.2} ms median, {gflops:.1} GFLOP/s")
        }
        _ => println!("kernels: the adapter has no timestamp queries"),
    }
    print_profile(&r.profile);
}
