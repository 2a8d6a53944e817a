//! What each fuzz target does with its input, one function per surface that reads
//! outside data. The fuzz targets (`fuzz_targets/`) call these on libFuzzer's inputs;
//! the regression tests (`tests/hardening.rs`) include this file and call them on the
//! committed crashing inputs, and the differential runner calls `run_differential` on
//! generated networks. A function returns normally for a result or an error and panics
//! only on a bug: a panic inside cnnc, or the JIT disagreeing with the reference.

use arbitrary::Arbitrary;
use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::{compile, passes, summary, syntax};
use cnnc_runtime::input::{self, Normalize};
use cnnc_runtime::reference::{self, RunOptions};
use cnnc_runtime::weights::Weights;
use cnnc_runtime::{Tensor, jit, memory};
use std::fmt::Write as _;
use std::path::Path;

/// Raw text through the parser, the elaborator, the checker, the summary, the passes,
/// the memory plan and the formatter.
pub fn cnn_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for net in compile(text).networks {
        let _ = summary::summarize(&net, Some(1));
        let fused = passes::fuse(&net);
        let _ = passes::listing(&fused, &passes::plan(&fused));
    }
    let _ = syntax::format(text);
}

/// A generated network, valid in syntax, with random shapes and arguments: the checker
/// judges it, and one that checks and is small runs on the reference interpreter and
/// the JIT, which must agree.
pub fn cnn_structured(spec: &NetworkSpec) {
    if spec.expanded_layers() <= MAX_EXPANDED_LAYERS {
        check_and_run(spec);
    }
}

/// What `cnn_structured` does with a network of any size (the regression tests run
/// the huge ones through it).
pub fn check_and_run(spec: &NetworkSpec) {
    let source = spec.source();
    let mut compilation = compile(&source);
    if compilation.has_errors() || compilation.networks.is_empty() {
        return;
    }
    let net = compilation.networks.remove(0);
    let fused = passes::fuse(&net);
    let _ = passes::listing(&fused, &passes::plan(&fused));
    if let Some(error) = run_differential(&net, spec.batch(), spec.seed, spec.threads()) {
        panic!("{error}\n{source}");
    }
}

/// The most layers a generated network may expand to. Nested `repeat`s reach the
/// elaborator's limit (100,000 layers), which takes seconds under AddressSanitizer and
/// tens of seconds on a loaded machine: libFuzzer's timeouts, not bugs. Those sizes are
/// tested by `tests/hardening.rs` and the inputs in `tests/regressions/cnn_structured/`.
const MAX_EXPANDED_LAYERS: u64 = 4096;

/// The most a generated network may compute or hold to be run: the fuzzers want many
/// small networks a second, not a few big ones.
const RUN_MACS: u64 = 4_000_000;
/// And at most this many layers: the JIT compiles a function per kernel, and a
/// million tiny layers (nested `repeat`s) made the fuzzer spend gigabytes compiling.
/// (Past `jit::MAX_KERNELS` the JIT refuses, clearly; `tests/hardening.rs` and
/// runtime/tests/jit.rs check that, not the fuzzer.)
const RUN_NODES: usize = 256;
const RUN_BYTES: u64 = 64 << 20;

/// The relative disagreement allowed between the JIT and the reference: the tile sums
/// in another order than the reference's matrix product (as in runtime/tests/jit.rs).
pub const TOLERANCE: f32 = 1e-4;

/// Runs a checked network on the reference interpreter and the JIT, seeded weights and
/// input, and says how they disagree; `None` when they agree or the network is too big
/// to run here. Errors of either backend on a network that checked are disagreements.
pub fn run_differential(
    net: &CheckedGraph,
    batch: usize,
    seed: u64,
    threads: usize,
) -> Option<String> {
    if !small_enough(net, batch) {
        return None;
    }
    let weights = Weights::seeded(net, seed);
    let input = seeded_input(net, batch, seed);
    let expected = match reference::run(net, &weights, vec![input.clone()], &RunOptions::default())
    {
        Ok(outputs) => outputs.output,
        Err(e) => return Some(format!("the reference fails: {e}")),
    };
    let actual =
        match jit::Program::with_threads(net, &weights, threads).and_then(|p| p.run(vec![input])) {
            Ok(output) => output,
            Err(e) => return Some(format!("the JIT fails: {e}")),
        };
    disagreement(&actual, &expected)
}

