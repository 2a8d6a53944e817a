//! Architecture diagrams of a checked network: `cnnc graph` as SVG (laid out here, no
//! external program) or as Graphviz DOT.
//!
//! [`Diagram::new`] turns the checked graph into boxes, edges and clusters: one box per
//! layer, or per block deeper than `--depth` (collapsed exactly as the summary collapses
//! its rows, with the summary's totals), edges labelled with the tensor they carry, and
//! clusters from the hierarchical layer names (`layer1.0.conv1` sits in `layer1` and
//! `layer1.0`). The writers are pure functions from a diagram to text.

mod dot;
pub mod layout;
pub mod profile;
mod svg;

use crate::check::CheckedGraph;
use crate::ops::Op;
use crate::summary::{self, Summary, si, thousands};
use std::collections::{HashMap, HashSet};

/// The SVG diagram of a network, blocks deeper than `depth` collapsed.
pub fn to_svg(checked: &CheckedGraph, depth: Option<usize>) -> String {
    svg::render(&Diagram::new(checked, depth))
}

/// The Graphviz DOT diagram of a network, blocks deeper than `depth` collapsed.
pub fn to_dot(checked: &CheckedGraph, depth: Option<usize>) -> String {
    dot::render(&Diagram::new(checked, depth))
}

/// What a box stands for; the writers colour by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Input,
    Conv,
    Pool,
    Dense,
    Norm,
    Activation,
    Merge,
    Reshape,
    /// Several layers collapsed by `--depth`.
    Block,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The full hierarchical name: the layer's, or the collapsed block's.
    pub name: String,
    /// The text in the box, one line each.
    pub lines: Vec<String>,
    pub kind: Kind,
    /// Exists only for a side output (an auxiliary classifier).
    pub side: bool,
    /// The clusters that hold it, outermost first.
    pub clusters: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    /// The shape of the tensor it carries: `64x112x112`.
    pub shape: String,
}

/// A block drawn as a labelled box around its layers.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Its name prefix: `inception_4a.branch2`.
    pub name: String,
    /// Holds only side-output layers.
    pub side: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Diagram {
    pub network: String,
    /// `LeNet5 (input: 1x32x32): 61,706 params, 416.52 K MACs`
    pub title: String,
    /// Boxes in topological order: every edge goes from a lower index to a higher one.
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    pub clusters: Vec<Cluster>,
}

impl Diagram {
    pub fn new(checked: &CheckedGraph, depth: Option<usize>) -> Diagram {
        let summary = summary::summarize(checked, depth);
        let graph = &checked.graph;
        let names = graph.nodes.iter().map(|n| n.name.as_str());
        // Without a depth every layer is its own row.
        let rows: Vec<usize> = match depth {
            Some(depth) => summary::collapsed_rows(names, depth)
                .into_iter()
                .map(|c| c.index)
                .collect(),
            None => (0..graph.nodes.len()).collect(),
        };
        let mut clusters = Clusters::default();
        let mut nodes = Vec::with_capacity(summary.layers.len());
        let mut first_layer = vec![0; summary.layers.len()];
        for (layer, &row) in rows.iter().enumerate().rev() {
            if let Some(slot) = first_layer.get_mut(row) {
                *slot = layer;
            }
        }
        for (row, &first) in summary.layers.iter().zip(&first_layer) {
            let layer = &graph.nodes[first];
            let block = layer.name != row.name;
            nodes.push(Node {
                name: row.name.clone(),
                lines: box_lines(row, block),
                kind: if block { Kind::Block } else { kind(&layer.op) },
                side: row.side.is_some(),
                clusters: clusters.path(&row.name, row.side.is_some()),
            });
        }
        Diagram {
            network: graph.name.clone(),
            title: title(&summary),
            edges: edges(checked, &rows),
            nodes,
            clusters: clusters.list,
        }
    }

    /// The layout of this diagram's boxes, sized for the SVG writer's font.
    pub fn layout(&self) -> layout::Layout {
        layout::layout(&self.layout_input())
    }

