//! ONNX interop: export a checked network with its weights as an ONNX model, and
//! import ONNX models as readable `.cnn` networks with safetensors weights.

pub mod export;
pub mod import;
pub mod proto;

pub use export::{ExportOptions, export};
pub use import::{ImportError, Imported, import};
