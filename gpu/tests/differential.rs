//! The GPU backend against the reference interpreter: every op kind, odd layer
//! geometries, generated networks and the small examples, on the same seeded weights
//! (batch norms with random statistics) and inputs. Tolerance: max |gpu − reference| <=
//! 1e-4 × max |reference| (f32 sums in another order, LRN's sums in f32 where the
//! reference uses f64, the GPU's own exp and pow).
//!
//! Without an adapter every test says it was skipped and why; with
//! `REQUIRE_GPU_ADAPTER=1` (CI, after installing Mesa's drivers) a missing adapter
//! fails them instead. Each test prints the adapter and backend that ran it.

#[path = "../../runtime/tests/common/mod.rs"]
mod common;

use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::ops::{Activation, Op};
use cnnc_gpu::{Gpu, GpuError, GpuProgram};
use cnnc_runtime::Tensor;
use cnnc_runtime::reference::{self, RunOptions};
use cnnc_runtime::weights::Weights;
use common::{example, generated_network, input, network, relative_error, weights};
use proptest::prelude::*;
use std::sync::{Mutex, MutexGuard};

const TOLERANCE: f32 = 1e-4;

/// One test at a time on the device: lavapipe runs each device's dispatches on a thread
/// pool as wide as the machine, and two devices at once ran the examples 3x slower
/// than one after the other (2 cores).
static DEVICE_TURN: Mutex<()> = Mutex::new(());

/// The device and this test's turn on it, or `None` (having said why) when there is
/// none and none is required.
fn gpu(test: &str) -> Option<(Gpu, MutexGuard<'static, ()>)> {
    let turn = DEVICE_TURN.lock().unwrap_or_else(|e| e.into_inner());
    match Gpu::open() {
        Ok(gpu) => {
            eprintln!("{test}: on {}", gpu.adapter.describe());
            Some((gpu, turn))
        }
        Err(error) if std::env::var("REQUIRE_GPU_ADAPTER").as_deref() == Ok("1") => {
            panic!("{test}: REQUIRE_GPU_ADAPTER=1 but {error}")
        }
        Err(error) => {
            eprintln!("{test}: skipped: {error}");
            None
        }
    }
}

fn compare(gpu: Gpu, net: &CheckedGraph, weights: &Weights, input: Tensor) -> f32 {
    let expected = reference::run(net, weights, vec![input.clone()], &RunOptions::default())
        .expect("reference runs")
        .output;
    let mut program = GpuProgram::new(gpu, net, weights).unwrap_or_else(|e| panic!("{e}"));
    let actual = program.run(vec![input]).unwrap_or_else(|e| panic!("{e}"));
    relative_error(&actual, &expected)
}

fn check(test: &str, source: &str, batch: usize) {
    let Some((gpu, _turn)) = gpu(test) else {
        return;
    };
    let net = network(source);
    let error = compare(gpu, &net, &weights(&net, 3), input(&net, batch, 5));
    assert!(
        error <= TOLERANCE,
        "{test}: relative error {error:e} for\n{source}"
    );
}

#[test]
fn convolutions_of_every_geometry() {
    check(
        "convolutions",
        "network N(input: 6x13x11) {
            conv a(64, 3x3, pad=1) relu
            conv b(40, 3x3, stride=2, pad=[0, 1, 2, 1]) leakyrelu(0.1)
            conv c(8, 3x3, dilation=2, pad=2, groups=4, bias=false) bn
            conv d(36, 1x5, pad=[0, 2]) relu6
            conv e(36, 3x1, stride=2x1, groups=36) tanh
            conv f(33, 2x2, stride=3) sigmoid
        }",
        3,
    );
}

