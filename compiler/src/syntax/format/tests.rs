use super::*;
use proptest::prelude::*;

/// Formats `source`, checking that the result is a fixed point.
fn fmt(source: &str) -> String {
    let once = format(source).unwrap_or_else(|e| panic!("{e}:\n{source}"));
    let twice = format(&once).unwrap_or_else(|e| panic!("{e}:\n{once}"));
    assert_eq!(once, twice, "not idempotent on:\n{source}");
    once
}

#[test]
fn canonical_text_is_left_alone() {
    let source = "\
// LeNet-5
network LeNet5(input: 1x32x32) {
    conv c1(6, 5x5) tanh
    avgpool s2(2x2, stride=2)

    conv c5(120, 5x5) tanh      // aligned by hand
    flatten
    dense output(10) softmax
}
";
    assert_eq!(fmt(source), source);
}

#[test]
fn spacing_is_normalized() {
    assert_eq!(
        fmt("network  N ( input:3x8x8 ){conv c1( 6 ,3x3,pad = 1 )relu}"),
        "network N(input: 3x8x8) { conv c1(6, 3x3, pad=1) relu }\n"
    );
    assert_eq!(
        fmt("block B(c,s = 1){let w=c*2+-1\nconv(w,c x c,stride=s>1?2:1,bias=!false)}"),
        "block B(c, s=1) {\n    let w = c * 2 + -1\n    conv(w, c x c, stride = s > 1 ? 2 : 1, bias=!false)\n}\n"
    );
}

#[test]
fn parentheses_and_literals_stay_as_written() {
    let out = fmt("network N(input: 8) { dense(((2 + 3)) * 4) lrn(alpha=1E-4, k=2.0) }");
    assert!(
        out.contains("dense(((2 + 3)) * 4) lrn(alpha=1E-4, k=2.0)"),
        "{out}"
    );
}

#[test]
fn bodies_on_one_line_stay_on_one_line() {
    assert_eq!(
        fmt("block B() {\n  concat { branch { relu;tanh } branch{ } }\n}"),
        "block B() {\n    concat { branch { relu; tanh } branch {} }\n}\n"
    );
}

#[test]
fn multi_line_bodies_get_a_statement_per_line() {
    assert_eq!(
        fmt("block B() { relu; tanh\n\n\n  sigmoid\n\n}\n\n\n\nblock C() {\n\n relu }"),
        "block B() {\n    relu\n    tanh\n\n    sigmoid\n}\n\nblock C() {\n    relu\n}\n"
    );
}

#[test]
fn else_and_shortcut_join_the_closing_brace() {
    let source = "block B(p) {\n if p { relu }\n else { tanh }\n residual {\n  relu\n }\n shortcut { tanh }\n}";
    assert_eq!(
        fmt(source),
        "block B(p) {\n    if p { relu } else { tanh }\n    residual {\n        relu\n    } shortcut { tanh }\n}\n"
    );
}

#[test]
fn broken_lists_keep_their_breaks_and_get_a_trailing_comma() {
    assert_eq!(
        fmt("block B(a,\nb) {\n conv(a, 3x3,\n stride=max(1,\n 2)\n )\n}"),
        "block B(a,\n    b) {\n    conv(a, 3x3,\n        stride=max(1,\n            2),\n    )\n}\n"
    );
}

#[test]
fn comments_stay_where_they_were() {
    let source = "\
/* header */
// more

block B(
  a, // first
  b /* second */
) {   // open
    // own line
  conv(a, 3x3) /* after */ relu // trailing
  let x = 1 + // continued
     2
    // before the end
}
// the end
";
    let expected = "\
/* header */
// more

block B(
    a, // first
    b, /* second */
) {   // open
    // own line
    conv(a, 3x3) /* after */ relu // trailing
    let x = 1 + // continued
        2
    // before the end
}
// the end
";
    assert_eq!(fmt(source), expected);
}

#[test]
fn comments_force_the_line_breaks_they_need() {
    let out = fmt("block B() {\n residual { relu }\n // projection\n shortcut { relu }\n}");
    assert!(
        out.contains("    residual { relu }\n    // projection\n    shortcut { relu }\n"),
        "{out}"
    );
}

