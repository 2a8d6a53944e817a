//! The Winograd variants F(m x m, r x r) the compiler knows (Lavin and Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2016): each one's three transforms.
//! One source for the algorithm pass (which variants exist), the code generator (the
//! input and output transforms it writes) and the runtime (the weights' transform and
//! its sixteen-lane input and output transforms).

/// A Winograd variant F(m x m, r x r)'s three transforms: the input's `Bᵀ` (α x α), the
/// weights' `G` (α x r) and the output's `Aᵀ` (m x α), with α = m + r - 1.
pub struct Transforms {
    pub m: u64,
    pub r: u64,
    pub input: &'static [&'static [f32]],
    pub weights: &'static [&'static [f64]],
    pub output: &'static [&'static [f32]],
}

impl Transforms {
    /// α: the input tile's side.
    pub fn alpha(&self) -> usize {
        self.input.len()
    }
}

/// F(2x2, 3x3): points 0, 1, -1 and ∞; every coefficient of `Bᵀ` and `Aᵀ` is 0 or ±1,
/// so the transforms are additions and add almost no rounding error.
pub const F2X2_3X3: Transforms = Transforms {
    m: 2,
    r: 3,
    input: &[
        &[1.0, 0.0, -1.0, 0.0],
        &[0.0, 1.0, 1.0, 0.0],
        &[0.0, -1.0, 1.0, 0.0],
        &[0.0, 1.0, 0.0, -1.0],
    ],
    weights: &[
        &[1.0, 0.0, 0.0],
        &[0.5, 0.5, 0.5],
        &[0.5, -0.5, 0.5],
        &[0.0, 0.0, 1.0],
    ],
    output: &[&[1.0, 1.0, 1.0, 0.0], &[0.0, 1.0, -1.0, -1.0]],
};

/// F(4x4, 3x3): points 0, ±1, ±2 and ∞ (Lavin and Gray's choice), 36 values per 16
/// outputs; the transforms multiply by 2, 4, 5 and 8, so they round more than
/// F(2x2,3x3)'s, still within the JIT's tolerance (`runtime/tests/winograd.rs`).
pub const F4X4_3X3: Transforms = Transforms {
    m: 4,
    r: 3,
    input: SIX_POINTS,
    weights: &[
        &[1.0 / 4.0, 0.0, 0.0],
        &[-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        &[-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        &[1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        &[1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        &[0.0, 0.0, 1.0],
    ],
    output: &[
        &[1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        &[0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        &[0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        &[0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
    ],
};

/// `Bᵀ` of the points 0, ±1, ±2 and ∞: α = 6, whatever m and r make it up (the input
/// transform depends on the points only).
const SIX_POINTS: &[&[f32]] = &[
    &[4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
    &[0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
    &[0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
    &[0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
    &[0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
    &[0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
];

/// F(2x2, 5x5): F(4x4, 3x3)'s points, so its `Bᵀ`; `G` the powers 0-4 of each point
/// with F(4x4, 3x3)'s scales, `Aᵀ` the powers 0 and 1. 36 values per 4 outputs where
/// direct multiplies 100 (2.8x fewer); rounding as F(4x4, 3x3)'s.
pub const F2X2_5X5: Transforms = Transforms {
    m: 2,
    r: 5,
    input: SIX_POINTS,
    weights: &[
        &[1.0 / 4.0, 0.0, 0.0, 0.0, 0.0],
        &[-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        &[-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        &[1.0 / 24.0, 2.0 / 24.0, 4.0 / 24.0, 8.0 / 24.0, 16.0 / 24.0],
        &[
            1.0 / 24.0,
            -2.0 / 24.0,
            4.0 / 24.0,
            -8.0 / 24.0,
            16.0 / 24.0,
        ],
        &[0.0, 0.0, 0.0, 0.0, 1.0],
    ],
    output: &[
        &[1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        &[0.0, 1.0, -1.0, 2.0, -2.0, 1.0],
    ],
};

/// The variants code is generated for.
pub const VARIANTS: [&Transforms; 3] = [&F2X2_3X3, &F4X4_3X3, &F2X2_5X5];

/// The transforms of F(m x m, r x r), if it is one of the `VARIANTS`.
pub fn transforms(m: u64, r: u64) -> Option<&'static Transforms> {
    VARIANTS.into_iter().find(|t| t.m == m && t.r == r)
}

/// Products per sample: one per point of the transformed tile, α².
pub fn points(m: u64, r: u64) -> u64 {
    (m + r - 1) * (m + r - 1)
}
