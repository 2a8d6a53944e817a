//! The JIT backend against the reference interpreter: generated conv, dense, pooling,
//! LRN, softmax, adaptive pooling and element-wise kernels (im2col packing, the blocked
//! product over the microkernel, epilogues, lone activations and batch norms, unfused
//! adds and copying concats) on the examples, the ONNX Runtime fixtures, generated
//! networks, and generated odd layers (strides 1-3, dilation, asymmetric padding,
//! groups, 1xN kernels, ceil-mode pools, channel counts off the vector width) at batch
//! sizes 1 to 3, with random batch norm statistics; with the precompiled tile and the
//! one generated with Cranelift. Tolerance: max |jit − reference| <= 1e-4 × max
//! |reference|: the tile sums in another order than the reference's matrix product,
//! and softmax's `exp` is generated (within 2 ulp of the reference's).

mod common;

use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::codegen;
use cnnc_runtime::Tensor;
use cnnc_runtime::jit::{self, TileChoice};
use cnnc_runtime::reference::{self, RunOptions};
use cnnc_runtime::weights::Weights;
use common::{example, generated_network, input, network, onnx_fixtures, relative_error, weights};
use proptest::prelude::*;

const TOLERANCE: f32 = 1e-4;

fn compare(net: &CheckedGraph, weights: &Weights, input: Tensor) -> f32 {
    compare_with(net, weights, input, TileChoice::Auto)
}

/// What the reference interpreter computes for `input`.
fn reference_output(net: &CheckedGraph, weights: &Weights, input: &Tensor) -> Tensor {
    reference::run(net, weights, vec![input.clone()], &RunOptions::default())
        .expect("reference runs")
        .output
}

fn compare_with(net: &CheckedGraph, weights: &Weights, input: Tensor, tile: TileChoice) -> f32 {
    let expected = reference_output(net, weights, &input);
    let threads = rayon::current_num_threads();
    let program = jit::Program::with_options(net, weights, tile_options(threads, tile))
        .expect("the JIT compiles");
    assert_eq!(
        program.on_reference_path(),
        Vec::<String>::new(),
        "all generated"
    );
    let actual = program.run(vec![input.clone()]).expect("the JIT runs");
    // A second run reuses the first's buffers and must not depend on what they hold.
    let again = program.run(vec![input]).expect("the JIT runs again");
    assert_eq!(actual, again, "a second run computes the same");
    relative_error(&actual, &expected)
}

#[test]
fn every_kernel_of_every_example_is_generated() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let (target, _) = jit::host_target(2).expect("the host ISA");
    let mut count = 0;
    for entry in std::fs::read_dir(root).expect("examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "cnn") {
            continue;
        }
        let net = network(&std::fs::read_to_string(&path).expect("readable"));
        let fused = cnnc_compiler::passes::fuse(&net);
        let threads = cnnc_compiler::codegen::cpu::kernel_threads(&net, &fused, 2);
        let codes = cnnc_compiler::codegen::cpu::compile(&fused, &target, &threads);
        for (kernel, code) in fused.kernels.iter().zip(&codes) {
            assert!(
                code.is_some(),
                "{}: {} ({}) has no generated code",
                path.display(),
                kernel.name,
                kernel.op.kind()
            );
        }
        count += 1;
    }
    assert!(count >= 19, "only {count} examples found");
}

#[test]
fn softmax_adaptive_pooling_and_lone_element_wise_kernels_agree_with_the_reference() {
    // Each kernel kind the passes leave alone, at odd sizes and batch 2: softmax over a
    // vector and over the channels of an image; adaptive pools whose cells overlap;
    // lone activations and batch norms (after a pool, nothing to fuse into), adds that
    // stay adds (after pools; three operands with a scale), and a concat that copies
    // (one operand is the input, one is read twice). Lone kernels also write channel
    // slices of concats done in place. And a conv over its whole input, computed as a
    // matrix-vector product, with a residual add after it.
    let sources = [
        "network W(input: 5x4x3) { -> x conv(7, 4x3) bn sigmoid -> y conv(7, 1x1) -> z add(y, z) }",
        "network S(input: 7x5x3) { softmax }",
        "network S(input: 3x5x5) { flatten dense(13) -> d sigmoid softmax }",
        "network A(input: 5x11x7) { adaptiveavgpool(size=3) adaptivemaxpool(size=[2, 5]) }",
        "network A(input: 3x6x9) { adaptivemaxpool(size=[4, 7]) adaptiveavgpool(size=[5, 1]) }",
        // Rows whose interior columns are not whole groups of four: the last group
        // overlaps the one before it (widths 11 and 23: 9 and 10 interior columns).
        "network O(input: 4x6x11) { -> x maxpool(3x3, stride=1, pad=1) -> p from x avgpool(3x3, stride=1, pad=1) -> q add(p, q) }",
        "network O(input: 4x6x23) { maxpool(3x3, stride=2, pad=1) avgpool(2x2, stride=1) }",
        // Max pools whose interior groups take the maximum down the rows first: windows
        // 5 and 1 wide at stride 1, 2 wide at stride 2, dilated down the rows.
        "network R(input: 3x7x37) {
            maxpool(5x5, stride=1, pad=2) maxpool(1x1) maxpool([3, 2], stride=[1, 2], dilation=[2, 1], pad=[2, 0])
        }",
        // Global pools over planes of 3, 15 and 81 floats: no whole vector, three
        // vectors and three floats, five rounds of four vectors and one float.
        "network G(input: 6x3x1) { -> x globalavgpool -> a from x globalmaxpool -> m concat(a, m) }",
        "network G(input: 6x5x3) { -> x globalavgpool -> a from x globalmaxpool -> m concat(a, m) }",
        "network G(input: 6x9x9) { -> x globalavgpool -> a from x globalmaxpool -> m concat(a, m) }",
        "network E(input: 6x7x5) {
            maxpool(3x3, stride=1, pad=1) relu avgpool(2x2, stride=1) tanh
            maxpool(2x2, stride=1) sigmoid maxpool(1x1) leakyrelu(0.2) maxpool(1x1) relu6
            maxpool(1x1) bn
        }",
        "network E(input: 5x3x9) {
            -> x maxpool(3x3, stride=1, pad=1) -> p avgpool(3x3, stride=1, pad=1) -> q
            add(x, p, q) maxpool(1x1) -> r residual(scale=0.3) { maxpool(3x3, stride=1, pad=1) } 
            -> s concat(x, s, s) relu
        }",
        "network C(input: 4x5x6) {
            concat {
                branch { maxpool(3x3, stride=1, pad=1) relu }
                branch { avgpool(3x3, stride=1, pad=1) bn }
                branch { maxpool(3x3, stride=1, pad=1) tanh }
                branch { conv(3, 1x1) softmax }
            }
            flatten relu
        }",
    ];
    for source in sources {
        let net = network(source);
        for batch in [1, 2] {
            let error = compare(&net, &weights(&net, 7), input(&net, batch, 8));
            assert!(error <= TOLERANCE, "relative error {error:e} for\n{source}");
        }
    }
}

