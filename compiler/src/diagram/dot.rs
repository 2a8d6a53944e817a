//! The diagram as Graphviz DOT, for people who lay out with `dot`: the same boxes,
//! labels, colours and nested clusters as the SVG, with Graphviz doing the layout.

use super::svg::fill;
use super::{Diagram, Node};
use std::fmt::Write;

pub fn render(diagram: &Diagram) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quote(&diagram.network));
    let _ = writeln!(
        out,
        "  graph [rankdir=TB, labelloc=t, fontname=\"Helvetica\", label={}];",
        quote(&diagram.title)
    );
    out.push_str(
        "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=10];\n",
    );
    out.push_str("  edge [fontname=\"Helvetica\", fontsize=9];\n");
    write_cluster(&mut out, diagram, None, 1);
    for edge in &diagram.edges {
        let side = diagram.nodes[edge.from].side || diagram.nodes[edge.to].side;
        let style = if side {
            ", style=dashed, color=\"#9ca3af\""
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  n{} -> n{} [label={}{style}];",
            edge.from,
            edge.to,
            quote(&edge.shape)
        );
    }
    out.push_str("}\n");
    out
}

/// Writes the boxes directly in `cluster` (the top level for `None`), then each cluster
/// directly inside it as a `subgraph cluster_N`, recursively.
fn write_cluster(out: &mut String, diagram: &Diagram, cluster: Option<usize>, indent: usize) {
    let pad = "  ".repeat(indent);
    // The top level is written at indent 1, each nested cluster one deeper.
    let level = indent - 1;
    for (i, node) in diagram.nodes.iter().enumerate() {
        if node.clusters.len() == level && node.clusters.last().copied() == cluster {
            let _ = writeln!(out, "{pad}n{i} [{}];", node_attributes(node));
        }
    }
    let mut children: Vec<usize> = Vec::new();
    for node in &diagram.nodes {
        let inside = match cluster {
            None => true,
            Some(c) => node.clusters.get(level - 1) == Some(&c),
        };
        if let Some(&child) = node.clusters.get(level)
            && inside
            && !children.contains(&child)
        {
            children.push(child);
        }
    }
    for child in children {
        let info = &diagram.clusters[child];
        let _ = writeln!(out, "{pad}subgraph cluster_{child} {{");
        let style = if info.side {
            "dashed,rounded"
        } else {
            "rounded"
        };
        let _ = writeln!(
            out,
            "{pad}  label={}; style=\"{style}\"; color=\"#94a3b8\"; fontsize=10;",
            quote(&info.name)
        );
        write_cluster(out, diagram, Some(child), indent + 1);
        let _ = writeln!(out, "{pad}}}");
    }
}

fn node_attributes(node: &Node) -> String {
    let label = quote(&node.lines.join("\n"));
    if node.side {
        format!(
            "label={label}, fillcolor=\"#f3f4f6\", color=\"#9ca3af\", fontcolor=\"#6b7280\", style=\"rounded,filled,dashed\""
        )
    } else {
        format!("label={label}, fillcolor=\"{}\"", fill(node.kind))
    }
}

/// A DOT string literal; a newline becomes DOT's centred line break `\n`.
fn quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}
