//! The GPU on the command line: `--emit wgsl`, `cnnc devices`, `run --backend gpu`,
//! `--device auto` and `bench --backend gpu`, with an adapter (lavapipe in CI) and with
//! none (the Vulkan and EGL loaders pointed at nothing).

mod common;

use common::{cnnc, root, stderr, stdout};
use std::process::{Command, Output};

/// `cnnc` with no GPU adapter visible to wgpu.
fn cnnc_without_adapters(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .env("VK_ICD_FILENAMES", "/nonexistent")
        .env("__EGL_VENDOR_LIBRARY_FILENAMES", "/nonexistent")
        .output()
        .expect("cnnc runs")
}

/// Whether the GPU tests can run; says why not, or fails under REQUIRE_GPU_ADAPTER=1.
fn adapter_present(test: &str) -> bool {
    let devices = stdout(&cnnc(&["devices"]));
    let present = !devices.starts_with("no GPU adapter");
    if !present {
        assert!(
            std::env::var("REQUIRE_GPU_ADAPTER").as_deref() != Ok("1"),
            "{test}: REQUIRE_GPU_ADAPTER=1 but {devices}"
        );
        eprintln!("{test}: skipped: {devices}");
    }
    present
}

#[test]
fn emit_wgsl_prints_a_shader_per_kernel() {
    let out = cnnc(&["build", "examples/lenet5.cnn", "--emit", "wgsl"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    // c1, s2, c3, s4, c5, f6 and the output dense with its softmax: 8 kernels.
    assert_eq!(
        text.matches("@compute @workgroup_size").count(),
        8,
        "{text}"
    );
    assert!(text.contains("fn epilogue(n: u32, c: u32, p: u32, v0: f32) -> f32"));
}

#[test]
fn without_an_adapter_gpu_fails_clearly_and_auto_uses_the_jit() {
    let out = cnnc_without_adapters(&["run", "examples/lenet5.cnn", "--backend", "gpu"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no GPU adapter found"),
        "{}",
        stderr(&out)
    );
    let out = cnnc_without_adapters(&["run", "examples/vgg11.cnn", "--device", "auto"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("device: CPU JIT: no GPU adapter found"));
    assert!(stdout(&out).contains("jit backend"));
    let out = cnnc_without_adapters(&["devices"]);
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("no GPU adapter found"));
}

#[test]
fn auto_keeps_small_networks_on_the_cpu_and_says_why() {
    let out = cnnc(&["run", "examples/lenet5.cnn", "--device", "auto"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("below the GPU's threshold"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("jit backend"));
}

#[test]
fn auto_falls_back_to_the_jit_when_the_gpu_refuses_and_says_why() {
    if !adapter_present("auto fallback") {
        return;
    }
    let file = "tests/networks/wider_than_a_gpu_binding.cnn";
    let devices: serde_json::Value =
        serde_json::from_str(&stdout(&cnnc(&["devices", "--format", "json"]))).expect("json");
    let binding = devices[0]["max_storage_binding_bytes"]
        .as_u64()
        .unwrap_or(0);
    if binding >= 16 * 2050 * 2050 * 4 {
        eprintln!("auto fallback: skipped: {binding}-byte bindings hold {file}'s widest tensor");
        return;
    }
    // The software adapter counts as a GPU, so auto takes the GPU path for real.
    let out = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(["run", file, "--device", "auto", "--format", "json"])
        .current_dir(root())
        .env("NO_COLOR", "1")
        .env("CNNC_SOFTWARE_GPU", "1")
        .output()
        .expect("cnnc runs");
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("device: GPU "), "auto chose the GPU: {log}");
    assert!(
        log.contains("the GPU failed, running on the CPU JIT instead: the network does not fit")
            && log.contains("the output of `wide` (16x2050x2050) needs 256.5 MiB per sample"),
        "{log}"
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(report["backend"], "jit");
    // Without auto the same failure is the run's error.
    let out = cnnc(&["run", file, "--backend", "gpu"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("the network does not fit the GPU"));
}

#[test]
fn run_on_the_gpu_matches_the_reference_top_classes() {
    if !adapter_present("run --backend gpu") {
        return;
    }
    let args = |backend: &str| {
        let out = cnnc(&[
            "run",
            "examples/lenet5.cnn",
            "--backend",
            backend,
            "--format",
            "json",
            "--batch",
            "2",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
        (
            report["backend"].clone(),
            report["predictions"].clone(),
            stderr(&out),
        )
    };
    let (backend, gpu, log) = args("gpu");
    assert_eq!(backend, "gpu");
    eprintln!("{log}");
    assert!(log.starts_with("GPU: "), "the adapter is named: {log}");
    let (_, reference, _) = args("reference");
    let classes = |p: &serde_json::Value| -> Vec<serde_json::Value> {
        p.as_array()
            .expect("samples")
            .iter()
            .map(|s| s[0]["class"].clone())
            .collect()
    };
    assert_eq!(classes(&gpu), classes(&reference));
    let out = cnnc(&[
        "run",
        "examples/lenet5.cnn",
        "--backend",
        "gpu",
        "--save-outputs",
        "/tmp",
        "--save",
        "c1",
    ]);
    assert!(stderr(&out).contains("--save needs --backend reference"));
}

#[test]
fn devices_and_bench_report_the_adapter() {
    if !adapter_present("devices") {
        return;
    }
    let out = cnnc(&["devices", "--format", "json"]);
    let adapters: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let first = &adapters[0];
    assert!(
        first["max_storage_binding_bytes"]
            .as_u64()
            .is_some_and(|b| b > 0)
    );
    // --profile needs timestamp queries (lavapipe has them).
    let timestamps = first["timestamp_queries"] == true;
    let mut args = vec![
        "bench",
        "examples/lenet5.cnn",
        "--backend",
        "gpu",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--batch",
        "2",
        "--format",
        "json",
    ];
    if timestamps {
        args.push("--profile");
    }
    let out = cnnc(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(report["batch"], 2);
    // --profile: every kernel of LeNet-5 (as in --emit wgsl), slowest first.
    let profile = report["profile"].as_array().cloned().unwrap_or_default();
    let times: Vec<f64> = profile
        .iter()
        .filter_map(|k| k["milliseconds"].as_f64())
        .collect();
    assert_eq!(times.len(), if timestamps { 8 } else { 0 }, "{profile:?}");
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let shares: f64 = profile.iter().filter_map(|k| k["share"].as_f64()).sum();
    assert!(!timestamps || (shares - 1.0).abs() < 1e-6, "{shares}");
    assert!(
        report["end_to_end_milliseconds"]
            .as_f64()
            .is_some_and(|ms| ms > 0.0)
    );
    assert!(
        report["images_per_second"]
            .as_f64()
            .is_some_and(|r| r > 0.0)
    );
    let adapter = report["adapter"].as_str().unwrap_or_default();
    assert!(
        adapter.starts_with(first["name"].as_str().unwrap_or("?")),
        "{adapter}"
    );
}
