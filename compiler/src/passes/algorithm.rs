//! The algorithm of each conv kernel: Winograd (F(2x2,3x3), F(4x4,3x3), F(2x2,5x5))
//! where it pays, the direct product (im2col and one matrix product) everywhere else. The choice is made on
//! shapes only; the rule is what was measured on the target machine (docs/performance.md
//! has the per-layer numbers).

use super::ir::{Algorithm, FusedGraph, Kernel};
use crate::ops::Op;

/// Which eligible convolutions use Winograd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WinogradPolicy {
    /// Where the shapes say it is faster than direct.
    Auto,
    /// Nowhere: every conv is direct.
    Off,
    /// Every eligible conv (3x3 or 5x5, stride 1, dilation 1, one group) through F(m x
    /// m, r x r) where that variant exists, faster or not: for tests of small shapes
    /// and for measuring.
    Everywhere { m: u64 },
}

/// The environment variable that overrides [`WinogradPolicy::Auto`].
pub const WINOGRAD_ENV: &str = "CNNC_WINOGRAD";

impl WinogradPolicy {
    /// `CNNC_WINOGRAD=0` turns Winograd off, `CNNC_WINOGRAD=1` (or `2`) uses F(2x2,3x3)
    /// and F(2x2,5x5) on every eligible conv and `CNNC_WINOGRAD=4` F(4x4,3x3) (5x5
    /// convs direct); unset (or any other value) leaves the choice to the shapes.
    pub fn from_env() -> WinogradPolicy {
        match std::env::var(WINOGRAD_ENV).as_deref() {
            Ok("0") => WinogradPolicy::Off,
            Ok("1" | "2") => WinogradPolicy::Everywhere { m: 2 },
            Ok("4") => WinogradPolicy::Everywhere { m: 4 },
            _ => WinogradPolicy::Auto,
        }
    }
}

/// Sets every kernel's algorithm under `policy` (every kernel: running it twice with
/// another policy replaces the first choice).
pub fn choose_algorithms(fused: &mut FusedGraph, policy: WinogradPolicy) {
    for index in 0..fused.kernels.len() {
        let shapes = winograd_shapes(fused, &fused.kernels[index]);
        let tile = match (policy, shapes) {
            (WinogradPolicy::Off, _) | (_, None) => None,
            (WinogradPolicy::Everywhere { m }, Some(shapes)) => {
                Some(m).filter(|&m| crate::winograd::transforms(m, shapes.kernel).is_some())
            }
            (WinogradPolicy::Auto, Some(shapes)) => winograd_tile(shapes),
        };
        fused.kernels[index].algorithm = match (tile, shapes) {
            (Some(m), Some(shapes)) => Algorithm::Winograd {
                m,
                r: shapes.kernel,
            },
            _ => Algorithm::Direct,
        };
    }
}

/// What the rule looks at: the kernel's side, input and output channels per group,
/// output height and width.
#[derive(Debug, Clone, Copy)]
struct Shapes {
    kernel: u64,
    channels: u64,
    out_channels: u64,
    out_height: u64,
    out_width: u64,
}

/// The shapes of a conv Winograd can compute: 3x3 or 5x5, stride 1, dilation 1 (any
/// groups: each group's product is its own), padding at most 2 on each side (a tile
/// never lies wholly in the padding).
fn winograd_shapes(fused: &FusedGraph, kernel: &Kernel) -> Option<Shapes> {
    let Op::Conv(conv) = &kernel.op else {
        return None;
    };
    let window = &conv.window;
    let eligible = (window.kernel == [3, 3] || window.kernel == [5, 5])
        && window.stride == [1, 1]
        && window.dilation == [1, 1]
        && kernel.parts.is_empty();
    let input = fused.tensor(*kernel.inputs.first()?);
    let (&[channels, height, width], &[out_channels, out_height, out_width]) = (
        input.shape.0.as_slice(),
        fused.tensor(kernel.output).shape.0.as_slice(),
    ) else {
        return None;
    };
    let pads_fit = window.pads([height, width]).iter().all(|&p| p <= 2);
    let groups = conv.groups.max(1);
    (eligible && pads_fit).then_some(Shapes {
        kernel: window.kernel[0],
        channels: channels / groups,
        out_channels: out_channels / groups,
        out_height,
        out_width,
    })
}

