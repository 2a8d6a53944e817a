//! The input and output transforms of one Winograd tile row, sixteen tiles at a time in
//! AVX-512 lanes (eight in AVX2's), for generated kernels to call (`Arg::WinogradInput`,
//! `Arg::WinogradOutput`). Cranelift lowers no vector wider than f32x4, and there the
//! transforms of F(4x4,3x3) took as long as the products on 64 channels (VGG-16's
//! 224x224 layer at one thread: input transform 4.5 ms, output 2.9, the rest 9.4).
//!
//! The transform is the generated code's: each row of the α x α values through the
//! transform's matrix `L` (`L d Lᵀ`), then each column, with the same coefficients
//! (`F2X2_3X3`, `F4X4_3X3`, `F2X2_5X5`), the zero ones skipped; the rounding differs a little (the
//! generated code groups terms by magnitude, this one chains FMAs), both within the
//! JIT's tolerance (`runtime/tests/winograd.rs` runs both). Lane j holds tile j of the
//! group, so the input's columns are gathered at stride m and the outputs interleaved
//! back.

use cnnc_compiler::winograd::{F2X2_3X3, F2X2_5X5, F4X4_3X3};

/// `fn(plane, first_row, height, width, left, tiles, destination, first_column, nr,
/// panel, matrix)`: the tiles of one channel's tile row, read from its `height` x
/// `width` input `plane` where it lies, tile t's input rows from `first_row` (which
/// may be negative) and its columns from `t·m - left`, whatever lies outside the plane
/// taken as zero (the padding); value ξ of tile t goes to column `first_column + t` of
/// matrix ξ: `destination + ξ·matrix + (c / nr)·panel + c % nr` for that column c.
pub type InputFn = unsafe extern "C" fn(
    *const f32,
    isize,
    usize,
    usize,
    usize,
    usize,
    *mut f32,
    usize,
    usize,
    usize,
    usize,
);

/// `fn(source, matrix, tiles, out, out_width, rows, bias, residual, relu)`: the outputs
/// of one channel's tile row, tile t's products at `source + ξ·matrix + t`, written as
/// `rows` (at most m) output rows of `out_width` floats from `out`, finished as a tile
/// finishes its epilogue: plus `*bias` and plus the same floats of `residual` (rows
/// `out_width` apart) where those are not null, then the ReLU where `relu` is not 0.
pub type OutputFn = unsafe extern "C" fn(
    *const f32,
    usize,
    usize,
    *mut f32,
    usize,
    usize,
    *const f32,
    *const f32,
    usize,
);

/// The input transform of F(m x m, r x r), where this CPU runs it.
pub fn input_transform(m: u64, r: u64) -> Option<InputFn> {
    transforms(m, r).map(|(input, _)| input)
}

/// The output transform of F(m x m, r x r), where this CPU runs it.
pub fn output_transform(m: u64, r: u64) -> Option<OutputFn> {
    transforms(m, r).map(|(_, output)| output)
}

/// Whether this CPU's transforms run faster than the kernels' own f32x4 ones: AVX-512's
/// sixteen tiles at a time do (VGG-16's 64 -> 64 layer at 224x224 on a Xeon, one
/// thread: 17.3 -> 14.6 ms); AVX2's eight did not on a Zen 3 (the lowest minimums of 8
/// alternated rounds, one thread: 64 channels at 56x56 1.39-1.46 ms without them,
/// 1.46-1.57 with; 32 -> 96 5x5 at 28x28 0.90 against 1.00), and only spare the
/// compile.
pub fn transforms_are_faster() -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return true;
    }
    false
}

/// A pair of transforms for F(m x m, r x r), if an ISA has them.
type Pick = fn(u64, u64) -> Option<(InputFn, OutputFn)>;

/// Every ISA's transforms this CPU runs, the widest first (the one `transforms` takes;
/// the tests check each).
fn every_isa() -> Vec<Pick> {
    let mut found: Vec<Pick> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") {
            found.push(x86::avx512::pick);
        }
        if has!("avx2") && has!("fma") {
            found.push(x86::avx2::pick);
        }
    }
    found
}

