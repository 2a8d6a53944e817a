//! `cnnc fmt`: rewrites .cnn files in canonical form, or with `--check` shows what
//! would change. A file is only ever replaced whole: the new text goes to a temporary
//! file beside it, which then takes its name.

use crate::diff;
use crate::source::{Source, print_diagnostics, read};
use cnnc_compiler::syntax::{self, FormatError};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Formats every file; exit 1 if one could not be formatted or, with `check`, if one
/// is not formatted yet.
pub fn fmt(files: &[PathBuf], check: bool) -> ExitCode {
    let mut failed = false;
    let mut unformatted = 0;
    for path in files {
        match fmt_file(path, check) {
            Ok(changed) => unformatted += usize::from(changed),
            Err(message) => {
                eprintln!("error: {message}");
                failed = true;
            }
        }
    }
    if check && unformatted > 0 {
        eprintln!("{unformatted} file(s) would be reformatted; run `cnnc fmt` on them");
        failed = true;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Whether the file was (or, with `check`, would be) changed.
fn fmt_file(path: &Path, check: bool) -> Result<bool, String> {
    if path == Path::new("-") {
        return fmt_stdin(check);
    }
    let source = read(path)?;
    let formatted = formatted(&source)?;
    if formatted == source.text {
        return Ok(false);
    }
    if check {
        print!("{}", diff::unified(&source.name, &source.text, &formatted));
    } else {
        replace(path, &formatted)?;
    }
    Ok(true)
}

/// `-`: standard input to standard output, for editors that pipe the buffer through.
fn fmt_stdin(check: bool) -> Result<bool, String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    let source = Source {
        name: "<stdin>".to_string(),
        text,
    };
    let formatted = formatted(&source)?;
    let changed = formatted != source.text;
    if !check {
        print!("{formatted}");
    } else if changed {
        print!("{}", diff::unified(&source.name, &source.text, &formatted));
    }
    Ok(changed && check)
}

fn formatted(source: &Source) -> Result<String, String> {
    match syntax::format(&source.text) {
        Ok(text) => Ok(text),
        Err(FormatError::Syntax(diagnostics)) => {
            print_diagnostics(source, &diagnostics);
            Err(format!(
                "{} has a syntax error; left unchanged",
                source.name
            ))
        }
        Err(error) => Err(format!("{}: {error}; left unchanged", source.name)),
    }
}

/// Writes `text` to a temporary file in the same folder, then renames it over the
/// file (through a symbolic link, to its target): a crash leaves the old text or the
/// new, never half of one.
fn replace(path: &Path, text: &str) -> Result<(), String> {
    let target = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = target.with_file_name(format!(".{name}.cnnc-fmt-{}", std::process::id()));
    let written = fs::write(&temp, text)
        .and_then(|()| fs::set_permissions(&temp, fs::metadata(&target)?.permissions()))
        .and_then(|()| fs::rename(&temp, &target));
    written.map_err(|e| {
        let _ = fs::remove_file(&temp);
        format!("cannot write {}: {e}", path.display())
    })
}
