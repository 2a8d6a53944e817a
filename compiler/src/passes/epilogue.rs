//! Element-wise layers fused into the conv or dense kernel that produces their input:
//! activations (not softmax, which reads across channels), batch norms that could not
//! be folded, and residual adds. Each becomes a step of the kernel's epilogue, in source
//! order, so an activation lands before or after the add exactly as written.

use super::ir::{FusedGraph, Index, Place, Step, TensorId};
use crate::ops::{Activation, Op};

pub fn fuse_epilogues(fused: &mut FusedGraph) {
    let mut index = fused.index();
    let gone: Vec<bool> = (0..fused.kernels.len())
        .map(|i| {
            // A producer precedes its readers: the kernels are in topological order.
            match fusion(fused, &index, i).filter(|(t, _)| *t < i) {
                Some((target, step)) => {
                    absorb(fused, &mut index, target, i, step);
                    true
                }
                None => false,
            }
        })
        .collect();
    fused.retain_kernels(&gone);
}

/// The kernel that can take the layer at `i` as an epilogue step, and the step.
fn fusion(fused: &FusedGraph, index: &Index, i: usize) -> Option<(usize, Step)> {
    let kernel = &fused.kernels[i];
    let &input = kernel.inputs.first()?;
    match &kernel.op {
        Op::Activation(Activation::Softmax) => None,
        Op::Activation(activation) => Some((
            target(fused, index, input)?,
            Step::Activation(activation.clone()),
        )),
        Op::BatchNorm(bn) => Some((
            target(fused, index, input)?,
            Step::ScaleShift {
                layer: kernel.name.clone(),
                eps: bn.eps,
            },
        )),
        Op::Add(add) if kernel.inputs.len() == 2 => residual(fused, index, i, add.scale),
        _ => None,
    }
}

/// The conv or dense kernel writing `tensor`, if nothing but the one fusing layer
/// reads it (another reader needs the value before the step).
fn target(fused: &FusedGraph, index: &Index, tensor: TensorId) -> Option<usize> {
    let producer = index.producer[tensor.0]?;
    let alone = index.readers[tensor.0] == 1 && fused.tensor(tensor).place == Place::Own;
    (fused.kernels[producer].takes_epilogue() && alone).then_some(producer)
}

/// An add `a + scale·b` goes to the producer of whichever operand is computed last, so
/// the other is ready when it runs; the scale stays on `b` either way.
fn residual(fused: &FusedGraph, index: &Index, i: usize, scale: f64) -> Option<(usize, Step)> {
    let kernel = &fused.kernels[i];
    let (a, b) = (kernel.inputs[0], kernel.inputs[1]);
    let (pa, pb) = (index.producer[a.0], index.producer[b.0]);
    let (fused_operand, input, self_scale, input_scale) = match pa.cmp(&pb) {
        std::cmp::Ordering::Less => (b, a, scale, 1.0),
        std::cmp::Ordering::Greater => (a, b, 1.0, scale),
        std::cmp::Ordering::Equal => return None,
    };
    let target = target(fused, index, fused_operand)?;
    let has_add = fused.kernels[target]
        .epilogue
        .iter()
        .any(|s| matches!(s, Step::Add { .. }));
    let step = Step::Add {
        layer: kernel.name.clone(),
        input,
        self_scale,
        input_scale,
    };
    (!has_add).then_some((target, step))
}

fn absorb(fused: &mut FusedGraph, index: &mut Index, target: usize, i: usize, step: Step) {
    let layer = fused.kernels[i].clone();
    index.producer[layer.output.0] = Some(target);
    let kernel = &mut fused.kernels[target];
    kernel.epilogue.push(step);
    kernel.layers.push(layer.name);
    kernel.output = layer.output;
}
