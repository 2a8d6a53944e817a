use super::MAX_NESTING;
use super::ast::*;
use super::errors::syntax_error;
use crate::diagnostics::{Code, Diagnostic, Label};
use crate::span::Span;
use pest::Parser as _;
use pest::iterators::Pair;
use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

#[derive(pest_derive::Parser)]
#[grammar = "../../grammar/cnn.pest"]
pub(super) struct CnnParser;

/// Parses a whole file. A syntax error stops the parse: it is the one diagnostic.
pub fn parse(source: &str) -> std::result::Result<File, Vec<Diagnostic>> {
    let mut pairs = match pest_parse(source, false) {
        Ok(pairs) => pairs,
        // The same input fails the same way, now with what was expected where.
        Err(error) => {
            let error = pest_parse(source, true).err().unwrap_or(error);
            return Err(vec![syntax_error(source, &error)]);
        }
    };
    let file = pairs.next().expect("the file rule always yields one pair");
    let mut converter = Converter {
        depth: 0,
        block_names: block_names(file.clone()),
    };
    converter.file(file).map_err(|d| vec![d])
}

type Result<T> = std::result::Result<T, Diagnostic>;

/// pest's parse, with or without the detail of its errors (every token it tried at
/// the furthest position, for the diagnostic's "expected ..."). Collecting it doubles
/// a parse's time (LeNet-5's file 72 -> 155 us), so only a failed parse is repeated
/// with it. It is a process-wide switch that a parse reads as it starts: parses on
/// other threads wait.
pub(super) fn pest_parse(
    source: &str,
    error_detail: bool,
) -> std::result::Result<pest::iterators::Pairs<'_, Rule>, pest::error::Error<Rule>> {
    static SWITCH: Mutex<()> = Mutex::new(());
    let _switched = SWITCH.lock().unwrap_or_else(PoisonError::into_inner);
    pest::set_error_detail(error_detail);
    CnnParser::parse(Rule::file, source)
}

/// Walks pest's tree; counts nesting so that no input can exhaust the stack later.
struct Converter {
    depth: usize,
    /// Every block the file defines, to read `relu dropout(0.5)` as two layers.
    block_names: HashSet<String>,
}

fn block_names(file: Pair<Rule>) -> HashSet<String> {
    file.into_inner()
        .filter(|item| item.as_rule() == Rule::block_def)
        .filter_map(|block| block.into_inner().find(|p| p.as_rule() == Rule::ident))
        .map(|name| name.as_str().to_string())
        .collect()
}

fn span(pair: &Pair<Rule>) -> Span {
    pair.as_span().into()
}

fn ident(pair: Pair<Rule>) -> Ident {
    Ident {
        name: pair.as_str().to_string(),
        span: span(&pair),
    }
}

/// Takes the leading identifier of a construct if the grammar found one.
fn optional_ident<'a>(
    pairs: &mut std::iter::Peekable<pest::iterators::Pairs<'a, Rule>>,
) -> Option<Ident> {
    pairs.next_if(|p| p.as_rule() == Rule::ident).map(ident)
}

impl Converter {
    fn enter(&mut self, at: Span) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(Diagnostic::error(
                Code::Syntax,
                format!("nesting deeper than {MAX_NESTING} levels"),
                Label::new(at, "nested too deeply here"),
            )
            .with_help("split the network into blocks, or simplify the expression"));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn file(&mut self, pair: Pair<Rule>) -> Result<File> {
        let mut items = Vec::new();
        for item in pair.into_inner() {
            match item.as_rule() {
                Rule::network => items.push(Item::Network(self.network(item)?)),
                Rule::block_def => items.push(Item::Block(self.block_def(item)?)),
                _ => {}
            }
        }
        Ok(File { items })
    }

