//! The fused graph: kernels in execution order, each an op of the checked graph with its
//! input and output tensors and an epilogue (what was fused into it), over tensors that
//! own storage, view another tensor's storage (flatten), or are a channel slice of one
//! (a concat branch written in place).

use crate::graph::NodeId;
use crate::ops::{Activation, Op, Shape};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub usize);

/// One activation tensor, per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The layer whose value it holds (the last one fused into its producer).
    pub name: String,
    pub shape: Shape,
    pub place: Place,
}

/// Where a tensor's values live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Its own storage: one buffer of the memory plan.
    Own,
    /// The storage of another tensor, reshaped: flatten costs nothing.
    View(TensorId),
    /// Channels `offset..offset + C` of another tensor with the same height and width:
    /// a concat branch writes its slice of the concat's output directly.
    Slice { parent: TensorId, offset: u64 },
}

/// One element-wise step applied to a kernel's result before it is stored, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The per-channel bias: the op's own, a folded batch norm's shift, or both.
    Bias,
    /// A batch norm that could not be folded into weights (it follows an activation),
    /// as a per-channel scale and shift.
    ScaleShift {
        layer: String,
        eps: f64,
    },
    Activation(Activation),
    /// A residual add: `result = self_scale * result + input_scale * input`. One of the
    /// scales is 1: the add's scale falls on whichever operand is its residual path.
    Add {
        layer: String,
        input: TensorId,
        self_scale: f64,
        input_scale: f64,
    },
}

/// A batch norm folded into a conv's (or dense layer's) weights and bias.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedBn {
    pub node: NodeId,
    pub layer: String,
    pub eps: f64,
}

/// One of several 1x1 convs merged into one kernel: its layer (whose weights supply
/// `out_channels` rows of the merged weights, in order) and what it brought along.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub node: NodeId,
    pub name: String,
    pub out_channels: u64,
    /// The layer's own bias (a folded BN adds one where it has none).
    pub bias: bool,
    pub folded_bn: Option<FoldedBn>,
}

/// How a conv kernel computes its product: the choice of [`choose_algorithms`], shown by
/// `--emit fused` and the profile.
///
/// [`choose_algorithms`]: super::choose_algorithms
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Im2col and one matrix product (every kernel but the ones below).
    #[default]
    Direct,
    /// Winograd F(m x m, r x r) for an r x r kernel: each α x α input tile transformed
    /// (α is m + r - 1), then α² matrix products over the channels, then m x m outputs
    /// per tile; fewer multiplies than direct for 3x3 and 5x5 stride-1 convolutions.
    Winograd { m: u64, r: u64 },
}

impl Algorithm {
    /// `winograd F(2x2,3x3)`, or nothing for the direct algorithm.
    pub fn marker(&self) -> Option<String> {
        match self {
            Algorithm::Direct => None,
            Algorithm::Winograd { m, r } => Some(format!("winograd F({m}x{m},{r}x{r})")),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    /// The graph layer whose op this kernel runs; its weights are named after it.
    pub node: NodeId,
    pub name: String,
    pub op: Op,
    pub inputs: Vec<TensorId>,
    pub output: TensorId,
    pub folded_bn: Option<FoldedBn>,
    pub epilogue: Vec<Step>,
    /// Every graph layer this kernel computes, its own first.
    pub layers: Vec<String>,
    /// For convs merged horizontally, the layers whose weights are stacked, in channel
    /// order; empty for every other kernel (its weights are its layer's).
    pub parts: Vec<Part>,
    pub algorithm: Algorithm,
    /// A pool the conv before it may compute as it writes its rows (`pools_into_convs`):
    /// its output is live from that conv on, so a backend may skip its kernel or run it
    /// by itself.
    pub with_producer: bool,
}

impl Kernel {
    /// The op as `--emit fused` and the profile show it: `conv 64 3x3 p1`, with the
    /// algorithm when it is not the direct one (`conv 64 3x3 p1 [winograd F(2x2,3x3)]`).
    pub fn op_text(&self) -> String {
        let op = self.op.rule().describe();
        match self.algorithm.marker() {
            Some(marker) => format!("{op} [{marker}]"),
            None => op,
        }
    }

    /// Conv and dense kernels take epilogues and folded batch norms.
    pub fn takes_epilogue(&self) -> bool {
        matches!(self.op, Op::Conv(_) | Op::Dense(_))
    }

    /// The multiply-adds of the layers the kernel computes, as the checker counts them.
    pub fn macs(&self, net: &crate::check::CheckedGraph) -> u64 {
        match self.parts.is_empty() {
            true => net.facts[self.node.0].macs,
            false => self.parts.iter().map(|p| net.facts[p.node.0].macs).sum(),
        }
    }

    /// Every tensor the kernel reads, its epilogue's included.
    pub fn reads(&self) -> impl Iterator<Item = TensorId> + '_ {
        let residual = self.epilogue.iter().filter_map(|step| match step {
            Step::Add { input, .. } => Some(*input),
            _ => None,
        });
        self.inputs.iter().copied().chain(residual)
    }
}

/// Readers and writers of each tensor. A pass computes it once: fusing a layer moves
/// its reads and its output to another kernel without changing these counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Index {
    /// How many times each tensor is read: by kernels and their epilogues, by views of
    /// it, and as the network's output. A tensor read once, by one kernel, may be fused
    /// away.
    pub readers: Vec<usize>,
    /// The kernel that writes each tensor.
    pub producer: Vec<Option<usize>>,
}

