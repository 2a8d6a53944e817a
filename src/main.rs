//! `cnnc`: the command line. Each subcommand runs the pipeline as far as it needs and
//! prints what it produced.

mod bench;
mod bench_gpu;
mod diff;
mod fmt_cmd;
mod gpu_cmd;
mod graph_cmd;
mod run;
mod source;

use clap::{Parser, Subcommand, ValueEnum};
use cnnc_compiler::diagnostics;
use cnnc_compiler::{Compilation, codegen, compile, passes, summary, syntax};
use graph_cmd::GraphFormat;
use source::{compile_network, print_diagnostics, read};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cnnc",
    version,
    about = "A compiler for CNN architecture descriptions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Each subcommand's arguments are built only when it is the one run (`defer`):
/// building every subcommand's took 42 us of each start (`Cli::parse` 130 -> 88 us
/// cold for `cnnc run`).
#[derive(Subcommand)]
#[command(defer = true)]
enum Command {
    /// Check every shape of one or more .cnn files; exit 1 if any has an error.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// `human` (miette reports) or `json` (one JSON array of diagnostics).
        #[arg(long, value_enum, default_value_t = DiagnosticFormat::Human)]
        format: DiagnosticFormat,
    },
    /// Per-layer output shapes, parameters and multiply-accumulates, and totals.
    Summary {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = SummaryFormat::Table)]
        format: SummaryFormat,
        /// Collapse layers deeper than N name segments into one row per block.
        #[arg(long, value_name = "N")]
        depth: Option<usize>,
        /// Which network of the file, when it defines several.
        #[arg(long)]
        network: Option<String>,
    },
    /// Draw the network's architecture: SVG (laid out by cnnc) or Graphviz DOT.
    Graph {
        file: PathBuf,
        /// Where to write the diagram (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// `svg` or `dot` (default: `dot` for a .dot or .gv output, else `svg`).
        #[arg(long, value_enum)]
        format: Option<GraphFormat>,
        /// Collapse layers deeper than N name segments into one box per block.
        #[arg(long, value_name = "N")]
        depth: Option<usize>,
        #[arg(long)]
        network: Option<String>,
    },
    /// Rewrite .cnn files in canonical form, comments kept; exit 1 on a syntax error.
    Fmt {
        /// Files to rewrite in place; `-` formats standard input to standard output.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write nothing: show the diff of each file that would change; exit 1 if any.
        #[arg(long)]
        check: bool,
    },
    /// Show an intermediate form of the compiler.
    Build {
        file: PathBuf,
        #[arg(long, value_enum)]
        emit: Emit,
        #[arg(long)]
        network: Option<String>,
        /// Threads the generated code is cut into chunks for (`--emit clif` only)
        /// [default: the cores available, as a compiled run uses].
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Run a network: seeded weights and a seeded random input unless given.
    Run(RunArgs),
    /// Measure a network on the JIT (or another backend): compile time, latency
    /// percentiles, images/s, GFLOP/s and the share of the machine's FMA peak;
    /// `--profile` adds a per-kernel table; `--peak` measures the peak alone.
    Bench(BenchArgs),
    /// Export a network and its weights (seeded unless given) as an ONNX model (opset 17).
    Export {
        file: PathBuf,
        /// Where to write the .onnx file.
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long)]
        weights: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Leave out the side outputs (auxiliary classifiers), as inference does.
        #[arg(long)]
        prune_side_outputs: bool,
        #[arg(long)]
        network: Option<String>,
    },
    /// Import an ONNX model as a readable .cnn file and a safetensors file of its weights.
    Import {
        model: PathBuf,
        /// Where to write the .cnn file.
        #[arg(short, long)]
        output: PathBuf,
        /// Where to write the weights [default: the .cnn path with .safetensors].
        #[arg(long)]
        weights: Option<PathBuf>,
    },
    /// List the GPU adapters wgpu finds: backend, type, driver and limits.
    Devices {
        #[arg(long, value_enum, default_value_t = RunFormat::Text)]
        format: RunFormat,
    },
    /// Write a network's seeded weights as a safetensors file.
    Init {
        file: PathBuf,
        /// Where to write the weights.
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        network: Option<String>,
    },
}

#[derive(clap::Args)]
struct BenchArgs {
    #[arg(required_unless_present = "peak")]
    file: Option<PathBuf>,
    /// Measure and print the machine's in-register FMA peak and the tile's, per core
    /// and on all threads at once, instead of running a network.
    #[arg(long, conflicts_with = "file")]
    peak: bool,
    /// Which executor to time.
    #[arg(long, value_enum, default_value_t = Backend::Jit)]
    backend: Backend,
    /// Threads [default: the cores available].
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Measured runs, after the warm-up.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Time every kernel of the fused graph; print them slowest first (JIT and GPU).
    #[arg(long)]
    profile: bool,
    /// Draw the per-kernel times as an SVG bar chart, in network order (JIT only).
    #[arg(long, value_name = "FILE.svg")]
    chart: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = RunFormat::Text)]
    format: RunFormat,
    /// A safetensors file of weights [default: seeded ones].
    #[arg(long)]
    weights: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    network: Option<String>,
}

