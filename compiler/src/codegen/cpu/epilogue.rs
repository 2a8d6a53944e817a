//! A kernel's epilogue over one sample's output, channel by channel: the element-wise
//! steps in source order, four lanes at a time (f32x4) with a scalar tail, in one pass
//! over the row. Tanh and sigmoid are the exception where the runtime has row helpers
//! for them (`CpuTarget::activation_helpers`): the steps before one run as a pass, the
//! helper is called over the rows, and the steps after run as another pass; otherwise
//! `exp.rs` generates them inline.

use super::conv::{At, Geometry, Pointers, offset};
use super::loops::{counted, fixed};
use super::{Arg, CpuTarget, sample_stride};
use crate::ops::Activation;
use crate::passes::{FusedGraph, Kernel, Step, TensorId};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{AbiParam, InstBuilder, MemFlagsData, Signature, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

const LANES: u64 = 4;

/// The argument slots the epilogue reads, after the product's.
pub fn args(kernel: &Kernel, target: &CpuTarget) -> Vec<Arg> {
    step_args(&kernel.epilogue, target)
}

/// The argument slots `steps` read: their per-channel values, residual inputs and,
/// where `target` calls them, the activation helpers (whose slots tell the generator
/// to call them).
pub fn step_args(steps: &[Step], target: &CpuTarget) -> Vec<Arg> {
    let mut args = Vec::new();
    for step in steps {
        match step {
            Step::ScaleShift { layer, eps } => {
                args.push(Arg::Scale {
                    layer: layer.clone(),
                    eps: *eps,
                });
                args.push(Arg::Shift {
                    layer: layer.clone(),
                    eps: *eps,
                });
            }
            Step::Add { input, .. } => args.push(Arg::AddInput(*input)),
            Step::Activation(activation) if target.activation_helpers => {
                if let Some(helper) = helper(activation)
                    && !args.contains(&helper)
                {
                    args.push(helper);
                }
            }
            Step::Bias | Step::Activation(_) => {}
        }
    }
    args
}

/// The runtime's row helper for `activation`, if it has one: tanh and sigmoid, whose
/// exponent arithmetic is what f32x4 code does worst.
fn helper(activation: &Activation) -> Option<Arg> {
    match activation {
        Activation::Tanh => Some(Arg::Tanh),
        Activation::Sigmoid => Some(Arg::Sigmoid),
        _ => None,
    }
}

/// A run of an epilogue's steps: inline code over each row, or one helper call.
enum Stretch<'a> {
    Inline(&'a [Step]),
    /// The helper's function pointer.
    Call(Value),
}

/// `steps` cut into stretches: each activation whose helper the kernel declared is a
/// call of its own, the steps between them inline.
fn stretches<'a>(steps: &'a [Step], pointers: &Pointers) -> Vec<Stretch<'a>> {
    let mut stretches = Vec::new();
    let mut inline_from = 0;
    for (i, step) in steps.iter().enumerate() {
        let Step::Activation(activation) = step else {
            continue;
        };
        let Some(callee) = helper(activation).and_then(|arg| pointers.find(&arg)) else {
            continue;
        };
        if inline_from < i {
            stretches.push(Stretch::Inline(&steps[inline_from..i]));
        }
        stretches.push(Stretch::Call(callee));
        inline_from = i + 1;
    }
    if inline_from < steps.len() {
        stretches.push(Stretch::Inline(&steps[inline_from..]));
    }
    stretches
}

/// How many residual inputs `steps` read.
fn add_count(steps: &[Step]) -> usize {
    add_inputs(steps).count()
}

/// Calls an activation helper over `count` floats from `source` into `destination`.
fn call_helper(
    b: &mut FunctionBuilder,
    callee: Value,
    (source, destination): (Value, Value),
    count: Value,
) {
    let pointer = b.func.signature.params[0].value_type;
    let mut signature = Signature::new(b.func.signature.call_conv);
    for ty in [pointer, pointer, types::I64] {
        signature.params.push(AbiParam::new(ty));
    }
    let signature = b.import_signature(signature);
    b.ins()
        .call_indirect(signature, callee, &[source, destination, count]);
}

/// The tensors `steps` add, in order.
pub fn add_inputs(steps: &[Step]) -> impl Iterator<Item = TensorId> + '_ {
    steps.iter().filter_map(|s| match s {
        Step::Add { input, .. } => Some(*input),
        _ => None,
    })
}

