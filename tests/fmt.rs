//! End-to-end tests of `cnnc fmt`: the examples stay formatted, formatting is a fixed
//! point that keeps every network and comment, and files that cannot be formatted, or
//! are only checked, are left untouched.

mod common;

use common::{assert_golden, cnnc, root, stderr, stdout};
use std::path::Path;

/// The formatter's corpus: badly formatted files with comments in awkward places.
fn corpus_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root().join("tests/format"))
        .expect("tests/format/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cnn"))
        .map(|p| format!("tests/format/{}", name(&p)))
        .collect();
    files.sort();
    files
}

fn name(path: &Path) -> String {
    path.file_name()
        .expect("named")
        .to_string_lossy()
        .into_owned()
}

/// An empty folder of this test's own.
fn scratch(test: &str) -> common::Scratch {
    common::scratch(&format!("fmt-{test}"))
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("readable")
}

fn summary_json(file: &str) -> String {
    let output = cnnc(&["summary", file, "--format", "json"]);
    assert!(output.status.success(), "{file}: {}", stderr(&output));
    stdout(&output)
}

/// The text without whitespace and the separators the formatter may add or drop.
fn tokens(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace() && *c != ',' && *c != ';' && *c != '\u{feff}')
        .collect()
}

#[test]
fn the_examples_are_formatted() {
    let files = common::example_files();
    let mut args = vec!["fmt", "--check"];
    args.extend(files.iter().map(String::as_str));
    let output = cnnc(&args);
    assert!(
        output.status.success(),
        "run `cnnc fmt examples/*.cnn`:\n{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert_eq!(stdout(&output), "");
}

#[test]
fn formatting_is_a_fixed_point_that_keeps_the_network() {
    let dir = scratch("fixed-point");
    let corpus = corpus_files();
    for file in common::example_files().iter().chain(&corpus) {
        let copy = dir.join(name(Path::new(file)));
        let original = read(&root().join(file));
        std::fs::write(&copy, &original).expect("copy");
        let output = cnnc(&["fmt", path_arg(&copy)]);
        assert!(output.status.success(), "{file}: {}", stderr(&output));
        let once = read(&copy);
        assert_eq!(
            tokens(&once),
            tokens(&original),
            "{file}: only layout changes"
        );
        let again = cnnc(&["fmt", "--check", path_arg(&copy)]);
        assert!(again.status.success(), "{file} twice:\n{}", stdout(&again));
        assert_eq!(
            summary_json(path_arg(&copy)),
            summary_json(file),
            "{file}: the formatted network differs"
        );
        if corpus.contains(file) {
            assert_golden(&format!("fmt.{}", name(&copy)), &once);
        }
    }
}

#[test]
fn check_reports_a_diff_and_writes_nothing() {
    let dir = scratch("check");
    let file = dir.join("messy.cnn");
    let messy = "network N(input:8){\n  dense( 4 ) relu\n}\n";
    std::fs::write(&file, messy).expect("write");
    let output = cnnc(&["fmt", "--check", path_arg(&file)]);
    assert_eq!(output.status.code(), Some(1));
    let diff = stdout(&output);
    assert!(
        diff.contains(&format!("--- {}\n", file.display())),
        "{diff}"
    );
    assert!(
        diff.contains("-network N(input:8){\n-  dense( 4 ) relu\n+network N(input: 8) {\n+    dense(4) relu\n }\n"),
        "{diff}"
    );
    assert!(stderr(&output).contains("1 file(s) would be reformatted"));
    assert_eq!(read(&file), messy, "--check wrote to the file");

    let output = cnnc(&["fmt", path_arg(&file)]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(read(&file), "network N(input: 8) {\n    dense(4) relu\n}\n");
}

#[test]
fn a_syntax_error_is_reported_and_the_file_left_alone() {
    let dir = scratch("syntax");
    let broken = dir.join("broken.cnn");
    let text = "network N(input: 8) {\n  dense(4\n}\n";
    std::fs::write(&broken, text).expect("write");
    let fine = dir.join("fine.cnn");
    std::fs::write(&fine, "network N(input: 8) { relu  }\n").expect("write");
    let output = cnnc(&["fmt", path_arg(&broken), path_arg(&fine)]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("E0001"), "{err}");
    assert!(err.contains("expected `)` or `,`"), "{err}");
    assert!(err.contains("has a syntax error; left unchanged"), "{err}");
    assert_eq!(read(&broken), text);
    // The other files are still formatted.
    assert_eq!(read(&fine), "network N(input: 8) { relu }\n");
    let output = cnnc(&["fmt", "--check", "no/such/file.cnn"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("cannot read no/such/file.cnn"));
}

#[test]
fn a_dash_formats_standard_input_to_standard_output() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let run = |args: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cnnc"))
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cnnc runs");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"network N(input:8){relu}")
            .expect("write stdin");
        drop(stdin);
        child.wait_with_output().expect("cnnc finishes")
    };
    let output = run(&["fmt", "-"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "network N(input: 8) { relu }\n");
    let output = run(&["fmt", "--check", "-"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).starts_with("--- <stdin>\n"),
        "{}",
        stdout(&output)
    );
}
