//! Hardening, end to end: saved results are never lost or half-written, files that
//! declare absurd sizes are refused before anything is allocated, and every input a
//! fuzzer once crashed cnnc with (tests/regressions/<surface>/) now ends in a result
//! or an error.

mod common;

use common::{cnnc, root, stderr, stdout};
use std::path::Path;

fn scratch(name: &str) -> common::Scratch {
    common::scratch(&format!("hardening-{name}"))
}

fn text(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The files in `dir`, hidden ones (temporary files) included, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn save_lenet(out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "run",
        "examples/lenet5.cnn",
        "--save-outputs",
        text(out),
        "--save",
        "c1",
    ];
    args.extend_from_slice(extra);
    cnnc(&args)
}

#[test]
fn saved_outputs_are_never_overwritten_unless_asked() {
    let dir = scratch("overwrite");
    let out = dir.join("out");
    let first = save_lenet(&out, &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(
        files(&out),
        ["c1.npy", "output.npy"],
        "no temporary file left"
    );
    let original = std::fs::read(out.join("output.npy")).expect("saved");

    // A second run into the same directory is refused before it runs, naming the files,
    // and leaves them as they were.
    std::fs::write(out.join("c1.npy"), b"a result someone kept").expect("write");
    let again = save_lenet(&out, &["--seed", "3"]);
    assert!(!again.status.success());
    let message = stderr(&again);
    assert!(
        message.contains("--save-outputs would replace")
            && message.contains("output.npy")
            && message.contains("c1.npy")
            && message.contains("pass --overwrite"),
        "{message}"
    );
    assert_eq!(
        std::fs::read(out.join("c1.npy")).expect("kept"),
        b"a result someone kept"
    );
    assert_eq!(
        std::fs::read(out.join("output.npy")).expect("kept"),
        original
    );

    // With --overwrite both are replaced by complete files of the new run.
    let replaced = save_lenet(&out, &["--seed", "3", "--overwrite"]);
    assert!(replaced.status.success(), "{}", stderr(&replaced));
    assert_eq!(files(&out), ["c1.npy", "output.npy"]);
    let c1 = std::fs::read(out.join("c1.npy")).expect("replaced");
    assert!(c1.starts_with(b"\x93NUMPY"), "a .npy file");
    assert_ne!(
        std::fs::read(out.join("output.npy")).expect("replaced"),
        original
    );
    assert!(stdout(&replaced).contains("saved"), "{}", stdout(&replaced));
}

#[test]
fn a_failed_save_leaves_no_file_behind() {
    // The output directory cannot be made: a file is in the way. Nothing is written,
    // and the error names the path.
    let dir = scratch("blocked");
    let blocker = dir.join("out");
    std::fs::write(&blocker, b"not a directory").expect("write");
    let blocked = save_lenet(&blocker, &[]);
    assert!(!blocked.status.success());
    assert!(
        stderr(&blocked).contains("cannot write"),
        "{}",
        stderr(&blocked)
    );
    assert_eq!(files(&dir), ["out"]);

    // A run that fails after the directory is made (a bad input) saves nothing.
    let out = dir.join("made");
    let garbage = dir.join("garbage.npy");
    std::fs::write(&garbage, b"\x93NUMPY\x01\x00garbage").expect("write");
    let failed = save_lenet(&out, &["--input", text(&garbage)]);
    assert!(!failed.status.success());
    assert!(files(&out).is_empty(), "{:?}", files(&out));
}

#[test]
fn files_that_declare_absurd_sizes_are_refused_before_allocating() {
    let dir = scratch("absurd");
    // An .npy header declaring 2^40 x 2^40 floats over 8 bytes of data.
    let header =
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }";
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let padded = format!("{header:<117}\n");
    npy.extend_from_slice(&(padded.len() as u16).to_le_bytes());
    npy.extend_from_slice(padded.as_bytes());
    npy.extend_from_slice(&[0; 8]);
    let huge_npy = dir.join("huge.npy");
    std::fs::write(&huge_npy, &npy).expect("write");
    // A PNG whose header declares 100000 x 100000 pixels.
    let huge_png = dir.join("huge.png");
    std::fs::write(&huge_png, png_header(100_000, 100_000)).expect("write");
    // A safetensors header that claims to be 2^62 bytes long.
    let huge_weights = dir.join("huge.safetensors");
    std::fs::write(&huge_weights, (1u64 << 62).to_le_bytes()).expect("write");
    for (args, expected) in [
        (
            vec!["--input", text(&huge_npy)],
            "the header declares shape [1099511627776, 1099511627776] but only 8 bytes of values follow",
        ),
        (vec!["--input", text(&huge_png)], "limit"),
        (
            vec!["--weights", text(&huge_weights)],
            "is not a valid safetensors file",
        ),
    ] {
        let mut full = vec!["run", "examples/lenet5.cnn"];
        full.extend(args);
        let output = cnnc(&full);
        assert!(!output.status.success());
        assert!(stderr(&output).contains(expected), "{}", stderr(&output));
    }
}