/// `steps` where every one of them can run on values in registers as they are stored
/// (none calls a helper): the whole epilogue, or `None`.
pub(super) fn in_registers<'a>(steps: &'a [Step], pointers: &Pointers) -> Option<&'a [Step]> {
    match stretches(steps, pointers).as_slice() {
        [] | [Stretch::Inline(_)] => Some(steps),
        _ => None,
    }
}

/// What the steps of one channel read: its scalars, and the rows of residual inputs.
pub(super) struct Channel {
    bias: Option<Value>,
    scale_shift: Vec<(Value, Value)>,
    add_rows: Vec<Value>,
}

/// The part of a sample's output an epilogue covers: a chunk's columns, and the
/// channels `[first, end)` (of the group) its unit computed.
pub struct Columns {
    pub first: Value,
    pub count: u64,
    pub channels: (Value, Value),
}

/// `steps` (the kernel's epilogue, or what the tiles left of it) over one chunk of one
/// sample and group, channel by channel.
pub fn generate(
    b: &mut FunctionBuilder,
    fused: &FusedGraph,
    steps: &[Step],
    geometry: &Geometry,
    pointers: &Pointers,
    at: &At,
    columns: &Columns,
) {
    let (first, end) = columns.channels;
    if steps
        .iter()
        .all(|s| matches!(s, Step::Activation(Activation::Identity)))
    {
        return;
    }
    let n = geometry.n();
    let first_channel = b.ins().imul_imm_s(at.group, geometry.m() as i64);
    // Residual inputs at this sample, group and chunk: row `m` is `m * n` further.
    let add_bases: Vec<Value> = add_inputs(steps)
        .map(|input| residual_at(b, fused, geometry, pointers, input, at, columns.first))
        .collect();
    let output = offset(b, at.output, columns.first, 1);
    let mut adds = add_bases.into_iter();
    // Channels [first, end) of the group (this unit's part), stretch by stretch.
    for stretch in stretches(steps, pointers) {
        match stretch {
            Stretch::Inline(steps) => {
                let bases: Vec<Value> = adds.by_ref().take(add_count(steps)).collect();
                counted(b, first, end, 1, |b, m| {
                    let row = offset(b, output, m, n);
                    let channel = b.ins().iadd(first_channel, m);
                    let add_rows = bases.iter().map(|&base| offset(b, base, m, n)).collect();
                    let row = Row {
                        source: row,
                        destination: row,
                        channel,
                        add_rows,
                        len: columns.count,
                    };
                    inline_over_row(b, steps, pointers, &row);
                });
            }
            // Whole rows are one run of the channels: one call over all of them.
            Stretch::Call(callee) if columns.count == n => {
                let rows = offset(b, output, first, n);
                let channels = b.ins().isub(end, first);
                let count = b.ins().imul_imm_s(channels, n as i64);
                call_helper(b, callee, (rows, rows), count);
            }
            Stretch::Call(callee) => {
                let count = b.ins().iconst(types::I64, columns.count as i64);
                counted(b, first, end, 1, |b, m| {
                    let row = offset(b, output, m, n);
                    call_helper(b, callee, (row, row), count);
                });
            }
        }
    }
}

/// Where residual `input` holds the value of the group's first channel at output
/// column `first` of the sample and group `at`: its rows are `n` apart, as the output's.
pub(super) fn residual_at(
    b: &mut FunctionBuilder,
    fused: &FusedGraph,
    geometry: &Geometry,
    pointers: &Pointers,
    input: TensorId,
    at: &At,
    first: Value,
) -> Value {
    let n = geometry.n();
    let base = pointers.get(&Arg::AddInput(input));
    let sample = offset(b, base, at.sample, sample_stride(fused, input));
    let first_channel = b.ins().imul_imm_s(at.group, geometry.m() as i64);
    let group = offset(b, sample, first_channel, n);
    offset(b, group, first, 1)
}

/// Set to `0`, every epilogue runs as a pass over the output after the product: the
/// switch for measuring what finishing it in the tile saves.
pub const TILE_EPILOGUE_ENV: &str = "CNNC_TILE_EPILOGUE";

/// Whether the environment lets the tiles finish epilogues (`CpuTarget::tile_epilogue`):
/// unless `CNNC_TILE_EPILOGUE=0`.
pub fn tile_epilogue_from_env() -> bool {
    std::env::var(TILE_EPILOGUE_ENV).map_or(true, |v| v != "0")
}

