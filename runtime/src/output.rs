//! What a run gives back: top-k classes, and `.npy` files written atomically.

use crate::Tensor;
use crate::error::{Result, RuntimeError};
use ndarray::{ArrayView1, Axis};
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Ranked {
    pub class: usize,
    pub label: Option<String>,
    pub probability: f32,
}

/// The `k` most probable classes of each sample of a `[N, classes]` output. When
/// `already_probabilities` is false the output is taken as logits and softmaxed.
pub fn top_k(
    output: &Tensor,
    k: usize,
    already_probabilities: bool,
    labels: &[String],
) -> Option<Vec<Vec<Ranked>>> {
    if output.ndim() != 2 {
        return None;
    }
    let rows = output
        .axis_iter(Axis(0))
        .map(|row| {
            let row = row.into_dimensionality::<ndarray::Ix1>().expect("rank 2");
            let probabilities = if already_probabilities {
                row.to_vec()
            } else {
                softmax(row)
            };
            let mut order: Vec<usize> = (0..probabilities.len()).collect();
            order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
            order
                .into_iter()
                .take(k)
                .map(|class| Ranked {
                    class,
                    label: labels.get(class).cloned(),
                    probability: probabilities[class],
                })
                .collect()
        })
        .collect();
    Some(rows)
}

fn softmax(row: ArrayView1<f32>) -> Vec<f32> {
    let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let exps: Vec<f32> = row.iter().map(|&v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Writes `bytes` to a temporary file beside `path` and renames it into place, so a
/// failed or interrupted run never leaves a half-written file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let error = |source| RuntimeError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("output");
    let temporary = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = std::fs::File::create(&temporary)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&temporary, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result.map_err(error)
}

/// Saves a tensor as `.npy`.
pub fn save_npy(tensor: &Tensor, path: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    ndarray_npy::WriteNpyExt::write_npy(tensor, &mut bytes).map_err(|e| {
        RuntimeError::Invalid(format!("cannot encode {} as .npy: {e}", path.display()))
    })?;
    write_atomically(path, &bytes)
}
