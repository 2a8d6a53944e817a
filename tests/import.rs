//! `cnnc import`: ONNX models in the forms real exporters write (tests/onnx, made by
//! tools/make_onnx_fixtures.py with ONNX Runtime's outputs), the example networks
//! exported and imported back, and bad files.

mod common;

use common::{cnnc, stderr, stdout};
use ndarray::ArrayD;
use ndarray_npy::read_npy;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> common::Scratch {
    common::scratch(&format!("import-{name}"))
}

fn text(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn npy(path: &Path) -> ArrayD<f32> {
    read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// max |a - b| / max |b|
fn relative_error(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Imports `model` into `dir`, returning the .cnn and weights paths.
fn import(model: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    let cnn = dir.join("imported.cnn");
    let weights = dir.join("imported.safetensors");
    let out = cnnc(&["import", text(model), "-o", text(&cnn)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(weights.exists(), "weights beside the .cnn by default");
    (cnn, weights)
}

/// Runs a network on an input and returns its output.
fn run(cnn: &Path, weights: Option<&Path>, input: &Path, batch: usize, dir: &Path) -> ArrayD<f32> {
    let out_dir = dir.join(format!(
        "out-{}",
        cnn.file_stem().unwrap().to_string_lossy()
    ));
    let batch = batch.to_string();
    let mut args = vec![
        "run",
        text(cnn),
        "--input",
        text(input),
        "--batch",
        &batch,
        "--save-outputs",
        text(&out_dir),
    ];
    if let Some(w) = weights {
        args.extend(["--weights", text(w)]);
    }
    let out = cnnc(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    npy(&out_dir.join("output.npy"))
}

#[test]
fn exporter_style_models_import_and_agree_with_onnxruntime() {
    for (name, batch, expected_text) in [
        (
            "torch_style",
            2,
            "repeat layer1 2 as i { Layer1(i) }", // torchvision's stages become repeats
        ),
        ("dense_ops", 3, "dense fc1(12) relu6"), // MatMul + Add, Clip(0, 6)
        ("densenet", 1, "concat(data, dense0_relu, dense1_relu)"), // named tensors
    ] {
        let dir = scratch(name);
        let model = common::root()
            .join("tests/onnx")
            .join(format!("{name}.onnx"));
        let (cnn, weights) = import(&model, &dir);
        let source = std::fs::read_to_string(&cnn).expect("the .cnn");
        assert!(source.contains(expected_text), "{name}:\n{source}");
        let input = common::root().join(format!("tests/onnx/{name}.input.npy"));
        let ours = run(&cnn, Some(&weights), &input, batch, &dir);
        let theirs = npy(&common::root().join(format!("tests/onnx/{name}.expected.npy")));
        let error = relative_error(&ours, &theirs);
        assert!(error < 1e-5, "{name}: relative error {error:e}");
    }
}

#[test]
fn every_unsupported_node_is_listed_in_one_error() {
    let dir = scratch("unsupported");
    let out = cnnc(&[
        "import",
        "tests/onnx/unsupported.onnx",
        "-o",
        text(&dir.join("x.cnn")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    for line in [
        "3 nodes of the model cannot be imported",
        "upsample (Resize)",
        "center (Sub)",
        "pad (Pad)",
    ] {
        assert!(message.contains(line), "{line:?} in:\n{message}");
    }
    assert!(!dir.join("x.cnn").exists(), "nothing written on error");
}

#[test]
fn truncated_and_corrupt_models_are_errors_not_panics() {
    let dir = scratch("corrupt");
    let model = std::fs::read(common::root().join("tests/onnx/torch_style.onnx")).expect("model");
    let mut cases: Vec<(String, Vec<u8>)> = [1, 10, 100, 1000, model.len() / 2, model.len() - 1]
        .into_iter()
        .map(|n| (format!("truncated to {n} bytes"), model[..n].to_vec()))
        .collect();
    cases.push(("text".into(), b"network N(input: 3x8x8) { relu }".to_vec()));
    cases.push(("empty".into(), Vec::new()));
    let mut flipped = model.clone();
    for byte in flipped.iter_mut().step_by(97) {
        *byte ^= 0x5a;
    }
    cases.push(("bytes flipped".into(), flipped));
    for (what, bytes) in cases {
        let path = dir.join("bad.onnx");
        std::fs::write(&path, &bytes).expect("write");
        let out = cnnc(&["import", text(&path), "-o", text(&dir.join("bad.cnn"))]);
        // 1 is a reported error; a panic would exit with 2 (or 101).
        assert!(
            out.status.code() == Some(1) || out.status.success(),
            "{what}: {:?}\n{}",
            out.status,
            stderr(&out)
        );
        if !out.status.success() {
            assert!(
                stderr(&out).starts_with("error: "),
                "{what}: {}",
                stderr(&out)
            );
        }
    }
    let missing = cnnc(&["import", "no/such.onnx", "-o", text(&dir.join("m.cnn"))]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("cannot read no/such.onnx"));
}

/// The summary's totals, its sequence of op kinds (names aside), and the last layer that
/// is not a softmax: the logits, which show a difference the probabilities would hide.
fn shape_of(cnn: &Path) -> (serde_json::Value, Vec<String>, String) {
    let out = cnnc(&["summary", text(cnn), "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let layers = summary["layers"].as_array().expect("layers");
    let op = |l: &serde_json::Value| l["op"].as_str().expect("op").to_string();
    // ONNX has no adaptive pooling: one with equal windows comes back as a plain pool.
    let ops = layers
        .iter()
        .map(|l| op(l).replace("adaptive", ""))
        .map(|o| o.split(' ').next().unwrap_or_default().to_string())
        .collect();
    let logits = layers
        .iter()
        .rev()
        .find(|l| l.get("side").is_none() && !op(l).starts_with("softmax"))
        .expect("a layer")["name"]
        .as_str()
        .expect("name")
        .to_string();
    (summary["totals"]["inference"].clone(), ops, logits)
}

/// A network's logits for the seeded input (seed 0), with the given weights or seeded ones.
fn logits(cnn: &Path, weights: Option<&Path>, layer: &str, dir: &Path) -> ArrayD<f32> {
    let out_dir = dir.join(format!(
        "logits-{}",
        cnn.file_stem().unwrap().to_string_lossy()
    ));
    let mut args = vec![
        "run",
        text(cnn),
        "--save-outputs",
        text(&out_dir),
        "--save",
        layer,
    ];
    if let Some(w) = weights {
        args.extend(["--weights", text(w)]);
    }
    let out = cnnc(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let file = if layer == "output" {
        "output.layer.npy".to_string()
    } else {
        format!("{layer}.npy")
    };
    npy(&out_dir.join(file))
}

#[test]
fn exported_examples_import_back_to_the_same_network() {
    // Chains, concat branches with side outputs, residuals with projections, LRN,
    // adaptive pooling, and scaled residuals (Inception-ResNet).
    for name in [
        "lenet5",
        "alexnet_torchvision",
        "resnet18",
        "googlenet",
        "inception_resnet_v2",
    ] {
        let dir = scratch(name);
        let model = dir.join(format!("{name}.onnx"));
        let example = common::example(name);
        let out = cnnc(&["export", text(&example), "-o", text(&model)]);
        assert!(out.status.success(), "{}", stderr(&out));
        let (cnn, weights) = import(&model, &dir);
        let (totals, ops, layer) = shape_of(&example);
        let (imported_totals, imported_ops, imported_layer) = shape_of(&cnn);
        assert_eq!(totals, imported_totals, "{name}: totals");
        assert_eq!(ops, imported_ops, "{name}: the ops, in order");
        let source = std::fs::read_to_string(&cnn).expect("the .cnn");
        assert!(
            !source.contains("->"),
            "{name} needs no named tensors:\n{source}"
        );
        // The same seeded input through the original (seeded weights) and the import.
        let original = logits(&example, None, &layer, &dir);
        let imported = logits(&cnn, Some(&weights), &imported_layer, &dir);
        let error = relative_error(&imported, &original);
        assert!(error < 1e-5, "{name}: relative error {error:e}");
    }
}