/// The part of an epilogue the register tile can finish on its sums (`tile.rs`'s ABI):
/// the longest start of the fused graph's steps that is, in this order and each
/// optional, the bias, one plain residual add, a ReLU. That covers a ResNet's every
/// conv and most others whole; what follows (LeNet's tanh after its bias, a scaled add,
/// a batch norm after an activation) runs as a pass over the output after the product.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TileEpilogue {
    pub bias: bool,
    pub residual: Option<TensorId>,
    pub relu: bool,
    /// How many of the steps the tile does (identities included): the pass does the
    /// rest.
    pub steps: usize,
}

impl TileEpilogue {
    /// The tile's part of `steps`, if it does anything.
    pub fn of(steps: &[Step]) -> Option<TileEpilogue> {
        // The first step from `at` on that is not an identity.
        let past_identities = |at: usize| {
            let identity = |s: &&Step| **s == Step::Activation(Activation::Identity);
            at + steps[at..].iter().take_while(identity).count()
        };
        let mut at = 0;
        // The next step that is not an identity, if `wanted`: taken, with the
        // identities before it.
        let mut take = |wanted: &dyn Fn(&Step) -> bool| {
            let next = past_identities(at);
            let step = steps.get(next).filter(|s| wanted(s))?;
            at = next + 1;
            Some(step)
        };
        let bias = take(&|s| *s == Step::Bias).is_some();
        let residual = take(&|s| {
            matches!(s, Step::Add { self_scale, input_scale, .. }
                if *self_scale == 1.0 && *input_scale == 1.0)
        })
        .and_then(|s| match s {
            Step::Add { input, .. } => Some(*input),
            _ => None,
        });
        let relu = take(&|s| *s == Step::Activation(Activation::Relu)).is_some();
        let steps = past_identities(at);
        (bias || residual.is_some() || relu).then_some(TileEpilogue {
            bias,
            residual,
            relu,
            steps,
        })
    }
}

/// One row of a channel for `steps_over_row`: read from `source`, written to
/// `destination` (the same row for an epilogue in place), with the rows of the
/// residual inputs its `Add` steps read, in order.
pub struct Row {
    pub source: Value,
    pub destination: Value,
    /// The channel whose bias, scale and shift apply.
    pub channel: Value,
    pub add_rows: Vec<Value>,
    pub len: u64,
}

/// `steps` over one row: the epilogue of a conv's output row, and the whole of a lone
/// activation, batch norm, add or copy.
pub fn steps_over_row(b: &mut FunctionBuilder, steps: &[Step], pointers: &Pointers, row: &Row) {
    let mut adds = row.add_rows.iter().copied();
    let mut source = row.source;
    let stretches = stretches(steps, pointers);
    if stretches.is_empty() {
        // No step: a copy.
        return inline_over_row(b, steps, pointers, row);
    }
    for stretch in stretches {
        match stretch {
            Stretch::Inline(steps) => {
                let part = Row {
                    source,
                    destination: row.destination,
                    channel: row.channel,
                    add_rows: adds.by_ref().take(add_count(steps)).collect(),
                    len: row.len,
                };
                inline_over_row(b, steps, pointers, &part);
            }
            Stretch::Call(callee) => {
                let count = b.ins().iconst(types::I64, row.len as i64);
                call_helper(b, callee, (source, row.destination), count);
            }
        }
        // Later stretches work on what the first wrote.
        source = row.destination;
    }
}

/// `steps`, none a helper's, over one row, four lanes at a time.
fn inline_over_row(b: &mut FunctionBuilder, steps: &[Step], pointers: &Pointers, row: &Row) {
    let channel = channel(b, steps, pointers, row.channel, row.add_rows.clone());
    let steps: Vec<&Step> = steps.iter().collect();
    lanes(b, &steps, &channel, (row.source, row.destination), row.len);
}

/// Channel `m`'s scalars for `steps` (loaded here), with the rows of its residual
/// inputs, in the order of the steps' adds.
pub(super) fn channel(
    b: &mut FunctionBuilder,
    steps: &[Step],
    pointers: &Pointers,
    m: Value,
    add_rows: Vec<Value>,
) -> Channel {
    let scalar = |b: &mut FunctionBuilder, base: Value| {
        let at = offset(b, base, m, 1);
        b.ins()
            .load(types::F32, MemFlagsData::new().with_notrap(), at, 0)
    };
    let bias = steps
        .contains(&Step::Bias)
        .then(|| scalar(b, pointers.get(&Arg::Bias)));
    let mut scale_shift = Vec::new();
    for step in steps {
        if let Step::ScaleShift { layer, eps } = step {
            let (layer, eps) = (layer.clone(), *eps);
            let scale = scalar(
                b,
                pointers.get(&Arg::Scale {
                    layer: layer.clone(),
                    eps,
                }),
            );
            let shift = scalar(b, pointers.get(&Arg::Shift { layer, eps }));
            scale_shift.push((scale, shift));
        }
    }
    Channel {
        bias,
        scale_shift,
        add_rows,
    }
}