    fn network(&mut self, pair: Pair<Rule>) -> Result<Network> {
        let mut inner = pair
            .into_inner()
            .filter(|p| p.as_rule() != Rule::kw_network);
        let name = ident(inner.next().expect("network name"));
        let mut inputs = Vec::new();
        let mut body = None;
        for p in inner {
            match p.as_rule() {
                Rule::input_decl => {
                    let mut parts = p.into_inner();
                    let name = ident(parts.next().expect("input name"));
                    let shape = self.expr(parts.next().expect("input shape"))?;
                    inputs.push(InputDecl { name, shape });
                }
                Rule::body => body = Some(self.body(p)?),
                _ => {}
            }
        }
        Ok(Network {
            name,
            inputs,
            body: body.expect("network body"),
        })
    }

    fn block_def(&mut self, pair: Pair<Rule>) -> Result<BlockDef> {
        let mut inner = pair.into_inner().filter(|p| p.as_rule() != Rule::kw_block);
        let name = ident(inner.next().expect("block name"));
        let mut params = Vec::new();
        let mut body = None;
        for p in inner {
            match p.as_rule() {
                Rule::param => {
                    let mut parts = p.into_inner();
                    let name = ident(parts.next().expect("parameter name"));
                    let default = parts.next().map(|e| self.expr(e)).transpose()?;
                    params.push(Param { name, default });
                }
                Rule::body => body = Some(self.body(p)?),
                _ => {}
            }
        }
        Ok(BlockDef {
            name,
            params,
            body: body.expect("block body"),
        })
    }

    fn body(&mut self, pair: Pair<Rule>) -> Result<Body> {
        let at = span(&pair);
        self.enter(at)?;
        let stmts = pair
            .into_inner()
            .map(|p| self.stmt(p))
            .collect::<Result<Vec<_>>>()?;
        self.leave();
        Ok(Body { stmts, span: at })
    }

    fn stmt(&mut self, pair: Pair<Rule>) -> Result<Stmt> {
        match pair.as_rule() {
            Rule::let_stmt => {
                let mut inner = pair.into_inner().skip(1);
                let name = ident(inner.next().expect("let name"));
                let value = self.expr(inner.next().expect("let value"))?;
                Ok(Stmt::Let { name, value })
            }
            Rule::if_stmt => Ok(Stmt::If(self.if_stmt(pair)?)),
            Rule::chain => {
                let mut steps = Vec::new();
                for p in pair.into_inner() {
                    let step = self.step(p)?;
                    steps.extend(self.split_misread_name(step));
                }
                Ok(Stmt::Chain(steps))
            }
            rule => unreachable!("statement rule {rule:?}"),
        }
    }

    /// `bn conv(64, 3x3)` parses as a `bn` named `conv`; after a built-in op, a name
    /// that is another op or a block starts a new layer instead. A layer may still be
    /// named after its own op, and a block call anything, as torchvision names them:
    /// `bn bn(eps=0.001)`, `BasicConv2d conv(128, 1x1)`.
    fn split_misread_name(&self, step: Step) -> Vec<Step> {
        let is_op_or_block =
            |name: &str| crate::ops::find(name).is_some() || self.block_names.contains(name);
        match step {
            Step::Call(mut call)
                if crate::ops::find(&call.op.name).is_some()
                    && call
                        .name
                        .as_ref()
                        .is_some_and(|n| n.name != call.op.name && is_op_or_block(&n.name)) =>
            {
                let op = call.name.take().expect("checked above");
                let args = std::mem::take(&mut call.args);
                let second = Call {
                    span: op.span.to(call.span),
                    op,
                    name: None,
                    args,
                };
                call.span = call.op.span;
                vec![Step::Call(call), Step::Call(second)]
            }
            step => vec![step],
        }
    }

    fn if_stmt(&mut self, pair: Pair<Rule>) -> Result<IfStmt> {
        let at = span(&pair);
        self.enter(at)?;
        let mut inner = pair
            .into_inner()
            .filter(|p| !matches!(p.as_rule(), Rule::kw_if | Rule::kw_else));
        let cond = self.expr(inner.next().expect("if condition"))?;
        let then = self.body(inner.next().expect("if body"))?;
        let otherwise = match inner.next() {
            Some(p) if p.as_rule() == Rule::if_stmt => Some(Else::If(Box::new(self.if_stmt(p)?))),
            Some(p) => Some(Else::Body(self.body(p)?)),
            None => None,
        };
        self.leave();
        Ok(IfStmt {
            cond,
            then,
            otherwise,
        })
    }

