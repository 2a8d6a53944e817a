//! `cnnc run` and `cnnc init` end to end: the digit demo, every example out of the box,
//! saved tensors, and a clear error for every kind of bad input.

mod common;

use common::{cnnc, root, stderr, stdout};
use std::path::PathBuf;

fn scratch(name: &str) -> common::Scratch {
    common::scratch(&format!("run-{name}"))
}

fn json(args: &[&str]) -> serde_json::Value {
    let output = cnnc(args);
    assert!(
        output.status.success(),
        "cnnc {args:?}:\n{}",
        stderr(&output)
    );
    serde_json::from_str(&stdout(&output)).expect("JSON report")
}

#[test]
fn the_trained_lenet5_reads_every_shipped_digit() {
    for backend in ["reference", "jit"] {
        for digit in 0..10 {
            let image = format!("examples/images/digit{digit}.png");
            let output = cnnc(&[
                "run",
                "examples/lenet5.cnn",
                "--weights",
                "examples/weights/lenet5-digits.safetensors",
                "--input",
                &image,
                "--backend",
                backend,
            ]);
            assert!(output.status.success(), "{}", stderr(&output));
            let text = stdout(&output);
            assert!(
                text.contains(&format!("\n{digit} (probability 0.99")),
                "{backend}, {image}:\n{text}"
            );
        }
    }
}

