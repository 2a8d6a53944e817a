//! The structure a person would write, recovered from a DAG of layers: chains, `concat`
//! branches and `residual` paths that fork from one tensor and join again, and side
//! outputs that fork and never rejoin. A graph not built from these (U-Net, DenseNet)
//! has no such form; the caller then writes it with named tensors.

use super::layers::{Kind, Layer};
use std::cell::Cell;
use std::collections::{BTreeSet, HashMap, HashSet};

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Layer(usize),
    Concat {
        branches: Vec<Vec<Item>>,
        join: usize,
    },
    /// `shortcut + scale * main`; an empty shortcut is the identity.
    Residual {
        main: Vec<Item>,
        shortcut: Vec<Item>,
        join: usize,
    },
    Side {
        body: Vec<Item>,
    },
}

type Set = BTreeSet<usize>;

/// The parser refuses deeper nesting, so a deeper structure could not be written.
const MAX_NESTING: usize = 100;
/// Finding joins costs up to quadratic time in the layers between a fork and its join;
/// past this size the named-tensor form (linear) is written instead.
const MAX_STRUCTURED_LAYERS: usize = 20_000;

pub struct Dag<'a> {
    pub layers: &'a [Layer],
    producer: HashMap<&'a str, usize>,
    consumers: HashMap<&'a str, Vec<usize>>,
    graph_outputs: HashSet<&'a str>,
    nesting: Cell<usize>,
}

impl<'a> Dag<'a> {
    pub fn new(layers: &'a [Layer], outputs: &'a [String]) -> Self {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (index, layer) in layers.iter().enumerate() {
            producer.insert(layer.output.as_str(), index);
            for input in &layer.inputs {
                consumers.entry(input.as_str()).or_default().push(index);
            }
        }
        Dag {
            layers,
            producer,
            consumers,
            graph_outputs: outputs.iter().map(String::as_str).collect(),
            nesting: Cell::new(0),
        }
    }

    pub fn producer(&self, tensor: &str) -> Option<usize> {
        self.producer.get(tensor).copied()
    }

    /// The layers that some graph output depends on.
    pub fn live(&self) -> Set {
        let mut live = Set::new();
        for output in &self.graph_outputs {
            live.extend(self.upstream(output, None));
        }
        live
    }

    /// The layers the network's output depends on, in order.
    pub fn live_for(&self, output: &str) -> Set {
        self.upstream(output, None)
    }

    /// `tensor`'s producer and everything it depends on (within `within`, if given).
    fn upstream(&self, tensor: &str, within: Option<&Set>) -> Set {
        let mut found = Set::new();
        let mut stack: Vec<usize> = self.producer(tensor).into_iter().collect();
        while let Some(layer) = stack.pop() {
            if within.is_some_and(|w| !w.contains(&layer)) || !found.insert(layer) {
                continue;
            }
            stack.extend(
                self.layers[layer]
                    .inputs
                    .iter()
                    .filter_map(|i| self.producer(i)),
            );
        }
        found
    }

    fn consumers_in(&self, tensor: &str, within: &Set) -> Vec<usize> {
        let mut found: Vec<usize> = self
            .consumers
            .get(tensor)
            .into_iter()
            .flatten()
            .copied()
            .filter(|c| within.contains(c))
            .collect();
        found.dedup();
        found
    }

    /// The layers that read `tensor`, and everything after them, within `within`.
    fn downstream(&self, starts: &[usize], within: &Set) -> Set {
        let mut found = Set::new();
        let mut stack = starts.to_vec();
        while let Some(layer) = stack.pop() {
            if !within.contains(&layer) || !found.insert(layer) {
                continue;
            }
            stack.extend(self.consumers_in(&self.layers[layer].output, within));
        }
        found
    }

    /// The network from `input` to `output` as nested items, if it has that form.
    pub fn structure(&self, input: &str, output: &str) -> Option<Vec<Item>> {
        if self.layers.len() > MAX_STRUCTURED_LAYERS {
            return None;
        }
        self.region(input, output, &self.live())
    }

    /// Items that take `start` to `end` using exactly the layers of `allowed`.
    fn region(&self, start: &str, end: &str, allowed: &Set) -> Option<Vec<Item>> {
        if self.nesting.get() >= MAX_NESTING {
            return None;
        }
        self.nesting.set(self.nesting.get() + 1);
        let items = self.region_items(start, end, allowed);
        self.nesting.set(self.nesting.get() - 1);
        items
    }

