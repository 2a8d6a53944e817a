//! A checked network and its weights as an ONNX model (opset 17): one ONNX node per
//! layer where ONNX has the op, named after the layer, its output tensor named the same,
//! its weights as initializers under their cnnc names.

use crate::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_proto::DataType, tensor_shape_proto, type_proto,
};
use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::graph::Node;
use cnnc_compiler::ops::window::Window;
use cnnc_compiler::ops::{Activation, AdaptivePool, Op, PoolKind, Shape};
use cnnc_runtime::weights::Weights;
use prost::Message;

pub const OPSET: i64 = 17;
const IR_VERSION: i64 = 8;
/// The batch dimension's symbolic name.
const BATCH: &str = "N";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExportOptions {
    /// Leave the side outputs (auxiliary classifiers) out, as inference does.
    pub prune_side_outputs: bool,
}

/// The serialised model.
pub fn export(
    net: &CheckedGraph,
    weights: &Weights,
    options: ExportOptions,
) -> Result<Vec<u8>, String> {
    Ok(model(net, weights, options)?.encode_to_vec())
}

pub fn model(
    net: &CheckedGraph,
    weights: &Weights,
    options: ExportOptions,
) -> Result<ModelProto, String> {
    let mut builder = Builder {
        net,
        weights,
        graph: GraphProto {
            name: Some(net.graph.name.clone()),
            ..Default::default()
        },
    };
    for (index, node) in net.graph.nodes.iter().enumerate() {
        if node.side.is_some() && options.prune_side_outputs {
            continue;
        }
        builder.node(index, node)?;
    }
    let mut outputs = vec![net.graph.output];
    if !options.prune_side_outputs {
        outputs.extend(net.graph.side_outputs.iter().map(|s| s.node));
    }
    for id in outputs {
        let node = net.graph.node(id);
        builder
            .graph
            .output
            .push(value_info(&node.name, &net.facts[id.0].shape));
    }
    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("cnnc".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(builder.graph),
        ..Default::default()
    })
}

fn value_info(name: &str, shape: &Shape) -> ValueInfoProto {
    let batch = tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimParam(BATCH.into())),
        ..Default::default()
    };
    let dims = shape.0.iter().map(|&d| tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimValue(d as i64)),
        ..Default::default()
    });
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto {
                    dim: std::iter::once(batch).chain(dims).collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn float_tensor(
    name: &str,
    dims: &[i64],
    values: impl IntoIterator<Item = f32>,
) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(values.into_iter().flat_map(f32::to_le_bytes).collect()),
        ..Default::default()
    }
}

fn int_tensor(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![values.len() as i64],
        data_type: Some(DataType::Int64 as i32),
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

fn ints(name: &str, values: impl IntoIterator<Item = i64>) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: values.into_iter().collect(),
        ..Default::default()
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(value),
        ..Default::default()
    }
}

fn float(name: &str, value: f64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(value as f32),
        ..Default::default()
    }
}

/// Kernel, strides, pads (ONNX order: all begins, then all ends) and dilations.
fn window_attributes(window: &Window, input: &Shape, with_dilation: bool) -> Vec<AttributeProto> {
    let [_, h, w] = input.chw().expect("windows see CxHxW inputs");
    let [top, left, bottom, right] = window.pads([h, w]);
    let mut attributes = vec![
        ints("kernel_shape", window.kernel.map(|k| k as i64)),
        ints("strides", window.stride.map(|s| s as i64)),
        ints("pads", [top, left, bottom, right].map(|p| p as i64)),
    ];
    if with_dilation {
        attributes.push(ints("dilations", window.dilation.map(|d| d as i64)));
    }
    attributes
}

struct Builder<'a> {
    net: &'a CheckedGraph,
    weights: &'a Weights,
    graph: GraphProto,
}

