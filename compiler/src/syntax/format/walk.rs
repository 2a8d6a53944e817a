//! The tree walk: pest's parse tree keeps the span of every token the user wrote, and
//! the user's own parentheses, so printing it (rather than the AST) writes the same
//! program with the whitespace made canonical. Punctuation pest does not keep is found
//! in the source between the tokens around it.

use super::printer::{Gap, Printer};
use crate::syntax::parser::Rule;
use pest::iterators::Pair;

/// Top-level definitions, one blank line apart.
pub(super) fn file(p: &mut Printer, pair: Pair<Rule>) {
    let items = pair.into_inner().filter(|i| i.as_rule() != Rule::EOI);
    for (i, item) in items.enumerate() {
        if i > 0 {
            p.gap(Gap::Blank, false);
        }
        definition(p, item);
    }
}

fn start(pair: &Pair<Rule>) -> usize {
    pair.as_span().start()
}

fn end(pair: &Pair<Rule>) -> usize {
    pair.as_span().end()
}

fn word(p: &mut Printer, pair: &Pair<Rule>) {
    p.token(pair.as_str(), start(pair));
}

/// `network NAME(INPUT: SHAPE, ...) { ... }` and `block NAME(PARAM=DEFAULT, ...) { ... }`.
fn definition(p: &mut Printer, pair: Pair<Rule>) {
    let parts: Vec<Pair<Rule>> = pair.into_inner().collect();
    let [keyword, name, declarations @ .., braces] = &parts[..] else {
        return;
    };
    word(p, keyword);
    p.gap(Gap::Space, false);
    word(p, name);
    let first = declarations.first().map_or(start(braces), start);
    let open = p.find(end(name), first, "(").unwrap_or(end(name));
    let last = declarations.last().map_or(open + 1, end);
    let close = p.find(last, start(braces), ")").unwrap_or(last);
    list(
        p,
        ("(", open),
        declarations,
        (")", close),
        true,
        declaration,
    );
    p.gap(Gap::Space, false);
    body(p, braces);
}

/// `input: 3x224x224` or `stride=1`.
fn declaration(p: &mut Printer, pair: &Pair<Rule>) {
    let parts: Vec<Pair<Rule>> = pair.clone().into_inner().collect();
    match (pair.as_rule(), &parts[..]) {
        (Rule::input_decl, [name, shape]) => {
            word(p, name);
            let colon = p.find(end(name), start(shape), ":");
            match colon {
                Some(at) => p.token(":", at),
                None => p.glue(":"),
            }
            p.gap(Gap::Space, false);
            expr(p, shape);
        }
        (_, [name, value]) => {
            word(p, name);
            equals(p, end(name), value);
        }
        (_, [name]) => word(p, name),
        _ => {}
    }
}

/// `name=value`, spaced as `name = value` when the value has operators of its own:
/// `stride=2`, `stride = i == 0 ? 2 : 1`.
fn equals(p: &mut Printer, after: usize, value: &Pair<Rule>) {
    let spaced = !is_simple(value);
    if spaced {
        p.gap(Gap::Space, false);
    }
    let at = p.find(after, start(value), "=");
    match at {
        Some(at) => p.token("=", at),
        None => p.glue("="),
    }
    let at = at.map_or(after, |a| a + 1);
    if spaced {
        p.soft(at, start(value), true);
    } else {
        p.soft_none(at, start(value));
    }
    expr(p, value);
}

/// Whether an expression is a single operand: a literal, a name, a call, a list or a
/// parenthesized expression, perhaps negated.
fn is_simple(value: &Pair<Rule>) -> bool {
    let mut pair = value.clone();
    loop {
        if !is_operator_level(pair.as_rule()) {
            return true;
        }
        let mut inner = pair.into_inner();
        match (inner.next(), inner.next()) {
            (Some(only), None) => pair = only,
            _ => return false,
        }
    }
}

fn is_operator_level(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::expr
            | Rule::or_expr
            | Rule::and_expr
            | Rule::cmp_expr
            | Rule::dims_expr
            | Rule::sum_expr
            | Rule::prod_expr
    )
}

