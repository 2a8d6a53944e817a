//! Writing the recovered structure as `.cnn` text a person would be glad to read: layer
//! names from the exporter's module paths, `concat`/`residual`/`side` scopes named
//! after the modules they came from, and runs of identical modules (`layer1.0`,
//! `layer1.1`, ...) as a block under `repeat`. Every layer with weights gets an explicit
//! name, so the full name cnnc will give it is known here and names its weights.

use super::layers::{Activation, Kind, Window};
use super::structure::{Dag, Item};
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

const KEYWORDS: &[&str] = &[
    "network", "block", "let", "if", "else", "repeat", "as", "concat", "branch", "residual",
    "shortcut", "side", "from", "true", "false",
];

/// The text, and the layer each weighted cnnc name stands for.
pub struct Emitted {
    pub text: String,
    pub weighted: HashMap<String, usize>,
}

/// Items that belong to one module instance (`layer1.0`), or a lone item.
struct Unit<'i> {
    items: &'i [Item],
    instance: Option<(String, usize)>,
}

pub struct Emitter<'a> {
    dag: &'a Dag<'a>,
    blocks: Vec<String>,
    block_names: HashSet<String>,
    weighted: HashMap<String, usize>,
}

/// Where names are being handed out: the cnnc scope (`layer1.0.`) and the part of the
/// exporter's module paths it stands for, which local names leave out.
#[derive(Clone, Default)]
struct Scope {
    prefix: String,
    path_prefix: String,
    taken: HashSet<String>,
    counters: HashMap<&'static str, usize>,
}

impl Scope {
    fn child(&self, name: &str, path_segment: Option<&str>) -> Scope {
        Scope {
            prefix: format!("{}{name}.", self.prefix),
            path_prefix: match path_segment {
                Some(segment) => format!("{}{segment}.", self.path_prefix),
                None => self.path_prefix.clone(),
            },
            ..Scope::default()
        }
    }

    fn claim(&mut self, preferred: &str) -> String {
        claim(&mut self.taken, preferred)
    }

    /// The next `kind<N>` that is free, as cnnc would number it.
    fn numbered(&mut self, kind: &'static str) -> String {
        loop {
            let counter = self.counters.entry(kind).or_insert(0);
            *counter += 1;
            let name = format!("{kind}{counter}");
            if self.taken.insert(name.clone()) {
                return name;
            }
        }
    }

    /// A module path relative to this scope, when it lies inside it.
    fn relative<'p>(&self, path: &'p str) -> &'p str {
        path.strip_prefix(self.path_prefix.as_str()).unwrap_or(path)
    }
}

impl<'a> Emitter<'a> {
    pub fn new(dag: &'a Dag<'a>) -> Self {
        Emitter {
            dag,
            blocks: Vec::new(),
            block_names: HashSet::new(),
            weighted: HashMap::new(),
        }
    }

    /// The whole file: the blocks found, then the network.
    pub fn network(mut self, header: &str, signature: &str, items: &[Item]) -> Emitted {
        let mut scope = Scope::default();
        let body = self.items(items, &mut scope);
        let mut text = header.to_string();
        for block in &self.blocks {
            text.push_str(block);
            text.push('\n');
        }
        let _ = writeln!(text, "network {signature} {{");
        push_indented(&mut text, &body, 1);
        text.push_str("}\n");
        Emitted {
            text,
            weighted: self.weighted,
        }
    }

