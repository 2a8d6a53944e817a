//! Lexical scopes of values (`let`, parameters, repeat indices) and named tensors. A
//! block call opens a sealed frame: the block sees its parameters, not its caller.

use crate::graph::NodeId;
use crate::ops::Value;
use crate::span::Span;
use std::collections::BTreeMap;

#[derive(Debug)]
pub struct TensorBinding {
    /// `None` when the tensor could not be built because of an earlier error.
    pub node: Option<NodeId>,
    pub span: Span,
    pub used: bool,
}

#[derive(Debug, Default)]
struct Frame {
    values: BTreeMap<String, Value>,
    tensors: BTreeMap<String, TensorBinding>,
    sealed: bool,
}

#[derive(Debug, Default)]
pub struct Frames {
    stack: Vec<Frame>,
}

impl Frames {
    pub fn push(&mut self, sealed: bool) {
        self.stack.push(Frame {
            sealed,
            ..Frame::default()
        });
    }

    /// Pops the innermost frame, returning its tensor names that nothing read.
    pub fn pop(&mut self) -> Vec<(String, Span)> {
        let frame = self.stack.pop().expect("balanced frames");
        frame
            .tensors
            .into_iter()
            .filter(|(_, t)| !t.used)
            .map(|(name, t)| (name, t.span))
            .collect()
    }

    /// Frames visible from the innermost one: up to and including the nearest seal.
    fn visible(&self) -> impl Iterator<Item = &Frame> {
        let start = self.stack.iter().rposition(|f| f.sealed).unwrap_or(0);
        self.stack[start..].iter().rev()
    }

    pub fn set_value(&mut self, name: &str, value: Value) {
        let frame = self.stack.last_mut().expect("a frame");
        frame.values.insert(name.to_string(), value);
    }

    pub fn value(&self, name: &str) -> Option<&Value> {
        self.visible().find_map(|f| f.values.get(name))
    }

    pub fn value_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .visible()
            .flat_map(|f| f.values.keys().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    pub fn bind_tensor(&mut self, name: &str, node: Option<NodeId>, span: Span) {
        let frame = self.stack.last_mut().expect("a frame");
        frame.tensors.insert(
            name.to_string(),
            TensorBinding {
                node,
                span,
                used: false,
            },
        );
    }

    /// Looks a tensor up and marks it used; `Err` lists the names in scope.
    pub fn use_tensor(&mut self, name: &str) -> Result<Option<NodeId>, Vec<String>> {
        let start = self.stack.iter().rposition(|f| f.sealed).unwrap_or(0);
        for frame in self.stack[start..].iter_mut().rev() {
            if let Some(binding) = frame.tensors.get_mut(name) {
                binding.used = true;
                return Ok(binding.node);
            }
        }
        let mut names: Vec<String> = self.stack[start..]
            .iter()
            .flat_map(|f| f.tensors.keys().cloned())
            .collect();
        names.sort();
        names.dedup();
        Err(names)
    }
}
