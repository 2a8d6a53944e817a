//! AST → graph IR: blocks expanded, `repeat`s unrolled, arguments evaluated and bound,
//! every layer given its hierarchical name. Shapes are not known here; the checker
//! computes them from the graph.

mod bind;
mod eval;
mod frames;
mod names;

use crate::diagnostics::{Code, Diagnostic, Label, did_you_mean};
use crate::graph::{CallSite, Graph, Node, NodeId, Origin, SideOutput};
use crate::ops::args::MAX_SIZE;
use crate::ops::{self, Add, Args, Input, Op, Operands, Shape, Value};
use crate::span::Span;
use crate::syntax::ast::*;
use bind::{Words, bind};
use eval::{condition, eval, quoted_list};
use frames::Frames;
use names::Scope;
use std::collections::{HashMap, HashSet};

/// Beyond this, a network is refused rather than expanded: the largest example
/// (Inception-ResNet-v2) has under a thousand layers, and elaborating a million took
/// seconds (43 s under the fuzzer's AddressSanitizer).
pub const MAX_NODES: usize = 100_000;
/// How deeply block calls may nest.
pub const MAX_CALL_DEPTH: usize = 64;

pub struct Elaborated {
    /// Each network's graph, and whether it elaborated without error.
    pub graphs: Vec<(Graph, bool)>,
    pub diagnostics: Vec<Diagnostic>,
}

pub fn elaborate(file: &File) -> Elaborated {
    let mut elaborator = Elaborator::new(file);
    let mut graphs = Vec::new();
    let networks: Vec<&Network> = file
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Network(n) => Some(n),
            Item::Block(_) => None,
        })
        .collect();
    for network in &networks {
        let errors_before = elaborator.error_count();
        let graph = elaborator.network(network);
        graphs.push((graph, elaborator.error_count() == errors_before));
    }
    if networks.is_empty() {
        let at = file
            .items
            .first()
            .map_or(Span::new(0, 0), |item| match item {
                Item::Network(n) => n.name.span,
                Item::Block(b) => b.name.span,
            });
        elaborator.diagnostics.push(
            Diagnostic::error(
                Code::NoNetwork,
                "this file defines no network",
                Label::new(at, "no `network` in this file"),
            )
            .with_help("add one: `network Name(input: 3x224x224) { ... }`; blocks are checked where a network uses them"),
        );
    }
    elaborator.report_unused_blocks(file);
    Elaborated {
        graphs,
        diagnostics: elaborator.diagnostics,
    }
}

/// The tensor a chain is at; `None` once an error made it unknowable.
type Cur = Option<NodeId>;

struct Elaborator<'a> {
    blocks: HashMap<&'a str, &'a BlockDef>,
    used_blocks: HashSet<&'a str>,
    diagnostics: Vec<Diagnostic>,
    frames: Frames,
    // The network being elaborated:
    nodes: Vec<Node>,
    side_outputs: Vec<SideOutput>,
    call_sites: Vec<CallSite>,
    side: Option<usize>,
    too_large: bool,
}

impl<'a> Elaborator<'a> {
    fn new(file: &'a File) -> Self {
        let mut elaborator = Elaborator {
            blocks: HashMap::new(),
            used_blocks: HashSet::new(),
            diagnostics: Vec::new(),
            frames: Frames::default(),
            nodes: Vec::new(),
            side_outputs: Vec::new(),
            call_sites: Vec::new(),
            side: None,
            too_large: false,
        };
        elaborator.collect_definitions(file);
        elaborator
    }

    fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    fn collect_definitions(&mut self, file: &'a File) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for item in &file.items {
            let (name, kind) = match item {
                Item::Network(n) => (&n.name, "network"),
                Item::Block(b) => (&b.name, "block"),
            };
            if let Some(&earlier) = seen.get(name.name.as_str()) {
                self.diagnostics.push(
                    Diagnostic::error(
                        Code::DuplicateDefinition,
                        format!("`{}` is defined twice", name.name),
                        Label::new(name.span, format!("this {kind} reuses the name")),
                    )
                    .with_label(Label::new(earlier, "first defined here"))
                    .with_help("networks and blocks share one namespace: rename one of them"),
                );
                continue;
            }
            seen.insert(&name.name, name.span);
            if let Item::Block(block) = item {
                if ops::find(&block.name.name).is_some() {
                    self.diagnostics.push(
                        Diagnostic::error(
                            Code::DuplicateDefinition,
                            format!("block `{}` has the name of a built-in op", block.name.name),
                            Label::new(block.name.span, "shadows the built-in op"),
                        )
                        .with_help("choose another name; blocks are conventionally capitalized"),
                    );
                    continue;
                }
                self.check_params(block);
                self.blocks.insert(&block.name.name, block);
            }
        }
    }

    fn check_params(&mut self, block: &BlockDef) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for param in &block.params {
            if let Some(&earlier) = seen.get(param.name.name.as_str()) {
                self.diagnostics.push(
                    Diagnostic::error(
                        Code::DuplicateParameter,
                        format!(
                            "parameter `{}` of block `{}` is declared twice",
                            param.name.name, block.name.name
                        ),
                        Label::new(param.name.span, "declared again"),
                    )
                    .with_label(Label::new(earlier, "first declared here")),
                );
            }
            seen.insert(&param.name.name, param.name.span);
        }
    }

    fn report_unused_blocks(&mut self, file: &File) {
        for item in &file.items {
            if let Item::Block(block) = item
                && !self.used_blocks.contains(block.name.name.as_str())
                && self.blocks.contains_key(block.name.name.as_str())
            {
                self.diagnostics.push(
                    Diagnostic::warning(
                        Code::UnusedBlock,
                        format!("block `{}` is never used", block.name.name),
                        Label::new(block.name.span, "defined here, called by no network"),
                    )
                    .with_help("call it from a network, or remove it"),
                );
            }
        }
    }

    fn network(&mut self, network: &Network) -> Graph {
        self.nodes.clear();
        self.side_outputs.clear();
        self.call_sites.clear();
        self.side = None;
        self.too_large = false;
        let mut scope = Scope::root();
        self.frames.push(true);
        let mut inputs = Vec::new();
        for decl in &network.inputs {
            let name = scope.explicit(&decl.name, &mut self.diagnostics);
            let node = self.input_shape(decl).map(|shape| {
                self.add_node(
                    name,
                    Op::Input(Input { shape }),
                    Vec::new(),
                    Origin {
                        span: decl.name.span.to(decl.shape.span),
                        ..Origin::default()
                    },
                )
            });
            if let Some(id) = node {
                inputs.push(id);
            }
            self.frames
                .bind_tensor(&decl.name.name, node, decl.name.span);
        }
        // The body starts from the first input; reading it implicitly counts as a use.
        let start = network
            .inputs
            .first()
            .and_then(|decl| self.frames.use_tensor(&decl.name.name).ok().flatten());
        let output = self.body(&network.body, start, &mut scope);
        for (name, span) in self.frames.pop() {
            self.diagnostics.push(
                Diagnostic::warning(
                    Code::UnusedTensor,
                    format!("the input `{name}` is never used"),
                    Label::new(span, "declared here"),
                )
                .with_help("read it with `from`, `concat(...)` or `add(...)`, or remove it"),
            );
        }
        let output = output.or(start).unwrap_or(NodeId(0));
        Graph {
            name: network.name.name.clone(),
            span: network.name.span,
            nodes: std::mem::take(&mut self.nodes),
            inputs,
            output,
            side_outputs: std::mem::take(&mut self.side_outputs),
        }
    }

    fn input_shape(&mut self, decl: &InputDecl) -> Option<Shape> {
        let value = match eval(&decl.shape, &self.frames) {
            Ok(v) => v,
            Err(d) => {
                self.diagnostics.push(d);
                return None;
            }
        };
        let dims = match &value {
            Value::Int(n) => vec![*n],
            Value::Dims(d) if d.len() == 3 => d.clone(),
            _ => {
                self.diagnostics.push(
                    Diagnostic::error(
                        Code::ArgumentType,
                        format!("input `{}` must be CxHxW or a number of features, found `{value}`", decl.name.name),
                        Label::new(decl.shape.span, "expected a shape such as `3x224x224`"),
                    )
                    .with_help("shapes are per sample, channels first; the batch size is chosen at run time"),
                );
                return None;
            }
        };
        if let Some(&bad) = dims.iter().find(|&&d| !(1..=MAX_SIZE).contains(&d)) {
            let code = if bad == 0 {
                Code::EmptyOutput
            } else {
                Code::ArgumentValue
            };
            self.diagnostics.push(Diagnostic::error(
                code,
                format!("input `{}` has size {bad} in one dimension", decl.name.name),
                Label::new(
                    decl.shape.span,
                    format!("every size must be between 1 and {MAX_SIZE}"),
                ),
            ));
            return None;
        }
        Some(Shape(dims.into_iter().map(|d| d as u64).collect()))
    }

    fn add_node(&mut self, name: String, op: Op, inputs: Vec<NodeId>, origin: Origin) -> NodeId {
        let id = NodeId(self.nodes.len());
        self.nodes.push(Node {
            id,
            name,
            op,
            inputs,
            origin: Origin {
                call_sites: self.call_sites.clone(),
                ..origin
            },
            side: self.side,
        });
        id
    }

    /// Counts nodes against [`MAX_NODES`]; reports once when the network grows past it.
    fn within_budget(&mut self, at: Span) -> bool {
        if self.nodes.len() < MAX_NODES {
            return true;
        }
        if !self.too_large {
            self.too_large = true;
            self.diagnostics.push(
                Diagnostic::error(
                    Code::TooLarge,
                    format!("the network has more than {MAX_NODES} layers"),
                    Label::new(at, "the limit is reached here"),
                )
                .with_help("check the `repeat` counts: no real network is this large"),
            );
        }
        false
    }

    fn body(&mut self, body: &Body, mut cur: Cur, scope: &mut Scope) -> Cur {
        self.frames.push(false);
        for stmt in &body.stmts {
            if self.too_large {
                break;
            }
            cur = self.stmt(stmt, cur, scope);
        }
        for (name, span) in self.frames.pop() {
            self.diagnostics.push(
                Diagnostic::warning(
                    Code::UnusedTensor,
                    format!("the tensor name `{name}` is never used"),
                    Label::new(span, "named here"),
                )
                .with_help("use it with `from`, `concat(...)` or `add(...)`, or remove the `->`"),
            );
        }
        cur
    }

    fn stmt(&mut self, stmt: &Stmt, mut cur: Cur, scope: &mut Scope) -> Cur {
        match stmt {
            Stmt::Let { name, value } => {
                match eval(value, &self.frames) {
                    Ok(v) => self.frames.set_value(&name.name, v),
                    Err(d) => self.diagnostics.push(d),
                }
                cur
            }
            Stmt::If(if_stmt) => self.if_stmt(if_stmt, cur, scope),
            Stmt::Chain(steps) => {
                for step in steps {
                    cur = self.step(step, cur, scope);
                }
                cur
            }
        }
    }

    fn if_stmt(&mut self, if_stmt: &IfStmt, cur: Cur, scope: &mut Scope) -> Cur {
        match condition(&if_stmt.cond, &self.frames) {
            Ok(true) => self.body(&if_stmt.then, cur, scope),
            Ok(false) => match &if_stmt.otherwise {
                Some(Else::If(next)) => self.if_stmt(next, cur, scope),
                Some(Else::Body(body)) => self.body(body, cur, scope),
                None => cur,
            },
            Err(d) => {
                self.diagnostics.push(d);
                None
            }
        }
    }

    fn step(&mut self, step: &Step, cur: Cur, scope: &mut Scope) -> Cur {
        match step {
            Step::Call(call) => self.call(call, cur, scope, None),
            Step::Concat(concat) => self.concat(concat, cur, scope),
            Step::Residual(residual) => self.residual(residual, cur, scope),
            Step::Repeat(repeat) => self.repeat(repeat, cur, scope),
            Step::Side(side) => self.side(side, cur, scope),
            Step::From(name) => self.use_tensor(name),
            Step::Bind(name) => {
                self.frames.bind_tensor(&name.name, cur, name.span);
                cur
            }
        }
    }

    fn use_tensor(&mut self, name: &Ident) -> Cur {
        match self.frames.use_tensor(&name.name) {
            Ok(node) => node,
            Err(in_scope) => {
                let d = Diagnostic::error(
                    Code::UnknownTensor,
                    format!("no tensor named `{}`", name.name),
                    Label::new(name.span, "unknown tensor"),
                );
                let d = match did_you_mean(&name.name, in_scope.iter().map(String::as_str)) {
                    Some(s) => d.with_help(format!("did you mean `{s}`?")),
                    None if in_scope.is_empty() => d.with_help("name a tensor first with `-> name`; names made inside a block or branch are not visible outside it"),
                    None => d.with_help(format!("tensors named here: {}", quoted_list(&in_scope))),
                };
                self.diagnostics.push(d);
                None
            }
        }
    }

    /// A layer or a block call. `instance` is the scope a repeat gives a lone block call.
    fn call(&mut self, call: &Call, cur: Cur, scope: &mut Scope, instance: Option<Scope>) -> Cur {
        if !self.within_budget(call.span) {
            return None;
        }
        if let Some(def) = ops::find(&call.op.name) {
            return self.layer(def, call, cur, scope);
        }
        if let Some(&block) = self.blocks.get(call.op.name.as_str()) {
            return self.block_call(block, call, cur, scope, instance);
        }
        let candidates = ops::OPS
            .iter()
            .map(|d| d.name)
            .chain(self.blocks.keys().copied());
        let d = Diagnostic::error(
            Code::UnknownOp,
            format!("unknown layer or block `{}`", call.op.name),
            Label::new(call.op.span, "not an op or a block of this file"),
        );
        let d = match did_you_mean(&call.op.name, candidates) {
            Some(s) => d.with_help(format!("did you mean `{s}`?")),
            None => d.with_help(
                "the ops are listed in docs/language.md; blocks must be defined in the same file",
            ),
        };
        self.diagnostics.push(d);
        // Claim the name anyway, so later automatic names do not shift.
        scope.name(
            call.name.as_ref(),
            &call.op.name.to_lowercase(),
            call.span,
            &mut self.diagnostics,
        );
        None
    }

    fn layer(&mut self, def: &'static ops::OpDef, call: &Call, cur: Cur, scope: &mut Scope) -> Cur {
        // A duplicate name is reported but does not stop the checking of what follows.
        let name = scope.name(
            call.name.as_ref(),
            def.name,
            call.span,
            &mut self.diagnostics,
        );
        let errors_before = self.error_count();
        let (op, inputs, arg_spans) = match def.operands {
            Operands::Params => {
                let bound = bind(
                    def.name,
                    def.params,
                    &call.args,
                    &self.frames,
                    Words::ToOp,
                    &mut self.diagnostics,
                );
                let arg_spans: Vec<(&'static str, Span)> =
                    bound.iter().map(|b| (b.name, b.span)).collect();
                let failed = bound
                    .iter()
                    .filter(|b| b.value.is_none())
                    .map(|b| b.name)
                    .collect();
                let bound = bound
                    .into_iter()
                    .filter_map(|b| {
                        Some(ops::args::BoundArg {
                            name: b.name,
                            value: b.value?,
                            span: b.span,
                        })
                    })
                    .collect();
                let mut args = Args::new(def.name, call.span, bound);
                args.failed = failed;
                let op = (def.build)(&mut args);
                self.diagnostics.extend(args.diagnostics);
                (op, vec![cur], arg_spans)
            }
            Operands::Tensors => {
                let inputs = self.tensor_operands(def, call, cur);
                (
                    (def.build)(&mut Args::new(def.name, call.span, Vec::new())),
                    inputs,
                    Vec::new(),
                )
            }
        };
        let inputs: Option<Vec<NodeId>> = inputs.into_iter().collect();
        let inputs = inputs?;
        if self.error_count() > errors_before {
            return None;
        }
        Some(self.add_node(
            name,
            op,
            inputs,
            Origin {
                span: call.span,
                args: arg_spans,
                call_sites: Vec::new(),
            },
        ))
    }

    /// `concat(a, b)`, `add(a, b)`: the operands are tensor names; with none, the op
    /// has nothing to join.
    fn tensor_operands(&mut self, def: &ops::OpDef, call: &Call, cur: Cur) -> Vec<Cur> {
        if call.args.is_empty() {
            self.diagnostics.push(
                Diagnostic::error(
                    Code::MissingArgument,
                    format!("`{}` needs the tensors to join", def.name),
                    Label::new(call.span, "nothing to join"),
                )
                .with_help(format!(
                    "name tensors with `-> name` and write `{}(a, b)`, or use `concat {{ branch {{ ... }} ... }}`",
                    def.name
                )),
            );
            return vec![cur];
        }
        call.args
            .iter()
            .map(|arg| match (&arg.name, &arg.value.kind) {
                (None, ExprKind::Name(name)) => self.use_tensor(&Ident {
                    name: name.clone(),
                    span: arg.value.span,
                }),
                _ => {
                    self.diagnostics.push(
                        Diagnostic::error(
                            Code::ArgumentType,
                            format!("the operands of `{}` are tensor names", def.name),
                            Label::new(arg.span, "not a tensor name"),
                        )
                        .with_help(format!(
                            "write `{}(a, b)` with names given by `-> a`",
                            def.name
                        )),
                    );
                    None
                }
            })
            .collect()
    }

    fn block_call(
        &mut self,
        block: &'a BlockDef,
        call: &Call,
        cur: Cur,
        scope: &mut Scope,
        instance: Option<Scope>,
    ) -> Cur {
        self.used_blocks.insert(&block.name.name);
        let kind = block.name.name.to_lowercase();
        let mut block_scope = match instance {
            Some(instance) => instance,
            None => Scope::child(&scope.name(
                call.name.as_ref(),
                &kind,
                call.span,
                &mut self.diagnostics,
            )),
        };
        if let Some(cycle_start) = self
            .call_sites
            .iter()
            .position(|c| c.block == block.name.name)
        {
            let mut chain: Vec<&str> = self.call_sites[cycle_start..]
                .iter()
                .map(|c| c.block.as_str())
                .collect();
            chain.push(&block.name.name);
            let mut d = Diagnostic::error(
                Code::RecursiveBlock,
                format!(
                    "block `{}` calls itself: {}",
                    block.name.name,
                    chain.join(" → ")
                ),
                Label::new(call.op.span, "recursive call"),
            )
            .with_help("a network must be finite: use `repeat` to stack a block several times");
            for site in &self.call_sites[cycle_start..] {
                d = d.with_label(Label::new(
                    site.span,
                    format!("`{}` called here", site.block),
                ));
            }
            self.diagnostics.push(d);
            return None;
        }
        if self.call_sites.len() >= MAX_CALL_DEPTH {
            self.diagnostics.push(Diagnostic::error(
                Code::RecursiveBlock,
                format!("block calls nest more than {MAX_CALL_DEPTH} deep"),
                Label::new(call.span, "too deep here"),
            ));
            return None;
        }
        let errors_before = self.error_count();
        let params: Vec<&str> = block.params.iter().map(|p| p.name.name.as_str()).collect();
        let callee = format!("block {}", block.name.name);
        let bound = bind(
            &callee,
            &params,
            &call.args,
            &self.frames,
            Words::ToBlock,
            &mut self.diagnostics,
        );
        self.frames.push(true);
        for param in &block.params {
            let value = match bound.iter().find(|b| b.name == param.name.name) {
                Some(b) => b.value.clone(),
                None => self.default_argument(block, param, call),
            };
            if let Some(value) = value {
                self.frames.set_value(&param.name.name, value);
            }
        }
        let out = if self.error_count() > errors_before {
            None
        } else {
            self.call_sites.push(CallSite {
                block: block.name.name.clone(),
                span: call.span,
            });
            let reported = self.diagnostics.len();
            let out = self.body(&block.body, cur, &mut block_scope);
            self.call_sites.pop();
            // Mistakes found while expanding the block also show which call expanded it.
            for d in &mut self.diagnostics[reported..] {
                d.secondary.push(Label::new(
                    call.span,
                    format!("in this call of `{}`", block.name.name),
                ));
            }
            out
        };
        self.frames.pop();
        out
    }

    fn default_argument(&mut self, block: &BlockDef, param: &Param, call: &Call) -> Option<Value> {
        let Some(default) = &param.default else {
            self.diagnostics.push(
                Diagnostic::error(
                    Code::MissingArgument,
                    format!(
                        "block `{}` needs the argument `{}`",
                        block.name.name, param.name.name
                    ),
                    Label::new(call.span, format!("`{}` missing", param.name.name)),
                )
                .with_label(Label::new(param.name.span, "parameter declared here"))
                .with_help(format!(
                    "pass it by position or as `{}=...`",
                    param.name.name
                )),
            );
            return None;
        };
        match eval(default, &self.frames) {
            Ok(v) => Some(v),
            Err(d) => {
                self.diagnostics.push(d);
                None
            }
        }
    }

    fn concat(&mut self, concat: &Concat, cur: Cur, scope: &mut Scope) -> Cur {
        let named = concat
            .name
            .as_ref()
            .map(|n| scope.explicit(n, &mut self.diagnostics));
        let mut own_scope = named.as_deref().map(Scope::child);
        let mut outputs = Vec::new();
        for branch in &concat.branches {
            let branch_scope = own_scope.as_mut().unwrap_or(scope);
            let name = branch_scope.name(
                branch.name.as_ref(),
                "branch",
                branch.keyword,
                &mut self.diagnostics,
            );
            outputs.push(self.body(&branch.body, cur, &mut Scope::child(&name)));
        }
        if concat.branches.is_empty() {
            self.diagnostics.push(
                Diagnostic::error(
                    Code::MissingArgument,
                    "`concat` has no branches",
                    Label::new(concat.keyword, "nothing to concatenate"),
                )
                .with_help("add branches: `concat { branch { ... } branch { ... } }`"),
            );
            return None;
        }
        let name = named.unwrap_or_else(|| scope.auto("concat", concat.keyword));
        let inputs: Option<Vec<NodeId>> = outputs.into_iter().collect();
        Some(self.add_node(
            name,
            Op::Concat(ops::Concat),
            inputs?,
            Origin {
                span: concat.keyword,
                ..Origin::default()
            },
        ))
    }

    fn residual(&mut self, residual: &Residual, cur: Cur, scope: &mut Scope) -> Cur {
        let errors_before = self.error_count();
        let bound = bind(
            "residual",
            &["scale"],
            &residual.args,
            &self.frames,
            Words::ToBlock,
            &mut self.diagnostics,
        );
        let scale = match bound.first().and_then(|b| b.value.as_ref()) {
            None => 1.0,
            Some(Value::Int(v)) => *v as f64,
            Some(Value::Float(v)) => *v,
            Some(other) => {
                self.diagnostics.push(Diagnostic::error(
                    Code::ArgumentType,
                    format!(
                        "argument `scale` of `residual` takes a number, found {} `{other}`",
                        other.type_name()
                    ),
                    Label::new(bound[0].span, "expected a number"),
                ));
                1.0
            }
        };
        let mut named_scope = residual.name.as_ref().map(|n| {
            let full = scope.explicit(n, &mut self.diagnostics);
            (Scope::child(&full), full)
        });
        let inner = named_scope.as_mut().map_or(&mut *scope, |(s, _)| s);
        let main = self.body(&residual.body, cur, inner);
        let shortcut = match &residual.shortcut {
            Some(shortcut) if !shortcut.body.stmts.is_empty() => {
                let name = inner.name(
                    shortcut.name.as_ref(),
                    "shortcut",
                    shortcut.keyword,
                    &mut self.diagnostics,
                );
                self.body(&shortcut.body, cur, &mut Scope::child(&name))
            }
            _ => cur,
        };
        let identity_shortcut = shortcut == cur;
        let name = match named_scope {
            Some((_, full)) => full,
            None => scope.auto("add", residual.keyword),
        };
        if self.error_count() > errors_before {
            return None;
        }
        let add = Add {
            scale,
            residual: Some(ops::Residual { identity_shortcut }),
        };
        Some(self.add_node(
            name,
            Op::Add(add),
            vec![shortcut?, main?],
            Origin {
                span: residual.keyword,
                ..Origin::default()
            },
        ))
    }

    fn repeat(&mut self, repeat: &Repeat, mut cur: Cur, scope: &mut Scope) -> Cur {
        const MAX_REPEAT: i64 = 100_000;
        let count = match eval(&repeat.count, &self.frames) {
            Ok(Value::Int(n)) if (0..=MAX_REPEAT).contains(&n) => n,
            Ok(Value::Int(n)) => {
                self.diagnostics.push(
                    Diagnostic::error(
                        Code::ArgumentValue,
                        format!("`repeat` count must be between 0 and {MAX_REPEAT}, found {n}"),
                        Label::new(repeat.count.span, "out of range"),
                    )
                    .with_help("the count is how many times the body is written out"),
                );
                return None;
            }
            Ok(other) => {
                self.diagnostics.push(eval::operand_error(
                    &repeat.count,
                    &other,
                    &self.frames,
                    "an integer count",
                ));
                return None;
            }
            Err(d) => {
                self.diagnostics.push(d);
                return None;
            }
        };
        let name = scope.name(
            repeat.name.as_ref(),
            "repeat",
            repeat.keyword,
            &mut self.diagnostics,
        );
        let lone_block =
            lone_block_call(&repeat.body).filter(|c| self.blocks.contains_key(c.op.name.as_str()));
        for i in 0..count {
            if self.too_large || !self.within_budget(repeat.keyword) {
                return None;
            }
            let mut instance = Scope::child(&format!("{name}.{i}"));
            self.frames.push(false);
            if let Some(index) = &repeat.index {
                self.frames.set_value(&index.name, Value::Int(i));
            }
            cur = match lone_block {
                Some(call) => self.call(call, cur, &mut Scope::root(), Some(instance)),
                None => self.body(&repeat.body, cur, &mut instance),
            };
            self.frames.pop();
        }
        cur
    }

    fn side(&mut self, side: &Side, cur: Cur, scope: &mut Scope) -> Cur {
        let name = scope.name(
            side.name.as_ref(),
            "side",
            side.keyword,
            &mut self.diagnostics,
        );
        let outer = self.side;
        let index = self.side_outputs.len();
        self.side = Some(index);
        self.side_outputs.push(SideOutput {
            name: name.clone(),
            node: NodeId(usize::MAX),
        });
        let out = self.body(&side.body, cur, &mut Scope::child(&name));
        self.side = outer;
        match out {
            Some(node) if Some(node) != cur => self.side_outputs[index].node = node,
            _ => {
                if out.is_some() {
                    self.diagnostics.push(
                        Diagnostic::error(
                            Code::MissingArgument,
                            format!("side output `{name}` has no layers"),
                            Label::new(side.keyword, "empty side output"),
                        )
                        .with_help("a side output computes something from the current tensor, e.g. an auxiliary classifier"),
                    );
                }
                self.side_outputs.truncate(index);
            }
        }
        cur
    }
}

