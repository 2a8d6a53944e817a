#!/usr/bin/env python3
"""Writes the ONNX models that test `cnnc import` (tests/onnx/*.onnx), built with onnx's
helpers in the forms real exporters produce, with ONNX Runtime's output for a seeded
input (`<name>.input.npy`, `<name>.expected.npy`).

    pip install numpy onnx onnxruntime
    python3 tools/make_onnx_fixtures.py

- torch_style: PyTorch's node names (`/layer1/layer1.0/conv1/Conv`), Conv + separate
  BatchNormalization, a residual Add(main, identity) and one with a downsample, a
  Constant-shaped Reshape to 2-D, Identity, Dropout and Gemm.
- dense_ops: MatMul + Add (a dense layer), Gemm with transB=0 and alpha, Clip as relu6,
  LeakyRelu, Sigmoid, Softmax on axis -1, AveragePool without count_include_pad.
- densenet: a graph that is not nested branches and joins (each layer reads all the
  earlier ones), which needs named tensors.
- unsupported: three nodes cnnc has no layer for; the import lists all three.
"""
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "onnx")
rng = np.random.default_rng(7)


def weight(name, *shape, scale=0.3):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def positive(name, *shape):
    return numpy_helper.from_array(rng.uniform(0.5, 1.5, shape).astype(np.float32), name)


def save(name, nodes, inputs, outputs, initializers, input_shape):
    graph = helper.make_graph(nodes, "main_graph", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="make_onnx_fixtures.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = os.path.join(OUT, f"{name}.onnx")
    onnx.save(model, path)
    if name == "unsupported":
        return
    x = rng.standard_normal(input_shape).astype(np.float32)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {inputs[0].name: x})
    np.save(os.path.join(OUT, f"{name}.input.npy"), x)
    np.save(os.path.join(OUT, f"{name}.expected.npy"), y)
    print(f"wrote {path}: output {y.shape}")


