//! `cnnc graph`: a network's architecture diagram, as SVG or Graphviz DOT, to stdout or
//! to a file.

use clap::ValueEnum;
use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::diagram;
use std::io::Write;
use std::path::Path;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// A standalone SVG image, laid out by cnnc.
    Svg,
    /// Graphviz DOT, for `dot -Tpng`.
    Dot,
}

impl GraphFormat {
    /// The format asked for, else the one the output's extension names, else SVG.
    pub fn choose(asked: Option<GraphFormat>, output: Option<&Path>) -> GraphFormat {
        let named = output
            .and_then(Path::extension)
            .is_some_and(|e| e == "dot" || e == "gv");
        asked.unwrap_or(if named {
            GraphFormat::Dot
        } else {
            GraphFormat::Svg
        })
    }
}

pub fn graph(
    checked: &CheckedGraph,
    format: GraphFormat,
    depth: Option<usize>,
    output: Option<&Path>,
) -> Result<(), String> {
    let text = match format {
        GraphFormat::Svg => diagram::to_svg(checked, depth),
        GraphFormat::Dot => diagram::to_dot(checked, depth),
    };
    match output {
        Some(path) => write_atomically(path, &text),
        None => match std::io::stdout().write_all(text.as_bytes()) {
            // The reader stopped early (`| head`): nothing is wrong.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            result => result.map_err(|e| format!("cannot write the diagram to stdout: {e}")),
        },
    }
}

/// Writes through a temporary file in the same directory and renames it into place, so
/// an interrupted run never leaves a half-written diagram behind.
fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("{} is not a file name", path.display()))?;
    let temporary = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    std::fs::write(&temporary, text).map_err(fail)?;
    std::fs::rename(&temporary, path).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        fail(e)
    })
}