    fn step(&mut self, pair: Pair<Rule>) -> Result<Step> {
        let at = span(&pair);
        let rule = pair.as_rule();
        let mut inner = pair.into_inner().peekable();
        let keyword = inner
            .next_if(|p| p.as_rule().is_keyword())
            .map(|p| span(&p));
        let keyword = keyword.unwrap_or(at);
        Ok(match rule {
            Rule::call => {
                let op = ident(inner.next().expect("op name"));
                let name = optional_ident(&mut inner);
                let args = inner.next().map(|a| self.args(a)).transpose()?;
                Step::Call(Call {
                    op,
                    name,
                    args: args.unwrap_or_default(),
                    span: at,
                })
            }
            Rule::concat => {
                let name = optional_ident(&mut inner);
                let branches = inner.next().expect("branches").into_inner();
                let branches = branches
                    .map(|b| {
                        let mut parts = b.into_inner().peekable();
                        let keyword = span(&parts.next().expect("branch keyword"));
                        let name = optional_ident(&mut parts);
                        let body = self.body(parts.next().expect("branch body"))?;
                        Ok(Branch {
                            name,
                            body,
                            keyword,
                        })
                    })
                    .collect::<Result<_>>()?;
                Step::Concat(Concat {
                    name,
                    branches,
                    span: at,
                    keyword,
                })
            }
            Rule::residual => {
                let name = optional_ident(&mut inner);
                let args = match inner.next_if(|p| p.as_rule() == Rule::args) {
                    Some(a) => self.args(a)?,
                    None => Vec::new(),
                };
                let body = self.body(inner.next().expect("residual body"))?;
                let shortcut = inner
                    .next()
                    .map(|s| {
                        let mut parts = s.into_inner().peekable();
                        let keyword = span(&parts.next().expect("shortcut keyword"));
                        let name = optional_ident(&mut parts);
                        let body = self.body(parts.next().expect("shortcut body"))?;
                        Ok(Shortcut {
                            name,
                            body,
                            keyword,
                        })
                    })
                    .transpose()?;
                Step::Residual(Residual {
                    name,
                    args,
                    body,
                    shortcut,
                    keyword,
                })
            }
            Rule::repeat => {
                let mut parts: Vec<Pair<Rule>> = inner.collect();
                let body = self.body(parts.pop().expect("repeat body"))?;
                let index = match parts.len() {
                    n if n >= 2 && parts[n - 2].as_rule() == Rule::kw_as => {
                        let index = ident(parts.pop().expect("index"));
                        parts.pop();
                        Some(index)
                    }
                    _ => None,
                };
                let count = self.expr(parts.pop().expect("repeat count"))?;
                let name = parts.pop().map(ident);
                Step::Repeat(Repeat {
                    name,
                    count,
                    index,
                    body,
                    keyword,
                })
            }
            Rule::side => {
                let name = optional_ident(&mut inner);
                let body = self.body(inner.next().expect("side body"))?;
                Step::Side(Side {
                    name,
                    body,
                    keyword,
                })
            }
            Rule::from_step => Step::From(ident(inner.next().expect("tensor name"))),
            Rule::bind_step => Step::Bind(ident(inner.next().expect("tensor name"))),
            rule => unreachable!("step rule {rule:?}"),
        })
    }

    fn args(&mut self, pair: Pair<Rule>) -> Result<Vec<Arg>> {
        pair.into_inner()
            .map(|a| {
                let at = span(&a);
                match a.as_rule() {
                    Rule::kwarg => {
                        let mut parts = a.into_inner();
                        let name = ident(parts.next().expect("argument name"));
                        let value = self.expr(parts.next().expect("argument value"))?;
                        Ok(Arg {
                            name: Some(name),
                            value,
                            span: at,
                        })
                    }
                    _ => Ok(Arg {
                        name: None,
                        value: self.expr(a)?,
                        span: at,
                    }),
                }
            })
            .collect()
    }

