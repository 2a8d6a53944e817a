//! ONNX nodes as cnnc layers: the table of what `cnnc import` understands. Helper nodes
//! that real exports produce (Constant, Identity, the Mul of a scaled residual, the Add
//! of a MatMul's bias, a Reshape to 2-D) are folded into the layers they serve; every
//! node that cannot be expressed is collected, so one error lists them all.

use super::model::{Attributes, Constant, constant};
#[cfg(test)]
use crate::proto::AttributeProto;
use crate::proto::{GraphProto, NodeProto};
use cnnc_runtime::Tensor;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Conv(Conv),
    Pool(Pool),
    GlobalPool {
        max: bool,
    },
    Lrn {
        size: u64,
        alpha: f32,
        beta: f32,
        k: f32,
    },
    BatchNorm {
        eps: f32,
    },
    Dropout {
        p: f32,
    },
    Flatten,
    Dense {
        units: u64,
        bias: bool,
    },
    Activation(Activation),
    Softmax,
    Concat,
    /// `inputs[0] + scale * inputs[1] (+ ...)`: a scaled term is always the last.
    Add {
        scale: f32,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Conv {
    pub out: u64,
    pub window: Window,
    pub groups: u64,
    pub bias: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub max: bool,
    pub window: Window,
    pub ceil: bool,
    pub count_include_pad: bool,
}

/// Kernel, stride, dilation as `[h, w]`; padding `[top, left, bottom, right]`, or
/// `same` (ONNX's SAME_UPPER, which is cnnc's `same`).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub kernel: [u64; 2],
    pub stride: [u64; 2],
    pub dilation: [u64; 2],
    pub pads: Option<[u64; 4]>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Relu,
    Relu6,
    Tanh,
    Sigmoid,
    LeakyRelu(f32),
}

#[derive(Debug, Clone)]
pub struct Layer {
    /// The module path the exporter recorded (`layer1.0.conv1`), or the node's name.
    pub path: String,
    pub kind: Kind,
    /// Tensor names, after aliases are resolved.
    pub inputs: Vec<String>,
    pub output: String,
    /// `(suffix, tensor)` under cnnc's names: `weight`, `bias`, `running_mean`, ...
    pub weights: Vec<(&'static str, Tensor)>,
}

/// A node that could not be imported: its name, op type and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Unsupported {
    pub node: String,
    pub op_type: String,
    pub why: String,
}

#[derive(Debug, Default)]
pub struct Layers {
    pub layers: Vec<Layer>,
    pub unsupported: Vec<Unsupported>,
    /// The graph's outputs, aliases resolved: the first is the network's output.
    pub outputs: Vec<String>,
}

/// Converts the graph's nodes, in their (topological) order.
pub fn convert(graph: &GraphProto, input: &str, input_rank: usize) -> Result<Layers, String> {
    let mut converter = Converter {
        constants: HashMap::new(),
        aliases: HashMap::new(),
        scaled: HashMap::new(),
        ranks: HashMap::from([(input.to_string(), input_rank)]),
        uses: use_counts(graph),
        out: Layers::default(),
    };
    for tensor in &graph.initializer {
        let name = tensor.name.clone().unwrap_or_default();
        converter.constants.insert(name, constant(tensor)?);
    }
    for node in &graph.node {
        converter.node(node)?;
    }
    let outputs = graph
        .output
        .iter()
        .filter_map(|o| o.name.as_deref())
        .map(|o| converter.resolve(o))
        .collect();
    converter.out.outputs = outputs;
    Ok(converter.out)
}

/// How many times each tensor is read (by nodes and as a graph output).
fn use_counts(graph: &GraphProto) -> HashMap<String, usize> {
    let mut uses = HashMap::new();
    let node_inputs = graph.node.iter().flat_map(|n| n.input.iter());
    let outputs = graph.output.iter().filter_map(|o| o.name.as_ref());
    for name in node_inputs.chain(outputs) {
        *uses.entry(name.clone()).or_insert(0) += 1;
    }
    uses
}

