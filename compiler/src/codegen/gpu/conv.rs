//! Convolution and dense kernels. A convolution is, per sample and group, the product
//! of its weights (M x K: output channels by input channels x taps) with the im2col of
//! its input (K x N: N output pixels), never materialised: each workgroup computes a
//! 64 x 64 tile of the output, staging 16-deep slices of both operands in workgroup
//! memory as vec4s (the implicit-GEMM kernel), the padding resolved as they are loaded;
//! each of its 64 threads keeps an 8 x 8 block in registers. On lavapipe, where every
//! workgroup access is a loop over the SIMD lanes, whatever its width, that is 4 reads
//! per 64 multiply-adds, and 2.7x faster than 4 x 4 blocks of 256 threads read as
//! floats (VGG-11's kernels, side by side). Layers
//! too small to fill such tiles run one thread per output instead (the direct kernel).
//! A dense layer is one workgroup per output feature, its threads splitting the dot
//! product. Weights larger than a binding are split over output channels: one shader
//! per part.

use super::epilogue;
use super::wgsl::{self, ShaderBuilder, THREADS, TensorRef};
use super::{Context, Shader, Unsupported};
use crate::ops::Conv;
use std::fmt::Write;
use std::ops::Range;

/// The tile of the implicit-GEMM kernel: 64 output channels x 64 pixels, 16 deep, each
/// thread `WORK x WORK` of them (64 threads).
const TILE: u64 = 64;
const DEPTH: u64 = 16;
const WORK: u64 = 8;

/// A convolution's sizes, every one a constant of its shader.
struct ConvShape {
    in_per_group: u64,
    out_per_group: u64,
    height: u64,
    width: u64,
    out_w: u64,
    pixels: u64,
    kernel: [u64; 2],
    stride: [u64; 2],
    dilation: [u64; 2],
    pads: [u64; 2],
}

impl ConvShape {
    fn taps(&self) -> u64 {
        self.kernel[0] * self.kernel[1]
    }

    fn depth(&self) -> u64 {
        self.in_per_group * self.taps()
    }
}

pub fn conv(ctx: &Context, conv: &Conv) -> Result<Vec<Shader>, Unsupported> {
    let input = ctx.input(0)?;
    let (Some([channels, height, width]), Some([out_channels, out_h, out_w])) = (
        ctx.fused.tensor(input).shape.chw(),
        ctx.fused.tensor(ctx.kernel.output).shape.chw(),
    ) else {
        return Err(ctx.unsupported("a convolution needs CxHxW input and output"));
    };
    let window = conv.window.output([height, width], &mut Vec::new());
    let window = window.map_err(|e| ctx.unsupported(e.message))?;
    let groups = conv.groups.max(1);
    let shape = ConvShape {
        in_per_group: channels / groups,
        out_per_group: out_channels / groups,
        height,
        width,
        out_w,
        pixels: out_h * out_w,
        kernel: conv.window.kernel,
        stride: conv.window.stride,
        dilation: conv.window.dilation,
        pads: [window.pads[0], window.pads[1]],
    };
    let rows = parts(ctx, out_channels, shape.depth(), shape.out_per_group)?;
    let many = rows.len() > 1;
    rows.into_iter()
        .map(|rows| {
            let label = part_label(ctx, &rows, many);
            let gemm = shape.out_per_group >= 32 && shape.pixels >= 32;
            match gemm {
                true => implicit_gemm(ctx, &shape, rows, out_channels, label),
                false => direct(ctx, &shape, rows, out_channels, label),
            }
        })
        .collect()
}

pub fn dense(ctx: &Context) -> Result<Vec<Shader>, Unsupported> {
    let input = ctx.input(0)?;
    let (features, _) = ctx.sizes(input);
    let (outputs, _) = ctx.sizes(ctx.kernel.output);
    let rows = parts(ctx, outputs, features, 1)?;
    let many = rows.len() > 1;
    rows.into_iter()
        .map(|rows| {
            let label = part_label(ctx, &rows, many);
            let (mut b, x, y) = ShaderBuilder::unary(ctx)?;
            let w = b.weights(rows.clone());
            epilogue::declare(&mut b, outputs, 1)?;
            b.decls.push_str("var<workgroup> partial: array<f32, 64>;\n");
            let mut body = format!(
                "    let o = {}u + group;\n    var s = 0.0;\n    \
                 for (var k = lid; k < {features}u; k = k + 64u) {{\n        \
                 s = s + {w}[group * {features}u + k] * {};\n    }}\n    partial[lid] = s;\n    workgroupBarrier();\n",
                rows.start,
                x.at("k")
            );
            for step in [32, 16, 8, 4, 2, 1] {
                let _ = writeln!(
                    body,
                    "    if (lid < {step}u) {{ partial[lid] = partial[lid] + partial[lid + {step}u]; }}\n    workgroupBarrier();"
                );
            }
            let _ = writeln!(
                body,
                "    if (lid == 0u) {{ {} = epilogue(n, o, 0u, partial[0]); }}",
                y.at("o")
            );
            b.finish(label, 64, rows.end - rows.start, &body)
        })
        .collect()
}

