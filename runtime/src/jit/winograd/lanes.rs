//! A vector of floats, lane j for tile j of a group: what the Winograd transforms
//! (`tiles.rs`) compute on, written once over this trait. Sixteen tiles in an AVX-512
//! register, eight in an AVX2 one.
//!
//! Every method is `#[inline(always)]` and carries no target feature of its own: it is
//! inlined into the transforms' entry points, which are compiled for the features.

use crate::jit::microkernel::avx2_mask;
use std::arch::x86_64::*;

/// A vector of floats and the operations the transforms need. Masks are bits, bit j
/// for lane j.
///
/// # Safety
/// Every method is unsafe to call: the CPU must have the implementation's features
/// (`Zmm`: AVX-512F; `Ymm`: AVX2 and FMA), and a pointer must be valid for the lanes
/// its mask selects (no other lane is read or written).
pub(super) trait Lanes: Copy {
    /// Tiles a vector holds.
    const LANES: usize;
    unsafe fn zero() -> Self;
    unsafe fn splat(x: f32) -> Self;
    unsafe fn add(self, other: Self) -> Self;
    unsafe fn sub(self, other: Self) -> Self;
    unsafe fn mul(self, other: Self) -> Self;
    /// `self · by + plus`.
    unsafe fn mul_add(self, by: Self, plus: Self) -> Self;
    unsafe fn max(self, other: Self) -> Self;
    /// The floats from `at` in the lanes of `mask`, zero in the others.
    unsafe fn load(at: *const f32, mask: u16) -> Self;
    /// The lanes of `mask` to the floats from `at`.
    unsafe fn store(self, at: *mut f32, mask: u16);
    /// Lanes 1.. of `self`, then lane 0 of `next`.
    unsafe fn shifted(self, next: Self) -> Self;
    /// The lanes of `v` as one row of floats, even ones then odd ones: lane j of result
    /// c is float 2j + c.
    unsafe fn stride2(v: [Self; 2]) -> [Self; 2];
    /// The lanes of `v` as one row of floats, four apart: lane j of result c is float
    /// 4j + c.
    unsafe fn stride4(v: [Self; 4]) -> [Self; 4];
    /// `stride2` undone: float 2j + c of the result is lane j of `v[c]`.
    unsafe fn interleave2(v: [Self; 2]) -> [Self; 2];
    /// `stride4` undone: float 4j + c of the result is lane j of `v[c]`.
    unsafe fn interleave4(v: [Self; 4]) -> [Self; 4];
}

/// The element-wise methods of a `Lanes` that wraps one register, from its
/// intrinsics.
macro_rules! arithmetic {
    ($wrap:ident, $zero:ident, $splat:ident, $add:ident, $sub:ident, $mul:ident, $fma:ident,
     $max:ident) => {
        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { $wrap($zero()) }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            unsafe { $wrap($splat(x)) }
        }
        #[inline(always)]
        unsafe fn add(self, other: Self) -> Self {
            unsafe { $wrap($add(self.0, other.0)) }
        }
        #[inline(always)]
        unsafe fn sub(self, other: Self) -> Self {
            unsafe { $wrap($sub(self.0, other.0)) }
        }
        #[inline(always)]
        unsafe fn mul(self, other: Self) -> Self {
            unsafe { $wrap($mul(self.0, other.0)) }
        }
        #[inline(always)]
        unsafe fn mul_add(self, by: Self, plus: Self) -> Self {
            unsafe { $wrap($fma(self.0, by.0, plus.0)) }
        }
        #[inline(always)]
        unsafe fn max(self, other: Self) -> Self {
            unsafe { $wrap($max(self.0, other.0)) }
        }
    };
}

/// One AVX-512 register.
#[derive(Clone, Copy)]
pub(super) struct Zmm(__m512);