/// One pass over the row, `(source, destination)`: whole vectors, then the scalar tail.
fn lanes(
    b: &mut FunctionBuilder,
    steps: &[&Step],
    channel: &Channel,
    rows: (Value, Value),
    n: u64,
) {
    fixed(b, n / LANES, |b, v| {
        let at = b.ins().imul_imm_s(v, LANES as i64);
        element(b, types::F32X4, steps, channel, rows, at);
    });
    for e in (n / LANES) * LANES..n {
        let at = b.ins().iconst(types::I64, e as i64);
        element(b, types::F32, steps, channel, rows, at);
    }
}

/// Loads `ty` (f32 or f32x4) at element `at` of the source row, applies the steps,
/// stores it at the same element of the destination row.
fn element(
    b: &mut FunctionBuilder,
    ty: Type,
    steps: &[&Step],
    channel: &Channel,
    (source, destination): (Value, Value),
    at: Value,
) {
    let address = offset(b, source, at, 1);
    let value = b
        .ins()
        .load(ty, MemFlagsData::new().with_notrap(), address, 0);
    let value = apply(b, ty, steps, channel, value, at);
    let address = if destination == source {
        address
    } else {
        offset(b, destination, at, 1)
    };
    b.ins()
        .store(MemFlagsData::new().with_notrap(), value, address, 0);
}

/// `steps`, none a helper's, on `value` (f32 or f32x4): the channel's element `at`,
/// whose residual inputs are at element `at` of the channel's add rows.
pub(super) fn apply(
    b: &mut FunctionBuilder,
    ty: Type,
    steps: &[&Step],
    channel: &Channel,
    mut value: Value,
    at: Value,
) -> Value {
    let (mut scale_shift, mut adds) = (channel.scale_shift.iter(), channel.add_rows.iter());
    for step in steps {
        value = match step {
            Step::Bias => {
                let bias = splat(b, ty, channel.bias.expect("a bias step has its bias"));
                b.ins().fadd(value, bias)
            }
            Step::ScaleShift { .. } => {
                let &(scale, shift) = scale_shift.next().expect("one pair per step");
                let (scale, shift) = (splat(b, ty, scale), splat(b, ty, shift));
                let scaled = b.ins().fmul(value, scale);
                b.ins().fadd(scaled, shift)
            }
            Step::Activation(activation) => activate(b, ty, activation, value),
            Step::Add {
                self_scale,
                input_scale,
                ..
            } => {
                let add_row = *adds.next().expect("one row per add");
                let address = offset(b, add_row, at, 1);
                let other = b
                    .ins()
                    .load(ty, MemFlagsData::new().with_notrap(), address, 0);
                // As the reference: input_scale·input + self_scale·result.
                let other = scaled(b, ty, other, *input_scale);
                let own = scaled(b, ty, value, *self_scale);
                b.ins().fadd(other, own)
            }
        };
    }
    value
}

fn scaled(b: &mut FunctionBuilder, ty: Type, value: Value, scale: f64) -> Value {
    if scale == 1.0 {
        return value;
    }
    let factor = b.ins().f32const(scale as f32);
    let factor = splat(b, ty, factor);
    b.ins().fmul(value, factor)
}

/// `scalar` in every lane of `ty` (itself for f32).
pub(super) fn splat(b: &mut FunctionBuilder, ty: Type, scalar: Value) -> Value {
    if ty.is_vector() {
        b.ins().splat(ty, scalar)
    } else {
        scalar
    }
}

/// The f32 `value` in every lane of `ty`.
pub(super) fn constant(b: &mut FunctionBuilder, ty: Type, value: f32) -> Value {
    let scalar = b.ins().f32const(value);
    splat(b, ty, scalar)
}

