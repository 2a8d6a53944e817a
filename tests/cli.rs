//! End-to-end tests of the command line: exit codes, what goes to stdout and stderr.

mod common;

use common::{assert_golden, cnnc, stderr, stdout};

#[test]
fn check_passes_every_example_with_one_line_each() {
    let files = common::example_files();
    assert!(files.len() >= 19, "every seed network has an example");
    let mut args = vec!["check"];
    args.extend(files.iter().map(String::as_str));
    let output = cnnc(&args);
    assert!(
        output.status.success(),
        "check failed:\n{}",
        stderr(&output)
    );
    let out = stdout(&output);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), files.len(), "{out}");
    for (line, file) in lines.iter().zip(&files) {
        assert!(line.starts_with(&format!("ok    {file}: ")), "{line}");
    }
    // The one warning is real: NIN's Caffe model strides 4 over 224 pixels and never
    // reads the last row, as AlexNet's would.
    let warnings = stderr(&output);
    assert_eq!(warnings.matches("W0001").count(), 1, "{warnings}");
    assert!(warnings.contains("examples/nin.cnn:11:"), "{warnings}");
    assert!(!warnings.contains("E0"), "{warnings}");
}

#[test]
fn check_reports_a_shape_error_with_a_miette_report() {
    let output = cnnc(&["check", "tests/bad/residual.cnn"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stdout(&output),
        "error tests/bad/residual.cnn: 1 error(s), 0 warning(s)\n"
    );
    assert_golden("residual.check.txt", &stderr(&output));
}

#[test]
fn check_json_lists_diagnostics_with_positions() {
    let output = cnnc(&["check", "tests/bad/residual.cnn", "--format", "json"]);
    assert_eq!(output.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("valid JSON");
    let d = &json[0];
    assert_eq!(d["code"], "E0105");
    assert_eq!(d["severity"], "error");
    assert_eq!(d["file"], "tests/bad/residual.cnn");
    assert_eq!(d["line"], 4);
    assert_eq!(d["column"], 5);
    assert!(
        d["help"]
            .as_str()
            .is_some_and(|h| h.contains("conv(256, 1x1, stride=2)"))
    );
}

#[test]
fn missing_and_non_utf8_files_are_errors_not_panics() {
    let output = cnnc(&["check", "no/such/file.cnn"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("cannot read no/such/file.cnn"));
    let dir = common::scratch("cli-binary");
    let binary = dir.join("binary.cnn");
    std::fs::write(&binary, [0x6e, 0xff, 0xfe, 0x00]).expect("write");
    let output = cnnc(&["summary", binary.to_str().expect("utf-8 path")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("is not UTF-8 text"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn build_emits_the_graph_and_the_ast() {
    let output = cnnc(&["build", "examples/lenet5.cnn", "--emit", "graph"]);
    assert!(output.status.success());
    assert_golden("lenet5.graph.txt", &stdout(&output));
    let output = cnnc(&["build", "examples/lenet5.cnn", "--emit", "ast"]);
    assert!(output.status.success());
    assert_golden("lenet5.ast.txt", &stdout(&output));
    let output = cnnc(&["build", "examples/googlenet.cnn", "--emit", "graph"]);
    let graph = stdout(&output);
    assert!(graph.contains("// inception_4a.branch2.conv1"), "{graph}");
    assert!(graph.contains("side output aux2"), "{graph}");
}

#[test]
fn build_emits_the_fused_graph_and_its_memory_plan() {
    let output = cnnc(&["build", "examples/lenet5.cnn", "--emit", "fused"]);
    assert!(output.status.success());
    assert_golden("lenet5.fused.txt", &stdout(&output));
    let output = cnnc(&["build", "examples/resnet18.cnn", "--emit", "fused"]);
    let fused = stdout(&output);
    // BN folded, ReLU and the residual add in the conv's epilogue, in source order;
    // the 3x3 convs through Winograd F(4x4,3x3) from 56x56 to 14x14 and F(2x2,3x3) at
    // 7x7 (the strided ones direct).
    assert!(
        fused.contains(
            "%4 = conv 64 3x3 p1 nobias [winograd F(4x4,3x3)] (%3) + fold(layer1.0.bn2) + bias + add(%2) + relu"
        ),
        "{fused}"
    );
    assert!(
        fused.contains("%13 = conv 256 3x3 p1 nobias [winograd F(4x4,3x3)] (%12)"),
        "{fused}"
    );
    assert!(
        fused.contains("%17 = conv 512 3x3 s2 p1 nobias (%16)")
            && fused.contains("%18 = conv 512 3x3 p1 nobias [winograd F(2x2,3x3)] (%17)"),
        "{fused}"
    );
    assert!(
        fused.contains("peak activation memory: 3.83 MiB per sample in one arena (live at once at most: 3.83 MiB); 4.59 MiB in 3 buffers"),
        "{fused}"
    );
    let output = cnnc(&["build", "examples/googlenet.cnn", "--emit", "fused"]);
    let fused = stdout(&output);
    assert!(
        fused.contains("%16 = concat in place (%8, %12, %13, %15) : 256x28x28 @ b0"),
        "{fused}"
    );
    // The two 1x1 reductions of a block read the same tensor: one kernel.
    assert!(
        fused.contains("%9 = conv 112 1x1 (%7) merging [inception_3a.branch2.conv1 96, inception_3a.branch3.conv1 16] + bias + relu : 112x28x28 @ b2"),
        "{fused}"
    );
    assert!(fused.contains("%10 = part of %9 : 96x28x28 @ b2[0..96]"));
    assert!(fused.contains(": 128x28x28 @ b0[64..192]"), "{fused}");
    assert!(!fused.contains("aux1"), "side outputs are pruned");
}

#[test]
fn several_networks_need_a_choice() {
    let dir = common::scratch("cli-two");
    let file = dir.join("two.cnn");
    std::fs::write(
        &file,
        "network A(input: 8) { dense(4) }\nnetwork B(input: 8) { dense(2) }\n",
    )
    .expect("write");
    let path = file.to_str().expect("utf-8 path");
    let output = cnnc(&["summary", path]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("several networks (A, B)"),
        "{}",
        stderr(&output)
    );
    let output = cnnc(&["summary", path, "--network", "B", "--format", "json"]);
    assert!(output.status.success());
    assert!(stdout(&output).contains("\"network\": \"B\""));
}

#[test]
fn every_subcommand_shows_its_help() {
    // Each subcommand's arguments are built only when it runs (clap's `defer`): each
    // one's help builds them, and lists its options.
    let listing = stdout(&cnnc(&["--help"]));
    let commands: Vec<&str> = listing
        .lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|&name| name != "help")
        .collect();
    assert_eq!(commands.len(), 11, "{listing}");
    for command in commands {
        let output = cnnc(&[command, "--help"]);
        assert!(output.status.success(), "{command}: {}", stderr(&output));
        let help = stdout(&output);
        assert!(help.contains(&format!("Usage: cnnc {command}")), "{help}");
        assert!(help.contains("-h, --help"), "{help}");
    }
}