impl Lanes for Zmm {
    const LANES: usize = 16;
    arithmetic!(
        Zmm,
        _mm512_setzero_ps,
        _mm512_set1_ps,
        _mm512_add_ps,
        _mm512_sub_ps,
        _mm512_mul_ps,
        _mm512_fmadd_ps,
        _mm512_max_ps
    );
    #[inline(always)]
    unsafe fn load(at: *const f32, mask: u16) -> Self {
        unsafe { Zmm(_mm512_maskz_loadu_ps(mask, at)) }
    }
    #[inline(always)]
    unsafe fn store(self, at: *mut f32, mask: u16) {
        unsafe { _mm512_mask_storeu_ps(at, mask, self.0) }
    }
    #[inline(always)]
    unsafe fn shifted(self, next: Self) -> Self {
        unsafe {
            let (low, high) = (_mm512_castps_si512(self.0), _mm512_castps_si512(next.0));
            Zmm(_mm512_castsi512_ps(_mm512_alignr_epi32::<1>(high, low)))
        }
    }
    #[inline(always)]
    unsafe fn stride2([a, b]: [Self; 2]) -> [Self; 2] {
        unsafe {
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            [
                Zmm(_mm512_permutex2var_ps(a.0, even, b.0)),
                Zmm(_mm512_permutex2var_ps(a.0, odd, b.0)),
            ]
        }
    }
    #[inline(always)]
    unsafe fn stride4([a, b, c, d]: [Self; 4]) -> [Self; 4] {
        unsafe {
            let mut out = [Self::zero(); 4];
            for (k, out) in out.iter_mut().enumerate() {
                let k = k as i32;
                // Lanes 0-7: floats k, k + 4, ..., k + 28 of the two sources.
                let pick = _mm512_setr_epi32(
                    k,
                    k + 4,
                    k + 8,
                    k + 12,
                    k + 16,
                    k + 20,
                    k + 24,
                    k + 28,
                    k,
                    k,
                    k,
                    k,
                    k,
                    k,
                    k,
                    k,
                );
                let low = _mm512_permutex2var_ps(a.0, pick, b.0);
                let high = _mm512_permutex2var_ps(c.0, pick, d.0);
                *out = Zmm(_mm512_shuffle_f32x4::<0b01_00_01_00>(low, high));
            }
            out
        }
    }
    #[inline(always)]
    unsafe fn interleave2([a, b]: [Self; 2]) -> [Self; 2] {
        unsafe {
            // Lanes 0-7 (or 8-15) of two vectors, alternating.
            let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
            let high =
                _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
            [
                Zmm(_mm512_permutex2var_ps(a.0, low, b.0)),
                Zmm(_mm512_permutex2var_ps(a.0, high, b.0)),
            ]
        }
    }
    #[inline(always)]
    unsafe fn interleave4([a, b, c, d]: [Self; 4]) -> [Self; 4] {
        unsafe {
            // Columns 0-1 and 2-3 paired per tile, then the pairs of four tiles.
            let [first_low, first_high] = Self::interleave2([a, b]);
            let [second_low, second_high] = Self::interleave2([c, d]);
            let quads_low =
                _mm512_setr_epi32(0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
            let quads_high =
                _mm512_setr_epi32(8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
            [
                Zmm(_mm512_permutex2var_ps(first_low.0, quads_low, second_low.0)),
                Zmm(_mm512_permutex2var_ps(
                    first_low.0,
                    quads_high,
                    second_low.0,
                )),
                Zmm(_mm512_permutex2var_ps(
                    first_high.0,
                    quads_low,
                    second_high.0,
                )),
                Zmm(_mm512_permutex2var_ps(
                    first_high.0,
                    quads_high,
                    second_high.0,
                )),
            ]
        }
    }
}

/// One AVX2 register: eight tiles.
#[derive(Clone, Copy)]
pub(super) struct Ymm(__m256);

impl Lanes for Ymm {
    const LANES: usize = 8;
    arithmetic!(
        Ymm,
        _mm256_setzero_ps,
        _mm256_set1_ps,
        _mm256_add_ps,
        _mm256_sub_ps,
        _mm256_mul_ps,
        _mm256_fmadd_ps,
        _mm256_max_ps
    );
    /// A plain load where every lane is asked for: AVX2's masked moves are slower.
    #[inline(always)]
    unsafe fn load(at: *const f32, mask: u16) -> Self {
        unsafe {
            Ymm(match mask {
                0xff => _mm256_loadu_ps(at),
                0 => _mm256_setzero_ps(),
                _ => _mm256_maskload_ps(at, avx2_mask(u32::from(mask))),
            })
        }
    }
    /// Not by AVX2's masked store, which AMD's cores run as microcode: it took a fifth
    /// of the input transform's time on a Zen 3, where most groups of a short tile row
    /// are partial.
    #[inline(always)]
    unsafe fn store(self, at: *mut f32, mask: u16) {
        unsafe {
            if mask == 0xff {
                _mm256_storeu_ps(at, self.0);
            } else {
                let mask = u32::from(mask);
                store_quarter(at, mask & 0xf, _mm256_castps256_ps128(self.0));
                let high = _mm256_extractf128_ps::<1>(self.0);
                store_quarter(at.wrapping_add(4), mask >> 4, high);
            }
        }
    }
    #[inline(always)]
    unsafe fn shifted(self, next: Self) -> Self {
        unsafe {
            // Per 128-bit half: [self 4-7 | next 0-3] aligned against self by one float.
            let middle = _mm256_permute2f128_ps::<0x21>(self.0, next.0);
            Ymm(_mm256_castsi256_ps(_mm256_alignr_epi8::<4>(
                _mm256_castps_si256(middle),
                _mm256_castps_si256(self.0),
            )))
        }
    }
    #[inline(always)]
    unsafe fn stride2([a, b]: [Self; 2]) -> [Self; 2] {
        unsafe {
            // Per 128-bit half: two of a's floats, two of b's (the even or the odd
            // ones); then the 64-bit pairs in order.
            let even = _mm256_castps_pd(_mm256_shuffle_ps::<0b10_00_10_00>(a.0, b.0));
            let odd = _mm256_castps_pd(_mm256_shuffle_ps::<0b11_01_11_01>(a.0, b.0));
            [
                Ymm(_mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(
                    even,
                ))),
                Ymm(_mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(
                    odd,
                ))),
            ]
        }
    }
    #[inline(always)]
    unsafe fn stride4([a, b, c, d]: [Self; 4]) -> [Self; 4] {
        unsafe {
            // Float i of result k's halves: float k (low) or 4 + k (high) of input i.
            let [w, x, y, z] = transpose4([a.0, b.0, c.0, d.0]);
            let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
            [
                Ymm(_mm256_permutevar8x32_ps(w, order)),
                Ymm(_mm256_permutevar8x32_ps(x, order)),
                Ymm(_mm256_permutevar8x32_ps(y, order)),
                Ymm(_mm256_permutevar8x32_ps(z, order)),
            ]
        }
    }
    #[inline(always)]
    unsafe fn interleave2([a, b]: [Self; 2]) -> [Self; 2] {
        unsafe {
            let low = _mm256_unpacklo_ps(a.0, b.0);
            let high = _mm256_unpackhi_ps(a.0, b.0);
            [
                Ymm(_mm256_permute2f128_ps::<0x20>(low, high)),
                Ymm(_mm256_permute2f128_ps::<0x31>(low, high)),
            ]
        }
    }
    #[inline(always)]
    unsafe fn interleave4([a, b, c, d]: [Self; 4]) -> [Self; 4] {
        unsafe {
            let [w, x, y, z] = transpose4([a.0, b.0, c.0, d.0]);
            [
                Ymm(_mm256_permute2f128_ps::<0x20>(w, x)),
                Ymm(_mm256_permute2f128_ps::<0x20>(y, z)),
                Ymm(_mm256_permute2f128_ps::<0x31>(w, x)),
                Ymm(_mm256_permute2f128_ps::<0x31>(y, z)),
            ]
        }
    }
}