/// A comma-separated list in brackets, on one line unless the source broke it; a list
/// whose closing bracket is on a line of its own gets a trailing comma where the
/// grammar allows one.
fn list(
    p: &mut Printer,
    (open_text, open): (&str, usize),
    items: &[Pair<Rule>],
    (close_text, close): (&str, usize),
    trailing_comma: bool,
    item: fn(&mut Printer, &Pair<Rule>),
) {
    p.open_paren(open_text, open);
    let mut previous = open + open_text.len();
    for (i, pair) in items.iter().enumerate() {
        if i == 0 {
            p.soft_none(previous, start(pair));
        } else {
            p.glue(",");
            p.soft(previous, start(pair), false);
        }
        item(p, pair);
        previous = end(pair);
    }
    if !items.is_empty() && p.newline_between(previous, close) {
        if trailing_comma {
            p.glue(",");
        }
        p.gap(Gap::Line, false);
    }
    p.close_paren(close_text, close);
}

/// `{ ... }`: on one line if the source wrote it on one line (statements then `; `
/// apart), else one statement per line, keeping single blank lines between them.
fn body(p: &mut Printer, pair: &Pair<Rule>) {
    let items: Vec<Pair<Rule>> = pair.clone().into_inner().collect();
    braces(p, pair, &items, Some(";"), statement);
}

/// `concat { branch { ... } ... }`: laid out as a body, without separators.
fn branches(p: &mut Printer, pair: &Pair<Rule>) {
    let items: Vec<Pair<Rule>> = pair.clone().into_inner().collect();
    braces(p, pair, &items, None, words);
}

fn braces(
    p: &mut Printer,
    pair: &Pair<Rule>,
    items: &[Pair<Rule>],
    inline_separator: Option<&str>,
    item: fn(&mut Printer, &Pair<Rule>),
) {
    let (open, close) = (start(pair), end(pair).saturating_sub(1));
    let inline = !pair.as_str().contains(['\n', '\r']);
    let inner = if inline { Gap::Space } else { Gap::Line };
    p.open_brace(open);
    for (i, stmt) in items.iter().enumerate() {
        if i == 0 {
            p.gap(inner, false);
        } else if inline {
            if let Some(separator) = inline_separator {
                p.glue(separator);
            }
            p.gap(Gap::Space, false);
        } else {
            p.gap(Gap::KeepBlank, false);
        }
        item(p, stmt);
    }
    let empty = items.is_empty() && !p.has_comment(open, close);
    p.close_brace(close, if empty { Gap::None } else { inner });
}

fn statement(p: &mut Printer, pair: &Pair<Rule>) {
    match pair.as_rule() {
        Rule::let_stmt => let_statement(p, pair),
        Rule::chain => {
            for (i, step) in pair.clone().into_inner().enumerate() {
                if i > 0 {
                    p.gap(Gap::Space, false);
                }
                match step.as_rule() {
                    Rule::bind_step => bind(p, &step),
                    _ => words(p, &step),
                }
            }
        }
        _ => words(p, pair),
    }
}

/// `let NAME = EXPR`.
fn let_statement(p: &mut Printer, pair: &Pair<Rule>) {
    let parts: Vec<Pair<Rule>> = pair.clone().into_inner().collect();
    let [keyword, name, value] = &parts[..] else {
        return;
    };
    word(p, keyword);
    p.gap(Gap::Space, false);
    word(p, name);
    p.gap(Gap::Space, false);
    match p.find(end(name), start(value), "=") {
        Some(at) => p.token("=", at),
        None => p.glue("="),
    }
    p.gap(Gap::Space, false);
    expr(p, value);
}

/// `-> NAME`: the arrow is the step's first character.
fn bind(p: &mut Printer, pair: &Pair<Rule>) {
    p.token("->", start(pair));
    for name in pair.clone().into_inner() {
        p.gap(Gap::Space, false);
        word(p, &name);
    }
}

/// A construct of words, one space apart: a layer call (its arguments attached),
/// `concat`, `branch`, `residual`, `shortcut`, `repeat`, `side`, `from`, `if`/`else`.
fn words(p: &mut Printer, pair: &Pair<Rule>) {
    for (i, part) in pair.clone().into_inner().enumerate() {
        if part.as_rule() == Rule::args {
            arguments(p, &part);
            continue;
        }
        if i > 0 {
            p.gap(Gap::Space, false);
        }
        match part.as_rule() {
            Rule::body => body(p, &part),
            Rule::branches => branches(p, &part),
            Rule::branch | Rule::shortcut | Rule::if_stmt => words(p, &part),
            rule if is_operator_level(rule) => expr(p, &part),
            _ => word(p, &part),
        }
    }
}

