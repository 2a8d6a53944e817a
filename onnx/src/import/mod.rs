//! An ONNX model as a `.cnn` network and its weights under cnnc's layer names.
//!
//! The model is decoded (prost), its nodes become layers (`layers`), the DAG of layers
//! is given the nested structure a person would write (`structure`), and that is
//! written as text (`emit`). The text is then compiled like any `.cnn` file, and the
//! weights are checked against what the compiled network expects, so what `cnnc
//! import` writes always checks and runs.

mod emit;
mod layers;
mod model;
mod structure;

pub use layers::Unsupported;
pub use model::MAX_MODEL_BYTES;

use cnnc_compiler::check::CheckedGraph;
use cnnc_runtime::weights::{Weights, expected};
use layers::{Layer, Layers};
use std::fmt;
use structure::Dag;

/// What an import produced: the text, the network it compiles to, and its weights.
pub struct Imported {
    pub source: String,
    pub network: CheckedGraph,
    pub weights: Weights,
    /// Whether the graph needed named tensors (it is not nested forks and joins).
    pub named_tensors: bool,
}

#[derive(Debug)]
pub enum ImportError {
    /// Not a readable model, or one that breaks ONNX's rules.
    Invalid(String),
    /// Nodes cnnc has no layer for: every one of them.
    Unsupported(Vec<Unsupported>),
    /// The model is valid ONNX but its network cannot be written or does not check.
    Inexpressible(String),
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::Invalid(why) | ImportError::Inexpressible(why) => f.write_str(why),
            ImportError::Unsupported(nodes) => {
                writeln!(
                    f,
                    "{} node{} of the model cannot be imported:",
                    nodes.len(),
                    if nodes.len() == 1 { "" } else { "s" }
                )?;
                for node in nodes {
                    writeln!(f, "  {} ({}): {}", node.node, node.op_type, node.why)?;
                }
                write!(
                    f,
                    "cnnc imports Conv, MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, LRN, \
                     BatchNormalization, Dropout, Flatten, Reshape to 2-D, Gemm, MatMul (+ Add), \
                     Relu, Clip (as relu/relu6), LeakyRelu, Tanh, Sigmoid, Softmax, Concat, Add, \
                     Sum, Mul (as a residual's scale), Identity and Constant"
                )
            }
        }
    }
}

impl std::error::Error for ImportError {}

/// Imports a serialised ONNX model. `fallback_name` names the network when the model's
/// graph has no usable name (PyTorch calls every graph `main_graph`).
pub fn import(bytes: &[u8], fallback_name: &str) -> Result<Imported, ImportError> {
    let model = model::decode(bytes).map_err(ImportError::Invalid)?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| ImportError::Invalid("the model has no graph".into()))?;
    let initializers: std::collections::HashSet<&str> = graph
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_deref().unwrap_or("")))
        .collect();
    let [input] = inputs.as_slice() else {
        return Err(ImportError::Inexpressible(format!(
            "the model has {} inputs; `cnnc import` takes models with one",
            inputs.len()
        )));
    };
    let input_tensor = input.name.clone().unwrap_or_default();
    let shape = model::sample_shape(input).map_err(ImportError::Inexpressible)?;
    let converted =
        layers::convert(graph, &input_tensor, shape.len() + 1).map_err(ImportError::Invalid)?;
    if !converted.unsupported.is_empty() {
        return Err(ImportError::Unsupported(converted.unsupported));
    }
    let Some(output) = converted.outputs.first().cloned() else {
        return Err(ImportError::Invalid("the model has no output".into()));
    };
    let name = network_name(graph.name.as_deref(), fallback_name);
    let input_name = input_identifier(&input_tensor);
    let signature = format!(
        "{name}({input_name}: {})",
        shape
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("x")
    );
    let header = header(&model, graph.name.as_deref());
    check_order(&converted, &input_tensor)?;
    let dag = Dag::new(&converted.layers, &converted.outputs);
    let (emitted, named_tensors) = match dag.structure(&input_tensor, &output) {
        Some(items) => (
            emit::Emitter::new(&dag).network(&header, &signature, &items),
            false,
        ),
        None => {
            let order: Vec<usize> = dag.live_for(&output).into_iter().collect();
            let mut header = header;
            if converted.outputs.len() > 1 {
                // `side` needs the nested form; say what was left out rather than drop it quietly.
                header = header.replace(
                    "\n\n",
                    &format!(
                        "\n// Its other outputs ({}) are left out: side outputs need the nested form.\n\n",
                        converted.outputs[1..].join(", ")
                    ),
                );
            }
            let emitted = emit::Emitter::new(&dag)
                .named_tensors(
                    &header,
                    &signature,
                    &input_tensor,
                    &input_name,
                    &order,
                    &output,
                )
                .map_err(ImportError::Inexpressible)?;
            (emitted, true)
        }
    };
    let network = compile(&emitted.text)?;
    let weights = weights(&network, &emitted.weighted, &converted)?;
    Ok(Imported {
        source: emitted.text,
        network,
        weights,
        named_tensors,
    })
}

