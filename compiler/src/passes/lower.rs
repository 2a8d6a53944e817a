//! Checked graph → fused graph before any fusion: one kernel per layer, one tensor per
//! layer output, side outputs pruned (inference only).

use super::ir::{Algorithm, FusedGraph, Kernel, Place, Step, Tensor, TensorId};
use crate::check::CheckedGraph;
use crate::ops::Op;

pub fn lower(net: &CheckedGraph) -> FusedGraph {
    let graph = &net.graph;
    let mut tensor_of: Vec<Option<TensorId>> = vec![None; graph.nodes.len()];
    let mut fused = FusedGraph {
        name: graph.name.clone(),
        tensors: Vec::new(),
        kernels: Vec::new(),
        inputs: Vec::new(),
        output: TensorId(0),
        removed: Vec::new(),
    };
    for (node, facts) in graph.nodes.iter().zip(&net.facts) {
        if node.side.is_some() {
            continue;
        }
        let output = TensorId(fused.tensors.len());
        fused.tensors.push(Tensor {
            name: node.name.clone(),
            shape: facts.shape.clone(),
            place: Place::Own,
        });
        tensor_of[node.id.0] = Some(output);
        if let Op::Input(_) = node.op {
            fused.inputs.push(output);
            continue;
        }
        // Inference layers never read side outputs, which are pruned.
        let inputs = node.inputs.iter().filter_map(|i| tensor_of[i.0]).collect();
        let has_bias =
            matches!(&node.op, Op::Conv(c) if c.bias) || matches!(&node.op, Op::Dense(d) if d.bias);
        fused.kernels.push(Kernel {
            node: node.id,
            name: node.name.clone(),
            op: node.op.clone(),
            inputs,
            output,
            folded_bn: None,
            epilogue: if has_bias {
                vec![Step::Bias]
            } else {
                Vec::new()
            },
            layers: vec![node.name.clone()],
            parts: Vec::new(),
            algorithm: Algorithm::Direct,
            with_producer: false,
        });
    }
    fused.output = tensor_of[graph.output.0].unwrap_or(output_fallback(&fused));
    fused
}

/// A checked graph's output is never a side output; should it be, the last tensor
/// stands in rather than a panic.
fn output_fallback(fused: &FusedGraph) -> TensorId {
    TensorId(fused.tensors.len().saturating_sub(1))
}