    /// The network with named tensors: for graphs that are not nested forks and joins.
    pub fn named_tensors(
        mut self,
        header: &str,
        signature: &str,
        input: &str,
        input_name: &str,
        order: &[usize],
        output: &str,
    ) -> Result<Emitted, String> {
        let layers = self.dag.layers;
        let mut scope = Scope::default();
        let tensor_names = self.tensor_names(order, input, input_name, output);
        let mut lines: Vec<String> = Vec::new();
        let mut current = input.to_string();
        for &l in order {
            let layer = &layers[l];
            let mut text = match (&layer.kind, layer.inputs.as_slice()) {
                (Kind::Add { scale }, _) if *scale != 1.0 => {
                    return Err(format!(
                        "`{}` adds a scaled tensor outside a residual block, which .cnn cannot \
                         write",
                        layer.path
                    ));
                }
                (Kind::Concat | Kind::Add { .. }, inputs) => {
                    let op = if layer.kind == Kind::Concat {
                        "concat"
                    } else {
                        "add"
                    };
                    let args: Vec<&str> = inputs.iter().map(|i| tensor_names[i].as_str()).collect();
                    format!("{op}({})", args.join(", "))
                }
                (_, [only]) => {
                    if *only != current {
                        lines.push(format!("from {}", tensor_names[only]));
                    }
                    self.layer_text(l, &mut scope)
                }
                _ => return Err(format!("`{}` has no input", layer.path)),
            };
            if let Some(name) = tensor_names.get(&layer.output) {
                let _ = write!(text, " -> {name}");
            }
            let continues = layer.inputs.len() == 1 && layer.inputs[0] == current;
            match lines.last_mut() {
                Some(line) if continues && joins_line(&layer.kind) && !line.contains("->") => {
                    line.push(' ');
                    line.push_str(&text);
                }
                _ => lines.push(text),
            }
            current = layer.output.clone();
        }
        if current != output {
            lines.push(format!("from {}", tensor_names[output]));
        }
        let mut text = header.to_string();
        let _ = writeln!(text, "network {signature} {{");
        push_indented(&mut text, &lines, 1);
        text.push_str("}\n");
        Ok(Emitted {
            text,
            weighted: self.weighted,
        })
    }

    /// Names for the tensors read other than by the very next layer.
    fn tensor_names(
        &self,
        order: &[usize],
        input: &str,
        input_name: &str,
        output: &str,
    ) -> HashMap<String, String> {
        let layers = self.dag.layers;
        let mut needs: HashSet<&str> = HashSet::new();
        let mut previous = input;
        for &l in order {
            let layer = &layers[l];
            if layer.inputs.len() > 1 || layer.inputs.first().map(String::as_str) != Some(previous)
            {
                needs.extend(layer.inputs.iter().map(String::as_str));
            }
            previous = &layer.output;
        }
        if previous != output {
            needs.insert(output);
        }
        let mut taken = HashSet::new();
        let mut names = HashMap::from([(input.to_string(), input_name.to_string())]);
        taken.insert(input_name.to_string());
        for &l in order {
            let layer = &layers[l];
            if needs.contains(layer.output.as_str()) {
                let mut name = identifier(&layer.path, "t");
                if is_reserved(&name) {
                    name.push_str("_out");
                }
                names.insert(layer.output.clone(), claim(&mut taken, &name));
            }
        }
        names
    }

    /// Lines for `items` in `scope`, with runs of repeated modules as `repeat`s.
    fn items(&mut self, items: &[Item], scope: &mut Scope) -> Vec<String> {
        let units = self.units(items, scope);
        let mut lines = Vec::new();
        let mut i = 0;
        while i < units.len() {
            let run = self.instance_run(&units[i..]);
            if let Some(repeat) = (run >= 2)
                .then(|| self.repeat(&units[i..i + run], scope))
                .flatten()
            {
                lines.extend(repeat);
                i += run;
                continue;
            }
            for item in units[i].items {
                self.item(item, scope, &mut lines);
            }
            i += 1;
        }
        lines
    }

