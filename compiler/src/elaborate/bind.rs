//! Binding a call's arguments to parameter names: positional in order, then by name.

use super::eval::{eval, quoted_list, unknown_name};
use super::frames::Frames;
use crate::diagnostics::{Code, Diagnostic, Label, did_you_mean};
use crate::ops::Value;
use crate::span::Span;
use crate::syntax::ast::Arg;

pub struct Bound<'p> {
    pub name: &'p str,
    /// `None` when the value failed to evaluate (already reported): the argument was
    /// given, so it must not also be reported missing.
    pub value: Option<Value>,
    pub span: Span,
}

/// What to do with a bare word that names nothing in scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Words {
    /// Pass it on: the op knows which words it takes (`pad=same`) and what type it
    /// wanted instead. A word close to a name in scope is still reported as a typo.
    ToOp,
    /// Only `same` and `valid` may pass into a block, which forwards them to its ops;
    /// anything else is an unknown name, reported at the call.
    ToBlock,
}

/// Binds and evaluates `args` against `params`; reports every problem, keeps what bound.
/// `callee` names what is called, for messages (`conv`, `block Inception`).
pub fn bind<'p>(
    callee: &str,
    params: &[&'p str],
    args: &[Arg],
    frames: &Frames,
    words: Words,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Bound<'p>> {
    let mut bound: Vec<Bound<'p>> = Vec::new();
    let mut positional = 0;
    let mut named_seen = false;
    for arg in args {
        let param = match &arg.name {
            None if named_seen => {
                diagnostics.push(
                    Diagnostic::error(
                        Code::TooManyArguments,
                        format!("positional argument after named ones in `{callee}`"),
                        Label::new(arg.span, "positional, after a named argument"),
                    )
                    .with_help("give positional arguments first, or name this one too"),
                );
                continue;
            }
            None => {
                let Some(&param) = params.get(positional) else {
                    diagnostics.push(too_many(callee, params, arg));
                    continue;
                };
                positional += 1;
                param
            }
            Some(name) => match params.iter().find(|p| {
                named_seen = true;
                **p == name.name
            }) {
                Some(&param) => param,
                None => {
                    diagnostics.push(unknown_argument(callee, params, &name.name, name.span));
                    continue;
                }
            },
        };
        if let Some(earlier) = bound.iter().find(|b| b.name == param) {
            diagnostics.push(
                Diagnostic::error(
                    Code::DuplicateArgument,
                    format!("argument `{param}` of `{callee}` given twice"),
                    Label::new(arg.span, "given again here"),
                )
                .with_label(Label::new(earlier.span, "first given here"))
                .with_help("remove one of them"),
            );
            continue;
        }
        let value = match eval(&arg.value, frames) {
            Ok(Value::Symbol(word)) if !passes(&word, words, frames) => {
                diagnostics.push(unknown_name(&word, &arg.value, frames));
                None
            }
            Ok(value) => Some(value),
            Err(d) => {
                diagnostics.push(d);
                None
            }
        };
        bound.push(Bound {
            name: param,
            value,
            span: arg.span,
        });
    }
    bound
}

fn passes(word: &str, words: Words, frames: &Frames) -> bool {
    match words {
        Words::ToOp => {
            did_you_mean(word, frames.value_names().iter().map(String::as_str)).is_none()
        }
        Words::ToBlock => matches!(word, "same" | "valid"),
    }
}

fn too_many(callee: &str, params: &[&str], arg: &Arg) -> Diagnostic {
    let help = if params.is_empty() {
        format!("`{callee}` takes no arguments")
    } else {
        format!(
            "`{callee}` takes at most {}: {}",
            params.len(),
            quoted_list(&params.iter().map(|p| p.to_string()).collect::<Vec<_>>())
        )
    };
    Diagnostic::error(
        Code::TooManyArguments,
        format!("too many arguments for `{callee}`"),
        Label::new(arg.span, "one too many"),
    )
    .with_help(help)
}

fn unknown_argument(callee: &str, params: &[&str], name: &str, at: Span) -> Diagnostic {
    let d = Diagnostic::error(
        Code::UnknownArgument,
        format!("`{callee}` has no argument `{name}`"),
        Label::new(at, "unknown argument"),
    );
    match did_you_mean(name, params.iter().copied()) {
        Some(s) => d.with_help(format!("did you mean `{s}`?")),
        None if params.is_empty() => d.with_help(format!("`{callee}` takes no arguments")),
        None => d.with_help(format!(
            "its arguments are {}",
            quoted_list(&params.iter().map(|p| p.to_string()).collect::<Vec<_>>())
        )),
    }
}