#[derive(clap::Args)]
struct RunArgs {
    file: PathBuf,
    /// A safetensors file whose tensor names are the layer names (`conv1.weight`).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// An image (PNG, JPEG) or a .npy array; repeat for a batch.
    #[arg(long)]
    input: Vec<PathBuf>,
    /// Seed of the initialisation and of the random input.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Samples per run; one input is repeated to fill the batch.
    #[arg(long)]
    batch: Option<usize>,
    /// How many classes to list per sample.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// A text file with one class label per line.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Per-channel mean subtracted from images scaled to [0, 1] (default: ImageNet's for RGB, 0 otherwise).
    #[arg(long, value_delimiter = ',')]
    mean: Option<Vec<f32>>,
    /// Per-channel standard deviation images are divided by (default: ImageNet's for RGB, 1 otherwise).
    #[arg(long, value_delimiter = ',')]
    std: Option<Vec<f32>>,
    /// Write the output, and the tensors named by --save, as .npy files in DIR.
    #[arg(long, value_name = "DIR")]
    save_outputs: Option<PathBuf>,
    /// A layer or block whose output to save (with --save-outputs); repeatable.
    #[arg(long, value_name = "NAME")]
    save: Vec<String>,
    /// Replace .npy files that already exist in the --save-outputs directory.
    #[arg(long)]
    overwrite: bool,
    /// Run the JIT with every buffer between guard pages, so generated code that
    /// strays outside one faults (twice: against the page after, then before).
    #[arg(long)]
    check_bounds: bool,
    #[arg(long, value_enum, default_value_t = RunFormat::Text)]
    format: RunFormat,
    /// Which executor runs the network [default: jit, or reference with --save, since
    /// the other backends reuse the buffers of inner layers].
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// Where to run: `auto` picks the GPU for large networks when a hardware adapter
    /// exists, else the CPU JIT, and says why.
    #[arg(long, value_enum, conflicts_with = "backend")]
    device: Option<gpu_cmd::Device>,
    /// Refuse runs that need more memory than this (default: the memory available,
    /// for runs that need more than 64 MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    memory_limit: Option<u64>,
    #[arg(long)]
    network: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DiagnosticFormat {
    Human,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SummaryFormat {
    Table,
    Json,
    Markdown,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RunFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// The reference interpreter: simple, exact, the oracle for other backends.
    Reference,
    /// The fused graph (folded BN, epilogues, concat in place) over the memory plan's
    /// buffers, with the reference kernels: the passes, proven numerically.
    Fused,
    /// The fused graph with every kernel compiled by Cranelift (the register tile an
    /// AVX-512/AVX2 microkernel, or generated too where the CPU has neither).
    Jit,
    /// The fused graph as WGSL compute shaders through wgpu (Vulkan or OpenGL).
    Gpu,
}

impl Backend {
    fn runtime(self) -> run::Backend {
        match self {
            Backend::Reference => run::Backend::Reference,
            Backend::Fused => run::Backend::Fused,
            Backend::Jit => run::Backend::Jit,
            Backend::Gpu => run::Backend::Gpu { fallback: false },
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Emit {
    /// The syntax tree, as parsed.
    Ast,
    /// The graph IR: every layer after blocks and repeats are expanded.
    Graph,
    /// The fused graph after the passes (inference: side outputs pruned), with its
    /// memory plan.
    Fused,
    /// The Cranelift IR the JIT generates for each kernel it compiles, for this
    /// machine's microkernel.
    Clif,
    /// The WGSL compute shader of every kernel (for WebGPU's default limits).
    Wgsl,
}

fn parse_memory(text: &str) -> Result<u64, String> {
    cnnc_runtime::memory::parse_size(text)
        .ok_or_else(|| format!("`{text}` is not a size such as 4GiB or 512MiB"))
}

/// Deeply nested input is refused by the parser, but the stages recurse; they run on a
/// stack this big, switched to on the main thread.
const STACK_BYTES: usize = 256 << 20;

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes away
    // (`cnnc run ... | head -1`) instead of failing on the next print.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match std::panic::catch_unwind(|| stacker::grow(STACK_BYTES, move || run(cli))) {
        Ok(code) => code,
        Err(_) => {
            eprintln!("error: cnnc failed unexpectedly; please report this with the input file");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Check { files, format } => return check(&files, format),
        Command::Fmt { files, check } => return fmt_cmd::fmt(&files, check),
        Command::Summary {
            file,
            format,
            depth,
            network,
        } => compile_network(&file, network.as_deref()).map(|checked| {
            let summary = summary::summarize(&checked, depth);
            match format {
                SummaryFormat::Table => print!("{}", summary::table(&summary)),
                SummaryFormat::Markdown => print!("{}", summary::markdown(&summary)),
                SummaryFormat::Json => println!("{}", pretty_json(&summary)),
            }
        }),
        Command::Graph {
            file,
            output,
            format,
            depth,
            network,
        } => compile_network(&file, network.as_deref()).and_then(|checked| {
            let format = GraphFormat::choose(format, output.as_deref());
            graph_cmd::graph(&checked, format, depth, output.as_deref())
        }),
        Command::Build {
            file,
            emit,
            network,
            threads,
        } => build(&file, emit, network.as_deref(), threads),
        Command::Run(args) => run_network(args),
        Command::Bench(args) => bench_network(args),
        Command::Export {
            file,
            output,
            weights,
            seed,
            prune_side_outputs,
            network,
        } => compile_network(&file, network.as_deref()).and_then(|checked| {
            let options = cnnc_onnx::ExportOptions { prune_side_outputs };
            run::export(&checked, weights.as_deref(), seed, options, &output)
                .map_err(|e| e.to_string())
        }),
        Command::Devices { format } => gpu_cmd::devices(format == RunFormat::Json),
        Command::Import {
            model,
            output,
            weights,
        } => {
            let weights = weights.unwrap_or_else(|| output.with_extension("safetensors"));
            run::import(&model, &output, &weights)
        }
        Command::Init {
            file,
            output,
            seed,
            network,
        } => compile_network(&file, network.as_deref())
            .and_then(|checked| run::init(&checked, seed, &output).map_err(|e| e.to_string())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn bench_network(args: BenchArgs) -> Result<(), String> {
    let threads = args
        .threads
        .unwrap_or_else(cnnc_runtime::jit::machine_threads);
    if threads == 0 || args.batch == 0 || args.runs == 0 {
        return Err("--threads, --batch and --runs must be at least 1".into());
    }
    // Without a file, clap has made sure --peak was asked for.
    let Some(file) = args.file else {
        let report = bench::peak(threads);
        match args.format {
            RunFormat::Text => bench::print_peak(&report),
            RunFormat::Json => println!("{}", pretty_json(&report)),
        }
        return Ok(());
    };
    let started = std::time::Instant::now();
    let checked = compile_network(&file, args.network.as_deref())?;
    if args.backend == Backend::Gpu {
        let request = bench_gpu::Request {
            batch: args.batch,
            runs: args.runs,
            warmup: args.warmup,
            seed: args.seed,
            profile: args.profile,
        };
        return bench_gpu::bench(&checked, &request, args.format == RunFormat::Json);
    }
    let request = bench::BenchRequest {
        backend: args.backend.runtime(),
        threads,
        batch: args.batch,
        runs: args.runs,
        warmup: args.warmup,
        profile: args.profile,
        chart: args.chart,
        weights: args.weights,
        seed: args.seed,
        progress: args.format == RunFormat::Text
            && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        front_end: started.elapsed(),
    };
    let report = bench::bench(&checked, &request).map_err(|e| e.to_string())?;
    match args.format {
        RunFormat::Text => bench::print(&report),
        RunFormat::Json => println!("{}", pretty_json(&report)),
    }
    Ok(())
}

fn run_network(args: RunArgs) -> Result<(), String> {
    let checked = compile_network(&args.file, args.network.as_deref())?;
    let chosen = args.device.map(|device| {
        let batch = args.batch.unwrap_or(args.input.len().max(1));
        let (backend, why) = gpu_cmd::choose(&checked, device, batch);
        eprintln!("device: {why}");
        backend
    });
    let request = run::RunRequest {
        weights: args.weights,
        seed: args.seed,
        inputs: args.input,
        batch: args.batch,
        top: args.top,
        labels: args.labels,
        mean: args.mean,
        std: args.std,
        save_outputs: args.save_outputs,
        save: args.save.clone(),
        json: args.format == RunFormat::Json,
        memory_limit: args.memory_limit,
        overwrite: args.overwrite,
        check_bounds: args.check_bounds,
        backend: match args.backend {
            Some(backend) => backend.runtime(),
            None if let Some(backend) = chosen => backend,
            None if !args.save.is_empty() => run::Backend::Reference,
            None => run::Backend::Jit,
        },
    };
    run::run(&checked, &request).map_err(|e| e.to_string())
}

fn pretty_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

fn check(files: &[PathBuf], format: DiagnosticFormat) -> ExitCode {
    let mut failed = false;
    let mut json = Vec::new();
    for path in files {
        let source = match read(path) {
            Ok(s) => s,
            Err(message) => {
                eprintln!("error: {message}");
                failed = true;
                continue;
            }
        };
        let compilation = compile(&source.text);
        failed |= compilation.has_errors();
        match format {
            DiagnosticFormat::Json => json.extend(
                compilation
                    .diagnostics
                    .iter()
                    .map(|d| diagnostics::to_json(d, &source.name, &source.text)),
            ),
            DiagnosticFormat::Human => {
                print_diagnostics(&source, &compilation.diagnostics);
                println!("{}", check_line(&source.name, &compilation));
            }
        }
    }
    if format == DiagnosticFormat::Json {
        println!("{}", pretty_json(&json));
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `ok    examples/lenet5.cnn: LeNet5 61,706 params, 416.52 K MACs`
fn check_line(name: &str, compilation: &Compilation) -> String {
    let count = |errors: bool| {
        compilation
            .diagnostics
            .iter()
            .filter(|d| d.is_error() == errors)
            .count()
    };
    let (errors, warnings) = (count(true), count(false));
    if errors > 0 {
        return format!("error {name}: {errors} error(s), {warnings} warning(s)");
    }
    let networks: Vec<String> = compilation
        .networks
        .iter()
        .map(|checked| {
            let s = summary::summarize(checked, None);
            format!(
                "{} {} params, {} MACs",
                s.network,
                summary::thousands(s.totals.inference.params),
                summary::si(s.totals.inference.macs)
            )
        })
        .collect();
    let warned = if warnings > 0 {
        format!(" ({warnings} warning(s))")
    } else {
        String::new()
    };
    format!("ok    {name}: {}{warned}", networks.join("; "))
}

fn build(
    file: &std::path::Path,
    emit: Emit,
    network: Option<&str>,
    threads: Option<usize>,
) -> Result<(), String> {
    match threads {
        Some(_) if !matches!(emit, Emit::Clif) => {
            return Err("--threads applies to --emit clif only".into());
        }
        Some(0) => return Err("--threads must be at least 1".into()),
        _ => {}
    }
    match emit {
        Emit::Graph => compile_network(file, network).map(|checked| print!("{}", checked.graph)),
        Emit::Fused => compile_network(file, network).map(|checked| {
            let fused = passes::fuse(&checked);
            print!("{}", passes::listing(&fused, &passes::plan(&fused)));
        }),
        Emit::Clif => compile_network(file, network).and_then(|checked| {
            // Cut for the threads a run would use: chunk counts and sizes follow them.
            let threads = threads
                .unwrap_or_else(cnnc_runtime::jit::machine_threads)
                .min(cnnc_runtime::jit::MAX_THREADS);
            let fused = passes::fuse(&checked);
            let (target, _) = cnnc_runtime::jit::host_target(threads).map_err(|e| e.to_string())?;
            let kernel_threads = codegen::cpu::kernel_threads(&checked, &fused, threads);
            let codes: Vec<_> = codegen::cpu::compile(&fused, &target, &kernel_threads)
                .into_iter()
                .flatten()
                .collect();
            // A pool its conv computes runs no function of its own.
            let pooled: Vec<(usize, usize)> = (codes.iter())
                .filter_map(|code| Some((code.pools()?, code.kernel)))
                .collect();
            for code in &codes {
                let kernel = &fused.kernels[code.kernel];
                if let Some(&(_, conv)) = pooled.iter().find(|(pool, _)| *pool == code.kernel) {
                    let conv = &fused.kernels[conv].name;
                    println!(
                        "; kernel {} `{}`: computed by `{conv}`\n",
                        code.kernel, kernel.name
                    );
                    continue;
                }
                let algorithm = kernel.algorithm.marker().map(|m| format!(" [{m}]"));
                let cut_for = match kernel_threads[code.kernel] {
                    1 => "1 thread".to_string(),
                    n => format!("{n} threads"),
                };
                println!(
                    "; kernel {} `{}`: {}{}, cut for {cut_for}",
                    code.kernel,
                    kernel.name,
                    kernel.op.rule().describe(),
                    algorithm.unwrap_or_default(),
                );
                println!("; argument slots: {:?}", code.args);
                println!("{}", code.function);
            }
            Ok(())
        }),
        Emit::Wgsl => {
            compile_network(file, network).and_then(|checked| gpu_cmd::emit_wgsl(&checked))
        }
        Emit::Ast => {
            let source = read(file)?;
            match syntax::parse(&source.text) {
                Ok(ast) => {
                    print!("{}", syntax::print_ast(&ast, &source.text));
                    Ok(())
                }
                Err(diagnostics) => {
                    print_diagnostics(&source, &diagnostics);
                    Err(format!("{} has a syntax error", source.name))
                }
            }
        }
    }
}