fn transforms(m: u64, r: u64) -> Option<(InputFn, OutputFn)> {
    every_isa().first()?(m, r)
}

/// A variant's sizes and transform matrices as constants, padded to F(4x4)'s 6 x 6,
/// so that the code below, unrolled, multiplies by literal coefficients.
trait Variant {
    const M: usize;
    const ALPHA: usize;
    const INPUT: Matrix;
    const OUTPUT: Matrix;
}

type Matrix = [[f32; 6]; 6];

/// `l`'s rows, padded with zeros.
const fn padded(l: &[&[f32]]) -> Matrix {
    let mut out = [[0.0f32; 6]; 6];
    let mut i = 0;
    while i < l.len() {
        let mut j = 0;
        while j < l[i].len() {
            out[i][j] = l[i][j];
            j += 1;
        }
        i += 1;
    }
    out
}

/// A unit type for a variant, its constants from the compiler's `Transforms`.
macro_rules! variant {
    ($name:ident = $transforms:ident) => {
        struct $name;

        impl Variant for $name {
            const M: usize = $transforms.m as usize;
            const ALPHA: usize = $transforms.input.len();
            const INPUT: Matrix = padded($transforms.input);
            const OUTPUT: Matrix = padded($transforms.output);
        }
    };
}

variant!(F2 = F2X2_3X3);
variant!(F4 = F4X4_3X3);
variant!(F25 = F2X2_5X5);

