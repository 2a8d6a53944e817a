//! Expression evaluation: integers checked for overflow, floats, booleans, sizes and
//! lists. Names resolve through the [`Frames`] of the enclosing bodies.

use super::frames::Frames;
use crate::diagnostics::{Code, Diagnostic, Label, did_you_mean};
use crate::ops::Value;
use crate::syntax::ast::{BinaryOp, Expr, ExprKind, UnaryOp};

type Result<T> = std::result::Result<T, Diagnostic>;

const FUNCTIONS: &[&str] = &["min", "max"];

pub fn eval(expr: &Expr, frames: &Frames) -> Result<Value> {
    Ok(match &expr.kind {
        ExprKind::Int(v) => Value::Int(*v),
        ExprKind::Float(v) => Value::Float(*v),
        ExprKind::Bool(v) => Value::Bool(*v),
        ExprKind::Dims(d) => Value::Dims(d.clone()),
        ExprKind::List(items) => Value::List(
            items
                .iter()
                .map(|e| eval(e, frames))
                .collect::<Result<_>>()?,
        ),
        ExprKind::Name(name) => frames
            .value(name)
            .cloned()
            .unwrap_or_else(|| Value::Symbol(name.clone())),
        ExprKind::Call(function, args) => {
            // The function is checked before its arguments: `conv(...)` written as a
            // value is an unknown function, not a bad argument.
            let values = match function.name.as_str() {
                "min" | "max" => args
                    .iter()
                    .map(|a| number(a, frames))
                    .collect::<Result<Vec<_>>>()?,
                _ => Vec::new(),
            };
            match function.name.as_str() {
                "min" | "max" if !values.is_empty() => fold_extreme(&function.name, values),
                "min" | "max" => {
                    return Err(Diagnostic::error(
                        Code::MissingArgument,
                        format!("`{}` needs at least one value", function.name),
                        Label::new(expr.span, "no values"),
                    ));
                }
                other => {
                    let mut d = Diagnostic::error(
                        Code::UnknownName,
                        format!("unknown function `{other}`"),
                        Label::new(function.span, "not a function"),
                    );
                    d = match did_you_mean(other, FUNCTIONS.iter().copied()) {
                        Some(s) => d.with_help(format!("did you mean `{s}`?")),
                        None => d.with_help("the functions are `min` and `max`"),
                    };
                    return Err(d);
                }
            }
        }
        ExprKind::Unary(op, operand) => {
            let value = eval(operand, frames)?;
            match (op, value) {
                (UnaryOp::Neg, Value::Int(v)) => {
                    Value::Int(v.checked_neg().ok_or_else(|| overflow(expr))?)
                }
                (UnaryOp::Neg, Value::Float(v)) => Value::Float(-v),
                (UnaryOp::Not, Value::Bool(v)) => Value::Bool(!v),
                (_, value) => return Err(operand_error(operand, &value, frames, "-/!")),
            }
        }
        ExprKind::Binary(op, a, b) => binary(expr, *op, a, b, frames)?,
        ExprKind::Ternary(cond, then, otherwise) => {
            if condition(cond, frames)? {
                eval(then, frames)?
            } else {
                eval(otherwise, frames)?
            }
        }
    })
}

pub fn condition(expr: &Expr, frames: &Frames) -> Result<bool> {
    match eval(expr, frames)? {
        Value::Bool(b) => Ok(b),
        other => Err(operand_error(expr, &other, frames, "condition")),
    }
}

fn number(expr: &Expr, frames: &Frames) -> Result<Value> {
    match eval(expr, frames)? {
        v @ (Value::Int(_) | Value::Float(_)) => Ok(v),
        other => Err(operand_error(expr, &other, frames, "number")),
    }
}

fn fold_extreme(function: &str, values: Vec<Value>) -> Value {
    let pick_first = |a: &Value, b: &Value| {
        let (x, y) = (as_f64(a), as_f64(b));
        if function == "min" { x <= y } else { x >= y }
    };
    values
        .into_iter()
        .reduce(|a, b| if pick_first(&a, &b) { a } else { b })
        .expect("non-empty")
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => f64::NAN,
    }
}

fn overflow(expr: &Expr) -> Diagnostic {
    Diagnostic::error(
        Code::Arithmetic,
        "integer overflow in this expression",
        Label::new(expr.span, "overflows a 64-bit integer"),
    )
    .with_help("the values involved are far beyond any real network size")
}

/// An operand of the wrong kind; an unknown name is the likeliest cause, so say that.
pub fn operand_error(expr: &Expr, value: &Value, frames: &Frames, wanted: &str) -> Diagnostic {
    if let Value::Symbol(name) = value {
        return unknown_name(name, expr, frames);
    }
    let expected = match wanted {
        "condition" => "a boolean condition",
        "number" => "a number",
        "-/!" => "a number for `-`, a boolean for `!`",
        _ => wanted,
    };
    Diagnostic::error(
        Code::ArgumentType,
        format!("expected {expected}, found {} `{value}`", value.type_name()),
        Label::new(expr.span, format!("this is {}", value.type_name())),
    )
}