#[test]
fn pooling_lrn_and_softmax() {
    check(
        "pooling",
        "network N(input: 7x15x14) {
            lrn(size=5, alpha=0.001, beta=0.75, k=2)
            maxpool(3x3, stride=2, ceil=true)
            avgpool(3x3, stride=2, pad=1, count_include_pad=false)
            lrn(size=4, alpha=0.5, beta=0.6, k=1, alpha_scaled=false)
            maxpool(2x2, stride=1, pad=1, dilation=1)
            avgpool(2x2, stride=2, pad=1, ceil=true)
            softmax
        }",
        2,
    );
    check(
        "global and adaptive pooling",
        "network N(input: 5x9x7) {
            concat { branch { adaptiveavgpool(4x3) } branch { adaptivemaxpool(4x3) } } -> t
            add(t, t)
            concat { branch { globalmaxpool } branch { globalavgpool } }
            flatten dense(10) softmax
        }",
        2,
    );
}

#[test]
fn joins_batch_norms_and_activations() {
    check(
        "joins",
        "network N(input: 4x6x6) {
            relu bn
            residual(scale=0.5) { conv(4, 3x3, pad=1) bn relu bn } relu
            concat { branch { conv(3, 1x1) relu } branch { maxpool(3x3, stride=1, pad=1) } branch { sigmoid } }
            -> t tanh -> u
            add(t, u)
            flatten dense(12) bn relu6 dense(5) sigmoid
        }",
        2,
    );
    // `t` read twice: the concat cannot be done in place, so it copies.
    check(
        "copying concat",
        "network N(input: 3x5x4) { relu -> t sigmoid -> u concat(t, u, t) conv(4, 1x1) }",
        2,
    );
}

#[test]
fn weights_split_over_bindings_agree() {
    // A dense layer of 4 x 40000 x 1000 bytes is split over the output rows on any
    // adapter whose bindings hold less than 160 MB (lavapipe's hold 128 MiB).
    check(
        "large dense",
        "network N(input: 40000) { dense big(1000) relu dense(10) }",
        1,
    );
}

/// Every example on the GPU against the reference interpreter, one test per example so
/// that they run in parallel and a failure names the network. The logits are compared
/// (a final softmax is cut off: near-uniform probabilities would hide errors).
macro_rules! every_example {
    ($($name:ident)*) => {
        mod examples {
            $(#[test]
            fn $name() {
                super::example_agrees(stringify!($name));
            })*
        }

        const EXAMPLES: &[&str] = &[$(stringify!($name)),*];
    };
}

every_example! {
    alexnet alexnet_torchvision googlenet googlenet_torchvision inception_resnet_v2
    inception_v3 lenet5 nin resnet101 resnet152 resnet18 resnet34 resnet50 vgg11
    vgg11_lrn vgg13 vgg16 vgg19 zfnet
}

fn example_agrees(name: &str) {
    let Some((gpu, _turn)) = gpu(name) else {
        return;
    };
    let net = without_final_softmax(example(name));
    let started = std::time::Instant::now();
    let error = compare(gpu, &net, &weights(&net, 1), input(&net, 1, 2));
    eprintln!(
        "{name}: relative error {error:e} ({:.1?})",
        started.elapsed()
    );
    assert!(error <= TOLERANCE, "{name}: relative error {error:e}");
}

/// The network with its output moved from a final softmax to the softmax's input (the
/// softmax still runs, its result unused).
fn without_final_softmax(mut net: CheckedGraph) -> CheckedGraph {
    let output = net.graph.node(net.graph.output);
    if matches!(output.op, Op::Activation(Activation::Softmax)) {
        net.graph.output = output.inputs[0];
    }
    net
}

#[test]
fn every_example_is_checked() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut found: Vec<String> = std::fs::read_dir(root)
        .expect("examples/")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".cnn")?.to_string())
        })
        .collect();
    found.sort();
    assert_eq!(found, EXAMPLES, "every_example! must list examples/*.cnn");
}

