//! The `cnnc` compiler: `.cnn` text → AST → graph IR → checked graph → fused graph.
//!
//! Each stage is a module and a pure function from one representation to the next:
//! [`syntax::parse`], [`elaborate::elaborate`], [`check::check`]. [`compile`] runs them
//! all and collects every diagnostic along the way. [`passes::fuse`] and [`passes::plan`]
//! take a checked graph on to the fused graph and its memory plan.

pub mod check;
pub mod codegen;
pub mod diagnostics;
pub mod diagram;
pub mod elaborate;
pub mod graph;
pub mod ops;
pub mod passes;
pub mod span;
pub mod summary;
pub mod syntax;
pub mod winograd;

use check::CheckedGraph;
use diagnostics::Diagnostic;

/// The result of compiling one source text: every network that checked, and every
/// diagnostic (errors and warnings) found on the way.
#[derive(Debug, Default)]
pub struct Compilation {
    pub networks: Vec<CheckedGraph>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Compilation {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Parses, elaborates and checks `source`; never panics on any input.
pub fn compile(source: &str) -> Compilation {
    let file = match syntax::parse(source) {
        Ok(file) => file,
        Err(diagnostics) => {
            return Compilation {
                networks: Vec::new(),
                diagnostics,
            };
        }
    };
    let elaborated = elaborate::elaborate(&file);
    let mut diagnostics = elaborated.diagnostics;
    let mut networks = Vec::new();
    for (graph, elaborated_cleanly) in elaborated.graphs {
        let (checked, found) = check::check(graph, elaborated_cleanly);
        diagnostics.extend(found);
        networks.extend(checked);
    }
    // A mistake inside a block shows once, however often the block is called.
    let mut seen = std::collections::HashSet::new();
    diagnostics.retain(|d| seen.insert((d.code, d.primary.span, d.message.clone())));
    diagnostics.sort_by_key(|d| (d.primary.span.start, d.primary.span.end));
    Compilation {
        networks,
        diagnostics,
    }
}
