//! Each pass on small networks, and the memory plan's invariants on every example.

use super::*;
use crate::ops::{Activation, Op};

fn network(source: &str) -> CheckedGraph {
    let mut compilation = crate::compile(source);
    assert!(!compilation.has_errors(), "{:?}", compilation.diagnostics);
    compilation.networks.remove(0)
}

fn fused(source: &str) -> FusedGraph {
    fuse(&network(source))
}

fn kernel<'a>(fused: &'a FusedGraph, name: &str) -> &'a Kernel {
    fused
        .kernels
        .iter()
        .find(|k| k.name == name || k.name.ends_with(&format!(".{name}")))
        .unwrap_or_else(|| panic!("no kernel {name} in {fused:#?}"))
}

fn ops(fused: &FusedGraph) -> Vec<&'static str> {
    fused.kernels.iter().map(|k| k.op.kind()).collect()
}

#[test]
fn batch_norm_folds_into_the_conv_before_it() {
    let f = fused("network N(input: 3x8x8) { conv c(4, 3x3, bias=false) bn b() relu }");
    assert_eq!(ops(&f), ["conv"]);
    let c = kernel(&f, "c");
    assert_eq!(c.folded_bn.as_ref().map(|b| b.layer.as_str()), Some("b"));
    assert_eq!(c.epilogue, [Step::Bias, Step::Activation(Activation::Relu)]);
    assert_eq!(c.layers, ["c", "b", "relu1"]);
    assert_eq!(c.output, f.output);
}

#[test]
fn batch_norm_after_a_pool_or_an_activation_is_not_folded() {
    let f = fused("network N(input: 3x8x8) { conv c(4, 3x3) maxpool(2x2) bn b() }");
    assert_eq!(ops(&f), ["conv", "maxpool", "bn"]);
    assert!(kernel(&f, "c").folded_bn.is_none());
    // After an activation the scale does not commute with the weights: it becomes a
    // scale-shift step after the activation instead.
    let f = fused("network N(input: 3x8x8) { conv c(4, 3x3) relu bn b() }");
    assert_eq!(ops(&f), ["conv"]);
    let c = kernel(&f, "c");
    assert!(c.folded_bn.is_none());
    assert_eq!(
        c.epilogue,
        [
            Step::Bias,
            Step::Activation(Activation::Relu),
            Step::ScaleShift {
                layer: "b".into(),
                eps: 1e-5
            }
        ]
    );
}

#[test]
fn a_conv_read_twice_keeps_its_activation_apart() {
    // The conv's output feeds the relu and the pool: the pool needs it before relu.
    let f = fused(
        "network N(input: 3x8x8) {
            conv c(4, 3x3, pad=1) bn b()
            concat { branch { relu r() } branch { maxpool(3x3, stride=1, pad=1) } }
        }",
    );
    let c = kernel(&f, "c");
    assert!(c.folded_bn.is_some(), "the BN alone still folds");
    assert_eq!(c.epilogue, [Step::Bias]);
    let relu = kernel(&f, "r");
    assert_eq!(relu.op, Op::Activation(Activation::Relu));
    assert_eq!(relu.inputs, [c.output]);
}

#[test]
fn softmax_and_lrn_stay_kernels() {
    let f = fused("network N(input: 3x8x8) { conv(4, 3x3) lrn conv(4, 3x3) softmax }");
    assert_eq!(ops(&f), ["conv", "lrn", "conv", "softmax"]);
}

#[test]
fn identity_residual_fuses_into_the_last_conv_of_the_path() {
    let f = fused(
        "network N(input: 4x8x8) {
            conv c0(4, 1x1) relu
            residual { conv c1(4, 3x3, pad=1) bn relu conv c2(4, 3x3, pad=1) bn }
            relu
        }",
    );
    assert_eq!(ops(&f), ["conv", "conv", "conv"]);
    let c0 = kernel(&f, "c0").output;
    let c2 = kernel(&f, "c2");
    assert_eq!(
        c2.epilogue,
        [
            Step::Bias,
            Step::Add {
                layer: "add1".into(),
                input: c0,
                self_scale: 1.0,
                input_scale: 1.0
            },
            Step::Activation(Activation::Relu)
        ]
    );
}

