//! Graph → checked graph: every layer's shape, parameters and MACs from its op's shape
//! rule, and every problem placed in the source, through block calls, as a diagnostic.

use crate::diagnostics::{Diagnostic, Label};
use crate::graph::{Graph, Node};
use crate::ops::weights::parameter_count;
use crate::ops::{Shape, ShapeError, ShapeWarning, WeightSpec};
use crate::span::Span;
use std::collections::HashSet;

/// What the checker knows of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerFacts {
    pub shape: Shape,
    /// The tensors the layer owns, named `<layer>.<suffix>`.
    pub weights: Vec<WeightSpec>,
    /// Learnable parameters, from `weights`.
    pub params: u64,
    pub macs: u64,
}

/// A graph whose every layer checked, with the facts of each (indexed like the nodes).
#[derive(Debug, Clone)]
pub struct CheckedGraph {
    pub graph: Graph,
    pub facts: Vec<LayerFacts>,
}

/// Checks every layer whose inputs are known; a layer after an error is skipped, not
/// reported again. Returns the checked graph only when nothing at all went wrong.
pub fn check(graph: Graph, elaborated_cleanly: bool) -> (Option<CheckedGraph>, Vec<Diagnostic>) {
    let mut facts: Vec<Option<LayerFacts>> = Vec::with_capacity(graph.nodes.len());
    let mut diagnostics = Vec::new();
    let mut reported = HashSet::new();
    for node in &graph.nodes {
        let inputs: Option<Vec<&Shape>> = node
            .inputs
            .iter()
            .map(|i| facts[i.0].as_ref().map(|f: &LayerFacts| &f.shape))
            .collect();
        let Some(inputs) = inputs else {
            facts.push(None);
            continue;
        };
        let inferred = node.op.rule().infer(&inputs).and_then(|inferred| {
            let params = parameter_count(&inferred.weights)?;
            Ok((inferred, params))
        });
        match inferred {
            Ok((inferred, params)) => {
                for warning in &inferred.warnings {
                    let d = place_warning(node, warning);
                    if reported.insert((d.code, d.primary.span)) {
                        diagnostics.push(d);
                    }
                }
                facts.push(Some(LayerFacts {
                    shape: inferred.shape,
                    weights: inferred.weights,
                    params,
                    macs: inferred.macs,
                }));
            }
            Err(error) => {
                let d = place_error(&graph, node, error);
                if reported.insert((d.code, d.primary.span)) {
                    diagnostics.push(d);
                }
                facts.push(None);
            }
        }
    }
    let clean = elaborated_cleanly && !diagnostics.iter().any(Diagnostic::is_error);
    let facts: Option<Vec<LayerFacts>> = facts.into_iter().collect();
    match facts {
        Some(facts) if clean => (Some(CheckedGraph { graph, facts }), diagnostics),
        _ => (None, diagnostics),
    }
}

fn place_error(graph: &Graph, node: &Node, error: ShapeError) -> Diagnostic {
    let primary_span = error
        .arg
        .and_then(|a| node.origin.arg_span(a))
        .unwrap_or(node.origin.span);
    let label = error.label.clone().unwrap_or_else(|| error.message.clone());
    let mut d = Diagnostic::error(
        error.code,
        format!("{} (in `{}`)", error.message, node.name),
        Label::new(primary_span, label),
    );
    for (input, text) in &error.input_labels {
        let producer = graph.node(node.inputs[*input]);
        let span = producer.origin.span;
        if span != primary_span && !d.secondary.iter().any(|l| l.span == span) {
            d = d.with_label(Label::new(span, text.clone()));
        }
    }
    d = with_call_sites(d, node);
    match error.help {
        Some(help) => d.with_help(help),
        None => d,
    }
}

fn place_warning(node: &Node, warning: &ShapeWarning) -> Diagnostic {
    let span = warning
        .arg
        .and_then(|a| node.origin.arg_span(a))
        .unwrap_or(node.origin.span);
    let d = Diagnostic::warning(
        warning.code,
        format!("{} (in `{}`)", warning.message, node.name),
        Label::new(span, warning.label.clone()),
    )
    .with_help(warning.help.clone());
    with_call_sites(d, node)
}

/// Labels the block calls that led to a layer, so an error inside a block also shows
/// which instantiation of it failed.
fn with_call_sites(mut d: Diagnostic, node: &Node) -> Diagnostic {
    for site in node.origin.call_sites.iter().rev() {
        if site.span != Span::default() {
            d = d.with_label(Label::new(
                site.span,
                format!("in this call of `{}`", site.block),
            ));
        }
    }
    d
}