/// Where Winograd was measured faster than direct (`cnnc bench --profile --threads 1`
/// on VGG-16 and ResNet-50 with and without `CNNC_WINOGRAD=0`, and single layers under
/// `CNNC_WINOGRAD=2` and `=4`): enough channels that the products, not the transforms,
/// take the time, and an output large enough that the tiles fill the microkernel's
/// columns. F(4x4,3x3) multiplies 1.8x less than F(2x2,3x3) but needs 36 matrices of
/// transformed weights and products where F(2x2) needs 16. From 28x28 it is faster up
/// to 512 channels on either side (512 at 28x28: 4.4 ms against 7.6 on two threads,
/// 9.6 against 14.1 on one; with the kernels' own f32x4 transforms 5.0 against 7.6;
/// 128 channels at 112x112: 8.8 against 12.8); past 512, not measured, the 36
/// matrices of weights (38 MiB at 512) are left to F(2x2). Below 28x28 its tiles are
/// few (4x4 at 14x14, one narrow panel that the tile multiplies at half cost, and the
/// threads cut the channels: `codegen::cpu::winograd::chunk_rows`), and from 11x11
/// it is faster where both sides have at least 96 channels (`CNNC_WINOGRAD=2` against
/// `=4`, lowest of three, one and two threads, Zen 4: ResNet's 256 at 14x14 1.33 ->
/// 0.83 ms and 0.68 -> 0.47; VGG-16's 512 at 14x14 6.0 -> 5.4 and 3.08 -> 2.78;
/// AlexNet's conv3 2.0 -> 1.27 and 1.08 -> 0.75, its conv4 1.50 -> 0.96 and 0.81 ->
/// 0.56; GoogLeNet's 96 -> 208 at 14x14 0.43 -> 0.28 and 0.23 -> 0.18; 128 at 20x20
/// 0.61 -> 0.49 and 0.35 -> 0.24, at 11x11 0.31 -> 0.23 and 0.18 -> 0.15), but not at
/// 10x10 (128 channels: 0.18 -> 0.23, nine tiles of F(4x4) against 25 of F(2x2)) nor
/// with 64 channels, whose transforms weigh more (16x16: 0.11 -> 0.10 and 0.058 ->
/// 0.068).
///
/// A 5x5 conv has one variant, F(2x2,5x5): it saves 16 of 25 multiplies per output
/// and channel pair where the 3x3 variants save 5-7 of 9, so its transforms pay from
/// half the input channels (`CNNC_WINOGRAD=0` against `=2`, medians of the fastest
/// runs, one and two threads): Inception-v3's 48 -> 64 at 35x35 1.46 -> 0.88 ms and
/// 0.66 -> 0.49; GoogLeNet's 32 -> 96 at 28x28 0.81 -> 0.48 and 0.53 -> 0.29, 24 -> 64
/// at 14x14 0.114 -> 0.098 and 0.116 -> 0.095, 16 -> 48 at 14x14 0.062 -> 0.057 and
/// 0.049 -> 0.038 (16 -> 32 at 28x28: 0.17 -> 0.19 on one thread, 0.092 -> 0.084 on
/// two); at 7x7 it lost before the narrow panels (48 -> 128: 0.11 -> 0.13, 2x on two
/// threads) and gains since (below).
///
/// The output's bound is in 2x2 tiles, at least 16: a 7x7 or 8x8 output's 16 tiles
/// fill one narrow panel, which the tile multiplies at half a panel's cost (default
/// against `CNNC_WINOGRAD=2`, lowest of three, one and two threads, Zen 4: 512
/// channels at 7x7 2.22 -> 1.43 ms and 1.12 -> 0.71, Inception-v3's 448 -> 384 at 8x8
/// 1.77 -> 0.87 and 0.91 -> 0.45, GoogLeNet's 160 -> 320 at 7x7 0.42 -> 0.27 and 0.23
/// -> 0.15, its 5x5s 48 -> 128 and 32 -> 128 at 7x7 0.143 -> 0.096 and 0.095 -> 0.069
/// on one thread); nine tiles (6x6) are even, four (4x4) 2x slower. Before the
/// narrow panels (a whole panel of 32 columns for 16 tiles), 8x8 was even and 7x7
/// lost, and the bound was 25 tiles: 10x10 (25 tiles) and AlexNet's 13x13 (49) gain
/// as 14x14 does (`CNNC_WINOGRAD=0` against `=2`, one and two threads: 256
/// channels at 10x10 0.58 -> 0.37 ms and 0.35 -> 0.22, at 12x12 1.12 -> 0.91 and 0.54
/// -> 0.42; AlexNet's conv3, 256 -> 384 at 13x13, 2.06 -> 1.40 and 1.11 -> 0.63, its
/// conv4 (two groups of 192) 1.25 -> 0.87 and 0.89 -> 0.65, its conv2 (5x5, two groups
/// of 48 -> 128 at 27x27) 3.18 -> 1.82 and 1.77 -> 1.08; Inception-v3's 448 -> 384 at
/// 8x8 1.20 -> 1.23 and 0.65 -> 0.65).
fn winograd_tile(shapes: Shapes) -> Option<u64> {
    let least_channels = if shapes.kernel == 5 { 16 } else { 32 };
    let tiles = shapes.out_height.div_ceil(2) * shapes.out_width.div_ceil(2);
    let pays = shapes.channels >= least_channels && shapes.out_channels >= 32 && tiles >= 16;
    let side = shapes.out_height.min(shapes.out_width);
    let four = shapes.channels <= 512
        && shapes.out_channels <= 512
        && (side >= 28 || (side >= 11 && shapes.channels.min(shapes.out_channels) >= 96));
    pays.then_some(if four && shapes.kernel == 3 { 4 } else { 2 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::fuse_with;

    fn algorithms(source: &str, policy: WinogradPolicy) -> Vec<Algorithm> {
        let mut compilation = crate::compile(source);
        assert!(!compilation.has_errors(), "{:?}", compilation.diagnostics);
        let fused = fuse_with(&compilation.networks.remove(0), policy);
        fused.kernels.iter().map(|k| k.algorithm).collect()
    }

    const WINOGRAD: Algorithm = Algorithm::Winograd { m: 2, r: 3 };

    #[test]
    fn only_3x3_and_5x5_stride_1_undilated_convs_are_eligible() {
        let source = "network N(input: 64x28x28) {
            conv(64, 3x3, pad=1) relu
            conv(64, 3x3, stride=2, pad=1)
            conv(64, 3x3, pad=2, dilation=2)
            conv(64, 3x3, pad=1, groups=2)
            conv(64, 1x1)
            conv(64, 5x5, pad=2)
            maxpool(2x2)
        }";
        assert_eq!(
            algorithms(source, WinogradPolicy::Everywhere { m: 2 }),
            [
                WINOGRAD,
                Algorithm::Direct,
                Algorithm::Direct,
                WINOGRAD,
                Algorithm::Direct,
                Algorithm::Winograd { m: 2, r: 5 },
                Algorithm::Direct
            ]
        );
        // F(4x4) has no 5x5 variant: that conv stays direct.
        assert_eq!(
            algorithms(source, WinogradPolicy::Everywhere { m: 4 })[5],
            Algorithm::Direct
        );
    }

    #[test]
    fn auto_leaves_small_layers_direct_and_off_turns_winograd_off() {
        let source = "network N(input: 3x56x56) {
            conv(64, 3x3, pad=1)
            conv(64, 3x3, pad=1)
            maxpool(2x2)
            conv(512, 3x3, pad=1)
            conv(1024, 3x3, pad=1)
            maxpool(2x2)
            conv(64, 3x3, pad=1)
            maxpool(3x3, stride=2)
            conv(64, 3x3, pad=1)
        }";
        // Three input channels; 64 channels at 56x56 and 512 at 28x28 (F(4x4)); 1024
        // output channels at 28x28 and 1024 input channels at 14x14 (F(2x2)); a 6x6
        // output.
        let direct = Algorithm::Direct;
        assert_eq!(
            algorithms(source, WinogradPolicy::Auto),
            [
                direct,
                Algorithm::Winograd { m: 4, r: 3 },
                direct,
                Algorithm::Winograd { m: 4, r: 3 },
                WINOGRAD,
                direct,
                WINOGRAD,
                direct,
                direct
            ]
        );
        assert!(
            algorithms(source, WinogradPolicy::Off)
                .iter()
                .all(|a| *a == Algorithm::Direct)
        );
    }

    #[test]
    fn auto_takes_outputs_of_16_tiles_groups_and_5x5s_from_16_channels() {
        let auto = |source: &str| algorithms(source, WinogradPolicy::Auto);
        let f2 = Algorithm::Winograd { m: 2, r: 5 };
        // 10x10 is 25 tiles, 8x8 and 7x7 16, 6x6 9.
        for (side, algorithm) in [
            (10, WINOGRAD),
            (8, WINOGRAD),
            (7, WINOGRAD),
            (6, Algorithm::Direct),
        ] {
            let source = format!("network N(input: 256x{side}x{side}) {{ conv(256, 3x3, pad=1) }}");
            assert_eq!(auto(&source), [algorithm], "{side}x{side}");
        }
        // AlexNet's conv2 and conv4: 48 and 192 channels per group.
        assert_eq!(
            auto("network N(input: 96x27x27) { conv(256, 5x5, pad=2, groups=2) }"),
            [f2]
        );
        let f4 = Algorithm::Winograd { m: 4, r: 3 };
        assert_eq!(
            auto("network N(input: 384x13x13) { conv(384, 3x3, pad=1, groups=2) }"),
            [f4]
        );
        // Below 28x28, F(4x4) from 11x11 and 96 channels on both sides.
        for (input, out, algorithm) in [
            ("96x14x14", 208, f4),
            ("256x11x11", 256, f4),
            ("512x14x14", 512, f4),
            ("64x16x16", 64, WINOGRAD),
            ("96x14x14", 64, WINOGRAD),
            ("128x10x10", 128, WINOGRAD),
        ] {
            let source = format!("network N(input: {input}) {{ conv({out}, 3x3, pad=1) }}");
            assert_eq!(auto(&source), [algorithm], "{input} -> {out}");
        }
        // 5x5s from 16 input channels (per group), 3x3s from 32.
        let source = "network N(input: 16x28x28) {
            conv(32, 5x5, pad=2) conv(32, 5x5, pad=2, groups=4) conv(32, 3x3, pad=1)
        }";
        assert_eq!(auto(source), [f2, Algorithm::Direct, f4]);
        assert_eq!(
            auto("network N(input: 16x28x28) { conv(32, 3x3, pad=1) }"),
            [Algorithm::Direct]
        );
    }

    #[test]
    fn the_choice_shows_in_the_listing() {
        let mut compilation =
            crate::compile("network N(input: 64x16x16) { conv c(64, 3x3, pad=1) }");
        let net = compilation.networks.remove(0);
        let fused = fuse_with(&net, WinogradPolicy::Everywhere { m: 2 });
        let listing = crate::passes::listing(&fused, &crate::passes::plan(&fused));
        assert!(
            listing.contains("conv 64 3x3 p1 [winograd F(2x2,3x3)] (%0)"),
            "{listing}"
        );
    }
}
