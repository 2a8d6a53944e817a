//! Finding and opening an adapter. Vulkan and OpenGL are the backends built; a real
//! GPU is preferred to a software one, and Vulkan to OpenGL. Errors the device reports
//! outside an error scope, and its loss, are recorded here instead of panicking (wgpu's
//! default), and turned into [`GpuError`]s by whoever checks next.

use crate::GpuError;
use cnnc_compiler::codegen::gpu::GpuTarget;
use serde::Serialize;
use std::sync::{Arc, Mutex};

/// Why the device was lost, as the error says it: the driver's message where it gave one.
fn loss_reason(reason: wgpu::DeviceLostReason, message: &str) -> String {
    let reason = match reason {
        wgpu::DeviceLostReason::Destroyed => "the device was destroyed",
        wgpu::DeviceLostReason::Unknown => "the driver reset or removed it",
    };
    match message.trim() {
        "" => reason.to_string(),
        message => format!("{reason} ({message})"),
    }
}

/// What `cnnc devices` shows of an adapter.
#[derive(Debug, Clone, Serialize)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub max_storage_binding_bytes: u64,
    pub max_buffer_bytes: u64,
    pub max_storage_buffers_per_stage: u32,
    pub max_workgroups_per_dimension: u32,
    pub max_workgroup_storage_bytes: u32,
    pub timestamp_queries: bool,
}

fn instance() -> wgpu::Instance {
    let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle();
    descriptor.backends = wgpu::Backends::VULKAN | wgpu::Backends::GL;
    wgpu::Instance::new(descriptor)
}

fn all_adapters(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    let mut found = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    found.sort_by_key(|a| preference(&a.get_info()));
    found
}

/// Lower is better: hardware before software, Vulkan before OpenGL.
fn preference(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    (kind, u8::from(info.backend != wgpu::Backend::Vulkan))
}

/// Every adapter wgpu finds, best first.
pub fn adapters() -> Vec<AdapterReport> {
    all_adapters(&instance()).iter().map(report).collect()
}

fn report(adapter: &wgpu::Adapter) -> AdapterReport {
    let info = adapter.get_info();
    let limits = adapter.limits();
    AdapterReport {
        name: info.name,
        backend: info.backend.to_string(),
        device_type: format!("{:?}", info.device_type),
        driver: info.driver,
        driver_info: info.driver_info,
        max_storage_binding_bytes: limits.max_storage_buffer_binding_size,
        max_buffer_bytes: limits.max_buffer_size,
        max_storage_buffers_per_stage: limits.max_storage_buffers_per_shader_stage,
        max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        max_workgroup_storage_bytes: limits.max_compute_workgroup_storage_size,
        timestamp_queries: adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY),
    }
}

impl AdapterReport {
    /// `llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu, llvmpipe Mesa 22.3.6)`.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, {}, {} {})",
            self.name, self.backend, self.device_type, self.driver, self.driver_info
        )
    }
}

/// An open device and its queue.
pub struct Gpu {
    pub adapter: AdapterReport,
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) limits: wgpu::Limits,
    pub(crate) timestamps: bool,
    /// The first error reported outside an error scope, or the loss of the device.
    failure: Arc<Mutex<Option<String>>>,
    lost: Arc<Mutex<Option<String>>>,
}

impl Gpu {
    /// Opens the best adapter, with its own limits (not WebGPU's defaults).
    pub fn open() -> Result<Gpu, GpuError> {
        let adapters = all_adapters(&instance());
        let adapter = adapters.first().ok_or(GpuError::NoAdapter)?;
        let report = report(adapter);
        let timestamps = report.timestamp_queries;
        let descriptor = wgpu::DeviceDescriptor {
            label: Some("cnnc"),
            required_features: match timestamps {
                true => wgpu::Features::TIMESTAMP_QUERY,
                false => wgpu::Features::empty(),
            },
            required_limits: adapter.limits(),
            ..Default::default()
        };
        let (device, queue) =
            pollster::block_on(adapter.request_device(&descriptor)).map_err(|e| {
                GpuError::Open {
                    adapter: report.describe(),
                    message: e.to_string(),
                }
            })?;
        let failure = Arc::new(Mutex::new(None));
        let lost = Arc::new(Mutex::new(None));
        let record = failure.clone();
        device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
            let mut slot = record.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert_with(|| error.to_string());
        }));
        let record = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            let mut slot = record.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert_with(|| loss_reason(reason, &message));
        });
        Ok(Gpu {
            limits: device.limits(),
            adapter: report,
            device,
            queue,
            timestamps,
            failure,
            lost,
        })
    }

    /// What the compiler shapes the shaders for on this device.
    pub fn target(&self) -> GpuTarget {
        GpuTarget {
            max_binding_bytes: self
                .limits
                .max_storage_buffer_binding_size
                .min(self.limits.max_buffer_size),
            max_workgroups_per_dimension: self.limits.max_compute_workgroups_per_dimension,
        }
    }

    /// Runs `work` inside out-of-memory and validation error scopes; an error either
    /// catches, or one recorded since, becomes the result.
    pub(crate) fn checked<T>(&self, during: &str, work: impl FnOnce() -> T) -> Result<T, GpuError> {
        let memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = work();
        let invalid = pollster::block_on(validation.pop());
        let exhausted = pollster::block_on(memory.pop());
        if let Some(error) = exhausted {
            return Err(GpuError::OutOfMemory {
                during: during.to_string(),
                message: error.to_string(),
            });
        }
        if let Some(error) = invalid {
            return Err(GpuError::Device {
                during: during.to_string(),
                message: error.to_string(),
            });
        }
        self.health(during)?;
        Ok(value)
    }

    /// The device's loss, or an error it reported outside a scope, if any.
    pub(crate) fn health(&self, during: &str) -> Result<(), GpuError> {
        if let Some(message) = self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Err(GpuError::Lost(message));
        }
        let failure = self
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match failure {
            Some(message) if message.to_lowercase().contains("out of memory") => {
                Err(GpuError::OutOfMemory {
                    during: during.to_string(),
                    message,
                })
            }
            Some(message) => Err(GpuError::Device {
                during: during.to_string(),
                message,
            }),
            None => Ok(()),
        }
    }
}