struct Converter {
    constants: HashMap<String, Constant>,
    /// Identity outputs (and the like) to the tensor they stand for.
    aliases: HashMap<String, String>,
    /// `Mul(x, scalar)` outputs: the tensor scaled and the factor, for a residual add.
    scaled: HashMap<String, (String, f32)>,
    ranks: HashMap<String, usize>,
    uses: HashMap<String, usize>,
    out: Layers,
}

/// What a node turned into.
enum Outcome {
    Layer(Kind, Vec<(&'static str, Tensor)>),
    /// A layer on other inputs than the node's own order (a scaled add's term last).
    LayerOn(Kind, Vec<String>),
    /// The output is another name for this tensor.
    Alias(String),
    Constant(Constant),
    Scaled(String, f32),
}

type Converted = Result<Outcome, String>;

impl Converter {
    fn node(&mut self, node: &NodeProto) -> Result<(), String> {
        let op_type = node.op_type.clone().unwrap_or_default();
        let name = node_name(node);
        let Some(output) = node.output.first().cloned() else {
            return Ok(());
        };
        if !(node.domain.as_deref().unwrap_or("").is_empty()
            || node.domain.as_deref() == Some("ai.onnx"))
        {
            self.unsupported(&name, &op_type, "it is not in the standard ONNX domain");
            return Ok(());
        }
        let reads_scaled = self
            .dynamic_inputs(node)
            .iter()
            .any(|i| self.scaled.contains_key(i));
        let outcome = if reads_scaled && op_type != "Add" {
            Err(
                "it reads a Mul by a constant, which cnnc imports only as a residual's scale"
                    .into(),
            )
        } else {
            self.convert(node, &op_type)
        };
        let (kind, weights, inputs) = match outcome {
            Ok(Outcome::Layer(kind, weights)) => (kind, weights, self.dynamic_inputs(node)),
            Ok(Outcome::LayerOn(kind, inputs)) => (kind, Vec::new(), inputs),
            Ok(other) => {
                self.record(other, output);
                return Ok(());
            }
            Err(why) => {
                self.unsupported(&name, &op_type, &why);
                return Ok(());
            }
        };
        let rank = self.output_rank(&kind, &inputs);
        self.ranks.insert(output.clone(), rank);
        self.out.layers.push(Layer {
            path: module_path(&name, &op_type),
            kind,
            inputs,
            output,
            weights,
        });
        Ok(())
    }

    /// Keeps what a node that is not a layer means for the nodes after it.
    fn record(&mut self, outcome: Outcome, output: String) {
        match outcome {
            Outcome::Alias(tensor) => {
                if let Some(&rank) = self.ranks.get(&tensor) {
                    self.ranks.insert(output.clone(), rank);
                }
                self.aliases.insert(output, tensor);
            }
            Outcome::Constant(c) => {
                self.constants.insert(output, c);
            }
            Outcome::Scaled(tensor, factor) => {
                self.scaled.insert(output, (tensor, factor));
            }
            Outcome::Layer(..) | Outcome::LayerOn(..) => {}
        }
    }

    fn unsupported(&mut self, node: &str, op_type: &str, why: &str) {
        self.out.unsupported.push(Unsupported {
            node: node.to_string(),
            op_type: op_type.to_string(),
            why: why.to_string(),
        });
    }

    fn resolve(&self, tensor: &str) -> String {
        let mut name = tensor;
        // Aliases point backwards in a topologically sorted graph, so this ends.
        for _ in 0..self.aliases.len() + 1 {
            match self.aliases.get(name) {
                Some(next) => name = next,
                None => break,
            }
        }
        name.to_string()
    }

    /// The inputs that are activations, not constants or empty optional inputs.
    fn dynamic_inputs(&self, node: &NodeProto) -> Vec<String> {
        node.input
            .iter()
            .filter(|i| !i.is_empty())
            .map(|i| self.resolve(i))
            .filter(|i| !self.constants.contains_key(i))
            .collect()
    }

    fn constant_input(&self, node: &NodeProto, index: usize) -> Option<&Constant> {
        let name = node.input.get(index).filter(|n| !n.is_empty())?;
        self.constants.get(&self.resolve(name))
    }

    fn rank(&self, tensor: &str) -> Option<usize> {
        self.ranks.get(&self.resolve(tensor)).copied()
    }

    /// The rank of the node's first input, if it has one and it is known.
    fn first_rank(&self, node: &NodeProto) -> Option<usize> {
        node.input.first().and_then(|i| self.rank(i))
    }

    fn output_rank(&self, kind: &Kind, inputs: &[String]) -> usize {
        match kind {
            Kind::Flatten | Kind::Dense { .. } => 2,
            _ => inputs.first().and_then(|i| self.rank(i)).unwrap_or(4),
        }
    }

    fn convert(&mut self, node: &NodeProto, op_type: &str) -> Converted {
        let attributes = Attributes(&node.attribute);
        let simple = |kind| Ok(Outcome::Layer(kind, Vec::new()));
        match op_type {
            "Conv" => self.conv(node, &attributes),
            "MaxPool" | "AveragePool" => self.pool(node, &attributes, op_type == "MaxPool"),
            "GlobalAveragePool" => simple(Kind::GlobalPool { max: false }),
            "GlobalMaxPool" => simple(Kind::GlobalPool { max: true }),
            "LRN" => simple(Kind::Lrn {
                size: positive(attributes.int("size"), "size")?,
                alpha: attributes.float("alpha").unwrap_or(1e-4),
                beta: attributes.float("beta").unwrap_or(0.75),
                k: attributes.float("bias").unwrap_or(1.0),
            }),
            "BatchNormalization" => self.batch_norm(node, &attributes),
            "Dropout" => {
                let p = match self.constant_input(node, 1) {
                    Some(ratio) => ratio.scalar().ok_or("its ratio is not a scalar")?,
                    None => attributes.float("ratio").unwrap_or(0.5),
                };
                simple(Kind::Dropout { p })
            }
            "Identity" => Ok(Outcome::Alias(self.single_input(node)?)),
            "Constant" => Ok(Outcome::Constant(constant_node(&attributes)?)),
            "Flatten" => match attributes.int("axis").unwrap_or(1) {
                1 => simple(Kind::Flatten),
                axis => Err(format!(
                    "it flattens from axis {axis}; cnnc flattens from 1"
                )),
            },
            "Reshape" => self.reshape(node),
            "Gemm" => self.gemm(node, &attributes),
            "MatMul" => self.matmul(node),
            "Relu" => simple(Kind::Activation(Activation::Relu)),
            "Tanh" => simple(Kind::Activation(Activation::Tanh)),
            "Sigmoid" => simple(Kind::Activation(Activation::Sigmoid)),
            "LeakyRelu" => simple(Kind::Activation(Activation::LeakyRelu(
                attributes.float("alpha").unwrap_or(0.01),
            ))),
            "Clip" => self.clip(node, &attributes),
            "Softmax" => self.softmax(node, &attributes),
            "Concat" => self.concat(node, &attributes),
            "Add" | "Sum" => self.add(node),
            "Mul" => self.mul(node),
            _ => Err("cnnc has no such layer".into()),
        }
    }

    fn single_input(&self, node: &NodeProto) -> Result<String, String> {
        match self.dynamic_inputs(node).as_slice() {
            [one] => Ok(one.clone()),
            _ => Err("it does not read exactly one activation tensor".into()),
        }
    }

    fn weight(&self, node: &NodeProto, index: usize, what: &str) -> Result<Tensor, String> {
        let c = self
            .constant_input(node, index)
            .ok_or_else(|| format!("its {what} is computed, not a constant"))?;
        let values = c
            .floats()
            .ok_or_else(|| format!("its {what} is not float"))?;
        Tensor::from_shape_vec(c.dims.clone(), values.to_vec()).map_err(|e| e.to_string())
    }

    fn conv(&self, node: &NodeProto, attributes: &Attributes) -> Converted {
        let weight = self.weight(node, 1, "weight")?;
        if weight.ndim() != 4 {
            return Err(format!(
                "it is a {}-D convolution; cnnc has 2-D ones",
                weight.ndim().saturating_sub(2)
            ));
        }
        let shape = weight.shape();
        let kernel = [shape[2] as u64, shape[3] as u64];
        let mut weights = vec![("weight", weight.clone())];
        let bias = node.input.get(2).is_some_and(|b| !b.is_empty());
        if bias {
            weights.push(("bias", self.weight(node, 2, "bias")?));
        }
        let conv = Conv {
            out: shape[0] as u64,
            window: window(attributes, kernel)?,
            groups: positive(Some(attributes.int("group").unwrap_or(1)), "group")?,
            bias,
        };
        Ok(Outcome::Layer(Kind::Conv(conv), weights))
    }

    fn pool(&self, node: &NodeProto, attributes: &Attributes, max: bool) -> Converted {
        if node
            .output
            .get(1)
            .is_some_and(|o| !o.is_empty() && self.used(o))
        {
            return Err("its Indices output is used".into());
        }
        let kernel = pair(attributes.ints("kernel_shape"), "kernel_shape")?
            .ok_or("it has no kernel_shape")?;
        let pool = Pool {
            max,
            window: window(attributes, kernel)?,
            ceil: attributes.int("ceil_mode").unwrap_or(0) != 0,
            // ONNX's default excludes the padding; PyTorch's (and cnnc's) includes it.
            count_include_pad: attributes.int("count_include_pad").unwrap_or(0) != 0,
        };
        Ok(Outcome::Layer(Kind::Pool(pool), Vec::new()))
    }

    fn used(&self, tensor: &str) -> bool {
        self.uses.get(tensor).copied().unwrap_or(0) > 0
    }

    fn batch_norm(&self, node: &NodeProto, attributes: &Attributes) -> Converted {
        if attributes.int("training_mode").unwrap_or(0) != 0
            || node
                .output
                .iter()
                .skip(1)
                .any(|o| !o.is_empty() && self.used(o))
        {
            return Err("it runs in training mode; cnnc imports inference graphs".into());
        }
        let mut weights = Vec::new();
        for (index, suffix) in ["weight", "bias", "running_mean", "running_var"]
            .into_iter()
            .enumerate()
        {
            weights.push((suffix, self.weight(node, index + 1, suffix)?));
        }
        let eps = attributes.float("epsilon").unwrap_or(1e-5);
        Ok(Outcome::Layer(Kind::BatchNorm { eps }, weights))
    }

    /// `Reshape(x, [0, -1])` is torch's `x.view(x.size(0), -1)` with a constant shape.
    fn reshape(&self, node: &NodeProto) -> Converted {
        let shape = self
            .constant_input(node, 1)
            .and_then(Constant::ints)
            .ok_or("its target shape is computed, not a constant")?;
        match shape {
            // [0, -1] keeps the batch and flattens the rest; [-1, features] infers it.
            [0, -1] | [-1, _] => Ok(Outcome::Layer(Kind::Flatten, Vec::new())),
            _ => Err(format!(
                "it reshapes to {shape:?}; only a reshape to [batch, features] is a flatten"
            )),
        }
    }

    fn gemm(&self, node: &NodeProto, attributes: &Attributes) -> Converted {
        if attributes.int("transA").unwrap_or(0) != 0 {
            return Err("it transposes its input (transA=1)".into());
        }
        let alpha = attributes.float("alpha").unwrap_or(1.0);
        let beta = attributes.float("beta").unwrap_or(1.0);
        let mut weight = self.weight(node, 1, "weight")?;
        if weight.ndim() != 2 {
            return Err("its weight is not a matrix".into());
        }
        // cnnc stores dense weights as [out, in], as PyTorch's Linear does.
        if attributes.int("transB").unwrap_or(0) == 0 {
            weight = weight.t().as_standard_layout().into_owned();
        }
        weight.mapv_inplace(|w| w * alpha);
        let units = weight.shape()[0] as u64;
        let mut weights = vec![("weight", weight)];
        let bias = node.input.get(2).is_some_and(|b| !b.is_empty());
        if bias {
            let c = self.weight(node, 2, "bias")?;
            if c.len() != units as usize {
                return Err(format!("its bias has shape {:?}, not [{units}]", c.shape()));
            }
            let c = c
                .into_shape_with_order(vec![units as usize])
                .map_err(|e| e.to_string())?;
            weights.push(("bias", c.mapv(|b| b * beta)));
        }
        Ok(Outcome::Layer(Kind::Dense { units, bias }, weights))
    }

    fn matmul(&self, node: &NodeProto) -> Converted {
        let weight = self.weight(node, 1, "right-hand matrix")?;
        if weight.ndim() != 2 || self.first_rank(node) != Some(2) {
            return Err("it is not a [batch, in] x [in, out] product".into());
        }
        let weight = weight.t().as_standard_layout().into_owned();
        let units = weight.shape()[0] as u64;
        let kind = Kind::Dense { units, bias: false };
        Ok(Outcome::Layer(kind, vec![("weight", weight)]))
    }

    fn clip(&self, node: &NodeProto, attributes: &Attributes) -> Converted {
        let bound = |index: usize, attribute: &str| match self.constant_input(node, index) {
            Some(c) => c.scalar().map(Some).ok_or("its bounds are not scalars"),
            None => Ok(attributes.float(attribute)),
        };
        match (bound(1, "min")?, bound(2, "max")?) {
            (Some(0.0), Some(6.0)) => Ok(Outcome::Layer(
                Kind::Activation(Activation::Relu6),
                Vec::new(),
            )),
            (Some(0.0), None) => Ok(Outcome::Layer(
                Kind::Activation(Activation::Relu),
                Vec::new(),
            )),
            (min, max) => Err(format!(
                "it clips to [{min:?}, {max:?}]; cnnc has relu ([0, inf)) and relu6 ([0, 6])"
            )),
        }
    }

    fn softmax(&self, node: &NodeProto, attributes: &Attributes) -> Converted {
        let rank = self.first_rank(node).unwrap_or(2) as i64;
        match attributes.int("axis") {
            Some(1) => {}
            Some(axis) if axis == -1 && rank == 2 => {}
            // Before opset 13 the default was 1; since, -1: both mean the features of a
            // [batch, features] tensor.
            None if rank == 2 => {}
            other => {
                return Err(format!(
                    "it normalises over axis {other:?} of a rank-{rank} tensor; cnnc's \
                     softmax is over the channels (axis 1)"
                ));
            }
        }
        Ok(Outcome::Layer(Kind::Softmax, Vec::new()))
    }

    fn concat(&self, node: &NodeProto, attributes: &Attributes) -> Converted {
        let rank = self.first_rank(node).unwrap_or(4) as i64;
        let axis = attributes.int("axis").unwrap_or(1);
        if axis != 1 && axis != 1 - rank {
            return Err(format!(
                "it joins along axis {axis}; cnnc joins channels (axis 1)"
            ));
        }
        if self.dynamic_inputs(node).len() != node.input.len() {
            return Err("it joins a constant tensor".into());
        }
        Ok(Outcome::Layer(Kind::Concat, Vec::new()))
    }

    fn add(&mut self, node: &NodeProto) -> Converted {
        let inputs = self.dynamic_inputs(node);
        if inputs.len() == 1 && node.input.len() == 2 {
            return self.bias_add(node, &inputs[0]);
        }
        if inputs.len() != node.input.len() || inputs.len() < 2 {
            return Err("it adds a constant tensor".into());
        }
        let scaled: Vec<usize> = (0..inputs.len())
            .filter(|&i| self.scaled.contains_key(&inputs[i]))
            .collect();
        match scaled.as_slice() {
            [] => Ok(Outcome::Layer(Kind::Add { scale: 1.0 }, Vec::new())),
            [i] if inputs.len() == 2 => {
                let (term, scale) = self.scaled[&inputs[*i]].clone();
                let other = inputs[1 - i].clone();
                Ok(Outcome::LayerOn(Kind::Add { scale }, vec![other, term]))
            }
            _ => Err("it adds several scaled tensors".into()),
        }
    }

    /// `Add(MatMul(x, W), b)`: the bias of the dense layer the MatMul became.
    fn bias_add(&mut self, node: &NodeProto, input: &str) -> Converted {
        let bias = node
            .input
            .iter()
            .find_map(|i| self.constants.get(&self.resolve(i)))
            .and_then(Constant::floats)
            .map(<[f32]>::to_vec)
            .ok_or("it adds a constant that is not float")?;
        let single_use = self.uses.get(input).copied() == Some(1);
        let Some(layer) = self.out.layers.iter_mut().rev().find(|l| l.output == input) else {
            return Err("it adds a constant to a tensor that is not a dense layer's".into());
        };
        match &mut layer.kind {
            Kind::Dense {
                units,
                bias: has_bias,
            } if !*has_bias && single_use && bias.len() == *units as usize => {
                *has_bias = true;
                let n = bias.len();
                layer.weights.push((
                    "bias",
                    Tensor::from_shape_vec(vec![n], bias).map_err(|e| e.to_string())?,
                ));
                Ok(Outcome::Alias(input.to_string()))
            }
            _ => Err("it adds a constant to a tensor that is not a dense layer's".into()),
        }
    }

    /// `Mul(x, scalar)`: the scale of the residual add that reads it.
    fn mul(&self, node: &NodeProto) -> Converted {
        let inputs = self.dynamic_inputs(node);
        let factor = node
            .input
            .iter()
            .find_map(|i| self.constants.get(&self.resolve(i)))
            .and_then(Constant::scalar);
        match (inputs.as_slice(), factor) {
            ([x], Some(f)) if self.uses.get(&node.output[0]).copied() == Some(1) => {
                Ok(Outcome::Scaled(x.clone(), f))
            }
            _ => Err("cnnc imports a Mul only as a residual's scale (a tensor times a scalar, read by one Add)".into()),
        }
    }
}

/// The node's name, or its first output's when it has none.
fn node_name(node: &NodeProto) -> String {
    match node.name.as_deref() {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => node.output.first().cloned().unwrap_or_default(),
    }
}

/// The module path an exporter recorded in a node name. PyTorch writes
/// `/layer1/layer1.0/conv1/Conv`: scopes, each the full dotted path of its module or
/// a step below the previous one, then the op type.
pub fn module_path(name: &str, op_type: &str) -> String {
    if !name.starts_with('/') {
        return name.replace('/', ".");
    }
    let mut parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
    if parts
        .last()
        .is_some_and(|last| last.split('_').next() == Some(op_type))
    {
        parts.pop();
    }
    let mut path = String::new();
    for part in parts {
        if path.is_empty() || part.starts_with(&format!("{path}.")) {
            path = part.to_string();
        } else {
            path = format!("{path}.{part}");
        }
    }
    if path.is_empty() {
        op_type.to_lowercase()
    } else {
        path
    }
}

fn constant_node(attributes: &Attributes) -> Result<Constant, String> {
    if let Some(tensor) = attributes.tensor("value") {
        return constant(tensor);
    }
    if let Some(v) = attributes.float("value_float") {
        return Ok(Constant {
            dims: Vec::new(),
            values: super::model::Values::Float(vec![v]),
        });
    }
    if let Some(v) = attributes.ints("value_ints") {
        return Ok(Constant {
            dims: vec![v.len()],
            values: super::model::Values::Int(v.to_vec()),
        });
    }
    if let Some(v) = attributes.int("value_int") {
        return Ok(Constant {
            dims: Vec::new(),
            values: super::model::Values::Int(vec![v]),
        });
    }
    Err("its value is not a tensor, float or ints".into())
}

fn positive(value: Option<i64>, what: &str) -> Result<u64, String> {
    match value {
        Some(v) if v > 0 => Ok(v as u64),
        Some(v) => Err(format!("its {what} is {v}")),
        None => Err(format!("it has no {what}")),
    }
}

fn pair(values: Option<&[i64]>, what: &str) -> Result<Option<[u64; 2]>, String> {
    match values {
        None => Ok(None),
        Some(&[h, w]) if h > 0 && w > 0 => Ok(Some([h as u64, w as u64])),
        Some(other) => Err(format!("its {what} is {other:?}; cnnc windows are 2-D")),
    }
}

fn window(attributes: &Attributes, kernel: [u64; 2]) -> Result<Window, String> {
    let stride = pair(attributes.ints("strides"), "strides")?.unwrap_or([1, 1]);
    let dilation = pair(attributes.ints("dilations"), "dilations")?.unwrap_or([1, 1]);
    let auto_pad = attributes.string("auto_pad").unwrap_or_default();
    let pads = match auto_pad.as_str() {
        "SAME_UPPER" => None,
        "VALID" => Some([0; 4]),
        "" | "NOTSET" => match attributes.ints("pads") {
            None => Some([0; 4]),
            Some(&[t, l, b, r]) if [t, l, b, r].iter().all(|&p| p >= 0) => {
                Some([t as u64, l as u64, b as u64, r as u64])
            }
            Some(other) => return Err(format!("its pads are {other:?}")),
        },
        other => {
            return Err(format!(
                "its auto_pad is {other}; cnnc's `same` pads at the end (SAME_UPPER)"
            ));
        }
    };
    Ok(Window {
        kernel,
        stride,
        dilation,
        pads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pytorch_node_names_give_module_paths() {
        for (name, op, path) in [
            ("/layer1/layer1.0/conv1/Conv", "Conv", "layer1.0.conv1"),
            ("/layer1/layer1.0/relu_1/Relu", "Relu", "layer1.0.relu_1"),
            ("/layer1/layer1.0/Add", "Add", "layer1.0"),
            ("/features/features.0/Conv", "Conv", "features.0"),
            ("/Flatten", "Flatten", "flatten"),
            ("layer1.0.conv1", "Conv", "layer1.0.conv1"),
            ("conv1/7x7_s2", "Conv", "conv1.7x7_s2"),
        ] {
            assert_eq!(module_path(name, op), path, "{name}");
        }
    }

    #[test]
    fn windows_read_onnx_padding_conventions() {
        let attribute = |name: &str, ints: Vec<i64>| AttributeProto {
            name: Some(name.into()),
            ints,
            ..Default::default()
        };
        let explicit = [
            attribute("pads", vec![1, 2, 3, 4]),
            attribute("strides", vec![2, 1]),
        ];
        let explicit = window(&Attributes(&explicit), [3, 3]).expect("valid");
        assert_eq!(explicit.pads, Some([1, 2, 3, 4]));
        assert_eq!(explicit.stride, [2, 1]);
        let same = [AttributeProto {
            name: Some("auto_pad".into()),
            s: Some(b"SAME_UPPER".to_vec()),
            ..Default::default()
        }];
        assert_eq!(
            window(&Attributes(&same), [3, 3]).expect("valid").pads,
            None
        );
        let lower = [AttributeProto {
            name: Some("auto_pad".into()),
            s: Some(b"SAME_LOWER".to_vec()),
            ..Default::default()
        }];
        assert!(window(&Attributes(&lower), [3, 3]).is_err());
        let three_d = [attribute("strides", vec![1, 1, 1])];
        assert!(window(&Attributes(&three_d), [3, 3]).is_err());
    }
}
