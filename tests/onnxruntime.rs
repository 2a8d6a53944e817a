//! The example networks against ONNX Runtime, through tools/compare_onnxruntime.py: each
//! is exported, run by ONNX Runtime and by `cnnc run --backend reference` on the same
//! seeded input, every layer's output compared (1e-4 relative), then imported back and
//! run again.
//!
//! Needs Python with numpy, onnx and onnxruntime (`CNNC_PYTHON`, default `python3`).
//! Without them the test says it was skipped; `CNNC_REQUIRE_ONNXRUNTIME=1` (set by
//! .ci/run, which installs them) makes their absence a failure instead.

mod common;

use std::process::Command;

/// The small networks, and two big ones with every kind of join (ResNet-18, GoogLeNet).
const NETWORKS: &[&str] = &[
    "lenet5",
    "alexnet",
    "zfnet",
    "nin",
    "vgg11_lrn",
    "resnet18",
    "googlenet",
];

fn python() -> String {
    std::env::var("CNNC_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn onnxruntime_available(python: &str) -> Result<(), String> {
    let probe = Command::new(python)
        .args(["-c", "import numpy, onnx, onnxruntime"])
        .output()
        .map_err(|e| format!("cannot start {python}: {e}"))?;
    if probe.status.success() {
        Ok(())
    } else {
        // The traceback's last line says what is missing.
        let stderr = String::from_utf8_lossy(&probe.stderr);
        Err(stderr.lines().last().unwrap_or("import failed").to_string())
    }
}

#[test]
fn examples_agree_with_onnxruntime_layer_by_layer() {
    let python = python();
    if let Err(why) = onnxruntime_available(&python) {
        let required = std::env::var("CNNC_REQUIRE_ONNXRUNTIME").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "CNNC_REQUIRE_ONNXRUNTIME=1 but ONNX Runtime is not usable: {why}"
        );
        eprintln!(
            "skipped: ONNX Runtime is not available to {python} ({why}); \
             `pip install numpy onnx onnxruntime` to run this test"
        );
        return;
    }
    let files: Vec<String> = NETWORKS
        .iter()
        .map(|n| format!("examples/{n}.cnn"))
        .collect();
    let out = Command::new(&python)
        .arg("tools/compare_onnxruntime.py")
        .args(["--cnnc", env!("CARGO_BIN_EXE_cnnc")])
        .args(&files)
        .current_dir(common::root())
        .output()
        .expect("the comparison runs");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "disagreements with ONNX Runtime");
    assert!(
        report.contains(&format!("{} passed, 0 failed", NETWORKS.len())),
        "{report}"
    );
}
