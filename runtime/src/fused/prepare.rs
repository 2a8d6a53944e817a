//! Conv and dense weights as the fused kernels use them: with the folded batch norm's
//! scale in the weights and its shift in the bias, by the compiler's one folding
//! function.
//!
//! [`Rows`] reads them where they lie (the weights file's map) a block of output
//! channels at a time, folded as it copies: the JIT packs from it without a folded copy
//! of the whole tensor, and [`prepare`] makes the fused executor's tensors from it.

use crate::Tensor;
use crate::error::{Result, RuntimeError};
use crate::weights::Weights;
use cnnc_compiler::ops::Op;
use cnnc_compiler::passes::{BnStats, FoldedBn, Kernel, fold_batch_norm};
use ndarray::{ArrayViewD, CowArray, IxDyn};
use std::borrow::Cow;

/// A conv or dense kernel's weight and bias, ready to run: the weight read in place
/// where nothing is folded into it.
pub struct Prepared<'w> {
    pub weight: CowArray<'w, f32, IxDyn>,
    pub bias: Option<Tensor>,
}

pub fn weight<'w>(weights: &'w Weights, layer: &str, suffix: &str) -> Result<&'w Tensor> {
    weights
        .get(&name(layer, suffix))
        .ok_or_else(|| missing(layer, suffix))
}

fn name(layer: &str, suffix: &str) -> String {
    format!("{layer}.{suffix}")
}

fn missing(layer: &str, suffix: &str) -> RuntimeError {
    RuntimeError::Invalid(format!(
        "no weight `{}`: the weights do not belong to this network",
        name(layer, suffix)
    ))
}

/// `None` for kernels without weights of their own.
pub fn prepare<'w>(kernel: &Kernel, weights: &'w Weights) -> Result<Option<Prepared<'w>>> {
    let Some(rows) = Rows::of(kernel, weights)? else {
        return Ok(None);
    };
    let invalid = |e: ndarray::ShapeError| RuntimeError::Invalid(format!("{}: {e}", kernel.name));
    let in_place = rows
        .unfolded_layer()
        .and_then(|layer| weights.values(&name(layer, "weight")));
    let weight = match in_place {
        Some(Cow::Borrowed(values)) => {
            CowArray::from(ArrayViewD::from_shape(rows.shape(), values).map_err(invalid)?)
        }
        // Copied once already: the file's floats are not aligned.
        Some(Cow::Owned(values)) => {
            CowArray::from(Tensor::from_shape_vec(rows.shape(), values).map_err(invalid)?)
        }
        None => {
            let mut values = vec![0.0; rows.count() * rows.row_len()];
            rows.copy(0, &mut values)?;
            CowArray::from(Tensor::from_shape_vec(rows.shape(), values).map_err(invalid)?)
        }
    };
    let bias = rows
        .bias()?
        .map(|b| Tensor::from_shape_vec(vec![b.len()], b))
        .transpose()
        .map_err(|e| RuntimeError::Invalid(format!("{}: {e}", kernel.name)))?;
    Ok(Some(Prepared { weight, bias }))
}

/// A conv or dense kernel's weights, one row per output channel, read in place: its
/// layer's, or merged convs' stacked in order, each folded with its batch norm as rows
/// are copied out.
pub struct Rows<'w> {
    parts: Vec<Part<'w>>,
    /// Values per row: input channels (per group) times the kernel area.
    len: usize,
    /// The weight's dimensions after the output channels.
    inner_shape: Vec<usize>,
    /// The kernel has a bias step: every part has a bias (a folded BN's shift counts).
    has_bias: bool,
}

/// One layer's share of the rows.
struct Part<'w> {
    name: &'w str,
    weight: Cow<'w, [f32]>,
    bias: Option<Cow<'w, [f32]>>,
    bn: Option<(BnStats<'w>, f64)>,
    rows: usize,
}

