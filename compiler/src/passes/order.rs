//! The order in which the listing shows tensors: inputs, then each kernel's output,
//! each followed by what lives in it (a merged conv's parts, views) and, after a
//! concat's last branch, the concat itself. `compact` numbers tensors in this order.

use super::ir::{FusedGraph, Place, TensorId};

/// One line of the listing.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Input(TensorId),
    /// The kernel at this index.
    Kernel(usize),
    /// One conv's share of a merged conv's output.
    Part {
        tensor: TensorId,
        of: TensorId,
    },
    View {
        tensor: TensorId,
        base: TensorId,
    },
    /// A concat done in place, once its last slice is written.
    Concat {
        tensor: TensorId,
        slices: Vec<TensorId>,
    },
}

impl Entry {
    pub fn tensor(&self, fused: &FusedGraph) -> TensorId {
        match self {
            Entry::Input(t)
            | Entry::Part { tensor: t, .. }
            | Entry::View { tensor: t, .. }
            | Entry::Concat { tensor: t, .. } => *t,
            Entry::Kernel(k) => fused.kernels[*k].output,
        }
    }
}

pub fn entries(fused: &FusedGraph) -> Vec<Entry> {
    let walk = Walk::new(fused);
    let mut entries = Vec::new();
    for &input in &fused.inputs {
        entries.push(Entry::Input(input));
        walk.views_of(&mut entries, input);
    }
    for (k, kernel) in fused.kernels.iter().enumerate() {
        entries.push(Entry::Kernel(k));
        if !kernel.parts.is_empty() {
            walk.parts_of(&mut entries, kernel.output);
        }
        walk.views_of(&mut entries, kernel.output);
        walk.concats_completed(&mut entries, k);
    }
    entries
}

/// Views and slices of each tensor, and the last kernel to write a slice of it.
struct Walk<'a> {
    fused: &'a FusedGraph,
    views: Vec<Vec<TensorId>>,
    slices: Vec<Vec<TensorId>>,
    last_writer: Vec<Option<usize>>,
}

impl<'a> Walk<'a> {
    fn new(fused: &'a FusedGraph) -> Self {
        let count = fused.tensors.len();
        let mut walk = Walk {
            fused,
            views: vec![Vec::new(); count],
            slices: vec![Vec::new(); count],
            last_writer: vec![None; count],
        };
        for (i, t) in fused.tensors.iter().enumerate() {
            match t.place {
                Place::View(base) => walk.views[base.0].push(TensorId(i)),
                Place::Slice { parent, .. } => walk.slices[parent.0].push(TensorId(i)),
                Place::Own => {}
            }
        }
        for (k, kernel) in fused.kernels.iter().enumerate() {
            let mut t = kernel.output;
            for _ in 0..count {
                let Place::Slice { parent, .. } = fused.tensor(t).place else {
                    break;
                };
                walk.last_writer[parent.0] = Some(k);
                t = parent;
            }
        }
        // In channel order, whatever the tensors' numbers.
        for slices in &mut walk.slices {
            slices.sort_by_key(|&t| match fused.tensor(t).place {
                Place::Slice { offset, .. } => offset,
                _ => 0,
            });
        }
        walk
    }

    fn parts_of(&self, entries: &mut Vec<Entry>, merged: TensorId) {
        for &part in &self.slices[merged.0] {
            entries.push(Entry::Part {
                tensor: part,
                of: merged,
            });
            self.views_of(entries, part);
        }
    }

    fn concats_completed(&self, entries: &mut Vec<Entry>, kernel: usize) {
        let mut t = self.fused.kernels[kernel].output;
        for _ in 0..self.fused.tensors.len() {
            let Place::Slice { parent, .. } = self.fused.tensor(t).place else {
                break;
            };
            if self.last_writer[parent.0] != Some(kernel) {
                break;
            }
            entries.push(Entry::Concat {
                tensor: parent,
                slices: self.slices[parent.0].clone(),
            });
            self.views_of(entries, parent);
            t = parent;
        }
    }

    /// A view follows the line that writes its base.
    fn views_of(&self, entries: &mut Vec<Entry>, base: TensorId) {
        let mut pending: Vec<TensorId> = self.views[base.0].iter().rev().copied().collect();
        while let Some(tensor) = pending.pop() {
            if let Place::View(base) = self.fused.tensor(tensor).place {
                entries.push(Entry::View { tensor, base });
            }
            pending.extend(self.views[tensor.0].iter().rev());
        }
    }
}