#[test]
fn generated_tanh_and_sigmoid_are_within_a_few_ulp_everywhere() {
    // Element by element over [-20, 20] (tanh's clamp at 9, and 0.625, where Cephes'
    // two forms met), tiny and huge magnitudes, zeros, infinities and NaN, against the
    // reference's f32 functions; odd length, so the scalar tail runs too.
    let mut values: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 / 1000.0).collect();
    values.extend([
        0.0,
        -0.0,
        1e-30,
        -1e-7,
        3e-4,
        0.624_999_9,
        0.625,
        0.625_000_1,
        9.0,
        1e30,
    ]);
    values.extend([
        -1e30,
        88.5,
        -88.5,
        100.0,
        -100.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ]);
    let len = values.len();
    let input = Tensor::from_shape_vec(vec![1, len], values.clone()).expect("shape");
    // The runtime's row helpers with the precompiled tile, the inline f32x4 code with
    // the generated one.
    for (activation, tile) in [
        ("tanh", TileChoice::Auto),
        ("sigmoid", TileChoice::Auto),
        ("tanh", TileChoice::Cranelift),
        ("sigmoid", TileChoice::Cranelift),
    ] {
        let net = network(&format!("network A(input: {len}) {{ {activation} }}"));
        let weights = weights(&net, 1);
        let program =
            jit::Program::with_options(&net, &weights, tile_options(1, tile)).expect("compiles");
        let actual = program.run(vec![input.clone()]).expect("runs");
        let expected = reference_output(&net, &weights, &input);
        for ((x, a), e) in values.iter().zip(actual.iter()).zip(expected.iter()) {
            if e.is_nan() {
                assert!(a.is_nan(), "{activation}({x}) = {a}, not NaN");
                continue;
            }
            // 4 ulp of the result, or 1e-30 where it underflows (sigmoid far below 0:
            // the generated exp clamps its input, so 6e-39 rather than 0).
            let allowed = (4.0 * f32::EPSILON * e.abs()).max(1e-30);
            assert!(
                (a - e).abs() <= allowed,
                "{activation}({x}) = {a}, the reference {e} ({tile:?} tile)"
            );
            // At ±0 the very bits: tanh(−0) is −0.
            if *x == 0.0 {
                assert_eq!(
                    a.to_bits(),
                    e.to_bits(),
                    "{activation}({x}) = {a:?}, the reference {e:?} ({tile:?} tile)"
                );
            }
        }
    }
}

#[test]
fn the_generated_tile_multiplies_and_accumulates() {
    // The Cranelift tile against the naive product (`Microkernel::check`).
    let net = example("lenet5");
    let weights = weights(&net, 1);
    let program =
        jit::Program::with_options(&net, &weights, tile_options(1, TileChoice::Cranelift))
            .expect("compiles");
    let tile = program
        .microkernel()
        .expect("a compiled program has a tile");
    assert!(tile.name.starts_with("cranelift"), "{tile:?}");
    tile.check().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_generated_tile_agrees_with_the_reference() {
    // The Cranelift tile (6x8, f32x4) in place of the precompiled one: its panels,
    // edges and K blocks through every kind of layer.
    for (name, batch) in [
        ("lenet5", 2),
        ("googlenet", 1),
        ("resnet18", 2),
        ("alexnet", 1),
    ] {
        let net = example(name);
        let error = compare_with(
            &net,
            &weights(&net, 3),
            input(&net, batch, 4),
            TileChoice::Cranelift,
        );
        eprintln!("{name} on the generated tile: relative error {error:e}");
        assert!(error <= TOLERANCE, "{name}: relative error {error:e}");
    }
}

#[test]
fn programs_that_run_once_compute_the_same_bits() {
    // Compiled to run once, the kernels that run for less than their optimisation
    // takes go through Cranelift's baseline tier: the same floating-point operations
    // in the same order, so the same output to the bit. On batches this large no
    // kernel is done sooner by the reference kernels (which would not give the same
    // bits; see the next test).
    for (name, samples) in [("lenet5", 256), ("googlenet", 8)] {
        let net = example(name);
        let (weights, input) = (weights(&net, 2), input(&net, 1, 3));
        let once = jit::Options {
            runs: jit::Runs::Once { samples },
            ..jit::Options::from_env(2)
        };
        let once = jit::Program::with_options(&net, &weights, once).expect("compiles");
        let many = jit::Program::with_threads(&net, &weights, 2).expect("compiles");
        assert_eq!(many.baseline_functions(), 0, "{name}");
        assert!(once.baseline_functions() > 0, "{name}");
        assert_eq!(once.interpreted_kernels(), 0, "{name}");
        let (a, b) = (
            once.run(vec![input.clone()]).expect("runs"),
            many.run(vec![input]).expect("runs"),
        );
        assert!(
            a.iter()
                .zip(b.iter())
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name}: the tiers disagree"
        );
    }
}