/// The inference graph (side outputs pruned) after the passes.
#[derive(Debug, Clone, PartialEq)]
pub struct FusedGraph {
    pub name: String,
    pub tensors: Vec<Tensor>,
    pub kernels: Vec<Kernel>,
    pub inputs: Vec<TensorId>,
    pub output: TensorId,
    /// Layers that no longer run at all, and why: dropout and identity, flatten (a
    /// view), concats done in place.
    pub removed: Vec<String>,
}

impl FusedGraph {
    pub fn tensor(&self, id: TensorId) -> &Tensor {
        &self.tensors[id.0]
    }

    /// Who reads and who writes each tensor, for the passes to consult in one look.
    pub fn index(&self) -> Index {
        let mut index = Index {
            readers: vec![0; self.tensors.len()],
            producer: vec![None; self.tensors.len()],
        };
        for (k, kernel) in self.kernels.iter().enumerate() {
            index.producer[kernel.output.0] = Some(k);
            for read in kernel.reads() {
                index.readers[read.0] += 1;
            }
        }
        for tensor in &self.tensors {
            if let Place::View(base) = tensor.place {
                index.readers[base.0] += 1;
            }
        }
        index.readers[self.output.0] += 1;
        index
    }

    /// Makes every reference to tensor `t` one to `map[t]`.
    pub fn remap(&mut self, map: &[TensorId]) {
        let swap = |t: &mut TensorId| *t = map[t.0];
        for kernel in &mut self.kernels {
            kernel.inputs.iter_mut().for_each(swap);
            swap(&mut kernel.output);
            for step in &mut kernel.epilogue {
                if let Step::Add { input, .. } = step {
                    swap(input);
                }
            }
        }
        for tensor in &mut self.tensors {
            match &mut tensor.place {
                Place::View(base) => swap(base),
                Place::Slice { parent, .. } => swap(parent),
                Place::Own => {}
            }
        }
        self.inputs.iter_mut().for_each(swap);
        swap(&mut self.output);
    }

    /// Drops the kernels marked `gone`, keeping the order of the rest.
    pub fn retain_kernels(&mut self, gone: &[bool]) {
        let mut i = 0;
        self.kernels.retain(|_| {
            i += 1;
            !gone[i - 1]
        });
    }

    /// The tensor that owns `id`'s storage, and `id`'s first channel within it.
    pub fn root(&self, id: TensorId) -> (TensorId, u64) {
        let (mut id, mut offset) = (id, 0u64);
        // The passes never make a cycle of places; the bound keeps a malformed graph
        // from looping.
        for _ in 0..=self.tensors.len() {
            match self.tensors[id.0].place {
                Place::Own => break,
                Place::View(base) => id = base,
                Place::Slice { parent, offset: o } => {
                    offset = offset.saturating_add(o);
                    id = parent;
                }
            }
        }
        (id, offset)
    }
}