#[test]
fn a_projection_computed_last_carries_the_add_and_the_scale_stays_on_the_path() {
    let f = fused(
        "network N(input: 4x8x8) {
            residual(scale=0.5) { conv c1(8, 3x3, pad=1) relu } shortcut { conv p(8, 1x1) }
        }",
    );
    assert_eq!(ops(&f), ["conv", "conv"]);
    let c1 = kernel(&f, "c1");
    assert_eq!(
        c1.epilogue,
        [Step::Bias, Step::Activation(Activation::Relu)]
    );
    // add(p, c1) = p + 0.5·c1, and the shortcut runs after the path.
    let p = kernel(&f, "p");
    assert_eq!(
        p.epilogue,
        [
            Step::Bias,
            Step::Add {
                layer: "add1".into(),
                input: c1.output,
                self_scale: 1.0,
                input_scale: 0.5
            }
        ]
    );
}

#[test]
fn adds_of_three_or_of_non_convs_stay_kernels() {
    let f = fused(
        "network N(input: 4x8x8) {
            conv a(4, 1x1) -> x
            conv b(4, 1x1) -> y
            add(x, y, input)
            -> s
            maxpool(3x3, stride=1, pad=1) -> m
            add(m, s)
        }",
    );
    assert_eq!(ops(&f), ["conv", "conv", "add", "maxpool", "add"]);
}

#[test]
fn dropout_goes_and_flatten_is_a_view() {
    let f = fused("network N(input: 2x4x4) { dropout flatten dense d(3) dropout }");
    assert_eq!(ops(&f), ["dense"]);
    let d = kernel(&f, "d");
    let flat = d.inputs[0];
    assert_eq!(f.tensor(flat).place, Place::View(f.inputs[0]));
    assert_eq!(f.tensor(flat).shape.0, [32]);
    assert_eq!(f.output, d.output);
    assert_eq!(f.removed.len(), 3);
}

#[test]
fn concat_branches_write_their_slices() {
    let f = fused(
        "network N(input: 4x8x8) {
            concat {
                branch { conv a(2, 1x1) relu }
                branch { conv b(3, 3x3, pad=1) }
                branch { maxpool(3x3, stride=1, pad=1) }
            }
        }",
    );
    assert_eq!(ops(&f), ["conv", "conv", "maxpool"]);
    let offsets: Vec<_> = f.kernels.iter().map(|k| f.tensor(k.output).place).collect();
    assert_eq!(
        offsets,
        [
            Place::Slice {
                parent: f.output,
                offset: 0
            },
            Place::Slice {
                parent: f.output,
                offset: 2
            },
            Place::Slice {
                parent: f.output,
                offset: 5
            }
        ]
    );
    assert_eq!(f.tensor(f.output).shape.0, [9, 8, 8]);
}

#[test]
fn nested_concats_compose_their_offsets() {
    let f = fused(
        "network N(input: 4x8x8) {
            conv(4, 1x1)
            concat {
                branch { conv a(2, 1x1) }
                branch { concat { branch { conv b(3, 1x1) } branch { conv c(5, 1x1) } } }
            }
        }",
    );
    assert_eq!(ops(&f), ["conv", "conv", "conv", "conv"]);
    let root = |name: &str| f.root(kernel(&f, name).output);
    assert_eq!(root("a"), (f.output, 0));
    assert_eq!(root("b"), (f.output, 2));
    assert_eq!(root("c"), (f.output, 5));
}

#[test]
fn concat_in_place_is_not_applied_where_illegal() {
    // The input itself is a branch: it is not written by a kernel.
    let f = fused("network N(input: 4x8x8) { concat(input, input) }");
    assert_eq!(ops(&f), ["concat"]);
    // A branch output also read elsewhere needs its own buffer.
    let f = fused(
        "network N(input: 4x8x8) {
            conv a(4, 1x1) -> x
            conv b(4, 1x1) -> y
            concat(x, y)
            add(x, y)
        }",
    );
    assert!(ops(&f).contains(&"concat"), "{:?}", ops(&f));
    // The same tensor twice.
    let f = fused("network N(input: 4x8x8) { conv a(4, 1x1) -> x concat(x, x) }");
    assert_eq!(ops(&f), ["conv", "concat"]);
    // A flattened branch is a view, not a slice.
    let f = fused(
        "network N(input: 4x2x2) {
            conv a(4, 1x1) relu flatten -> x
            from input conv b(4, 1x1) flatten -> y
            concat(x, y)
        }",
    );
    assert_eq!(ops(&f), ["conv", "conv", "concat"]);
}

