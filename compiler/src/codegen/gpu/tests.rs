//! What the WGSL generator decides: which conv kernel, how weights are split over
//! bindings, which buffers are bound. The shaders themselves are validated by naga and
//! run against the reference interpreter in the `cnnc-gpu` crate's tests.

use super::*;
use crate::passes::plan;

fn shaders(source: &str, target: &GpuTarget) -> Vec<Shader> {
    let mut compilation = crate::compile(source);
    assert!(!compilation.has_errors(), "{:?}", compilation.diagnostics);
    let fused = fuse(&compilation.networks.remove(0));
    compile(&fused, &plan(&fused), target).expect("lowers")
}

/// The weight rows each shader binds, in order.
fn weight_rows(shaders: &[Shader]) -> Vec<std::ops::Range<u64>> {
    shaders
        .iter()
        .flat_map(|s| s.bindings.iter())
        .filter_map(|b| match b {
            Binding::Weights { rows } => Some(rows.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn large_convs_use_the_tiled_kernel_and_small_ones_the_direct_one() {
    let s = shaders(
        "network N(input: 3x16x16) { conv a(64, 3x3, pad=1) relu\n conv b(4, 3x3) }",
        &GpuTarget::default(),
    );
    assert_eq!(s.len(), 2);
    assert!(s[0].wgsl.contains("var<workgroup> tile_a"), "{}", s[0].wgsl);
    // One 64x64 tile of channels by 256 pixels is four workgroups.
    assert_eq!(s[0].workgroups, 4);
    assert!(!s[1].wgsl.contains("workgroup>"));
    assert!(s[0].wgsl.contains("v = max(v, 0.0);"));
}

#[test]
fn weights_larger_than_a_binding_are_split_over_output_rows() {
    let target = GpuTarget {
        max_binding_bytes: 4 * 100 * 30,
        ..GpuTarget::default()
    };
    let s = shaders("network N(input: 100) { dense d(70) }", &target);
    let rows = weight_rows(&s);
    assert_eq!(rows, [0..30, 30..60, 60..70]);
    assert_eq!(s[2].label, "d [outputs 60..70]");
}

#[test]
fn a_row_larger_than_a_binding_is_refused_with_the_sizes() {
    let mut compilation = crate::compile("network N(input: 100) { dense d(7) }");
    let fused = fuse(&compilation.networks.remove(0));
    let target = GpuTarget {
        max_binding_bytes: 100,
        ..GpuTarget::default()
    };
    let error = compile(&fused, &plan(&fused), &target).unwrap_err();
    assert_eq!(error.kernel, "d");
    assert!(error.reason.contains("400 bytes"), "{error}");
}

#[test]
fn grouped_weights_split_on_group_boundaries() {
    let target = GpuTarget {
        max_binding_bytes: 4 * 9 * 2 * 5,
        ..GpuTarget::default()
    };
    let s = shaders(
        "network N(input: 8x6x6) { conv c(8, 3x3, groups=4) }",
        &target,
    );
    let rows = weight_rows(&s);
    assert_eq!(rows, [0..4, 4..8]);
}

#[test]
fn a_residual_add_binds_its_operand_and_reads_it_in_the_epilogue() {
    let s = shaders(
        "network N(input: 4x5x5) { residual { conv(4, 3x3, pad=1) } \n relu }",
        &GpuTarget::default(),
    );
    assert_eq!(s.len(), 1);
    let reads = s[0]
        .bindings
        .iter()
        .filter(|b| matches!(b, Binding::Activations { write: false, .. }))
        .count();
    // The conv's input is the add's operand: one buffer, bound once.
    assert_eq!(reads, 1);
    assert!(s[0].wgsl.contains("v = max(v, 0.0);"));
}

#[test]
fn a_dispatch_beyond_one_dimension_wraps_into_the_second() {
    let shader = Shader {
        kernel: 0,
        label: String::new(),
        wgsl: String::new(),
        bindings: Vec::new(),
        workgroups: 70_000,
    };
    assert_eq!(shader.grid(&GpuTarget::default()), [65535, 2]);
}

#[test]
fn the_gpu_graph_computes_every_conv_directly() {
    // The CPU would take Winograd for these 3x3 convs; the GPU's shaders do not, and
    // its graph says so.
    let source = "network N(input: 64x28x28) { conv(64, 3x3, pad=1) relu conv(64, 3x3, pad=1) }";
    let mut compilation = crate::compile(source);
    assert!(!compilation.has_errors(), "{:?}", compilation.diagnostics);
    let net = compilation.networks.remove(0);
    let on_cpu = crate::passes::fuse_with(&net, crate::passes::WinogradPolicy::Everywhere { m: 2 });
    assert!(
        on_cpu
            .kernels
            .iter()
            .any(|k| k.algorithm != crate::passes::Algorithm::Direct)
    );
    let on_gpu = super::fuse(&net);
    assert!(
        on_gpu
            .kernels
            .iter()
            .all(|k| k.algorithm == crate::passes::Algorithm::Direct)
    );
}
