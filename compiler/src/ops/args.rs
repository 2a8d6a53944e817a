//! Argument values and their binding to an op's signature.
//!
//! The elaborator evaluates a call's arguments to [`Value`]s and binds them to the op's
//! parameter names; each op's `build` then reads them through [`Args`], which checks
//! types and ranges and records every problem as a diagnostic.

use crate::diagnostics::{Code, Diagnostic, Label};
use crate::span::Span;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Dims(Vec<i64>),
    List(Vec<Value>),
    /// A bare word that names nothing in scope: `same`, `valid`, or a typo.
    Symbol(String),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::Dims(_) => "a size",
            Value::List(_) => "a list",
            Value::Symbol(_) => "a name",
        }
    }

    fn as_ints(&self) -> Option<Vec<i64>> {
        match self {
            Value::Int(v) => Some(vec![*v]),
            Value::Dims(d) => Some(d.clone()),
            Value::List(items) => items
                .iter()
                .map(|v| match v {
                    Value::Int(i) => Some(*i),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v:?}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Dims(d) => {
                let parts: Vec<String> = d.iter().map(i64::to_string).collect();
                f.write_str(&parts.join("x"))
            }
            Value::List(items) => {
                let parts: Vec<String> = items.iter().map(Value::to_string).collect();
                write!(f, "[{}]", parts.join(", "))
            }
            Value::Symbol(s) => f.write_str(s),
        }
    }
}

/// The largest size any argument may give: far beyond any real network, small enough
/// that sums of sizes cannot overflow and products are checked.
pub const MAX_SIZE: i64 = 1 << 32;

#[derive(Debug, Clone, PartialEq)]
pub struct BoundArg {
    pub name: &'static str,
    pub value: Value,
    pub span: Span,
}

/// A call's arguments, bound to parameter names, as an op's `build` reads them.
#[derive(Debug)]
pub struct Args {
    pub op: &'static str,
    pub call: Span,
    pub bound: Vec<BoundArg>,
    /// Arguments that were given but failed to evaluate (already reported).
    pub failed: Vec<&'static str>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Args {
    pub fn new(op: &'static str, call: Span, bound: Vec<BoundArg>) -> Self {
        Args {
            op,
            call,
            bound,
            failed: Vec::new(),
            diagnostics: Vec::new(),
        }
    }

    fn get(&self, name: &str) -> Option<&BoundArg> {
        self.bound.iter().find(|a| a.name == name)
    }

    pub fn span_of(&self, name: &str) -> Option<Span> {
        self.get(name).map(|a| a.span)
    }

    fn wrong_type(&mut self, name: &str, expected: &str) {
        let Some(arg) = self.get(name) else { return };
        let found = arg.value.type_name();
        let diagnostic = match &arg.value {
            Value::Symbol(word) => Diagnostic::error(
                Code::UnknownName,
                format!(
                    "unknown name `{word}` in argument `{name}` of `{}`",
                    self.op
                ),
                Label::new(arg.span, "not a parameter, a `let` or a keyword value"),
            )
            .with_help(format!("`{name}` takes {expected}")),
            value => Diagnostic::error(
                Code::ArgumentType,
                format!(
                    "argument `{name}` of `{}` takes {expected}, found {found} `{value}`",
                    self.op
                ),
                Label::new(arg.span, format!("expected {expected}")),
            ),
        };
        self.diagnostics.push(diagnostic);
    }

    fn out_of_range(&mut self, name: &str, requirement: &str) {
        let Some(arg) = self.get(name) else { return };
        let diagnostic = Diagnostic::error(
            Code::ArgumentValue,
            format!(
                "argument `{name}` of `{}` must be {requirement}, found `{}`",
                self.op, arg.value
            ),
            Label::new(arg.span, format!("must be {requirement}")),
        );
        self.diagnostics.push(diagnostic);
    }

    /// A required argument; reports it missing (once) when absent.
    fn require(&mut self, name: &str) -> Option<Value> {
        match self.get(name) {
            Some(arg) => Some(arg.value.clone()),
            None if self.failed.contains(&name) => None,
            None => {
                self.diagnostics.push(
                    Diagnostic::error(
                        Code::MissingArgument,
                        format!("`{}` needs the argument `{name}`", self.op),
                        Label::new(self.call, format!("`{name}` missing")),
                    )
                    .with_help(format!("pass it by position or as `{name}=...`")),
                );
                None
            }
        }
    }

