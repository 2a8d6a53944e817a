//! A network on the GPU: its shaders compiled into pipelines once, its weights uploaded
//! once, and per batch size the memory plan's buffers and the bind groups over them.
//! An inference writes the inputs, records every dispatch into one command encoder,
//! and reads back only the output.

use crate::{Gpu, GpuError};
use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::codegen::gpu::{self, Binding, Param, Shader};
use cnnc_compiler::passes::{self, FusedGraph, MemoryPlan, TensorId};
use cnnc_runtime::fused::prepare::{Prepared, prepare, weight};
use cnnc_runtime::weights::Weights;
use cnnc_runtime::{RuntimeError, Tensor};
use std::collections::HashMap;
use std::time::Instant;

pub struct GpuProgram {
    gpu: Gpu,
    pub fused: FusedGraph,
    pub plan: MemoryPlan,
    pub shaders: Vec<Shader>,
    /// Each shader's pipeline (index into `pipelines`: identical shaders share one).
    pipeline_of: Vec<usize>,
    pipelines: Vec<wgpu::ComputePipeline>,
    /// Each shader's weight and parameter buffers, by binding.
    constants: Vec<Vec<Option<wgpu::Buffer>>>,
    batch: Option<BatchBuffers>,
}

/// The buffers of one batch size. The batch is cut into chunks of `chunk` samples so
/// that every buffer fits a binding; each plan buffer has one buffer per chunk.
struct BatchBuffers {
    batch: usize,
    chunk: usize,
    /// `[plan buffer][chunk]`.
    buffers: Vec<Vec<wgpu::Buffer>>,
    /// `[shader][chunk]`.
    groups: Vec<Vec<wgpu::BindGroup>>,
    readback: wgpu::Buffer,
}

/// One inference's output and how long it took.
pub struct GpuRun {
    pub output: Tensor,
    /// From writing the inputs to having read the output back.
    pub seconds: f64,
    /// The dispatches alone, by timestamp queries (where the adapter has them).
    pub kernel_seconds: Option<f64>,
    /// Each shader's dispatches, in the order of `GpuProgram::shaders` (profiled runs
    /// on an adapter with timestamp queries; else empty).
    pub shader_seconds: Vec<f64>,
}

/// What a run measures on the device.
#[derive(Clone, Copy)]
enum Timing {
    Off,
    Whole,
    PerShader,
}

impl GpuProgram {
    /// Lowers the network for this device, builds every pipeline and uploads the
    /// weights. `weights` were validated against `net`.
    pub fn new(gpu: Gpu, net: &CheckedGraph, weights: &Weights) -> Result<Self, GpuError> {
        let fused = gpu::fuse(net);
        let plan = passes::plan(&fused);
        let target = gpu.target();
        let shaders = gpu::compile(&fused, &plan, &target).map_err(|e| GpuError::DoesNotFit {
            adapter: gpu.adapter.describe(),
            message: e.to_string(),
        })?;
        check_bindings(&gpu, &shaders)?;
        check_activations(&gpu, &fused, &plan)?;
        let (pipeline_of, pipelines) = build_pipelines(&gpu, &shaders)?;
        let constants = upload_constants(&gpu, &fused, &shaders, weights)?;
        Ok(GpuProgram {
            gpu,
            fused,
            plan,
            shaders,
            pipeline_of,
            pipelines,
            constants,
            batch: None,
        })
    }

    pub fn adapter(&self) -> &crate::AdapterReport {
        &self.gpu.adapter
    }

    /// Destroys the device, as a driver reset or an unplugged GPU would: the loss is
    /// reported and every later run fails with [`GpuError::Lost`]. The tests use it to
    /// take the loss path for real; nothing else should.
    pub fn destroy_device(&self) {
        self.gpu.device.destroy();
    }

    pub fn run(&mut self, inputs: Vec<Tensor>) -> Result<Tensor, GpuError> {
        self.run_timed(inputs, false).map(|run| run.output)
    }

