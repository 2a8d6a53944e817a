//! The trained LeNet-5 (tools/train_lenet5_digits.py, sklearn's digits) through the
//! runtime: PNG loading, preprocessing, safetensors weights and the interpreter must
//! reproduce the training script's own numpy forward pass on the shipped digits.

use cnnc_compiler::compile;
use cnnc_runtime::Tensor;
use cnnc_runtime::input::{self, InputSource, Normalize};
use cnnc_runtime::reference::{self, RunOptions};
use cnnc_runtime::weights::Weights;
use ndarray::Axis;
use std::path::Path;

#[test]
fn shipped_digits_are_read_correctly_and_match_the_numpy_forward_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let source = std::fs::read_to_string(root.join("examples/lenet5.cnn")).expect("example");
    let compilation = compile(&source);
    let net = &compilation.networks[0];
    let weights = Weights::load(
        &root.join("examples/weights/lenet5-digits.safetensors"),
        net,
    )
    .expect("weights load");
    let images = (0..10)
        .map(|d| root.join(format!("examples/images/digit{d}.png")))
        .collect();
    let shape = &net.facts[net.graph.inputs[0].0].shape;
    let batch = input::load(
        &InputSource::Files(images),
        shape,
        10,
        &Normalize::default_for(1),
    )
    .expect("images load");
    let probabilities = reference::run(net, &weights, vec![batch], &RunOptions::default())
        .expect("runs")
        .output;
    let expected: Tensor =
        ndarray_npy::read_npy(root.join("tests/golden/digits_expected_probs.npy"))
            .expect("expected");
    for (digit, row) in probabilities.axis_iter(Axis(0)).enumerate() {
        let predicted = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(class, _)| class);
        assert_eq!(predicted, Some(digit), "digit{digit}.png: {row}");
    }
    let worst = probabilities
        .iter()
        .zip(expected.iter())
        .fold(0.0f32, |m, (a, e)| m.max((a - e).abs()));
    assert!(worst < 1e-5, "largest difference from numpy: {worst}");
}