#[test]
fn kernels_run_once_sooner_than_compiled_are_interpreted() {
    // LeNet-5 once on one sample: every kernel takes the reference kernels less time
    // than Cranelift takes to compile it. GoogLeNet's convs are worth compiling even
    // for one run; programs that run many times interpret nothing.
    let cases = [("lenet5", 1, Some(8)), ("googlenet", 1, None)];
    for (name, samples, all_interpreted) in cases {
        let net = example(name);
        let (weights, input) = (weights(&net, 2), input(&net, 1, 5));
        let once = jit::Options {
            runs: jit::Runs::Once { samples },
            ..jit::Options::from_env(2)
        };
        let once = jit::Program::with_options(&net, &weights, once).expect("compiles");
        let many = jit::Program::with_threads(&net, &weights, 2).expect("compiles");
        let (interpreted, kernels) = (once.interpreted_kernels(), once.generated().1);
        eprintln!("{name}: {interpreted} of {kernels} kernels interpreted");
        match all_interpreted {
            Some(count) => {
                assert_eq!((interpreted, kernels), (count, count), "{name}");
                // Decided before any code was generated: no tile, not even an ISA.
                assert!(once.microkernel().is_none(), "{name}");
            }
            None => assert!(once.generated().0 * 2 > kernels, "{name}: {interpreted}"),
        }
        assert_eq!(many.interpreted_kernels(), 0, "{name}");
        let expected = reference_output(&net, &weights, &input);
        let output = once.run(vec![input]).expect("runs");
        let error = relative_error(&output, &expected);
        assert!(error <= TOLERANCE, "{name}: relative error {error:e}");
    }
}

#[test]
fn dense_layers_prefetch_only_weights_that_do_not_stay_in_l2() {
    // LeNet-5's 244 KB of weights stay in L2 from one run to the next; 2.4 MB of them
    // (a 1000 -> 600 dense layer) do not. Both compute the same bits either way
    // (`gemv`'s own tests).
    for (net, stay) in [
        (example("lenet5"), true),
        (network("network D(input: 1000) { dense(600) }"), false),
    ] {
        let weights = weights(&net, 1);
        let program = jit::Program::with_threads(&net, &weights, 1).expect("compiles");
        assert_eq!(program.weights_stay_in_l2(), stay, "{}", net.graph.name);
    }
}

#[test]
fn repeated_blocks_share_their_compiled_code() {
    // ResNet-152's 50 bottlenecks come in four shapes (plus each stage's first): most
    // kernels reuse a function compiled for an earlier one. The examples above check
    // that the shared code computes each kernel's own result.
    let net = example("resnet152");
    let weights = weights(&net, 1);
    let program = jit::Program::new(&net, &weights).expect("compiles");
    let (generated, _) = program.generated();
    let distinct = program.distinct_functions();
    eprintln!("resnet152: {distinct} distinct functions for {generated} kernels");
    assert!(
        distinct * 4 < generated,
        "{distinct} distinct functions for {generated} kernels"
    );
    // Shared exactly where the printed functions, names aside, are the same text.
    let (target, _) = jit::host_target(rayon::current_num_threads()).expect("host");
    let fused = program.fused();
    let threads = codegen::cpu::kernel_threads(&net, fused, rayon::current_num_threads());
    let texts: std::collections::HashSet<String> = codegen::cpu::compile(fused, &target, &threads)
        .into_iter()
        .flatten()
        .map(|mut code| {
            code.function.name = Default::default();
            code.function.display().to_string()
        })
        .collect();
    assert_eq!(distinct, texts.len());
}

#[test]
fn examples_agree_with_the_reference() {
    // Grouped convs (AlexNet), ceil-mode pools and LRN between generated kernels
    // (GoogLeNet, NIN), 1xN and Nx1 kernels with asymmetric work (Inception-v3),
    // residual epilogues (ResNet), dense layers and tanh (LeNet-5).
    for (name, batch) in [
        ("lenet5", 2),
        ("alexnet", 1),
        ("nin", 1),
        ("googlenet", 2),
        ("inception_v3", 1),
        ("resnet18", 2),
        ("resnet50", 1),
    ] {
        let net = example(name);
        let error = compare(&net, &weights(&net, 3), input(&net, batch, 4));
        eprintln!("{name}: relative error {error:e}");
        assert!(error <= TOLERANCE, "{name}: relative error {error:e}");
    }
}

