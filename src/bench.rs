//! `cnnc bench`: the JIT on one network, measured. Compile time, warm-up, then latency
//! percentiles over N runs with a progress bar, GFLOP/s and the fraction of the
//! machine's peak (the microkernel's own throughput, measured here, times the threads),
//! and with `--profile` a per-kernel table, slowest first.

use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::diagram::profile::{self, Bar};
use cnnc_compiler::summary;
use cnnc_runtime::jit::Program;
use cnnc_runtime::weights::Weights;
use cnnc_runtime::{RuntimeError, input};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::time::Duration;

pub struct BenchRequest {
    pub threads: usize,
    pub batch: usize,
    pub runs: usize,
    pub warmup: usize,
    pub profile: bool,
    /// Also draw the profile as an SVG bar chart here.
    pub chart: Option<std::path::PathBuf>,
    pub seed: u64,
    /// Draw a progress bar (on a terminal, for the human format).
    pub progress: bool,
}

#[derive(Serialize)]
pub struct BenchReport {
    network: String,
    backend: &'static str,
    microkernel: String,
    threads: usize,
    batch: usize,
    runs: usize,
    compile_milliseconds: f64,
    /// Latency of one batch, milliseconds.
    latency: Percentiles,
    /// 2 x MACs x batch / median latency.
    gflops: f64,
    /// The microkernel's measured throughput on one core, times the threads.
    peak_gflops: f64,
    peak_fraction: f64,
    /// Kernels of the fused graph, slowest first (with --profile).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    profile: Vec<KernelTime>,
}

#[derive(Serialize)]
struct Percentiles {
    min: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

#[derive(Serialize)]
struct KernelTime {
    kernel: String,
    op: String,
    /// Median over the runs, milliseconds.
    milliseconds: f64,
    share: f64,
    gflops: f64,
}

pub fn bench(net: &CheckedGraph, request: &BenchRequest) -> Result<BenchReport, RuntimeError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(request.threads)
        .build()
        .map_err(|e| {
            RuntimeError::Invalid(format!("cannot start {} threads: {e}", request.threads))
        })?;
    pool.install(|| measure(net, request))
}

