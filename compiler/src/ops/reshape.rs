//! Flatten: `CxHxW` to `C*H*W` features, in channel-major order.

use super::{Inferred, Op, OpDef, OpRule, Operands, Shape, ShapeError};

#[derive(Debug, Clone, PartialEq)]
pub struct Flatten;

pub const FLATTEN: OpDef = OpDef {
    name: "flatten",
    params: &[],
    operands: Operands::Params,
    build: |_| Op::Flatten(Flatten),
};

impl OpRule for Flatten {
    fn infer(&self, inputs: &[&Shape]) -> Result<Inferred, ShapeError> {
        Ok(Inferred::shape_only(Shape(vec![inputs[0].elements()?])))
    }

    fn describe(&self) -> String {
        "flatten".to_string()
    }
}
