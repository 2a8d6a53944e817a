//! `cnnc build --emit fused`: one line per kernel with its epilogue, its tensors and
//! where they live, then the memory plan's buffers, and the peak against no reuse.

use super::ir::{FusedGraph, Kernel, Place, Step, TensorId};
use super::order::{Entry, entries};
use super::plan::MemoryPlan;
use crate::ops::OpRule;
use crate::summary::bytes;
use std::fmt::Write;

pub fn listing(fused: &FusedGraph, plan: &MemoryPlan) -> String {
    let mut out = format!("fused {} {{\n", fused.name);
    for entry in entries(fused) {
        let line = match &entry {
            Entry::Kernel(k) => kernel_line(fused, plan, &fused.kernels[*k]),
            Entry::Input(t) => format!("%{} = input", t.0),
            Entry::Part { tensor, of } => format!("%{} = part of %{}", tensor.0, of.0),
            Entry::View { tensor, base } => format!("%{} = view of %{}", tensor.0, base.0),
            Entry::Concat { tensor, slices } => {
                let slices: Vec<String> = slices.iter().map(|t| format!("%{}", t.0)).collect();
                format!("%{} = concat in place ({})", tensor.0, slices.join(", "))
            }
        };
        if let Entry::Kernel(_) = entry {
            let _ = writeln!(out, "  {line}");
        } else {
            let t = entry.tensor(fused);
            let name = &fused.tensor(t).name;
            let _ = writeln!(out, "  {line}{}  // {name}", at(fused, plan, t));
        }
    }
    let _ = writeln!(out, "  output %{}\n}}", fused.output.0);
    buffer_table(&mut out, fused, plan);
    if !fused.removed.is_empty() {
        let _ = writeln!(out, "removed:");
        for removed in &fused.removed {
            let _ = writeln!(out, "  {removed}");
        }
    }
    out
}

/// `%5 = conv 64 3x3 p1 nobias (%4) + fold(bn1) + bias + relu : 64x56x56 @ b2  // ...`
fn kernel_line(fused: &FusedGraph, plan: &MemoryPlan, kernel: &Kernel) -> String {
    let inputs: Vec<String> = kernel.inputs.iter().map(|t| format!("%{}", t.0)).collect();
    let mut line = format!(
        "%{} = {} ({})",
        kernel.output.0,
        kernel.op_text(),
        inputs.join(", ")
    );
    if let Some(bn) = &kernel.folded_bn {
        let _ = write!(line, " + fold({})", bn.layer);
    }
    if !kernel.parts.is_empty() {
        let parts: Vec<String> = kernel
            .parts
            .iter()
            .map(|p| match &p.folded_bn {
                Some(bn) => format!("{} {} + fold({})", p.name, p.out_channels, bn.layer),
                None => format!("{} {}", p.name, p.out_channels),
            })
            .collect();
        let _ = write!(line, " merging [{}]", parts.join(", "));
    }
    for step in &kernel.epilogue {
        let _ = write!(line, " + {}", step_text(step));
    }
    if kernel.with_producer {
        // Where the backend can, the conv pools the rows it writes.
        let input = kernel.inputs.first();
        if let Some(conv) = fused.kernels.iter().find(|k| Some(&k.output) == input) {
            let _ = write!(line, " [in {}'s rows]", conv.name);
        }
    }
    let _ = write!(
        line,
        "{}  // {}",
        at(fused, plan, kernel.output),
        kernel.layers.join(", ")
    );
    line
}

fn step_text(step: &Step) -> String {
    match step {
        Step::Bias => "bias".to_string(),
        Step::ScaleShift { layer, .. } => format!("scale-shift({layer})"),
        Step::Activation(a) => a.describe(),
        Step::Add {
            input,
            self_scale,
            input_scale,
            ..
        } if *self_scale == 1.0 && *input_scale == 1.0 => format!("add(%{})", input.0),
        Step::Add {
            input,
            self_scale,
            input_scale,
            ..
        } => format!("add({input_scale}·%{} + {self_scale}·this)", input.0),
    }
}

/// ` : 64x56x56 @ b2`, with the channel range for a slice of a concat's buffer.
fn at(fused: &FusedGraph, plan: &MemoryPlan, tensor: TensorId) -> String {
    let t = fused.tensor(tensor);
    let (root, offset) = fused.root(tensor);
    let buffer = match plan.buffer_of.get(root.0).copied().flatten() {
        Some(b) => format!("b{b}"),
        None => "b?".to_string(),
    };
    let place = match t.place {
        Place::Slice { .. } => {
            let channels = t.shape.0.first().copied().unwrap_or(0);
            format!("{buffer}[{offset}..{}]", offset.saturating_add(channels))
        }
        Place::View(_) | Place::Own => buffer,
    };
    format!(" : {} @ {place}", t.shape)
}

fn buffer_table(out: &mut String, fused: &FusedGraph, plan: &MemoryPlan) {
    let _ = writeln!(out, "buffers (per sample):");
    for (b, &size) in plan.buffers.iter().enumerate() {
        let tensors: Vec<String> = (0..fused.tensors.len())
            .filter(|&t| plan.buffer_of[t] == Some(b))
            .map(|t| format!("%{t}"))
            .collect();
        let _ = writeln!(out, "  b{b:<3} {:>11}  {}", bytes(size), tensors.join(" "));
    }
    let _ = writeln!(
        out,
        "peak activation memory: {} per sample in one arena (live at once at most: {}); \
         {} in {} buffers; {} without reuse",
        bytes(plan.arena_bytes),
        bytes(plan.lower_bound_bytes),
        bytes(plan.buffer_bytes),
        plan.buffers.len(),
        bytes(plan.unshared_bytes)
    );
}