#[test]
fn pools_over_wide_rows_equal_the_reference_exactly() {
    // Rows wide enough for the four-lane interior, at strides 1 and 2 (whose loads pair
    // up), with padded borders written one by one, ceil mode's partial windows, a
    // dilated max, and a border too wide to unroll (a 19x19 window with padding 9):
    // the same taps in the same order, so the same bits.
    let sources = [
        "network P(input: 3x9x37) { maxpool(3x3, stride=1, pad=1) avgpool(3x3, stride=1, pad=1) }",
        "network P(input: 3x10x41) { maxpool(3x3, stride=2, ceil=true) maxpool(2x2, stride=2) }",
        "network P(input: 2x11x42) { avgpool(3x3, stride=2, pad=1, ceil=true, count_include_pad=false) }",
        "network P(input: 2x11x42) { avgpool(3x2, stride=2, pad=1, ceil=true) }",
        "network P(input: 2x12x40) { maxpool(3x3, stride=1, pad=[2, 1, 0, 2], dilation=2) }",
        "network P(input: 2x21x40) { maxpool(19x19, stride=1, pad=9) }",
        "network P(input: 2x8x45) { maxpool(2x4, stride=3, pad=[1, 2, 1, 2]) }",
    ];
    for source in sources {
        let net = network(source);
        let error = compare(&net, &weights(&net, 1), input(&net, 2, 5));
        assert_eq!(error, 0.0, "{source}");
    }
}

#[test]
fn strided_convolutions_over_phased_rows_agree_with_the_reference() {
    // Kernels that read each input several times at a horizontal stride of 3 or more
    // split their staged rows into phases (`pack/straight.rs`, whose tests check that
    // these shapes take that path): an 11x11/4 without padding (staged all the same) on
    // rows not a multiple of 4; a 7x7/3 with asymmetric padding; a dilated 5x5 at
    // stride 1x3; a 4x6 at 1x3 whose rows start on a padded column of every phase; a
    // 7x7/3 with more left padding than its stride and outputs 3 wide (fours of
    // columns across rows); a 12x1 at 1x3, narrower than its stride; at two threads
    // too, whose chunks start mid-plane.
    let sources = [
        "network S(input: 3x51x53) { conv(24, 11x11, stride=4) }",
        "network S(input: 4x31x40) { conv(16, 7x7, stride=3, pad=[2, 1, 0, 2]) relu }",
        "network S(input: 5x23x29) { conv(13, 5x5, stride=[1, 3], pad=2, dilation=2) relu }",
        "network S(input: 6x17x33) { conv(7, 4x6, stride=[1, 3], pad=[1, 3, 2, 1]) }",
        "network S(input: 3x11x5) { conv(5, 7x7, stride=3, pad=[1, 5, 0, 4]) }",
        "network S(input: 2x14x20) { conv(4, 12x1, stride=[1, 3]) relu }",
    ];
    for source in sources {
        let options = [1, 2].map(|threads| tile_options(threads, TileChoice::Auto));
        agrees_compiled_each_way(source, options);
    }
}

#[test]
fn products_over_shifted_copies_agree_with_the_reference() {
    // Stride-1 unpadded convs taller than a row read B from shifted copies of their
    // input through a table of offsets (`pack/shifted.rs`): kernels 2 to 7 wide and
    // tall, groups, K near one block (40 x 3 x 2 = 240), outputs cut into several row
    // chunks on two threads, edge tiles in both directions, batch 2; on the
    // precompiled and the generated tiles, and bounds-checked (the generated tile's
    // last panel reads past the copies, into the table and the slack kept for it: a
    // K of 2 has a table of 4 floats).
    let sources = [
        "network S(input: 1x32x32) { conv(6, 5x5) tanh }",
        "network S(input: 3x23x19) { conv(7, 3x2) relu }",
        "network S(input: 4x17x9) { conv(12, 7x1) }",
        "network S(input: 8x12x13) { conv(8, 2x4, groups=4) relu }",
        "network S(input: 40x9x10) { conv(20, 3x2) }",
        "network S(input: 3x70x64) { conv(13, 3x2) relu }",
        "network S(input: 1x8x37) { conv(3, 2x1) }",
        // A padded conv's staged plane makes the scratch an odd count of floats, which
        // the trailing guard ends on a page: the table then starts 4 bytes off 8.
        "network S(input: 2x9x9) { conv(4, 3x3, pad=1) conv(4, 2x2) }",
    ];
    let mut options = Vec::new();
    for threads in [1, 2] {
        for tile in [TileChoice::Auto, TileChoice::Cranelift] {
            for guard in GUARDS {
                options.push(jit::Options {
                    guard,
                    ..tile_options(threads, tile)
                });
            }
        }
    }
    for source in sources {
        agrees_compiled_each_way(source, options.iter().copied());
    }
}

