//! A conv (or dense) kernel: per sample and group, im2col packing and the blocked
//! product, then the epilogue over the output.

use super::epilogue;
use super::loops::{counted, fixed};
use super::{Arg, CpuTarget, KernelCode, sample_stride};
use crate::ops::Op;
use crate::passes::{FusedGraph, Kernel};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    AbiParam, Function, InstBuilder, MemFlagsData, Signature, UserFuncName, Value, types,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

/// Everything about a convolution's sizes, all known at compile time. A dense layer is
/// a 1x1 convolution of a 1x1 image with `channels` = its input features.
#[derive(Debug, Clone, PartialEq)]
pub struct Geometry {
    pub channels: u64,
    pub height: u64,
    pub width: u64,
    pub out_channels: u64,
    pub out_height: u64,
    pub out_width: u64,
    pub kernel: [u64; 2],
    pub stride: [u64; 2],
    pub dilation: [u64; 2],
    /// Top, left, bottom, right.
    pub pads: [u64; 4],
    pub groups: u64,
    /// Elements between samples of the input's and the output's buffers.
    pub input_sample: u64,
    pub output_sample: u64,
}

impl Geometry {
    pub fn of(fused: &FusedGraph, kernel: &Kernel) -> Option<Geometry> {
        let input = *kernel.inputs.first()?;
        let in_shape = &fused.tensor(input).shape.0;
        let out_shape = &fused.tensor(kernel.output).shape.0;
        let (input_sample, output_sample) = (
            sample_stride(fused, input),
            sample_stride(fused, kernel.output),
        );
        match &kernel.op {
            Op::Conv(conv) => {
                let (&[c, h, w], &[m, oh, ow]) = (in_shape.as_slice(), out_shape.as_slice()) else {
                    return None;
                };
                Some(Geometry {
                    channels: c,
                    height: h,
                    width: w,
                    out_channels: m,
                    out_height: oh,
                    out_width: ow,
                    kernel: conv.window.kernel,
                    stride: conv.window.stride,
                    dilation: conv.window.dilation,
                    pads: conv.window.pads([h, w]),
                    groups: conv.groups,
                    input_sample,
                    output_sample,
                })
            }
            Op::Dense(_) => Some(Geometry {
                channels: in_shape.iter().product(),
                height: 1,
                width: 1,
                out_channels: *out_shape.first()?,
                out_height: 1,
                out_width: 1,
                kernel: [1, 1],
                stride: [1, 1],
                dilation: [1, 1],
                pads: [0; 4],
                groups: 1,
                input_sample,
                output_sample,
            }),
            _ => None,
        }
    }

    /// Output channels per group: M of each product.
    pub fn m(&self) -> u64 {
        self.out_channels / self.groups
    }

    /// Input channels x kernel area per group: K of each product.
    pub fn k(&self) -> u64 {
        self.channels / self.groups * self.kernel[0] * self.kernel[1]
    }

    /// Output pixels: N of each product.
    pub fn n(&self) -> u64 {
        self.out_height * self.out_width
    }

    /// Floats of one K block of the packed input: the scratch before the edge tile.
    pub fn packed_input(&self, target: &CpuTarget) -> u64 {
        self.n().div_ceil(target.nr) * target.nr * target.kc.min(self.k()).max(1)
    }

    /// Floats of the packed weights, for `target`'s tile.
    pub fn packed_weights(&self, target: &CpuTarget) -> u64 {
        self.groups * self.m().div_ceil(target.mr) * target.mr * self.k()
    }
}

/// The values a kernel's code works with, loaded from its argument array once.
pub(super) struct Pointers {
    pub slots: Vec<Value>,
    pub args: Vec<Arg>,
}

impl Pointers {
    pub fn get(&self, arg: &Arg) -> Value {
        let slot = self
            .args
            .iter()
            .position(|a| a == arg)
            .expect("slot declared");
        self.slots[slot]
    }
}

