//! Reading a .cnn file, compiling it, reporting its diagnostics, and picking a network.

use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::diagnostics::{self, Diagnostic};
use cnnc_compiler::{Compilation, compile};
use std::io::IsTerminal;
use std::path::Path;

pub struct Source {
    pub name: String,
    pub text: String,
}

pub fn read(path: &Path) -> Result<Source, String> {
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

pub fn print_diagnostics(source: &Source, diagnostics: &[Diagnostic]) {
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    for d in diagnostics {
        eprint!(
            "{}",
            diagnostics::render(d, &source.name, &source.text, color)
        );
    }
}

/// Compiles `file`, reports its diagnostics, and returns the chosen network, or the
/// message to fail with.
pub fn compile_network(file: &Path, network: Option<&str>) -> Result<CheckedGraph, String> {
    let source = read(file)?;
    let compilation = compile(&source.text);
    print_diagnostics(&source, &compilation.diagnostics);
    if compilation.has_errors() {
        return Err(format!("{} has errors", source.name));
    }
    choose(compilation, network)
}

fn choose(compilation: Compilation, wanted: Option<&str>) -> Result<CheckedGraph, String> {
    let mut networks = compilation.networks;
    let names = networks
        .iter()
        .map(|n| n.graph.name.clone())
        .collect::<Vec<_>>()
        .join(", ");
    match wanted {
        Some(name) => networks
            .into_iter()
            .find(|n| n.graph.name == name)
            .ok_or_else(|| format!("no network named `{name}`; this file defines: {names}")),
        None if networks.len() == 1 => Ok(networks.remove(0)),
        None => Err(format!(
            "this file defines several networks ({names}); choose one with --network"
        )),
    }
}
