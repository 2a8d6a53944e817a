//! Conv and dense weights as the fused kernels use them: with the folded batch norm's
//! scale in the weights and its shift in the bias, by the compiler's one folding
//! function.

use crate::Tensor;
use crate::error::{Result, RuntimeError};
use crate::weights::Weights;
use cnnc_compiler::ops::Op;
use cnnc_compiler::passes::{BnStats, FoldedBn, Kernel, fold_batch_norm};
use ndarray::Axis;

/// A conv or dense kernel's weight and bias, ready to run.
pub struct Prepared {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

pub fn weight<'w>(weights: &'w Weights, layer: &str, suffix: &str) -> Result<&'w Tensor> {
    let name = format!("{layer}.{suffix}");
    weights.get(&name).ok_or_else(|| {
        RuntimeError::Invalid(format!(
            "no weight `{name}`: the weights do not belong to this network"
        ))
    })
}

/// `None` for kernels without weights of their own.
pub fn prepare(kernel: &Kernel, weights: &Weights) -> Result<Option<Prepared>> {
    let has_bias = match &kernel.op {
        Op::Conv(conv) => conv.bias,
        Op::Dense(dense) => dense.bias,
        _ => return Ok(None),
    };
    if kernel.parts.is_empty() {
        return layer(&kernel.name, has_bias, kernel.folded_bn.as_ref(), weights).map(Some);
    }
    let parts = kernel
        .parts
        .iter()
        .map(|p| layer(&p.name, p.bias, p.folded_bn.as_ref(), weights))
        .collect::<Result<Vec<_>>>()?;
    stack(&parts, has_bias).map(Some)
}

/// One layer's weight and bias, with its batch norm folded in.
fn layer(
    name: &str,
    has_bias: bool,
    folded_bn: Option<&FoldedBn>,
    weights: &Weights,
) -> Result<Prepared> {
    let mut weight = weight_of(weights, name, "weight")?;
    let mut bias = match has_bias {
        true => Some(weight_of(weights, name, "bias")?),
        false => None,
    };
    if let Some(bn) = folded_bn {
        let channels = weight.shape().first().copied().unwrap_or(0);
        let mut shift = bias.unwrap_or_else(|| Tensor::zeros(vec![channels]));
        let stats = [
            weight_of(weights, &bn.layer, "weight")?,
            weight_of(weights, &bn.layer, "bias")?,
            weight_of(weights, &bn.layer, "running_mean")?,
            weight_of(weights, &bn.layer, "running_var")?,
        ];
        let [gamma, beta, mean, var] = stats.each_ref().map(slice);
        let bn_stats = BnStats {
            gamma,
            beta,
            mean,
            var,
        };
        let (w, b) = (weight.as_slice_mut(), shift.as_slice_mut());
        let (Some(w), Some(b)) = (w, b) else {
            return Err(RuntimeError::Invalid("weights are not contiguous".into()));
        };
        fold_batch_norm(w, b, bn_stats, bn.eps)
            .map_err(|e| RuntimeError::Invalid(format!("{name}: {e}")))?;
        bias = Some(shift);
    }
    Ok(Prepared { weight, bias })
}

/// Merged convs' weights and biases, stacked along the output channels in order. The
/// merged epilogue has a bias step only if every part has a bias.
fn stack(parts: &[Prepared], has_bias: bool) -> Result<Prepared> {
    let invalid = |e: ndarray::ShapeError| RuntimeError::Invalid(format!("merged convs: {e}"));
    let weights: Vec<_> = parts.iter().map(|p| p.weight.view()).collect();
    let weight = ndarray::concatenate(Axis(0), &weights).map_err(invalid)?;
    let bias = match has_bias {
        true => {
            let biases = parts
                .iter()
                .map(|p| p.bias.as_ref().map(|b| b.view()))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| RuntimeError::Invalid("merged convs: a bias is missing".into()))?;
            Some(ndarray::concatenate(Axis(0), &biases).map_err(invalid)?)
        }
        false => None,
    };
    Ok(Prepared { weight, bias })
}

fn weight_of(weights: &Weights, layer: &str, suffix: &str) -> Result<Tensor> {
    Ok(weight(weights, layer, suffix)?
        .as_standard_layout()
        .into_owned())
}

fn slice(t: &Tensor) -> &[f32] {
    t.as_slice().unwrap_or_default()
}