def conv_bn(prefix, module, x, cin, cout, stride=1, out=None):
    """Conv + BatchNormalization named as PyTorch names them."""
    conv_out, out = f"{prefix}_conv", out or f"{prefix}_bn"
    nodes = [
        helper.make_node("Conv", [x, f"{module}.weight"], [conv_out], name=f"/{module.replace('.', '/')}/Conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride]),
        helper.make_node("BatchNormalization", [conv_out, f"{module}_bn.weight", f"{module}_bn.bias",
                                                f"{module}_bn.running_mean", f"{module}_bn.running_var"],
                         [out], name=f"/{module.replace('.', '/')}_bn/BatchNormalization", epsilon=1e-5),
    ]
    inits = [weight(f"{module}.weight", cout, cin, 3, 3), weight(f"{module}_bn.weight", cout),
             weight(f"{module}_bn.bias", cout), weight(f"{module}_bn.running_mean", cout),
             positive(f"{module}_bn.running_var", cout)]
    return nodes, inits


def torch_style():
    nodes, inits = conv_bn("stem", "conv1", "input", 3, 8)
    nodes.append(helper.make_node("Relu", ["stem_bn"], ["stem_relu"], name="/relu/Relu"))
    x = "stem_relu"
    for block, (cin, cout, stride) in enumerate([(8, 8, 1), (8, 16, 2)]):
        m = f"layer1.{block}"
        path = f"layer1/layer1.{block}"
        n1, i1 = conv_bn(f"b{block}a", f"{m}.conv1", x, cin, cout, stride)
        n1[0].name = f"/{path}/conv1/Conv"
        n2, i2 = conv_bn(f"b{block}b", f"{m}.conv2", f"b{block}a_relu", cout, cout)
        n2[0].name = f"/{path}/conv2/Conv"
        nodes += n1 + [helper.make_node("Relu", [f"b{block}a_bn"], [f"b{block}a_relu"], name=f"/{path}/relu/Relu")]
        nodes += n2
        inits += i1 + i2
        shortcut = x
        if stride != 1:
            nodes.append(helper.make_node("Conv", [x, f"{m}.downsample.0.weight"], [f"b{block}_down"],
                                          name=f"/{path}/downsample/downsample.0/Conv", kernel_shape=[1, 1],
                                          strides=[2, 2]))
            inits.append(weight(f"{m}.downsample.0.weight", cout, cin, 1, 1))
            shortcut = f"b{block}_down"
        nodes.append(helper.make_node("Add", [f"b{block}b_bn", shortcut], [f"b{block}_sum"], name=f"/{path}/Add"))
        nodes.append(helper.make_node("Relu", [f"b{block}_sum"], [f"b{block}_out"], name=f"/{path}/relu_1/Relu"))
        x = f"b{block}_out"
    nodes += [
        helper.make_node("MaxPool", [x], ["pooled"], name="/maxpool/MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Constant", [], ["shape"], name="/Constant",
                         value=numpy_helper.from_array(np.array([0, -1], dtype=np.int64))),
        helper.make_node("Reshape", ["pooled", "shape"], ["flat"], name="/Reshape"),
        helper.make_node("Identity", ["flat"], ["flat_id"], name="/Identity"),
        helper.make_node("Dropout", ["flat_id"], ["dropped"], name="/dropout/Dropout"),
        helper.make_node("Gemm", ["dropped", "fc.weight", "fc.bias"], ["logits"], name="/fc/Gemm", transB=1),
    ]
    inits += [weight("fc.weight", 10, 16 * 2 * 2), weight("fc.bias", 10)]
    save("torch_style", nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
         [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits, (2, 3, 8, 8))


def dense_ops():
    nodes = [
        helper.make_node("AveragePool", ["x"], ["pool"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1),
        helper.make_node("MatMul", ["flat", "w1"], ["mm"], name="fc1"),
        helper.make_node("Add", ["mm", "b1"], ["fc1_out"], name="fc1_bias"),
        helper.make_node("Clip", ["fc1_out", "zero", "six"], ["r6"], name="relu6"),
        helper.make_node("Gemm", ["r6", "w2", "b2"], ["fc2_out"], name="fc2", alpha=0.5, beta=2.0),
        helper.make_node("LeakyRelu", ["fc2_out"], ["leaky"], name="leaky", alpha=0.2),
        helper.make_node("Gemm", ["leaky", "w3"], ["fc3_out"], name="fc3", transB=1),
        helper.make_node("Sigmoid", ["fc3_out"], ["sig"], name="sigmoid"),
        helper.make_node("Softmax", ["sig"], ["probs"], name="softmax", axis=-1),
    ]
    inits = [weight("w1", 2 * 3 * 3, 12), weight("b1", 12), numpy_helper.from_array(np.array(0, np.float32), "zero"),
             numpy_helper.from_array(np.array(6, np.float32), "six"), weight("w2", 12, 7), weight("b2", 7),
             weight("w3", 5, 7)]
    save("dense_ops", nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
         [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 5])], inits, (3, 2, 6, 6))


def densenet():
    nodes, inits, features, channels = [], [], ["data"], 4
    for i in range(3):
        joined = features[0] if len(features) == 1 else f"cat{i}"
        if len(features) > 1:
            nodes.append(helper.make_node("Concat", list(features), [joined], name=f"dense{i}/concat", axis=1))
        nodes.append(helper.make_node("Conv", [joined, f"dense{i}.conv.weight"], [f"conv{i}"],
                                      name=f"dense{i}/conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], name=f"dense{i}/relu"))
        inits.append(weight(f"dense{i}.conv.weight", 4, channels, 3, 3))
        features.append(f"relu{i}")
        channels += 4
    nodes.append(helper.make_node("Concat", list(features), ["out"], name="final/concat", axis=1))
    save("densenet", nodes, [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 4, 5, 5])],
         [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 16, 5, 5])], inits, (1, 4, 5, 5))


def unsupported():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[1, 1]),
        helper.make_node("Resize", ["c", "", "scales"], ["up"], name="upsample", mode="nearest"),
        helper.make_node("Sub", ["up", "mean"], ["centered"], name="center"),
        helper.make_node("Pad", ["centered", "pads"], ["padded"], name="pad"),
        helper.make_node("Relu", ["padded"], ["y"], name="relu"),
    ]
    inits = [weight("w", 2, 2, 1, 1), numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
             weight("mean", 1), numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")]
    save("unsupported", nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 4])],
         [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 10, 10])], inits, None)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch_style()
    dense_ops()
    densenet()
    unsupported()
