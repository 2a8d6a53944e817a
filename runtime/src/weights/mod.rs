//! A network's weights: named f32 tensors, `<layer>.<suffix>` as the ops declare them.
//! From a safetensors file (memory-mapped, validated against the network before use) or
//! from a seeded initialisation, so every network runs out of the box.

mod file;
mod init;

pub use file::save;

use crate::Tensor;
use crate::error::{Result, RuntimeError};
use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::diagnostics::did_you_mean;
use cnnc_compiler::ops::WeightSpec;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, Default)]
pub struct Weights {
    tensors: HashMap<String, Tensor>,
}

/// A weight the network expects: its full name, and what the op declared.
pub struct Expected<'a> {
    pub name: String,
    pub spec: &'a WeightSpec,
    /// Belongs to a side output, which inference prunes.
    pub side: bool,
}

/// Every weight of the network, in network order.
pub fn expected(net: &CheckedGraph) -> Vec<Expected<'_>> {
    net.graph
        .nodes
        .iter()
        .zip(&net.facts)
        .flat_map(|(node, facts)| {
            facts.weights.iter().map(move |spec| Expected {
                name: format!("{}.{}", node.name, spec.suffix),
                spec,
                side: node.side.is_some(),
            })
        })
        .collect()
}

impl Weights {
    /// PyTorch's default initialisation, from `seed`: each tensor's stream depends on
    /// the seed and its name only, so adding a layer does not change the others.
    pub fn seeded(net: &CheckedGraph, seed: u64) -> Weights {
        let tensors = expected(net)
            .into_iter()
            .map(|e| {
                let tensor = init::tensor(e.spec, seed, &e.name);
                (e.name, tensor)
            })
            .collect();
        Weights { tensors }
    }

