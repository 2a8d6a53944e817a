//! Winograd F(2x2,3x3), F(4x4,3x3) and F(2x2,5x5) convolutions in the JIT against the
//! reference interpreter: odd
//! heights and widths (edge tiles with one valid row or column), padding 0, 1, 2 and
//! asymmetric, channel counts off the tile's rows and columns and over one K block,
//! batch 2, batch norm, residual and scale-shift epilogues, groups, every thread
//! count; and the convs Winograd cannot compute (strides, dilation) left direct.
//!
//! Tolerance: max |jit − reference| <= 1e-4 × max |reference|, the JIT's own. F(2x2,3x3)
//! multiplies by the weights' transforms (halves of sums of three weights, exact but
//! for one rounding) and adds input and output transforms whose coefficients are 0
//! and ±1: each output is a sum of 16·C products instead of 9·C, each term carrying a
//! few more roundings, so its error stays within a small multiple of the direct
//! product's. Measured (`winograd_error_on_the_examples`, printed with --nocapture):
//! VGG-16 and ResNet-18 with every eligible conv through Winograd stay near 1e-6 of the
//! output's magnitude, as the direct JIT does; the bound leaves two orders of margin.

mod common;

use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::passes::{Algorithm, WinogradPolicy};
use cnnc_runtime::Tensor;
use cnnc_runtime::jit;
use cnnc_runtime::reference::{self, RunOptions};
use cnnc_runtime::weights::Weights;
use common::{input, network, relative_error, weights};

const TOLERANCE: f32 = 1e-4;

fn reference_output(net: &CheckedGraph, weights: &Weights, input: &Tensor) -> Tensor {
    reference::run(net, weights, vec![input.clone()], &RunOptions::default())
        .expect("reference runs")
        .output
}

/// The JIT's output with Winograd F(m x m, r x r) on every eligible conv, its transforms
/// the runtime's ones (AVX-512 or AVX2) where `helpers` lets the CPU use them, and how many convs
/// used it.
fn winograd_output(
    net: &CheckedGraph,
    weights: &Weights,
    input: &Tensor,
    (threads, m, helpers): (usize, u64, bool),
) -> (Tensor, usize) {
    let everywhere = WinogradPolicy::Everywhere { m };
    let options = jit::Options {
        winograd_helpers: helpers,
        ..policy(threads, everywhere)
    };
    let program = jit::Program::with_options(net, weights, options).expect("the JIT compiles");
    let used = program
        .fused()
        .kernels
        .iter()
        .filter(|k| matches!(k.algorithm, Algorithm::Winograd { .. }))
        .count();
    (
        program.run(vec![input.clone()]).expect("the JIT runs"),
        used,
    )
}

/// Every layer of `layers` on an input of `shape`, through both 3x3 variants, at
/// batch 2 and 1 to 3 threads, with the runtime's transforms and with the kernels' own.
fn agrees(shape: &str, layers: &str, winograd_convs: usize) {
    agrees_with(shape, layers, &[(2, winograd_convs), (4, winograd_convs)]);
}

/// As `agrees`, with F(m x m) asked for on every eligible conv for each `(m, convs)`,
/// `convs` of them having a variant of that m.
fn agrees_with(shape: &str, layers: &str, variants: &[(u64, usize)]) {
    let source = format!("network W(input: {shape}) {{\n{layers}\n}}");
    let net = network(&source);
    let (weights, input) = (weights(&net, 7), input(&net, 2, 8));
    let expected = reference_output(&net, &weights, &input);
    for &(m, winograd_convs) in variants {
        for (threads, helpers) in [(1, true), (2, true), (3, true), (2, false)] {
            let config = (threads, m, helpers);
            let (actual, used) = winograd_output(&net, &weights, &input, config);
            assert_eq!(used, winograd_convs, "F({m}x{m}) for {source}");
            let error = relative_error(&actual, &expected);
            assert!(
                error <= TOLERANCE,
                "F({m}x{m}), {threads} thread(s), helpers {helpers}: relative error \
                 {error:e} for\n{source}"
            );
        }
    }
}

#[test]
fn odd_sizes_and_paddings_agree_with_the_reference() {
    for (shape, conv) in [
        ("3x7x9", "conv(5, 3x3, pad=1)"),
        ("5x9x7", "conv(13, 3x3)"),
        ("4x3x3", "conv(3, 3x3)"),
        ("2x1x1", "conv(4, 3x3, pad=1)"),
        ("3x2x5", "conv(7, 3x3, pad=2)"),
        ("6x11x13", "conv(17, 3x3, pad=[1, 0, 2, 1])"),
        ("8x16x16", "conv(12, 3x3, pad=1, bias=false)"),
        ("16x33x35", "conv(40, 3x3, pad=1) relu"),
    ] {
        agrees(shape, conv, 1);
    }
}