    fn item(&mut self, item: &Item, scope: &mut Scope, lines: &mut Vec<String>) {
        match item {
            Item::Layer(l) => {
                let text = self.layer_text(*l, scope);
                match lines.last_mut() {
                    Some(line) if joins_line(&self.dag.layers[*l].kind) && !line.ends_with('}') => {
                        line.push(' ');
                        line.push_str(&text);
                    }
                    _ => lines.push(text),
                }
            }
            Item::Concat { branches, .. } => {
                let (name, mut own) = self.construct_scope(item, scope);
                let inner = own.as_mut().unwrap_or(scope);
                lines.push(format!("concat{name} {{"));
                let mut inner_lines = Vec::new();
                for branch in branches {
                    let (branch_name, branch_scope) = self.sub_scope(branch, "branch", inner);
                    self.body(
                        &format!("branch {branch_name}"),
                        branch,
                        branch_scope,
                        &mut inner_lines,
                    );
                }
                lines.extend(inner_lines.iter().map(|l| format!("    {l}")));
                lines.push("}".into());
            }
            Item::Residual {
                main,
                shortcut,
                join,
            } => {
                let (name, mut own) = self.construct_scope(item, scope);
                let inner = own.as_mut().unwrap_or(scope);
                let scale = match &self.dag.layers[*join].kind {
                    Kind::Add { scale } if *scale != 1.0 => format!("(scale={scale})"),
                    _ => String::new(),
                };
                lines.push(format!("residual{name}{scale} {{"));
                let body = self.items(main, inner);
                lines.extend(body.iter().map(|l| format!("    {l}")));
                if shortcut.is_empty() {
                    lines.push("}".into());
                } else {
                    let (shortcut_name, shortcut_scope) =
                        self.sub_scope(shortcut, "shortcut", inner);
                    let mut shortcut_lines = Vec::new();
                    let opening = format!("shortcut {shortcut_name}");
                    self.body(&opening, shortcut, shortcut_scope, &mut shortcut_lines);
                    let first = shortcut_lines.remove(0);
                    lines.push(format!("}} {first}"));
                    lines.extend(shortcut_lines);
                }
            }
            Item::Side { body } => {
                let (name, side_scope) = self.sub_scope(body, "side", scope);
                self.body(&format!("side {name}"), body, side_scope, lines);
            }
        }
    }

    /// `opening { body }` on one line when short, else indented.
    fn body(&mut self, opening: &str, items: &[Item], mut scope: Scope, lines: &mut Vec<String>) {
        let body = self.items(items, &mut scope);
        let one_line = format!("{opening} {{ {} }}", body.join("; "));
        if body.is_empty() {
            lines.push(format!("{opening} {{ }}"));
        } else if body.iter().all(|l| !l.contains('{')) && one_line.len() <= 88 {
            lines.push(one_line);
        } else {
            lines.push(format!("{opening} {{"));
            lines.extend(body.iter().map(|l| format!("    {l}")));
            lines.push("}".into());
        }
    }

    /// A `concat` or `residual` whose layers all come from one module is named after
    /// it, which opens a scope of that name (and names the join): the name as written
    /// after the keyword (` inception_4a`, or nothing) and the scope it opens, if any.
    fn construct_scope(&self, item: &Item, scope: &mut Scope) -> (String, Option<Scope>) {
        let layers = self.dag.layers_of(std::slice::from_ref(item));
        match self.common_segment(&layers, scope) {
            Some(segment) if !scope.taken.contains(&segment) => {
                let name = scope.claim(&segment);
                let child = scope.child(&name, Some(&segment));
                (format!(" {name}"), Some(child))
            }
            _ => (String::new(), None),
        }
    }

    /// The name and scope of a branch, shortcut or side: its module's, else numbered.
    fn sub_scope(&self, items: &[Item], kind: &'static str, scope: &mut Scope) -> (String, Scope) {
        let layers = self.dag.layers_of(items);
        match self.common_segment(&layers, scope) {
            Some(segment) if !scope.taken.contains(&segment) => {
                let name = scope.claim(&segment);
                let child = scope.child(&name, Some(&segment));
                (name, child)
            }
            _ => {
                let name = scope.numbered(kind);
                let child = scope.child(&name, None);
                (name, child)
            }
        }
    }

