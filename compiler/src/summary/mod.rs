//! `cnnc summary`: per layer its name, op, output shape, parameters and MACs; totals for
//! inference and with side outputs; activation memory. Rendered as a table, Markdown or
//! JSON, optionally with blocks collapsed to a depth, like torchinfo.

mod render;

pub use render::{markdown, table};

use crate::check::CheckedGraph;
use crate::ops::Shape;
use serde::Serialize;

/// Bytes per activation element: the runtime computes in f32.
const BYTES_PER_ELEMENT: u64 = 4;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub network: String,
    pub inputs: Vec<NamedShape>,
    pub layers: Vec<Row>,
    pub totals: Totals,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NamedShape {
    pub name: String,
    pub shape: Shape,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub name: String,
    pub op: String,
    pub output: Shape,
    pub params: u64,
    pub macs: u64,
    /// The side output this row belongs to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub side: Option<String>,
    /// How many layers the row stands for (more than 1 when collapsed by `--depth`).
    pub layers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Count {
    pub params: u64,
    pub macs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Totals {
    /// Side outputs pruned.
    pub inference: Count,
    /// Everything, side outputs included; `None` when the network has none.
    pub with_side_outputs: Option<Count>,
    pub side_outputs: Vec<String>,
    pub activations: Activations,
}

/// Activation memory per sample in f32, for inference: every layer's output without
/// reuse, the largest one, and the peak under the memory plan (after the passes).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Activations {
    pub total_bytes: u64,
    pub largest_bytes: u64,
    pub largest_tensor: String,
    pub peak_bytes: u64,
}

pub fn summarize(checked: &CheckedGraph, depth: Option<usize>) -> Summary {
    let graph = &checked.graph;
    let side_name = |side: Option<usize>| side.map(|i| graph.side_outputs[i].name.clone());
    let rows: Vec<Row> = graph
        .nodes
        .iter()
        .zip(&checked.facts)
        .map(|(node, facts)| Row {
            name: node.name.clone(),
            op: node.op.rule().describe(),
            output: facts.shape.clone(),
            params: facts.params,
            macs: facts.macs,
            side: side_name(node.side),
            layers: 1,
        })
        .collect();
    let mut inference = Count::default();
    let mut all = Count::default();
    let mut activations = Activations {
        total_bytes: 0,
        largest_bytes: 0,
        largest_tensor: String::new(),
        peak_bytes: crate::passes::plan(&crate::passes::fuse(checked)).arena_bytes,
    };
    for (node, facts) in graph.nodes.iter().zip(&checked.facts) {
        // The checker has verified that these products fit; saturate rather than wrap
        // in the sums, which it did not see.
        all.params = all.params.saturating_add(facts.params);
        all.macs = all.macs.saturating_add(facts.macs);
        if node.side.is_some() {
            continue;
        }
        inference.params = inference.params.saturating_add(facts.params);
        inference.macs = inference.macs.saturating_add(facts.macs);
        let bytes = facts
            .shape
            .0
            .iter()
            .product::<u64>()
            .saturating_mul(BYTES_PER_ELEMENT);
        activations.total_bytes = activations.total_bytes.saturating_add(bytes);
        if bytes > activations.largest_bytes {
            activations.largest_bytes = bytes;
            activations.largest_tensor = node.name.clone();
        }
    }
    let side_outputs: Vec<String> = graph.side_outputs.iter().map(|s| s.name.clone()).collect();
    Summary {
        network: graph.name.clone(),
        inputs: graph
            .inputs
            .iter()
            .map(|&i| NamedShape {
                name: graph.node(i).name.clone(),
                shape: checked.facts[i.0].shape.clone(),
            })
            .collect(),
        layers: match depth {
            Some(depth) => collapse(rows, depth),
            None => rows,
        },
        totals: Totals {
            inference,
            with_side_outputs: (!side_outputs.is_empty()).then_some(all),
            side_outputs,
            activations,
        },
    }
}

/// Merges consecutive rows whose names share their first `depth` segments into one row
/// named by that prefix, with summed counts and the last row's output.
fn collapse(rows: Vec<Row>, depth: usize) -> Vec<Row> {
    let groups = collapsed_rows(rows.iter().map(|r| r.name.as_str()), depth);
    let mut out: Vec<Row> = Vec::new();
    for (row, group) in rows.into_iter().zip(groups) {
        if group.index < out.len() {
            let merged = &mut out[group.index];
            merged.layers += 1;
            merged.params += row.params;
            merged.macs += row.macs;
            merged.output = row.output;
            merged.op = format!("({} layers)", merged.layers);
        } else if group.block {
            out.push(Row {
                name: group.name,
                op: "(1 layer)".to_string(),
                ..row
            });
        } else {
            out.push(row);
        }
    }
    out
}

/// Where one layer lands when blocks deeper than some depth are collapsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collapsed {
    /// The collapsed row (or diagram box) that holds the layer.
    pub index: usize,
    /// That row's name: the layer's own, or its block's.
    pub name: String,
    /// Whether the row stands for a block rather than the layer itself.
    pub block: bool,
}

/// For each layer name, in order, the collapsed row it falls in: consecutive layers
/// whose names share their first `depth` segments (and have more) share one row named by
/// that prefix. The summary and the diagrams both collapse with this.
pub fn collapsed_rows<'a>(
    names: impl IntoIterator<Item = &'a str>,
    depth: usize,
) -> Vec<Collapsed> {
    let depth = depth.max(1);
    let mut out: Vec<Collapsed> = Vec::new();
    let mut rows = 0;
    let mut open_group: Option<String> = None;
    for name in names {
        let segments: Vec<&str> = name.split('.').collect();
        if segments.len() <= depth {
            open_group = None;
            out.push(Collapsed {
                index: rows,
                name: name.to_string(),
                block: false,
            });
            rows += 1;
            continue;
        }
        let prefix = segments[..depth].join(".");
        if open_group.as_deref() != Some(prefix.as_str()) {
            open_group = Some(prefix.clone());
            rows += 1;
        }
        out.push(Collapsed {
            index: rows - 1,
            name: prefix,
            block: true,
        });
    }
    out
}

/// `61,100,840`
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `61.10 M`, `4.09 G`: two decimals, SI prefixes.
pub fn si(n: u64) -> String {
    let units = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")];
    let x = n as f64;
    for (scale, unit) in units {
        if x >= scale {
            return format!("{:.2} {unit}", x / scale);
        }
    }
    n.to_string()
}

/// `3.06 MiB`
pub fn bytes(n: u64) -> String {
    let units = [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (scale, unit) in units {
        if n >= scale {
            return format!("{:.2} {unit}", n as f64 / scale as f64);
        }
    }
    format!("{n} B")
}
