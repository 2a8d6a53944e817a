//! `cnnc bench`: one network on one backend (the JIT by default), measured. Compile
//! time (parse to ready, weights excluded) and weight preparation apart, warm-up, then
//! latency percentiles over N runs with a progress bar, images/s, GFLOP/s and the
//! fraction of the machine's FMA peak (measured here, as `--peak` does), and with
//! `--profile` a per-kernel table of the JIT, slowest first.

use crate::run::Backend;
use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::diagram::profile::{self, Bar};
use cnnc_compiler::{passes, summary};
use cnnc_runtime::jit::microkernel::{FmaPeak, Microkernel};
use cnnc_runtime::reference::{self, RunOptions};
use cnnc_runtime::weights::Weights;
use cnnc_runtime::{RuntimeError, Tensor, fused, input, jit};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct BenchRequest {
    pub backend: Backend,
    pub threads: usize,
    pub batch: usize,
    pub runs: usize,
    pub warmup: usize,
    pub profile: bool,
    /// Also draw the profile as an SVG bar chart here.
    pub chart: Option<PathBuf>,
    /// A safetensors file; seeded weights when absent.
    pub weights: Option<PathBuf>,
    pub seed: u64,
    /// Draw a progress bar (on a terminal, for the human format).
    pub progress: bool,
    /// How long reading, parsing and checking the file took, before the bench began.
    pub front_end: Duration,
}

#[derive(Serialize)]
pub struct BenchReport {
    network: String,
    backend: &'static str,
    microkernel: String,
    threads: usize,
    batch: usize,
    runs: usize,
    /// Parse to ready to run, weights excluded: the sum of `compile_phases`.
    compile_milliseconds: f64,
    /// Loading, folding and packing the weights: the sum of `weights_phases`.
    weights_milliseconds: f64,
    compile_phases: Vec<Phase>,
    weights_phases: Vec<Phase>,
    /// Latency of one batch, milliseconds: the whole call, as a user of the backend sees it.
    latency: Percentiles,
    /// The JIT's kernels alone: their median share of a profiled run, times the median
    /// latency (the rest of the latency is setting up the buffers and copying the input
    /// in and the output out). A profiled run's clock reads fall between the kernels, so
    /// the share is a little low, by about the 2% they cost LeNet-5.
    #[serde(skip_serializing_if = "Option::is_none")]
    kernels_milliseconds: Option<f64>,
    /// Samples per second at the median latency.
    images_per_second: f64,
    /// 2 x MACs x batch / median latency.
    gflops: f64,
    /// The in-register FMA peak of one core, measured, times the threads.
    peak_gflops: f64,
    peak_fraction: f64,
    /// The microkernel's measured throughput on one core, times the threads.
    tile_peak_gflops: f64,
    tile_fraction: f64,
    /// The JIT's kernels (of the fused graph), and those of them without generated
    /// code, which run on the reference kernels.
    #[serde(skip_serializing_if = "Option::is_none")]
    kernels: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference_path: Option<Vec<String>>,
    /// Kernels of the fused graph, slowest first (with --profile).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    profile: Vec<KernelTime>,
}

#[derive(Serialize)]
struct Phase {
    phase: &'static str,
    milliseconds: f64,
}

impl Phase {
    fn new(phase: &'static str, time: Duration) -> Phase {
        Phase {
            phase,
            milliseconds: time.as_secs_f64() * 1e3,
        }
    }
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
pub(crate) struct KernelTime {
    kernel: String,
    op: String,
    /// Median over the runs, milliseconds.
    milliseconds: f64,
    share: f64,
    gflops: f64,
}

/// How long each peak is measured for: long enough to be steady, short enough not to
/// matter next to the runs.
const PEAK_BUDGET: Duration = Duration::from_millis(60);

pub fn bench(net: &CheckedGraph, request: &BenchRequest) -> Result<BenchReport, RuntimeError> {
    if request.backend != Backend::Jit && (request.profile || request.chart.is_some()) {
        return Err(RuntimeError::Invalid(
            "--profile and --chart time the JIT's kernels: use them with --backend jit".into(),
        ));
    }
    in_pool(request.threads, || measure(net, request))
}

fn in_pool<T: Send>(
    threads: usize,
    work: impl FnOnce() -> Result<T, RuntimeError> + Send,
) -> Result<T, RuntimeError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| RuntimeError::Invalid(format!("cannot start {threads} threads: {e}")))?
        .install(work)
}