    /// Loads a safetensors file and checks it against the network: every missing,
    /// unexpected, wrongly shaped or non-f32 tensor is listed in one error.
    pub fn load(path: &Path, net: &CheckedGraph) -> Result<Weights> {
        let file = std::fs::File::open(path).map_err(|source| RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: the map is read-only and lives only within this function; a file
        // changed underneath would give wrong numbers, not unsafety in safe code that
        // copies out of it.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&map, path, net)
    }

    /// A safetensors file's contents, checked against the network as `load` does;
    /// `path` only names the file in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path, net: &CheckedGraph) -> Result<Weights> {
        let file = safetensors::SafeTensors::deserialize(bytes).map_err(|e| {
            RuntimeError::CorruptWeights {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        })?;
        let mut problems = Vec::new();
        let mut tensors = HashMap::new();
        let expected = expected(net);
        for e in &expected {
            let view = match file.tensor(&e.name) {
                Ok(view) => view,
                Err(_) if e.side => continue,
                Err(_) => {
                    problems.push(format!(
                        "  missing: {} {}",
                        e.name,
                        shape_text(&e.spec.shape)
                    ));
                    continue;
                }
            };
            let want: Vec<usize> = e.spec.shape.iter().map(|&d| d as usize).collect();
            if view.dtype() != safetensors::Dtype::F32 {
                problems.push(format!(
                    "  wrong type: {} is {:?}, expected F32",
                    e.name,
                    view.dtype()
                ));
            } else if view.shape() != want.as_slice() {
                problems.push(format!(
                    "  wrong shape: {} is {}, expected {}",
                    e.name,
                    shape_text_usize(view.shape()),
                    shape_text(&e.spec.shape)
                ));
            } else {
                tensors.insert(e.name.clone(), from_le_bytes(view.data(), want));
            }
        }
        let known: Vec<&str> = expected.iter().map(|e| e.name.as_str()).collect();
        let mut names = file.names();
        names.sort();
        for name in names {
            if !known.contains(&name) {
                let hint = match did_you_mean(name, known.iter().copied()) {
                    Some(close) => format!(" (did you mean {close}?)"),
                    None => String::new(),
                };
                problems.push(format!("  unexpected: {name}{hint}"));
            }
        }
        if !problems.is_empty() {
            return Err(RuntimeError::WeightsMismatch {
                path: path.to_path_buf(),
                network: net.graph.name.clone(),
                details: format!(
                    "{}\n  help: `cnnc init` writes a file with every expected name and shape",
                    problems.join("\n")
                ),
            });
        }
        Ok(Weights { tensors })
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    pub fn insert(&mut self, name: String, tensor: Tensor) {
        self.tensors.insert(name, tensor);
    }
}

fn from_le_bytes(data: &[u8], shape: Vec<usize>) -> Tensor {
    let values: Vec<f32> = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Tensor::from_shape_vec(shape, values).expect("safetensors checked the size")
}

fn shape_text(shape: &[u64]) -> String {
    format!(
        "[{}]",
        shape
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn shape_text_usize(shape: &[usize]) -> String {
    format!(
        "[{}]",
        shape
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(source: &str) -> CheckedGraph {
        let mut compilation = cnnc_compiler::compile(source);
        assert!(!compilation.has_errors(), "{:?}", compilation.diagnostics);
        compilation.networks.remove(0)
    }

    #[test]
    fn seeded_initialisation_follows_pytorch_defaults() {
        let net = network("network N(input: 4x8x8) { conv c(16, 3x3) bn b() }");
        let weights = Weights::seeded(&net, 3);
        let conv = weights.get("c.weight").expect("conv weight");
        assert_eq!(conv.shape(), &[16, 4, 3, 3]);
        let bound = 1.0 / (4.0f32 * 9.0).sqrt();
        assert!(conv.iter().all(|v| v.abs() <= bound));
        assert!(
            conv.iter().any(|v| v.abs() > bound * 0.9),
            "spread over the whole range"
        );
        assert!(
            weights
                .get("b.weight")
                .expect("gamma")
                .iter()
                .all(|&v| v == 1.0)
        );
        assert!(
            weights
                .get("b.running_var")
                .expect("var")
                .iter()
                .all(|&v| v == 1.0)
        );
        assert!(
            weights
                .get("b.running_mean")
                .expect("mean")
                .iter()
                .all(|&v| v == 0.0)
        );
        // Each tensor's values depend on the seed and its own name only.
        let other = network("network N(input: 4x8x8) { conv first(4, 1x1) conv c(16, 3x3) }");
        assert_eq!(Weights::seeded(&other, 3).get("c.weight"), Some(conv));
    }

    #[test]
    fn files_that_do_not_fit_list_every_problem() {
        let net = network("network N(input: 4x8x8) { conv c(16, 3x3) flatten dense d(10) }");
        let mut wrong = Weights::seeded(&net, 0);
        wrong.insert("c.weight".into(), Tensor::zeros(vec![16, 4, 5, 5]));
        wrong.tensors.remove("d.bias");
        wrong.insert("d.bais".into(), Tensor::zeros(vec![10]));
        let dir = std::env::temp_dir().join(format!("cnnc-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("wrong.safetensors");
        // `save` writes only the network's names, so write the odd one out by hand.
        let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = wrong
            .tensors
            .iter()
            .map(|(n, t)| {
                (
                    n.clone(),
                    t.shape().to_vec(),
                    t.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views: Vec<_> = tensors
            .iter()
            .map(|(n, s, b)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                        .expect("view"),
                )
            })
            .collect();
        std::fs::write(
            &path,
            safetensors::serialize(views, None).expect("serialise"),
        )
        .expect("write");
        let message = Weights::load(&path, &net)
            .expect_err("mismatch")
            .to_string();
        assert!(
            message.contains("wrong shape: c.weight is [16, 4, 5, 5], expected [16, 4, 3, 3]"),
            "{message}"
        );
        assert!(message.contains("missing: d.bias [10]"), "{message}");
        assert!(
            message.contains("unexpected: d.bais (did you mean d.bias?)"),
            "{message}"
        );
    }
}
