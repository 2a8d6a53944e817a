//! The fused executor: runs the compiler's fused graph over its memory plan's buffers,
//! kernel by kernel, with the reference interpreter's kernels, the folded weights and
//! the epilogues. It proves every pass numerically against the reference interpreter
//! before generated code replaces the kernels one by one.

pub mod prepare;
pub(crate) mod storage;

use crate::Tensor;
use crate::error::{Result, RuntimeError};
use crate::reference::{conv, dense, elementwise, evaluate, norm};
use crate::weights::Weights;
use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::ops::{Activation, Op};
use cnnc_compiler::passes::{self, FusedGraph, Kernel, MemoryPlan, Step};
use prepare::{Prepared, prepare, weight};
pub(crate) use storage::Storage;

/// A network compiled for the fused executor: the fused graph, its memory plan, and
/// the weights its kernels use.
pub struct Program<'a> {
    pub(crate) net: &'a CheckedGraph,
    pub fused: FusedGraph,
    pub plan: MemoryPlan,
    pub(crate) weights: &'a Weights,
    pub(crate) prepared: Vec<Option<Prepared<'a>>>,
}

impl<'a> Program<'a> {
    /// Runs the passes and folds the weights. `weights` were validated against `net`.
    pub fn new(net: &'a CheckedGraph, weights: &'a Weights) -> Result<Self> {
        let mut program = Self::unprepared(net, weights);
        for index in 0..program.fused.kernels.len() {
            program.prepare_kernel(index)?;
        }
        Ok(program)
    }

    /// The passes alone: no kernel's weights folded yet (the JIT packs its own, and
    /// prepares only kernels it leaves to the reference kernels).
    pub(crate) fn unprepared(net: &'a CheckedGraph, weights: &'a Weights) -> Self {
        let fused = passes::fuse(net);
        let plan = passes::plan(&fused);
        let prepared = fused.kernels.iter().map(|_| None).collect();
        Program {
            net,
            fused,
            plan,
            weights,
            prepared,
        }
    }

    /// Folds kernel `index`'s weights for `run_kernel`.
    pub(crate) fn prepare_kernel(&mut self, index: usize) -> Result<()> {
        self.prepared[index] = prepare(&self.fused.kernels[index], self.weights)?;
        Ok(())
    }

    /// Runs the network on `inputs` (one per network input, batch-first) and returns
    /// its output. Side outputs are pruned, as inference does.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Tensor> {
        let mut storage = self.start(&inputs)?;
        for index in 0..self.fused.kernels.len() {
            self.run_kernel(index, &mut storage)?;
        }
        storage.read(self.fused.output)
    }

    /// The buffers for a batch, with the inputs written in.
    pub(crate) fn start(&self, inputs: &[Tensor]) -> Result<Storage<'_>> {
        let storage = Storage::new(&self.fused, &self.plan, self.batch_of(inputs)?, None)?;
        self.start_in(inputs, storage)
    }

    /// The inputs written into `storage`, made for their batch size (as `start`'s, or
    /// reused: then nothing is allocated).
    pub(crate) fn start_in<'s>(
        &self,
        inputs: &[Tensor],
        mut storage: Storage<'s>,
    ) -> Result<Storage<'s>> {
        let batch = self.batch_of(inputs)?;
        if storage.batch() != batch {
            return Err(RuntimeError::Invalid(format!(
                "buffers for batch {} given inputs of batch {batch}",
                storage.batch()
            )));
        }
        for (&id, tensor) in self.fused.inputs.iter().zip(inputs) {
            self.check_input(id, tensor, batch)?;
            storage.write(id, tensor)?;
        }
        Ok(storage)
    }

    /// The batch size of `inputs`, one per network input.
    pub(crate) fn batch_of(&self, inputs: &[Tensor]) -> Result<usize> {
        if inputs.len() != self.fused.inputs.len() {
            return Err(RuntimeError::Invalid(format!(
                "the network takes {} inputs, {} given",
                self.fused.inputs.len(),
                inputs.len()
            )));
        }
        Ok(inputs
            .first()
            .map_or(1, |t| t.shape().first().copied().unwrap_or(0)))
    }

    /// Runs kernel `index` with the reference kernels, from and into `storage`.
    pub(crate) fn run_kernel(&self, index: usize, storage: &mut Storage) -> Result<()> {
        let kernel = &self.fused.kernels[index];
        let args = kernel
            .inputs
            .iter()
            .map(|&t| storage.read(t))
            .collect::<Result<Vec<_>>>()?;
        let result = self.compute(kernel, self.prepared[index].as_ref(), &args)?;
        let result = self.epilogue(kernel, result, storage)?;
        storage.write(kernel.output, &result)
    }

    fn check_input(&self, id: passes::TensorId, tensor: &Tensor, batch: usize) -> Result<()> {
        let shape = &self.fused.tensor(id).shape.0;
        // Compared without allocating: the JIT's steady state allocates nothing.
        let (given_batch, given) = tensor.shape().split_first().unwrap_or((&0, &[]));
        if *given_batch == batch
            && given.len() == shape.len()
            && given.iter().zip(shape).all(|(&g, &s)| g as u64 == s)
        {
            return Ok(());
        }
        let mut expected = vec![batch];
        expected.extend(shape.iter().map(|&d| d as usize));
        Err(RuntimeError::InputShape {
            expected: crate::input::shape_text(&expected),
            found: crate::input::shape_text(tensor.shape()),
            hint: format!(" (input `{}`)", self.fused.tensor(id).name),
        })
    }

    /// The kernel's op; conv and dense with the prepared (folded) weights and bias, so
    /// the `Bias` step is done here.
    fn compute(
        &self,
        kernel: &Kernel,
        prepared: Option<&Prepared<'_>>,
        args: &[Tensor],
    ) -> Result<Tensor> {
        let refs: Vec<&Tensor> = args.iter().collect();
        let x = refs
            .first()
            .ok_or_else(|| RuntimeError::Invalid(format!("{} has no input", kernel.name)))?;
        match (&kernel.op, prepared) {
            (Op::Conv(op), Some(p)) => Ok(conv::conv2d(x, p.weight.view(), p.bias.as_ref(), op)),
            (Op::Dense(_), Some(p)) => Ok(dense::dense(x, p.weight.view(), p.bias.as_ref())),
            (op, _) => {
                let node = self.net.graph.node(kernel.node);
                evaluate(node, op, &refs, self.weights)
            }
        }
    }

    fn epilogue(&self, kernel: &Kernel, mut y: Tensor, storage: &Storage) -> Result<Tensor> {
        for step in &kernel.epilogue {
            y = match step {
                Step::Bias => y,
                Step::Activation(activation) => activate(y, activation),
                Step::ScaleShift { layer, eps } => norm::batch_norm(
                    &y,
                    weight(self.weights, layer, "weight")?,
                    weight(self.weights, layer, "bias")?,
                    weight(self.weights, layer, "running_mean")?,
                    weight(self.weights, layer, "running_var")?,
                    *eps,
                ),
                Step::Add {
                    input,
                    self_scale,
                    input_scale,
                    ..
                } => {
                    // The reference computes `a + s·b`; one of the scales is 1, so this
                    // rounds exactly as it does.
                    let mut sum = storage.read(*input)?;
                    if *input_scale != 1.0 {
                        sum.mapv_inplace(|v| v * *input_scale as f32);
                    }
                    sum.scaled_add(*self_scale as f32, &y);
                    sum
                }
            };
        }
        Ok(y)
    }
}

