//! Sliding-window arithmetic shared by convolution and pooling: output sizes as PyTorch
//! and ONNX compute them, and the checks that make them meaningful.

use super::args::{Args, Padding};
use super::{ShapeError, ShapeWarning, checked_mul};
use crate::diagnostics::Code;
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub kernel: [u64; 2],
    pub stride: [u64; 2],
    pub dilation: [u64; 2],
    pub padding: Padding,
    /// Round the output size up (PyTorch's `ceil_mode`).
    pub ceil: bool,
}

/// A window's output size, with the padding it resolved to (top, left, bottom, right).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowOutput {
    pub size: [u64; 2],
    pub pads: [u64; 4],
}

const AXES: [&str; 2] = ["height", "width"];

impl Window {
    pub fn from_args(args: &mut Args, default_stride_is_kernel: bool, ceil: bool) -> Window {
        let kernel = args.size2("kernel", None, 1);
        let stride_default = if default_stride_is_kernel {
            kernel
        } else {
            [1, 1]
        };
        Window {
            kernel,
            stride: args.size2("stride", Some(stride_default), 1),
            dilation: args.size2("dilation", Some([1, 1]), 1),
            padding: args.padding("pad"),
            ceil,
        }
    }

    /// The kernel's extent once dilated.
    pub fn effective_kernel(&self, axis: usize) -> u64 {
        // Saturates: a kernel this wide is larger than any input, and is reported so.
        self.dilation[axis]
            .saturating_mul(self.kernel[axis] - 1)
            .saturating_add(1)
    }

    /// Resolves `same` padding for an input size (ONNX `SAME_UPPER`: the odd pixel of
    /// padding goes at the end).
    pub fn pads(&self, input: [u64; 2]) -> [u64; 4] {
        match self.padding {
            Padding::Explicit(p) => p,
            Padding::Same => {
                let mut pads = [0; 4];
                for axis in 0..2 {
                    let out = input[axis].div_ceil(self.stride[axis]);
                    let needed = (out.saturating_sub(1).saturating_mul(self.stride[axis])
                        + self.effective_kernel(axis))
                    .saturating_sub(input[axis]);
                    pads[axis] = needed / 2;
                    pads[axis + 2] = needed - needed / 2;
                }
                pads
            }
        }
    }

    pub fn output(
        &self,
        input: [u64; 2],
        warnings: &mut Vec<ShapeWarning>,
    ) -> Result<WindowOutput, ShapeError> {
        let pads = self.pads(input);
        let mut size = [0; 2];
        let mut dropped = [0; 2];
        for axis in 0..2 {
            let padded = input[axis]
                .saturating_add(pads[axis])
                .saturating_add(pads[axis + 2]);
            let kernel = self.effective_kernel(axis);
            if kernel > padded {
                return Err(self.too_large(input, pads, axis));
            }
            let span = padded - kernel;
            let stride = self.stride[axis];
            let mut out = if self.ceil {
                span.div_ceil(stride)
            } else {
                span / stride
            } + 1;
            // PyTorch drops a last window that would start inside the end padding.
            if self.ceil && (out - 1) * stride >= input[axis] + pads[axis] {
                out -= 1;
            }
            size[axis] = out;
            let uncovered = span % stride;
            if !self.ceil && kernel >= stride && uncovered > pads[axis + 2] {
                dropped[axis] = uncovered - pads[axis + 2];
            }
        }
        if dropped != [0, 0] {
            warnings.push(self.drops_pixels(input, dropped));
        }
        checked_mul(size[0], size[1])?;
        Ok(WindowOutput { size, pads })
    }

    fn too_large(&self, input: [u64; 2], pads: [u64; 4], axis: usize) -> ShapeError {
        let padded = [0, 1].map(|a| input[a].saturating_add(pads[a]).saturating_add(pads[a + 2]));
        let mut message = format!(
            "kernel {}x{} is larger than the padded input {}x{}",
            self.effective_kernel(0),
            self.effective_kernel(1),
            padded[0],
            padded[1]
        );
        if self.dilation != [1, 1] {
            let _ = write!(
                message,
                " (a {}x{} kernel dilated by {}x{})",
                self.kernel[0], self.kernel[1], self.dilation[0], self.dilation[1]
            );
        }
        let mut help = format!(
            "the input's {} is {} here; use a kernel of at most {}, add padding, or downsample less before this layer",
            AXES[axis], input[axis], padded[axis]
        );
        if pads != [0; 4] {
            let _ = write!(help, " (padding included: {})", fmt_pads(pads));
        }
        ShapeError::new(Code::KernelTooLarge, message)
            .at_arg("kernel")
            .label(format!("{}x{} kernel", self.kernel[0], self.kernel[1]))
            .help(help)
    }

