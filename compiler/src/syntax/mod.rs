//! Text → AST. The grammar lives in `grammar/cnn.pest`; this module turns pest's parse
//! tree into [`ast`] nodes and pest's errors into diagnostics that read like English.

pub mod ast;
mod errors;
pub mod format;
mod parser;
mod print;

pub use format::{FormatError, format};
pub use parser::parse;
pub use print::print_ast;

/// How deeply blocks, brackets and expressions may nest before the parser refuses the
/// file: deep enough for any real network, shallow enough that no later stage can run
/// out of stack.
pub const MAX_NESTING: usize = 128;