/// Output rows per shader: as many whole groups of `granule` rows of `depth` floats as
/// one binding holds.
fn parts(
    ctx: &Context,
    rows: u64,
    depth: u64,
    granule: u64,
) -> Result<Vec<Range<u64>>, Unsupported> {
    let row_bytes = depth.max(1) * 4;
    let per_part = (ctx.target.max_binding_bytes / row_bytes) / granule.max(1) * granule.max(1);
    if per_part == 0 {
        return Err(ctx.unsupported(format!(
            "{} output channel(s) need {} bytes of weights, more than one storage binding holds ({} bytes)",
            granule,
            granule * row_bytes,
            ctx.target.max_binding_bytes
        )));
    }
    Ok((0..rows.div_ceil(per_part))
        .map(|i| i * per_part..((i + 1) * per_part).min(rows))
        .collect())
}

fn part_label(ctx: &Context, rows: &Range<u64>, many: bool) -> String {
    match many {
        true => format!("{} [outputs {}..{}]", ctx.kernel.name, rows.start, rows.end),
        false => ctx.kernel.name.clone(),
    }
}

/// The input element of tap `tap` (of channel `ic` of group `g`) under output pixel
/// `p`, or 0 in the padding: WGSL statements assigning `target`.
fn im2col_load(s: &ConvShape, x: &TensorRef, target: &str, ic: &str, tap: &str, p: &str) -> String {
    let kw = s.kernel[1];
    format!(
        "let iy = i32(({p} / {ow}u) * {sh}u + ({tap} / {kw}u) * {dh}u) - {pt};\n\
         let ix = i32(({p} % {ow}u) * {sw}u + ({tap} % {kw}u) * {dw}u) - {pl};\n\
         if (iy >= 0 && iy < {h} && ix >= 0 && ix < {w}) {{\n    {target} = {};\n}}\n",
        x.at(&format!(
            "(g * {icg}u + {ic}) * {hw}u + u32(iy) * {w}u + u32(ix)",
            icg = s.in_per_group,
            hw = s.height * s.width,
            w = s.width
        )),
        ow = s.out_w,
        sh = s.stride[0],
        sw = s.stride[1],
        dh = s.dilation[0],
        dw = s.dilation[1],
        pt = s.pads[0],
        pl = s.pads[1],
        h = s.height,
        w = s.width,
    )
}

