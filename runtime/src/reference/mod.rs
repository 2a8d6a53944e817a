//! The reference interpreter: every op written to be obviously right, over ndarray. It
//! is the oracle that every other backend is tested against, so clarity wins over speed
//! everywhere except where a small network run once spends its time (the fused executor
//! runs it through these kernels rather than compile it): the convolution's im2col (row
//! copies) and product (ndarray's `dot`), and pooling (over each plane's slice).

pub(crate) mod conv;
pub(crate) mod dense;
pub(crate) mod elementwise;
pub(crate) mod merge;
pub(crate) mod norm;
pub(crate) mod pool;

use crate::Tensor;
use crate::error::{Result, RuntimeError};
use crate::memory::last_uses;
use crate::weights::Weights;
use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::graph::{Node, NodeId};
use cnnc_compiler::ops::Op;
use std::collections::HashMap;

/// What to run and what to keep.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Also compute the side outputs (training heads), which inference prunes.
    pub side_outputs: bool,
    /// Layers whose outputs to return besides the network's outputs.
    pub keep: Vec<NodeId>,
}

/// The tensors a run returns, by layer name: the output, any side outputs, and the
/// layers asked for.
#[derive(Debug, Default)]
pub struct Outputs {
    pub output: Tensor,
    pub side_outputs: Vec<(String, Tensor)>,
    pub kept: HashMap<String, Tensor>,
}

/// Runs the network on `inputs` (one per network input, batch-first).
pub fn run(
    net: &CheckedGraph,
    weights: &Weights,
    inputs: Vec<Tensor>,
    options: &RunOptions,
) -> Result<Outputs> {
    let graph = &net.graph;
    if inputs.len() != graph.inputs.len() {
        return Err(RuntimeError::Invalid(format!(
            "the network takes {} inputs, {} given",
            graph.inputs.len(),
            inputs.len()
        )));
    }
    let batch = inputs.first().map_or(1, |t| t.shape()[0]);
    let mut values: Vec<Option<Tensor>> = vec![None; graph.nodes.len()];
    let mut pending: HashMap<NodeId, Tensor> = graph.inputs.iter().copied().zip(inputs).collect();
    let last_use = last_uses(net);
    let mut keep = vec![false; graph.nodes.len()];
    keep[graph.output.0] = true;
    for id in options
        .keep
        .iter()
        .chain(graph.side_outputs.iter().map(|s| &s.node))
    {
        keep[id.0] = true;
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        if node.side.is_some() && !options.side_outputs {
            continue;
        }
        let value = match &node.op {
            Op::Input(_) => {
                let tensor = pending.remove(&node.id).expect("one tensor per input");
                let mut expected = vec![batch];
                expected.extend(net.facts[i].shape.0.iter().map(|&d| d as usize));
                if tensor.shape() != expected.as_slice() {
                    return Err(RuntimeError::InputShape {
                        expected: crate::input::shape_text(&expected),
                        found: crate::input::shape_text(tensor.shape()),
                        hint: format!(" (input `{}`)", node.name),
                    });
                }
                tensor
            }
            op => {
                let args: Vec<&Tensor> = node
                    .inputs
                    .iter()
                    .map(|id| {
                        values[id.0]
                            .as_ref()
                            .expect("inputs precede their users and live until last use")
                    })
                    .collect();
                evaluate(node, op, &args, weights)?
            }
        };
        values[i] = Some(value);
        for input in &node.inputs {
            if last_use[input.0] == i && !keep[input.0] {
                values[input.0] = None;
            }
        }
    }
    let take =
        |values: &mut Vec<Option<Tensor>>, id: NodeId| values[id.0].take().unwrap_or_default();
    let kept = options
        .keep
        .iter()
        .map(|&id| {
            (
                graph.node(id).name.clone(),
                values[id.0].clone().unwrap_or_default(),
            )
        })
        .collect();
    let side_outputs = if options.side_outputs {
        graph
            .side_outputs
            .iter()
            .map(|s| (s.name.clone(), values[s.node.0].clone().unwrap_or_default()))
            .collect()
    } else {
        Vec::new()
    };
    Ok(Outputs {
        output: take(&mut values, graph.output),
        side_outputs,
        kept,
    })
}

/// One layer. `weights` were validated against the network when loaded.
pub(crate) fn evaluate(
    node: &Node,
    op: &Op,
    args: &[&Tensor],
    weights: &Weights,
) -> Result<Tensor> {
    let weight = |suffix: &str| {
        let name = format!("{}.{suffix}", node.name);
        weights.get(&name).ok_or_else(|| {
            RuntimeError::Invalid(format!(
                "no weight `{name}`: the weights do not belong to this network"
            ))
        })
    };
    let x = args[0];
    Ok(match op {
        Op::Input(_) => unreachable!("inputs are bound, not evaluated"),
        Op::Conv(conv) => {
            let bias = if conv.bias {
                Some(weight("bias")?)
            } else {
                None
            };
            conv::conv2d(x, weight("weight")?.view(), bias, conv)
        }
        Op::Pool(pool) => pool::pool2d(x, pool),
        Op::GlobalPool(global) => pool::global(x, global.kind),
        Op::AdaptivePool(adaptive) => pool::adaptive(x, adaptive),
        Op::Lrn(lrn) => norm::lrn(x, lrn),
        Op::BatchNorm(bn) => norm::batch_norm(
            x,
            weight("weight")?,
            weight("bias")?,
            weight("running_mean")?,
            weight("running_var")?,
            bn.eps,
        ),
        Op::Dropout(_) => x.clone(),
        Op::Flatten(_) => {
            let batch = x.shape()[0];
            let features = x.len() / batch.max(1);
            x.to_shape((batch, features))
                .expect("contiguous reshape")
                .into_owned()
                .into_dyn()
        }
        Op::Dense(dense) => {
            let bias = if dense.bias {
                Some(weight("bias")?)
            } else {
                None
            };
            dense::dense(x, weight("weight")?.view(), bias)
        }
        Op::Activation(activation) => elementwise::activation(x, activation),
        Op::Concat(_) => merge::concat(args),
        Op::Add(add) => merge::add(args, add.scale),
    })
}