impl Builder<'_> {
    fn emit(
        &mut self,
        name: &str,
        op_type: &str,
        inputs: Vec<String>,
        output: &str,
        attribute: Vec<AttributeProto>,
    ) {
        self.graph.node.push(NodeProto {
            name: Some(name.into()),
            op_type: Some(op_type.into()),
            input: inputs,
            output: vec![output.into()],
            attribute,
            ..Default::default()
        });
    }

    /// Adds `<layer>.<suffix>` as an initializer and returns its name.
    fn weight(&mut self, node: &Node, suffix: &str) -> Result<String, String> {
        let name = format!("{}.{suffix}", node.name);
        let tensor = self
            .weights
            .get(&name)
            .ok_or_else(|| format!("the weights have no tensor `{name}`"))?;
        let dims: Vec<i64> = tensor.shape().iter().map(|&d| d as i64).collect();
        self.graph
            .initializer
            .push(float_tensor(&name, &dims, tensor.iter().copied()));
        Ok(name)
    }

    fn constant_floats(&mut self, name: String, values: &[f32]) -> String {
        let dims: Vec<i64> = if values.len() == 1 {
            Vec::new()
        } else {
            vec![values.len() as i64]
        };
        self.graph
            .initializer
            .push(float_tensor(&name, &dims, values.iter().copied()));
        name
    }

    fn node(&mut self, index: usize, node: &Node) -> Result<(), String> {
        let net = self.net;
        let inputs: Vec<String> = node
            .inputs
            .iter()
            .map(|i| net.graph.node(*i).name.clone())
            .collect();
        let input_shape = node.inputs.first().map(|i| &net.facts[i.0].shape);
        let name = node.name.as_str();
        match &node.op {
            Op::Input(_) => self
                .graph
                .input
                .push(value_info(name, &net.facts[index].shape)),
            Op::Conv(conv) => {
                let mut args = inputs;
                args.push(self.weight(node, "weight")?);
                if conv.bias {
                    args.push(self.weight(node, "bias")?);
                }
                let mut attributes =
                    window_attributes(&conv.window, input_shape.expect("one input"), true);
                attributes.push(int("group", conv.groups as i64));
                self.emit(name, "Conv", args, name, attributes);
            }
            Op::Pool(pool) => {
                let input = input_shape.expect("one input");
                let (op_type, mut attributes) = match pool.kind {
                    PoolKind::Max => ("MaxPool", window_attributes(&pool.window, input, true)),
                    PoolKind::Avg => {
                        let mut a = window_attributes(&pool.window, input, false);
                        a.push(int("count_include_pad", i64::from(pool.count_include_pad)));
                        ("AveragePool", a)
                    }
                };
                attributes.push(int("ceil_mode", i64::from(pool.window.ceil)));
                self.emit(name, op_type, inputs, name, attributes);
            }
            Op::GlobalPool(global) => {
                let op_type = match global.kind {
                    PoolKind::Max => "GlobalMaxPool",
                    PoolKind::Avg => "GlobalAveragePool",
                };
                self.emit(name, op_type, inputs, name, Vec::new());
            }
            Op::AdaptivePool(adaptive) => {
                self.adaptive_pool(name, &inputs[0], input_shape.expect("one input"), adaptive)
            }
            Op::Lrn(lrn) => {
                // ONNX divides alpha by size, as PyTorch does; the paper's form scales it back.
                let alpha = if lrn.alpha_scaled {
                    lrn.alpha
                } else {
                    lrn.alpha * lrn.size as f64
                };
                let attributes = vec![
                    int("size", lrn.size as i64),
                    float("alpha", alpha),
                    float("beta", lrn.beta),
                    float("bias", lrn.k),
                ];
                self.emit(name, "LRN", inputs, name, attributes);
            }
            Op::BatchNorm(bn) => {
                let mut args = inputs;
                for suffix in ["weight", "bias", "running_mean", "running_var"] {
                    args.push(self.weight(node, suffix)?);
                }
                self.emit(
                    name,
                    "BatchNormalization",
                    args,
                    name,
                    vec![float("epsilon", bn.eps)],
                );
            }
            Op::Dropout(dropout) => {
                let ratio = self.constant_floats(format!("{name}.ratio"), &[dropout.p as f32]);
                self.emit(
                    name,
                    "Dropout",
                    vec![inputs[0].clone(), ratio],
                    name,
                    Vec::new(),
                );
            }
            Op::Flatten(_) => self.emit(name, "Flatten", inputs, name, vec![int("axis", 1)]),
            Op::Dense(dense) => {
                let mut args = inputs;
                args.push(self.weight(node, "weight")?);
                if dense.bias {
                    args.push(self.weight(node, "bias")?);
                }
                self.emit(name, "Gemm", args, name, vec![int("transB", 1)]);
            }
            Op::Activation(activation) => self.activation(name, inputs, activation),
            Op::Concat(_) => self.emit(name, "Concat", inputs, name, vec![int("axis", 1)]),
            Op::Add(add) => {
                let mut terms = inputs;
                if add.scale != 1.0 {
                    let scale = self.constant_floats(format!("{name}.scale"), &[add.scale as f32]);
                    for (i, term) in terms.iter_mut().enumerate().skip(1) {
                        let scaled = format!("{name}.scaled{i}");
                        self.emit(
                            &scaled,
                            "Mul",
                            vec![term.clone(), scale.clone()],
                            &scaled,
                            Vec::new(),
                        );
                        *term = scaled;
                    }
                }
                let op_type = if terms.len() == 2 { "Add" } else { "Sum" };
                self.emit(name, op_type, terms, name, Vec::new());
            }
        }
        Ok(())
    }

    fn activation(&mut self, name: &str, inputs: Vec<String>, activation: &Activation) {
        match activation {
            Activation::Relu => self.emit(name, "Relu", inputs, name, Vec::new()),
            Activation::Relu6 => {
                let low = self.constant_floats(format!("{name}.min"), &[0.0]);
                let high = self.constant_floats(format!("{name}.max"), &[6.0]);
                self.emit(
                    name,
                    "Clip",
                    vec![inputs[0].clone(), low, high],
                    name,
                    Vec::new(),
                );
            }
            Activation::LeakyRelu { slope } => self.emit(
                name,
                "LeakyRelu",
                inputs,
                name,
                vec![float("alpha", *slope)],
            ),
            Activation::Tanh => self.emit(name, "Tanh", inputs, name, Vec::new()),
            Activation::Sigmoid => self.emit(name, "Sigmoid", inputs, name, Vec::new()),
            Activation::Softmax => self.emit(name, "Softmax", inputs, name, vec![int("axis", 1)]),
            Activation::Identity => self.emit(name, "Identity", inputs, name, Vec::new()),
        }
    }

    /// ONNX has no adaptive pooling. Equal windows become one pooling op; otherwise,
    /// since the windows of each axis are independent, each axis is pooled separately:
    /// a Slice and a Reduce per output row (then column), joined by a Concat.
    fn adaptive_pool(&mut self, name: &str, input: &str, shape: &Shape, pool: &AdaptivePool) {
        let [_, h, w] = shape.chw().expect("CxHxW");
        let (reduce, pool_op) = match pool.kind {
            PoolKind::Avg => ("ReduceMean", "AveragePool"),
            PoolKind::Max => ("ReduceMax", "MaxPool"),
        };
        let [oh, ow] = pool.size;
        if h % oh == 0 && w % ow == 0 {
            let kernel = [(h / oh) as i64, (w / ow) as i64];
            let attributes = vec![ints("kernel_shape", kernel), ints("strides", kernel)];
            self.emit(name, pool_op, vec![input.into()], name, attributes);
            return;
        }
        let rows = self.pool_axis(&format!("{name}.rows"), input, 2, h, oh, reduce);
        let columns = self.pool_axis(&format!("{name}.columns"), &rows, 3, w, ow, reduce);
        self.emit(name, "Identity", vec![columns], name, Vec::new());
    }

    fn pool_axis(
        &mut self,
        prefix: &str,
        input: &str,
        axis: i64,
        size: u64,
        out: u64,
        reduce: &str,
    ) -> String {
        let axes = self.int_constant(format!("{prefix}.axes"), &[axis]);
        let mut cells = Vec::new();
        for i in 0..out {
            let (start, end) = (i * size / out, ((i + 1) * size).div_ceil(out));
            let starts = self.int_constant(format!("{prefix}.{i}.start"), &[start as i64]);
            let ends = self.int_constant(format!("{prefix}.{i}.end"), &[end as i64]);
            let slice = format!("{prefix}.{i}.slice");
            self.emit(
                &slice,
                "Slice",
                vec![input.into(), starts, ends, axes.clone()],
                &slice,
                Vec::new(),
            );
            let cell = format!("{prefix}.{i}");
            self.emit(
                &cell,
                reduce,
                vec![slice],
                &cell,
                vec![ints("axes", [axis]), int("keepdims", 1)],
            );
            cells.push(cell);
        }
        self.emit(prefix, "Concat", cells, prefix, vec![int("axis", axis)]);
        prefix.to_string()
    }

    fn int_constant(&mut self, name: String, values: &[i64]) -> String {
        self.graph.initializer.push(int_tensor(&name, values));
        name
    }
}