#[test]
fn pointwise_convs_reading_one_tensor_merge() {
    let f = fused(
        "network N(input: 4x8x8) {
            conv(4, 3x3, pad=1)
            concat {
                branch { conv a(2, 1x1) relu }
                branch { conv b(3, 1x1, bias=false) bn relu conv(3, 3x3, pad=1) }
                branch { conv c(5, 1x1) relu conv(3, 3x3, pad=1) }
                branch { conv d(5, 1x1) tanh conv(3, 3x3, pad=1) }
                branch { conv e(5, 3x3, pad=1) relu conv(3, 3x3, pad=1) }
            }
        }",
    );
    // `a` writes its concat slice, `d` ends in tanh, `e` is 3x3: only b and c merge.
    let merged: Vec<&Kernel> = f.kernels.iter().filter(|k| !k.parts.is_empty()).collect();
    assert_eq!(merged.len(), 1);
    let m = merged[0];
    let parts: Vec<(&str, u64, bool)> = m
        .parts
        .iter()
        .map(|p| (p.name.as_str(), p.out_channels, p.folded_bn.is_some()))
        .collect();
    assert_eq!(parts, [("branch2.b", 3, true), ("branch3.c", 5, false)]);
    assert_eq!(m.op.rule().describe(), "conv 8 1x1");
    assert_eq!(m.epilogue, [Step::Bias, Step::Activation(Activation::Relu)]);
    assert_eq!(f.tensor(m.output).shape.0, [8, 8, 8]);
    let readers: Vec<Place> = f
        .kernels
        .iter()
        .filter(|k| k.inputs.iter().any(|&t| f.root(t).0 == m.output))
        .map(|k| f.tensor(k.inputs[0]).place)
        .collect();
    assert_eq!(
        readers,
        [
            Place::Slice {
                parent: m.output,
                offset: 0
            },
            Place::Slice {
                parent: m.output,
                offset: 3
            }
        ]
    );
    assert_plan_is_sound(&f, &plan(&f));
}

#[test]
fn side_outputs_are_pruned() {
    let f = fused(
        "network N(input: 4x8x8) {
            conv a(4, 1x1)
            side aux { flatten dense(3) }
            conv b(4, 1x1)
        }",
    );
    assert_eq!(ops(&f), ["conv", "conv"]);
}

#[test]
fn fold_arithmetic_matches_the_batch_norm_formula() {
    let mut weight = [1.0, 2.0, 3.0, 4.0];
    let mut bias = [0.5, -1.0];
    let bn = BnStats {
        gamma: &[2.0, 0.5],
        beta: &[0.25, 1.0],
        mean: &[0.5, 1.0],
        var: &[3.0, 0.0],
    };
    fold_batch_norm(&mut weight, &mut bias, bn, 1.0).expect("fits");
    // s = [2/√4, 0.5/√1] = [1, 0.5]
    assert_eq!(weight, [1.0, 2.0, 1.5, 2.0]);
    assert_eq!(bias, [0.25, 0.0]);
    let short = BnStats {
        gamma: &[1.0],
        ..bn
    };
    assert!(fold_batch_norm(&mut weight, &mut bias, short, 1.0).is_err());
    assert!(fold_batch_norm(&mut [1.0; 3], &mut bias, bn, 1.0).is_err());
}

#[test]
fn the_plan_reuses_buffers_along_a_chain() {
    let f = fused(
        "network N(input: 1x8x8) { conv(1, 3x3, pad=1) conv(1, 3x3, pad=1) conv(1, 3x3, pad=1) conv(1, 3x3, pad=1) }",
    );
    let p = plan(&f);
    assert_eq!(p.buffers, [256, 256]);
    assert_eq!(p.buffer_bytes, 512);
    assert_eq!(p.unshared_bytes, 5 * 256);
    // Two tensors live at once: the arena holds two, at two offsets.
    assert_eq!(p.arena_bytes, 512);
    assert_eq!(p.lower_bound_bytes, 512);
    let mut offsets: Vec<u64> = p.offsets.iter().flatten().copied().collect();
    offsets.sort_unstable();
    offsets.dedup();
    assert_eq!(offsets, [0, 256]);
    assert_plan_is_sound(&f, &p);
}

