//! Max and average pooling, windowed and global.

use super::window::{Window, describe};
use super::{Inferred, Op, OpDef, OpRule, Operands, Padding, Shape, ShapeError};
use crate::diagnostics::Code;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

impl PoolKind {
    pub fn name(self) -> &'static str {
        match self {
            PoolKind::Max => "maxpool",
            PoolKind::Avg => "avgpool",
        }
    }

    pub fn global_name(self) -> &'static str {
        match self {
            PoolKind::Max => "globalmaxpool",
            PoolKind::Avg => "globalavgpool",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub kind: PoolKind,
    pub window: Window,
    /// Average pooling only: whether padded positions count in the divisor (PyTorch's
    /// default, true).
    pub count_include_pad: bool,
}

pub const MAXPOOL: OpDef = OpDef {
    name: "maxpool",
    params: &["kernel", "stride", "pad", "dilation", "ceil"],
    operands: Operands::Params,
    build: |args| {
        let ceil = args.bool("ceil", false);
        Op::Pool(Pool {
            kind: PoolKind::Max,
            window: Window::from_args(args, true, ceil),
            count_include_pad: false,
        })
    },
};

pub const AVGPOOL: OpDef = OpDef {
    name: "avgpool",
    params: &["kernel", "stride", "pad", "ceil", "count_include_pad"],
    operands: Operands::Params,
    build: |args| {
        let ceil = args.bool("ceil", false);
        Op::Pool(Pool {
            kind: PoolKind::Avg,
            window: Window::from_args(args, true, ceil),
            count_include_pad: args.bool("count_include_pad", true),
        })
    },
};

impl OpRule for Pool {
    fn infer(&self, inputs: &[&Shape]) -> Result<Inferred, ShapeError> {
        let name = self.kind.name();
        let [c, h, w] = inputs[0]
            .chw()
            .ok_or_else(|| ShapeError::wrong_rank(name, "a CxHxW input", inputs[0]))?;
        if let Padding::Explicit(pads) = self.window.padding {
            for (i, &pad) in pads.iter().enumerate() {
                let kernel = self.window.effective_kernel(i % 2);
                if pad > kernel / 2 {
                    return Err(ShapeError::new(
                        Code::PoolPadding,
                        format!("padding {pad} is more than half of the {name} kernel {kernel}"),
                    )
                    .at_arg("pad")
                    .label(format!("at most {} for this kernel", kernel / 2))
                    .help("a window could then hold nothing but padding; PyTorch and ONNX refuse it: reduce the padding or enlarge the kernel"));
                }
            }
        }
        let mut warnings = Vec::new();
        let out = self.window.output([h, w], &mut warnings)?;
        Ok(Inferred {
            warnings,
            ..Inferred::shape_only(Shape(vec![c, out.size[0], out.size[1]]))
        })
    }

    fn describe(&self) -> String {
        let mut text = format!("{} {}", self.kind.name(), describe(&self.window));
        if self.kind == PoolKind::Avg
            && !self.count_include_pad
            && self.window.padding != Padding::Explicit([0; 4])
        {
            text.push_str(" excl-pad");
        }
        text
    }
}

/// Pooling to a given output size, windows placed as PyTorch's `AdaptiveAvgPool2d`
/// places them: output cell `i` covers input `floor(i*in/out) .. ceil((i+1)*in/out)`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptivePool {
    pub kind: PoolKind,
    pub size: [u64; 2],
}

impl PoolKind {
    pub fn adaptive_name(self) -> &'static str {
        match self {
            PoolKind::Max => "adaptivemaxpool",
            PoolKind::Avg => "adaptiveavgpool",
        }
    }
}

pub const ADAPTIVE_AVGPOOL: OpDef = OpDef {
    name: "adaptiveavgpool",
    params: &["size"],
    operands: Operands::Params,
    build: |args| {
        Op::AdaptivePool(AdaptivePool {
            kind: PoolKind::Avg,
            size: args.size2("size", None, 1),
        })
    },
};

pub const ADAPTIVE_MAXPOOL: OpDef = OpDef {
    name: "adaptivemaxpool",
    build: |args| {
        Op::AdaptivePool(AdaptivePool {
            kind: PoolKind::Max,
            size: args.size2("size", None, 1),
        })
    },
    ..ADAPTIVE_AVGPOOL
};

impl OpRule for AdaptivePool {
    fn infer(&self, inputs: &[&Shape]) -> Result<Inferred, ShapeError> {
        let [c, _, _] = inputs[0].chw().ok_or_else(|| {
            ShapeError::wrong_rank(self.kind.adaptive_name(), "a CxHxW input", inputs[0])
        })?;
        Ok(Inferred::shape_only(Shape(vec![
            c,
            self.size[0],
            self.size[1],
        ])))
    }

    fn describe(&self) -> String {
        format!(
            "{} {}x{}",
            self.kind.adaptive_name(),
            self.size[0],
            self.size[1]
        )
    }
}

/// Pooling over the whole height and width, to `Cx1x1`.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalPool {
    pub kind: PoolKind,
}

pub const GLOBAL_AVGPOOL: OpDef = OpDef {
    name: "globalavgpool",
    params: &[],
    operands: Operands::Params,
    build: |_| {
        Op::GlobalPool(GlobalPool {
            kind: PoolKind::Avg,
        })
    },
};

pub const GLOBAL_MAXPOOL: OpDef = OpDef {
    name: "globalmaxpool",
    params: &[],
    operands: Operands::Params,
    build: |_| {
        Op::GlobalPool(GlobalPool {
            kind: PoolKind::Max,
        })
    },
};

impl OpRule for GlobalPool {
    fn infer(&self, inputs: &[&Shape]) -> Result<Inferred, ShapeError> {
        let [c, _, _] = inputs[0].chw().ok_or_else(|| {
            ShapeError::wrong_rank(self.kind.global_name(), "a CxHxW input", inputs[0])
        })?;
        Ok(Inferred::shape_only(Shape(vec![c, 1, 1])))
    }

    fn describe(&self) -> String {
        self.kind.global_name().to_string()
    }
}
