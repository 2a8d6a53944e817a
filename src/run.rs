//! `cnnc run` and `cnnc init`: weights, inputs, the reference interpreter (or the fused
//! executor), outputs.

use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::diagnostics::did_you_mean;
use cnnc_compiler::graph::NodeId;
use cnnc_compiler::ops::{Activation, Op};
use cnnc_runtime::input::{self, InputSource, Normalize};
use cnnc_runtime::output::{self, Ranked};
use cnnc_runtime::reference::{self, RunOptions};
use cnnc_runtime::weights::{self, Weights};
use cnnc_runtime::{RuntimeError, fused, jit, memory};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything `cnnc run` was asked, after parsing.
pub struct RunRequest {
    pub weights: Option<PathBuf>,
    pub seed: u64,
    pub inputs: Vec<PathBuf>,
    pub batch: Option<usize>,
    pub top: usize,
    pub labels: Option<PathBuf>,
    pub mean: Option<Vec<f32>>,
    pub std: Option<Vec<f32>>,
    pub save_outputs: Option<PathBuf>,
    pub save: Vec<String>,
    pub json: bool,
    pub memory_limit: Option<u64>,
    pub backend: Backend,
    /// Replace `.npy` files that already exist in `save_outputs`.
    pub overwrite: bool,
    /// Run the JIT's generated code with every buffer against guard pages.
    pub check_bounds: bool,
}

#[derive(serde::Serialize)]
struct Report {
    network: String,
    backend: &'static str,
    batch: usize,
    weights: String,
    inputs: Vec<String>,
    output_shape: Vec<usize>,
    /// Top classes per sample, when the output is a vector of class scores.
    predictions: Option<Vec<Vec<Ranked>>>,
    /// Whether `predictions` are the network's own probabilities (it ends in softmax)
    /// or a softmax of its raw output.
    softmax_applied: bool,
    saved: Vec<Saved>,
    milliseconds: f64,
    /// The JIT's code generation and compilation, before the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    compile_milliseconds: Option<f64>,
    /// The JIT's kernels that ran on the reference kernels, sooner than compiled.
    #[serde(skip_serializing_if = "Option::is_none")]
    interpreted_kernels: Option<Interpreted>,
}

/// Of a JIT program made to run once, the kernels that the reference kernels run
/// sooner than Cranelift would compile them (all of LeNet-5's at batch 1).
#[derive(serde::Serialize, Clone, Copy)]
struct Interpreted {
    kernels: usize,
    of: usize,
}

/// Which executor runs the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Reference,
    Fused,
    Jit,
    /// With `fallback` (`--device auto`), a GPU failure runs the JIT instead.
    Gpu {
        fallback: bool,
    },
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Reference => "reference",
            Backend::Fused => "fused",
            Backend::Jit => "jit",
            Backend::Gpu { .. } => "gpu",
        }
    }
}

#[derive(serde::Serialize)]
struct Saved {
    /// `output` for the network's output, else the layer or block name asked for.
    tensor: String,
    path: String,
}

/// The file a saved tensor goes to. The network's output is `output.npy`, so a layer
/// that happens to be named `output` (LeNet-5's last dense layer) gets another name
/// rather than overwriting it.
fn npy_file_name(tensor: &str, is_network_output: bool) -> String {
    match (tensor, is_network_output) {
        ("output", false) => "output.layer.npy".to_string(),
        _ => format!("{tensor}.npy"),
    }
}