    /// Only the top expression rule counts as a level of nesting: the precedence rules
    /// below it are one level of the user's writing.
    fn expr(&mut self, pair: Pair<Rule>) -> Result<Expr> {
        if pair.as_rule() != Rule::expr {
            return self.expr_inner(pair);
        }
        self.enter(span(&pair))?;
        let expr = self.expr_inner(pair);
        self.leave();
        expr
    }

    fn expr_inner(&mut self, pair: Pair<Rule>) -> Result<Expr> {
        let at = span(&pair);
        let rule = pair.as_rule();
        let kind = match rule {
            Rule::expr => {
                let mut inner = pair.into_inner();
                let cond = self.expr(inner.next().expect("condition"))?;
                match (inner.next(), inner.next()) {
                    (Some(a), Some(b)) => ExprKind::Ternary(
                        Box::new(cond),
                        Box::new(self.expr(a)?),
                        Box::new(self.expr(b)?),
                    ),
                    _ => return Ok(cond),
                }
            }
            Rule::or_expr
            | Rule::and_expr
            | Rule::cmp_expr
            | Rule::dims_expr
            | Rule::sum_expr
            | Rule::prod_expr => return self.binary_chain(pair),
            Rule::unary_expr => {
                let mut parts: Vec<Pair<Rule>> = pair.into_inner().collect();
                let mut expr = self.expr(parts.pop().expect("operand"))?;
                // Prefix operators apply innermost first: `-!x` is `-(!x)`.
                while let Some(op) = parts.pop() {
                    let op = if op.as_str() == "-" {
                        UnaryOp::Neg
                    } else {
                        UnaryOp::Not
                    };
                    expr = Expr {
                        span: at,
                        kind: ExprKind::Unary(op, Box::new(expr)),
                    };
                }
                return Ok(expr);
            }
            Rule::number => number(pair.as_str(), at)?,
            Rule::dims_lit => ExprKind::Dims(
                pair.as_str()
                    .split('x')
                    .map(|d| int(d, at))
                    .collect::<Result<_>>()?,
            ),
            Rule::boolean => ExprKind::Bool(pair.as_str() == "true"),
            Rule::ident => ExprKind::Name(pair.as_str().to_string()),
            Rule::list => ExprKind::List(
                pair.into_inner()
                    .map(|e| self.expr(e))
                    .collect::<Result<_>>()?,
            ),
            Rule::func_call => {
                let mut inner = pair.into_inner();
                let name = ident(inner.next().expect("function name"));
                let args = inner.map(|e| self.expr(e)).collect::<Result<_>>()?;
                ExprKind::Call(name, args)
            }
            rule => unreachable!("expression rule {rule:?}"),
        };
        Ok(Expr { kind, span: at })
    }

    /// `a op b op c` as a left-associative tree.
    fn binary_chain(&mut self, pair: Pair<Rule>) -> Result<Expr> {
        let mut inner = pair.into_inner();
        let mut left = self.expr(inner.next().expect("operand"))?;
        while let (Some(op), Some(right)) = (inner.next(), inner.next()) {
            let right = self.expr(right)?;
            let span = left.span.to(right.span);
            left = Expr {
                kind: ExprKind::Binary(binary_op(op.as_str()), Box::new(left), Box::new(right)),
                span,
            };
        }
        Ok(left)
    }
}

fn binary_op(symbol: &str) -> BinaryOp {
    match symbol {
        "||" => BinaryOp::Or,
        "&&" => BinaryOp::And,
        "==" => BinaryOp::Eq,
        "!=" => BinaryOp::Ne,
        "<" => BinaryOp::Lt,
        "<=" => BinaryOp::Le,
        ">" => BinaryOp::Gt,
        ">=" => BinaryOp::Ge,
        "x" => BinaryOp::Dims,
        "+" => BinaryOp::Add,
        "-" => BinaryOp::Sub,
        "*" => BinaryOp::Mul,
        "/" => BinaryOp::Div,
        "%" => BinaryOp::Rem,
        other => unreachable!("operator {other}"),
    }
}