/// `activation` of `y`: tanh and sigmoid by the generated code's helpers (within 2
/// ulp of the correctly rounded value, as glibc's own, in a tenth of the time:
/// LeNet-5's tanh took 0.09 of the 0.3 ms its interpreted run takes), the rest as the
/// reference computes.
fn activate(mut y: Tensor, activation: &Activation) -> Tensor {
    let in_place = match activation {
        Activation::Tanh => crate::jit::activation::tanh_in_place,
        Activation::Sigmoid => crate::jit::activation::sigmoid_in_place,
        _ => return elementwise::activation(&y, activation),
    };
    match y.as_slice_mut() {
        Some(values) => {
            in_place(values);
            y
        }
        None => elementwise::activation(&y, activation),
    }
}

/// About how long the reference kernels take over `work` units of `op`
/// (`codegen::cpu::kernel_work`'s, about a multiply-add each), in nanoseconds: what
/// the JIT weighs against compiling a kernel it will run once. Measured on the first
/// run of the example networks on the Xeon (LeNet-5's convs 0.16-1.3 ns a unit, the
/// first one paying for the process's first product; the pools 1.5-2.7, dense layers
/// 0.7, LRN and global pools 0.9, a softmax 20 and 10 us for any kernel at all: each
/// reads its operands into tensors and writes its result back).
pub fn reference_nanoseconds(op: &Op, work: u64) -> u64 {
    const PER_KERNEL: u64 = 10_000;
    let per_unit = match op {
        Op::Conv(_) => 0.5,
        Op::Dense(_) => 0.7,
        Op::Pool(_) | Op::AdaptivePool(_) => 2.5,
        Op::GlobalPool(_) | Op::Lrn(_) => 1.0,
        Op::Activation(Activation::Softmax) => 20.0,
        Op::Activation(_) | Op::BatchNorm(_) | Op::Add(_) | Op::Concat(_) => 2.0,
        Op::Input(_) | Op::Dropout(_) | Op::Flatten(_) => 0.0,
    };
    PER_KERNEL.saturating_add((work as f64 * per_unit) as u64)
}

/// Compiles and runs in one call.
pub fn run(net: &CheckedGraph, weights: &Weights, inputs: Vec<Tensor>) -> Result<Tensor> {
    Program::new(net, weights)?.run(inputs)
}