#[test]
fn products_over_staged_rows_agree_with_the_reference() {
    // Padded or strided convs whose output rows fill the tile's panels read their
    // staged plane in place, a row's panels at a time (`pack/staged.rs`): a stem-like
    // 7x7/2 whose rows are a panel and a half (48 = 32 + 16), a padded 3x3 at stride 1
    // with rows of two panels, a 5x5/3 with asymmetric padding (three phases), two
    // groups, a short last chunk (25 rows), a residual add and ReLU finished in the
    // tiles; batch 2, one to three threads, and with a guard page after and before
    // every buffer. (That a row's last panel reads no column past its own phase is
    // `pack/staged.rs`'s unit test: such reads would land in the scratch.)
    let sources = [
        "network S(input: 3x40x96) { conv(24, 7x7, stride=2, pad=3) relu }",
        "network S(input: 3x25x64) { -> x conv(3, 3x3, pad=1) bn -> y add(x, y) relu }",
        "network S(input: 4x30x143) { conv(20, 5x5, stride=3, pad=[2, 1, 0, 2]) }",
        "network S(input: 6x20x64) { conv(10, 3x3, pad=1, groups=2) relu }",
        // Inception-v3's first layer in small: rows of 61, the last panel 29 wide.
        "network S(input: 3x32x123) { conv(32, 3x3, stride=2) relu }",
    ];
    for source in sources {
        let net = network(source);
        for threads in [1, 2, 3] {
            let (target, _) = jit::host_target(threads).expect("a target");
            let weights = weights(&net, 3);
            let program = jit::Program::with_threads(&net, &weights, threads).expect("compiles");
            let fused = program.fused();
            let staged = fused
                .kernels
                .iter()
                .filter_map(|k| codegen::cpu::Geometry::of(fused, k))
                .any(|g| g.staged_rows(&target));
            assert_eq!(staged, target.exact_edges, "{source}, {threads} threads");
        }
        let options = [1, 2, 3]
            .into_iter()
            .flat_map(|threads| GUARDS.map(|guard| (threads, guard)))
            .map(|(threads, guard)| jit::Options {
                guard,
                ..tile_options(threads, TileChoice::Auto)
            });
        agrees_compiled_each_way(source, options);
    }
}

/// No guard page, one after every buffer, one before.
const GUARDS: [Option<jit::guarded::Guard>; 3] = [
    None,
    Some(jit::guarded::Guard::Trailing),
    Some(jit::guarded::Guard::Leading),
];

/// `source`'s network through the JIT compiled with each of `options`, against the
/// reference (seeded weights, a batch of 2).
fn agrees_compiled_each_way(source: &str, options: impl IntoIterator<Item = jit::Options>) {
    let net = network(source);
    let (weights, input) = (weights(&net, 3), input(&net, 2, 4));
    let expected = reference_output(&net, &weights, &input);
    for options in options {
        let program =
            jit::Program::with_options(&net, &weights, options).expect("the JIT compiles");
        let actual = program.run(vec![input.clone()]).expect("the JIT runs");
        let error = relative_error(&actual, &expected);
        assert!(
            error <= TOLERANCE,
            "{source} ({options:?}): relative error {error:e}"
        );
    }
}

#[test]
fn lrn_windows_and_powers_agree_with_the_reference() {
    // Odd and even windows, the paper's unscaled alpha, and a beta that needs the
    // general power (0.6) beside the square-root ones (0.75, 0.5, 1).
    let source = "network L(input: 7x5x6) {
        lrn(size=5, beta=0.75) lrn(size=4, beta=0.6, k=2, alpha=0.01, alpha_scaled=false)
        lrn(size=3, beta=0.5, alpha=0.1) lrn(size=1, beta=1, alpha=0.2)
    }";
    let net = network(source);
    let error = compare(&net, &weights(&net, 1), input(&net, 2, 9));
    assert!(error <= TOLERANCE, "relative error {error:e}");
    // Enough channels that most windows lie inside (their taps at fixed offsets), and
    // enough work (67 x 40 x 40 x 5 units a sample) for threads to take runs of a few
    // channels starting anywhere; a window too wide to unroll loops over its taps.
    let net =
        network("network L(input: 67x40x40) { lrn(size=5, beta=0.75) lrn(size=6) lrn(size=17) }");
    let (weights, input) = (weights(&net, 1), input(&net, 2, 4));
    let expected = reference_output(&net, &weights, &input);
    for threads in [1, 2, 3] {
        let program = jit::Program::with_threads(&net, &weights, threads).expect("compiles");
        let actual = program.run(vec![input.clone()]).expect("runs");
        let error = relative_error(&actual, &expected);
        assert!(
            error <= TOLERANCE,
            "{threads} threads: relative error {error:e}"
        );
    }
}

#[test]
fn epilogues_finished_in_the_tiles_equal_the_pass_exactly() {
    // The tiles of a direct conv's last K block add the bias and the residual and apply
    // the ReLU before their one store; the pass over the output after the product adds
    // in the same order, so both give the same bits: for ResNet-18 (bias, residual and
    // ReLU; a bias alone on the projections; Winograd layers, which keep the pass) and
    // for a net of several K blocks, short row tiles and edge columns, on the
    // precompiled tile and the generated one. Where the tile does the start of an
    // epilogue (a bias before a tanh or a scaled add, a ReLU before a batch norm), the
    // pass does the rest: LeNet-5's convs, and the net's last layers.
    let edges = "network E(input: 300x9x11) {
        conv(13, 1x1) relu
        residual { conv(13, 3x3, pad=1) } shortcut { }
        relu
        conv(7, 3x3, stride=2, pad=1)
        residual(scale=0.5) { conv(7, 3x3, pad=1) relu bn }
        conv(9, 3x3, pad=1) tanh
    }";
    for (name, net, threads) in [
        ("resnet18", example("resnet18"), 2),
        ("lenet5", example("lenet5"), 1),
        ("edges", network(edges), 3),
    ] {
        let (weights, input) = (weights(&net, 7), input(&net, 2, 8));
        for tile in [TileChoice::Auto, TileChoice::Cranelift] {
            let outputs: Vec<Tensor> = [false, true]
                .into_iter()
                .map(|tile_epilogue| {
                    let options = jit::Options {
                        tile_epilogue,
                        ..tile_options(threads, tile)
                    };
                    let program =
                        jit::Program::with_options(&net, &weights, options).expect("compiles");
                    program.run(vec![input.clone()]).expect("runs")
                })
                .collect();
            assert_eq!(outputs[0], outputs[1], "{name} on {tile:?}");
        }
    }
}

