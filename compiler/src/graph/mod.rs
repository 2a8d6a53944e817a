//! The graph IR: a flat DAG of layers in topological order, each with its hierarchical
//! name, its op, and where in the source it came from.

use crate::ops::Op;
use crate::span::Span;
use std::fmt::{self, Write};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// Where a node came from: the call, its arguments, and the chain of block calls that
/// led there (innermost last).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Origin {
    pub span: Span,
    pub args: Vec<(&'static str, Span)>,
    pub call_sites: Vec<CallSite>,
}

impl Origin {
    pub fn arg_span(&self, name: &str) -> Option<Span> {
        self.args.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallSite {
    pub block: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: NodeId,
    /// Hierarchical, dot-separated: `layer1.0.conv1`.
    pub name: String,
    pub op: Op,
    pub inputs: Vec<NodeId>,
    pub origin: Origin,
    /// The side output this node serves, if it exists only for one (pruned for
    /// inference).
    pub side: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SideOutput {
    pub name: String,
    pub node: NodeId,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    pub name: String,
    pub span: Span,
    /// Nodes in topological order: every input precedes its users.
    pub nodes: Vec<Node>,
    pub inputs: Vec<NodeId>,
    pub output: NodeId,
    pub side_outputs: Vec<SideOutput>,
}

impl Graph {
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }
}

/// `--emit graph`: one line per node, SSA style.
impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "graph {} {{", self.name)?;
        for node in &self.nodes {
            let mut line = format!("  %{} = {}", node.id.0, node.op.rule().describe());
            let inputs: Vec<String> = node.inputs.iter().map(|i| format!("%{}", i.0)).collect();
            if !inputs.is_empty() {
                let _ = write!(line, " ({})", inputs.join(", "));
            }
            let _ = write!(line, "  // {}", node.name);
            if let Some(side) = node.side {
                let _ = write!(line, " [side {}]", self.side_outputs[side].name);
            }
            writeln!(f, "{line}")?;
        }
        writeln!(f, "  output %{}", self.output.0)?;
        for side in &self.side_outputs {
            writeln!(f, "  side output {} %{}", side.name, side.node.0)?;
        }
        writeln!(f, "}}")
    }
}
