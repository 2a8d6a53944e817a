//! The kernels that are not conv, dense or pooling: LRN, softmax over channels, a lone
//! activation or batch norm, an add and a concat that the passes could not fuse. One
//! thread per element (per pixel for softmax); a copying concat is one shader per input.

use super::wgsl::{self, ShaderBuilder, THREADS};
use super::{Context, Param, Shader, Unsupported};
use crate::ops::{Activation, Lrn};

/// `x / (k + a·Σx²)^β` over the channels `c - size/2 ..= c + (size-1)/2`.
pub fn lrn(ctx: &Context, lrn: &Lrn) -> Result<Shader, Unsupported> {
    let input = ctx.input(0)?;
    let (total, per_channel) = ctx.sizes(input);
    let channels = ctx.shape(input).first().copied().unwrap_or(1);
    let (b, x, y) = ShaderBuilder::unary(ctx)?;
    let a = match lrn.alpha_scaled {
        true => lrn.alpha / lrn.size as f64,
        false => lrn.alpha,
    };
    let body = format!(
        "{}    let c = i / {per_channel}u;\n    let q = i % {per_channel}u;\n    \
         let first = select(0u, c - {before}u, c >= {before}u);\n    let last = min(c + {after}u, {last}u);\n    \
         var sum = 0.0;\n    for (var j = first; j <= last; j = j + 1u) {{\n        let v = {};\n        sum = sum + v * v;\n    }}\n    \
         {} = {} / pow({} + {} * sum, {});\n",
        wgsl::element_index(total),
        x.at(&format!("j * {per_channel}u + q")),
        y.at("i"),
        x.at("i"),
        wgsl::float(lrn.k),
        wgsl::float(a),
        wgsl::float(lrn.beta),
        before = lrn.size / 2,
        after = (lrn.size.max(1) - 1) / 2,
        last = channels.max(1) - 1,
    );
    b.finish_elements(total, &body)
}

pub fn activation(ctx: &Context, activation: &Activation) -> Result<Shader, Unsupported> {
    if *activation == Activation::Softmax {
        return softmax(ctx);
    }
    let expression = wgsl::activation(activation, "v");
    map(
        ctx,
        Vec::new(),
        &format!("{}\n", wgsl::HELPERS),
        &expression,
    )
}

/// A batch norm that stays a kernel: `v·scale[c] + shift[c]`.
pub fn batch_norm(ctx: &Context, eps: f64) -> Result<Shader, Unsupported> {
    let (_, per_channel) = ctx.sizes(ctx.input(0)?);
    let channels = ctx.shape(ctx.input(0)?).first().copied().unwrap_or(1);
    let layer = ctx.kernel.name.clone();
    let params = vec![
        Param::Scale {
            layer: layer.clone(),
            eps,
        },
        Param::Shift { layer, eps },
    ];
    let c = format!("(i / {per_channel}u)");
    let expression = format!("v * params[{c}] + params[{channels}u + {c}]");
    map(ctx, params, "", &expression)
}

/// `y[i] = expression(v = x[i])`.
fn map(
    ctx: &Context,
    params: Vec<Param>,
    decls: &str,
    expression: &str,
) -> Result<Shader, Unsupported> {
    let input = ctx.input(0)?;
    let (total, _) = ctx.sizes(input);
    let (mut b, x, y) = ShaderBuilder::unary(ctx)?;
    if !params.is_empty() {
        b.params(params);
    }
    b.decls.push_str(decls);
    let body = format!(
        "{}    let v = {};\n    {} = {expression};\n",
        wgsl::element_index(total),
        x.at("i"),
        y.at("i")
    );
    b.finish_elements(total, &body)
}

/// Softmax over the channels at each position, stabilised by the maximum.
fn softmax(ctx: &Context) -> Result<Shader, Unsupported> {
    let input = ctx.input(0)?;
    let (total, per_channel) = ctx.sizes(input);
    let channels = total / per_channel.max(1);
    let (b, x, y) = ShaderBuilder::unary(ctx)?;
    let at = |t: &wgsl::TensorRef| t.at(&format!("c * {per_channel}u + i"));
    let body = format!(
        "{}    var top = -3.4028235e38f;\n    for (var c = 0u; c < {channels}u; c = c + 1u) {{ top = max(top, {xa}); }}\n    \
         var sum = 0.0;\n    for (var c = 0u; c < {channels}u; c = c + 1u) {{ sum = sum + exp({xa} - top); }}\n    \
         for (var c = 0u; c < {channels}u; c = c + 1u) {{ {ya} = exp({xa} - top) / sum; }}\n",
        wgsl::element_index(per_channel),
        xa = at(&x),
        ya = at(&y),
    );
    b.finish_elements(per_channel, &body)
}

/// `inputs[0] + scale·inputs[1] + scale·inputs[2] ...`, accumulated in that order.
pub fn add(ctx: &Context, scale: f64) -> Result<Shader, Unsupported> {
    let (total, _) = ctx.sizes(ctx.kernel.output);
    let mut b = ShaderBuilder::new(ctx);
    let y = b.tensor(ctx.kernel.output, true)?;
    let mut body = wgsl::element_index(total);
    for (k, &input) in ctx.kernel.inputs.iter().enumerate() {
        let x = b.tensor(input, false)?;
        body.push_str(&match k {
            0 => format!("    var s = {};\n", x.at("i")),
            _ if scale == 1.0 => format!("    s = s + {};\n", x.at("i")),
            _ => format!("    s = s + {} * {};\n", wgsl::float(scale), x.at("i")),
        });
    }
    body.push_str(&format!("    {} = s;\n", y.at("i")));
    b.finish_elements(total, &body)
}

/// A concat that stays a kernel: each input copied into its channels of the output.
pub fn concat(ctx: &Context) -> Result<Vec<Shader>, Unsupported> {
    let mut offset = 0;
    let mut shaders = Vec::new();
    for &input in &ctx.kernel.inputs {
        let (total, _) = ctx.sizes(input);
        let mut b = ShaderBuilder::new(ctx);
        let x = b.tensor(input, false)?;
        let y = b.tensor(ctx.kernel.output, true)?;
        let body = format!(
            "{}    {} = {};\n",
            wgsl::element_index(total),
            y.at(&format!("{offset}u + i")),
            x.at("i")
        );
        let label = format!(
            "{} [from {}]",
            ctx.kernel.name,
            ctx.fused.tensor(input).name
        );
        shaders.push(b.finish(label, THREADS, wgsl::element_workgroups(total), &body)?);
        offset += total;
    }
    Ok(shaders)
}