/// The element-wise activations, as the reference interpreter computes them.
fn activate(b: &mut FunctionBuilder, ty: Type, activation: &Activation, value: Value) -> Value {
    match activation {
        Activation::Relu => {
            let zero = constant(b, ty, 0.0);
            larger(b, ty, value, zero)
        }
        Activation::Relu6 => {
            let (zero, six) = (constant(b, ty, 0.0), constant(b, ty, 6.0));
            let low = larger(b, ty, value, zero);
            smaller(b, ty, low, six)
        }
        Activation::LeakyRelu { slope } => {
            let (zero, slope) = (constant(b, ty, 0.0), constant(b, ty, *slope as f32));
            let leaked = b.ins().fmul(value, slope);
            let positive = b.ins().fcmp(FloatCC::GreaterThanOrEqual, value, zero);
            if ty.is_vector() {
                let mask = b.ins().bitcast(ty, MemFlagsData::new(), positive);
                b.ins().bitselect(mask, value, leaked)
            } else {
                b.ins().select(positive, value, leaked)
            }
        }
        Activation::Tanh => super::exp::tanh(b, ty, value),
        Activation::Sigmoid => super::exp::sigmoid(b, ty, value),
        // Never in an epilogue: softmax is a kernel; identity changes nothing.
        Activation::Identity | Activation::Softmax => value,
    }
}

/// `y < x ? x : y`: one `maxss`/`maxps` on x64, where Cranelift's `fmax` (NaN-exact)
/// takes several instructions; a NaN `x` gives `y`, as `f32::max(x, y)` does for
/// relu's constant `y`.
pub(super) fn larger(b: &mut FunctionBuilder, ty: Type, x: Value, y: Value) -> Value {
    let less = b.ins().fcmp(FloatCC::LessThan, y, x);
    choose(b, ty, less, x, y)
}

/// `x < y ? x : y`: one `minss`/`minps` on x64.
pub(super) fn smaller(b: &mut FunctionBuilder, ty: Type, x: Value, y: Value) -> Value {
    let less = b.ins().fcmp(FloatCC::LessThan, x, y);
    choose(b, ty, less, x, y)
}

pub(super) fn choose(
    b: &mut FunctionBuilder,
    ty: Type,
    condition: Value,
    x: Value,
    y: Value,
) -> Value {
    if ty.is_vector() {
        let mask = b.ins().bitcast(ty, MemFlagsData::new(), condition);
        b.ins().bitselect(mask, x, y)
    } else {
        b.ins().select(condition, x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::TileEpilogue;
    use crate::ops::Activation;
    use crate::passes::{Step, TensorId};

    fn add(self_scale: f64, input_scale: f64) -> Step {
        Step::Add {
            layer: "add".into(),
            input: TensorId(3),
            self_scale,
            input_scale,
        }
    }

    #[test]
    fn the_tile_finishes_a_bias_a_plain_add_and_a_relu_in_that_order() {
        let relu = Step::Activation(Activation::Relu);
        let identity = Step::Activation(Activation::Identity);
        let tanh = Step::Activation(Activation::Tanh);
        let bn = Step::ScaleShift {
            layer: "bn".into(),
            eps: 1e-5,
        };
        let tile = |bias, residual, relu, steps| {
            Some(TileEpilogue {
                bias,
                residual,
                relu,
                steps,
            })
        };
        let cases = [
            // All of a ResNet's.
            (
                vec![Step::Bias, add(1.0, 1.0), relu.clone()],
                tile(true, Some(TensorId(3)), true, 3),
            ),
            // Identities are taken along.
            (
                vec![Step::Bias, identity.clone()],
                tile(true, None, false, 2),
            ),
            // The start the tile can do; the pass does the rest.
            (vec![Step::Bias, tanh.clone()], tile(true, None, false, 1)),
            (vec![Step::Bias, add(0.5, 1.0)], tile(true, None, false, 1)),
            // The order matters: a ReLU before the add is not the tile's.
            (
                vec![Step::Bias, relu.clone(), add(1.0, 1.0)],
                tile(true, None, true, 2),
            ),
            (
                vec![Step::Bias, add(1.0, 1.0), add(1.0, 1.0)],
                tile(true, Some(TensorId(3)), false, 2),
            ),
            (vec![relu.clone(), bn.clone()], tile(false, None, true, 1)),
            // Nothing the tile can do first.
            (vec![], None),
            (vec![identity.clone()], None),
            (vec![tanh, Step::Bias], None),
            (vec![bn, relu], None),
        ];
        for (steps, expected) in cases {
            assert_eq!(TileEpilogue::of(&steps), expected, "{steps:?}");
        }
    }
}
