//! A pool whose windows tile its input (kernel = stride, no padding, no dilation, no
//! partial window), right after the direct conv whose output only it reads, is marked
//! to be computed by that conv as it writes its rows (`Kernel::with_producer`): a
//! backend that does so pools each chunk of rows while they are in cache, on the thread
//! that wrote them, and skips the pool's own kernel (LeNet-5's C1 and S2). The memory
//! plan makes the pool's output live from the conv on, so a backend that runs the pool
//! by itself, after the conv, is just as right.

use super::ir::{Algorithm, FusedGraph, Place};
use crate::ops::Op;

pub fn pools_into_convs(fused: &mut FusedGraph) {
    let index = fused.index();
    for i in 1..fused.kernels.len() {
        let (producer, pool) = (&fused.kernels[i - 1], &fused.kernels[i]);
        let Some(&input) = pool.inputs.first() else {
            continue;
        };
        let conv_alone = matches!(producer.op, Op::Conv(_))
            && producer.algorithm == Algorithm::Direct
            && producer.output == input
            && index.readers[input.0] == 1
            && fused.tensor(input).place == Place::Own;
        let tiling = match (&pool.op, fused.tensor(input).shape.0.as_slice()) {
            (Op::Pool(p), &[_, h, w]) => {
                let window = &p.window;
                window.kernel == window.stride
                    && window.dilation == [1, 1]
                    && window.pads([h, w]) == [0; 4]
                    && h.is_multiple_of(window.stride[0])
                    && w.is_multiple_of(window.stride[1])
            }
            _ => false,
        };
        if conv_alone && tiling {
            fused.kernels[i].with_producer = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::passes::fuse;

    /// The kernels the pass marks, by name.
    fn marked(source: &str) -> Vec<String> {
        let mut compilation = crate::compile(source);
        assert!(!compilation.has_errors(), "{:?}", compilation.diagnostics);
        let fused = fuse(&compilation.networks.remove(0));
        let marked = fused.kernels.iter().filter(|k| k.with_producer);
        marked.map(|k| k.name.clone()).collect()
    }

    #[test]
    fn pools_that_tile_a_direct_convs_output_are_marked() {
        let source = "network N(input: 1x32x32) {
            conv c1(6, 5x5) tanh
            avgpool s2(2x2)
            conv c3(16, 5x5) relu
            maxpool s4(2x2)
            conv c5(8, 3x3, pad=1)
            maxpool s6(5x5)
        }";
        assert_eq!(marked(source), ["s2", "s4", "s6"]);
    }

    #[test]
    fn overlapping_padded_partial_dilated_or_shared_windows_are_not() {
        for (input, body, why) in [
            (
                "8x15x15",
                "conv(8, 3x3) maxpool(3x3, stride=2)",
                "overlapping windows",
            ),
            ("8x15x15", "conv(8, 3x3) maxpool(2x2, pad=1)", "padding"),
            (
                "8x15x15",
                "conv(8, 3x3) maxpool(2x2, ceil=true)",
                "a partial window",
            ),
            (
                "8x15x15",
                "conv(8, 4x4) maxpool(2x2, dilation=2)",
                "dilation",
            ),
            (
                "64x20x20",
                "conv(64, 3x3, pad=1) maxpool(2x2)",
                "a Winograd conv",
            ),
            ("8x15x15", "relu maxpool(2x2)", "no conv"),
            (
                "8x16x16",
                "conv(8, 3x3, pad=1) concat { branch { maxpool(2x2) } branch { avgpool(2x2) } }",
                "a conv output read twice",
            ),
        ] {
            let source = format!("network N(input: {input}) {{ {body} }}");
            assert!(marked(&source).is_empty(), "{why}: {body}");
        }
    }
}