#[test]
fn files_without_definitions_are_fine() {
    assert_eq!(fmt(""), "");
    assert_eq!(fmt("\n\n"), "");
    assert_eq!(
        fmt("// just a note  \n\n\n/* and */"),
        "// just a note\n\n/* and */\n"
    );
}

#[test]
fn crlf_tabs_and_a_bom_become_plain_text() {
    assert_eq!(
        fmt("\u{feff}network N(input: 8) {\r\n\tdense(4)\r\n}\r\n"),
        "network N(input: 8) {\n    dense(4)\n}\n"
    );
}

#[test]
fn syntax_errors_are_diagnostics() {
    match format("network N(input: 8) { dense(4 }") {
        Err(FormatError::Syntax(d)) => assert_eq!(d[0].message, "expected `)` or `,`, found `}`"),
        other => panic!("{other:?}"),
    }
}

const EXAMPLES: &[&str] = &[
    include_str!("../../../../examples/lenet5.cnn"),
    include_str!("../../../../examples/googlenet.cnn"),
    include_str!("../../../../examples/resnet50.cnn"),
    include_str!("../../../../examples/inception_v3.cnn"),
    include_str!("../../../../examples/inception_resnet_v2.cnn"),
];

/// Whitespace and comments that may sit between two tokens.
const FILLERS: &[&str] = &[" ", "\n", "\t", "/* c */", "// c\n", "\n\n", "/*\n*/"];

/// Puts fillers into `source` at token boundaries (never inside a word).
fn scatter(source: &str, places: &[(usize, usize)]) -> String {
    let mut out = source.to_string();
    let mut places = places.to_vec();
    places.sort_unstable_by_key(|p| std::cmp::Reverse(p.0));
    for (at, filler) in places {
        let at = at % (out.len() + 1);
        let word = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
        let before = out[..at].chars().next_back().is_some_and(word);
        let after = out[at..].chars().next().is_some_and(word);
        if out.is_char_boundary(at) && !(before && after) {
            out.insert_str(at, FILLERS[filler % FILLERS.len()]);
        }
    }
    out
}

proptest! {
    /// Any file that parses formats, idempotently, to the same program with the same
    /// comments (which `format` itself verifies).
    #[test]
    fn every_parsable_variation_of_an_example_formats(
        example in 0..EXAMPLES.len(),
        places in prop::collection::vec((0usize..100_000, 0usize..16), 0..12),
    ) {
        let source = scatter(EXAMPLES[example], &places);
        prop_assume!(crate::syntax::parse(&source).is_ok());
        let once = format(&source);
        prop_assert!(once.is_ok(), "{:?}\n{}", once.err(), source);
        let once = once.unwrap_or_default();
        prop_assert_eq!(format(&once).ok(), Some(once.clone()));
    }

    /// Whatever the input, an answer and no panic.
    #[test]
    fn never_panics(source in "[a-z0-9(){}\\[\\],;:=?!<>+*/%x \n-]{0,80}") {
        let _ = format(&source);
    }
}

#[test]
fn block_comments_get_the_layout_spacing() {
    // Found by fuzzing: the space after a block comment once came from the source,
    // so a second run moved the next token.
    assert_eq!(
        fmt("network N(input: 8 /* in */) {\n  leakyrelu/*a*//*b*/(0.1) dense(/*n*/4)\n}"),
        "network N(input: 8 /* in */) {\n    leakyrelu /*a*/ /*b*/ (0.1) dense( /*n*/ 4)\n}\n"
    );
}

#[test]
fn trailing_comments_keep_their_place_on_their_line() {
    // Re-indented from two spaces to four, and shortened: the comments stay aligned.
    let source = "network N(input: 8) {\n  relu       // one\n  dense( 4 ) // two\n}\n";
    assert_eq!(
        fmt(source),
        "network N(input: 8) {\n    relu       // one\n    dense(4)   // two\n}\n"
    );
    // A comment whose code moved to another line follows it at one space.
    assert_eq!(
        fmt("network N(input: 8) { relu // moved\n}"),
        "network N(input: 8) {\n    relu // moved\n}\n"
    );
}
