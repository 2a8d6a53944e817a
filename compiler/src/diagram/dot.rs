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
    let tree = Tree::new(diagram);
    write_cluster(&mut out, diagram, &tree, diagram.clusters.len(), 1);
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

/// What each cluster directly holds, in order of first appearance; index
/// `clusters.len()` stands for the top level.
struct Tree {
    nodes: Vec<Vec<usize>>,
    children: Vec<Vec<usize>>,
}

impl Tree {
    fn new(diagram: &Diagram) -> Tree {
        let top = diagram.clusters.len();
        let mut tree = Tree {
            nodes: vec![Vec::new(); top + 1],
            children: vec![Vec::new(); top + 1],
        };
        let mut placed = vec![false; top];
        for (i, node) in diagram.nodes.iter().enumerate() {
            let mut parent = top;
            for &c in &node.clusters {
                if !std::mem::replace(&mut placed[c], true) {
                    tree.children[parent].push(c);
                }
                parent = c;
            }
            tree.nodes[parent].push(i);
        }
        tree
    }
}

/// Writes the boxes directly in `cluster` (the top level is `clusters.len()`), then
/// each cluster directly inside it as a `subgraph cluster_N`, recursively.
fn write_cluster(out: &mut String, diagram: &Diagram, tree: &Tree, cluster: usize, indent: usize) {
    let pad = "  ".repeat(indent);
    for &i in &tree.nodes[cluster] {
        let _ = writeln!(out, "{pad}n{i} [{}];", node_attributes(&diagram.nodes[i]));
    }
    for &child in &tree.children[cluster] {
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
        write_cluster(out, diagram, tree, child, indent + 1);
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