    /// Consecutive items from the same module instance (`layer1.0`), as units.
    fn units<'i>(&self, items: &'i [Item], scope: &Scope) -> Vec<Unit<'i>> {
        let mut units: Vec<Unit> = Vec::new();
        let mut start = 0;
        for end in 1..=items.len() {
            let key = self.instance(&items[start], scope);
            if end == items.len() || key.is_none() || self.instance(&items[end], scope) != key {
                units.push(Unit {
                    items: &items[start..end],
                    instance: key,
                });
                start = end;
            }
        }
        units
    }

    /// `("layer1", 0)` when every layer of `item` lies in module `layer1.0` below
    /// `scope`.
    fn instance(&self, item: &Item, scope: &Scope) -> Option<(String, usize)> {
        let mut key: Option<(String, usize)> = None;
        for l in self.dag.layers_of(std::slice::from_ref(item)) {
            let relative = scope.relative(&self.dag.layers[l].path);
            let mut parts = relative.splitn(3, '.');
            let (module, index) = (parts.next()?, parts.next()?.parse::<usize>().ok()?);
            if key
                .as_ref()
                .is_some_and(|(m, i)| m != module || *i != index)
            {
                return None;
            }
            key = Some((module.to_string(), index));
        }
        key
    }

    /// How many units from the first are instances 0, 1, 2, ... of one module.
    fn instance_run(&self, units: &[Unit]) -> usize {
        let Some((module, 0)) = &units[0].instance else {
            return 0;
        };
        units
            .iter()
            .enumerate()
            .take_while(|(i, u)| u.instance.as_ref() == Some(&(module.clone(), *i)))
            .count()
    }

    /// Instances of one module as a block under `repeat`, when all are alike or all
    /// but the first are (a stage whose first block downsamples).
    fn repeat(&mut self, units: &[Unit], scope: &mut Scope) -> Option<Vec<String>> {
        let (module, _) = units[0].instance.clone()?;
        if !is_identifier(&module) || is_reserved(&module) || scope.taken.contains(&module) {
            return None;
        }
        let saved = std::mem::take(&mut self.weighted);
        let mut bodies = Vec::new();
        for (i, unit) in units.iter().enumerate() {
            let mut instance =
                scope.child(&format!("{module}.{i}"), Some(&format!("{module}.{i}")));
            let mut lines = Vec::new();
            for item in unit.items {
                self.item(item, &mut instance, &mut lines);
            }
            bodies.push(lines);
        }
        let alike_after_first = bodies[1..].iter().all(|b| *b == bodies[1]);
        if !alike_after_first {
            self.weighted = saved;
            return None;
        }
        self.weighted.extend(saved);
        scope.claim(&module);
        let block = self.block_name(&module);
        let count = units.len();
        let mut definition;
        let call;
        if bodies[0] == bodies[1] {
            definition = format!("block {block}() {{\n");
            push_indented(&mut definition, &bodies[0], 1);
            call = format!("repeat {module} {count} {{ {block}() }}");
        } else {
            definition = format!("block {block}(i) {{\n    if i == 0 {{\n");
            push_indented(&mut definition, &bodies[0], 2);
            definition.push_str("    } else {\n");
            push_indented(&mut definition, &bodies[1], 2);
            definition.push_str("    }\n");
            call = format!("repeat {module} {count} as i {{ {block}(i) }}");
        }
        definition.push_str("}\n");
        self.blocks.push(definition);
        Some(vec![call])
    }

    /// `layer1` as a block name: `Layer1`, unique.
    fn block_name(&mut self, module: &str) -> String {
        let mut camel = String::new();
        for part in module.split('_').filter(|p| !p.is_empty()) {
            let mut chars = part.chars();
            if let Some(first) = chars.next() {
                camel.extend(first.to_uppercase());
                camel.push_str(chars.as_str());
            }
        }
        if camel.is_empty() || is_reserved(&camel) {
            camel.push_str("Module");
        }
        claim(&mut self.block_names, &camel)
    }

    /// The first path segment every layer shares below `scope`, if it makes a name and
    /// leaves every layer a name of its own below it.
    fn common_segment(&self, layers: &[usize], scope: &Scope) -> Option<String> {
        let mut common: Option<&str> = None;
        for &l in layers {
            let relative = scope.relative(&self.dag.layers[l].path);
            let (first, rest) = relative.split_once('.')?;
            if rest.is_empty() || common.is_some_and(|c| c != first) {
                return None;
            }
            common = Some(first);
        }
        common
            .filter(|c| is_identifier(c) && !is_reserved(c))
            .map(str::to_string)
    }

    fn layer_text(&mut self, l: usize, scope: &mut Scope) -> String {
        let layer = &self.dag.layers[l];
        let (op, args) = op_text(&layer.kind);
        if layer.weights.is_empty() {
            return if args.is_empty() {
                op.to_string()
            } else {
                format!("{op}({args})")
            };
        }
        let relative = scope.relative(&layer.path);
        let mut name = identifier(relative, op);
        if is_reserved(&name) && name != op {
            name.push('_');
        }
        let name = scope.claim(&name);
        self.weighted.insert(format!("{}{name}", scope.prefix), l);
        format!("{op} {name}({args})")
    }
}