    /// One inference; with `timestamps`, the dispatches are timed on the device too.
    pub fn run_timed(&mut self, inputs: Vec<Tensor>, timestamps: bool) -> Result<GpuRun, GpuError> {
        let timing = match timestamps {
            true => Timing::Whole,
            false => Timing::Off,
        };
        self.run_with(inputs, timing)
    }

    /// One inference with every shader in a compute pass of its own, timed on the
    /// device: `shader_seconds` says where the time goes (`cnnc bench --profile`).
    pub fn run_profiled(&mut self, inputs: Vec<Tensor>) -> Result<GpuRun, GpuError> {
        self.run_with(inputs, Timing::PerShader)
    }

    fn run_with(&mut self, inputs: Vec<Tensor>, timing: Timing) -> Result<GpuRun, GpuError> {
        let batch = self.check_inputs(&inputs)?;
        if self.batch.as_ref().map(|b| b.batch) != Some(batch) {
            self.batch = None;
            self.batch = Some(self.batch_buffers(batch)?);
        }
        let started = Instant::now();
        let Some(state) = &self.batch else {
            return Err(RuntimeError::Invalid("no buffers for the batch".into()).into());
        };
        for (&id, tensor) in self.fused.inputs.iter().zip(&inputs) {
            self.write_input(state, id, tensor)?;
        }
        let queries = match (timing, self.gpu.timestamps) {
            (Timing::Off, _) | (_, false) => None,
            (Timing::Whole, true) => Some(Timestamps::new(&self.gpu, 1)?),
            (Timing::PerShader, true) => Some(Timestamps::new(&self.gpu, self.shaders.len())?),
        };
        let output_len = element_count(&self.fused, self.fused.output);
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        self.record(state, &mut encoder, queries.as_ref());
        self.copy_output(state, &mut encoder, output_len)?;
        if let Some(q) = &queries {
            q.resolve(&mut encoder);
        }
        self.gpu.checked("running the network", || {
            self.gpu.queue.submit([encoder.finish()]);
        })?;
        let values: Vec<f32> = read_back(&self.gpu, &state.readback, batch * output_len)?;
        let spans = match &queries {
            Some(q) => q.seconds(&self.gpu)?,
            None => Vec::new(),
        };
        let seconds = started.elapsed().as_secs_f64();
        let mut shape = vec![batch];
        shape.extend(
            self.fused
                .tensor(self.fused.output)
                .shape
                .0
                .iter()
                .map(|&d| d as usize),
        );
        let output = Tensor::from_shape_vec(shape, values)
            .map_err(|e| RuntimeError::Invalid(format!("the GPU's output: {e}")))?;
        Ok(GpuRun {
            output,
            seconds,
            kernel_seconds: (!spans.is_empty()).then(|| spans.iter().sum()),
            shader_seconds: match timing {
                Timing::PerShader => spans,
                _ => Vec::new(),
            },
        })
    }

