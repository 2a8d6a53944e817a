//! The diagnostics corpus: every `tests/bad/*.cnn` carries its expected diagnostics
//! inline, as marker comments under the offending span:
//!
//! ```text
//!     conv(64, 3x3, groups=5)
//! //                ^^^^^^^^ E0103 cannot be split into 5 groups
//! ```
//!
//! The carets give the line (the nearest line above that is not a marker) and the
//! column where the primary label starts; then the code, then text the message must
//! contain. A file must produce exactly the diagnostics its markers list.

use cnnc_compiler::compile;
use cnnc_compiler::diagnostics::Code;
use cnnc_compiler::span::line_col;
use std::path::Path;

#[derive(Debug, PartialEq)]
struct Expected {
    line: usize,
    column: usize,
    code: String,
    text: String,
}

fn markers(source: &str) -> Vec<Expected> {
    let mut expected = Vec::new();
    let mut target_line = 0;
    for (index, line) in source.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = trimmed
            .strip_prefix("//")
            .filter(|rest| rest.trim_start().starts_with('^'));
        let Some(rest) = marker else {
            target_line = index + 1;
            continue;
        };
        let column = line.find('^').expect("marker has a caret") + 1;
        let after = rest.trim_start().trim_start_matches('^').trim();
        let (code, text) = after.split_once(' ').unwrap_or((after, ""));
        expected.push(Expected {
            line: target_line,
            column,
            code: code.to_string(),
            text: text.trim().to_string(),
        });
    }
    expected
}

fn check_file(path: &Path) -> Result<usize, String> {
    let source = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let expected = markers(&source);
    if expected.is_empty() {
        return Err("has no expectation markers".into());
    }
    let compilation = compile(&source);
    let mut unmatched: Vec<&Expected> = expected.iter().collect();
    let mut problems = Vec::new();
    for d in &compilation.diagnostics {
        let (line, column) = line_col(&source, d.primary.span.start);
        let found = unmatched.iter().position(|e| {
            e.code == d.code.as_str()
                && e.line == line
                && e.column == column
                && d.message.contains(&e.text)
        });
        match found {
            Some(i) => {
                unmatched.remove(i);
            }
            None => problems.push(format!(
                "unexpected {} at {line}:{column}: {}",
                d.code.as_str(),
                d.message
            )),
        }
    }
    for e in unmatched {
        problems.push(format!(
            "missing {} at {}:{} containing {:?}",
            e.code, e.line, e.column, e.text
        ));
    }
    if problems.is_empty() {
        Ok(expected.len())
    } else {
        Err(problems.join("\n    "))
    }
}

fn corpus() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/bad exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cnn"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_bad_program_gives_exactly_its_marked_diagnostics() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for path in corpus() {
        match check_file(&path) {
            Ok(n) => checked += n,
            Err(problems) => failures.push(format!("{}:\n    {problems}", path.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "diagnostics corpus failures:\n{}",
        failures.join("\n")
    );
    assert!(checked > 0);
}

#[test]
fn every_code_has_a_test_and_a_documented_entry() {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/errors.md"))
            .expect("docs/errors.md exists");
    let corpus: String = corpus()
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("readable"))
        .collect();
    let mut missing = Vec::new();
    for code in Code::ALL {
        let code = code.as_str();
        if !docs.contains(&format!("## {code}")) {
            missing.push(format!("{code}: no `## {code}` section in docs/errors.md"));
        }
        if !corpus.contains(&format!(" {code} ")) && !corpus.contains(&format!(" {code}\n")) {
            missing.push(format!("{code}: no marker in tests/bad"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn markers_parse() {
    let source = "network N(input: 3x8x8) {\n    conv(4, 9x9)\n//       ^^^ E0101 kernel 9x9\n}\n";
    assert_eq!(
        markers(source),
        vec![Expected {
            line: 2,
            column: 10,
            code: "E0101".into(),
            text: "kernel 9x9".into()
        }]
    );
}
