//! The generators' functions pass Cranelift's verifier, which the JIT turns off to
//! compile faster: every example's kernels, each conv direct and (where it can be)
//! through Winograd, and the generated tile.

mod common;

use cnnc_compiler::codegen::cpu::{self, tile};
use cnnc_compiler::passes::{self, WinogradPolicy};
use cranelift_codegen::ir::Function;
use cranelift_codegen::isa::TargetIsa;

fn verify(function: &Function, isa: &dyn TargetIsa, what: &str) {
    if let Err(errors) = cranelift_codegen::verify_function(function, isa) {
        panic!("{what}: {errors}\n{}", function.display());
    }
}

#[test]
fn every_example_s_generated_functions_verify() {
    let (target, isa) = cnnc_runtime::jit::host_target(2).expect("the host ISA");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("examples")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "cnn"))
        .collect();
    paths.sort();
    assert!(paths.len() > 10, "{paths:?}");
    for path in paths {
        let net = common::network(&std::fs::read_to_string(&path).expect("reads"));
        for policy in [
            WinogradPolicy::Off,
            WinogradPolicy::Everywhere { m: 2 },
            WinogradPolicy::Everywhere { m: 4 },
        ] {
            let mut fused = passes::fuse(&net);
            passes::choose_algorithms(&mut fused, policy);
            let threads = cpu::kernel_threads(&net, &fused, 2);
            for code in cpu::compile(&fused, &target, &threads).iter().flatten() {
                let kernel = &fused.kernels[code.kernel].name;
                verify(
                    &code.function,
                    &*isa,
                    &format!("{}: {kernel}", path.display()),
                );
            }
        }
    }
    for fma in [false, true] {
        verify(&tile::generate(target.frontend, fma), &*isa, "the tile");
    }
}
