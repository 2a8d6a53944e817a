//! Everything that can go wrong at run time, each with a message that says what was
//! expected, what was found, and what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid safetensors file: {reason}")]
    CorruptWeights { path: PathBuf, reason: String },
    #[error("{path} does not match the network {network}:\n{details}")]
    WeightsMismatch {
        path: PathBuf,
        network: String,
        details: String,
    },
    #[error("cannot decode the image {path}: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error("cannot read {path} as a float32 .npy array: {reason}")]
    Npy { path: PathBuf, reason: String },
    #[error("the input has shape {found} but the network takes {expected}{hint}")]
    InputShape {
        expected: String,
        found: String,
        hint: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "this run needs about {needed} of memory, more than the limit of {limit}\n  largest tensors: {largest}\n  help: lower --batch, or raise the limit with --memory-limit"
    )]
    OutOfMemory {
        needed: String,
        limit: String,
        largest: String,
    },
    #[error("{path} already exists; pass --overwrite to replace it")]
    Exists { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, RuntimeError>;
