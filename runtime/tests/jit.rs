//! The JIT backend against the reference interpreter: generated conv and dense kernels
//! (im2col packing, the blocked product over the microkernel, epilogues) on the
//! examples, the ONNX Runtime fixtures and generated networks, at batch sizes 1 and 2,
//! with random batch norm statistics. Tolerance: max |jit − reference| <= 1e-4 × max
//! |reference|: the tile sums in another order than the reference's matrix product.

mod common;

use cnnc_compiler::check::CheckedGraph;
use cnnc_runtime::Tensor;
use cnnc_runtime::jit;
use cnnc_runtime::reference::{self, RunOptions};
use cnnc_runtime::weights::Weights;
use common::{example, generated_network, input, network, onnx_fixtures, relative_error, weights};
use proptest::prelude::*;

const TOLERANCE: f32 = 1e-4;

fn compare(net: &CheckedGraph, weights: &Weights, input: Tensor) -> f32 {
    let expected = reference::run(net, weights, vec![input.clone()], &RunOptions::default())
        .expect("reference runs")
        .output;
    let program = jit::Program::new(net, weights).expect("the JIT compiles");
    let actual = program.run(vec![input]).expect("the JIT runs");
    relative_error(&actual, &expected)
}

#[test]
fn examples_agree_with_the_reference() {
    // Grouped convs (AlexNet), ceil-mode pools and LRN between generated kernels
    // (GoogLeNet, NIN), 1xN and Nx1 kernels with asymmetric work (Inception-v3),
    // residual epilogues (ResNet), dense layers and tanh (LeNet-5).
    for (name, batch) in [
        ("lenet5", 2),
        ("alexnet", 1),
        ("nin", 1),
        ("googlenet", 2),
        ("inception_v3", 1),
        ("resnet18", 2),
        ("resnet50", 1),
    ] {
        let net = example(name);
        let error = compare(&net, &weights(&net, 3), input(&net, batch, 4));
        eprintln!("{name}: relative error {error:e}");
        assert!(error <= TOLERANCE, "{name}: relative error {error:e}");
    }
}

#[test]
fn lrn_windows_and_powers_agree_with_the_reference() {
    // Odd and even windows, the paper's unscaled alpha, and a beta that needs the
    // general power (0.6) beside the square-root ones (0.75, 0.5, 1).
    let source = "network L(input: 7x5x6) {
        lrn(size=5, beta=0.75) lrn(size=4, beta=0.6, k=2, alpha=0.01, alpha_scaled=false)
        lrn(size=3, beta=0.5, alpha=0.1) lrn(size=1, beta=1, alpha=0.2)
    }";
    let net = network(source);
    let error = compare(&net, &weights(&net, 1), input(&net, 2, 9));
    assert!(error <= TOLERANCE, "relative error {error:e}");
}

#[test]
fn any_number_of_threads_computes_the_same() {
    // Threads split each kernel's chunks (conv rows, pooling channels): the output must
    // not depend on how.
    for name in ["googlenet", "resnet18"] {
        let net = example(name);
        let (weights, input) = (weights(&net, 5), input(&net, 2, 6));
        let outputs: Vec<Tensor> = [1, 2, 3, 8]
            .into_iter()
            .map(|threads| {
                let program =
                    jit::Program::with_threads(&net, &weights, threads).expect("compiles");
                program.run(vec![input.clone()]).expect("runs")
            })
            .collect();
        for output in &outputs[1..] {
            assert_eq!(output, &outputs[0], "{name}");
        }
    }
}

#[test]
fn every_onnx_fixture_agrees_with_onnx_runtime() {
    for fixture in onnx_fixtures() {
        let (net, weights, input) = (&fixture.net, &fixture.weights, fixture.input.clone());
        let program = jit::Program::new(net, weights).expect("the JIT compiles");
        let actual = program.run(vec![input]).expect("the JIT runs");
        let error = relative_error(&actual, &fixture.expected);
        assert!(
            error <= TOLERANCE,
            "{} against ONNX Runtime: {error:e}",
            fixture.name
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn generated_networks_agree_with_the_reference(source in generated_network(), seed in 0u64..1000) {
        let net = network(&source);
        let error = compare(&net, &weights(&net, seed), input(&net, 2, seed));
        prop_assert!(error <= TOLERANCE, "relative error {:e} for\n{}", error, source);
    }
}