fn measure(net: &CheckedGraph, request: &BenchRequest) -> Result<BenchReport, RuntimeError> {
    let weights = Weights::seeded(net, request.seed);
    let program = Program::with_threads(net, &weights, request.threads)?;
    let shape = &net.facts[net.graph.inputs[0].0].shape;
    let source = input::InputSource::Random { seed: request.seed };
    let normalize = input::Normalize::default_for(shape.0.first().copied().unwrap_or(1) as usize);
    let sample = input::load(&source, shape, request.batch, &normalize)?;
    for _ in 0..request.warmup {
        program.run(vec![sample.clone()])?;
    }
    let bar = progress_bar(request);
    let mut totals = Vec::with_capacity(request.runs);
    let mut per_kernel: Vec<Vec<Duration>> = vec![Vec::new(); program.fused().kernels.len()];
    for _ in 0..request.runs {
        let (_, times) = program.run_profiled(vec![sample.clone()])?;
        totals.push(times.iter().sum::<Duration>().as_secs_f64() * 1e3);
        for (kernel, time) in per_kernel.iter_mut().zip(times) {
            kernel.push(time);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    totals.sort_by(f64::total_cmp);
    let macs = summary::summarize(net, None).totals.inference.macs;
    let latency = percentiles(&totals);
    let gflops = 2.0 * macs as f64 * request.batch as f64 / latency.p50 / 1e6;
    let microkernel = program.microkernel();
    let peak = microkernel.measure_peak(Duration::from_millis(60)) * request.threads as f64;
    let mut profile = if request.profile || request.chart.is_some() {
        kernel_times(net, &program, per_kernel, latency.p50, request.batch)
    } else {
        Vec::new()
    };
    if let Some(path) = &request.chart {
        let bars: Vec<Bar> = program
            .fused()
            .kernels
            .iter()
            .zip(&profile)
            .map(|(kernel, time)| Bar {
                name: &kernel.name,
                op: &kernel.op,
                label: time.op.clone(),
                milliseconds: time.milliseconds,
            })
            .collect();
        let title = format!(
            "{} on the JIT, {} thread(s), batch {}",
            net.graph.name, request.threads, request.batch
        );
        cnnc_runtime::output::write_atomically(path, profile::chart(&title, &bars).as_bytes())?;
    }
    if !request.profile {
        profile.clear();
    }
    profile.sort_by(|a, b| b.milliseconds.total_cmp(&a.milliseconds));
    Ok(BenchReport {
        network: net.graph.name.clone(),
        backend: "jit",
        microkernel: format!("{microkernel:?}"),
        threads: request.threads,
        batch: request.batch,
        runs: request.runs,
        compile_milliseconds: program.compile_time.as_secs_f64() * 1e3,
        latency,
        gflops,
        peak_gflops: peak,
        peak_fraction: gflops / peak,
        profile,
    })
}

fn progress_bar(request: &BenchRequest) -> ProgressBar {
    if !request.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(request.runs as u64);
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} runs ({eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix("measuring");
    bar
}

/// `sorted` in milliseconds, ascending.
fn percentiles(sorted: &[f64]) -> Percentiles {
    let at = |q: f64| {
        let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted.get(index).copied().unwrap_or(0.0)
    };
    Percentiles {
        min: at(0.0),
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: at(1.0),
    }
}

/// Every kernel's median time, in network order.
fn kernel_times(
    net: &CheckedGraph,
    program: &Program,
    per_kernel: Vec<Vec<Duration>>,
    total_ms: f64,
    batch: usize,
) -> Vec<KernelTime> {
    program
        .fused()
        .kernels
        .iter()
        .zip(per_kernel)
        .map(|(kernel, mut times)| {
            times.sort();
            let median = times.get(times.len() / 2).copied().unwrap_or_default();
            let milliseconds = median.as_secs_f64() * 1e3;
            let macs: u64 = if kernel.parts.is_empty() {
                net.facts[kernel.node.0].macs
            } else {
                kernel.parts.iter().map(|p| net.facts[p.node.0].macs).sum()
            };
            KernelTime {
                kernel: kernel.name.clone(),
                op: kernel.op_text(),
                milliseconds,
                share: milliseconds / total_ms,
                gflops: 2.0 * macs as f64 * batch as f64 / milliseconds.max(1e-9) / 1e6,
            }
        })
        .collect()
}

pub fn print(report: &BenchReport) {
    println!(
        "{}: jit backend ({}), {} thread{}, batch {}",
        report.network,
        report.microkernel,
        report.threads,
        if report.threads == 1 { "" } else { "s" },
        report.batch
    );
    println!("compile: {:.1} ms", report.compile_milliseconds);
    let l = &report.latency;
    println!(
        "latency over {} runs: min {:.2} ms, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        report.runs, l.min, l.p50, l.p90, l.p99, l.max
    );
    println!(
        "throughput: {:.1} GFLOP/s at p50, {:.0}% of the {:.0} GFLOP/s peak ({} x {} thread{})",
        report.gflops,
        report.peak_fraction * 100.0,
        report.peak_gflops,
        report.microkernel,
        report.threads,
        if report.threads == 1 { "" } else { "s" }
    );
    if report.profile.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<40} {:<28} {:>9} {:>7} {:>9}",
        "kernel", "op", "ms", "share", "GFLOP/s"
    );
    for row in &report.profile {
        let gflops = if row.gflops > 0.0 {
            format!("{:.1}", row.gflops)
        } else {
            "-".into()
        };
        println!(
            "{:<40} {:<28} {:>9.3} {:>6.1}% {:>9}",
            truncate(&row.kernel, 40),
            truncate(&row.op, 28),
            row.milliseconds,
            row.share * 100.0,
            gflops
        );
    }
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let kept: String = text.chars().take(width - 1).collect();
    format!("{kept}…")
}
