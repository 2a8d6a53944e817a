//! A network input: its shape is declared, not inferred.

use super::{Inferred, OpRule, Shape, ShapeError};

#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub shape: Shape,
}

impl OpRule for Input {
    fn infer(&self, _inputs: &[&Shape]) -> Result<Inferred, ShapeError> {
        self.shape.elements()?;
        Ok(Inferred::shape_only(self.shape.clone()))
    }

    fn describe(&self) -> String {
        "input".to_string()
    }
}
