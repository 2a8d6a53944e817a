//! `--emit ast`: the syntax tree as an indented outline, one node a line, each with
//! its source line, so a person can see how the parser read their file.

use super::ast::*;
use crate::span::line_col;
use std::fmt::Write;

pub fn print_ast(file: &File, source: &str) -> String {
    let mut printer = Printer {
        out: String::new(),
        source,
    };
    for item in &file.items {
        match item {
            Item::Network(n) => {
                let inputs: Vec<String> = n
                    .inputs
                    .iter()
                    .map(|i| format!("{}: {}", i.name.name, expr(&i.shape)))
                    .collect();
                printer.line(
                    0,
                    n.name.span.start,
                    &format!("Network {} ({})", n.name.name, inputs.join(", ")),
                );
                printer.body(1, &n.body);
            }
            Item::Block(b) => {
                let params: Vec<String> = b
                    .params
                    .iter()
                    .map(|p| match &p.default {
                        Some(d) => format!("{}={}", p.name.name, expr(d)),
                        None => p.name.name.clone(),
                    })
                    .collect();
                printer.line(
                    0,
                    b.name.span.start,
                    &format!("Block {} ({})", b.name.name, params.join(", ")),
                );
                printer.body(1, &b.body);
            }
        }
    }
    printer.out
}

struct Printer<'a> {
    out: String,
    source: &'a str,
}

impl Printer<'_> {
    fn line(&mut self, depth: usize, offset: usize, text: &str) {
        let (line, _) = line_col(self.source, offset);
        let _ = writeln!(self.out, "{:>4}  {}{}", line, "  ".repeat(depth), text);
    }

    fn body(&mut self, depth: usize, body: &Body) {
        for stmt in &body.stmts {
            match stmt {
                Stmt::Let { name, value } => self.line(
                    depth,
                    name.span.start,
                    &format!("Let {} = {}", name.name, expr(value)),
                ),
                Stmt::If(i) => self.if_stmt(depth, i),
                Stmt::Chain(steps) => {
                    for step in steps {
                        self.step(depth, step);
                    }
                }
            }
        }
    }

    fn if_stmt(&mut self, depth: usize, i: &IfStmt) {
        self.line(depth, i.cond.span.start, &format!("If {}", expr(&i.cond)));
        self.body(depth + 1, &i.then);
        match &i.otherwise {
            Some(Else::If(next)) => {
                self.line(depth, next.cond.span.start, "Else");
                self.if_stmt(depth + 1, next);
            }
            Some(Else::Body(b)) => {
                self.line(depth, b.span.start, "Else");
                self.body(depth + 1, b);
            }
            None => {}
        }
    }

    fn step(&mut self, depth: usize, step: &Step) {
        match step {
            Step::Call(c) => {
                let name = c
                    .name
                    .as_ref()
                    .map_or(String::new(), |n| format!(" {}", n.name));
                self.line(
                    depth,
                    c.span.start,
                    &format!("Call {}{}{}", c.op.name, name, args(&c.args)),
                );
            }
            Step::Concat(c) => {
                self.line(depth, c.keyword.start, &format!("Concat{}", named(&c.name)));
                for b in &c.branches {
                    self.line(
                        depth + 1,
                        b.keyword.start,
                        &format!("Branch{}", named(&b.name)),
                    );
                    self.body(depth + 2, &b.body);
                }
            }
            Step::Residual(r) => {
                self.line(
                    depth,
                    r.keyword.start,
                    &format!("Residual{}{}", named(&r.name), args(&r.args)),
                );
                self.body(depth + 1, &r.body);
                if let Some(s) = &r.shortcut {
                    self.line(
                        depth,
                        s.keyword.start,
                        &format!("Shortcut{}", named(&s.name)),
                    );
                    self.body(depth + 1, &s.body);
                }
            }
            Step::Repeat(r) => {
                let index = r
                    .index
                    .as_ref()
                    .map_or(String::new(), |i| format!(" as {}", i.name));
                self.line(
                    depth,
                    r.keyword.start,
                    &format!("Repeat{} {}{}", named(&r.name), expr(&r.count), index),
                );
                self.body(depth + 1, &r.body);
            }
            Step::Side(s) => {
                self.line(depth, s.keyword.start, &format!("Side{}", named(&s.name)));
                self.body(depth + 1, &s.body);
            }
            Step::From(t) => self.line(depth, t.span.start, &format!("From {}", t.name)),
            Step::Bind(t) => self.line(depth, t.span.start, &format!("Bind {}", t.name)),
        }
    }
}

fn named(name: &Option<Ident>) -> String {
    name.as_ref()
        .map_or(String::new(), |n| format!(" {}", n.name))
}

fn args(args: &[Arg]) -> String {
    if args.is_empty() {
        return String::new();
    }
    let list: Vec<String> = args
        .iter()
        .map(|a| match &a.name {
            Some(n) => format!("{}={}", n.name, expr(&a.value)),
            None => expr(&a.value),
        })
        .collect();
    format!("({})", list.join(", "))
}

/// An expression written back fully parenthesized, so precedence is visible.
pub fn expr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Int(v) => v.to_string(),
        ExprKind::Float(v) => format!("{v:?}"),
        ExprKind::Bool(v) => v.to_string(),
        ExprKind::Dims(d) => d.iter().map(i64::to_string).collect::<Vec<_>>().join("x"),
        ExprKind::List(items) => format!(
            "[{}]",
            items.iter().map(expr).collect::<Vec<_>>().join(", ")
        ),
        ExprKind::Name(n) => n.clone(),
        ExprKind::Call(f, a) => format!(
            "{}({})",
            f.name,
            a.iter().map(expr).collect::<Vec<_>>().join(", ")
        ),
        ExprKind::Unary(UnaryOp::Neg, x) => format!("-{}", expr(x)),
        ExprKind::Unary(UnaryOp::Not, x) => format!("!{}", expr(x)),
        ExprKind::Binary(op, a, b) => format!("({} {} {})", expr(a), op.symbol(), expr(b)),
        ExprKind::Ternary(c, a, b) => format!("({} ? {} : {})", expr(c), expr(a), expr(b)),
    }
}