#[test]
fn any_number_of_threads_computes_the_same() {
    // Threads split each kernel's chunks (conv rows, pooling channels): the output must
    // not depend on how.
    for name in ["googlenet", "resnet18"] {
        let net = example(name);
        let (weights, input) = (weights(&net, 5), input(&net, 2, 6));
        let outputs: Vec<Tensor> = [1, 2, 3, 8]
            .into_iter()
            .map(|threads| {
                let program =
                    jit::Program::with_threads(&net, &weights, threads).expect("compiles");
                program.run(vec![input.clone()]).expect("runs")
            })
            .collect();
        for output in &outputs[1..] {
            assert_eq!(output, &outputs[0], "{name}");
        }
    }
}

#[test]
fn epilogues_around_activation_helpers_agree_with_the_reference() {
    // Tanh and sigmoid are calls over the rows where the tile is precompiled, with the
    // epilogue's other steps as passes before and after them: a batch norm after the
    // activation, a residual add between two. Outputs large enough for the threads to
    // cut rows (so a chunk's rows are not all of a channel's), and a dense layer's
    // vector; inline code with the generated tile.
    let layers = [
        ("8x40x40", "conv(16, 3x3, pad=1) sigmoid bn"),
        ("8x40x40", "residual { conv(8, 3x3, pad=1) tanh } sigmoid"),
        ("8x41x39", "conv(9, 3x3, stride=2) tanh"),
        ("5x6x7", "flatten dense(37) tanh bn dense(19) sigmoid"),
    ];
    for (input_shape, layer) in layers {
        let source = format!("network A(input: {input_shape}) {{ {layer} }}");
        let net = network(&source);
        let (weights, input) = (weights(&net, 5), input(&net, 2, 6));
        let expected = reference_output(&net, &weights, &input);
        for tile in [TileChoice::Auto, TileChoice::Cranelift] {
            for threads in [1, 2, 3] {
                let program =
                    jit::Program::with_options(&net, &weights, tile_options(threads, tile))
                        .expect("compiles");
                let actual = program.run(vec![input.clone()]).expect("runs");
                let error = relative_error(&actual, &expected);
                assert!(
                    error <= TOLERANCE,
                    "{tile:?} tile, {threads} threads: relative error {error:e} for\n{source}"
                );
            }
        }
    }
}

#[test]
fn pools_their_conv_computes_agree_with_the_reference() {
    // A pool whose windows tile a direct conv's output is computed by the conv, chunk
    // by chunk of rows, where the threads' chunks allow (LeNet-5's C1 and S2): after
    // tanh and after a residual add, average and max, 2x2 and 3x3 windows, channel
    // counts that leave a short tile, a pointwise conv, a pool that writes its slice
    // of a concat; two samples, one to three threads.
    let layers = [
        (
            "1x32x32",
            "conv(6, 5x5) tanh avgpool(2x2) conv(16, 5x5) tanh avgpool(2x2)",
        ),
        ("3x40x40", "conv(20, 3x3, pad=1) relu maxpool(2x2)"),
        ("8x36x30", "conv(13, 3x3, pad=1) maxpool(3x3)"),
        (
            "16x24x24",
            "residual { conv(16, 3x3, pad=1) } relu maxpool(2x2)",
        ),
        ("6x20x20", "conv(40, 1x1) relu avgpool(2x2)"),
        (
            "4x16x16",
            "concat { branch { conv(8, 3x3, pad=1) relu maxpool(2x2) } branch { avgpool(2x2) } }",
        ),
    ];
    for (input_shape, layer) in layers {
        let source = format!("network P(input: {input_shape}) {{ {layer} }}");
        let net = network(&source);
        let (weights, input) = (weights(&net, 5), input(&net, 2, 6));
        let expected = reference_output(&net, &weights, &input);
        for threads in [1, 2, 3] {
            let program = jit::Program::with_threads(&net, &weights, threads).expect("compiles");
            // At one thread every pool the passes marked is computed by its conv (none
            // is marked where CNNC_WINOGRAD makes the convs Winograd's).
            let fused = program.fused();
            let marked = fused.kernels.iter().filter(|k| k.with_producer).count();
            let in_conv = (0..fused.kernels.len())
                .filter(|&k| program.op_text(k).contains("[in "))
                .count();
            if threads == 1 {
                assert_eq!(in_conv, marked, "{source}");
                let forced = std::env::var_os("CNNC_WINOGRAD").is_some();
                assert!(forced || marked > 0, "no pool marked in\n{source}");
            }
            let actual = program.run(vec![input.clone()]).expect("runs");
            let error = relative_error(&actual, &expected);
            assert!(
                error <= TOLERANCE,
                "{threads} threads: relative error {error:e} for\n{source}"
            );
        }
    }
}