    /// Every dispatch, in one compute pass, or with per-shader `queries` one pass per
    /// shader (timestamps are written at pass boundaries).
    fn record(
        &self,
        state: &BatchBuffers,
        encoder: &mut wgpu::CommandEncoder,
        queries: Option<&Timestamps>,
    ) {
        let pass = |encoder: &mut wgpu::CommandEncoder, span: usize| {
            encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("inference"),
                    timestamp_writes: queries.map(|q| q.writes(span)),
                })
                .forget_lifetime()
        };
        match queries.is_some_and(|q| q.spans > 1) {
            true => {
                for s in 0..self.shaders.len() {
                    self.dispatch(&mut pass(encoder, s), state, s);
                }
            }
            false => {
                let mut whole = pass(encoder, 0);
                for s in 0..self.shaders.len() {
                    self.dispatch(&mut whole, state, s);
                }
            }
        }
    }

    /// Shader `s` over every chunk of the batch.
    fn dispatch(&self, pass: &mut wgpu::ComputePass, state: &BatchBuffers, s: usize) {
        pass.set_pipeline(&self.pipelines[self.pipeline_of[s]]);
        let [x, y] = self.shaders[s].grid(&self.gpu.target());
        for (c, group) in state.groups[s].iter().enumerate() {
            pass.set_bind_group(0, group, &[]);
            pass.dispatch_workgroups(x, y, samples_in_chunk(state, c) as u32);
        }
    }

    fn check_inputs(&self, inputs: &[Tensor]) -> Result<usize, GpuError> {
        if inputs.len() != self.fused.inputs.len() {
            return Err(RuntimeError::Invalid(format!(
                "the network takes {} inputs, {} given",
                self.fused.inputs.len(),
                inputs.len()
            ))
            .into());
        }
        let batch = inputs
            .first()
            .map_or(1, |t| t.shape().first().copied().unwrap_or(0));
        for (&id, tensor) in self.fused.inputs.iter().zip(inputs) {
            let mut expected = vec![batch];
            expected.extend(self.fused.tensor(id).shape.0.iter().map(|&d| d as usize));
            if tensor.shape() != expected.as_slice() || batch == 0 {
                return Err(RuntimeError::InputShape {
                    expected: cnnc_runtime::input::shape_text(&expected),
                    found: cnnc_runtime::input::shape_text(tensor.shape()),
                    hint: format!(" (input `{}`)", self.fused.tensor(id).name),
                }
                .into());
            }
        }
        Ok(batch)
    }

    /// The plan's buffers for `batch` samples, chunked to fit bindings, and the bind
    /// groups of every shader over them.
    fn batch_buffers(&self, batch: usize) -> Result<BatchBuffers, GpuError> {
        let target = self.gpu.target();
        let largest = self.plan.buffers.iter().copied().max().unwrap_or(4).max(4);
        // At least 1: `check_activations` refused a sample larger than a binding.
        let fits = (target.max_binding_bytes / largest).max(1);
        let chunk = (fits as usize)
            .min(batch)
            .min(self.gpu.limits.max_compute_workgroups_per_dimension as usize)
            .max(1);
        let chunks = batch.div_ceil(chunk);
        let output_bytes = (batch * element_count(&self.fused, self.fused.output) * 4) as u64;
        self.gpu.checked("allocating the activation buffers", || {
            let buffers: Vec<Vec<wgpu::Buffer>> = self
                .plan
                .buffers
                .iter()
                .enumerate()
                .map(|(b, &bytes)| {
                    (0..chunks)
                        .map(|c| {
                            let samples = chunk.min(batch - c * chunk) as u64;
                            self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
                                label: Some(&format!("b{b} chunk {c}")),
                                size: (bytes * samples).max(4),
                                usage: wgpu::BufferUsages::STORAGE
                                    | wgpu::BufferUsages::COPY_DST
                                    | wgpu::BufferUsages::COPY_SRC,
                                mapped_at_creation: false,
                            })
                        })
                        .collect()
                })
                .collect();
            let readback = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("output"),
                size: output_bytes.max(4),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let groups = (0..self.shaders.len())
                .map(|s| {
                    (0..chunks)
                        .map(|c| self.bind_group(s, &buffers, c))
                        .collect()
                })
                .collect();
            BatchBuffers {
                batch,
                chunk,
                buffers,
                groups,
                readback,
            }
        })
    }

    fn bind_group(&self, s: usize, buffers: &[Vec<wgpu::Buffer>], chunk: usize) -> wgpu::BindGroup {
        let shader = &self.shaders[s];
        let entries: Vec<wgpu::BindGroupEntry> = shader
            .bindings
            .iter()
            .enumerate()
            .filter_map(|(i, binding)| {
                let buffer = match binding {
                    Binding::Activations { buffer, .. } => buffers.get(*buffer)?.get(chunk)?,
                    _ => self.constants[s][i].as_ref()?,
                };
                Some(wgpu::BindGroupEntry {
                    binding: i as u32,
                    resource: buffer.as_entire_binding(),
                })
            })
            .collect();
        let pipeline = &self.pipelines[self.pipeline_of[s]];
        self.gpu
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&shader.label),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            })
    }

    fn write_input(
        &self,
        state: &BatchBuffers,
        id: TensorId,
        tensor: &Tensor,
    ) -> Result<(), GpuError> {
        let tensor = tensor.as_standard_layout();
        let values = tensor.as_slice().unwrap_or_default();
        let len = element_count(&self.fused, id);
        for (n, sample) in values.chunks_exact(len.max(1)).enumerate() {
            let (buffer, offset) = self.sample_location(state, id, n)?;
            self.gpu
                .queue
                .write_buffer(buffer, offset, bytemuck::cast_slice(sample));
        }
        Ok(())
    }

    /// The buffer holding sample `n` of tensor `id`, and the byte offset there.
    fn sample_location<'s>(
        &self,
        state: &'s BatchBuffers,
        id: TensorId,
        n: usize,
    ) -> Result<(&'s wgpu::Buffer, u64), GpuError> {
        let (root, channel) = self.fused.root(id);
        let missing = || RuntimeError::Invalid(format!("tensor %{} has no buffer", id.0));
        let b = self.plan.buffer_of[root.0].ok_or_else(missing)?;
        let shape = &self.fused.tensor(root).shape.0;
        let per_channel: u64 = shape.get(1..).map_or(1, |s| s.iter().product());
        let buffer = state.buffers[b].get(n / state.chunk).ok_or_else(missing)?;
        let stride = gpu::buffer_stride(&self.plan, b);
        let offset = ((n % state.chunk) as u64 * stride + channel * per_channel) * 4;
        Ok((buffer, offset))
    }

    fn copy_output(
        &self,
        state: &BatchBuffers,
        encoder: &mut wgpu::CommandEncoder,
        len: usize,
    ) -> Result<(), GpuError> {
        let bytes = (len * 4) as u64;
        for n in 0..state.batch {
            let (buffer, offset) = self.sample_location(state, self.fused.output, n)?;
            encoder.copy_buffer_to_buffer(buffer, offset, &state.readback, n as u64 * bytes, bytes);
        }
        Ok(())
    }
}

