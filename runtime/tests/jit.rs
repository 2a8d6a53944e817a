//! The JIT backend against the reference interpreter: generated conv, dense, pooling and
//! LRN kernels (im2col packing, the blocked product over the microkernel, epilogues) on
//! the examples, the ONNX Runtime fixtures, generated networks, and generated odd
//! layers (strides 1-3, dilation, asymmetric padding, groups, 1xN kernels, ceil-mode
//! pools, channel counts off the vector width) at batch sizes 1 to 3, with random batch
//! norm statistics. Tolerance: max |jit − reference| <= 1e-4 × max
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

/// A convolution or pooling layer with odd sizes: the shapes the packing, the tile
/// edges and the pooling borders must all get right.
fn odd_layer() -> impl Strategy<Value = String> {
    (
        0u8..3,
        (1u64..4, 1u64..4),
        (1u64..4, 1u64..3),
        [0u64..3, 0u64..3, 0u64..3, 0u64..3],
        (1u64..20, 1u64..4, any::<bool>()),
    )
        .prop_map(|(kind, (kh, kw), (stride, dilation), [t, l, b, r], (out, groups, flag))| match kind {
            0 => format!(
                "conv({}, {kh}x{kw}, stride={stride}, pad=[{t}, {l}, {b}, {r}], dilation={dilation}, groups={groups}, bias={flag}) relu",
                out * groups
            ),
            1 => format!(
                "maxpool({kh}x{kw}, stride={stride}, pad=[{}, {}, {}, {}], ceil={flag})",
                t.min(kh / 2),
                l.min(kw / 2),
                b.min(kh / 2),
                r.min(kw / 2)
            ),
            _ => format!(
                "avgpool({kh}x{kw}, stride={stride}, pad={}, ceil={flag}, count_include_pad={})",
                t.min(kh.min(kw) / 2),
                groups == 1
            ),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn odd_convolutions_and_pools_agree_with_the_reference(
        channels in 1u64..5,
        (height, width) in (3u64..13, 3u64..13),
        layers in prop::collection::vec(odd_layer(), 1..4),
        batch in 1usize..4,
        seed in 0u64..1000,
    ) {
        // Groups must divide the channels: scale the input to every group count used.
        let channels = channels * 6;
        let source = format!("network O(input: {channels}x{height}x{width}) {{\n    {}\n}}", layers.join("\n    "));
        let compilation = cnnc_compiler::compile(&source);
        // Sizes that do not fit (a window larger than its padded input, groups that do not
        // divide) are the checker's business; only networks that check are compared.
        prop_assume!(!compilation.has_errors());
        let net = compilation.networks.into_iter().next().expect("a network");
        let error = compare(&net, &weights(&net, seed), input(&net, batch, seed));
        prop_assert!(error <= TOLERANCE, "relative error {:e} for\n{}", error, source);
    }
}
