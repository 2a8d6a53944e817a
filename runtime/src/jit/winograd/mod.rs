//! Winograd's run-time half: the weights transformed once at load (`weights`), and the
//! sixteen-lane input and output transforms generated Winograd kernels call per tile
//! row where the CPU has AVX-512 (`tiles`).

mod tiles;
mod weights;

pub use tiles::{input_transform, output_transform};
pub use weights::{pack, packed_len};