fn samples_in_chunk(state: &BatchBuffers, chunk: usize) -> usize {
    state.chunk.min(state.batch - chunk * state.chunk)
}

fn element_count(fused: &FusedGraph, id: TensorId) -> usize {
    fused
        .tensor(id)
        .shape
        .0
        .iter()
        .map(|&d| d as usize)
        .product()
}

/// Refuses shaders that bind more storage buffers than the device allows.
fn check_bindings(gpu: &Gpu, shaders: &[Shader]) -> Result<(), GpuError> {
    let limit = gpu.limits.max_storage_buffers_per_shader_stage as usize;
    match shaders.iter().find(|s| s.bindings.len() > limit) {
        Some(s) => Err(GpuError::DoesNotFit {
            adapter: gpu.adapter.describe(),
            message: format!(
                "`{}` binds {} storage buffers, the device allows {limit}",
                s.label,
                s.bindings.len()
            ),
        }),
        None => Ok(()),
    }
}

/// Refuses a network with a tensor larger than one storage binding: its sample could
/// not be bound, whatever the batch. Names the first such tensor and the limit.
fn check_activations(gpu: &Gpu, fused: &FusedGraph, plan: &MemoryPlan) -> Result<(), GpuError> {
    let limit = gpu.target().max_binding_bytes;
    let too_large = fused
        .tensors
        .iter()
        .enumerate()
        .filter(|&(t, _)| plan.buffer_of[t].is_some())
        .map(|(t, tensor)| (t, tensor, tensor.shape.0.iter().product::<u64>() * 4))
        .find(|&(_, _, bytes)| bytes > limit);
    let Some((t, tensor, bytes)) = too_large else {
        return Ok(());
    };
    // A kernel's output is named after its last fused layer (`relu3`): the kernel's
    // own name (the conv's) says more.
    let what = match fused.kernels.iter().find(|k| k.output.0 == t) {
        Some(kernel) => format!("the output of `{}`", kernel.name),
        None => format!("the input `{}`", tensor.name),
    };
    Err(GpuError::DoesNotFit {
        adapter: gpu.adapter.describe(),
        message: format!(
            "{what} ({}) needs {} per sample, more than one storage binding holds ({}); \
             run it on the CPU (`--backend jit`)",
            tensor.shape,
            mebibytes(bytes),
            mebibytes(limit)
        ),
    })
}

fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

/// One pipeline per distinct shader text.
fn build_pipelines(
    gpu: &Gpu,
    shaders: &[Shader],
) -> Result<(Vec<usize>, Vec<wgpu::ComputePipeline>), GpuError> {
    let mut by_text: HashMap<&str, usize> = HashMap::new();
    let mut pipelines = Vec::new();
    let mut pipeline_of = Vec::with_capacity(shaders.len());
    for shader in shaders {
        if let Some(&p) = by_text.get(shader.wgsl.as_str()) {
            pipeline_of.push(p);
            continue;
        }
        let during = format!("compiling the shader of `{}`", shader.label);
        let pipeline = gpu.checked(&during, || {
            let module = gpu
                .device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(&shader.label),
                    source: wgpu::ShaderSource::Wgsl(shader.wgsl.as_str().into()),
                });
            gpu.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(&shader.label),
                    layout: None,
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: Default::default(),
                    cache: None,
                })
        })?;
        by_text.insert(&shader.wgsl, pipelines.len());
        pipeline_of.push(pipelines.len());
        pipelines.push(pipeline);
    }
    Ok((pipeline_of, pipelines))
}

/// Weights (batch norms folded) and per-channel parameters, uploaded once, kernel by
/// kernel so that only one kernel's prepared weights are in host memory at a time.
fn upload_constants(
    gpu: &Gpu,
    fused: &FusedGraph,
    shaders: &[Shader],
    weights: &Weights,
) -> Result<Vec<Vec<Option<wgpu::Buffer>>>, GpuError> {
    let mut constants = Vec::with_capacity(shaders.len());
    let mut prepared: Option<(usize, Option<Prepared>)> = None;
    for shader in shaders {
        if prepared.as_ref().map(|(k, _)| *k) != Some(shader.kernel) {
            prepared = Some((
                shader.kernel,
                prepare(&fused.kernels[shader.kernel], weights)?,
            ));
        }
        let kernel_weights = prepared.as_ref().and_then(|(_, p)| p.as_ref());
        let mut buffers = Vec::with_capacity(shader.bindings.len());
        for binding in &shader.bindings {
            let data = match binding {
                Binding::Activations { .. } => None,
                Binding::Weights { rows } => {
                    Some(weight_rows(kernel_weights, rows, &shader.label)?)
                }
                Binding::Params(params) => Some(parameters(params, kernel_weights, weights)?),
            };
            let Some(data) = data else {
                buffers.push(None);
                continue;
            };
            let during = format!("uploading the weights of `{}`", shader.label);
            let buffer = gpu.checked(&during, || {
                let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(&shader.label),
                    size: (data.len() as u64 * 4).max(4),
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                gpu.queue
                    .write_buffer(&buffer, 0, bytemuck::cast_slice(&data));
                buffer
            })?;
            buffers.push(Some(buffer));
        }
        constants.push(buffers);
    }
    Ok(constants)
}

fn weight_rows(
    prepared: Option<&Prepared>,
    rows: &std::ops::Range<u64>,
    label: &str,
) -> Result<Vec<f32>, GpuError> {
    let weight = prepared
        .map(|p| p.weight.as_standard_layout())
        .ok_or_else(|| RuntimeError::Invalid(format!("`{label}` has no weights")))?;
    let values = weight.as_slice().unwrap_or_default();
    let out = weight.shape().first().copied().unwrap_or(1).max(1);
    let row = values.len() / out;
    let (start, end) = (rows.start as usize * row, rows.end as usize * row);
    values
        .get(start..end)
        .map(<[f32]>::to_vec)
        .ok_or_else(|| RuntimeError::Invalid(format!("`{label}`: weight rows out of range")).into())
}

