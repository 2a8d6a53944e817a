//! What the differential tests of the executors share: seeded weights with random batch
//! norm statistics, inputs, the error measure, and a generator of small networks.
#![allow(dead_code)]

use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::compile;
use cnnc_runtime::Tensor;
use cnnc_runtime::weights::{self, Weights};
use proptest::prelude::*;

pub fn network(source: &str) -> CheckedGraph {
    let mut compilation = compile(source);
    assert!(
        !compilation.has_errors(),
        "{:?}\n{source}",
        compilation.diagnostics
    );
    compilation.networks.remove(0)
}

/// A small deterministic generator: tests need no statistics, only variety.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (hi - lo) * ((self.0 >> 40) as f32 / (1u64 << 24) as f32)
    }

    pub fn tensor(&mut self, shape: Vec<usize>, lo: f32, hi: f32) -> Tensor {
        let n = shape.iter().product();
        let values = (0..n).map(|_| self.uniform(lo, hi)).collect();
        Tensor::from_shape_vec(shape, values).expect("shape fits")
    }
}

/// Seeded weights, with every batch norm's statistics drawn at random.
pub fn weights(net: &CheckedGraph, seed: u64) -> Weights {
    let mut weights = Weights::seeded(net, seed);
    let mut rng = Lcg(seed ^ 0x9e37_79b9);
    for e in weights::expected(net) {
        let range = match e.name.rsplit('.').next() {
            Some("running_var") => (0.2, 2.0),
            Some("running_mean") => (-0.5, 0.5),
            _ if e.spec.learnable && e.spec.shape.len() == 1 && bn_layer(net, &e.name) => {
                if e.name.ends_with(".weight") {
                    (0.5, 1.5)
                } else {
                    (-0.5, 0.5)
                }
            }
            _ => continue,
        };
        let shape = e.spec.shape.iter().map(|&d| d as usize).collect();
        weights.insert(e.name.clone(), rng.tensor(shape, range.0, range.1));
    }
    weights
}

fn bn_layer(net: &CheckedGraph, weight: &str) -> bool {
    net.graph.nodes.iter().any(|n| {
        matches!(n.op, cnnc_compiler::ops::Op::BatchNorm(_))
            && weight
                .strip_prefix(&n.name)
                .is_some_and(|s| s.starts_with('.'))
    })
}

pub fn input(net: &CheckedGraph, batch: usize, seed: u64) -> Tensor {
    let id = net.graph.inputs[0];
    let mut shape = vec![batch];
    shape.extend(net.facts[id.0].shape.0.iter().map(|&d| d as usize));
    Lcg(seed).tensor(shape, -1.0, 1.0)
}

/// max |a − b| / max |b| (0 when both are all zeros).
pub fn relative_error(actual: &Tensor, expected: &Tensor) -> f32 {
    assert_eq!(actual.shape(), expected.shape());
    let scale = expected
        .iter()
        .fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
    let worst = actual
        .iter()
        .zip(expected.iter())
        .fold(0.0f32, |m, (a, e)| m.max((a - e).abs()));
    worst / scale
}

/// One generated layer group, given the current channels; returns its text and the
/// channels after it. Spatial size is kept (pads) except by the pooling choice.
fn layer(kind: u8, a: u64, b: u64, channels: u64, size: &mut u64) -> (String, u64) {
    const ACTIVATIONS: [&str; 6] = ["relu", "relu6", "leakyrelu(0.1)", "tanh", "sigmoid", ""];
    let act = ACTIVATIONS[(a + b) as usize % ACTIVATIONS.len()];
    match kind {
        0 => (
            format!(
                "conv({a}, 3x3, pad=1, bias={}) bn {act}",
                b.is_multiple_of(2)
            ),
            a,
        ),
        1 => (format!("conv({a}, 1x1) {act} bn"), a),
        2 => (
            format!(
                "residual {{ conv({channels}, 3x3, pad=1, bias=false) bn relu conv({channels}, 3x3, pad=1) bn }} relu"
            ),
            channels,
        ),
        3 => (
            format!(
                "residual(scale=0.5) {{ conv({a}, 3x3, pad=1) {act} }} shortcut {{ conv({a}, 1x1, bias=false) bn }}"
            ),
            a,
        ),
        4 => (
            format!(
                "concat {{ branch {{ conv({a}, 1x1) relu }} branch {{ conv({b}, 3x3, pad=1) bn {act} }} branch {{ maxpool(3x3, stride=1, pad=1) }} }}"
            ),
            a + b + channels,
        ),
        5 if *size >= 2 => {
            *size /= 2;
            ("maxpool(2x2, stride=2) dropout(0.3)".to_string(), channels)
        }
        6 => ("avgpool(3x3, stride=1, pad=1) bn".to_string(), channels),
        7 => (
            // A conv read twice: by its activation and by the add.
            format!("conv({channels}, 1x1) -> t {act} -> u add(t, u) {act}"),
            channels,
        ),
        8 => (
            // 1x1 convs that merge: same input, same epilogue, outputs read apart.
            format!(
                "concat {{ branch {{ conv({a}, 1x1) {act} conv({a}, 3x3, pad=1) }} branch {{ conv({b}, 1x1, bias=false) bn {act} conv({a}, 3x3, pad=1) bn }} }}"
            ),
            2 * a,
        ),
        _ => (format!("conv({a}, 1x1, bias=false) bn dropout {act}"), a),
    }
}

fn head(kind: u8, units: u64) -> String {
    match kind {
        0 => String::new(),
        1 => format!("flatten dense({units}) relu dropout dense(3)"),
        2 => format!("globalavgpool flatten dense({units}) bn tanh"),
        _ => format!("flatten dense({units}) softmax"),
    }
}

pub fn generated_network() -> impl Strategy<Value = String> {
    let layers = (0u8..10, 1u64..6, 1u64..6);
    (
        1u64..4,
        prop::sample::select(vec![4u64, 5, 8]),
        prop::collection::vec(layers, 1..6),
        0u8..4,
        1u64..8,
    )
        .prop_map(|(c, mut size, layers, head_kind, units)| {
            let mut channels = c;
            let input = format!("network G(input: {c}x{size}x{size}) {{");
            let mut lines = vec![input];
            for (kind, a, b) in layers {
                let (text, after) = layer(kind, a, b, channels, &mut size);
                lines.push(format!("    {text}"));
                channels = after;
            }
            lines.push(format!("    {}\n}}", head(head_kind, units)));
            lines.join("\n")
        })
}

/// An example network by name.
pub fn example(name: &str) -> CheckedGraph {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    network(&std::fs::read_to_string(root.join(format!("{name}.cnn"))).expect("example"))
}

/// One ONNX Runtime fixture of tests/reference: the network, its weights, the input
/// and ONNX Runtime's output.
pub struct Fixture {
    pub name: String,
    pub net: CheckedGraph,
    pub weights: Weights,
    pub input: Tensor,
    pub expected: Tensor,
}

/// Every fixture of tests/reference, sorted by name.
pub fn onnx_fixtures() -> Vec<Fixture> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/reference");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("net.cnn").exists())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let net = network(&std::fs::read_to_string(dir.join("net.cnn")).expect("net"));
            let weights = Weights::load(&dir.join("weights.safetensors"), &net).expect("weights");
            Fixture {
                name: dir.display().to_string(),
                input: ndarray_npy::read_npy(dir.join("input.npy")).expect("input"),
                expected: ndarray_npy::read_npy(dir.join("expected.npy")).expect("expected"),
                net,
                weights,
            }
        })
        .collect()
}