/// No two tensors that are alive at once share a buffer or overlap in the arena, every
/// used tensor has a buffer and an offset, and every buffer holds its tensors.
fn assert_plan_is_sound(f: &FusedGraph, p: &MemoryPlan) {
    let steps = f.kernels.len() + 2;
    let mut alive: Vec<Vec<TensorId>> = vec![Vec::new(); steps];
    let mut mark = |t: TensorId, time: usize| alive[time].push(f.root(t).0);
    for &input in &f.inputs {
        mark(input, 0);
    }
    for (k, kernel) in f.kernels.iter().enumerate() {
        mark(kernel.output, k + 1);
        kernel.reads().for_each(|t| mark(t, k + 1));
    }
    mark(f.output, steps - 1);
    // A tensor is alive from its first to its last mark.
    let mut span: Vec<Option<(usize, usize)>> = vec![None; f.tensors.len()];
    for (time, roots) in alive.iter().enumerate() {
        for root in roots {
            let s = span[root.0].get_or_insert((time, time));
            s.1 = time;
        }
    }
    for (a, sa) in span.iter().enumerate() {
        let Some((a0, a1)) = sa else { continue };
        let ba = p.buffer_of[a].expect("a used tensor has a buffer");
        let bytes = |t: usize| 4 * f.tensors[t].shape.0.iter().product::<u64>();
        assert!(p.buffers[ba] >= bytes(a), "%{a} fits b{ba}");
        let oa = p.offsets[a].expect("a used tensor has an offset");
        assert!(oa + bytes(a) <= p.arena_bytes, "%{a} fits the arena");
        for (b, sb) in span.iter().enumerate().skip(a + 1) {
            let Some((b0, b1)) = sb else { continue };
            let apart_in_time = a1 < b0 || b1 < a0;
            if p.buffer_of[b] == Some(ba) {
                assert!(apart_in_time, "%{a} and %{b} overlap in b{ba}");
            }
            let ob = p.offsets[b].expect("a used tensor has an offset");
            let apart_in_memory = oa + bytes(a) <= ob || ob + bytes(b) <= oa;
            assert!(
                apart_in_time || apart_in_memory,
                "%{a} and %{b} overlap in the arena"
            );
        }
    }
}

#[test]
fn every_example_has_a_sound_plan_below_the_unshared_sum() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).expect("examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "cnn") {
            continue;
        }
        let net = network(&std::fs::read_to_string(&path).expect("readable"));
        let f = fuse(&net);
        let p = plan(&f);
        assert_plan_is_sound(&f, &p);
        assert!(p.buffer_bytes < p.unshared_bytes, "{}", path.display());
        // The target: the arena within 10% of the most bytes ever live at once.
        let ratio = p.arena_bytes as f64 / p.lower_bound_bytes as f64;
        eprintln!(
            "{}: arena {} / lower bound {} = {ratio:.3}",
            path.display(),
            p.arena_bytes,
            p.lower_bound_bytes
        );
        assert!(
            ratio <= 1.10,
            "{}: arena {ratio:.3} x the lower bound",
            path.display()
        );
        // No layout holds less than is live at once: a bound above the arena is wrong.
        assert!(
            ratio >= 1.0,
            "{}: the bound exceeds the arena",
            path.display()
        );
        // The listing shows every tensor once, numbered in order.
        let listed: Vec<usize> = super::order::entries(&f)
            .iter()
            .map(|e| e.tensor(&f).0)
            .collect();
        assert_eq!(listed, (0..f.tensors.len()).collect::<Vec<_>>());
        checked += 1;
    }
    assert!(checked >= 19);
}

#[test]
fn resnet50_folds_every_batch_norm() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let net = network(&std::fs::read_to_string(dir.join("resnet50.cnn")).expect("resnet50"));
    let bns = net
        .graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::BatchNorm(_)))
        .count();
    let f = fuse(&net);
    assert!(f.kernels.iter().all(|k| k.parts.is_empty()));
    let folded = f.kernels.iter().filter(|k| k.folded_bn.is_some()).count();
    assert_eq!((bns, folded), (53, 53));
    // Every conv's BN, ReLU and residual add are in its epilogue: only convs, the
    // pools and the head remain. No 1x1 convs share an input with the same epilogue.
    let kinds: std::collections::BTreeSet<&str> = ops(&f).into_iter().collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["conv", "dense", "globalavgpool", "maxpool", "softmax"]
    );
}
