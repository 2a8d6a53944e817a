//! Pooling, one thread per output element: windows from the (asymmetric) padding, ceil
//! mode's partial windows, dilation, both average divisors, as the reference defines
//! them; global pooling one thread per channel; adaptive pooling's cells
//! `floor(i·in/out) .. ceil((i+1)·in/out)`.

use super::wgsl::{self, ShaderBuilder};
use super::{Context, Shader, Unsupported};
use crate::ops::{AdaptivePool, Pool, PoolKind};

/// Input and output `[C, H, W]` of a pooling kernel.
fn shapes(ctx: &Context) -> Result<([u64; 3], [u64; 3]), Unsupported> {
    let input = ctx.fused.tensor(ctx.input(0)?).shape.chw();
    let output = ctx.fused.tensor(ctx.kernel.output).shape.chw();
    input
        .zip(output)
        .ok_or_else(|| ctx.unsupported("pooling needs CxHxW input and output"))
}

/// Statements that declare `c`, `oy` and `ox` for element `i` of a `[C, OH, OW]` output.
fn output_coordinates(out: [u64; 3]) -> String {
    let [_, oh, ow] = out;
    format!(
        "    let c = i / {hw}u;\n    let oy = (i / {ow}u) % {oh}u;\n    let ox = i % {ow}u;\n",
        hw = oh * ow
    )
}

pub fn window(ctx: &Context, pool: &Pool) -> Result<Shader, Unsupported> {
    let ([_, h, w], out) = shapes(ctx)?;
    let window = pool.window.output([h, w], &mut Vec::new());
    let pads = window.map_err(|e| ctx.unsupported(e.message))?.pads;
    let (b, x, y) = ShaderBuilder::unary(ctx)?;
    let total = out.iter().product::<u64>();
    let [kh, kw] = pool.window.kernel;
    let [sh, sw] = pool.window.stride;
    let [dh, dw] = pool.window.dilation;
    let input = x.at(&format!("c * {}u + u32(iy) * {w}u + u32(ix)", h * w));
    let start = format!(
        "    let y0 = i32(oy * {sh}u) - {top};\n    let x0 = i32(ox * {sw}u) - {left};\n",
        top = pads[0],
        left = pads[1]
    );
    let reduce = match pool.kind {
        PoolKind::Max => format!(
            "    var best = -3.4028235e38f;\n    \
             for (var ky = 0; ky < {kh}; ky = ky + 1) {{\n        let iy = y0 + ky * {dh};\n        \
             if (iy < 0 || iy >= {h}) {{ continue; }}\n        for (var kx = 0; kx < {kw}; kx = kx + 1) {{\n            \
             let ix = x0 + kx * {dw};\n            if (ix >= 0 && ix < {w}) {{ best = max(best, {input}); }}\n        }}\n    }}\n    \
             let result = best;\n"
        ),
        PoolKind::Avg => {
            let divisor = match pool.count_include_pad {
                true => "(y_end - y0) * (x_end - x0)",
                false => "(yb - ya) * (xb - xa)",
            };
            format!(
                "    let y_end = min(y0 + {kh}, {hb});\n    let x_end = min(x0 + {kw}, {wb});\n    \
                 let ya = max(y0, 0);\n    let yb = min(y_end, {h});\n    let xa = max(x0, 0);\n    let xb = min(x_end, {w});\n    \
                 var sum = 0.0;\n    for (var iy = ya; iy < yb; iy = iy + 1) {{\n        for (var ix = xa; ix < xb; ix = ix + 1) {{\n            \
                 sum = sum + {input};\n        }}\n    }}\n    let result = sum / f32(max({divisor}, 1));\n",
                hb = h + pads[2],
                wb = w + pads[3],
            )
        }
    };
    let body = format!(
        "{}{}{start}{reduce}    {} = result;\n",
        wgsl::element_index(total),
        output_coordinates(out),
        y.at("i")
    );
    b.finish_elements(total, &body)
}

pub fn global(ctx: &Context, kind: PoolKind) -> Result<Shader, Unsupported> {
    let ([channels, h, w], _) = shapes(ctx)?;
    let (b, x, y) = ShaderBuilder::unary(ctx)?;
    let hw = h * w;
    let (init, combine, finish) = match kind {
        PoolKind::Max => ("-3.4028235e38f", "max(acc, v)", "acc".to_string()),
        PoolKind::Avg => (
            "0.0",
            "acc + v",
            format!("acc / {}", wgsl::float(hw as f64)),
        ),
    };
    let body = format!(
        "{}    var acc = {init};\n    for (var q = 0u; q < {hw}u; q = q + 1u) {{\n        let v = {};\n        acc = {combine};\n    }}\n    {} = {finish};\n",
        wgsl::element_index(channels),
        x.at(&format!("i * {hw}u + q")),
        y.at("i")
    );
    b.finish_elements(channels, &body)
}

pub fn adaptive(ctx: &Context, pool: &AdaptivePool) -> Result<Shader, Unsupported> {
    let ([_, h, w], out) = shapes(ctx)?;
    let [_, oh, ow] = out;
    let (b, x, y) = ShaderBuilder::unary(ctx)?;
    let total = out.iter().product::<u64>();
    let (init, combine, finish) = match pool.kind {
        PoolKind::Max => ("-3.4028235e38f", "max(acc, v)", "acc"),
        PoolKind::Avg => ("0.0", "acc + v", "acc / f32((yb - ya) * (xb - xa))"),
    };
    let body = format!(
        "{}{}    let ya = oy * {h}u / {oh}u;\n    let yb = ((oy + 1u) * {h}u + {oh}u - 1u) / {oh}u;\n    \
         let xa = ox * {w}u / {ow}u;\n    let xb = ((ox + 1u) * {w}u + {ow}u - 1u) / {ow}u;\n    var acc = {init};\n    \
         for (var iy = ya; iy < yb; iy = iy + 1u) {{\n        for (var ix = xa; ix < xb; ix = ix + 1u) {{\n            \
         let v = {};\n            acc = {combine};\n        }}\n    }}\n    {} = {finish};\n",
        wgsl::element_index(total),
        output_coordinates(out),
        x.at(&format!("c * {}u + iy * {w}u + ix", h * w)),
        y.at("i")
    );
    b.finish_elements(total, &body)
}
