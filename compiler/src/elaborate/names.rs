//! Hierarchical layer names: `layer1.0.conv1`. A scope hands out names to what is
//! created inside it, automatic ones counted per kind (`conv1`, `conv2`, `branch1`).

use crate::diagnostics::{Code, Diagnostic, Label};
use crate::span::Span;
use crate::syntax::ast::Ident;
use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct Scope {
    prefix: String,
    counters: HashMap<String, u32>,
    /// Names handed out so far, with where, and whether they were automatic.
    taken: HashMap<String, (Span, bool)>,
}

impl Scope {
    pub fn root() -> Self {
        Scope::default()
    }

    /// The scope of everything inside `full_name` (a name this scope handed out).
    pub fn child(full_name: &str) -> Self {
        Scope {
            prefix: format!("{full_name}."),
            ..Scope::default()
        }
    }

    pub fn full(&self, local: &str) -> String {
        format!("{}{local}", self.prefix)
    }

    /// The next free `kind<N>`, e.g. `conv3`; returns the full name.
    pub fn auto(&mut self, kind: &str, at: Span) -> String {
        let counter = self.counters.entry(kind.to_string()).or_insert(0);
        loop {
            *counter += 1;
            // `relu6` numbered is `relu6_1`, not `relu61`, which reads as relu number 61.
            let separator = if kind.ends_with(|c: char| c.is_ascii_digit()) {
                "_"
            } else {
                ""
            };
            let local = format!("{kind}{separator}{counter}");
            if !self.taken.contains_key(&local) {
                self.taken.insert(local.clone(), (at, true));
                return self.full(&local);
            }
        }
    }

    /// Claims a name the user wrote. A name already taken in this scope is reported,
    /// and used anyway, so that checking goes on past the mistake.
    pub fn explicit(&mut self, name: &Ident, diagnostics: &mut Vec<Diagnostic>) -> String {
        if let Some(&(earlier, automatic)) = self.taken.get(&name.name) {
            let full = self.full(&name.name);
            let note = if automatic {
                format!("`{full}` was given automatically to this layer")
            } else {
                format!("`{full}` first used here")
            };
            diagnostics.push(
                Diagnostic::error(
                    Code::DuplicateLayerName,
                    format!("the name `{full}` is used twice"),
                    Label::new(name.span, "used again here"),
                )
                .with_label(Label::new(earlier, note))
                .with_help("layer names must be unique within their scope; rename one of them"),
            );
            return full;
        }
        self.taken.insert(name.name.clone(), (name.span, false));
        self.full(&name.name)
    }

    /// The explicit name if given, else an automatic one.
    pub fn name(
        &mut self,
        explicit: Option<&Ident>,
        kind: &str,
        at: Span,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> String {
        match explicit {
            Some(name) => self.explicit(name, diagnostics),
            None => self.auto(kind, at),
        }
    }
}
