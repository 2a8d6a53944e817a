//! Property tests: no input makes the parser, elaborator, checker or passes panic.
//! Arbitrary text reaches the lexer; token soup reaches the parser's corners; mutated
//! examples and generated networks with random sizes reach elaboration and the shape
//! rules, and what checks goes through the passes and the memory plan and is drawn as
//! a diagram.

use cnnc_compiler::syntax::{FormatError, format as format_source};
use cnnc_compiler::{compile, diagram, passes};
use proptest::prelude::*;

/// Compiles, and draws every network that checked, whole or collapsed to `depths`.
fn compile_and_draw(text: &str, depths: &[Option<usize>]) {
    for network in compile(text).networks {
        for &depth in depths {
            let _ = diagram::to_svg(&network, depth);
            let _ = diagram::to_dot(&network, depth);
        }
    }
}

const TOKENS: &[&str] = &[
    "network",
    "block",
    "let",
    "if",
    "else",
    "repeat",
    "as",
    "concat",
    "branch",
    "residual",
    "shortcut",
    "side",
    "from",
    "->",
    "true",
    "false",
    "conv",
    "maxpool",
    "avgpool",
    "dense",
    "flatten",
    "relu",
    "bn",
    "lrn",
    "dropout",
    "softmax",
    "add",
    "globalavgpool",
    "N",
    "B",
    "x",
    "a",
    "i",
    "input",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ",",
    ";",
    "\n",
    ":",
    "=",
    "==",
    "+",
    "-",
    "*",
    "/",
    "%",
    "?",
    "&&",
    "||",
    "!",
    "<",
    "3x3",
    "1x7",
    "3x224x224",
    "0",
    "1",
    "2",
    "64",
    "-1",
    "9223372036854775807",
    "99999999999999999999",
    "1e308",
    "1e999",
    "0.5",
    "same",
    "valid",
    "stride=",
    "pad=",
    "groups=",
    "dilation=",
    "ceil=",
    "kernel=",
    "//",
    "/*",
    "*/",
    "min(",
    "max(",
];

fn examples() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut texts: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    texts.sort();
    texts
}

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec((0..TOKENS.len(), prop::bool::ANY), 0..80).prop_map(|tokens| {
        tokens
            .into_iter()
            .map(|(i, space)| {
                if space {
                    format!("{} ", TOKENS[i])
                } else {
                    TOKENS[i].to_string()
                }
            })
            .collect()
    })
}

/// A syntactically valid network with random sizes and op choices, so that the shape
/// rules see every corner: zero-size outputs, huge kernels, odd groups, overflow.
fn generated_network() -> impl Strategy<Value = String> {
    let size = prop_oneof![0i64..6, 1i64..300, Just(i64::MAX), Just(1 << 31), Just(-3)];
    let layer = (0..9usize, size.clone(), size.clone(), size.clone()).prop_map(|(kind, a, b, c)| match kind {
        0 => format!("conv({a}, {b}x{c}, stride={c}, pad={b})"),
        1 => format!("conv({a}, {b}, groups={c}, dilation={b})"),
        2 => format!("maxpool({a}x{b}, stride={c}, ceil=true)"),
        3 => format!("avgpool({a}, pad={b}, count_include_pad=false)"),
        4 => format!("dense({a})"),
        5 => "flatten".to_string(),
        6 => format!("concat {{ branch {{ conv({a}, 1x1) }} branch {{ maxpool({b}, stride=1, pad={c}) }} }}"),
        7 => format!("residual(scale={a}) {{ conv({b}, 3x3, pad=1) }} shortcut {{ conv({c}, 1x1) }}"),
        _ => format!("repeat {a} {{ bn relu }}"),
    });
    (
        size.clone(),
        size.clone(),
        size,
        prop::collection::vec(layer, 0..8),
    )
        .prop_map(|(c, h, w, layers)| {
            format!(
                "network G(input: {c}x{h}x{w}) {{\n    {}\n}}\n",
                layers.join("\n    ")
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text(text in "\\PC{0,200}") {
        let _ = compile(&text);
    }

    #[test]
    fn token_soup_never_panics(text in token_soup()) {
        let _ = compile(&text);
    }

    #[test]
    fn generated_networks_never_panic(text in generated_network()) {
        compile_and_draw(&text, &[None, Some(0), Some(1)]);
        // What checks goes on through the passes, the memory plan and the listing.
        for net in compile(&text).networks {
            let fused = passes::fuse(&net);
            let _ = passes::listing(&fused, &passes::plan(&fused));
        }
    }

    #[test]
    fn mutated_examples_never_panic(
        index in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        len in 0usize..40,
        insert in 0..TOKENS.len(),
    ) {
        let examples = examples();
        prop_assume!(!examples.is_empty());
        let text = index.get(&examples);
        let mut start = cut.index(text.len().max(1));
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (start + len).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mutated = format!("{}{}{}", &text[..start], TOKENS[insert], &text[end..]);
        compile_and_draw(&mutated, &[Some(2)]);
    }

    /// `cnnc fmt` answers every input, and what it writes is already formatted.
    #[test]
    fn formatting_is_stable(text in prop_oneof![token_soup(), generated_network()]) {
        if let Ok(formatted) = format_source(&text) {
            prop_assert_eq!(format_source(&formatted).ok(), Some(formatted.clone()));
        }
        prop_assert!(!matches!(format_source(&text), Err(FormatError::Internal(_))), "{}", text);
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let deep = format!(
        "network N(input: 8) {{ let a = {}1{} }}",
        "(".repeat(5000),
        ")".repeat(5000)
    );
    let compilation = compile(&deep);
    assert!(compilation.has_errors());
    let blocks = format!(
        "network N(input: 3x8x8) {{ {} relu {} }}",
        "residual {".repeat(3000),
        "}".repeat(3000)
    );
    assert!(compile(&blocks).has_errors());
}

#[test]
fn absurd_repeat_counts_are_refused() {
    let source = "network N(input: 8) { repeat 100000 { repeat 100000 { relu } } }";
    let compilation = compile(source);
    assert!(
        compilation
            .diagnostics
            .iter()
            .any(|d| d.code.as_str() == "E0017")
    );
}
