//! A network's weights: named f32 tensors, `<layer>.<suffix>` as the ops declare them.
//! From a safetensors file (memory-mapped, validated against the network before use) or
//! from a seeded initialisation, so every network runs out of the box.
//!
//! A file's tensors stay in its map: `values` reads them in place (the JIT packs its
//! weights straight from there), and `get` copies a tensor out the first time it is
//! asked for (the interpreters own their tensors).

mod file;
mod init;

pub use file::save;

use crate::Tensor;
use crate::error::{Result, RuntimeError};
use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::diagnostics::did_you_mean;
use cnnc_compiler::ops::WeightSpec;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, OnceLock};

#[derive(Debug, Clone, Default)]
pub struct Weights {
    tensors: HashMap<String, Stored>,
    /// The file that `Stored::Mapped` tensors lie in, mapped as long as they are used.
    map: Option<Arc<memmap2::Mmap>>,
}

/// One tensor: owned, or bytes of the map copied into a tensor on first use.
#[derive(Debug, Clone)]
enum Stored {
    Owned(Tensor),
    Mapped {
        bytes: Range<usize>,
        shape: Vec<usize>,
        tensor: OnceLock<Tensor>,
    },
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
                (e.name, Stored::Owned(tensor))
            })
            .collect();
        Weights { tensors, map: None }
    }

    /// Loads a safetensors file and checks it against the network: every missing,
    /// unexpected, wrongly shaped or non-f32 tensor is listed in one error. The tensors
    /// stay in the file's map, which the weights keep.
    pub fn load(path: &Path, net: &CheckedGraph) -> Result<Weights> {
        let file = std::fs::File::open(path).map_err(|source| RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: the map is read-only. A file changed underneath while it is mapped
        // gives wrong numbers, one truncated faults, as any mapped file does; cnnc
        // itself replaces files (a new one renamed over the old), which leaves this
        // map as it was. Populated now: the pages are read once, in one call.
        let map =
            unsafe { memmap2::MmapOptions::new().populate().map(&file) }.map_err(|source| {
                RuntimeError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        let start = map.as_ptr() as usize;
        let checked = checked_tensors(&map, path, net)?;
        let tensors = checked
            .into_iter()
            .map(|(name, data, shape)| {
                let offset = data.as_ptr() as usize - start;
                let stored = Stored::Mapped {
                    bytes: offset..offset + data.len(),
                    shape,
                    tensor: OnceLock::new(),
                };
                (name, stored)
            })
            .collect();
        Ok(Weights {
            tensors,
            map: Some(Arc::new(map)),
        })
    }

    /// A safetensors file's contents, checked against the network as `load` does and
    /// copied; `path` only names the file in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path, net: &CheckedGraph) -> Result<Weights> {
        let tensors = checked_tensors(bytes, path, net)?
            .into_iter()
            .map(|(name, data, shape)| (name, Stored::Owned(from_le_bytes(data, shape))))
            .collect();
        Ok(Weights { tensors, map: None })
    }

    /// Tensor `name`, copied out of the file's map the first time it is asked for.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        match self.tensors.get(name)? {
            Stored::Owned(tensor) => Some(tensor),
            Stored::Mapped {
                bytes,
                shape,
                tensor,
            } => {
                let map = self.map.as_deref()?;
                Some(tensor.get_or_init(|| from_le_bytes(&map[bytes.clone()], shape.clone())))
            }
        }
    }

    /// Tensor `name`'s values, row-major, read in place where they can be (from the
    /// file's map, when aligned for f32 on a little-endian machine), else copied.
    pub fn values(&self, name: &str) -> Option<Cow<'_, [f32]>> {
        if let Stored::Mapped {
            bytes,
            tensor: copied,
            ..
        } = self.tensors.get(name)?
            && copied.get().is_none()
        {
            let map = self.map.as_deref()?;
            return Some(f32s(&map[bytes.clone()]));
        }
        let tensor = self.get(name)?;
        Some(match tensor.as_slice() {
            Some(values) => Cow::Borrowed(values),
            None => Cow::Owned(tensor.iter().copied().collect()),
        })
    }

    /// Tensor `name`'s shape, without copying it out of the map.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        match self.tensors.get(name)? {
            Stored::Owned(tensor) => Some(tensor.shape()),
            Stored::Mapped { shape, .. } => Some(shape),
        }
    }

    pub fn insert(&mut self, name: String, tensor: Tensor) {
        self.tensors.insert(name, Stored::Owned(tensor));
    }
}