/// Whether a network is small enough for a fuzzer to run it many times a second.
pub fn small_enough(net: &CheckedGraph, batch: usize) -> bool {
    let macs = summary::summarize(net, None).totals.inference.macs;
    let keep = vec![false; net.graph.nodes.len()];
    net.graph.nodes.len() <= RUN_NODES
        && macs.saturating_mul(batch as u64) <= RUN_MACS
        && memory::check(net, batch as u64, &keep, Some(RUN_BYTES)).is_ok()
}

fn seeded_input(net: &CheckedGraph, batch: usize, seed: u64) -> Tensor {
    let shape = &net.facts[net.graph.inputs[0].0].shape;
    input::load(
        &input::InputSource::Random { seed },
        shape,
        batch,
        &Normalize::default_for(1),
    )
    .expect("a random input of a checked shape")
}

/// `None` when `actual` is within `TOLERANCE` of `expected`'s largest magnitude
/// everywhere and NaN exactly where it is.
pub fn disagreement(actual: &Tensor, expected: &Tensor) -> Option<String> {
    if actual.shape() != expected.shape() {
        return Some(format!(
            "the JIT's output is {:?}, the reference's {:?}",
            actual.shape(),
            expected.shape()
        ));
    }
    let scale = expected
        .iter()
        .filter(|v| v.is_finite())
        .fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
    let mut worst = (0.0f32, 0);
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let error = if a.is_nan() || e.is_nan() || a.is_infinite() || e.is_infinite() {
            if a.to_bits() == e.to_bits() || (a.is_nan() && e.is_nan()) {
                0.0
            } else {
                f32::INFINITY
            }
        } else {
            (a - e).abs() / scale
        };
        if error > worst.0 {
            worst = (error, i);
        }
    }
    (worst.0 > TOLERANCE).then(|| {
        let (a, e) = (
            actual.iter().nth(worst.1).copied().unwrap_or_default(),
            expected.iter().nth(worst.1).copied().unwrap_or_default(),
        );
        format!(
            "the JIT and the reference disagree: relative error {:e} at element {} (JIT {a}, reference {e})",
            worst.0, worst.1
        )
    })
}

/// A network to generate: the input's size, the layers, and how to run it. Every
/// number is a byte reduced to a small range, so most networks check and run.
#[derive(Arbitrary, Debug)]
pub struct NetworkSpec {
    channels: u8,
    height: u8,
    width: u8,
    layers: Vec<LayerSpec>,
    head: Head,
    batch: u8,
    threads: u8,
    pub seed: u64,
}