/// The signature and IHDR chunk of a PNG of `width` x `height` RGB pixels (no data).
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut chunk = b"IHDR".to_vec();
    chunk.extend_from_slice(&width.to_be_bytes());
    chunk.extend_from_slice(&height.to_be_bytes());
    chunk.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&chunk);
    png.extend_from_slice(&crc32(&chunk).to_be_bytes());
    png
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn a_network_too_big_for_memory_is_refused_naming_its_largest_tensors() {
    let dir = scratch("too-big");
    let source = dir.join("big.cnn");
    std::fs::write(
        &source,
        "network Big(input: 3x4096x4096) {\n    conv wide(512, 3x3, pad=1)\n    conv narrow(8, 1x1)\n}\n",
    )
    .expect("write");
    let output = cnnc(&["run", text(&source), "--memory-limit", "1GiB"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("more than the limit of 1.00 GiB")
            && message.contains("largest tensors: wide (32.00 GiB)"),
        "{message}"
    );
}

#[test]
fn every_regression_input_ends_in_a_result_or_an_error() {
    let dir = root().join("tests/regressions");
    let mut tried = 0;
    for (surface, run) in SURFACES {
        let Ok(entries) = std::fs::read_dir(dir.join(surface)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "md") {
                continue;
            }
            let bytes = std::fs::read(&path).expect("readable");
            eprintln!("{surface}: {}", path.display());
            run(&bytes);
            tried += 1;
        }
    }
    assert!(
        tried >= 3,
        "the committed regression inputs were not found: {tried}"
    );
}

#[test]
fn deep_and_absurd_networks_are_errors_with_spans() {
    let dir = scratch("absurd-networks");
    // 300 blocks, each calling the next; 5000 nested residuals; absurd repeats and sizes.
    let chain: String = (0..300)
        .map(|i| format!("block B{i}() {{\n    B{}()\n}}\n", i + 1))
        .collect::<String>()
        + "block B300() {\n    relu\n}\nnetwork Chain(input: 3x8x8) {\n    B0()\n}\n";
    let nested = format!(
        "network Nested(input: 3x8x8) {{\n{}relu\n{}}}\n",
        "residual {\n".repeat(5000),
        "}\n".repeat(5000)
    );
    for (name, source, expected) in [
        ("chain", chain, "block calls nest more than 64 deep"),
        ("nested", nested, "nesting deeper than 128 levels"),
        (
            "repeat",
            "network R(input: 8) {\n    repeat 1000000 {\n        relu\n    }\n}\n".into(),
            "`repeat` count must be between 0 and 100000, found 1000000",
        ),
        (
            "size",
            "network S(input: 3x99999999999x8) {\n    relu\n}\n".into(),
            "every size must be between 1 and 4294967296",
        ),
        (
            "kernel",
            "network K(input: 3x8x8) {\n    conv(8, 99999999999x3)\n}\n".into(),
            "",
        ),
    ] {
        let path = dir.join(format!("{name}.cnn"));
        std::fs::write(&path, source).expect("write");
        let output = cnnc(&["check", text(&path)]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{name}: {message}");
        assert!(message.contains(expected), "{name}: {message}");
        assert!(
            message.contains(&format!("{name}.cnn:")),
            "{name}: a span: {message}"
        );
    }
}

#[test]
fn every_example_runs_with_bounds_checks() {
    // Batch 1, seeded weights and input; each runs twice (buffers against the page
    // after them, then before). Every example, the largest (VGG-19, 19.6 GMACs)
    // included: the JIT runs it in about a second.
    for file in common::example_files() {
        let output = cnnc(&["run", &file, "--check-bounds", "--format", "json"]);
        assert!(output.status.success(), "{file}: {}", stderr(&output));
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
        assert_eq!(report["backend"], "jit", "{file}");
    }
}

#[test]
fn generated_code_that_strays_past_a_buffer_faults() {
    // Writes one float past a guarded buffer (or before it) in a child process, which
    // must die of SIGSEGV: the guard pages are really there.
    use std::os::unix::process::ExitStatusExt;
    if let Ok(side) = std::env::var("CNNC_GUARD_PROBE") {
        let guard = if side == "before" {
            cnnc_runtime::jit::guarded::Guard::Leading
        } else {
            cnnc_runtime::jit::guarded::Guard::Trailing
        };
        let mut floats =
            cnnc_runtime::jit::guarded::Floats::zeroed(1000, Some(guard)).expect("maps");
        let pointer = floats.as_mut_ptr();
        // SAFETY: deliberately not: this is the out-of-bounds write the guard catches.
        unsafe {
            let stray = if side == "before" {
                pointer.sub(1)
            } else {
                pointer.add(1000)
            };
            std::ptr::write_volatile(stray, 1.0);
        }
        return;
    }
    for side in ["before", "after"] {
        let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "generated_code_that_strays_past_a_buffer_faults",
                "--nocapture",
            ])
            .env("CNNC_GUARD_PROBE", side)
            .output()
            .expect("runs");
        let status = output.status;
        assert_eq!(status.signal(), Some(libc::SIGSEGV), "{side}: {status:?}");
        // And it says so first, rather than dying bare.
        let message = stderr(&output);
        assert!(
            message.contains("outside its buffer (a guard page)"),
            "{side}: {message}"
        );
    }
}

