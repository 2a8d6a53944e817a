//! The abstract syntax tree: what the text says, with the span of every node.

use crate::span::Span;

#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Network(Network),
    Block(BlockDef),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub name: Ident,
    pub inputs: Vec<InputDecl>,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InputDecl {
    pub name: Ident,
    pub shape: Expr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BlockDef {
    pub name: Ident,
    pub params: Vec<Param>,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: Ident,
    pub default: Option<Expr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    pub stmts: Vec<Stmt>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    Let { name: Ident, value: Expr },
    If(IfStmt),
    Chain(Vec<Step>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct IfStmt {
    pub cond: Expr,
    pub then: Body,
    pub otherwise: Option<Else>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Else {
    If(Box<IfStmt>),
    Body(Body),
}

/// One step of a chain: each applies to the tensor the previous one produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Call(Call),
    Concat(Concat),
    Residual(Residual),
    Repeat(Repeat),
    Side(Side),
    From(Ident),
    Bind(Ident),
}

/// A layer or block call: `conv c1(6, 5x5)`, `relu`, `Inception(64, 96, 128, 16, 32, 32)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub op: Ident,
    pub name: Option<Ident>,
    pub args: Vec<Arg>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Concat {
    pub name: Option<Ident>,
    pub branches: Vec<Branch>,
    pub span: Span,
    pub keyword: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    pub name: Option<Ident>,
    pub body: Body,
    pub keyword: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Residual {
    pub name: Option<Ident>,
    pub args: Vec<Arg>,
    pub body: Body,
    pub shortcut: Option<Shortcut>,
    pub keyword: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Shortcut {
    pub name: Option<Ident>,
    pub body: Body,
    pub keyword: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Repeat {
    pub name: Option<Ident>,
    pub count: Expr,
    pub index: Option<Ident>,
    pub body: Body,
    pub keyword: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Side {
    pub name: Option<Ident>,
    pub body: Body,
    pub keyword: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    Dims(Vec<i64>),
    List(Vec<Expr>),
    Name(String),
    Call(Ident, Vec<Expr>),
    Unary(UnaryOp, Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    Ternary(Box<Expr>, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    Neg,
    Not,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Dims,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "||",
            BinaryOp::And => "&&",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Dims => "x",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
        }
    }
}
