//! Winograd's run-time half: the weights transformed once at load (`weights`), and the
//! input and output transforms generated Winograd kernels call per tile row (`tiles`,
//! over the vectors of `lanes`: sixteen tiles in AVX-512, eight in AVX2).

#[cfg(target_arch = "x86_64")]
mod lanes;
mod tiles;
mod weights;

pub use tiles::{input_transform, output_transform, transforms_are_faster};
pub use weights::{pack, packed_len};