/// A tensor of a file, checked: its name, its little-endian bytes, its shape.
type Checked<'b> = (String, &'b [u8], Vec<usize>);

/// The network's tensors in a safetensors file, once every one is checked: every
/// missing, unexpected, wrongly shaped or non-f32 tensor is listed in one error.
fn checked_tensors<'b>(
    bytes: &'b [u8],
    path: &Path,
    net: &CheckedGraph,
) -> Result<Vec<Checked<'b>>> {
    let file =
        safetensors::SafeTensors::deserialize(bytes).map_err(|e| RuntimeError::CorruptWeights {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let mut problems = Vec::new();
    let mut tensors = Vec::new();
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
            tensors.push((e.name.clone(), view.data(), want));
        }
    }
    let known: HashSet<&str> = expected.iter().map(|e| e.name.as_str()).collect();
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
    Ok(tensors)
}

/// Little-endian f32s in place, when the bytes are aligned for them on a little-endian
/// machine; copied otherwise.
fn f32s(bytes: &[u8]) -> Cow<'_, [f32]> {
    if cfg!(target_endian = "little") {
        // SAFETY: every bit pattern is an f32; `align_to` gives the aligned middle.
        let (head, values, tail) = unsafe { bytes.align_to::<f32>() };
        if head.is_empty() && tail.is_empty() {
            return Cow::Borrowed(values);
        }
    }
    Cow::Owned(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

fn from_le_bytes(data: &[u8], shape: Vec<usize>) -> Tensor {
    let values = f32s(data).into_owned();
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

    #[test]
    fn seeded_initialisation_follows_pytorch_defaults() {
        let net = crate::checked_network("network N(input: 4x8x8) { conv c(16, 3x3) bn b() }");
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
        let other = crate::checked_network(
            "network N(input: 4x8x8) { conv first(4, 1x1) conv c(16, 3x3) }",
        );
        assert_eq!(Weights::seeded(&other, 3).get("c.weight"), Some(conv));
    }

    #[test]
    fn a_loaded_file_is_read_in_place_and_copied_out_alike() {
        let net = crate::checked_network(
            "network N(input: 3x8x8) { conv c(4, 3x3) bn b() flatten dense d(5) }",
        );
        let seeded = Weights::seeded(&net, 7);
        let scratch = tempfile::tempdir().expect("dir");
        let dir = scratch.path();
        let path = dir.join("good.safetensors");
        save(&seeded, &net, &path).expect("saves");
        let loaded = Weights::load(&path, &net).expect("loads");
        for e in expected(&net) {
            let want = seeded.get(&e.name).expect("seeded");
            assert_eq!(loaded.shape(&e.name), Some(want.shape()), "{}", e.name);
            let in_place = loaded.values(&e.name).expect("values");
            // safetensors aligns its data: nothing is copied.
            if cfg!(target_endian = "little") {
                assert!(matches!(in_place, Cow::Borrowed(_)), "{}", e.name);
            }
            assert_eq!(&*in_place, want.as_slice().expect("standard"));
            assert_eq!(loaded.get(&e.name), Some(want));
            // Once copied out, the copy is what `values` reads.
            assert_eq!(&*loaded.values(&e.name).expect("values"), &*in_place);
        }
        assert!(loaded.values("c.nothing").is_none() && loaded.get("c.nothing").is_none());
    }

    #[test]
    fn unaligned_bytes_are_copied_into_the_same_floats() {
        let floats = [1.5f32, -2.25, 1e-30];
        let mut bytes = vec![0u8];
        bytes.extend(floats.iter().flat_map(|v| v.to_le_bytes()));
        let values = f32s(&bytes[1..]);
        assert!(matches!(values, Cow::Owned(_)));
        assert_eq!(&*values, &floats);
    }

    #[test]
    fn files_that_do_not_fit_list_every_problem() {
        let net = crate::checked_network(
            "network N(input: 4x8x8) { conv c(16, 3x3) flatten dense d(10) }",
        );
        let mut wrong = Weights::seeded(&net, 0);
        wrong.insert("c.weight".into(), Tensor::zeros(vec![16, 4, 5, 5]));
        wrong.tensors.remove("d.bias");
        wrong.insert("d.bais".into(), Tensor::zeros(vec![10]));
        let scratch = tempfile::tempdir().expect("dir");
        let dir = scratch.path();
        let path = dir.join("wrong.safetensors");
        // `save` writes only the network's names, so write the odd one out by hand.
        let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = wrong
            .tensors
            .keys()
            .map(|n| {
                let t = wrong.get(n).expect("stored");
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