pub fn run(net: &CheckedGraph, request: &RunRequest) -> Result<(), RuntimeError> {
    let graph = &net.graph;
    let keep = kept_layers(net, &request.save)?;
    let batch = request.batch.unwrap_or(request.inputs.len().max(1));
    if batch == 0 {
        return Err(RuntimeError::Invalid("--batch must be at least 1".into()));
    }
    let mut keep_mask = vec![false; graph.nodes.len()];
    for (_, id) in &keep {
        keep_mask[id.0] = true;
    }
    if request.check_bounds && request.backend != Backend::Jit {
        return Err(RuntimeError::Invalid(
            "--check-bounds checks the JIT's generated code: it needs --backend jit".into(),
        ));
    }
    let destinations = save_destinations(request, &keep)?;
    memory::check(net, batch as u64, &keep_mask, request.memory_limit)?;
    let weights = match &request.weights {
        Some(path) => Weights::load(path, net)?,
        None => Weights::seeded(net, request.seed),
    };
    let inputs = graph
        .inputs
        .iter()
        .map(|&id| {
            let shape = &net.facts[id.0].shape;
            let source = if request.inputs.is_empty() {
                InputSource::Random { seed: request.seed }
            } else {
                InputSource::Files(request.inputs.clone())
            };
            input::load(
                &source,
                shape,
                batch,
                &normalization(shape.0[0] as usize, request)?,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    let options = RunOptions {
        side_outputs: false,
        keep: keep.iter().map(|(_, id)| *id).collect(),
    };
    let mut backend = request.backend;
    let (outputs, compile_milliseconds, interpreted_kernels) = match request.backend {
        Backend::Reference => (reference::run(net, &weights, inputs, &options)?, None, None),
        Backend::Fused => (run_fused(net, &weights, inputs, &options)?, None, None),
        Backend::Jit => run_jit(net, &weights, inputs, &options, batch, request.check_bounds)?,
        Backend::Gpu { fallback } => {
            match crate::gpu_cmd::run(net, &weights, inputs.clone(), &options) {
                Err(error) if fallback => {
                    eprintln!("the GPU failed, running on the CPU JIT instead: {error}");
                    backend = Backend::Jit;
                    run_jit(net, &weights, inputs, &options, batch, false)?
                }
                result => {
                    let (outputs, compile_milliseconds) = result?;
                    (outputs, compile_milliseconds, None)
                }
            }
        }
    };
    // The time to run, not to compile: that is reported on its own.
    let milliseconds = started.elapsed().as_secs_f64() * 1e3 - compile_milliseconds.unwrap_or(0.0);
    let labels = match &request.labels {
        Some(path) => read_labels(path)?,
        None => Vec::new(),
    };
    let ends_in_softmax = matches!(
        graph.node(graph.output).op,
        Op::Activation(Activation::Softmax)
    );
    let predictions = output::top_k(&outputs.output, request.top, ends_in_softmax, &labels);
    let mut saved = Vec::new();
    let existing = if request.overwrite {
        output::Existing::Replace
    } else {
        output::Existing::Refuse
    };
    for (name, id, path) in destinations {
        let tensor = match id {
            None => &outputs.output,
            Some(id) => outputs.kept.get(&graph.node(id).name).ok_or_else(|| {
                RuntimeError::Invalid(format!("the run did not keep {name} to save it"))
            })?,
        };
        output::save_npy(tensor, &path, existing)?;
        saved.push(Saved {
            tensor: name,
            path: path.display().to_string(),
        });
    }
    let report = Report {
        network: graph.name.clone(),
        backend: backend.name(),
        compile_milliseconds,
        batch,
        weights: match &request.weights {
            Some(path) => path.display().to_string(),
            None => format!("seeded initialisation (seed {})", request.seed),
        },
        inputs: if request.inputs.is_empty() {
            vec![format!("seeded random tensor (seed {})", request.seed)]
        } else {
            request
                .inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect()
        },
        output_shape: outputs.output.shape().to_vec(),
        predictions,
        softmax_applied: !ends_in_softmax,
        saved,
        milliseconds,
        interpreted_kernels,
    };
    if request.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_report(&report, &outputs.output);
    }
    Ok(())
}

/// Where `--save-outputs` puts each tensor: `(name, layer, path)`, the network's output
/// first (layer `None`). The directory is made, and without `--overwrite` files already
/// there are refused before anything runs, so a run never ends in losing either.
fn save_destinations(
    request: &RunRequest,
    keep: &[(String, NodeId)],
) -> Result<Vec<(String, Option<NodeId>, PathBuf)>, RuntimeError> {
    let Some(dir) = &request.save_outputs else {
        return Ok(Vec::new());
    };
    std::fs::create_dir_all(dir).map_err(|source| RuntimeError::Write {
        path: dir.clone(),
        source,
    })?;
    // Saved under the names asked for: `--save inception_4a` is inception_4a.npy.
    let mut destinations = vec![(
        "output".to_string(),
        None,
        dir.join(npy_file_name("output", true)),
    )];
    destinations.extend(keep.iter().map(|(asked, id)| {
        (
            asked.clone(),
            Some(*id),
            dir.join(npy_file_name(asked, false)),
        )
    }));
    // `--save a --save a` writes a.npy once.
    let mut seen = std::collections::HashSet::new();
    destinations.retain(|(_, _, path)| seen.insert(path.clone()));
    let taken: Vec<String> = destinations
        .iter()
        .filter(|(_, _, path)| !request.overwrite && path.exists())
        .map(|(_, _, path)| path.display().to_string())
        .collect();
    if !taken.is_empty() {
        return Err(RuntimeError::Invalid(format!(
            "--save-outputs would replace {}; pass --overwrite to replace them, or choose another directory",
            taken.join(", ")
        )));
    }
    Ok(destinations)
}

/// The fused executor keeps only the output: its buffers are reused as it goes.
fn run_fused(
    net: &CheckedGraph,
    weights: &Weights,
    inputs: Vec<cnnc_runtime::Tensor>,
    options: &RunOptions,
) -> Result<reference::Outputs, RuntimeError> {
    refuse_save(options, "fused")?;
    let output = fused::Program::new(net, weights)?.run(inputs)?;
    Ok(reference::Outputs {
        output,
        ..Default::default()
    })
}

/// The JIT's output, how long compiling took (milliseconds) and which kernels it
/// left to the reference kernels.
fn run_jit(
    net: &CheckedGraph,
    weights: &Weights,
    inputs: Vec<cnnc_runtime::Tensor>,
    options: &RunOptions,
    batch: usize,
    check_bounds: bool,
) -> Result<(reference::Outputs, Option<f64>, Option<Interpreted>), RuntimeError> {
    refuse_save(options, "jit")?;
    if check_bounds {
        let (outputs, compile_milliseconds) = run_jit_bounds_checked(net, weights, inputs)?;
        return Ok((outputs, compile_milliseconds, None));
    }
    let program = jit::Program::for_one_run(net, weights, batch)?;
    let output = program.run(inputs)?;
    let outputs = reference::Outputs {
        output,
        ..Default::default()
    };
    let interpreted = Interpreted {
        kernels: program.interpreted_kernels(),
        of: program.generated().1,
    };
    Ok((
        outputs,
        Some(program.compile_time.as_secs_f64() * 1e3),
        Some(interpreted).filter(|i| i.kernels > 0),
    ))
}

/// `--check-bounds`: the JIT twice, every buffer pushed against the page after it (an
/// overrun faults) and then against the page before it (an underrun faults). Both runs
/// compute the same numbers; the report's times are the first run's.
fn run_jit_bounds_checked(
    net: &CheckedGraph,
    weights: &Weights,
    inputs: Vec<cnnc_runtime::Tensor>,
) -> Result<(reference::Outputs, Option<f64>), RuntimeError> {
    let threads = jit::machine_threads();
    let mut results = Vec::new();
    for guard in [jit::guarded::Guard::Trailing, jit::guarded::Guard::Leading] {
        let program = jit::Program::bounds_checked(net, weights, threads, guard)?;
        let output = program.run(inputs.clone())?;
        results.push((output, program.compile_time.as_secs_f64() * 1e3));
    }
    if results[0].0 != results[1].0 {
        return Err(RuntimeError::Invalid(
            "--check-bounds: the two guarded runs computed different outputs".into(),
        ));
    }
    let (output, compile_milliseconds) = results.swap_remove(0);
    let outputs = reference::Outputs {
        output,
        ..Default::default()
    };
    Ok((outputs, Some(compile_milliseconds)))
}

/// Backends that reuse the buffers of inner layers keep only the output.
pub(crate) fn refuse_save(options: &RunOptions, backend: &str) -> Result<(), RuntimeError> {
    if options.keep.is_empty() {
        return Ok(());
    }
    Err(RuntimeError::Invalid(format!(
        "--save needs --backend reference: the {backend} backend reuses the buffers of inner layers"
    )))
}

fn normalization(channels: usize, request: &RunRequest) -> Result<Normalize, RuntimeError> {
    let default = Normalize::default_for(channels);
    let pick = |given: &Option<Vec<f32>>, fallback: Vec<f32>, what: &str| match given {
        None => Ok(fallback),
        Some(v) if v.len() == 1 => Ok(vec![v[0]; channels]),
        Some(v) if v.len() == channels => Ok(v.clone()),
        Some(v) => Err(RuntimeError::Invalid(format!(
            "--{what} has {} values but the input has {channels} channels",
            v.len()
        ))),
    };
    let normalize = Normalize {
        mean: pick(&request.mean, default.mean, "mean")?,
        std: pick(&request.std, default.std, "std")?,
    };
    if normalize.std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
        return Err(RuntimeError::Invalid(
            "--std values must be finite and non-zero".into(),
        ));
    }
    Ok(normalize)
}

/// The layers named with `--save`, checked against the network.
fn kept_layers(
    net: &CheckedGraph,
    names: &[String],
) -> Result<Vec<(String, NodeId)>, RuntimeError> {
    names
        .iter()
        .map(|name| {
            net.graph
                .nodes
                .iter()
                .find(|n| &n.name == name || n.name.starts_with(&format!("{name}.")) && is_last_of_scope(net, n.id, name))
                .map(|n| (name.clone(), n.id))
                .ok_or_else(|| {
                    let close = did_you_mean(name, net.graph.nodes.iter().map(|n| n.name.as_str()));
                    let hint = close.map_or(String::new(), |c| format!(" (did you mean `{c}`?)"));
                    RuntimeError::Invalid(format!(
                        "--save {name}: no layer or block of that name{hint}; `cnnc summary` lists them"
                    ))
                })
        })
        .collect()
}

/// `--save inception_4a` names a block: its output is its scope's last layer.
fn is_last_of_scope(net: &CheckedGraph, id: NodeId, scope: &str) -> bool {
    let prefix = format!("{scope}.");
    let last = net
        .graph
        .nodes
        .iter()
        .rev()
        .find(|n| n.name.starts_with(&prefix) && n.side.is_none());
    last.is_some_and(|n| n.id == id)
}

fn read_labels(path: &Path) -> Result<Vec<String>, RuntimeError> {
    let text = std::fs::read_to_string(path).map_err(|source| RuntimeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text.lines().map(|l| l.trim().to_string()).collect())
}

fn print_report(report: &Report, output: &cnnc_runtime::Tensor) {
    let interpreted = report.interpreted_kernels.map_or(String::new(), |i| {
        format!(
            "; {} of {} kernels interpreted, sooner than compiled for one run",
            i.kernels, i.of
        )
    });
    let compiled = report.compile_milliseconds.map_or(String::new(), |ms| {
        format!(" (compiled in {ms:.1} ms{interpreted})")
    });
    println!(
        "{}: {} backend, batch {}, {:.1} ms{compiled}",
        report.network, report.backend, report.batch, report.milliseconds
    );
    println!("weights: {}", report.weights);
    println!("input: {}", report.inputs.join(", "));
    match &report.predictions {
        Some(samples) => {
            let note = if report.softmax_applied {
                " (softmax of the output)"
            } else {
                ""
            };
            for (i, ranked) in samples.iter().enumerate() {
                if samples.len() > 1 {
                    println!("sample {i}:");
                }
                if let Some(best) = ranked.first() {
                    println!(
                        "{} (probability {:.4}){note}",
                        class_text(best),
                        best.probability
                    );
                }
                for (rank, r) in ranked.iter().enumerate() {
                    println!("  {}. {:<24} {:.4}", rank + 1, class_text(r), r.probability);
                }
            }
        }
        None => {
            let (min, max) = output
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            let mean = output.iter().sum::<f32>() / output.len().max(1) as f32;
            println!(
                "output: {} (min {min:.4}, max {max:.4}, mean {mean:.4})",
                report
                    .output_shape
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join("x")
            );
        }
    }
    for saved in &report.saved {
        println!("saved {} ({})", saved.path, saved.tensor);
    }
}

fn class_text(r: &Ranked) -> String {
    match &r.label {
        Some(label) => format!("{} {label}", r.class),
        None => r.class.to_string(),
    }
}

/// `cnnc init`: the seeded weights of a network, written as safetensors.
pub fn init(net: &CheckedGraph, seed: u64, out: &Path) -> Result<(), RuntimeError> {
    let tensors = weights::expected(net);
    let bytes: u64 = tensors
        .iter()
        .map(|e| e.spec.shape.iter().product::<u64>().saturating_mul(4))
        .fold(0, u64::saturating_add);
    if let Some(limit) = memory::available()
        && bytes > limit
    {
        return Err(RuntimeError::OutOfMemory {
            needed: cnnc_compiler::summary::bytes(bytes),
            limit: cnnc_compiler::summary::bytes(limit),
            largest: "the weights themselves".into(),
        });
    }
    let weights = Weights::seeded(net, seed);
    weights::save(&weights, net, out)?;
    println!(
        "wrote {} ({} tensors, {}, seed {seed})",
        out.display(),
        tensors.len(),
        cnnc_compiler::summary::bytes(bytes)
    );
    Ok(())
}

/// `cnnc export`: the network and its weights as an ONNX model.
pub fn export(
    net: &CheckedGraph,
    weights: Option<&Path>,
    seed: u64,
    options: cnnc_onnx::ExportOptions,
    out: &Path,
) -> Result<(), RuntimeError> {
    let weights = match weights {
        Some(path) => Weights::load(path, net)?,
        None => Weights::seeded(net, seed),
    };
    let bytes = cnnc_onnx::export(net, &weights, options).map_err(RuntimeError::Invalid)?;
    output::write_atomically(out, &bytes)?;
    println!(
        "wrote {} ({}, opset {})",
        out.display(),
        cnnc_compiler::summary::bytes(bytes.len() as u64),
        cnnc_onnx::export::OPSET
    );
    Ok(())
}

/// `cnnc import`: an ONNX model as a .cnn file and a safetensors file of its weights.
pub fn import(model: &Path, cnn: &Path, weights_path: &Path) -> Result<(), String> {
    let unreadable = |e: std::io::Error| format!("cannot read {}: {e}", model.display());
    let size = std::fs::metadata(model).map_err(unreadable)?.len();
    if size > cnnc_onnx::import::MAX_MODEL_BYTES {
        return Err(format!(
            "{} is {}, more than a single-file ONNX model can be (2 GiB)",
            model.display(),
            cnnc_compiler::summary::bytes(size)
        ));
    }
    let bytes = std::fs::read(model).map_err(unreadable)?;
    let stem = model
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("Imported");
    let imported =
        cnnc_onnx::import(&bytes, stem).map_err(|e| format!("{}: {e}", model.display()))?;
    output::write_atomically(cnn, imported.source.as_bytes()).map_err(|e| e.to_string())?;
    weights::save(&imported.weights, &imported.network, weights_path).map_err(|e| e.to_string())?;
    let totals = cnnc_compiler::summary::summarize(&imported.network, None).totals;
    println!(
        "wrote {} (network {}: {} params, {} MACs{})",
        cnn.display(),
        imported.network.graph.name,
        cnnc_compiler::summary::si(totals.inference.params),
        cnnc_compiler::summary::si(totals.inference.macs),
        if imported.named_tensors {
            "; written with named tensors, as its graph is not nested branches and joins"
        } else {
            ""
        }
    );
    println!("wrote {}", weights_path.display());
    Ok(())
}
