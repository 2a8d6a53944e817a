//! Everything that can go wrong on the GPU, as messages: no adapter, a network that
//! does not fit the device's limits, out of memory, a lost device.

use cnnc_runtime::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error(
        "no GPU adapter found: wgpu found no Vulkan or OpenGL adapter on this machine; \
         without a GPU, Mesa's software drivers provide one (Debian/Ubuntu: \
         `apt-get install libvulkan1 mesa-vulkan-drivers`)"
    )]
    NoAdapter,
    #[error("cannot open the GPU adapter `{adapter}`: {message}")]
    Open { adapter: String, message: String },
    #[error("the network does not fit the GPU `{adapter}`: {message}")]
    DoesNotFit { adapter: String, message: String },
    #[error("the GPU ran out of memory {during}: {message}")]
    OutOfMemory { during: String, message: String },
    #[error(
        "the GPU device was lost: {0}; what was on it is gone, so run again (a new run \
         opens the device anew) or on the CPU (`--backend jit`)"
    )]
    Lost(String),
    #[error("the GPU reported an error {during}: {message}")]
    Device { during: String, message: String },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}