/// `v`'s lanes of `bits` (four) to the floats from `at`, a float at a time unless all
/// four.
///
/// # Safety
/// The CPU has AVX; `at` is valid for the lanes of `bits`.
#[inline(always)]
unsafe fn store_quarter(at: *mut f32, bits: u32, v: __m128) {
    unsafe {
        if bits == 0xf {
            _mm_storeu_ps(at, v);
            return;
        }
        let lane = |i: usize| bits & (1 << i) != 0;
        let at = at as *mut i32;
        if lane(0) {
            at.write_unaligned(_mm_extract_ps::<0>(v));
        }
        if lane(1) {
            at.add(1).write_unaligned(_mm_extract_ps::<1>(v));
        }
        if lane(2) {
            at.add(2).write_unaligned(_mm_extract_ps::<2>(v));
        }
        if lane(3) {
            at.add(3).write_unaligned(_mm_extract_ps::<3>(v));
        }
    }
}

/// Four vectors of eight floats transposed within each 128-bit half: float i of result
/// k's low half is float k of `v[i]`'s low half (and so for the high halves).
///
/// # Safety
/// The CPU has AVX.
#[inline(always)]
unsafe fn transpose4(v: [__m256; 4]) -> [__m256; 4] {
    unsafe {
        let t0 = _mm256_unpacklo_ps(v[0], v[1]);
        let t1 = _mm256_unpackhi_ps(v[0], v[1]);
        let t2 = _mm256_unpacklo_ps(v[2], v[3]);
        let t3 = _mm256_unpackhi_ps(v[2], v[3]);
        [
            _mm256_shuffle_ps::<0b01_00_01_00>(t0, t2),
            _mm256_shuffle_ps::<0b11_10_11_10>(t0, t2),
            _mm256_shuffle_ps::<0b01_00_01_00>(t1, t3),
            _mm256_shuffle_ps::<0b11_10_11_10>(t1, t3),
        ]
    }
}