/// Activations and normalisations read best on their layer's line: `conv(...) bn relu`.
fn joins_line(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::BatchNorm { .. }
            | Kind::Activation(_)
            | Kind::Softmax
            | Kind::Dropout { .. }
            | Kind::Flatten
    )
}

/// The op's name and its arguments, defaults left out.
fn op_text(kind: &Kind) -> (&'static str, String) {
    match kind {
        Kind::Conv(conv) => {
            let mut args = vec![conv.out.to_string(), size(conv.window.kernel)];
            args.extend(window_args(&conv.window, None));
            if conv.groups != 1 {
                args.push(format!("groups={}", conv.groups));
            }
            if !conv.bias {
                args.push("bias=false".into());
            }
            ("conv", args.join(", "))
        }
        Kind::Pool(pool) => {
            let mut args = vec![size(pool.window.kernel)];
            args.extend(window_args(&pool.window, Some(pool.window.kernel)));
            if pool.ceil {
                args.push("ceil=true".into());
            }
            let padded = pool.window.pads != Some([0; 4]);
            if !pool.max && padded && !pool.count_include_pad {
                args.push("count_include_pad=false".into());
            }
            let op = if pool.max { "maxpool" } else { "avgpool" };
            (op, args.join(", "))
        }
        Kind::GlobalPool { max: true } => ("globalmaxpool", String::new()),
        Kind::GlobalPool { max: false } => ("globalavgpool", String::new()),
        Kind::Lrn {
            size,
            alpha,
            beta,
            k,
        } => {
            let mut args = Vec::new();
            for (name, value, default) in [
                ("alpha", *alpha, 1e-4f32),
                ("beta", *beta, 0.75),
                ("k", *k, 1.0),
            ] {
                if value != default {
                    args.push(format!("{name}={}", number(value)));
                }
            }
            if *size != 5 || !args.is_empty() {
                args.insert(0, format!("size={size}"));
            }
            ("lrn", args.join(", "))
        }
        Kind::BatchNorm { eps } if *eps == 1e-5 => ("bn", String::new()),
        Kind::BatchNorm { eps } => ("bn", format!("eps={}", number(*eps))),
        Kind::Dropout { p } if *p == 0.5 => ("dropout", String::new()),
        Kind::Dropout { p } => ("dropout", number(*p)),
        Kind::Flatten => ("flatten", String::new()),
        Kind::Dense { units, bias: true } => ("dense", units.to_string()),
        Kind::Dense { units, bias: false } => ("dense", format!("{units}, bias=false")),
        Kind::Activation(Activation::Relu) => ("relu", String::new()),
        Kind::Activation(Activation::Relu6) => ("relu6", String::new()),
        Kind::Activation(Activation::Tanh) => ("tanh", String::new()),
        Kind::Activation(Activation::Sigmoid) => ("sigmoid", String::new()),
        Kind::Activation(Activation::LeakyRelu(slope)) => {
            ("leakyrelu", format!("slope={}", number(*slope)))
        }
        Kind::Softmax => ("softmax", String::new()),
        Kind::Concat => ("concat", String::new()),
        Kind::Add { .. } => ("add", String::new()),
    }
}

