//! 2-D convolution.

use super::window::{Window, describe};
use super::{
    Inferred, Init, Op, OpDef, OpRule, Operands, Shape, ShapeError, WeightSpec, checked_product,
};
use crate::diagnostics::Code;

#[derive(Debug, Clone, PartialEq)]
pub struct Conv {
    pub out_channels: u64,
    pub window: Window,
    pub groups: u64,
    pub bias: bool,
}

pub const DEF: OpDef = OpDef {
    name: "conv",
    params: &[
        "out", "kernel", "stride", "pad", "dilation", "groups", "bias",
    ],
    operands: Operands::Params,
    build: |args| {
        Op::Conv(Conv {
            out_channels: args.count("out"),
            window: Window::from_args(args, false, false),
            groups: args.count_or("groups", 1),
            bias: args.bool("bias", true),
        })
    },
};

impl OpRule for Conv {
    fn infer(&self, inputs: &[&Shape]) -> Result<Inferred, ShapeError> {
        let [c, h, w] = inputs[0]
            .chw()
            .ok_or_else(|| ShapeError::wrong_rank("conv", "a CxHxW input", inputs[0]))?;
        self.check_groups(c)?;
        let mut warnings = Vec::new();
        let out = self.window.output([h, w], &mut warnings)?;
        let [kh, kw] = self.window.kernel;
        let fan_in = checked_product(&[c / self.groups, kh, kw])?;
        let mut weights = vec![WeightSpec::learned(
            "weight",
            vec![self.out_channels, c / self.groups, kh, kw],
            Init::fan_in(fan_in),
        )];
        if self.bias {
            weights.push(WeightSpec::learned(
                "bias",
                vec![self.out_channels],
                Init::fan_in(fan_in),
            ));
        }
        let macs = checked_product(&[self.out_channels, out.size[0], out.size[1], fan_in])?;
        Ok(Inferred {
            shape: Shape(vec![self.out_channels, out.size[0], out.size[1]]),
            weights,
            macs,
            warnings,
        })
    }

    fn describe(&self) -> String {
        let mut text = format!("conv {} {}", self.out_channels, describe(&self.window));
        if self.groups != 1 {
            text.push_str(&format!(" g{}", self.groups));
        }
        if !self.bias {
            text.push_str(" nobias");
        }
        text
    }
}

impl Conv {
    fn check_groups(&self, in_channels: u64) -> Result<(), ShapeError> {
        for (what, channels) in [("input", in_channels), ("output", self.out_channels)] {
            if channels % self.groups != 0 {
                let divisors: Vec<String> = (1..=channels.min(self.groups))
                    .rev()
                    .filter(|g| channels % g == 0)
                    .take(3)
                    .map(|g| g.to_string())
                    .collect();
                return Err(ShapeError::new(
                    Code::GroupsMismatch,
                    format!("{channels} {what} channels cannot be split into {} groups", self.groups),
                )
                .at_arg("groups")
                .label(format!("{} groups", self.groups))
                .help(format!(
                    "the {what} channels must be a multiple of `groups`: for {channels} {what} channels, `groups` could be {}",
                    match divisors.split_last() {
                        Some((last, [])) => last.clone(),
                        Some((last, init)) => format!("{} or {last}", init.join(", ")),
                        None => "1".to_string(),
                    }
                )));
            }
        }
        Ok(())
    }
}