    /// A positive integer: a channel count, a number of units.
    pub fn count(&mut self, name: &str) -> u64 {
        let Some(value) = self.require(name) else {
            return 1;
        };
        match value {
            Value::Int(v) if v > MAX_SIZE => {
                self.out_of_range(name, &format!("at most {MAX_SIZE}"));
                1
            }
            Value::Int(v) if v > 0 => v as u64,
            Value::Int(0) => {
                let arg = self.get(name).expect("present");
                let diagnostic = Diagnostic::error(
                    Code::EmptyOutput,
                    format!("`{}` with `{name}` 0 has an empty output", self.op),
                    Label::new(arg.span, "output size would be 0"),
                )
                .with_help(format!("`{name}` must be at least 1"));
                self.diagnostics.push(diagnostic);
                1
            }
            Value::Int(_) => {
                self.out_of_range(name, "at least 1");
                1
            }
            _ => {
                self.wrong_type(name, "an integer");
                1
            }
        }
    }

    /// An optional positive integer: `groups`, LRN's `size`.
    pub fn count_or(&mut self, name: &str, default: u64) -> u64 {
        if self.get(name).is_none() {
            return default;
        }
        self.count(name)
    }

    /// A spatial size (`3`, `1x7`, `[1, 7]`), every part at least `min`.
    pub fn size2(&mut self, name: &str, default: Option<[u64; 2]>, min: i64) -> [u64; 2] {
        let value = match (self.get(name), default) {
            (Some(arg), _) => arg.value.clone(),
            (None, Some(d)) => return d,
            (None, None) => match self.require(name) {
                Some(v) => v,
                None => return [1, 1],
            },
        };
        let parts = match value.as_ints() {
            Some(parts) if matches!(value, Value::Int(_)) => vec![parts[0], parts[0]],
            Some(parts) if parts.len() == 2 => parts,
            _ => {
                self.wrong_type(name, "a size such as `3`, `3x3` or `[1, 7]`");
                return [1, 1];
            }
        };
        if parts.iter().any(|&p| p < min) {
            self.out_of_range(name, &format!("at least {min}"));
            return [1, 1];
        }
        if parts.iter().any(|&p| p > MAX_SIZE) {
            self.out_of_range(name, &format!("at most {MAX_SIZE}"));
            return [1, 1];
        }
        [parts[0] as u64, parts[1] as u64]
    }

    pub fn padding(&mut self, name: &str) -> Padding {
        let Some(arg) = self.get(name) else {
            return Padding::Explicit([0; 4]);
        };
        let value = arg.value.clone();
        match &value {
            Value::Symbol(s) if s == "same" => return Padding::Same,
            Value::Symbol(s) if s == "valid" => return Padding::Explicit([0; 4]),
            _ => {}
        }
        let parts = match value.as_ints() {
            Some(p) if matches!(value, Value::Int(_)) => vec![p[0]; 4],
            Some(p) if p.len() == 2 => vec![p[0], p[1], p[0], p[1]],
            Some(p) if p.len() == 4 && matches!(value, Value::List(_)) => p,
            _ => {
                self.wrong_type(
                    name,
                    "padding: `1`, `1x2`, `[top, left, bottom, right]`, `same` or `valid`",
                );
                return Padding::Explicit([0; 4]);
            }
        };
        if parts.iter().any(|&p| !(0..=MAX_SIZE).contains(&p)) {
            self.out_of_range(name, &format!("between 0 and {MAX_SIZE}"));
            return Padding::Explicit([0; 4]);
        }
        Padding::Explicit([
            parts[0] as u64,
            parts[1] as u64,
            parts[2] as u64,
            parts[3] as u64,
        ])
    }

    pub fn float(&mut self, name: &str, default: f64) -> f64 {
        match self.get(name).map(|a| a.value.clone()) {
            None => default,
            Some(Value::Float(v)) => v,
            Some(Value::Int(v)) => v as f64,
            Some(_) => {
                self.wrong_type(name, "a number");
                default
            }
        }
    }

    /// A number within `[low, high]` (`high_open`: excluding `high`).
    pub fn float_in(
        &mut self,
        name: &str,
        default: f64,
        low: f64,
        high: f64,
        high_open: bool,
    ) -> f64 {
        let value = self.float(name, default);
        let above = if high_open {
            value >= high
        } else {
            value > high
        };
        if value < low || above {
            let bracket = if high_open { ")" } else { "]" };
            self.out_of_range(name, &format!("in [{low}, {high}{bracket}"));
            return default;
        }
        value
    }

    pub fn bool(&mut self, name: &str, default: bool) -> bool {
        match self.get(name).map(|a| a.value.clone()) {
            None => default,
            Some(Value::Bool(v)) => v,
            Some(_) => {
                self.wrong_type(name, "`true` or `false`");
                default
            }
        }
    }
}

/// Padding as written; `same` depends on the input size and is resolved by the shape
/// rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// top, left, bottom, right
    Explicit([u64; 4]),
    Same,
}