    fn region_items(&self, start: &str, end: &str, allowed: &Set) -> Option<Vec<Item>> {
        let mut items = Vec::new();
        let mut left = allowed.clone();
        let mut current = start.to_string();
        loop {
            let mut onward = Vec::new();
            for consumer in self.consumers_in(&current, &left) {
                let reach = self.downstream(&[consumer], &left);
                let reaches_end =
                    current != end && self.producer(end).is_some_and(|p| reach.contains(&p));
                if reaches_end {
                    onward.push(consumer);
                } else {
                    items.push(self.side(&current, &reach)?);
                    left.retain(|l| !reach.contains(l));
                }
            }
            match onward.as_slice() {
                [] => break,
                [single] if self.layers[*single].inputs.len() == 1 => {
                    items.push(Item::Layer(*single));
                    left.remove(single);
                    current = self.layers[*single].output.clone();
                }
                _ => {
                    let (item, used, join) = self.fork(&current, &onward, &left)?;
                    left.retain(|l| !used.contains(l));
                    items.push(item);
                    current = self.layers[join].output.clone();
                }
            }
        }
        (current == end && left.is_empty()).then_some(items)
    }

    /// A branch that never rejoins: it must end in one of the graph's outputs.
    fn side(&self, start: &str, layers: &Set) -> Option<Item> {
        let sinks: Vec<usize> = layers
            .iter()
            .copied()
            .filter(|&l| self.consumers_in(&self.layers[l].output, layers).is_empty())
            .collect();
        let [sink] = sinks.as_slice() else {
            return None;
        };
        let output = &self.layers[*sink].output;
        if !self.graph_outputs.contains(output.as_str()) {
            return None;
        }
        let body = self.region(start, output, layers)?;
        Some(Item::Side { body })
    }

    /// A fork at `start`: finds where its paths join (a concat or an add that every
    /// path reaches and nothing escapes), and the branches between.
    fn fork(&self, start: &str, consumers: &[usize], left: &Set) -> Option<(Item, Set, usize)> {
        let reach = self.downstream(consumers, left);
        for &join in &reach {
            let inputs = &self.layers[join].inputs;
            if inputs.len() < 2 {
                continue;
            }
            let between: Set = inputs
                .iter()
                .flat_map(|i| self.upstream(i, Some(&reach)))
                .filter(|&l| l != join)
                .collect();
            if !self.closed(start, consumers, &between, join, left) {
                continue;
            }
            let item = self.join(start, &between, join)?;
            let mut used = between;
            used.insert(join);
            return Some((item, used, join));
        }
        None
    }

    /// Whether `between` is everything from `start` to `join` and nothing leaves it.
    fn closed(
        &self,
        start: &str,
        consumers: &[usize],
        between: &Set,
        join: usize,
        left: &Set,
    ) -> bool {
        let inside = |tensor: &str| {
            tensor == start || self.producer(tensor).is_some_and(|p| between.contains(&p))
        };
        consumers.iter().all(|c| between.contains(c) || *c == join)
            && self.layers[join].inputs.iter().all(|i| inside(i))
            && between.iter().all(|&l| {
                let layer = &self.layers[l];
                layer.inputs.iter().all(|i| inside(i))
                    && !self.graph_outputs.contains(layer.output.as_str())
                    && self
                        .consumers_in(&layer.output, left)
                        .iter()
                        .all(|c| between.contains(c) || *c == join)
            })
    }

    fn join(&self, start: &str, between: &Set, join: usize) -> Option<Item> {
        let inputs = &self.layers[join].inputs;
        let distinct: HashSet<&String> = inputs.iter().collect();
        if distinct.len() != inputs.len() {
            return None;
        }
        let mut paths: Vec<Vec<Item>> = Vec::new();
        let mut covered = Set::new();
        for input in inputs {
            let path = if input == start {
                Set::new()
            } else {
                self.upstream(input, Some(between))
            };
            if path.iter().any(|l| covered.contains(l)) {
                return None; // branches that share layers are not separate branches
            }
            covered.extend(&path);
            paths.push(self.region(start, input, &path)?);
        }
        if covered != *between {
            return None;
        }
        match (&self.layers[join].kind, paths.len()) {
            (Kind::Concat, _) => Some(Item::Concat {
                branches: paths,
                join,
            }),
            (Kind::Add { scale }, 2) => {
                let main = self.main_path(&paths, *scale);
                let shortcut = paths.remove(1 - main);
                let main = paths.remove(0);
                Some(Item::Residual {
                    main,
                    shortcut,
                    join,
                })
            }
            _ => None,
        }
    }