/// `stride`, `pad` and `dilation`, each only where it differs from its default.
fn window_args(window: &Window, default_stride: Option<[u64; 2]>) -> Vec<String> {
    let mut args = Vec::new();
    if window.stride != default_stride.unwrap_or([1, 1]) {
        args.push(format!("stride={}", size_or_number(window.stride)));
    }
    match window.pads {
        None => args.push("pad=same".into()),
        Some([0, 0, 0, 0]) => {}
        Some([t, l, b, r]) if t == b && l == r && t == l => args.push(format!("pad={t}")),
        Some([t, l, b, r]) if t == b && l == r => args.push(format!("pad=[{t}, {l}]")),
        Some([t, l, b, r]) => args.push(format!("pad=[{t}, {l}, {b}, {r}]")),
    }
    if window.dilation != [1, 1] {
        args.push(format!("dilation={}", size_or_number(window.dilation)));
    }
    args
}

fn size([h, w]: [u64; 2]) -> String {
    format!("{h}x{w}")
}

fn size_or_number([h, w]: [u64; 2]) -> String {
    if h == w { h.to_string() } else { size([h, w]) }
}

/// The shortest text that reads back as the same f32, always with a decimal point or
/// exponent so .cnn reads it as a float.
fn number(value: f32) -> String {
    let text = format!("{value:?}");
    if text.contains(['.', 'e', 'E']) {
        text
    } else {
        format!("{text}.0")
    }
}

/// A module path as an identifier: `layer1.0.conv1` is `layer1_0_conv1`; one that
/// starts with a digit (`downsample.0` below its scope is `0`) gets the op in front.
fn identifier(path: &str, op: &str) -> String {
    let mut name: String = path
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    name = name.trim_matches('_').to_string();
    if name.is_empty() {
        return op.to_string();
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name = format!("{op}_{name}");
    }
    name
}

fn is_identifier(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Keywords and op names: a layer named after another op would read as two layers.
fn is_reserved(name: &str) -> bool {
    KEYWORDS.contains(&name) || cnnc_compiler::ops::find(name).is_some()
}

/// `preferred` if not taken yet, else with a number appended; marks it taken.
fn claim(taken: &mut HashSet<String>, preferred: &str) -> String {
    let mut name = preferred.to_string();
    let mut n = 2;
    while !taken.insert(name.clone()) {
        name = format!("{preferred}_{n}");
        n += 1;
    }
    name
}

fn push_indented(text: &mut String, lines: &[String], depth: usize) {
    for line in lines {
        let _ = writeln!(text, "{}{line}", "    ".repeat(depth));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_paths_become_identifiers() {
        assert_eq!(identifier("layer1.0.conv1", "conv"), "layer1_0_conv1");
        assert_eq!(identifier("0", "conv"), "conv_0");
        assert_eq!(identifier("", "bn"), "bn");
        assert_eq!(identifier("conv1/7x7_s2", "conv"), "conv1_7x7_s2");
        assert!(is_reserved("relu") && is_reserved("concat") && !is_reserved("fc"));
    }

    #[test]
    fn numbers_read_back_as_the_same_float() {
        for value in [1e-5f32, 0.001, 0.75, 2.0, 1e-4, 0.17] {
            let text = number(value);
            assert!(text.contains('.') || text.contains('e'), "{text}");
            assert_eq!(text.parse::<f32>().expect("a number"), value);
        }
    }

    #[test]
    fn windows_leave_defaults_out() {
        let window = Window {
            kernel: [3, 3],
            stride: [3, 3],
            dilation: [1, 1],
            pads: Some([0; 4]),
        };
        assert!(window_args(&window, Some([3, 3])).is_empty());
        let asymmetric = Window {
            pads: Some([0, 0, 1, 1]),
            stride: [2, 1],
            ..window
        };
        assert_eq!(
            window_args(&asymmetric, None),
            ["stride=2x1", "pad=[0, 0, 1, 1]"]
        );
    }
}