pub fn unknown_name(name: &str, expr: &Expr, frames: &Frames) -> Diagnostic {
    let d = Diagnostic::error(
        Code::UnknownName,
        format!("unknown name `{name}`"),
        Label::new(expr.span, "not a parameter or `let` in scope"),
    );
    let names = frames.value_names();
    match did_you_mean(name, names.iter().map(String::as_str)) {
        Some(s) => d.with_help(format!("did you mean `{s}`?")),
        None if names.is_empty() => d.with_help("no parameters or `let`s are in scope here"),
        None => d.with_help(format!("in scope: {}", quoted_list(&names))),
    }
}

pub fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn binary(expr: &Expr, op: BinaryOp, a: &Expr, b: &Expr, frames: &Frames) -> Result<Value> {
    // Logical operators short-circuit, so `i > 0 && n / i > 2` is safe.
    if matches!(op, BinaryOp::And | BinaryOp::Or) {
        let left = condition(a, frames)?;
        return Ok(Value::Bool(match op {
            BinaryOp::And => left && condition(b, frames)?,
            _ => left || condition(b, frames)?,
        }));
    }
    let left = eval(a, frames)?;
    let right = eval(b, frames)?;
    for (value, operand) in [(&left, a), (&right, b)] {
        if let Value::Symbol(name) = value {
            return Err(unknown_name(name, operand, frames));
        }
    }
    let mismatch = || {
        Diagnostic::error(
            Code::ArgumentType,
            format!(
                "`{}` cannot combine {} `{left}` and {} `{right}`",
                op.symbol(),
                left.type_name(),
                right.type_name()
            ),
            Label::new(expr.span, "in this expression"),
        )
    };
    match op {
        BinaryOp::Eq => return Ok(Value::Bool(equal(&left, &right))),
        BinaryOp::Ne => return Ok(Value::Bool(!equal(&left, &right))),
        BinaryOp::Dims => {
            return match (&left, &right) {
                (Value::Int(x), Value::Int(y)) => Ok(Value::Dims(vec![*x, *y])),
                (Value::Dims(d), Value::Int(y)) => Ok(Value::Dims([&d[..], &[*y]].concat())),
                (Value::Int(x), Value::Dims(d)) => Ok(Value::Dims([&[*x], &d[..]].concat())),
                _ => Err(mismatch()),
            };
        }
        _ => {}
    }
    match (&left, &right) {
        (Value::Int(x), Value::Int(y)) => int_op(expr, op, *x, *y),
        (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
            float_op(expr, op, as_f64(&left), as_f64(&right))
        }
        _ => Err(mismatch()),
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
            as_f64(a) == as_f64(b)
        }
        _ => a == b,
    }
}

fn int_op(expr: &Expr, op: BinaryOp, x: i64, y: i64) -> Result<Value> {
    let zero = || {
        Diagnostic::error(
            Code::Arithmetic,
            "division by zero",
            Label::new(expr.span, "the divisor is 0 here"),
        )
    };
    let result = match op {
        BinaryOp::Add => x.checked_add(y),
        BinaryOp::Sub => x.checked_sub(y),
        BinaryOp::Mul => x.checked_mul(y),
        BinaryOp::Div if y == 0 => return Err(zero()),
        BinaryOp::Div => x.checked_div_euclid(y),
        BinaryOp::Rem if y == 0 => return Err(zero()),
        BinaryOp::Rem => x.checked_rem_euclid(y),
        BinaryOp::Lt => return Ok(Value::Bool(x < y)),
        BinaryOp::Le => return Ok(Value::Bool(x <= y)),
        BinaryOp::Gt => return Ok(Value::Bool(x > y)),
        BinaryOp::Ge => return Ok(Value::Bool(x >= y)),
        _ => unreachable!("handled by the caller"),
    };
    result.map(Value::Int).ok_or_else(|| overflow(expr))
}

fn float_op(expr: &Expr, op: BinaryOp, x: f64, y: f64) -> Result<Value> {
    let value = match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
        BinaryOp::Rem => x % y,
        BinaryOp::Lt => return Ok(Value::Bool(x < y)),
        BinaryOp::Le => return Ok(Value::Bool(x <= y)),
        BinaryOp::Gt => return Ok(Value::Bool(x > y)),
        BinaryOp::Ge => return Ok(Value::Bool(x >= y)),
        _ => unreachable!("handled by the caller"),
    };
    if value.is_finite() {
        Ok(Value::Float(value))
    } else {
        Err(Diagnostic::error(
            Code::Arithmetic,
            "this expression has no finite value",
            Label::new(expr.span, format!("evaluates to {value}")),
        ))
    }
}