impl<'w> Rows<'w> {
    /// `None` for kernels without weights of their own.
    pub fn of(kernel: &'w Kernel, weights: &'w Weights) -> Result<Option<Rows<'w>>> {
        let has_bias = match &kernel.op {
            Op::Conv(conv) => conv.bias,
            Op::Dense(dense) => dense.bias,
            _ => return Ok(None),
        };
        let parts = match kernel.parts.is_empty() {
            true => vec![Part::of(
                &kernel.name,
                has_bias,
                kernel.folded_bn.as_ref(),
                weights,
            )?],
            false => kernel
                .parts
                .iter()
                .map(|p| Part::of(&p.name, p.bias, p.folded_bn.as_ref(), weights))
                .collect::<Result<_>>()?,
        };
        let shape = weights
            .shape(&name(parts[0].name, "weight"))
            .ok_or_else(|| missing(parts[0].name, "weight"))?;
        let inner_shape = shape.get(1..).unwrap_or_default().to_vec();
        let len = inner_shape.iter().product();
        for part in &parts {
            part.check(&inner_shape, weights)?;
            if !kernel.parts.is_empty() && has_bias && part.bias.is_none() {
                return Err(RuntimeError::Invalid(
                    "merged convs: a bias is missing".into(),
                ));
            }
        }
        let single_with_bias = kernel.parts.is_empty() && parts[0].bias.is_some();
        Ok(Some(Rows {
            parts,
            len,
            inner_shape,
            has_bias: has_bias || single_with_bias,
        }))
    }

    /// Rows: the output channels.
    pub fn count(&self) -> usize {
        self.parts.iter().map(|p| p.rows).sum()
    }

    /// Values per row.
    pub fn row_len(&self) -> usize {
        self.len
    }

    /// The folded weight's shape: `[output channels, ...]`.
    pub fn shape(&self) -> Vec<usize> {
        let mut shape = vec![self.count()];
        shape.extend(&self.inner_shape);
        shape
    }

    /// The layer whose weight the rows are, where they are one layer's with nothing
    /// folded in: read in place, not copied (a copy of LeNet-5's weights took a third
    /// of its interpreted run).
    pub fn unfolded_layer(&self) -> Option<&'w str> {
        match self.parts.as_slice() {
            [Part { name, bn: None, .. }] => Some(name),
            _ => None,
        }
    }

    /// Rows `first..` into `out` (whole rows), folded.
    pub fn copy(&self, first: usize, out: &mut [f32]) -> Result<()> {
        let len = self.len.max(1);
        let (mut row, mut out) = (first, out);
        let mut part_start = 0;
        for part in &self.parts {
            let part_end = part_start + part.rows;
            if out.is_empty() || row >= part_end {
                part_start = part_end;
                continue;
            }
            let rows = (part_end - row).min(out.len() / len);
            let (block, rest) = out.split_at_mut(rows * self.len);
            part.copy(row - part_start, self.len, block)?;
            (row, out) = (row + rows, rest);
            part_start = part_end;
        }
        match out.is_empty() {
            true => Ok(()),
            false => Err(RuntimeError::Invalid(format!(
                "rows {first}.. run past the weights' {} rows",
                self.count()
            ))),
        }
    }

    /// The folded bias, all parts stacked; `None` when the kernel has no bias step.
    pub fn bias(&self) -> Result<Option<Vec<f32>>> {
        if !self.has_bias {
            return Ok(None);
        }
        let mut bias = Vec::with_capacity(self.count());
        for part in &self.parts {
            bias.extend(part.folded_bias()?);
        }
        Ok(Some(bias))
    }
}