/// `$body` once for each index below `$limit` (at most 6), `$i` bound to it as a
/// literal: loops the compiler would leave rolled, keeping the vectors on the stack.
macro_rules! unrolled {
    ($limit:expr, |$i:ident| $body:block) => {
        unrolled!(@each $limit, $i, $body, 0 1 2 3 4 5)
    };
    (@each $limit:expr, $i:ident, $body:block, $($n:literal)*) => {
        $( if $n < $limit { let $i: usize = $n; $body } )*
    };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::lanes::{Lanes, Ymm, Zmm};
    use super::{F2, F4, F25, InputFn, Matrix, OutputFn, Variant};
    use cnnc_compiler::codegen::cpu::WINOGRAD_HELPER_LANES;

    // The compiler makes the panels as wide as the widest group (`runs`).
    const _: () = assert!(Zmm::LANES == WINOGRAD_HELPER_LANES as usize);
    const _: () = assert!(Ymm::LANES <= Zmm::LANES);

    /// α x α vectors, a group of tiles' values (padded to 6 x 6).
    type Values<W> = [[W; 6]; 6];

    /// An ISA's C entry points, one pair a variant, compiled for its features, and
    /// `pick`, which finds a variant's pair.
    macro_rules! entry_points {
        ($isa:ident, $features:literal, $wide:ty) => {
            pub mod $isa {
                use super::*;

                entry_points!(@variant $features, $wide, F2: input_f2, output_f2);
                entry_points!(@variant $features, $wide, F4: input_f4, output_f4);
                entry_points!(@variant $features, $wide, F25: input_f25, output_f25);

                /// The transforms of F(m x m, r x r), if this ISA has them.
                pub fn pick(m: u64, r: u64) -> Option<(InputFn, OutputFn)> {
                    match (m, r) {
                        (2, 3) => Some((input_f2 as InputFn, output_f2 as OutputFn)),
                        (4, 3) => Some((input_f4 as InputFn, output_f4 as OutputFn)),
                        (2, 5) => Some((input_f25 as InputFn, output_f25 as OutputFn)),
                        _ => None,
                    }
                }
            }
        };
        (@variant $features:literal, $wide:ty, $variant:ident: $input:ident, $output:ident) => {
            /// # Safety
            /// As `InputFn` says, on a CPU with the features compiled for.
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = $features)]
            pub unsafe extern "C" fn $input(
                plane: *const f32,
                first_row: isize,
                height: usize,
                width: usize,
                left: usize,
                tiles: usize,
                destination: *mut f32,
                first_column: usize,
                nr: usize,
                panel: usize,
                matrix: usize,
            ) {
                let from = Plane {
                    at: plane,
                    first_row,
                    height,
                    width,
                    left,
                };
                let to = Destination {
                    at: destination,
                    first_column,
                    nr,
                    panel,
                    matrix,
                };
                // SAFETY: as the caller promised.
                unsafe { input::<$variant, $wide>(&from, tiles, &to) }
            }

            /// # Safety
            /// As `OutputFn` says, on a CPU with the features compiled for.
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = $features)]
            pub unsafe extern "C" fn $output(
                source: *const f32,
                matrix: usize,
                tiles: usize,
                out: *mut f32,
                out_width: usize,
                rows: usize,
                bias: *const f32,
                residual: *const f32,
                relu: usize,
            ) {
                let to = Rows {
                    out,
                    width: out_width,
                    rows,
                    bias,
                    residual,
                    relu: relu != 0,
                };
                // SAFETY: as the caller promised.
                unsafe { output::<$variant, $wide>(source, matrix, tiles, &to) }
            }
        };
    }

    entry_points!(avx512, "avx512f", Zmm);
    entry_points!(avx2, "avx2,fma", Ymm);

    /// Where outputs go, and how they are finished: as `OutputFn` describes. The fields
    /// the caller passes on the stack (bias, residual, relu) are kept apart, for the
    /// reason the microkernel's `Out` gives: copied as a pair, two stack arguments
    /// became one 16-byte load over two 8-byte stores, which waits for every store
    /// before it to drain.
    #[repr(C)]
    struct Rows {
        bias: *const f32,
        out: *mut f32,
        residual: *const f32,
        width: usize,
        relu: bool,
        rows: usize,
    }

    /// Where a tile row's inputs lie: as `InputFn` describes.
    struct Plane {
        at: *const f32,
        first_row: isize,
        height: usize,
        width: usize,
        left: usize,
    }

    /// Where transformed values go: the panel layout `InputFn` describes. Every field
    /// comes on the stack: in the reverse of their order there, so that no two are
    /// copied as one 16-byte load (see `Rows`).
    #[repr(C)]
    struct Destination {
        matrix: usize,
        panel: usize,
        nr: usize,
        first_column: usize,
        at: *mut f32,
    }

    /// # Safety
    /// As `InputFn`, on a CPU with `W`'s features.
    #[inline(always)]
    unsafe fn input<V: Variant, W: Lanes>(from: &Plane, tiles: usize, to: &Destination) {
        // SAFETY: the CPU has W's features; only the masks' lanes are read or written.
        unsafe {
            let zero = W::zero();
            let misaligned = (to.at as usize / 4 + to.first_column) % W::LANES;
            for (group, count) in groups(tiles, misaligned, W::LANES) {
                // The group's input columns, `M + 1` vectors of them from `x`, each
                // loaded with the lanes that lie in the plane.
                let x = (group * V::M) as isize - from.left as isize;
                let mut inside = [0u16; 6];
                unrolled!(V::M + 1, |v| {
                    inside[v] = lanes_within(x + (v * W::LANES) as isize, from.width, W::LANES);
                });
                let mut d = [[zero; 6]; 6];
                unrolled!(V::ALPHA, |i| {
                    let y = from.first_row + i as isize;
                    if y >= 0 && (y as usize) < from.height {
                        let row = from.at.wrapping_add(y as usize * from.width);
                        let mut loaded = [zero; 6];
                        unrolled!(V::M + 1, |v| {
                            let at = row.wrapping_offset(x + (v * W::LANES) as isize);
                            loaded[v] = W::load(at, inside[v]);
                        });
                        d[i] = columns::<V, W>(&loaded);
                    }
                });
                let values = transform::<V, W>(&V::INPUT, V::ALPHA, &d);
                let runs = runs(to, group, count);
                unrolled!(V::ALPHA, |j| {
                    unrolled!(V::ALPHA, |i| {
                        let point = j * V::ALPHA + i;
                        let matrix = to.at.wrapping_add(point * to.matrix);
                        for (offset, mask) in runs {
                            if mask != 0 {
                                values[j][i].store(matrix.wrapping_add(offset), mask);
                            }
                        }
                    });
                });
            }
        }
    }

    /// # Safety
    /// As `OutputFn`, on a CPU with `W`'s features.
    #[inline(always)]
    unsafe fn output<V: Variant, W: Lanes>(
        source: *const f32,
        matrix: usize,
        tiles: usize,
        to: &Rows,
    ) {
        // SAFETY: the CPU has W's features; only the masks' lanes are read or written,
        // and a bias that is not null is the channel's.
        unsafe {
            let zero = W::zero();
            let bias = (!to.bias.is_null()).then(|| W::splat(*to.bias));
            for (group, count) in groups(tiles, source as usize / 4 % W::LANES, W::LANES) {
                let lanes = ((1u32 << count) - 1) as u16;
                let mut products = [[zero; 6]; 6];
                unrolled!(V::ALPHA, |j| {
                    unrolled!(V::ALPHA, |i| {
                        let at = source.wrapping_add((j * V::ALPHA + i) * matrix + group);
                        products[j][i] = W::load(at, lanes);
                    });
                });
                let y = transform::<V, W>(&V::OUTPUT, V::M, &products);
                let first = group * V::M;
                unrolled!(V::M, |row| {
                    if row < to.rows {
                        let columns = interleave::<V, W>(&y[row]);
                        unrolled!(V::M, |k| {
                            let start = first + k * W::LANES;
                            if start < to.width {
                                let valid = (to.width - start).min(W::LANES);
                                let mask = ((1u32 << valid) - 1) as u16;
                                let at = row * to.width + start;
                                let mut value = columns[k];
                                if let Some(bias) = bias {
                                    value = value.add(bias);
                                }
                                if !to.residual.is_null() {
                                    let residual = to.residual.wrapping_add(at);
                                    value = value.add(W::load(residual, mask));
                                }
                                if to.relu {
                                    value = value.max(zero);
                                }
                                value.store(to.out.wrapping_add(at), mask);
                            }
                        });
                    }
                });
            }
        }
    }

    /// `L d Lᵀ` of a group of tiles' α x α values `d`, for `L` of `rows` rows: each row of
    /// `d` through `L`, then each column of the result (the generated `transform`'s
    /// order).
    ///
    /// # Safety
    /// The CPU has `W`'s features.
    #[inline(always)]
    unsafe fn transform<V: Variant, W: Lanes>(l: &Matrix, rows: usize, d: &Values<W>) -> Values<W> {
        // SAFETY: as the caller promised.
        unsafe {
            let zero = W::zero();
            let mut across = [[zero; 6]; 6];
            unrolled!(V::ALPHA, |i| {
                unrolled!(rows, |k| {
                    across[i][k] = combine::<V, W>(&l[k], &d[i]);
                });
            });
            let mut out = [[zero; 6]; 6];
            unrolled!(rows, |k| {
                let mut column = [zero; 6];
                unrolled!(V::ALPHA, |i| {
                    column[i] = across[i][k];
                });
                unrolled!(rows, |j| {
                    out[j][k] = combine::<V, W>(&l[j], &column);
                });
            });
            out
        }
    }

    /// `Σ c_k · v_k` over the nonzero coefficients, which are literals once unrolled.
    ///
    /// # Safety
    /// The CPU has `W`'s features.
    #[inline(always)]
    unsafe fn combine<V: Variant, W: Lanes>(coefficients: &[f32; 6], values: &[W; 6]) -> W {
        // SAFETY: as the caller promised.
        unsafe {
            let mut sum: Option<W> = None;
            unrolled!(V::ALPHA, |k| {
                let (c, v) = (coefficients[k], values[k]);
                sum = match sum {
                    _ if c == 0.0 => sum,
                    None if c == 1.0 => Some(v),
                    None => Some(W::splat(c).mul(v)),
                    Some(s) if c == 1.0 => Some(s.add(v)),
                    Some(s) if c == -1.0 => Some(s.sub(v)),
                    Some(s) => Some(W::splat(c).mul_add(v, s)),
                };
            });
            sum.unwrap_or(W::zero())
        }
    }

    /// `tiles` in groups of at most `lanes`, `(first tile, count)`, the first cut short
    /// so that the others start on a multiple of `lanes` floats of the matrices (whose
    /// column 0 lies `misaligned` floats past one): sixteen lanes' floats are then one
    /// cache line, where across two they took twice the stores' time.
    fn groups(
        tiles: usize,
        misaligned: usize,
        lanes: usize,
    ) -> impl Iterator<Item = (usize, usize)> {
        let first = (lanes - misaligned) % lanes;
        let first = if first == 0 { lanes } else { first };
        std::iter::successors(Some((0, first.min(tiles))), move |&(start, count)| {
            let next = start + count;
            (next < tiles).then(|| (next, (tiles - next).min(lanes)))
        })
        .filter(|&(_, count)| count > 0)
    }

    /// The group's columns cut at the panel edge they may cross (panels are at least
    /// as wide as a group): for each side, the offset at which lane 0 would lie
    /// and the mask of the lanes on that side (none, past the group's tiles). Always two
    /// stores, one perhaps of no lanes: a loop of one or two mispredicted its branch.
    fn runs(to: &Destination, group: usize, count: usize) -> [(usize, u16); 2] {
        let column = to.first_column + group;
        let within = column % to.nr;
        let first = (to.nr - within).min(count);
        let lanes = |from: usize, to: usize| (((1u32 << to) - 1) & !((1u32 << from) - 1)) as u16;
        let start = column / to.nr * to.panel + within;
        [
            (start, lanes(0, first)),
            (start + to.panel - to.nr, lanes(first, count)),
        ]
    }

    /// The lanes of `lanes` floats from column `start` that lie in a row of `width`.
    fn lanes_within(start: isize, width: usize, lanes: usize) -> u16 {
        let low = (-start).clamp(0, lanes as isize) as u32;
        let high = (width as isize - start).clamp(0, lanes as isize) as u32;
        let below = |n: u32| ((1u32 << n) - 1) as u16;
        below(high) & !below(low)
    }

    /// Lane j of value c: `row[M·j + c]`, for c < α, from the `M + 1` vectors of the
    /// row's columns `row`.
    ///
    /// # Safety
    /// The CPU has `W`'s features.
    #[inline(always)]
    unsafe fn columns<V: Variant, W: Lanes>(row: &[W; 6]) -> [W; 6] {
        // The gathers below are written for outputs of 2 and 4 a tile.
        const { assert!(V::M == 2 || V::M == 4) };
        // SAFETY: as the caller promised.
        unsafe {
            let mut gathered = [W::zero(); 6];
            if V::M == 2 {
                let [even, odd] = W::stride2([row[0], row[1]]);
                (gathered[0], gathered[1]) = (even, odd);
            } else {
                let four = W::stride4([row[0], row[1], row[2], row[3]]);
                gathered[..4].copy_from_slice(&four);
            }
            // Columns M to α - 1: columns 0 to α - M - 1 one tile further, the last
            // lane's from the tail (its lanes 0, 1, ... in turn).
            let mut from_tail = row[V::M];
            unrolled!(V::ALPHA, |c| {
                if c > V::M {
                    from_tail = from_tail.shifted(from_tail);
                }
                if c >= V::M {
                    gathered[c] = gathered[c.saturating_sub(V::M)].shifted(from_tail);
                }
            });
            gathered
        }
    }

    /// One output row of a group's tiles, `row[x]` holding column x of each tile (lane
    /// l for tile l), as `LANES`·M contiguous columns.
    ///
    /// # Safety
    /// The CPU has `W`'s features.
    #[inline(always)]
    unsafe fn interleave<V: Variant, W: Lanes>(row: &[W; 6]) -> [W; 6] {
        // SAFETY: as the caller promised.
        unsafe {
            let mut out = [W::zero(); 6];
            if V::M == 2 {
                out[..2].copy_from_slice(&W::interleave2([row[0], row[1]]));
            } else {
                out[..4].copy_from_slice(&W::interleave4([row[0], row[1], row[2], row[3]]));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jit::guarded::{Floats, Guard};
    use cnnc_compiler::winograd::Transforms;

    /// Deterministic values in [-1, 1).
    fn values(count: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..count)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// `(L d Lᵀ)[j][i]` in f64.
    fn transformed(l: &[&[f32]], d: &dyn Fn(usize, usize) -> f32, j: usize, i: usize) -> f64 {
        let alpha = l[0].len();
        let mut sum = 0.0;
        for a in 0..alpha {
            for b in 0..alpha {
                sum += f64::from(l[j][a]) * f64::from(d(a, b)) * f64::from(l[i][b]);
            }
        }
        sum
    }

    fn close(actual: f32, expected: f64) -> bool {
        (f64::from(actual) - expected).abs() <= 1e-5 * (1.0 + expected.abs())
    }

    /// Each variant's helper in one direction, for every ISA this CPU runs (none
    /// without AVX2, where the kernels' own transforms run), its transforms, m and α.
    fn variants<F>(
        direction: fn((InputFn, OutputFn)) -> F,
    ) -> Vec<(F, &'static Transforms, usize, usize)> {
        let found: Vec<_> = every_isa()
            .into_iter()
            .flat_map(|pick| {
                cnnc_compiler::winograd::VARIANTS
                    .into_iter()
                    .filter_map(move |t| {
                        let helper = direction(pick(t.m, t.r)?);
                        Some((helper, t, t.m as usize, t.alpha()))
                    })
            })
            .collect();
        if found.is_empty() {
            // Said, so that a run on such a CPU does not pass these tests unnoticed.
            eprintln!("no AVX2: nothing to test here (the kernels' own transforms run)");
        }
        found
    }

    #[test]
    fn the_input_transform_fills_exactly_its_columns_of_every_matrix() {
        for (helper, t, m, alpha) in variants(|(input, _)| input) {
            let r = t.r;
            let (kc, channel) = (3, 1);
            // (tiles, first column, misalignment, plane width x height, left padding,
            // first input row: above the plane, inside, running past its bottom), in
            // panels as wide as AVX2's tile makes them and as AVX-512's.
            let cases = [
                (1usize, 0usize, 0usize, (3usize, 2usize), 1usize, -1isize),
                (5, 3, 1, (9, 8), 1, 0),
                (16, 0, 0, (64, 5), 1, -1),
                (17, 31, 2, (66, 9), 0, 3),
                (37, 37, 5, (147, 147), 1, 140),
                (50, 16, 0, (199, 10), 2, -2),
            ];
            let panel_widths = cases.into_iter().flat_map(|case| [(case, 16), (case, 32)]);
            for ((tiles, first_column, shift, (width, height), left, first_row), nr) in panel_widths
            {
                let plane = values(width * height, (tiles * 7 + first_column) as u64);
                let inside = |y: isize, x: isize| {
                    let within =
                        (0..height as isize).contains(&y) && (0..width as isize).contains(&x);
                    if within {
                        plane[y as usize * width + x as usize]
                    } else {
                        0.0
                    }
                };
                let panels = (first_column + tiles).div_ceil(nr);
                let panel = kc * nr;
                let matrix = panels * panel + 5;
                // Against each guard page in turn: a read before or past the plane faults.
                for guard in [Guard::Leading, Guard::Trailing] {
                    let from = Floats::from_vec(plane.clone(), Some(guard)).expect("mapped");
                    // `shift` floats in, so that the matrices start off a cache line.
                    let mut out = vec![f32::NAN; shift + alpha * alpha * matrix];
                    let at = shift + channel * nr;
                    // SAFETY: the plane is `height` x `width`, the matrices hold the
                    // columns.
                    unsafe {
                        helper(
                            from.as_ptr(),
                            first_row,
                            height,
                            width,
                            left,
                            tiles,
                            out.as_mut_ptr().add(at),
                            first_column,
                            nr,
                            panel,
                            matrix,
                        )
                    };
                    let mut written = vec![false; out.len()];
                    for tile in 0..tiles {
                        let column = first_column + tile;
                        for (j, i) in (0..alpha).flat_map(|j| (0..alpha).map(move |i| (j, i))) {
                            let index =
                                at + (j * alpha + i) * matrix + column / nr * panel + column % nr;
                            let x = (tile * m) as isize - left as isize;
                            let d =
                                |a: usize, b: usize| inside(first_row + a as isize, x + b as isize);
                            let expected = transformed(t.input, &d, j, i);
                            assert!(
                                close(out[index], expected),
                                "F({m},{r}), tile {tile}: {} vs {expected}",
                                out[index]
                            );
                            written[index] = true;
                        }
                    }
                    let strays = out
                        .iter()
                        .zip(&written)
                        .filter(|(v, w)| !**w && !v.is_nan())
                        .count();
                    assert_eq!(
                        strays, 0,
                        "F({m},{r}), {tiles} tiles: values written outside the columns"
                    );
                }
            }
        }
    }

    #[test]
    fn the_output_transform_writes_exactly_its_rows_and_columns_finished() {
        for (helper, t, m, alpha) in variants(|(_, output)| output) {
            let r = t.r;
            // (output width, rows, misalignment, finish: bias, residual, relu)
            for (case, (out_width, rows, shift)) in [
                (1usize, 1usize, 0usize),
                (7, m, 3),
                (64, m, 0),
                (67, m - 1, 9),
                (150, m, 1),
            ]
            .into_iter()
            .enumerate()
            {
                let (bias, add, relu) = (case % 2 == 1, case % 3 != 0, case >= 2);
                let tiles = out_width.div_ceil(m);
                let matrix = tiles + shift;
                let products = values(shift + alpha * alpha * matrix, out_width as u64);
                // Against guard pages: a read past the products or the residual, or a
                // write past the output rows, faults.
                let products = Floats::from_vec(products, Some(Guard::Trailing)).expect("mapped");
                let residual = values(rows * out_width, 99);
                let residual = Floats::from_vec(residual, Some(Guard::Trailing)).expect("mapped");
                let mut out =
                    Floats::from_vec(vec![f32::NAN; m * out_width], Some(Guard::Trailing))
                        .expect("mapped");
                let bias_value = 0.375f32;
                let bias_at = if bias {
                    &bias_value as *const f32
                } else {
                    std::ptr::null()
                };
                let residual_at = if add {
                    residual.as_ptr()
                } else {
                    std::ptr::null()
                };
                // SAFETY: each matrix holds the row's tiles, the output its rows, the
                // residual as many floats.
                unsafe {
                    helper(
                        products.as_ptr().add(shift),
                        matrix,
                        tiles,
                        out.as_mut_ptr(),
                        out_width,
                        rows,
                        bias_at,
                        residual_at,
                        relu as usize,
                    )
                };
                for row in 0..rows {
                    for x in 0..out_width {
                        let value = out[row * out_width + x];
                        let (tile, column) = (x / m, x % m);
                        let d =
                            |j: usize, i: usize| products[shift + (j * alpha + i) * matrix + tile];
                        let mut expected = transformed(t.output, &d, row, column);
                        if bias {
                            expected += f64::from(bias_value);
                        }
                        if add {
                            expected += f64::from(residual[row * out_width + x]);
                        }
                        if relu {
                            expected = expected.max(0.0);
                        }
                        assert!(
                            close(value, expected),
                            "F({m},{r}), x {x}, bias {bias}, add {add}, relu {relu}: {value} vs \
                             {expected}"
                        );
                    }
                }
                let written = rows * out_width;
                assert!(
                    out[written..].iter().all(|v| v.is_nan()),
                    "F({m},{r}): written past the rows"
                );
            }
        }
    }
}