/// The call in a body made of exactly one unnamed call, if so.
fn lone_block_call(body: &Body) -> Option<&Call> {
    match &body.stmts[..] {
        [Stmt::Chain(steps)] => match &steps[..] {
            [Step::Call(call)] if call.name.is_none() => Some(call),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::syntax::parse;

    fn names(source: &str) -> Vec<String> {
        let file = parse(source).expect("parses");
        let elaborated = super::elaborate(&file);
        let errors: Vec<_> = elaborated
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        elaborated.graphs[0]
            .0
            .nodes
            .iter()
            .map(|n| n.name.clone())
            .collect()
    }

    #[test]
    fn repeats_of_a_lone_block_read_like_torchvision() {
        let names = names(
            "block B(c, project=false) { residual { conv(c, 3x3, pad=1) bn } shortcut downsample { if project { conv(c, 1x1) } } relu }
             network N(input: 8x8x8) { repeat layer1 2 as i { B(8, project = i == 0) } }",
        );
        assert_eq!(
            names,
            [
                "input",
                "layer1.0.conv1",
                "layer1.0.bn1",
                "layer1.0.downsample.conv1",
                "layer1.0.add1",
                "layer1.0.relu1",
                "layer1.1.conv1",
                "layer1.1.bn1",
                "layer1.1.add1",
                "layer1.1.relu1"
            ]
        );
    }

    #[test]
    fn branches_count_within_their_block() {
        let names = names(
            "block I(a) { concat { branch { conv(a, 1x1) } branch { conv(a, 1x1) conv(a, 3x3, pad=1) } } }
             network N(input: 8x8x8) { I inception_4a(4) }",
        );
        assert!(
            names.contains(&"inception_4a.branch2.conv2".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"inception_4a.concat1".to_string()),
            "{names:?}"
        );
    }

    #[test]
    fn two_layers_on_one_line_are_not_a_name() {
        let names =
            names("network N(input: 16) { dense(8) relu dropout(0.5) dense(2) bn bn(eps=0.001) }");
        assert_eq!(
            names,
            ["input", "dense1", "relu1", "dropout1", "dense2", "bn"]
        );
    }

    #[test]
    fn named_tensors_join_across_statements() {
        let source = "network U(input: 1x8x8) { conv(4, 3x3, pad=1) -> skip; conv(4, 3x3, pad=1) -> up; concat(skip, up) }";
        let file = parse(source).expect("parses");
        let graph = &super::elaborate(&file).graphs[0].0;
        let concat = graph.nodes.last().expect("nodes");
        assert_eq!(concat.inputs.len(), 2);
        assert_eq!(graph.node(concat.inputs[0]).name, "conv1");
        assert_eq!(graph.node(concat.inputs[1]).name, "conv2");
    }
}