/// A backend, ready to run the network.
enum Executor<'a> {
    Reference {
        net: &'a CheckedGraph,
        weights: &'a Weights,
    },
    Fused(Box<fused::Program<'a>>),
    Jit(Box<jit::Program<'a>>),
}

impl<'a> Executor<'a> {
    /// The executor, and the phases of making it: (compile phases, weight phases).
    fn new(
        backend: Backend,
        net: &'a CheckedGraph,
        weights: &'a Weights,
        threads: usize,
    ) -> Result<(Self, Vec<Phase>, Vec<Phase>), RuntimeError> {
        Ok(match backend {
            // The GPU has its own measurement (device timestamps, no per-kernel times).
            Backend::Gpu { .. } => {
                return Err(RuntimeError::Invalid(
                    "the GPU backend is measured by `cnnc bench --backend gpu`".into(),
                ));
            }
            Backend::Reference => (Executor::Reference { net, weights }, vec![], vec![]),
            Backend::Fused => {
                let started = Instant::now();
                let program = fused::Program::new(net, weights)?;
                let (passes, fold) = split_passes(net, started.elapsed());
                let compile = vec![Phase::new("passes", passes)];
                (
                    Executor::Fused(Box::new(program)),
                    compile,
                    vec![Phase::new("fold", fold)],
                )
            }
            Backend::Jit => {
                let program = jit::Program::with_threads(net, weights, threads)?;
                let phases = program.phases;
                let compile = vec![
                    Phase::new("passes", phases.passes),
                    Phase::new("code generation", phases.codegen),
                ];
                let weights = vec![Phase::new("fold and pack", phases.pack)];
                (Executor::Jit(Box::new(program)), compile, weights)
            }
        })
    }

    /// Runs the network once.
    fn run(&self, input: Tensor) -> Result<(), RuntimeError> {
        match self {
            Executor::Reference { net, weights } => {
                reference::run(net, weights, vec![input], &RunOptions::default())?;
            }
            Executor::Fused(program) => {
                program.run(vec![input])?;
            }
            Executor::Jit(program) => {
                program.run(vec![input])?;
            }
        }
        Ok(())
    }

    /// The JIT's program, whose kernels a profiled run times.
    fn jit(&self) -> Option<&jit::Program<'a>> {
        match self {
            Executor::Jit(program) => Some(program),
            _ => None,
        }
    }
}

/// Kernel times come from runs of their own, so that the latency is measured without
/// the clock reads around each kernel: one after every run with --profile or --chart,
/// otherwise after every `PROFILED_EVERY`th (for "of which the kernels").
const PROFILED_EVERY: usize = 4;

/// What the profiled runs measured: each kernel's times, and the kernels' share of
/// each run.
#[derive(Default)]
struct KernelSamples {
    per_kernel: Vec<Vec<Duration>>,
    shares: Vec<f64>,
}

impl KernelSamples {
    fn record(&mut self, program: &jit::Program, input: Tensor) -> Result<(), RuntimeError> {
        let started = Instant::now();
        let times = program.run_profiled(vec![input])?.1;
        let whole = started.elapsed().as_secs_f64();
        let kernels: f64 = times.iter().map(Duration::as_secs_f64).sum();
        self.shares
            .push(if whole > 0.0 { kernels / whole } else { 1.0 });
        self.per_kernel.resize(times.len(), Vec::new());
        for (kernel, time) in self.per_kernel.iter_mut().zip(times) {
            kernel.push(time);
        }
        Ok(())
    }
}

/// `fused::Program::new` runs the passes and folds the weights in one go; the passes
/// are pure functions of the graph, so running them again alone tells the two apart.
fn split_passes(net: &CheckedGraph, fuse_and_fold: Duration) -> (Duration, Duration) {
    let started = Instant::now();
    let fused = passes::fuse(net);
    std::hint::black_box(passes::plan(&fused));
    let passes = started.elapsed().min(fuse_and_fold);
    (passes, fuse_and_fold - passes)
}