pub fn generate(
    fused: &FusedGraph,
    index: usize,
    geometry: Geometry,
    target: &CpuTarget,
) -> KernelCode {
    let kernel = &fused.kernels[index];
    let mut args = vec![
        Arg::Input,
        Arg::Output,
        Arg::PackedWeights,
        Arg::Bias,
        Arg::Scratch,
        Arg::Tile,
        Arg::Transcendental,
    ];
    args.extend(epilogue::args(kernel));
    let pointer = target.frontend.pointer_type();
    let mut signature = Signature::new(target.frontend.default_call_conv);
    signature.params.push(AbiParam::new(pointer));
    signature.params.push(AbiParam::new(types::I64));
    let mut function =
        Function::with_name_signature(UserFuncName::user(0, index as u32), signature);
    let mut context = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut function, &mut context);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let (array, batch) = (b.block_params(entry)[0], b.block_params(entry)[1]);
    let slots = (0..args.len())
        .map(|i| {
            b.ins()
                .load(pointer, MemFlagsData::trusted(), array, (i * 8) as i32)
        })
        .collect();
    let pointers = Pointers { slots, args };
    let product = Product {
        geometry: &geometry,
        target,
        pointers: &pointers,
    };
    let zero = b.ins().iconst(types::I64, 0);
    counted(&mut b, zero, batch, 1, |b, n| {
        let input = offset(b, pointers.get(&Arg::Input), n, geometry.input_sample);
        let output = offset(b, pointers.get(&Arg::Output), n, geometry.output_sample);
        product.sample(b, input, output);
        epilogue::generate(b, fused, kernel, &geometry, &pointers, n, output);
    });
    b.ins().return_(&[]);
    b.finalize(target.frontend);
    let scratch_floats = geometry.packed_input(target) + target.mr * target.nr;
    KernelCode {
        kernel: index,
        function,
        args: pointers.args,
        scratch_floats,
        geometry,
    }
}

/// `base + index * stride` floats.
pub(super) fn offset(b: &mut FunctionBuilder, base: Value, index: Value, stride: u64) -> Value {
    let bytes = b.ins().imul_imm_s(index, (stride * 4) as i64);
    b.ins().iadd(base, bytes)
}

/// `base + constant` floats.
pub(super) fn offset_by(b: &mut FunctionBuilder, base: Value, floats: u64) -> Value {
    if floats == 0 {
        base
    } else {
        b.ins().iadd_imm_s(base, (floats * 4) as i64)
    }
}

/// The matrix products of one sample.
struct Product<'a> {
    geometry: &'a Geometry,
    target: &'a CpuTarget,
    pointers: &'a Pointers,
}

/// One K block: its size, and where it starts (a loop value or a constant).
struct Block {
    kc: u64,
    p0: Value,
    /// Nonzero when earlier blocks have written C: the tile then adds to it.
    accumulate: Value,
}