/// `(6, 5x5, stride=2)`.
fn arguments(p: &mut Printer, pair: &Pair<Rule>) {
    let items: Vec<Pair<Rule>> = pair.clone().into_inner().collect();
    let close = end(pair).saturating_sub(1);
    list(p, ("(", start(pair)), &items, (")", close), true, argument);
}

fn argument(p: &mut Printer, pair: &Pair<Rule>) {
    if pair.as_rule() != Rule::kwarg {
        return expr(p, pair);
    }
    let parts: Vec<Pair<Rule>> = pair.clone().into_inner().collect();
    if let [name, value] = &parts[..] {
        word(p, name);
        equals(p, end(name), value);
    }
}

fn expr(p: &mut Printer, pair: &Pair<Rule>) {
    match pair.as_rule() {
        Rule::expr => ternary(p, pair),
        rule if is_operator_level(rule) => binary(p, pair),
        Rule::unary_expr => unary(p, pair),
        Rule::list => {
            let items: Vec<Pair<Rule>> = pair.clone().into_inner().collect();
            let close = end(pair).saturating_sub(1);
            list(p, ("[", start(pair)), &items, ("]", close), true, expr);
        }
        Rule::func_call => function_call(p, pair),
        _ => word(p, pair),
    }
}

/// `cond ? a : b`; the grammar allows a line break after `?`, and around `:`.
fn ternary(p: &mut Printer, pair: &Pair<Rule>) {
    let parts: Vec<Pair<Rule>> = pair.clone().into_inner().collect();
    let Some(condition) = parts.first() else {
        return;
    };
    expr(p, condition);
    let [_, then, otherwise] = &parts[..] else {
        return;
    };
    p.gap(Gap::Space, true);
    let question = p.find(end(condition), start(then), "?");
    operator(p, "?", question, start(then));
    expr(p, then);
    let colon = p.find(end(then), start(otherwise), ":");
    p.soft(end(then), colon.unwrap_or(end(then)), true);
    operator(p, ":", colon, start(otherwise));
    expr(p, otherwise);
}

/// Writes an operator found in the source (or, failing that, after the last token),
/// then the space or line break that followed it before `next`.
fn operator(p: &mut Printer, text: &str, at: Option<usize>, next: usize) {
    match at {
        Some(at) => {
            p.token(text, at);
            p.soft(at + text.len(), next, true);
        }
        None => {
            p.glue(text);
            p.gap(Gap::Space, true);
        }
    }
}

/// `a + b * c`, as pest grouped it: operands and operator tokens alternate.
fn binary(p: &mut Printer, pair: &Pair<Rule>) {
    let mut parts = pair.clone().into_inner();
    let Some(first) = parts.next() else {
        return;
    };
    expr(p, &first);
    while let (Some(op), Some(operand)) = (parts.next(), parts.next()) {
        p.gap(Gap::Space, true);
        word(p, &op);
        p.soft(end(&op), start(&operand), true);
        expr(p, &operand);
    }
}

/// `-x`, `!flag`, and parenthesized expressions, which pest keeps as a nested `expr`.
fn unary(p: &mut Printer, pair: &Pair<Rule>) {
    let mut from = start(pair);
    for part in pair.clone().into_inner() {
        match part.as_rule() {
            Rule::op_unary => {
                word(p, &part);
                from = end(&part);
            }
            Rule::expr => parenthesized(p, &part, from, end(pair)),
            _ => expr(p, &part),
        }
    }
}

fn parenthesized(p: &mut Printer, inner: &Pair<Rule>, from: usize, to: usize) {
    let open = p.find(from, start(inner), "(").unwrap_or(from);
    let close = p.find(end(inner), to, ")").unwrap_or(end(inner));
    p.open_paren("(", open);
    p.soft_none(open + 1, start(inner));
    expr(p, inner);
    p.soft_none(end(inner), close);
    p.close_paren(")", close);
}

/// `min(a, b)`: no trailing comma, which the grammar does not allow here.
fn function_call(p: &mut Printer, pair: &Pair<Rule>) {
    let parts: Vec<Pair<Rule>> = pair.clone().into_inner().collect();
    let Some((name, arguments)) = parts.split_first() else {
        return;
    };
    word(p, name);
    let open = p.find(end(name), end(pair), "(").unwrap_or(end(name));
    let close = end(pair).saturating_sub(1);
    list(p, ("(", open), arguments, (")", close), false, expr);
}
