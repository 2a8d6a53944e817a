//! The fused executor against the reference interpreter: every pass proven on numbers.
//! Examples, the ONNX Runtime fixtures and generated networks (conv+bn+activation,
//! residuals with and without projection and scale, concat, merged 1x1 convs, pooling,
//! dropout, flatten, dense) run both ways on the same weights and input; batch norms get random
//! statistics so folding them changes the weights. Tolerance: max |fused − reference|
//! <= 1e-5 × max |reference| (relative to the output's scale, with no floor, so that a
//! softmax's small probabilities are held as tightly as logits); 1e-4 for the
//! generated networks, whose random batch norms can cancel an output to hundreds of
//! times less than the values behind it (`GENERATED_TOLERANCE`).

mod common;

use cnnc_compiler::check::CheckedGraph;
use cnnc_runtime::Tensor;
use cnnc_runtime::fused;
use cnnc_runtime::reference::{self, RunOptions};
use cnnc_runtime::weights::Weights;
use common::{Fixture, generated_network, input, network, onnx_fixtures, relative_error, weights};
use proptest::prelude::*;
use std::path::Path;

const TOLERANCE: f32 = 1e-5;

/// The generated networks' tolerance, the JIT tests' one: folding a batch norm into
/// the weights before it rounds each weight once more, and a generated network whose
/// last batch norm cancels most of its input (random statistics) leaves outputs
/// hundreds of times smaller than the values behind them (0.004 out of a tanh, seed
/// 293 of the saved cases), where a rounding difference of 8e-8 is 2e-5 of the output.
const GENERATED_TOLERANCE: f32 = 1e-4;

/// Runs both executors; the relative error between them.
fn compare(net: &CheckedGraph, weights: &Weights, input: Tensor) -> f32 {
    let expected = reference::run(net, weights, vec![input.clone()], &RunOptions::default())
        .expect("reference runs")
        .output;
    let actual = fused::run(net, weights, vec![input]).expect("fused runs");
    relative_error(&actual, &expected)
}

#[test]
fn small_examples_agree_with_the_reference() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    // The VGGs (plain conv-relu, as AlexNet) and Inception-ResNet-v2 (scaled residuals
    // over concats, as the generated networks) would add seconds and no new case.
    let names = [
        "lenet5",
        "alexnet",
        "zfnet",
        "nin",
        "googlenet",
        "inception_v3",
        "resnet18",
        "resnet50",
    ];
    for name in names {
        let source = std::fs::read_to_string(root.join(format!("{name}.cnn"))).expect("example");
        let net = network(&source);
        let error = compare(&net, &weights(&net, 1), input(&net, 1, 2));
        eprintln!("{name}: relative error {error:e}");
        assert!(error <= TOLERANCE, "{name}: relative error {error:e}");
    }
}

#[test]
fn weights_read_in_place_from_a_file_agree_with_the_reference() {
    // A weights file's tensors stay in its map, and the fused executor reads a layer's
    // weight there where nothing is folded into it (the seeded weights of the other
    // tests are owned tensors): LeNet-5 trained, on a batch of two.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let source = std::fs::read_to_string(root.join("examples/lenet5.cnn")).expect("example");
    let net = network(&source);
    let path = root.join("examples/weights/lenet5-digits.safetensors");
    let weights = Weights::load(&path, &net).expect("weights load");
    let error = compare(&net, &weights, input(&net, 2, 7));
    assert!(error <= TOLERANCE, "relative error {error:e}");
    // The same file with its header one byte longer: no float of it is aligned, so
    // each is copied out of the map, once.
    let bytes = std::fs::read(&path).expect("read");
    let header = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let mut shifted = (header as u64 + 1).to_le_bytes().to_vec();
    shifted.extend_from_slice(&bytes[8..8 + header]);
    shifted.push(b' ');
    shifted.extend_from_slice(&bytes[8 + header..]);
    let scratch = tempfile::tempdir().expect("dir");
    let unaligned = scratch.path().join("unaligned.safetensors");
    std::fs::write(&unaligned, shifted).expect("write");
    let copied = Weights::load(&unaligned, &net).expect("an unaligned file loads");
    assert!(matches!(
        copied.values("c1.weight"),
        Some(std::borrow::Cow::Owned(_))
    ));
    let (x, mut y) = (input(&net, 2, 7), Vec::new());
    for weights in [&weights, &copied] {
        y.push(fused::run(&net, weights, vec![x.clone()]).expect("fused runs"));
    }
    assert_eq!(y[0], y[1], "the same floats, in place or copied");
}

#[test]
fn every_onnx_fixture_agrees_with_the_reference_and_onnx_runtime() {
    let fixtures = onnx_fixtures();
    assert!(fixtures.len() >= 30);
    for Fixture {
        name,
        net,
        weights,
        input,
        expected: onnx,
    } in fixtures
    {
        let error = compare(&net, &weights, input.clone());
        assert!(error <= TOLERANCE, "{name}: {error:e}");
        let fused = fused::run(&net, &weights, vec![input]).expect("fused runs");
        let error = relative_error(&fused, &onnx);
        assert!(error <= 1e-4, "{name} against ONNX Runtime: {error:e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn generated_networks_agree_with_the_reference(source in generated_network(), seed in 0u64..1000) {
        let net = network(&source);
        let error = compare(&net, &weights(&net, seed), input(&net, 2, seed));
        prop_assert!(error <= GENERATED_TOLERANCE, "relative error {:e} for\n{}", error, source);
    }
}