#[derive(Arbitrary, Debug)]
enum LayerSpec {
    Conv {
        out: u8,
        kernel: (u8, u8),
        stride: u8,
        pad: [u8; 4],
        dilation: u8,
        groups: u8,
        bias: bool,
        activation: Activation,
    },
    MaxPool {
        kernel: (u8, u8),
        stride: u8,
        pad: u8,
        ceil: bool,
    },
    AvgPool {
        kernel: (u8, u8),
        stride: u8,
        pad: u8,
        ceil: bool,
        count_include_pad: bool,
    },
    AdaptivePool {
        max: bool,
        size: u8,
    },
    BatchNorm,
    Lrn {
        size: u8,
        beta: u8,
    },
    Activation(Activation),
    Dropout,
    /// A call of the generated block `Unit(c)`: a padded conv and a relu.
    Call {
        out: u8,
    },
    Concat(Vec<Vec<LayerSpec>>),
    Residual {
        scale: Option<u8>,
        body: Vec<LayerSpec>,
        shortcut: Option<Vec<LayerSpec>>,
    },
    Repeat {
        count: u8,
        body: Vec<LayerSpec>,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Activation {
    None,
    Relu,
    Relu6,
    LeakyRelu,
    Tanh,
    Sigmoid,
}

#[derive(Arbitrary, Debug)]
enum Head {
    None,
    Dense { units: u8, activation: Activation },
    GlobalPool { max: bool, units: u8 },
    Softmax { units: u8 },
}

impl NetworkSpec {
    /// The network as `.cnn` text.
    pub fn source(&self) -> String {
        let mut text = String::from("block Unit(c) {\n    conv(c, 3x3, pad=1) relu\n}\n\n");
        let _ = writeln!(
            text,
            "network G(input: {}x{}x{}) {{",
            1 + self.channels % 4,
            1 + self.height % 16,
            1 + self.width % 16
        );
        for layer in &self.layers {
            layer.write(&mut text, 1);
        }
        let head = self.head.text();
        if !head.is_empty() {
            let _ = writeln!(text, "    {head}");
        }
        text.push_str("}\n");
        text
    }

    /// How many layers the network has once its `repeat`s and calls are expanded (an
    /// upper bound: layers the text leaves out, like an empty concat, count too).
    pub fn expanded_layers(&self) -> u64 {
        layers_in(&self.layers).saturating_add(1)
    }

    pub fn batch(&self) -> usize {
        1 + usize::from(self.batch % 3)
    }

    pub fn threads(&self) -> usize {
        1 + usize::from(self.threads % 3)
    }
}

impl LayerSpec {
    fn write(&self, text: &mut String, depth: usize) {
        let indent = "    ".repeat(depth);
        match self {
            LayerSpec::Concat(branches) => {
                let _ = writeln!(text, "{indent}concat {{");
                for branch in branches {
                    let _ = writeln!(text, "{indent}    branch {{");
                    write_body(text, branch, depth + 2);
                    let _ = writeln!(text, "{indent}    }}");
                }
                let _ = writeln!(text, "{indent}}}");
            }
            LayerSpec::Residual {
                scale,
                body,
                shortcut,
            } => {
                let scale = scale.map_or(String::new(), |s| {
                    format!("(scale={})", f32::from(s % 8 + 1) / 4.0)
                });
                let _ = writeln!(text, "{indent}residual{scale} {{");
                write_body(text, body, depth + 1);
                match shortcut {
                    Some(shortcut) => {
                        let _ = writeln!(text, "{indent}}} shortcut {{");
                        write_body(text, shortcut, depth + 1);
                        let _ = writeln!(text, "{indent}}}");
                    }
                    None => {
                        let _ = writeln!(text, "{indent}}}");
                    }
                }
            }
            LayerSpec::Repeat { count, body } => {
                let _ = writeln!(text, "{indent}repeat {} {{", count % 4);
                write_body(text, body, depth + 1);
                let _ = writeln!(text, "{indent}}}");
            }
            layer => {
                let _ = writeln!(text, "{indent}{}", layer.simple_text());
            }
        }
    }

    /// A layer without a body, on one line.
    fn simple_text(&self) -> String {
        let kernel = |(h, w): (u8, u8)| format!("{}x{}", 1 + h % 5, 1 + w % 5);
        match *self {
            LayerSpec::Conv {
                out,
                kernel: k,
                stride,
                pad: [t, l, b, r],
                dilation,
                groups,
                bias,
                activation,
            } => {
                let groups = 1 + u32::from(groups % 3);
                format!(
                    "conv({}, {}, stride={}, pad=[{}, {}, {}, {}], dilation={}, groups={groups}, bias={bias}) {}",
                    groups * (1 + u32::from(out % 12)),
                    kernel(k),
                    1 + stride % 3,
                    t % 3,
                    l % 3,
                    b % 3,
                    r % 3,
                    1 + dilation % 2,
                    activation.text()
                )
            }
            LayerSpec::MaxPool {
                kernel: k,
                stride,
                pad,
                ceil,
            } => format!(
                "maxpool({}, stride={}, pad={}, ceil={ceil})",
                kernel(k),
                1 + stride % 3,
                pad % 2
            ),
            LayerSpec::AvgPool {
                kernel: k,
                stride,
                pad,
                ceil,
                count_include_pad,
            } => format!(
                "avgpool({}, stride={}, pad={}, ceil={ceil}, count_include_pad={count_include_pad})",
                kernel(k),
                1 + stride % 3,
                pad % 2
            ),
            LayerSpec::AdaptivePool { max, size } => format!(
                "adaptive{}pool({})",
                if max { "max" } else { "avg" },
                1 + size % 4
            ),
            LayerSpec::BatchNorm => "bn".into(),
            LayerSpec::Lrn { size, beta } => format!(
                "lrn(size={}, beta={})",
                1 + size % 5,
                [0.75, 0.5, 1.0, 0.6][usize::from(beta % 4)]
            ),
            LayerSpec::Activation(activation) => match activation {
                Activation::None => "identity".into(),
                other => other.text().into(),
            },
            LayerSpec::Dropout => "dropout(0.5)".into(),
            LayerSpec::Call { out } => format!("Unit({})", 1 + out % 8),
            LayerSpec::Concat(_) | LayerSpec::Residual { .. } | LayerSpec::Repeat { .. } => {
                unreachable!("written with their bodies")
            }
        }
    }
}

/// A body of layers; an empty one is a dropout, since `{}` is an identity only for
/// some forms.
fn layers_in(body: &[LayerSpec]) -> u64 {
    body.iter().fold(0u64, |sum, layer| {
        let layers = match layer {
            LayerSpec::Repeat { count, body } => {
                u64::from(count % 4).saturating_mul(layers_in(body).max(1))
            }
            LayerSpec::Concat(branches) => branches
                .iter()
                .fold(1u64, |n, branch| n.saturating_add(layers_in(branch).max(1))),
            LayerSpec::Residual { body, shortcut, .. } => {
                let shortcut = shortcut.as_deref().map_or(0, layers_in);
                layers_in(body)
                    .max(1)
                    .saturating_add(shortcut)
                    .saturating_add(1)
            }
            // A call is a conv and a relu; a layer with its activation, two at most.
            _ => 2,
        };
        sum.saturating_add(layers)
    })
}

fn write_body(text: &mut String, layers: &[LayerSpec], depth: usize) {
    if layers.is_empty() {
        LayerSpec::Dropout.write(text, depth);
    }
    for layer in layers {
        layer.write(text, depth);
    }
}

impl Activation {
    fn text(self) -> &'static str {
        match self {
            Activation::None => "",
            Activation::Relu => "relu",
            Activation::Relu6 => "relu6",
            Activation::LeakyRelu => "leakyrelu(0.1)",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
        }
    }
}

impl Head {
    fn text(&self) -> String {
        match *self {
            Head::None => String::new(),
            Head::Dense { units, activation } => {
                format!("flatten dense({}) {}", 1 + units % 16, activation.text())
            }
            Head::GlobalPool { max, units } => format!(
                "global{}pool flatten dense({})",
                if max { "max" } else { "avg" },
                1 + units % 16
            ),
            Head::Softmax { units } => format!("flatten dense({}) softmax", 1 + units % 16),
        }
    }
}

/// A small network with every kind of weight (conv with and without bias, batch norm,
/// dense) that the weights fuzzer loads files against.
pub const WEIGHTS_NETWORK: &str = "network W(input: 2x6x6) {
    conv c(4, 3x3) bn b() relu
    conv d(3, 1x1, bias=false)
    flatten
    dense f(5)
}";

