//! Writing weights as safetensors, tensors in network order.

use super::{Weights, expected};
use crate::error::{Result, RuntimeError};
use cnnc_compiler::check::CheckedGraph;
use std::path::Path;

/// Writes every weight of `net` (side outputs included) to `path`, atomically.
pub fn save(weights: &Weights, net: &CheckedGraph, path: &Path) -> Result<()> {
    let mut buffers = Vec::new();
    for e in expected(net) {
        let Some(tensor) = weights.get(&e.name) else {
            continue;
        };
        let bytes: Vec<u8> = tensor.iter().flat_map(|v| v.to_le_bytes()).collect();
        buffers.push((e.name, tensor.shape().to_vec(), bytes));
    }
    let views = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| RuntimeError::Invalid(format!("cannot serialise the weights: {e}")))?;
    let metadata = [("network".to_string(), net.graph.name.clone())]
        .into_iter()
        .collect();
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| RuntimeError::Invalid(format!("cannot serialise the weights: {e}")))?;
    crate::output::write_atomically(path, &bytes)
}
