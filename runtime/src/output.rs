//! What a run gives back: top-k classes, and `.npy` files written atomically.

use crate::Tensor;
use crate::error::{Result, RuntimeError};
use ndarray::{ArrayView1, Axis};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// What writing a file does when one is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    Replace,
    /// Refuse, even if another process creates the file while this one writes.
    Refuse,
}

/// Writes `bytes` to a temporary file beside `path` and renames it into place, so a
/// failed or interrupted run never leaves a half-written file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file(path, bytes, Existing::Replace)
}

/// Writes `bytes` to `path` atomically: to a new temporary file in the same directory
/// (same file system, so the last step is atomic), flushed to disk, then renamed over
/// `path`, or with `Existing::Refuse` hard-linked to it, which fails if `path` exists.
/// On any error the temporary file is removed and `path` is as it was. An interrupted
/// run leaves at most the hidden temporary file, never a partial `path`.
pub fn write_file(path: &Path, bytes: &[u8], existing: Existing) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let error = |source| RuntimeError::Write {
        path: path.to_path_buf(),
        source,
    };
    if existing == Existing::Refuse && path.exists() {
        return Err(RuntimeError::Exists {
            path: path.to_path_buf(),
        });
    }
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("output");
    let temporary = path.with_file_name(format!(
        ".{file_name}.{}-{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()));
    let placed = written.and_then(|()| match existing {
        Existing::Replace => std::fs::rename(&temporary, path),
        Existing::Refuse => std::fs::hard_link(&temporary, path),
    });
    // After a rename there is nothing left to remove; after a link, the second name.
    let _ = std::fs::remove_file(&temporary);
    match placed {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(RuntimeError::Exists {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(error(e)),
        Ok(()) => {
            sync_directory(path);
            Ok(())
        }
    }
}

/// Flushes the directory entry the rename made, so the file survives a power cut; a
/// file system that cannot sync directories loses nothing but that guarantee.
fn sync_directory(path: &Path) {
    let directory = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = std::fs::File::open(directory) {
        let _ = dir.sync_all();
    }
}

/// Saves a tensor as `.npy`.
pub fn save_npy(tensor: &Tensor, path: &Path, existing: Existing) -> Result<()> {
    let mut bytes = Vec::new();
    ndarray_npy::WriteNpyExt::write_npy(tensor, &mut bytes).map_err(|e| {
        RuntimeError::Invalid(format!("cannot encode {} as .npy: {e}", path.display()))
    })?;
    write_file(path, &bytes, existing)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many entries `dir` holds, hidden temporary files included.
    fn entries(dir: &Path) -> usize {
        std::fs::read_dir(dir).expect("dir").count()
    }

    #[test]
    fn existing_files_are_replaced_or_refused_as_asked() {
        let scratch = tempfile::tempdir().expect("scratch dir");
        let dir = scratch.path();
        let path = dir.join("a.npy");
        write_file(&path, b"first", Existing::Refuse).expect("new file");
        let refused = write_file(&path, b"second", Existing::Refuse).expect_err("exists");
        assert!(matches!(refused, RuntimeError::Exists { .. }), "{refused}");
        assert_eq!(std::fs::read(&path).expect("kept"), b"first");
        write_file(&path, b"third", Existing::Replace).expect("replaced");
        assert_eq!(std::fs::read(&path).expect("replaced"), b"third");
        assert_eq!(entries(dir), 1, "no temporary file left");
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        let scratch = tempfile::tempdir().expect("scratch dir");
        let dir = scratch.path();
        let missing = dir.join("no such dir").join("a.npy");
        let error = write_file(&missing, b"x", Existing::Replace).expect_err("no directory");
        assert!(error.to_string().contains("cannot write"), "{error}");
        // The destination is a directory: the rename fails, the temporary file goes.
        std::fs::create_dir(dir.join("b.npy")).expect("dir");
        write_file(&dir.join("b.npy"), b"x", Existing::Replace).expect_err("a directory");
        assert_eq!(entries(dir), 1, "no temporary file left");
    }
}