fn indent(text: &str, depth: usize) -> String {
    let pad = " ".repeat(depth * 4);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// A conv shader's input, output, weight rows and epilogue, bound and declared.
fn conv_builder<'c, 'a>(
    ctx: &'c Context<'a>,
    s: &ConvShape,
    rows: &Range<u64>,
    channels: u64,
) -> Result<(ShaderBuilder<'c, 'a>, TensorRef, TensorRef, &'static str), Unsupported> {
    let (mut b, x, y) = ShaderBuilder::unary(ctx)?;
    let w = b.weights(rows.clone());
    epilogue::declare(&mut b, channels, s.pixels)?;
    Ok((b, x, y, w))
}

/// One thread per output element of output channels `rows`.
fn direct(
    ctx: &Context,
    s: &ConvShape,
    rows: Range<u64>,
    channels: u64,
    label: String,
) -> Result<Shader, Unsupported> {
    let (b, x, y, w) = conv_builder(ctx, s, &rows, channels)?;
    let total = (rows.end - rows.start) * s.pixels;
    let load = im2col_load(s, &x, "v", "ic", "tap", "p");
    let body = format!(
        "{}    let c = {c0}u + i / {np}u;\n    let p = i % {np}u;\n    let g = c / {ocg}u;\n    var acc = 0.0;\n    \
         for (var ic = 0u; ic < {icg}u; ic = ic + 1u) {{\n        for (var tap = 0u; tap < {taps}u; tap = tap + 1u) {{\n            \
         var v = 0.0;\n{}            acc = acc + {w}[((c - {c0}u) * {icg}u + ic) * {taps}u + tap] * v;\n        }}\n    }}\n    \
         {} = epilogue(n, c, p, acc);\n",
        wgsl::element_index(total),
        indent(&load, 3),
        y.at(&format!("c * {}u + p", s.pixels)),
        c0 = rows.start,
        np = s.pixels,
        ocg = s.out_per_group,
        icg = s.in_per_group,
        taps = s.taps(),
    );
    b.finish(label, THREADS, wgsl::element_workgroups(total), &body)
}

/// 64 x 64 output tiles per workgroup over the groups of output channels `rows`: each
/// of its `(TILE / WORK)²` threads accumulates a `WORK x WORK` block in registers.
fn implicit_gemm(
    ctx: &Context,
    s: &ConvShape,
    rows: Range<u64>,
    channels: u64,
    label: String,
) -> Result<Shader, Unsupported> {
    let (mut b, x, y, w) = conv_builder(ctx, s, &rows, channels)?;
    let _ = write!(
        b.decls,
        "var<workgroup> tile_a: array<vec4<f32>, {n}>;\nvar<workgroup> tile_b: array<vec4<f32>, {n}>;\n",
        n = TILE * DEPTH / 4
    );
    let (m, k, np) = (s.out_per_group, s.depth(), s.pixels);
    let (tiles_m, tiles_n) = (m.div_ceil(TILE), np.div_ceil(TILE));
    let first_group = rows.start / m.max(1);
    let groups = (rows.end - rows.start) / m.max(1);
    let side = TILE / WORK;
    let threads = side * side;
    let lanes = ["x", "y", "z", "w"];
    // Each thread stages whole vec4s, four columns of one row of each operand: on a
    // CPU adapter a workgroup access costs the same for a vec4 as for one float.
    let stage: String = lanes
        .iter()
        .enumerate()
        .map(|(c, l)| {
            let load = im2col_load(s, &x, &format!("v.{l}"), "kq / {taps}u", "kq % {taps}u", "pb");
            format!(
                "if (m0 + q0 + {c}u < {m}u) {{ a.{l} = {w}[((g - {first_group}u) * {m}u + m0 + q0 + {c}u) * {k}u + kq]; }}\n\
                 {{\n    let pb = p0 + q0 + {c}u;\n    if (pb < {np}u) {{\n{}    }}\n}}\n",
                indent(&load.replace("{taps}", &s.taps().to_string()), 2),
                m = s.out_per_group,
                k = s.depth(),
                np = s.pixels,
            )
        })
        .collect();
    // Every accumulator a variable of its own (`acc_i_j`): an array indexed in a loop
    // would live in memory on a CPU adapter (lavapipe), not in registers.
    let block = |f: &dyn Fn(u64, u64) -> String| -> String {
        (0..WORK)
            .flat_map(|i| (0..WORK).map(move |j| (i, j)))
            .map(|(i, j)| f(i, j))
            .collect()
    };
    let declare = block(&|i, j| format!("    var acc_{i}_{j} = 0.0;\n"));
    let vectors: String = (0..WORK / 4)
        .map(|q| {
            format!(
                "            let av{q} = tile_a[(kk * {TILE}u + ty * {WORK}u) / 4u + {q}u];\n            \
                 let bv{q} = tile_b[(kk * {TILE}u + tx * {WORK}u) / 4u + {q}u];\n"
            )
        })
        .collect();
    let operands: String = vectors
        + &(0..WORK)
            .map(|i| {
                let (q, l) = (i / 4, lanes[(i % 4) as usize]);
                format!("            let a{i} = av{q}.{l};\n            let b{i} = bv{q}.{l};\n")
            })
            .collect::<String>();
    let multiply = block(&|i, j| format!("            acc_{i}_{j} = acc_{i}_{j} + a{i} * b{j};\n"));
    let mut body = format!(
        "    let g = {first_group}u + group / {tiles}u;\n    let t = group % {tiles}u;\n    \
         let m0 = (t / {tiles_n}u) * {TILE}u;\n    let p0 = (t % {tiles_n}u) * {TILE}u;\n    \
         let tx = lid % {side}u;\n    let ty = lid / {side}u;\n{declare}    \
         for (var k0 = 0u; k0 < {k}u; k0 = k0 + {DEPTH}u) {{\n        \
         for (var r = 0u; r < {quads}u; r = r + 1u) {{\n            \
         let f = lid + r * {threads}u;\n            let kq = k0 + f / {row}u;\n            let q0 = (f % {row}u) * 4u;\n            \
         var a = vec4<f32>();\n            var v = vec4<f32>();\n            \
         if (kq < {k}u) {{\n{}            }}\n            tile_a[f] = a;\n            tile_b[f] = v;\n        }}\n        workgroupBarrier();\n        \
         for (var kk = 0u; kk < {DEPTH}u; kk = kk + 1u) {{\n{operands}{multiply}        }}\n        \
         workgroupBarrier();\n    }}\n",
        indent(&stage, 4),
        tiles = tiles_m * tiles_n,
        quads = TILE * DEPTH / 4 / threads,
        row = TILE / 4,
    );
    for i in 0..WORK {
        let _ = write!(
            body,
            "    if (m0 + ty * {WORK}u + {i}u < {m}u) {{\n        let c = g * {m}u + m0 + ty * {WORK}u + {i}u;\n"
        );
        for j in 0..WORK {
            let _ = writeln!(
                body,
                "        if (p0 + tx * {WORK}u + {j}u < {np}u) {{ let p = p0 + tx * {WORK}u + {j}u; {} = epilogue(n, c, p, acc_{i}_{j}); }}",
                y.at(&format!("c * {np}u + p"))
            );
        }
        body.push_str("    }\n");
    }
    b.finish(label, threads as u32, groups * tiles_m * tiles_n, &body)
}