/// The per-channel vectors in order: the bias, and each batch norm's scale and shift
/// computed in f32 as the reference computes them.
fn parameters(
    params: &[Param],
    prepared: Option<&Prepared>,
    weights: &Weights,
) -> Result<Vec<f32>, GpuError> {
    let mut data = Vec::new();
    for param in params {
        match param {
            Param::Bias => {
                let bias = prepared
                    .and_then(|p| p.bias.as_ref())
                    .ok_or_else(|| RuntimeError::Invalid("a bias is missing".into()))?;
                data.extend(bias.iter());
            }
            Param::Scale { layer, eps } | Param::Shift { layer, eps } => {
                let [gamma, beta, mean, var] = ["weight", "bias", "running_mean", "running_var"]
                    .map(|s| weight(weights, layer, s));
                let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
                for c in 0..gamma.len() {
                    let scale = gamma[c] / (var[c] + *eps as f32).sqrt();
                    data.push(match param {
                        Param::Scale { .. } => scale,
                        _ => beta[c] - mean[c] * scale,
                    });
                }
            }
        }
    }
    Ok(data)
}

/// Maps `buffer`, waits for it, and copies out `len` values.
fn read_back<T: bytemuck::Pod>(
    gpu: &Gpu,
    buffer: &wgpu::Buffer,
    len: usize,
) -> Result<Vec<T>, GpuError> {
    let bytes = (len * std::mem::size_of::<T>()) as u64;
    let slice = buffer.slice(..bytes.max(4));
    let (sender, receiver) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |result| {
        let _ = sender.send(result);
    });
    gpu.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| GpuError::Device {
            during: "waiting for the GPU".into(),
            message: e.to_string(),
        })?;
    gpu.health("running the network")?;
    let mapped = receiver.recv().ok().and_then(Result::ok);
    if mapped.is_none() {
        return Err(GpuError::Device {
            during: "reading the output back".into(),
            message: "the buffer could not be mapped".into(),
        });
    }
    let values = match slice.get_mapped_range() {
        Ok(view) => bytemuck::cast_slice::<u8, T>(&view)[..len].to_vec(),
        Err(e) => {
            return Err(GpuError::Device {
                during: "reading the output back".into(),
                message: e.to_string(),
            });
        }
    };
    buffer.unmap();
    Ok(values)
}

/// Timestamp queries around `spans` compute passes: the whole inference, or each shader.
struct Timestamps {
    spans: usize,
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
}

impl Timestamps {
    fn new(gpu: &Gpu, spans: usize) -> Result<Self, GpuError> {
        let count = u32::try_from(spans * 2)
            .ok()
            .filter(|&c| c <= wgpu::QUERY_SET_MAX_QUERIES)
            .ok_or_else(|| {
                RuntimeError::Invalid(format!(
                    "{spans} shaders are more than one query set can time ({} timestamps)",
                    wgpu::QUERY_SET_MAX_QUERIES
                ))
            })?;
        let bytes = u64::from(count) * 8;
        let buffer = |usage, label| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        Ok(Timestamps {
            spans,
            set: gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("inference"),
                ty: wgpu::QueryType::Timestamp,
                count,
            }),
            resolve: buffer(
                wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                "timestamps",
            ),
            readback: buffer(
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                "timestamps readback",
            ),
        })
    }

    /// The begin and end timestamps of span `span`.
    fn writes(&self, span: usize) -> wgpu::ComputePassTimestampWrites<'_> {
        wgpu::ComputePassTimestampWrites {
            query_set: &self.set,
            beginning_of_pass_write_index: Some(span as u32 * 2),
            end_of_pass_write_index: Some(span as u32 * 2 + 1),
        }
    }

    fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        let count = self.spans as u32 * 2;
        encoder.resolve_query_set(&self.set, 0..count, &self.resolve, 0);
        encoder.copy_buffer_to_buffer(&self.resolve, 0, &self.readback, 0, u64::from(count) * 8);
    }

    /// Each span's seconds.
    fn seconds(&self, gpu: &Gpu) -> Result<Vec<f64>, GpuError> {
        let raw: Vec<u64> = read_back(gpu, &self.readback, self.spans * 2)?;
        let period = f64::from(gpu.queue.get_timestamp_period());
        Ok(raw
            .chunks_exact(2)
            .map(|t| t[1].saturating_sub(t[0]) as f64 * period * 1e-9)
            .collect())
    }
}