fn int(text: &str, at: Span) -> Result<i64> {
    text.parse().map_err(|_| {
        Diagnostic::error(
            Code::Arithmetic,
            format!("the number {text} is too large"),
            Label::new(at, "does not fit in a 64-bit integer"),
        )
        .with_help(format!("integers range up to {}", i64::MAX))
    })
}

fn number(text: &str, at: Span) -> Result<ExprKind> {
    if text.contains(['.', 'e', 'E']) {
        match text.parse::<f64>() {
            Ok(value) if value.is_finite() => Ok(ExprKind::Float(value)),
            _ => Err(Diagnostic::error(
                Code::Arithmetic,
                format!("the number {text} is too large"),
                Label::new(at, "not a finite number"),
            )),
        }
    } else {
        int(text, at).map(ExprKind::Int)
    }
}

impl Rule {
    fn is_keyword(self) -> bool {
        matches!(
            self,
            Rule::kw_concat
                | Rule::kw_residual
                | Rule::kw_repeat
                | Rule::kw_side
                | Rule::kw_from
                | Rule::kw_branch
                | Rule::kw_shortcut
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_error(source: &str) -> String {
        parse(source).expect_err("a syntax error")[0]
            .message
            .clone()
    }

    #[test]
    fn errors_read_like_english() {
        assert_eq!(
            first_error("network N(input: 8) { dense(4 }"),
            "expected `)` or `,`, found `}`"
        );
        assert_eq!(
            first_error("network N(input: 8) {\n  3x3\n}"),
            "expected a layer, `->` or `}`, found `3x3`"
        );
        assert_eq!(
            first_error("netwrk N(input: 8) {}"),
            "expected `network` or `block`, found `netwrk`"
        );
    }

    #[test]
    fn operators_bind_as_written() {
        let file = parse("network N(input: 8) { let a = 1 + 2 * 3 x 4 == 5 || !b ? 6 : 7 }")
            .expect("parses");
        let Item::Network(n) = &file.items[0] else {
            panic!("a network")
        };
        let Stmt::Let { value, .. } = &n.body.stmts[0] else {
            panic!("a let")
        };
        assert_eq!(
            super::super::print::expr(value),
            "(((((1 + (2 * 3)) x 4) == 5) || !b) ? 6 : 7)"
        );
    }

    #[test]
    fn repeat_names_and_counts_are_told_apart() {
        for (source, name, count) in [
            ("repeat n { relu }", None, "n"),
            ("repeat layer1 3 as i { relu }", Some("layer1"), "3"),
            ("repeat n - 1 { relu }", None, "(n - 1)"),
            ("repeat n as i { relu }", None, "n"),
        ] {
            let file = parse(&format!("network N(input: 8) {{ {source} }}")).expect("parses");
            let Item::Network(net) = &file.items[0] else {
                panic!("a network")
            };
            let Stmt::Chain(steps) = &net.body.stmts[0] else {
                panic!("a chain")
            };
            let Step::Repeat(r) = &steps[0] else {
                panic!("a repeat")
            };
            assert_eq!(r.name.as_ref().map(|n| n.name.as_str()), name, "{source}");
            assert_eq!(super::super::print::expr(&r.count), count, "{source}");
        }
    }

    #[test]
    fn a_line_comment_ends_at_any_line_break() {
        // Tabs, control and non-ASCII characters are comment text; `\n`, `\r\n` and a
        // lone `\r` end it, and the statement after it is read.
        for source in [
            "network N(input: 8) { // a\tb \u{1} é ⊗\n dense(4) }",
            "network N(input: 8) { // a\r\n dense(4) }",
            "network N(input: 8) { // a\r dense(4) }",
            "network N(input: 8) { dense(4) } // to the end, no line break",
        ] {
            let file = parse(source).unwrap_or_else(|e| panic!("{source:?}: {}", e[0].message));
            let Item::Network(net) = &file.items[0] else {
                panic!("a network")
            };
            assert_eq!(net.body.stmts.len(), 1, "{source:?}");
        }
        assert_eq!(
            first_error("network N(input: 8) { // a dense(4) }"),
            "expected a layer, `->` or `}`, found the end of the file"
        );
    }
}
