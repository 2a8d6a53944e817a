//! Conv and dense weights as the fused kernels use them: with the folded batch norm's
//! scale in the weights and its shift in the bias, by the compiler's one folding
//! function.

use crate::Tensor;
use crate::error::{Result, RuntimeError};
use crate::weights::Weights;
use cnnc_compiler::ops::Op;
use cnnc_compiler::passes::{BnStats, Kernel, fold_batch_norm};

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
    let mut weight = weight(weights, &kernel.name, "weight")?
        .as_standard_layout()
        .into_owned();
    let mut bias = match has_bias {
        true => Some(weight_of(weights, &kernel.name, "bias")?),
        false => None,
    };
    if let Some(bn) = &kernel.folded_bn {
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
            .map_err(|e| RuntimeError::Invalid(format!("{}: {e}", kernel.name)))?;
        bias = Some(shift);
    }
    Ok(Some(Prepared { weight, bias }))
}

fn weight_of(weights: &Weights, layer: &str, suffix: &str) -> Result<Tensor> {
    Ok(weight(weights, layer, suffix)?
        .as_standard_layout()
        .into_owned())
}

fn slice(t: &Tensor) -> &[f32] {
    t.as_slice().unwrap_or_default()
}