#[test]
fn five_by_five_convs_agree_through_f2x2_5x5() {
    // F(2x2,5x5) only: F(4x4) has no 5x5 variant, so those convs stay direct.
    for (shape, conv) in [
        ("3x7x9", "conv(5, 5x5, pad=2)"),
        ("5x9x7", "conv(13, 5x5)"),
        ("4x5x5", "conv(3, 5x5)"),
        ("2x1x1", "conv(4, 5x5, pad=2)"),
        ("6x11x13", "conv(17, 5x5, pad=[1, 0, 2, 1])"),
        ("16x33x35", "conv(40, 5x5, pad=2) relu"),
        ("300x10x9", "conv(37, 5x5, pad=2) relu6"),
    ] {
        agrees_with(shape, conv, &[(2, 1), (4, 0)]);
    }
    let block = "conv(16, 3x3, pad=1) relu
        residual { conv(16, 5x5, pad=2, bias=false) bn relu conv(16, 5x5, pad=2) }
        relu";
    agrees_with("8x15x13", block, &[(2, 3), (4, 1)]);
}

#[test]
fn channels_over_one_k_block_and_off_the_tile_agree() {
    // 300 input channels: two K blocks of the products; 37 outputs: a short row tile.
    agrees("300x10x9", "conv(37, 3x3, pad=1) relu6", 1);
    agrees(
        "64x28x28",
        "conv(64, 3x3, pad=1) relu\nconv(96, 3x3, pad=1)",
        2,
    );
}

#[test]
fn batch_norm_residual_and_scale_shift_epilogues_agree() {
    // A folded batch norm with the residual add and relu after it (ResNet's basic
    // block), and a batch norm after an activation (a scale-shift step).
    let layers = "conv(16, 3x3, pad=1, bias=false) bn relu
        residual {
            conv(16, 3x3, pad=1, bias=false) bn relu
            conv(16, 3x3, pad=1, bias=false) bn
        }
        relu
        conv(24, 3x3, pad=1) leakyrelu(0.1) bn";
    agrees("8x15x13", layers, 4);
}

#[test]
fn convs_winograd_cannot_compute_stay_direct() {
    // Stride 2 and dilation 2: not Winograd convs, and still right.
    let layers = "conv(8, 3x3, pad=1)
        conv(8, 3x3, stride=2, pad=1)
        conv(8, 3x3, pad=2, dilation=2)
        conv(6, 3x3, pad=1)";
    agrees("4x12x12", layers, 2);
}

#[test]
fn grouped_convs_agree() {
    // Each group its own product: 2 groups of 3 -> 7 channels (a short row tile), 7
    // groups of 2 -> 3, and AlexNet's 5x5 shape in small (2 groups, 5x5).
    let layers = "conv(14, 3x3, pad=1, groups=2) relu
        conv(21, 3x3, pad=1, groups=7)";
    agrees("6x11x13", layers, 2);
    agrees_with(
        "8x13x13",
        "conv(12, 5x5, pad=2, groups=2) relu",
        &[(2, 1), (4, 0)],
    );
}

/// An example network without its final softmax: the logits, where an error shows
/// (the probabilities of a random network hide it).
fn example_logits(name: &str) -> CheckedGraph {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let source = std::fs::read_to_string(root.join(format!("{name}.cnn"))).expect("example");
    let end = source
        .rfind(" softmax")
        .expect("the network ends in a softmax");
    network(&format!(
        "{}{}",
        &source[..end],
        &source[end + " softmax".len()..]
    ))
}

#[test]
fn winograd_error_on_the_examples() {
    for name in ["vgg16", "resnet18"] {
        let net = example_logits(name);
        let (weights, input) = (weights(&net, 3), input(&net, 1, 4));
        let expected = reference_output(&net, &weights, &input);
        let (actual, used) = winograd_output(&net, &weights, &input, (2, 2, true));
        let (actual4, _) = winograd_output(&net, &weights, &input, (2, 4, true));
        assert!(used > 0, "{name} has Winograd convs");
        let direct = jit::Program::with_options(&net, &weights, policy(2, WinogradPolicy::Off))
            .expect("the JIT compiles")
            .run(vec![input.clone()])
            .expect("the JIT runs");
        let (winograd_error, winograd4_error, direct_error) = (
            relative_error(&actual, &expected),
            relative_error(&actual4, &expected),
            relative_error(&direct, &expected),
        );
        eprintln!(
            "{name}: {used} Winograd convs, relative error F(2x2) {winograd_error:e}, \
             F(4x4) {winograd4_error:e} (direct {direct_error:e})"
        );
        assert!(winograd_error <= TOLERANCE, "{name}: {winograd_error:e}");
        assert!(
            winograd4_error <= TOLERANCE,
            "{name}: F(4x4) {winograd4_error:e}"
        );
    }
}

/// Compiled for `threads` with Winograd where `winograd` says, the rest as the
/// environment says.
fn policy(threads: usize, winograd: WinogradPolicy) -> jit::Options {
    jit::Options {
        winograd,
        ..jit::Options::from_env(threads)
    }
}