    fn drops_pixels(&self, input: [u64; 2], dropped: [u64; 2]) -> ShapeWarning {
        let count = |n: u64, what: &str| match n {
            1 => format!("the last {what}"),
            n => format!("the last {n} {what}s"),
        };
        let what = match dropped {
            [rows, 0] => count(rows, "row"),
            [0, columns] => count(columns, "column"),
            [rows, columns] => format!("{} and {}", count(rows, "row"), count(columns, "column")),
        };
        let stride = self.stride;
        let fitting: Vec<String> = (0..2)
            .filter(|&axis| dropped[axis] > 0)
            .map(|axis| {
                let fits =
                    input[axis] + (stride[axis] - dropped[axis] % stride[axis]) % stride[axis];
                format!("{} {fits} (or {})", AXES[axis], input[axis] - dropped[axis])
            })
            .collect();
        let stride_text = if stride[0] == stride[1] {
            stride[0].to_string()
        } else {
            format!("{}x{}", stride[0], stride[1])
        };
        ShapeWarning {
            code: Code::StrideDropsPixels,
            message: format!(
                "stride {stride_text} drops {what} of the {}x{} input",
                input[0], input[1]
            ),
            arg: Some("stride"),
            label: format!("the windows never reach {what}"),
            help: format!(
                "an input {} would be covered exactly; pad the input or adjust the kernel if the edge matters",
                fitting.join(" and ")
            ),
        }
    }
}

pub fn fmt_pads(p: [u64; 4]) -> String {
    if p[0] == p[2] && p[1] == p[3] {
        if p[0] == p[1] {
            format!("{}", p[0])
        } else {
            format!("{}x{}", p[0], p[1])
        }
    } else {
        format!("[{}, {}, {}, {}]", p[0], p[1], p[2], p[3])
    }
}

/// `3x3 s2 p1`, the way the summary shows a window.
pub fn describe(window: &Window) -> String {
    let mut text = format!("{}x{}", window.kernel[0], window.kernel[1]);
    let pair = |v: [u64; 2]| {
        if v[0] == v[1] {
            v[0].to_string()
        } else {
            format!("{}x{}", v[0], v[1])
        }
    };
    if window.stride != [1, 1] {
        let _ = write!(text, " s{}", pair(window.stride));
    }
    match window.padding {
        Padding::Same => text.push_str(" p=same"),
        Padding::Explicit(p) if p != [0; 4] => {
            let _ = write!(text, " p{}", fmt_pads(p));
        }
        Padding::Explicit(_) => {}
    }
    if window.dilation != [1, 1] {
        let _ = write!(text, " d{}", pair(window.dilation));
    }
    if window.ceil {
        text.push_str(" ceil");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(kernel: u64, stride: u64, pad: u64, ceil: bool) -> Window {
        Window {
            kernel: [kernel; 2],
            stride: [stride; 2],
            dilation: [1; 2],
            padding: Padding::Explicit([pad; 4]),
            ceil,
        }
    }

    fn size(w: &Window, input: u64) -> u64 {
        w.output([input; 2], &mut Vec::new()).expect("fits").size[0]
    }

    #[test]
    fn floor_and_ceil_follow_pytorch() {
        assert_eq!(size(&window(11, 4, 2, false), 224), 55); // AlexNet conv1
        assert_eq!(size(&window(3, 2, 0, false), 112), 55);
        assert_eq!(size(&window(3, 2, 0, true), 112), 56); // GoogLeNet's ceil-mode pools
        // The last ceil-mode window may not start in the end padding: 5 pixels, k2 s2
        // p1 gives 3 windows in floor mode and 4 would start at the padding in ceil.
        assert_eq!(size(&window(2, 2, 1, true), 5), 3);
    }

    #[test]
    fn same_padding_puts_the_odd_pixel_at_the_end() {
        let w = Window {
            padding: Padding::Same,
            ..window(4, 1, 0, false)
        };
        assert_eq!(w.pads([10, 10]), [1, 1, 2, 2]);
        let strided = Window {
            padding: Padding::Same,
            ..window(3, 2, 0, false)
        };
        assert_eq!(
            strided.output([7, 8], &mut Vec::new()).expect("fits").size,
            [4, 4]
        );
    }

    #[test]
    fn dilation_widens_the_kernel() {
        let w = Window {
            dilation: [2, 2],
            ..window(3, 1, 0, false)
        };
        assert_eq!(w.effective_kernel(0), 5);
        assert_eq!(size(&w, 9), 5);
        assert_eq!(
            w.output([4, 4], &mut Vec::new())
                .expect_err("too small")
                .code,
            Code::KernelTooLarge
        );
    }

    #[test]
    fn uncovered_pixels_warn_only_when_real_input_is_dropped() {
        let mut warnings = Vec::new();
        window(11, 4, 0, false)
            .output([224; 2], &mut warnings)
            .expect("fits");
        assert_eq!(warnings.len(), 1);
        assert_eq!(
            warnings[0].message,
            "stride 4 drops the last row and the last column of the 224x224 input"
        );
        assert!(
            warnings[0]
                .help
                .contains("height 227 (or 223) and width 227"),
            "{}",
            warnings[0].help
        );
        warnings.clear();
        // torchvision's AlexNet pads by 2: the dropped row is padding.
        window(11, 4, 2, false)
            .output([224; 2], &mut warnings)
            .expect("fits");
        // A 1x1 stride-2 projection skips every other pixel by design.
        window(1, 2, 0, false)
            .output([56; 2], &mut warnings)
            .expect("fits");
        assert!(warnings.is_empty());
    }
}