#[test]
fn pixel_major_products_agree_with_the_reference() {
    // Small outputs whose channels fill the tile better than their pixels, over
    // enough input channels to pay for the transposing pass, turn the product over;
    // threads split their pixels in spans that start mid-row (or, for
    // weights too big for L2, their channels). Strides,
    // padding on one side, 1xN kernels, pointwise convs, a residual add and channel
    // counts that leave the last weights panel short. (Stride-1 3x3 convs of at least
    // 32 channels at 7x7 are Winograd's: these are 6x6.)
    let layers = [
        ("64x6x6", "conv(64, 3x3, pad=1) relu"),
        ("32x15x13", "conv(96, 3x3, stride=2, pad=[0, 1, 2, 1]) relu"),
        ("160x7x7", "conv(64, 1x1) relu"),
        // Pixels left over after the groups of four that are transposed in registers:
        // 45 pixels (1 over) on one thread, 27 and 18 (3 and 2 over) on two, 18, 18 and
        // 9 on three; enough work (5 M multiply-adds) for every thread to take part.
        ("96x5x9", "conv(128, 3x3, pad=1) relu"),
        ("32x9x9", "conv(96, 1x5, pad=[0, 2]) tanh"),
        ("16x7x7", "conv(88, 3x3, pad=1)"),
        // 2.2 MiB of weights: the threads split the channels (three panels, the last
        // of 26 channels, not a multiple of four) instead of the pixels.
        ("704x6x6", "conv(90, 3x3, pad=1) relu"),
        (
            "64x6x6",
            "residual { conv(64, 3x3, pad=1) bn relu\n conv(64, 3x3, pad=1) bn } relu",
        ),
    ];
    check_pixel_major(&layers, None);
}

#[test]
fn pointwise_pixel_major_products_read_their_pixels_in_place() {
    // K = 600 in three blocks and 45 pixels (a tile of 9 over); 1100 x 500 weights
    // (2.1 MiB: two threads split the channels, the last panel 20 wide) for 49 pixels.
    let in_place = [
        ("600x5x9", "conv(96, 1x1) relu"),
        ("1100x7x7", "conv(500, 1x1)"),
    ];
    check_pixel_major(&in_place, Some(true));
    // 600 channels are 19 weight panels, each reading the pixels again: packed once.
    check_pixel_major(&[("96x7x7", "conv(600, 1x1) relu")], Some(false));
}

#[test]
fn pointwise_direct_products_read_their_columns_in_place() {
    // K = 300 in two blocks over 99 pixels (three panels and one of 3 columns, whose
    // loads stop where the input ends); a residual add and ReLU finished in the
    // tiles; a 1x1 conv after a strided one (not in place) feeding it; groups.
    let layers = [
        "network P(input: 300x9x11) { conv(40, 1x1) relu }",
        "network P(input: 200x12x12) { -> x conv(200, 1x1) bn -> y add(x, y) relu }",
        "network P(input: 3x30x30) { conv(160, 1x1, stride=2) relu conv(24, 1x1) }",
        // Four groups, each reading its 40 channels' planes in place.
        "network P(input: 160x16x16) { conv(64, 1x1, groups=4) relu }",
    ];
    for source in layers {
        agrees_on_one_to_three_threads(source, |program, target| {
            let fused = program.fused();
            let last = fused.kernels.last().expect("a kernel");
            let geometry = codegen::cpu::Geometry::of(fused, last).expect("a conv");
            assert!(geometry.columns_in_place(target), "{source}");
        });
    }
}

#[test]
fn the_generated_tile_keeps_its_panels_packed() {
    // The generated tile reads whole panels: B read in place would run past the
    // input's end at the last partial panel. Against a guard page after every buffer
    // that faulted (a crash of this test) before the tiles required `exact_edges`.
    let source = "network P(input: 288x35x35) { conv(64, 1x1) conv(48, 1x1) }";
    let net = network(source);
    let (weights, input) = (weights(&net, 3), input(&net, 1, 4));
    let expected = reference_output(&net, &weights, &input);
    let options = jit::Options {
        guard: Some(jit::guarded::Guard::Trailing),
        ..tile_options(1, TileChoice::Cranelift)
    };
    let program = jit::Program::with_options(&net, &weights, options).expect("compiles");
    let actual = program.run(vec![input]).expect("runs");
    let error = relative_error(&actual, &expected);
    assert!(error <= TOLERANCE, "relative error {error:e}");
}

/// `source` through the JIT on one to three threads, each against the reference;
/// `check` looks at each program (and its target) before it runs.
fn agrees_on_one_to_three_threads(
    source: &str,
    check: impl Fn(&jit::Program, &codegen::cpu::CpuTarget),
) {
    let net = network(source);
    let (weights, input) = (weights(&net, 3), input(&net, 2, 4));
    let expected = reference_output(&net, &weights, &input);
    for threads in [1, 2, 3] {
        let program = jit::Program::with_threads(&net, &weights, threads).expect("compiles");
        let (target, _) = jit::host_target(threads).expect("a target");
        check(&program, &target);
        let actual = program.run(vec![input.clone()]).expect("runs");
        let error = relative_error(&actual, &expected);
        assert!(
            error <= TOLERANCE,
            "{threads} threads: relative error {error:e} for\n{source}"
        );
    }
}

