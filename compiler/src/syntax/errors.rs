//! pest's errors in words a person uses: "expected a layer, found `)`".

use super::parser::Rule;
use crate::diagnostics::{Code, Diagnostic, Label};
use crate::span::Span;
use pest::error::{ErrorVariant, InputLocation};
use std::collections::BTreeSet;

pub(super) fn syntax_error(source: &str, error: &pest::error::Error<Rule>) -> Diagnostic {
    let offset = match error.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((start, _)) => start,
    };
    let offset = offset.min(source.len());
    let (found, found_len) = describe_found(&source[offset..]);
    let expected = expected_phrases(error);
    let message = if expected.is_empty() {
        format!("unexpected {found}")
    } else {
        format!("expected {}, found {found}", join_or(&expected))
    };
    let label = if expected.is_empty() {
        "not expected here".to_string()
    } else {
        format!("expected {} here", join_or(&expected))
    };
    // At the end of the file there is nothing to underline: point at its last
    // character instead, so the report still shows where the text stops.
    let trimmed_end = source.trim_end().len();
    let span = if offset >= trimmed_end && trimmed_end > 0 {
        let last = source[..trimmed_end]
            .chars()
            .next_back()
            .map_or(1, char::len_utf8);
        Span::new(trimmed_end - last, trimmed_end)
    } else {
        Span::new(offset, offset + found_len)
    };
    let label = if offset >= trimmed_end && trimmed_end > 0 {
        format!("the file ends here; {label}")
    } else {
        label
    };
    let mut diagnostic = Diagnostic::error(Code::Syntax, message, Label::new(span, label));
    if let Some(help) = help_for(&expected, &source[offset..]) {
        diagnostic = diagnostic.with_help(help);
    }
    diagnostic
}

/// What sits at the error position: the next token, or the end of the line or file.
fn describe_found(rest: &str) -> (String, usize) {
    let Some(first) = rest.chars().next() else {
        return ("the end of the file".into(), 0);
    };
    if first == '\n' || first == '\r' {
        return ("the end of the line".into(), 0);
    }
    let token_len = if first.is_alphanumeric() || first == '_' {
        rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(rest.len())
    } else {
        first.len_utf8()
    };
    (format!("`{}`", &rest[..token_len]), token_len)
}

fn expected_phrases(error: &pest::error::Error<Rule>) -> Vec<String> {
    let mut phrases = BTreeSet::new();
    if let ErrorVariant::ParsingError { positives, .. } = &error.variant {
        phrases.extend(positives.iter().filter_map(|r| rule_phrase(*r)));
    }
    if let Some(attempts) = error.parse_attempts() {
        for token in attempts.expected_tokens() {
            // The token type is not exported; its text is all this needs.
            if let Some(phrase) = token_phrase(&token.to_string()) {
                phrases.insert(phrase);
            }
        }
    }
    // After a complete value, operators could always continue it; naming them only
    // hides what is really missing.
    if phrases.len() > 1 {
        phrases.retain(|p| p != "an operator" && p != "`?`");
    }
    let mut phrases: Vec<String> = phrases.into_iter().collect();
    // Broad phrases first: "a layer" reads better before "`}`".
    phrases.sort_by_key(|p| (p.starts_with('`'), p.clone()));
    phrases
}

fn rule_phrase(rule: Rule) -> Option<String> {
    let phrase = match rule {
        Rule::file | Rule::network | Rule::block_def | Rule::kw_network | Rule::kw_block => {
            "`network` or `block`"
        }
        Rule::ident => "a name",
        Rule::op_name | Rule::call | Rule::chain => "a layer",
        Rule::expr
        | Rule::or_expr
        | Rule::and_expr
        | Rule::cmp_expr
        | Rule::dims_expr
        | Rule::sum_expr
        | Rule::prod_expr
        | Rule::unary_expr
        | Rule::number
        | Rule::dims_lit
        | Rule::boolean
        | Rule::list
        | Rule::func_call => "a value",
        Rule::input_decl => "an input such as `input: 3x224x224`",
        Rule::param => "a parameter name",
        Rule::kwarg => "an argument",
        Rule::body | Rule::branches => "`{`",
        Rule::args => "`(`",
        Rule::branch | Rule::kw_branch => "`branch`",
        Rule::shortcut | Rule::kw_shortcut => "`shortcut`",
        Rule::kw_else => "`else`",
        Rule::kw_as => "`as`",
        Rule::op_or
        | Rule::op_and
        | Rule::op_cmp
        | Rule::op_sum
        | Rule::op_prod
        | Rule::op_dims => "an operator",
        Rule::EOI => "the end of the file",
        _ => return None,
    };
    Some(phrase.to_string())
}

fn token_phrase(token: &str) -> Option<String> {
    match token {
        // Layout, comments and operators the rule phrases already cover.
        " " | "\t" | "\u{FEFF}" | "\n" | "\r\n" | "\r" | "//" | "/*" | ";" => None,
        "||" | "&&" | "==" | "!=" | "<=" | ">=" | "<" | ">" | "+" | "-" | "*" | "/" | "%" | "!"
        | "x" => None,
        "{" | "}" | "(" | ")" | "[" | "]" | "," | ":" | "=" | "->" | "?" => {
            Some(format!("`{token}`"))
        }
        _ => None,
    }
}

fn join_or(phrases: &[String]) -> String {
    match phrases {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn help_for(expected: &[String], rest: &str) -> Option<String> {
    let at_line_end = rest.starts_with('\n') || rest.starts_with('\r') || rest.is_empty();
    if expected.iter().any(|p| p == "`)`") && at_line_end {
        return Some("an argument list must be closed with `)`".into());
    }
    if expected.iter().any(|p| p == "`}`") && rest.is_empty() {
        return Some("a `{` is never closed: add the matching `}`".into());
    }
    if rest.starts_with(['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
        && expected.iter().any(|p| p == "a layer")
    {
        return Some("a layer starts with its operation, e.g. `conv(64, 3x3)`".into());
    }
    None
}