    /// Which of an add's two paths is the residual (the other is the shortcut): the
    /// scaled one, else the one with more layers, else the one with more weights.
    fn main_path(&self, paths: &[Vec<Item>], scale: f32) -> usize {
        if scale != 1.0 {
            return 1;
        }
        let size = |items: &Vec<Item>| {
            let layers = self.layers_of(items);
            let weights: usize = layers
                .iter()
                .flat_map(|&l| &self.layers[l].weights)
                .map(|(_, t)| t.len())
                .sum();
            (layers.len(), weights)
        };
        if size(&paths[0]) > size(&paths[1]) {
            0
        } else {
            1
        }
    }

    /// Every layer of `items`, in writing order.
    pub fn layers_of(&self, items: &[Item]) -> Vec<usize> {
        let mut out = Vec::new();
        for item in items {
            match item {
                Item::Layer(l) => out.push(*l),
                Item::Concat { branches, join } => {
                    branches.iter().for_each(|b| out.extend(self.layers_of(b)));
                    out.push(*join);
                }
                Item::Residual {
                    main,
                    shortcut,
                    join,
                } => {
                    out.extend(self.layers_of(main));
                    out.extend(self.layers_of(shortcut));
                    out.push(*join);
                }
                Item::Side { body } => out.extend(self.layers_of(body)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::layers::Activation;

    fn layer(kind: Kind, inputs: &[&str], output: &str) -> Layer {
        Layer {
            path: output.to_string(),
            kind,
            inputs: inputs.iter().map(|i| i.to_string()).collect(),
            output: output.to_string(),
            weights: Vec::new(),
        }
    }

    fn relu(input: &str, output: &str) -> Layer {
        layer(Kind::Activation(Activation::Relu), &[input], output)
    }

    #[test]
    fn a_fork_that_joins_in_an_add_is_a_residual() {
        // x -> a -> b; add(b, x): b's path is the residual, the identity the shortcut.
        let layers = [
            relu("x", "a"),
            relu("a", "b"),
            layer(Kind::Add { scale: 1.0 }, &["b", "x"], "sum"),
            relu("sum", "y"),
        ];
        let outputs = ["y".to_string()];
        let dag = Dag::new(&layers, &outputs);
        let items = dag.structure("x", "y").expect("nested");
        assert_eq!(
            items,
            [
                Item::Residual {
                    main: vec![Item::Layer(0), Item::Layer(1)],
                    shortcut: vec![],
                    join: 2
                },
                Item::Layer(3)
            ]
        );
    }

    #[test]
    fn a_path_that_skips_into_a_later_join_is_not_nested() {
        // DenseNet: the second concat reads x again, past the first join.
        let layers = [
            relu("x", "a"),
            layer(Kind::Concat, &["x", "a"], "c1"),
            relu("c1", "b"),
            layer(Kind::Concat, &["x", "a", "b"], "c2"),
        ];
        let outputs = ["c2".to_string()];
        assert_eq!(Dag::new(&layers, &outputs).structure("x", "c2"), None);
    }

    #[test]
    fn a_branch_that_never_rejoins_is_a_side_output() {
        let layers = [relu("x", "a"), relu("a", "aux"), relu("a", "y")];
        let outputs = ["y".to_string(), "aux".to_string()];
        let items = Dag::new(&layers, &outputs)
            .structure("x", "y")
            .expect("nested");
        assert_eq!(
            items,
            [
                Item::Layer(0),
                Item::Side {
                    body: vec![Item::Layer(1)]
                },
                Item::Layer(2)
            ]
        );
    }

    #[test]
    fn nesting_deeper_than_the_parser_allows_falls_back() {
        // Residuals nested 150 deep: each main path holds the next residual.
        let depth = 150;
        let mut layers = Vec::new();
        for i in 0..depth {
            layers.push(relu(&format!("x{i}"), &format!("x{}", i + 1)));
        }
        let mut inner = format!("x{depth}");
        for i in (0..depth).rev() {
            let sum = format!("s{i}");
            layers.push(layer(
                Kind::Add { scale: 1.0 },
                &[&inner, &format!("x{i}")],
                &sum,
            ));
            inner = sum;
        }
        let outputs = [inner.clone()];
        assert_eq!(Dag::new(&layers, &outputs).structure("x0", &inner), None);
    }
}