/// Each single-layer network through the JIT on one to three threads against the
/// reference, its conv pixel-major with the AVX-512 tile (and, if `in_place` says so,
/// reading its pixels in place or not).
fn check_pixel_major(layers: &[(&str, &str)], in_place: Option<bool>) {
    for (input_shape, layer) in layers {
        let source = format!("network P(input: {input_shape}) {{\n    {layer}\n}}");
        agrees_on_one_to_three_threads(&source, |program, target| {
            let fused = program.fused();
            let precompiled = program
                .microkernel()
                .is_some_and(|tile| tile.name == "avx512");
            // Every conv of the network (both of the residual block's).
            let convs = fused
                .kernels
                .iter()
                .filter_map(|k| codegen::cpu::Geometry::of(fused, k));
            for geometry in convs {
                assert_eq!(
                    geometry.pixel_major(target),
                    precompiled,
                    "pixel-major with the AVX-512 tile: {source}"
                );
                if let (Some(wanted), true) = (in_place, precompiled) {
                    let read = geometry.pixels_in_place(target);
                    assert_eq!(read, wanted, "pixels read in place: {source}");
                }
            }
        });
    }
}

#[test]
fn every_onnx_fixture_agrees_with_onnx_runtime() {
    for fixture in onnx_fixtures() {
        let (net, weights, input) = (&fixture.net, &fixture.weights, fixture.input.clone());
        let program = jit::Program::new(net, weights).expect("the JIT compiles");
        let actual = program.run(vec![input]).expect("the JIT runs");
        let error = relative_error(&actual, &fixture.expected);
        assert!(
            error <= TOLERANCE,
            "{} against ONNX Runtime: {error:e}",
            fixture.name
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn generated_networks_agree_with_the_reference(source in generated_network(), seed in 0u64..1000) {
        let net = network(&source);
        let error = compare(&net, &weights(&net, seed), input(&net, 2, seed));
        prop_assert!(error <= TOLERANCE, "relative error {:e} for\n{}", error, source);
    }

    #[test]
    fn generated_networks_agree_on_the_generated_tile(source in generated_network(), seed in 0u64..1000) {
        let net = network(&source);
        let error = compare_with(&net, &weights(&net, seed), input(&net, 2, seed), TileChoice::Cranelift);
        prop_assert!(error <= TOLERANCE, "relative error {:e} for\n{}", error, source);
    }
}

/// A convolution or pooling layer with odd sizes: the shapes the packing, the tile
/// edges and the pooling borders must all get right.
fn odd_layer() -> impl Strategy<Value = String> {
    (
        0u8..3,
        (1u64..4, 1u64..4),
        (1u64..4, 1u64..3),
        [0u64..3, 0u64..3, 0u64..3, 0u64..3],
        (1u64..20, 1u64..4, any::<bool>()),
    )
        .prop_map(|(kind, (kh, kw), (stride, dilation), [t, l, b, r], (out, groups, flag))| match kind {
            0 => format!(
                "conv({}, {kh}x{kw}, stride={stride}, pad=[{t}, {l}, {b}, {r}], dilation={dilation}, groups={groups}, bias={flag}) relu",
                out * groups
            ),
            1 => format!(
                "maxpool({kh}x{kw}, stride={stride}, pad=[{}, {}, {}, {}], ceil={flag})",
                t.min(kh / 2),
                l.min(kw / 2),
                b.min(kh / 2),
                r.min(kw / 2)
            ),
            _ => format!(
                "avgpool({kh}x{kw}, stride={stride}, pad={}, ceil={flag}, count_include_pad={})",
                t.min(kh.min(kw) / 2),
                groups == 1
            ),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn odd_convolutions_and_pools_agree_with_the_reference(
        channels in 1u64..5,
        (height, width) in (3u64..13, 3u64..13),
        layers in prop::collection::vec(odd_layer(), 1..4),
        batch in 1usize..4,
        seed in 0u64..1000,
    ) {
        // Groups must divide the channels: scale the input to every group count used.
        let channels = channels * 6;
        let source = format!("network O(input: {channels}x{height}x{width}) {{\n    {}\n}}", layers.join("\n    "));
        let compilation = cnnc_compiler::compile(&source);
        // Sizes that do not fit (a window larger than its padded input, groups that do not
        // divide) are the checker's business; only networks that check are compared.
        prop_assume!(!compilation.has_errors());
        let net = compilation.networks.into_iter().next().expect("a network");
        let error = compare(&net, &weights(&net, seed), input(&net, batch, seed));
        prop_assert!(error <= TOLERANCE, "relative error {:e} for\n{}", error, source);
    }
}

/// Compiled for `threads` with `tile`, the rest as the environment says.
fn tile_options(threads: usize, tile: TileChoice) -> jit::Options {
    jit::Options {
        tile,
        ..jit::Options::from_env(threads)
    }
}

/// A legal network of more kernels than the JIT compiles is refused with a message
/// before any code is generated, not left to exhaust memory (the fuzzer's nested
/// `repeat`s).
#[test]
fn a_network_of_too_many_kernels_is_refused_clearly() {
    let source = format!(
        "network Deep(input: 1x2x2) {{\n    repeat {} {{ conv(1, 1x1) }}\n}}\n",
        jit::MAX_KERNELS + 1
    );
    let net = network(&source);
    let weights = Weights::seeded(&net, 0);
    let error = jit::Program::with_threads(&net, &weights, 1)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains(&format!("{} kernels", jit::MAX_KERNELS + 1))
            && error.contains("--backend reference"),
        "{error}"
    );
}