/// What a differential run found: networks generated, how many checked, how many ran on
/// both backends, and each disagreement with its source.
#[derive(Debug, Default)]
struct Differential {
    generated: usize,
    checked: usize,
    ran: usize,
    /// Lines of the networks that ran, a measure of their size.
    lines: usize,
    disagreements: Vec<String>,
}

/// Generates `count` networks from `seed` with the structure-aware fuzz target's
/// generator (random bytes decoded into a network), and runs every one that checks and
/// is small on the reference interpreter and the JIT.
fn differential(count: usize, seed: u64) -> Differential {
    use arbitrary::Arbitrary;
    let mut found = Differential::default();
    let mut state = seed;
    for _ in 0..count {
        let bytes: Vec<u8> = (0..512).map(|_| random_byte(&mut state)).collect();
        let Ok(spec) =
            surfaces::NetworkSpec::arbitrary_take_rest(arbitrary::Unstructured::new(&bytes))
        else {
            continue;
        };
        found.generated += 1;
        let source = spec.source();
        let mut compilation = cnnc_compiler::compile(&source);
        if compilation.has_errors() {
            continue;
        }
        found.checked += 1;
        let net = compilation.networks.remove(0);
        if !surfaces::small_enough(&net, spec.batch()) {
            continue;
        }
        found.ran += 1;
        found.lines += source.lines().count();
        if let Some(error) =
            surfaces::run_differential(&net, spec.batch(), spec.seed, spec.threads())
        {
            found.disagreements.push(format!("{error}\n{source}"));
        }
    }
    found
}

/// A random byte, odd three times in four: `arbitrary` continues a list while the
/// byte it reads is odd, so networks get several layers and bodies rather than one.
fn random_byte(state: &mut u64) -> u8 {
    let bits = splitmix(state);
    let byte = (bits >> 56) as u8;
    if bits.is_multiple_of(4) {
        byte & !1
    } else {
        byte | 1
    }
}

/// SplitMix64: the random bytes of the differential runner, from its seed.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn assert_agree(found: &Differential) {
    eprintln!(
        "{} networks generated, {} checked, {} ran on both backends ({:.1} lines each), {} disagreements",
        found.generated,
        found.checked,
        found.ran,
        found.lines as f64 / found.ran.max(1) as f64,
        found.disagreements.len()
    );
    assert!(
        found.disagreements.is_empty(),
        "{}",
        found.disagreements.join("\n\n")
    );
}

#[test]
fn generated_networks_agree_on_the_reference_and_the_jit() {
    let found = differential(100, 1);
    assert!(found.ran >= 20, "too few generated networks ran: {found:?}");
    assert_agree(&found);
}

/// The differential runner at scale: `CNNC_DIFFERENTIAL_COUNT=5000
/// CNNC_DIFFERENTIAL_SEED=7 cargo test --release --test hardening -- --ignored`.
#[test]
#[ignore = "thousands of networks: run by hand, see docs/reliability.md"]
fn many_generated_networks_agree() {
    let number = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let count = number("CNNC_DIFFERENTIAL_COUNT", 2000) as usize;
    let seed = number("CNNC_DIFFERENTIAL_SEED", 2);
    assert_agree(&differential(count, seed));
}

/// What a fuzz target does with its input.
type Surface = fn(&[u8]);

/// Each fuzz target's surface and the function it calls (the same one as the fuzzer).
const SURFACES: [(&str, Surface); 6] = [
    ("cnn_text", surfaces::cnn_text),
    ("cnn_structured", structured),
    ("weights", surfaces::weights),
    ("npy", surfaces::npy),
    ("image", surfaces::image),
    ("onnx", surfaces::onnx),
];

/// The structure-aware target's input: bytes decoded into a network as libFuzzer's
/// `fuzz_target!` decodes them, and checked and run whatever its size (the fuzzer
/// skips networks of more than a few thousand layers; its regressions are huge ones).
fn structured(bytes: &[u8]) {
    use arbitrary::Arbitrary;
    let data = arbitrary::Unstructured::new(bytes);
    if let Ok(spec) = surfaces::NetworkSpec::arbitrary_take_rest(data) {
        surfaces::check_and_run(&spec);
    }
}

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod surfaces;