/// Every tensor a layer reads is the input or an earlier layer's output, and every
/// graph output is produced: ONNX's rule for a graph, which the structure recovery and
/// the text rely on.
fn check_order(converted: &Layers, input: &str) -> Result<(), ImportError> {
    let mut produced = std::collections::HashSet::from([input]);
    for layer in &converted.layers {
        if let Some(missing) = layer.inputs.iter().find(|i| !produced.contains(i.as_str())) {
            return Err(ImportError::Invalid(format!(
                "`{}` reads tensor `{missing}`, which no earlier node produces (the graph \
                 is not in topological order, or the tensor is missing)",
                layer.path
            )));
        }
        produced.insert(&layer.output);
    }
    match converted
        .outputs
        .iter()
        .find(|o| !produced.contains(o.as_str()))
    {
        Some(output) => Err(ImportError::Invalid(format!(
            "the graph's output `{output}` is produced by no node"
        ))),
        None => Ok(()),
    }
}

fn compile(source: &str) -> Result<CheckedGraph, ImportError> {
    let mut compilation = cnnc_compiler::compile(source);
    if compilation.has_errors() || compilation.networks.is_empty() {
        let messages: Vec<String> = compilation
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| format!("  {}", d.message))
            .collect();
        return Err(ImportError::Inexpressible(format!(
            "the imported network does not check:\n{}\nthe text was:\n{source}",
            messages.join("\n")
        )));
    }
    Ok(compilation.networks.remove(0))
}

/// The model's weights under the compiled network's names, each checked for shape.
fn weights(
    network: &CheckedGraph,
    weighted: &std::collections::HashMap<String, usize>,
    converted: &Layers,
) -> Result<Weights, ImportError> {
    let mut weights = Weights::default();
    let mut problems = Vec::new();
    for e in expected(network) {
        let layer_name = e.name.rsplit_once('.').map_or("", |(layer, _)| layer);
        let found = weighted
            .get(layer_name)
            .map(|&l| &converted.layers[l])
            .and_then(|layer: &Layer| layer.weights.iter().find(|(s, _)| *s == e.spec.suffix));
        match found {
            Some((_, tensor))
                if tensor
                    .shape()
                    .iter()
                    .map(|&d| d as u64)
                    .eq(e.spec.shape.iter().copied()) =>
            {
                weights.insert(e.name.clone(), tensor.clone());
            }
            Some((_, tensor)) => problems.push(format!(
                "  {}: the model's tensor is {:?}, the layer expects {:?}",
                e.name,
                tensor.shape(),
                e.spec.shape
            )),
            None => problems.push(format!("  {}: no tensor of the model maps to it", e.name)),
        }
    }
    if problems.is_empty() {
        Ok(weights)
    } else {
        Err(ImportError::Inexpressible(format!(
            "the model's weights do not fit the imported network:\n{}",
            problems.join("\n")
        )))
    }
}

fn network_name(graph_name: Option<&str>, fallback: &str) -> String {
    let generic = ["main_graph", "torch_jit", "torch-jit-export", "graph", ""];
    let candidate = match graph_name {
        Some(name) if !generic.contains(&name) => name,
        _ => fallback,
    };
    let mut name: String = candidate
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name = format!("Net{name}");
    }
    name
}

fn input_identifier(tensor: &str) -> String {
    let name: String = tensor
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let reserved = cnnc_compiler::ops::find(&name).is_some();
    if name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') && !reserved {
        name
    } else {
        "input".into()
    }
}

fn header(model: &crate::proto::ModelProto, graph_name: Option<&str>) -> String {
    let producer = [
        model.producer_name.as_deref(),
        model.producer_version.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ");
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.as_deref().unwrap_or("").is_empty())
        .and_then(|o| o.version)
        .map_or(String::new(), |v| format!(", opset {v}"));
    format!(
        "// Imported by `cnnc import` from the ONNX graph `{}` (made by {}{opset}).\n\n",
        graph_name.unwrap_or(""),
        if producer.is_empty() {
            "an unknown producer"
        } else {
            &producer
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{
        GraphProto, ModelProto, NodeProto, TensorShapeProto, TypeProto, ValueInfoProto,
        tensor_proto::DataType, tensor_shape_proto, type_proto,
    };
    use prost::Message;

    fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
        let dim = dims.iter().map(|&d| tensor_shape_proto::Dimension {
            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
            ..Default::default()
        });
        ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(DataType::Float as i32),
                    shape: Some(TensorShapeProto { dim: dim.collect() }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn model(nodes: Vec<NodeProto>, output: &str) -> Vec<u8> {
        ModelProto {
            graph: Some(GraphProto {
                node: nodes,
                input: vec![value_info("x", &[1, 3, 4, 4])],
                output: vec![value_info(output, &[1, 3, 4, 4])],
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            name: Some(output.into()),
            op_type: Some(op.into()),
            input: inputs.iter().map(|i| i.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    #[test]
    fn dangling_and_out_of_order_tensors_are_errors() {
        for (nodes, output, expected) in [
            (
                vec![node("Relu", &["nowhere"], "y")],
                "y",
                "reads tensor `nowhere`",
            ),
            (
                vec![node("Relu", &["a"], "y"), node("Relu", &["x"], "a")],
                "y",
                "not in topological order",
            ),
            (
                vec![node("Relu", &["x"], "y")],
                "z",
                "output `z` is produced by no node",
            ),
        ] {
            let error = import(&model(nodes, output), "N").err().expect("an error");
            assert!(error.to_string().contains(expected), "{error}");
        }
    }

    #[test]
    fn nodes_without_inputs_are_errors_not_panics() {
        for op in [
            "MatMul", "Softmax", "Concat", "Relu", "Conv", "Add", "Mul", "Gemm",
        ] {
            let bytes = model(vec![node(op, &[], "y")], "y");
            assert!(import(&bytes, "N").is_err(), "{op}");
        }
    }
}
