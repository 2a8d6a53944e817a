//! Fully connected layers.

use super::{
    Inferred, Init, Op, OpDef, OpRule, Operands, Shape, ShapeError, WeightSpec, checked_mul,
};
use crate::diagnostics::Code;

#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    pub units: u64,
    pub bias: bool,
}

pub const DEF: OpDef = OpDef {
    name: "dense",
    params: &["units", "bias"],
    operands: Operands::Params,
    build: |args| {
        Op::Dense(Dense {
            units: args.count("units"),
            bias: args.bool("bias", true),
        })
    },
};

impl OpRule for Dense {
    fn infer(&self, inputs: &[&Shape]) -> Result<Inferred, ShapeError> {
        let features = match inputs[0].0[..] {
            [features] => features,
            _ => {
                let flat = inputs[0].elements()?;
                return Err(ShapeError::new(
                    Code::DenseUnflattened,
                    format!("`dense` needs a flat input, found a tensor of shape {}", inputs[0]),
                )
                .label(format!("input is {}", inputs[0]))
                .help(format!(
                    "insert `flatten` before this layer (it gives {flat} features), or a `globalavgpool` and `flatten` to keep only the channels"
                )));
            }
        };
        let macs = checked_mul(features, self.units)?;
        let mut weights = vec![WeightSpec::learned(
            "weight",
            vec![self.units, features],
            Init::fan_in(features),
        )];
        if self.bias {
            weights.push(WeightSpec::learned(
                "bias",
                vec![self.units],
                Init::fan_in(features),
            ));
        }
        Ok(Inferred {
            shape: Shape(vec![self.units]),
            weights,
            macs,
            warnings: Vec::new(),
        })
    }

    fn describe(&self) -> String {
        if self.bias {
            format!("dense {}", self.units)
        } else {
            format!("dense {} nobias", self.units)
        }
    }
}