/// A safetensors file's bytes, loaded against `WEIGHTS_NETWORK`; what loads, runs.
pub fn weights(data: &[u8]) {
    let mut compilation = compile(WEIGHTS_NETWORK);
    let net = compilation.networks.remove(0);
    let Ok(weights) = Weights::from_bytes(data, Path::new("fuzz.safetensors"), &net) else {
        return;
    };
    let input = seeded_input(&net, 1, 0);
    reference::run(&net, &weights, vec![input], &RunOptions::default())
        .expect("weights that load run");
}

/// An `.npy` file's bytes, read as the input of a network taking 2x3x4.
pub fn npy(data: &[u8]) {
    let _ = input::decode(
        Path::new("fuzz.npy"),
        data,
        &[2, 3, 4],
        &Normalize::default_for(2),
    );
}

/// An image file's bytes (PNG, JPEG), decoded and resized for a network input whose
/// channels (1 or 3) and size come from the first two bytes.
pub fn image(data: &[u8]) {
    let [shape, size, rest @ ..] = data else {
        return;
    };
    let channels = if shape % 2 == 0 { 1 } else { 3 };
    let dims = [
        channels,
        1 + usize::from(size % 32),
        1 + usize::from(shape / 2 % 32),
    ];
    let _ = input::decode(
        Path::new("fuzz.image"),
        rest,
        &dims,
        &Normalize::default_for(channels),
    );
}

/// An ONNX model's bytes, imported: decoded, mapped to layers, written as text and
/// compiled, its weights matched to the network.
pub fn onnx(data: &[u8]) {
    let _ = cnnc_onnx::import(data, "Fuzz");
}