fn measure(net: &CheckedGraph, request: &BenchRequest) -> Result<BenchReport, RuntimeError> {
    let started = Instant::now();
    let weights = match &request.weights {
        Some(path) => Weights::load(path, net)?,
        None => Weights::seeded(net, request.seed),
    };
    let load = started.elapsed();
    let (executor, mut compile_phases, mut weights_phases) =
        Executor::new(request.backend, net, &weights, request.threads)?;
    compile_phases.insert(0, Phase::new("front end", request.front_end));
    weights_phases.insert(0, Phase::new("load", load));
    let shape = &net.facts[net.graph.inputs[0].0].shape;
    let source = input::InputSource::Random { seed: request.seed };
    let normalize = input::Normalize::default_for(shape.0.first().copied().unwrap_or(1) as usize);
    let sample = input::load(&source, shape, request.batch, &normalize)?;
    for _ in 0..request.warmup {
        executor.run(sample.clone())?;
    }
    let bar = progress_bar(request);
    let mut totals = Vec::with_capacity(request.runs);
    let mut kernels = KernelSamples::default();
    let every = match request.profile || request.chart.is_some() {
        true => 1,
        false => PROFILED_EVERY,
    };
    for run in 0..request.runs {
        let input = sample.clone();
        let started = Instant::now();
        executor.run(input)?;
        totals.push(started.elapsed().as_secs_f64() * 1e3);
        if let Some(program) = executor.jit()
            && run % every == 0
        {
            kernels.record(program, sample.clone())?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    totals.sort_by(f64::total_cmp);
    kernels.shares.sort_by(f64::total_cmp);
    let macs = summary::summarize(net, None).totals.inference.macs;
    let latency = percentiles(&totals);
    let gflops = 2.0 * macs as f64 * request.batch as f64 / latency.p50 / 1e6;
    let microkernel = Microkernel::best();
    let threads = request.threads as f64;
    let peak = FmaPeak::best().measure(PEAK_BUDGET) * threads;
    let tile_peak = microkernel.measure_peak(PEAK_BUDGET) * threads;
    let kernels_milliseconds = executor
        .jit()
        .map(|_| percentiles(&kernels.shares).p50 * latency.p50);
    let profile = match executor.jit() {
        Some(program) => profile(net, program, kernels.per_kernel, latency.p50, request)?,
        None => Vec::new(),
    };
    Ok(BenchReport {
        network: net.graph.name.clone(),
        backend: request.backend.name(),
        microkernel: format!("{microkernel:?}"),
        threads: request.threads,
        batch: request.batch,
        runs: request.runs,
        compile_milliseconds: compile_phases.iter().map(|p| p.milliseconds).sum(),
        weights_milliseconds: weights_phases.iter().map(|p| p.milliseconds).sum(),
        compile_phases,
        weights_phases,
        kernels_milliseconds,
        images_per_second: request.batch as f64 * 1e3 / latency.p50,
        latency,
        gflops,
        peak_gflops: peak,
        peak_fraction: gflops / peak,
        tile_peak_gflops: tile_peak,
        tile_fraction: gflops / tile_peak,
        kernels: match &executor {
            Executor::Jit(program) => Some(program.generated().1),
            _ => None,
        },
        reference_path: match &executor {
            Executor::Jit(program) => Some(program.on_reference_path()),
            _ => None,
        },
        profile,
    })
}

/// The JIT's per-kernel table (with --profile), slowest first, and the chart (with
/// --chart), in network order.
fn profile(
    net: &CheckedGraph,
    program: &jit::Program,
    per_kernel: Vec<Vec<Duration>>,
    total_ms: f64,
    request: &BenchRequest,
) -> Result<Vec<KernelTime>, RuntimeError> {
    if !request.profile && request.chart.is_none() {
        return Ok(Vec::new());
    }
    let mut profile = kernel_times(net, program, per_kernel, total_ms, request.batch);
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
    KernelTime::slowest_first(&mut profile);
    Ok(profile)
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
    program: &jit::Program,
    per_kernel: Vec<Vec<Duration>>,
    total_ms: f64,
    batch: usize,
) -> Vec<KernelTime> {
    program
        .fused()
        .kernels
        .iter()
        .zip(per_kernel)
        .enumerate()
        .map(|(index, (kernel, mut times))| {
            times.sort();
            let median = times.get(times.len() / 2).copied().unwrap_or_default();
            let time = KernelTime::new(net, kernel, median.as_secs_f64() * 1e3, total_ms, batch);
            KernelTime {
                op: program.op_text(index),
                ..time
            }
        })
        .collect()
}

impl KernelTime {
    pub(crate) fn slowest_first(times: &mut [KernelTime]) {
        times.sort_by(|a, b| b.milliseconds.total_cmp(&a.milliseconds));
    }

    /// `kernel` taking `milliseconds` of a `total_ms` batch of `batch` samples.
    pub(crate) fn new(
        net: &CheckedGraph,
        kernel: &cnnc_compiler::passes::Kernel,
        milliseconds: f64,
        total_ms: f64,
        batch: usize,
    ) -> KernelTime {
        let macs = kernel.macs(net);
        KernelTime {
            kernel: kernel.name.clone(),
            op: kernel.op_text(),
            milliseconds,
            share: milliseconds / total_ms,
            gflops: 2.0 * macs as f64 * batch as f64 / milliseconds.max(1e-9) / 1e6,
        }
    }
}

pub fn print(report: &BenchReport) {
    let microkernel = if report.backend == Backend::Jit.name() {
        format!(" ({})", report.microkernel)
    } else {
        String::new()
    };
    println!(
        "{}: {} backend{microkernel}, {}, batch {}",
        report.network,
        report.backend,
        plural(report.threads, "thread"),
        report.batch
    );
    if let (Some(kernels), Some(reference_path)) = (report.kernels, &report.reference_path) {
        match reference_path.as_slice() {
            [] => println!("generated: all {kernels} kernels (none on the reference path)"),
            slow => println!(
                "on the reference path: {} of {kernels} kernels: {}",
                slow.len(),
                slow.join(", ")
            ),
        }
    }
    println!(
        "compile (parse to ready, weights excluded): {}",
        phases(report.compile_milliseconds, &report.compile_phases)
    );
    println!(
        "weights (load/prepare/pack): {}",
        phases(report.weights_milliseconds, &report.weights_phases)
    );
    let l = &report.latency;
    println!(
        "latency over {}: median {:.3} ms, p90 {:.3} ms, min {:.3} ms (p99 {:.3} ms, max {:.3} ms)",
        plural(report.runs, "run"),
        l.p50,
        l.p90,
        l.min,
        l.p99,
        l.max
    );
    if let Some(kernels) = report.kernels_milliseconds {
        println!(
            "of which the kernels: {kernels:.3} ms at the median (the rest: buffers, input, output)"
        );
    }
    println!(
        "throughput: {:.1} images/s, {:.1} GFLOP/s at the median: {:.0}% of the {:.0} GFLOP/s \
         FMA peak, {:.0}% of the tile's {:.0} ({})",
        report.images_per_second,
        report.gflops,
        report.peak_fraction * 100.0,
        report.peak_gflops,
        report.tile_fraction * 100.0,
        report.tile_peak_gflops,
        plural(report.threads, "thread"),
    );
    print_profile(&report.profile);
}

/// The per-kernel table, as given (slowest first).
pub(crate) fn print_profile(profile: &[KernelTime]) {
    if profile.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<40} {:<44} {:>9} {:>7} {:>9}",
        "kernel", "op", "ms", "share", "GFLOP/s"
    );
    for row in profile {
        let gflops = if row.gflops > 0.0 {
            format!("{:.1}", row.gflops)
        } else {
            "-".into()
        };
        println!(
            "{:<40} {:<44} {:>9.3} {:>6.1}% {:>9}",
            truncate(&row.kernel, 40),
            truncate(&row.op, 44),
            row.milliseconds,
            row.share * 100.0,
            gflops
        );
    }
}