#[test]
fn tanh_keeps_the_sign_of_zero() {
    let Some((gpu, _turn)) = gpu("tanh_keeps_the_sign_of_zero") else {
        return;
    };
    let net = network("network T(input: 4) { tanh }");
    let x = Tensor::from_shape_vec(vec![1, 4], vec![-0.0, 0.0, -1.0, 30.0]).expect("shape");
    let mut program = GpuProgram::new(gpu, &net, &weights(&net, 0)).expect("builds");
    let y: Vec<f32> = program
        .run(vec![x])
        .expect("runs")
        .iter()
        .copied()
        .collect();
    assert_eq!(y[0].to_bits(), (-0.0f32).to_bits(), "tanh(-0) is -0: {y:?}");
    assert_eq!(y[1].to_bits(), 0.0f32.to_bits(), "tanh(+0) is +0: {y:?}");
    assert!((y[2] + 0.761_594_2).abs() < 1e-6 && y[3] == 1.0, "{y:?}");
}

#[test]
fn batches_of_any_size_reuse_the_program() {
    let Some((gpu, _turn)) = gpu("batches") else {
        return;
    };
    let net = network(
        "network N(input: 3x8x8) { conv(32, 3x3, pad=1) relu maxpool(2x2) flatten dense(4) }",
    );
    let weights = weights(&net, 0);
    let mut program = GpuProgram::new(gpu, &net, &weights).expect("builds");
    for batch in [2, 1, 5] {
        let x = input(&net, batch, batch as u64);
        let expected = reference::run(&net, &weights, vec![x.clone()], &RunOptions::default())
            .expect("reference runs")
            .output;
        let actual = program.run(vec![x]).expect("runs");
        assert!(
            relative_error(&actual, &expected) <= TOLERANCE,
            "batch {batch}"
        );
    }
    let wrong = input(&network("network M(input: 3x9x8) { relu }"), 1, 0);
    let error = program.run(vec![wrong]).err().map(|e| e.to_string());
    assert!(
        error.is_some_and(|e| e.contains("3x8x8")),
        "a wrong input shape is an error"
    );
}

#[test]
fn a_lost_device_is_an_error_not_a_panic() {
    let Some((gpu, _turn)) = gpu("lost device") else {
        return;
    };
    let net = network("network N(input: 3x8x8) { conv(8, 3x3, pad=1) relu flatten dense(4) }");
    let weights = weights(&net, 0);
    let mut program = GpuProgram::new(gpu, &net, &weights).expect("builds");
    program
        .run(vec![input(&net, 1, 0)])
        .expect("runs before the loss");
    program.destroy_device();
    for batch in [1, 2] {
        let error = program.run(vec![input(&net, batch, 0)]).err();
        eprintln!("batch {batch}: {error:?}");
        assert!(
            matches!(error, Some(GpuError::Lost(_))),
            "batch {batch}: {error:?}"
        );
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.starts_with("the GPU device was lost"), "{message}");
    }
}

#[test]
fn a_tensor_larger_than_a_binding_is_refused_naming_it() {
    let Some((gpu, _turn)) = gpu("too large") else {
        return;
    };
    let limit = gpu
        .adapter
        .max_storage_binding_bytes
        .min(gpu.adapter.max_buffer_bytes);
    // Eight channels of a square just over an eighth of the limit: `wide` is the one
    // tensor that cannot be bound.
    let side = ((limit / 4 / 8) as f64).sqrt() as u64 + 2;
    let source = format!("network N(input: 1x{side}x{side}) {{ conv wide(8, 3x3, pad=1) relu }}");
    let net = network(&source);
    let error = GpuProgram::new(gpu, &net, &weights(&net, 0)).err();
    let message = error.as_ref().map(ToString::to_string).unwrap_or_default();
    eprintln!("{message}");
    assert!(
        matches!(error, Some(GpuError::DoesNotFit { .. })),
        "{error:?}"
    );
    assert!(
        message.contains(&format!("the output of `wide` (8x{side}x{side})"))
            && message.contains("more than one storage binding holds"),
        "{message}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn generated_networks_agree_with_the_reference(source in generated_network(), seed in 0u64..1000) {
        let Some((gpu, _turn)) = gpu("generated") else { return Ok(()) };
        let net = network(&source);
        let error = compare(gpu, &net, &weights(&net, seed), input(&net, 2, seed));
        prop_assert!(error <= TOLERANCE, "relative error {:e} for\n{}", error, source);
    }
}
