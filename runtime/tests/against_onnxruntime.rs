//! The reference interpreter against outputs of an independent engine: every fixture in
//! `tests/reference/` (made by `tools/make_reference_outputs.py` with ONNX Runtime, or
//! numpy where ONNX has no such op) is a small network, its weights, an input and the
//! expected output. Tolerance: max |error| <= 1e-4 * max(1, max |expected|).

use cnnc_compiler::compile;
use cnnc_runtime::Tensor;
use cnnc_runtime::reference::{self, RunOptions};
use cnnc_runtime::weights::Weights;
use ndarray_npy::read_npy;
use std::path::{Path, PathBuf};

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/reference");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/reference exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("net.cnn").exists())
        .collect();
    dirs.sort();
    dirs
}

/// The largest error, relative to the expected output's scale.
fn relative_error(actual: &Tensor, expected: &Tensor) -> f32 {
    let scale = expected.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let worst = actual
        .iter()
        .zip(expected.iter())
        .fold(0.0f32, |m, (a, e)| m.max((a - e).abs()));
    worst / scale
}

fn run_fixture(dir: &Path) -> Result<f32, String> {
    let source = std::fs::read_to_string(dir.join("net.cnn")).map_err(|e| e.to_string())?;
    let compilation = compile(&source);
    let net = compilation
        .networks
        .first()
        .ok_or_else(|| format!("does not compile: {:?}", compilation.diagnostics))?;
    let weights =
        Weights::load(&dir.join("weights.safetensors"), net).map_err(|e| e.to_string())?;
    let input: Tensor = read_npy(dir.join("input.npy")).map_err(|e| e.to_string())?;
    let expected: Tensor = read_npy(dir.join("expected.npy")).map_err(|e| e.to_string())?;
    let outputs = reference::run(net, &weights, vec![input], &RunOptions::default())
        .map_err(|e| e.to_string())?;
    if outputs.output.shape() != expected.shape() {
        return Err(format!(
            "shape {:?}, expected {:?}",
            outputs.output.shape(),
            expected.shape()
        ));
    }
    Ok(relative_error(&outputs.output, &expected))
}

#[test]
fn every_fixture_matches_the_independent_engine() {
    const TOLERANCE: f32 = 1e-4;
    let fixtures = fixtures();
    assert!(fixtures.len() >= 30, "the fixtures are missing");
    let mut failures = Vec::new();
    for dir in &fixtures {
        let name = dir
            .file_name()
            .expect("named")
            .to_string_lossy()
            .into_owned();
        match run_fixture(dir) {
            Ok(error) if error <= TOLERANCE => {}
            Ok(error) => failures.push(format!("{name}: relative error {error:e}")),
            Err(message) => failures.push(format!("{name}: {message}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures fail:\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n")
    );
}