/// `12.3 ms (front end 1.2, passes 0.4, code generation 10.7)`.
fn phases(total: f64, phases: &[Phase]) -> String {
    let parts: Vec<String> = phases
        .iter()
        .map(|p| format!("{} {:.1}", p.phase, p.milliseconds))
        .collect();
    format!("{total:.1} ms ({})", parts.join(", "))
}

fn plural(count: usize, noun: &str) -> String {
    format!("{count} {noun}{}", if count == 1 { "" } else { "s" })
}

/// `cnnc bench --peak`: the machine's in-register FMA peak and the tile's, on one core
/// and on every thread at once.
#[derive(Serialize)]
pub struct PeakReport {
    threads: usize,
    fma: PeakLine,
    tile: PeakLine,
}

#[derive(Serialize)]
struct PeakLine {
    kernel: String,
    gflops_per_core: f64,
    /// Measured on all the threads at the same time, summed.
    gflops_all_threads: f64,
}

/// How long `--peak` measures each figure.
const PEAK_REPORT_BUDGET: Duration = Duration::from_millis(300);

pub fn peak(threads: usize) -> PeakReport {
    let fma = FmaPeak::best();
    let tile = Microkernel::best();
    PeakReport {
        threads,
        fma: peak_line(format!("{fma:?}"), threads, || {
            fma.measure(PEAK_REPORT_BUDGET)
        }),
        tile: peak_line(format!("{tile:?}, panels in L1"), threads, || {
            tile.measure_peak(PEAK_REPORT_BUDGET)
        }),
    }
}

fn peak_line(kernel: String, threads: usize, measure: impl Fn() -> f64 + Sync) -> PeakLine {
    let gflops_per_core = measure();
    let gflops_all_threads = std::thread::scope(|scope| {
        let running: Vec<_> = (0..threads).map(|_| scope.spawn(&measure)).collect();
        running
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .sum()
    });
    PeakLine {
        kernel,
        gflops_per_core,
        gflops_all_threads,
    }
}

pub fn print_peak(report: &PeakReport) {
    for (what, line) in [("FMA peak", &report.fma), ("tile", &report.tile)] {
        println!(
            "{what} ({}): {:.1} GFLOP/s on one core, {:.1} GFLOP/s on {} at once",
            line.kernel,
            line.gflops_per_core,
            line.gflops_all_threads,
            plural(report.threads, "thread")
        );
    }
    println!(
        "the tile reaches {:.0}% of the FMA peak",
        report.tile.gflops_per_core / report.fma.gflops_per_core * 100.0
    );
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let kept: String = text.chars().take(width - 1).collect();
    format!("{kept}…")
}
