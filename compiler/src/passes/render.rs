//! `cnnc build --emit fused`: one line per kernel with its epilogue, its tensors and
//! where they live, then the memory plan's buffers, and the peak against no reuse.

use super::ir::{FusedGraph, Kernel, Place, Step, TensorId};
use super::plan::MemoryPlan;
use crate::ops::OpRule;
use crate::summary::bytes;
use std::fmt::Write;

pub fn listing(fused: &FusedGraph, plan: &MemoryPlan) -> String {
    let listing = Listing {
        fused,
        plan,
        views: views(fused),
        slices: slices(fused),
    };
    let mut out = format!("fused {} {{\n", fused.name);
    for &input in &fused.inputs {
        let name = &fused.tensor(input).name;
        let _ = writeln!(
            out,
            "  %{} = input{}  // {name}",
            input.0,
            at(fused, plan, input)
        );
        listing.views_of(&mut out, input);
    }
    for (k, kernel) in fused.kernels.iter().enumerate() {
        let _ = writeln!(out, "  {}", kernel_line(fused, plan, kernel));
        listing.parts_of(&mut out, kernel);
        listing.views_of(&mut out, kernel.output);
        listing.concats_completed(&mut out, k);
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
        kernel.op.rule().describe(),
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

/// The views of each tensor.
fn views(fused: &FusedGraph) -> Vec<Vec<TensorId>> {
    let mut views = vec![Vec::new(); fused.tensors.len()];
    for (i, t) in fused.tensors.iter().enumerate() {
        if let Place::View(base) = t.place {
            views[base.0].push(TensorId(i));
        }
    }
    views
}

/// The slices of each tensor, and the last kernel to write one of them.
struct Slices {
    children: Vec<Vec<TensorId>>,
    last_writer: Vec<Option<usize>>,
}

fn slices(fused: &FusedGraph) -> Slices {
    let count = fused.tensors.len();
    let mut slices = Slices {
        children: vec![Vec::new(); count],
        last_writer: vec![None; count],
    };
    for (i, t) in fused.tensors.iter().enumerate() {
        if let Place::Slice { parent, .. } = t.place {
            slices.children[parent.0].push(TensorId(i));
        }
    }
    for (k, kernel) in fused.kernels.iter().enumerate() {
        let mut t = kernel.output;
        for _ in 0..count {
            let Place::Slice { parent, .. } = fused.tensor(t).place else {
                break;
            };
            slices.last_writer[parent.0] = Some(k);
            t = parent;
        }
    }
    slices
}

struct Listing<'a> {
    fused: &'a FusedGraph,
    plan: &'a MemoryPlan,
    views: Vec<Vec<TensorId>>,
    slices: Slices,
}

impl Listing<'_> {
    /// The layers' own outputs within a merged kernel's output.
    fn parts_of(&self, out: &mut String, kernel: &Kernel) {
        if kernel.parts.is_empty() {
            return;
        }
        for &part in &self.slices.children[kernel.output.0] {
            let t = self.fused.tensor(part);
            let _ = writeln!(
                out,
                "  %{} = part of %{}{}  // {}",
                part.0,
                kernel.output.0,
                at(self.fused, self.plan, part),
                t.name
            );
            self.views_of(out, part);
        }
    }

    /// A concat done in place is listed once its last slice is written.
    fn concats_completed(&self, out: &mut String, kernel: usize) {
        let mut t = self.fused.kernels[kernel].output;
        while let Place::Slice { parent, .. } = self.fused.tensor(t).place {
            if self.slices.last_writer[parent.0] != Some(kernel) {
                break;
            }
            let parts: Vec<String> = self.slices.children[parent.0]
                .iter()
                .map(|c| format!("%{}", c.0))
                .collect();
            let _ = writeln!(
                out,
                "  %{} = concat in place ({}){}  // {}",
                parent.0,
                parts.join(", "),
                at(self.fused, self.plan, parent),
                self.fused.tensor(parent).name
            );
            self.views_of(out, parent);
            t = parent;
        }
    }

    /// A view's line follows the line that writes its base.
    fn views_of(&self, out: &mut String, base: TensorId) {
        let mut pending: Vec<TensorId> = self.views[base.0].iter().rev().copied().collect();
        while let Some(id) = pending.pop() {
            let t = self.fused.tensor(id);
            let base = match t.place {
                Place::View(base) => base.0,
                _ => continue,
            };
            let _ = writeln!(
                out,
                "  %{} = view of %{base}{}  // {}",
                id.0,
                at(self.fused, self.plan, id),
                t.name
            );
            pending.extend(self.views[id.0].iter().rev());
        }
    }
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
        "peak activation memory: {} per sample in {} buffers; {} without reuse",
        bytes(plan.peak_bytes),
        plan.buffers.len(),
        bytes(plan.unshared_bytes)
    );
}
