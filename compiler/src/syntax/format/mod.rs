//! `cnnc fmt`: a file rewritten in canonical form, comments kept.
//!
//! The style is the examples': four spaces per brace, a statement per line (several
//! layers of a chain stay on one line, as written), one blank line between top-level
//! definitions and at most one kept between statements, `name=value` arguments
//! (`name = value` when the value has operators), spaced binary operators, sizes
//! (`3x3`) as written. A body written on one line stays on one line. A line break the
//! source has inside brackets or after an operator stays; the layout never invents one.
//!
//! Nothing is trusted: the result must parse to the same syntax tree and hold the same
//! comments as the input, or the input is refused unchanged.

mod comments;
mod printer;
mod walk;

#[cfg(test)]
mod tests;

use super::ast::File;
use super::parser::pest_parse;
use crate::diagnostics::Diagnostic;
use printer::Printer;
use std::fmt;

#[derive(Debug)]
pub enum FormatError {
    /// The source does not parse; the diagnostics say why, as `cnnc check` would.
    Syntax(Vec<Diagnostic>),
    /// The formatter would have changed the program or lost a comment: a bug in it,
    /// caught before anything is written.
    Internal(String),
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Syntax(d) => write!(f, "{} syntax error(s)", d.len()),
            FormatError::Internal(why) => {
                write!(f, "the formatter {why} (a bug in cnnc; please report it)")
            }
        }
    }
}

/// The canonical form of `source`.
pub fn format(source: &str) -> Result<String, FormatError> {
    let tree = super::parse(source).map_err(FormatError::Syntax)?;
    let file = pest_parse(source, false)
        .ok()
        .and_then(|mut pairs| pairs.next())
        .ok_or_else(|| FormatError::Internal("could not re-read the file".into()))?;
    let mut printer = Printer::new(source);
    walk::file(&mut printer, file);
    let formatted = printer.finish();
    verify(source, &tree, &formatted)?;
    Ok(formatted)
}

/// Checks that `formatted` means what `source` meant, comment for comment.
fn verify(source: &str, tree: &File, formatted: &str) -> Result<(), FormatError> {
    let internal = |why: &str| Err(FormatError::Internal(why.to_string()));
    let Ok(after) = super::parse(formatted) else {
        return internal("wrote text that does not parse");
    };
    if without_spans(tree) != without_spans(&after) {
        return internal("would have changed the network");
    }
    if comment_texts(source) != comment_texts(formatted) {
        return internal("would have lost or changed a comment");
    }
    Ok(())
}

/// The tree with every span left out: what the program says, not where.
fn without_spans(file: &File) -> String {
    const SPAN: &str = "Span { start: ";
    let text = format!("{file:?}");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find(SPAN) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        rest = &rest[rest.find('}').map_or(rest.len(), |end| end + 1)..];
    }
    out.push_str(rest);
    out
}

fn comment_texts(source: &str) -> Vec<&str> {
    comments::scan(source)
        .iter()
        .map(|c| comments::text(source, c))
        .collect()
}