#[test]
fn the_jit_shows_its_cranelift_ir_and_refuses_save() {
    let output = cnnc(&["build", "examples/lenet5.cnn", "--emit", "clif"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    // One function per kernel: c1, c3, three dense, the softmax; s2 and s4 are
    // computed by the convs before them.
    assert_eq!(
        text.matches("\nfunction ").count() + usize::from(text.starts_with("function")),
        6,
        "{text}"
    );
    assert!(text.contains("; kernel 0 `c1`: conv 6 5x5"), "{text}");
    assert!(text.contains("; kernel 1 `s2`: computed by `c1`"), "{text}");
    assert!(
        text.contains("call_indirect"),
        "the tile is a call:\n{text}"
    );
    let refused = cnnc(&[
        "run",
        "examples/lenet5.cnn",
        "--backend",
        "jit",
        "--save-outputs",
        "/tmp/x",
        "--save",
        "c1",
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("--save needs --backend reference"));
}

#[test]
fn the_cranelift_ir_is_cut_for_the_threads_asked_for() {
    let clif = |threads: &str| {
        let output = cnnc(&[
            "build",
            "examples/resnet18.cnn",
            "--emit",
            "clif",
            "--threads",
            threads,
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
    };
    let (one, two) = (clif("1"), clif("2"));
    let header =
        "; kernel 2 `layer1.0.conv1`: conv 64 3x3 p1 nobias [winograd F(4x4,3x3)], cut for";
    assert!(one.contains(&format!("{header} 1 thread\n")), "{one}");
    assert!(two.contains(&format!("{header} 2 threads\n")), "{two}");
    // Chunks follow the threads: the code differs.
    assert_ne!(one, two.replace("2 threads", "1 thread"));
}

#[test]
fn every_example_runs_out_of_the_box() {
    let examples = common::example_files();
    for example in &examples {
        let report = json(&["run", example, "--format", "json", "--top", "3"]);
        let classes = if example.ends_with("lenet5.cnn") {
            10
        } else {
            1000
        };
        assert_eq!(
            report["output_shape"],
            serde_json::json!([1, classes]),
            "{example}"
        );
        let top = &report["predictions"][0];
        assert_eq!(top.as_array().map(Vec::len), Some(3), "{example}");
        let p = top[0]["probability"].as_f64().expect("probability");
        assert!(p.is_finite() && p > 0.0 && p <= 1.0, "{example}: {p}");
        // Run once, LeNet-5's kernels are all done sooner by the reference kernels
        // than compiled; every other example compiles most of its kernels.
        let interpreted = &report["interpreted_kernels"];
        let count = |key: &str| interpreted[key].as_u64().unwrap_or(0);
        if example.ends_with("lenet5.cnn") {
            assert_eq!((count("kernels"), count("of")), (8, 8), "{report}");
        } else {
            assert!(
                count("kernels") * 4 < count("of").max(1),
                "{example}: {interpreted}"
            );
        }
    }
}

#[test]
fn the_fused_backend_predicts_what_the_reference_does() {
    for example in ["examples/resnet18.cnn", "examples/googlenet.cnn"] {
        let run = |backend: &str| {
            json(&[
                "run",
                example,
                "--backend",
                backend,
                "--batch",
                "2",
                "--format",
                "json",
            ])
        };
        let (reference, fused) = (run("reference"), run("fused"));
        assert_eq!(fused["backend"], "fused");
        for (r, f) in reference["predictions"]
            .as_array()
            .expect("samples")
            .iter()
            .zip(fused["predictions"].as_array().expect("samples"))
        {
            for (r, f) in r
                .as_array()
                .expect("top")
                .iter()
                .zip(f.as_array().expect("top"))
            {
                assert_eq!(r["class"], f["class"], "{example}");
                let (pr, pf) = (r["probability"].as_f64(), f["probability"].as_f64());
                let (pr, pf) = (pr.expect("p"), pf.expect("p"));
                assert!((pr - pf).abs() <= 1e-5 * pr, "{example}: {pr} vs {pf}");
            }
        }
    }
    let output = cnnc(&[
        "run",
        "examples/lenet5.cnn",
        "--backend",
        "fused",
        "--save",
        "c1",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("--save needs --backend reference"));
}

#[test]
fn seeded_runs_are_reproducible_and_init_writes_the_same_weights() {
    let dir = scratch("init");
    let weights = dir.join("resnet18.safetensors");
    let output = cnnc(&[
        "init",
        "examples/resnet18.cnn",
        "-o",
        weights.to_str().expect("utf-8"),
        "--seed",
        "7",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("wrote"), "{}", stdout(&output));
    let seeded = json(&[
        "run",
        "examples/resnet18.cnn",
        "--seed",
        "7",
        "--format",
        "json",
    ]);
    let again = json(&[
        "run",
        "examples/resnet18.cnn",
        "--seed",
        "7",
        "--format",
        "json",
    ]);
    assert_eq!(seeded["predictions"], again["predictions"]);
    let from_file = json(&[
        "run",
        "examples/resnet18.cnn",
        "--seed",
        "7",
        "--weights",
        weights.to_str().expect("utf-8"),
        "--format",
        "json",
    ]);
    assert_eq!(seeded["predictions"], from_file["predictions"]);
    let other_seed = json(&[
        "run",
        "examples/resnet18.cnn",
        "--seed",
        "8",
        "--format",
        "json",
    ]);
    assert_ne!(seeded["predictions"], other_seed["predictions"]);
}

#[test]
fn a_layer_named_output_does_not_overwrite_the_network_output() {
    // LeNet-5's last dense layer is named `output`; the network's output is its softmax.
    let dir = scratch("save-output-layer");
    let out = dir.join("out");
    let report = json(&[
        "run",
        "examples/lenet5.cnn",
        "--save-outputs",
        out.to_str().expect("utf-8"),
        "--save",
        "output",
        "--format",
        "json",
    ]);
    let saved = report["saved"].as_array().expect("saved files");
    assert_eq!(saved.len(), 2, "{saved:?}");
    assert_eq!(saved[1]["tensor"], "output");
    let network = std::fs::read(out.join("output.npy")).expect("network output");
    let layer = std::fs::read(out.join("output.layer.npy")).expect("the layer");
    // Same shape (1x10), different values: softmax probabilities vs raw scores.
    assert_ne!(network, layer);
}

#[test]
fn outputs_and_named_tensors_are_saved_as_npy() {
    let dir = scratch("save");
    let out = dir.join("out");
    let report = json(&[
        "run",
        "examples/googlenet.cnn",
        "--save-outputs",
        out.to_str().expect("utf-8"),
        "--save",
        "inception_4a",
        "--save",
        "conv1",
        "--batch",
        "2",
        "--format",
        "json",
    ]);
    assert_eq!(report["batch"], 2);
    for (name, shape) in [
        ("output", "(2, 1000)"),
        ("inception_4a", "(2, 512, 14, 14)"),
        ("conv1", "(2, 64, 112, 112)"),
    ] {
        let bytes = std::fs::read(out.join(format!("{name}.npy"))).expect("saved");
        let header = String::from_utf8_lossy(&bytes[..128.min(bytes.len())]).into_owned();
        assert!(
            header.contains(&format!("'shape': {shape}")),
            "{name}: {header}"
        );
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = scratch("bad");
    let lenet = "examples/lenet5.cnn";
    let real =
        std::fs::read(root().join("examples/weights/lenet5-digits.safetensors")).expect("weights");
    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &real[..real.len() / 2]).expect("write");
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"\xff\xff\xff\xff\xff\xff\xff\xffnot json").expect("write");
    let not_an_image = dir.join("photo.png");
    std::fs::write(&not_an_image, b"this is text, not a PNG").expect("write");
    let vgg_weights = dir.join("vgg11.safetensors");
    let path = |p: &PathBuf| p.to_str().expect("utf-8").to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--weights".into(), path(&truncated)],
            "is not a valid safetensors file",
        ),
        (
            vec!["--weights".into(), path(&garbage)],
            "is not a valid safetensors file",
        ),
        (
            vec!["--weights".into(), "no/such.safetensors".into()],
            "cannot read no/such.safetensors",
        ),
        (
            vec!["--input".into(), path(&not_an_image)],
            "cannot decode the image",
        ),
        (
            vec!["--input".into(), "examples/images/missing.png".into()],
            "cannot read examples/images/missing.png",
        ),
        (
            vec!["--memory-limit".into(), "1KiB".into()],
            "more than the limit of 1.00 KiB",
        ),
        (
            vec!["--batch".into(), "0".into()],
            "--batch must be at least 1",
        ),
        (vec!["--save".into(), "c2".into()], "did you mean `c1`?"),
        (
            vec!["--mean".into(), "0.1,0.2".into()],
            "--mean has 2 values but the input has 1 channels",
        ),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["run", lenet];
        args.extend(extra.iter().map(String::as_str));
        let output = cnnc(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    // Weights of another network: every mismatch listed in one error.
    assert!(
        cnnc(&["init", "examples/vgg11.cnn", "-o", &path(&vgg_weights)])
            .status
            .success()
    );
    let output = cnnc(&["run", lenet, "--weights", &path(&vgg_weights)]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        message.contains("does not match the network LeNet5"),
        "{message}"
    );
    assert!(
        message.contains("missing: c1.weight [6, 1, 5, 5]"),
        "{message}"
    );
    assert!(
        message.contains("unexpected: features.conv1.weight") || message.contains("unexpected: "),
        "{message}"
    );
    // An input array of the wrong shape states both shapes.
    let wrong = dir.join("wrong.npy");
    let mut npy =
        b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (3, 8, 8), }"
            .to_vec();
    npy.resize(10 + 0x76 - 1, b' ');
    npy.push(b'\n');
    npy.extend(std::iter::repeat_n(0u8, 3 * 8 * 8 * 4));
    std::fs::write(&wrong, npy).expect("write");
    let output = cnnc(&["run", lenet, "--input", &path(&wrong)]);
    assert!(
        stderr(&output).contains("the input has shape 3x8x8 but the network takes 1x32x32"),
        "{}",
        stderr(&output)
    );
}

/// `cnnc bench` on LeNet-5, 3 runs on one thread, as JSON, with `extra` flags.
fn bench_lenet5(extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "bench",
        "examples/lenet5.cnn",
        "--runs",
        "3",
        "--warmup",
        "1",
    ];
    args.extend(["--threads", "1", "--format", "json"]);
    args.extend(extra);
    json(&args)
}

/// The names of a bench report's compile or weights phases, in order.
fn phase_names<'r>(report: &'r serde_json::Value, key: &str) -> Vec<&'r str> {
    let phases = report[key].as_array().expect(key);
    phases
        .iter()
        .map(|p| p["phase"].as_str().expect("name"))
        .collect()
}

#[test]
fn bench_reports_latency_throughput_and_a_profile() {
    let report = bench_lenet5(&["--profile"]);
    assert_eq!(report["backend"], "jit");
    assert_eq!(report["runs"], 3);
    let latency = &report["latency"];
    let (min, p50, max) = (
        latency["min"].as_f64().expect("min"),
        latency["p50"].as_f64().expect("p50"),
        latency["max"].as_f64().expect("max"),
    );
    assert!(0.0 < min && min <= p50 && p50 <= max, "{latency}");
    assert!(min <= latency["p90"].as_f64().expect("p90") && latency["p90"] != 0.0);
    for positive in [
        "gflops",
        "images_per_second",
        "peak_gflops",
        "tile_peak_gflops",
    ] {
        assert!(
            report[positive].as_f64().expect(positive) > 0.0,
            "{positive}"
        );
    }
    // images/s is the batch over the median latency.
    let images = report["images_per_second"].as_f64().expect("images/s");
    assert!(
        (images * p50 / 1e3 - 1.0).abs() < 1e-6,
        "{images} at {p50} ms"
    );
    // The kernels are part of the whole call.
    let kernels = report["kernels_milliseconds"].as_f64().expect("kernels");
    assert!(0.0 < kernels && kernels <= max, "{kernels} of {latency}");
    // Compile (parse to ready) and weights apart, each the sum of its phases.
    for (total, phases, names) in [
        (
            "compile_milliseconds",
            "compile_phases",
            &["front end", "passes", "code generation"][..],
        ),
        (
            "weights_milliseconds",
            "weights_phases",
            &["load", "fold and pack"][..],
        ),
    ] {
        assert_eq!(phase_names(&report, phases), names);
        let phases = report[phases].as_array().expect(phases);
        let sum: f64 = phases
            .iter()
            .map(|p| p["milliseconds"].as_f64().expect("ms"))
            .sum();
        let total = report[total].as_f64().expect(total);
        assert!(
            total > 0.0 && (total - sum).abs() < 1e-6,
            "{total} vs {sum}"
        );
    }
    // Every kernel of the fused graph, slowest first: c1, s2, c3, s4, three dense, softmax.
    let profile = report["profile"].as_array().expect("profile");
    assert_eq!(profile.len(), 8, "{profile:?}");
    // All of them generated: none on the reference path.
    assert_eq!(report["kernels"], 8);
    assert_eq!(report["reference_path"], serde_json::json!([]));
    let times: Vec<f64> = profile
        .iter()
        .map(|k| k["milliseconds"].as_f64().expect("ms"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let bad = cnnc(&["bench", "examples/lenet5.cnn", "--runs", "0"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("must be at least 1"));
}

#[test]
fn bench_times_the_reference_interpreter_the_same_way() {
    let report = bench_lenet5(&["--backend", "reference"]);
    assert_eq!(report["backend"], "reference");
    assert!(report["latency"]["p50"].as_f64().expect("p50") > 0.0);
    assert!(report["gflops"].as_f64().expect("gflops") > 0.0);
    // The interpreter compiles nothing and prepares nothing: parse and load only.
    assert_eq!(phase_names(&report, "compile_phases"), ["front end"]);
    assert_eq!(phase_names(&report, "weights_phases"), ["load"]);
    assert!(report.get("kernels_milliseconds").is_none());
    let profiled = cnnc(&[
        "bench",
        "examples/lenet5.cnn",
        "--backend",
        "reference",
        "--profile",
    ]);
    assert_eq!(profiled.status.code(), Some(1));
    assert!(stderr(&profiled).contains("use them with --backend jit"));
}

#[test]
fn bench_measures_the_fma_peak_and_the_tile() {
    let report = json(&["bench", "--peak", "--threads", "2", "--format", "json"]);
    assert_eq!(report["threads"], 2);
    for line in ["fma", "tile"] {
        let line = &report[line];
        assert!(line["kernel"].as_str().is_some_and(|k| !k.is_empty()));
        for figure in ["gflops_per_core", "gflops_all_threads"] {
            let value = line[figure].as_f64().expect(figure);
            assert!(value > 0.0 && value.is_finite(), "{figure}: {value}");
        }
    }
    let text = cnnc(&["bench", "--peak", "--threads", "1"]);
    assert!(text.status.success(), "{}", stderr(&text));
    let text = stdout(&text);
    assert!(text.starts_with("FMA peak ("), "{text}");
    assert!(text.contains(" GFLOP/s on one core"), "{text}");
    // A file and --peak are two different questions.
    let both = cnnc(&["bench", "examples/lenet5.cnn", "--peak"]);
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));
}