impl<'w> Part<'w> {
    fn of(
        layer: &'w str,
        has_bias: bool,
        folded_bn: Option<&FoldedBn>,
        weights: &'w Weights,
    ) -> Result<Part<'w>> {
        let values = |suffix| weights.values(&name(layer, suffix));
        let weights_of_layer = values("weight").ok_or_else(|| missing(layer, "weight"))?;
        let rows = weights
            .shape(&name(layer, "weight"))
            .and_then(|s| s.first().copied())
            .unwrap_or(0);
        let bias = match has_bias {
            true => Some(values("bias").ok_or_else(|| missing(layer, "bias"))?),
            // A folded BN leaves a bias, its shift, even on a layer without one.
            false => folded_bn.map(|_| Cow::Owned(vec![0.0; rows])),
        };
        let bn = match folded_bn {
            Some(bn) => {
                let stat = |suffix| -> Result<&'w [f32]> {
                    let tensor = weight(weights, &bn.layer, suffix)?;
                    tensor.as_slice().ok_or_else(|| {
                        RuntimeError::Invalid(format!("{}: not contiguous", bn.layer))
                    })
                };
                let stats = BnStats {
                    gamma: stat("weight")?,
                    beta: stat("bias")?,
                    mean: stat("running_mean")?,
                    var: stat("running_var")?,
                };
                Some((stats, bn.eps))
            }
            None => None,
        };
        Ok(Part {
            name: layer,
            weight: weights_of_layer,
            bias,
            bn,
            rows,
        })
    }

    /// That the sizes agree (the merged parts' shapes too), so that copying rows cannot
    /// go out of bounds.
    fn check(&self, inner_shape: &[usize], weights: &Weights) -> Result<()> {
        let stats = self
            .bn
            .iter()
            .flat_map(|(s, _)| [s.gamma, s.beta, s.mean, s.var]);
        let shape = weights
            .shape(&name(self.name, "weight"))
            .unwrap_or_default();
        let len: usize = inner_shape.iter().product();
        let lengths_agree = shape.get(1..) == Some(inner_shape)
            && self.weight.len() == self.rows * len
            && self.bias.as_ref().is_none_or(|b| b.len() == self.rows)
            && stats.clone().all(|s| s.len() == self.rows);
        match lengths_agree {
            true => Ok(()),
            false => Err(RuntimeError::Invalid(format!(
                "{}: the weights' sizes do not agree (cannot fold a batch norm of {} \
                 channels into {} weights of {} rows)",
                self.name,
                stats.map(<[f32]>::len).next().unwrap_or(self.rows),
                self.weight.len(),
                self.rows
            ))),
        }
    }

    /// This part's rows from `first` into `out` (whole rows of `len`), folded.
    fn copy(&self, first: usize, len: usize, out: &mut [f32]) -> Result<()> {
        let rows = out.len() / len.max(1);
        out.copy_from_slice(&self.weight[first * len..(first + rows) * len]);
        if let Some((stats, eps)) = &self.bn {
            let range = first..first + rows;
            // The bias folds alongside; only the weights are kept here.
            let mut bias = match &self.bias {
                Some(bias) => bias[range.clone()].to_vec(),
                None => vec![0.0; rows],
            };
            fold_batch_norm(out, &mut bias, channels(stats, range), *eps)
                .map_err(|e| RuntimeError::Invalid(format!("{}: {e}", self.name)))?;
        }
        Ok(())
    }

    fn folded_bias(&self) -> Result<Vec<f32>> {
        let mut bias = self.bias.as_deref().unwrap_or_default().to_vec();
        if let Some((stats, eps)) = &self.bn {
            // Folding a row-less weight leaves the weights alone and folds the bias.
            let mut no_weights = [];
            fold_batch_norm(&mut no_weights, &mut bias, *stats, *eps)
                .map_err(|e| RuntimeError::Invalid(format!("{}: {e}", self.name)))?;
        }
        Ok(bias)
    }
}

/// A batch norm's statistics for `channels` only.
fn channels<'s>(stats: &BnStats<'s>, channels: std::ops::Range<usize>) -> BnStats<'s> {
    BnStats {
        gamma: &stats.gamma[channels.clone()],
        beta: &stats.beta[channels.clone()],
        mean: &stats.mean[channels.clone()],
        var: &stats.var[channels],
    }
}