impl Product<'_> {
    fn sample(&self, b: &mut FunctionBuilder, input: Value, output: Value) {
        let g = self.geometry;
        let (k, kc) = (g.k(), self.target.kc);
        fixed(b, g.groups, |b, group| {
            let input = offset(b, input, group, g.channels / g.groups * g.height * g.width);
            let output = offset(b, output, group, g.m() * g.n());
            let weights_per_group = g.m().div_ceil(self.target.mr) * self.target.mr * k;
            let weights = offset(
                b,
                self.pointers.get(&Arg::PackedWeights),
                group,
                weights_per_group,
            );
            let full_blocks = k / kc;
            fixed(b, full_blocks, |b, block| {
                let p0 = b.ins().imul_imm_s(block, kc as i64);
                let first = b.ins().icmp_imm_s(IntCC::NotEqual, block, 0);
                let accumulate = b.ins().uextend(types::I32, first);
                self.block(b, &Block { kc, p0, accumulate }, input, weights, output);
            });
            if k % kc != 0 {
                let p0 = b.ins().iconst(types::I64, (full_blocks * kc) as i64);
                let accumulate = b.ins().iconst(types::I32, i64::from(full_blocks > 0));
                let tail = Block {
                    kc: k % kc,
                    p0,
                    accumulate,
                };
                self.block(b, &tail, input, weights, output);
            }
        });
    }

    fn block(
        &self,
        b: &mut FunctionBuilder,
        block: &Block,
        input: Value,
        weights: Value,
        output: Value,
    ) {
        let scratch = self.pointers.get(&Arg::Scratch);
        self.pack(b, block, input, scratch);
        self.tiles(b, block, weights, scratch, output);
    }

    /// im2col of K rows `p0..p0 + kc` into NR-column panels: element (p, col) at
    /// `scratch[(col / NR) * kc * NR + p * NR + col % NR]`, zero where the window
    /// reads padding.
    fn pack(&self, b: &mut FunctionBuilder, block: &Block, input: Value, scratch: Value) {
        let g = self.geometry;
        let nr = self.target.nr;
        let area = g.kernel[0] * g.kernel[1];
        fixed(b, block.kc, |b, p| {
            let row = b.ins().iadd(block.p0, p);
            let channel = b.ins().udiv_imm_u(row, area as i64);
            let tap = b.ins().urem_imm_u(row, area as i64);
            let ky = b.ins().udiv_imm_u(tap, g.kernel[1] as i64);
            let kx = b.ins().urem_imm_u(tap, g.kernel[1] as i64);
            let plane = offset(b, input, channel, g.height * g.width);
            // iy = oy * sh + ky * dh - top; ix likewise: the window's first row and
            // column for output (0, 0), then steps of the stride.
            let y0 = b.ins().imul_imm_s(ky, g.dilation[0] as i64);
            let y0 = b.ins().iadd_imm_s(y0, -(g.pads[0] as i64));
            let x0 = b.ins().imul_imm_s(kx, g.dilation[1] as i64);
            let x0 = b.ins().iadd_imm_s(x0, -(g.pads[1] as i64));
            let dst_row = b.ins().imul_imm_s(p, (nr * 4) as i64);
            let dst_row = b.ins().iadd(scratch, dst_row);
            fixed(b, g.out_height, |b, oy| {
                let iy = b.ins().imul_imm_s(oy, g.stride[0] as i64);
                let iy = b.ins().iadd(iy, y0);
                let row_inside = b
                    .ins()
                    .icmp_imm_s(IntCC::UnsignedLessThan, iy, g.height as i64);
                let row_start = b.ins().imul_imm_s(iy, g.width as i64);
                let col_start = b.ins().imul_imm_s(oy, g.out_width as i64);
                fixed(b, g.out_width, |b, ox| {
                    let ix = b.ins().imul_imm_s(ox, g.stride[1] as i64);
                    let ix = b.ins().iadd(ix, x0);
                    let col_inside =
                        b.ins()
                            .icmp_imm_s(IntCC::UnsignedLessThan, ix, g.width as i64);
                    let inside = b.ins().band(row_inside, col_inside);
                    let at = b.ins().iadd(row_start, ix);
                    let zero = b.ins().iconst(types::I64, 0);
                    let at = b.ins().select(inside, at, zero);
                    let address = offset(b, plane, at, 1);
                    let value = b
                        .ins()
                        .load(types::F32, MemFlagsData::trusted(), address, 0);
                    let nothing = b.ins().f32const(0.0);
                    let value = b.ins().select(inside, value, nothing);
                    let col = b.ins().iadd(col_start, ox);
                    let panel = b.ins().ushr_imm_u(col, nr.trailing_zeros() as i64);
                    let lane = b.ins().band_imm_u(col, (nr - 1) as i64);
                    let panel_offset = b.ins().imul_imm_s(panel, (block.kc * nr) as i64);
                    let element = b.ins().iadd(panel_offset, lane);
                    let address = offset(b, dst_row, element, 1);
                    b.ins().store(MemFlagsData::trusted(), value, address, 0);
                });
            });
        });
    }

    /// Every MR x NR tile of the block: full ones straight into C, edge ones through
    /// the scratch tile.
    fn tiles(
        &self,
        b: &mut FunctionBuilder,
        block: &Block,
        weights: Value,
        packed: Value,
        output: Value,
    ) {
        let g = self.geometry;
        let (mr, nr) = (self.target.mr, self.target.nr);
        let (m, n) = (g.m(), g.n());
        let columns = |j_full: bool| if j_full { nr } else { n % nr };
        for (j_full, j_count) in [(true, n / nr), (false, u64::from(n % nr != 0))] {
            fixed(b, j_count, |b, j| {
                let j = if j_full {
                    j
                } else {
                    b.ins().iconst(types::I64, (n / nr) as i64)
                };
                let b_panel = offset(b, packed, j, block.kc * nr);
                for (i_full, i_count) in [(true, m / mr), (false, u64::from(m % mr != 0))] {
                    fixed(b, i_count, |b, i| {
                        let i = if i_full {
                            i
                        } else {
                            b.ins().iconst(types::I64, (m / mr) as i64)
                        };
                        let a_panel = offset(b, weights, i, g.k() * mr);
                        let p0_offset = b.ins().imul_imm_s(block.p0, (mr * 4) as i64);
                        let a_panel = b.ins().iadd(a_panel, p0_offset);
                        let row = b.ins().imul_imm_s(i, (mr * n) as i64);
                        let column = b.ins().imul_imm_s(j, nr as i64);
                        let corner = b.ins().iadd(row, column);
                        let corner = offset(b, output, corner, 1);
                        let rows = if i_full { mr } else { m % mr };
                        let tile = Tile {
                            a_panel,
                            b_panel,
                            corner,
                            rows,
                            columns: columns(j_full),
                        };
                        self.tile(b, block, &tile);
                    });
                }
            });
        }
    }

    fn tile(&self, b: &mut FunctionBuilder, block: &Block, tile: &Tile) {
        let (mr, nr) = (self.target.mr, self.target.nr);
        let n = self.geometry.n();
        let kc = b.ins().iconst(types::I64, block.kc as i64);
        if tile.rows == mr && tile.columns == nr {
            let ldc = b.ins().iconst(types::I64, n as i64);
            self.call_tile(
                b,
                &[
                    kc,
                    tile.a_panel,
                    tile.b_panel,
                    tile.corner,
                    ldc,
                    block.accumulate,
                ],
            );
            return;
        }
        let scratch = self.pointers.get(&Arg::Scratch);
        let edge = offset_by(b, scratch, self.geometry.packed_input(self.target));
        let ldc = b.ins().iconst(types::I64, nr as i64);
        let overwrite = b.ins().iconst(types::I32, 0);
        self.call_tile(b, &[kc, tile.a_panel, tile.b_panel, edge, ldc, overwrite]);
        let accumulate = b.ins().icmp_imm_s(IntCC::NotEqual, block.accumulate, 0);
        fixed(b, tile.rows, |b, r| {
            let src_row = offset(b, edge, r, nr);
            let dst_row = offset(b, tile.corner, r, n);
            fixed(b, tile.columns, |b, c| {
                let src = offset(b, src_row, c, 1);
                let dst = offset(b, dst_row, c, 1);
                let value = b.ins().load(types::F32, MemFlagsData::trusted(), src, 0);
                let old = b.ins().load(types::F32, MemFlagsData::trusted(), dst, 0);
                let sum = b.ins().fadd(old, value);
                let value = b.ins().select(accumulate, sum, value);
                b.ins().store(MemFlagsData::trusted(), value, dst, 0);
            });
        });
    }

    fn call_tile(&self, b: &mut FunctionBuilder, args: &[Value]) {
        let pointer = b.func.signature.params[0].value_type;
        let mut signature = Signature::new(b.func.signature.call_conv);
        for ty in [
            types::I64,
            pointer,
            pointer,
            pointer,
            types::I64,
            types::I32,
        ] {
            signature.params.push(AbiParam::new(ty));
        }
        let signature = b.import_signature(signature);
        let callee = self.pointers.get(&Arg::Tile);
        b.ins().call_indirect(signature, callee, args);
    }
}

struct Tile {
    a_panel: Value,
    b_panel: Value,
    corner: Value,
    rows: u64,
    columns: u64,
}