    fn layout_input(&self) -> layout::LayoutInput {
        layout::LayoutInput {
            items: self
                .nodes
                .iter()
                .map(|n| {
                    let (width, height) = svg::box_size(&n.lines);
                    layout::Item {
                        width,
                        height,
                        clusters: n.clusters.clone(),
                        side: n.side,
                    }
                })
                .collect(),
            edges: self.edges.iter().map(|e| (e.from, e.to)).collect(),
            cluster_count: self.clusters.len(),
        }
    }
}

/// Clusters by name prefix, numbered in order of first appearance.
#[derive(Default)]
struct Clusters {
    list: Vec<Cluster>,
    ids: HashMap<String, usize>,
}

impl Clusters {
    /// The clusters around a box named `name`: one per proper prefix of its name, and
    /// the cluster of its own name if one came before it (a named `concat` joins the
    /// branches it closes).
    fn path(&mut self, name: &str, side: bool) -> Vec<usize> {
        let segments: Vec<&str> = name.split('.').collect();
        let own = self.ids.get(name).copied();
        let mut path: Vec<usize> = (1..segments.len())
            .map(|n| {
                let prefix = segments[..n].join(".");
                let id = *self.ids.entry(prefix.clone()).or_insert_with(|| {
                    self.list.push(Cluster {
                        name: prefix,
                        side: true,
                    });
                    self.list.len() - 1
                });
                self.list[id].side &= side;
                id
            })
            .collect();
        if let Some(id) = own {
            self.list[id].side &= side;
            path.push(id);
        }
        path
    }
}

/// One edge per pair of boxes that a tensor connects, labelled with the first such
/// tensor's shape; edges inside a collapsed block vanish.
fn edges(checked: &CheckedGraph, rows: &[usize]) -> Vec<Edge> {
    let mut seen = HashSet::new();
    let mut edges = Vec::new();
    for node in &checked.graph.nodes {
        for input in &node.inputs {
            let (from, to) = (rows[input.0], rows[node.id.0]);
            if from < to && seen.insert((from, to)) {
                edges.push(Edge {
                    from,
                    to,
                    shape: checked.facts[input.0].shape.to_string(),
                });
            }
        }
    }
    edges
}

/// A layer shows its own name (its blocks are the clusters around it) and op; a
/// collapsed block its full name and totals.
fn box_lines(row: &summary::Row, block: bool) -> Vec<String> {
    if !block {
        let short = row.name.rsplit('.').next().unwrap_or(&row.name);
        return vec![short.to_string(), row.op.clone()];
    }
    let layers = if row.layers == 1 { "layer" } else { "layers" };
    vec![
        row.name.clone(),
        format!("{} {layers}, {} params", row.layers, si(row.params)),
        format!("{} MACs → {}", si(row.macs), row.output),
    ]
}

fn title(summary: &Summary) -> String {
    let inputs: Vec<String> = summary
        .inputs
        .iter()
        .map(|i| format!("{}: {}", i.name, i.shape))
        .collect();
    let totals = summary.totals.inference;
    format!(
        "{} ({}): {} params, {} MACs",
        summary.network,
        inputs.join(", "),
        thousands(totals.params),
        si(totals.macs)
    )
}

pub(crate) fn kind(op: &Op) -> Kind {
    match op {
        Op::Input(_) => Kind::Input,
        Op::Conv(_) => Kind::Conv,
        Op::Pool(_) | Op::GlobalPool(_) | Op::AdaptivePool(_) => Kind::Pool,
        Op::Dense(_) => Kind::Dense,
        Op::Lrn(_) | Op::BatchNorm(_) => Kind::Norm,
        Op::Activation(_) | Op::Dropout(_) => Kind::Activation,
        Op::Concat(_) | Op::Add(_) => Kind::Merge,
        Op::Flatten(_) => Kind::Reshape,
    }
}
