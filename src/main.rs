//! `cnnc`: the command line. Each subcommand runs the compiler's stages as far as it
//! needs and prints what they produced.

use clap::{Parser, Subcommand, ValueEnum};
use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::diagnostics::{self, Diagnostic};
use cnnc_compiler::{Compilation, compile, summary, syntax};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
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

#[derive(Subcommand)]
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
    /// Show an intermediate form of the compiler.
    Build {
        file: PathBuf,
        #[arg(long, value_enum)]
        emit: Emit,
        #[arg(long)]
        network: Option<String>,
    },
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
enum Emit {
    /// The syntax tree, as parsed.
    Ast,
    /// The graph IR: every layer after blocks and repeats are expanded.
    Graph,
}

/// Deeply nested input is refused by the parser, but the stages recurse; give them room.
const STACK_BYTES: usize = 256 << 20;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let worker = std::thread::Builder::new()
        .stack_size(STACK_BYTES)
        .spawn(move || run(cli));
    match worker.map(|w| w.join()) {
        Ok(Ok(code)) => code,
        _ => {
            eprintln!("error: cnnc failed unexpectedly; please report this with the input file");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check { files, format } => check(&files, format),
        Command::Summary {
            file,
            format,
            depth,
            network,
        } => with_network(&file, network.as_deref(), |checked| {
            let summary = summary::summarize(checked, depth);
            match format {
                SummaryFormat::Table => print!("{}", summary::table(&summary)),
                SummaryFormat::Markdown => print!("{}", summary::markdown(&summary)),
                SummaryFormat::Json => println!("{}", pretty_json(&summary)),
            }
        }),
        Command::Build {
            file,
            emit,
            network,
        } => build(&file, emit, network.as_deref()),
    }
}

fn pretty_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

struct Source {
    name: String,
    text: String,
}

fn read(path: &Path) -> Result<Source, String> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {name}: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "{name} is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    Ok(Source { name, text })
}

fn print_diagnostics(source: &Source, diagnostics: &[Diagnostic]) {
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    for d in diagnostics {
        eprint!(
            "{}",
            diagnostics::render(d, &source.name, &source.text, color)
        );
    }
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

/// `ok    examples/lenet5.cnn  LeNet5: 61,706 params, 416.52 K MACs`
fn check_line(name: &str, compilation: &Compilation) -> String {
    let count = |severity_error: bool| {
        compilation
            .diagnostics
            .iter()
            .filter(|d| d.is_error() == severity_error)
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

/// Compiles `file`, reports its diagnostics, and runs `then` on the chosen network.
fn with_network(file: &Path, network: Option<&str>, then: impl FnOnce(&CheckedGraph)) -> ExitCode {
    let source = match read(file) {
        Ok(s) => s,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let compilation = compile(&source.text);
    print_diagnostics(&source, &compilation.diagnostics);
    if compilation.has_errors() {
        return ExitCode::FAILURE;
    }
    match choose(&compilation.networks, network) {
        Ok(checked) => {
            then(checked);
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn choose<'a>(
    networks: &'a [CheckedGraph],
    wanted: Option<&str>,
) -> Result<&'a CheckedGraph, String> {
    let names = || {
        networks
            .iter()
            .map(|n| n.graph.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (wanted, networks) {
        (Some(name), _) => networks
            .iter()
            .find(|n| n.graph.name == name)
            .ok_or_else(|| format!("no network named `{name}`; this file defines: {}", names())),
        (None, [only]) => Ok(only),
        (None, _) => Err(format!(
            "this file defines several networks ({}); choose one with --network",
            names()
        )),
    }
}

fn build(file: &Path, emit: Emit, network: Option<&str>) -> ExitCode {
    match emit {
        Emit::Graph => with_network(file, network, |checked| print!("{}", checked.graph)),
        Emit::Ast => {
            let source = match read(file) {
                Ok(s) => s,
                Err(message) => {
                    eprintln!("error: {message}");
                    return ExitCode::FAILURE;
                }
            };
            match syntax::parse(&source.text) {
                Ok(ast) => {
                    print!("{}", syntax::print_ast(&ast, &source.text));
                    ExitCode::SUCCESS
                }
                Err(diagnostics) => {
                    print_diagnostics(&source, &diagnostics);
                    ExitCode::FAILURE
                }
            }
        }
    }
}
