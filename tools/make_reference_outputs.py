#!/usr/bin/env python3
"""Generate the reference fixtures in tests/reference/ for cnnc's runtime.

For every case below the script

  * writes `net.cnn`, a small network in cnnc's language (written by hand here),
  * draws seeded weights and a seeded input (batch 2),
  * builds the equivalent ONNX graph with onnx.helper and runs it in ONNX Runtime
    (CPU, graph optimisations off, one thread),
  * writes `weights.safetensors` (float32, keys `<layer name>.weight|bias|running_mean|
    running_var`), `input.npy` and `expected.npy` (float32).

Every layer is also run on its own, one node at a time, as the graph is built; that gives
each layer's output shape, which is compared with `cnnc summary --format json` layer by
layer (name, output shape, parameter count), so the ONNX graph and net.cnn cannot drift
apart. For the whole-network ONNX model the layer-by-layer result must agree with the
one-session run.

A few layers have no ONNX equivalent, or ONNX Runtime does not implement PyTorch's
semantics; those layers are computed with numpy instead and are marked NUMPY below and
in tests/reference/README.md:

  * adaptiveavgpool / adaptivemaxpool: no ONNX op (PyTorch's AdaptiveAvgPool2d windows).
  * lrn with an even size: ONNX Runtime refuses even sizes (and the ONNX spec centres the
    window differently from PyTorch for even sizes); PyTorch's formula is used.

Pooling and LRN layers are always computed both ways (ONNX Runtime and a numpy transcription
of PyTorch's CPU kernels); the script stops if the two disagree anywhere, so every pooling
fixture is PyTorch-exact as well as ONNX-Runtime-exact.

Usage (from the repository root):

    pip install numpy onnx onnxruntime safetensors
    python3 tools/make_reference_outputs.py            # all cases, checked against cnnc
    python3 tools/make_reference_outputs.py conv_basic # some cases
    python3 tools/make_reference_outputs.py --no-cnnc  # skip the `cnnc summary` check

torch is deliberately not used.
"""

import argparse
import json
import shutil
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import safetensors
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "tests" / "reference"
OPSET = 17
IR_VERSION = 8
BATCH = 2
F32 = np.float32

# Tolerance the runtime's tests should use (also written to README.md).
TOLERANCE = "max |actual - expected| <= 1e-4 * max(1, max |expected|)"


# ---------------------------------------------------------------------------------------
# ONNX Runtime helpers
# ---------------------------------------------------------------------------------------

def _session_options():
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # the pooling shape warnings below are expected
    return so


def make_model(nodes, inputs, outputs, initializers, name="g"):
    """inputs: {name: array} (graph inputs); outputs: {name: rank} (shapes left symbolic,
    so that ONNX shape inference cannot impose its own idea of a pooling size);
    initializers: {name: array}."""
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [f"{o}_d{i}" for i in range(r)])
         for o, r in outputs.items()],
        [numpy_helper.from_array(np.ascontiguousarray(v), k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="tools/make_reference_outputs.py")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def run_model(model, inputs):
    sess = ort.InferenceSession(model.SerializeToString(), _session_options(),
                                providers=["CPUExecutionProvider"])
    outputs = [o.name for o in model.graph.output]
    return [np.asarray(r, dtype=F32) for r in sess.run(outputs, inputs)]


def ort_run(nodes, inputs, outputs, initializers):
    """Run nodes; outputs: {name: rank}."""
    return run_model(make_model(nodes, inputs, outputs, initializers), inputs)


# ---------------------------------------------------------------------------------------
# numpy transcriptions of PyTorch's semantics (used as cross-checks, and as the reference
# where ONNX has no equivalent)
# ---------------------------------------------------------------------------------------

def pool_out_size(n, k, s, pb, pe, d, ceil):
    """PyTorch's pooling_output_shape, generalised to begin/end padding."""
    num = n + pb + pe - d * (k - 1) - 1
    out = (-(-num // s) if ceil else num // s) + 1
    if ceil and (out - 1) * s >= n + pb:  # the last window would start in the end padding
        out -= 1
    return out


def torch_maxpool(x, k, s, pads, d, ceil):
    (kh, kw), (sh, sw), (t, l, b, r), (dh, dw) = k, s, pads, d
    n, c, h, w = x.shape
    oh = pool_out_size(h, kh, sh, t, b, dh, ceil)
    ow = pool_out_size(w, kw, sw, l, r, dw, ceil)
    y = np.empty((n, c, oh, ow), F32)
    for i in range(oh):
        rows = [i * sh - t + a * dh for a in range(kh)]
        rows = [q for q in rows if 0 <= q < h]
        for j in range(ow):
            cols = [j * sw - l + a * dw for a in range(kw)]
            cols = [q for q in cols if 0 <= q < w]
            y[:, :, i, j] = x[:, :, rows][:, :, :, cols].max(axis=(2, 3))
    return y


def torch_avgpool(x, k, s, pads, ceil, count_include_pad):
    """PyTorch's avg_pool2d CPU kernel: the divisor with count_include_pad counts the
    padding but not the part of a ceil-mode window beyond the end padding."""
    (kh, kw), (sh, sw), (t, l, b, r) = k, s, pads
    n, c, h, w = x.shape
    oh = pool_out_size(h, kh, sh, t, b, 1, ceil)
    ow = pool_out_size(w, kw, sw, l, r, 1, ceil)
    y = np.empty((n, c, oh, ow), F32)
    x64 = x.astype(np.float64)
    for i in range(oh):
        hs = i * sh - t
        he = min(hs + kh, h + b)
        ph = he - hs
        hs, he = max(hs, 0), min(he, h)
        for j in range(ow):
            ws = j * sw - l
            we = min(ws + kw, w + r)
            pw = we - ws
            ws, we = max(ws, 0), min(we, w)
            div = ph * pw if count_include_pad else (he - hs) * (we - ws)
            y[:, :, i, j] = x64[:, :, hs:he, ws:we].sum(axis=(2, 3)) / div
    return y


def torch_lrn(x, size, alpha, beta, k):
    """torch.nn.functional.local_response_norm: window of `size` channels from
    c - size//2 to c + (size-1)//2, zero padded, alpha divided by size."""
    c = x.shape[1]
    sq = np.pad(x.astype(np.float64) ** 2,
                [(0, 0), (size // 2, (size - 1) // 2)] + [(0, 0)] * (x.ndim - 2))
    window = sum(sq[:, i:i + c] for i in range(size))
    return (x / (k + alpha / size * window) ** beta).astype(F32)


def adaptive_windows(n, out):
    """PyTorch's AdaptiveAvgPool2d windows: [floor(i*n/out), ceil((i+1)*n/out))."""
    return [((i * n) // out, -(-((i + 1) * n) // out)) for i in range(out)]


def torch_adaptive_pool(x, size, reduce):
    n, c, h, w = x.shape
    oh, ow = size
    y = np.empty((n, c, oh, ow), F32)
    for i, (hs, he) in enumerate(adaptive_windows(h, oh)):
        for j, (ws, we) in enumerate(adaptive_windows(w, ow)):
            y[:, :, i, j] = reduce(x[:, :, hs:he, ws:we].astype(np.float64), axis=(2, 3))
    return y


def assert_close(name, got, want, what):
    if got.shape != want.shape:
        raise SystemExit(f"{name}: {what}: shape {got.shape} != {want.shape}")
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    scale = max(1.0, float(np.max(np.abs(want))) if want.size else 0.0)
    if err > 1e-5 * scale:
        raise SystemExit(f"{name}: {what}: max abs error {err:.3g} (scale {scale:.3g})")


# ---------------------------------------------------------------------------------------
# The network builder: records the ONNX graph and evaluates it layer by layer
# ---------------------------------------------------------------------------------------

def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def explicit_pads(pad, hw, kernel, stride, dilation):
    """cnnc's pad forms -> ONNX pads [top, left, bottom, right]."""
    if pad == "valid":
        return [0, 0, 0, 0]
    if pad == "same":  # ONNX SAME_UPPER: output = ceil(in / stride), extra padding at the end
        begin, end = [], []
        for n, k, s, d in zip(hw, kernel, stride, dilation):
            out = -(-n // s)
            total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
            begin.append(total // 2)
            end.append(total - total // 2)
        return begin + end
    if isinstance(pad, int):
        return [pad] * 4
    if len(pad) == 2:  # HxW, per axis
        return [pad[0], pad[1], pad[0], pad[1]]
    assert len(pad) == 4
    return list(pad)  # [top, left, bottom, right], ONNX order


class Net:
    def __init__(self, case, input_shape, input_scale):
        self.case = case
        self.rng = np.random.default_rng(zlib.crc32(case.encode()))
        x = (self.rng.standard_normal((BATCH,) + tuple(input_shape)) * input_scale).astype(F32)
        self.input = x
        self.values = {"input": x}       # every tensor's value (layer-by-layer evaluation)
        self.nodes = []                  # the whole-network ONNX graph
        self.consts = {}                 # its initializers (weights and constants)
        self.weights = {}                # what goes to weights.safetensors
        self.layers = []                 # (name, output shape without batch, params)
        self.numpy_layers = []           # (name, why)
        self.cur = "input"

    # -- plumbing ------------------------------------------------------------------------

    def shape(self, t):
        return self.values[t].shape[1:]

    def _w(self, name, shape, kind):
        if kind == "normal":
            v = self.rng.normal(0.0, 0.3, shape)
        elif kind == "gamma":
            v = self.rng.uniform(0.5, 1.5, shape)
        elif kind == "var":
            v = self.rng.uniform(0.05, 2.0, shape)  # small ones make eps matter
        else:
            raise ValueError(kind)
        v = v.astype(F32)
        self.weights[name] = v
        self.consts[name] = v
        return name

    def _const(self, name, value):
        self.consts[name] = np.asarray(value, dtype=F32)
        return name

    def _emit(self, name, nodes, params=0):
        """Run `nodes` (whose last output is `name`) in ONNX Runtime, record the layer."""
        produced = {o for nd in nodes for o in nd.output}
        feeds, inits = {}, {}
        for nd in nodes:
            for i in nd.input:
                if i in produced or not i:
                    continue
                if i in self.consts:
                    inits[i] = self.consts[i]
                else:
                    feeds[i] = self.values[i]
        first = self.values[nodes[0].input[0]]
        rank = 2 if nodes[-1].op_type in ("Flatten", "Gemm") else first.ndim
        (y,) = ort_run(nodes, feeds, {name: rank}, inits)
        self.nodes += nodes
        return self._record(name, y, params)

    def _record(self, name, y, params=0):
        assert name not in self.values, name
        self.values[name] = y
        self.layers.append((name, tuple(y.shape[1:]), params))
        self.cur = name
        return name

    def _numpy(self, name, y, why):
        self.numpy_layers.append((name, why))
        return self._record(name, y)

    def _x(self, x):
        return self.cur if x is None else x

    def from_(self, tensor):  # `from name`; `-> name` needs nothing (tensors are layer names)
        self.cur = tensor
        return tensor

    # -- layers --------------------------------------------------------------------------

    def conv(self, name, out, kernel, stride=1, pad=0, dilation=1, groups=1, bias=True, x=None):
        x = self._x(x)
        c, h, w = self.shape(x)
        k, s, d = pair(kernel), pair(stride), pair(dilation)
        pads = explicit_pads(pad, (h, w), k, s, d)
        inputs = [x, self._w(f"{name}.weight", (out, c // groups) + k, "normal")]
        if bias:
            inputs.append(self._w(f"{name}.bias", (out,), "normal"))
        attrs = dict(kernel_shape=list(k), strides=list(s), dilations=list(d), group=groups)
        node = helper.make_node("Conv", inputs, [name], pads=pads, **attrs)
        params = sum(self.weights[i].size for i in inputs[1:])
        y = self._emit(name, [node], params)
        if pad == "same" and d == (1, 1):
            # cross-check the explicit pads against ONNX's own SAME_UPPER (which ONNX Runtime
            # implements only without dilation: "Dilation not supported for SAME_UPPER")
            auto = helper.make_node("Conv", inputs, ["auto"], auto_pad="SAME_UPPER", **attrs)
            (ya,) = ort_run([auto], {x: self.values[x]}, {"auto": 4},
                            {i: self.consts[i] for i in inputs[1:]})
            assert_close(name, self.values[name], ya, "explicit pads vs auto_pad=SAME_UPPER")
        return y

    def dense(self, name, units, bias=True, x=None):
        x = self._x(x)
        (f,) = self.shape(x)
        inputs = [x, self._w(f"{name}.weight", (units, f), "normal")]
        if bias:
            inputs.append(self._w(f"{name}.bias", (units,), "normal"))
        node = helper.make_node("Gemm", inputs, [name], transB=1)
        return self._emit(name, [node], sum(self.weights[i].size for i in inputs[1:]))

    def bn(self, name, eps=1e-5, x=None):
        x = self._x(x)
        c = self.shape(x)[0]
        inputs = [x,
                  self._w(f"{name}.weight", (c,), "gamma"),
                  self._w(f"{name}.bias", (c,), "normal"),
                  self._w(f"{name}.running_mean", (c,), "normal"),
                  self._w(f"{name}.running_var", (c,), "var")]
        node = helper.make_node("BatchNormalization", inputs, [name], epsilon=eps)
        return self._emit(name, [node], 2 * c)  # cnnc counts gamma and beta

    def maxpool(self, name, kernel, stride=None, pad=0, dilation=1, ceil=False, x=None):
        x = self._x(x)
        k = pair(kernel)
        s = k if stride is None else pair(stride)
        d = pair(dilation)
        pads = explicit_pads(pad, self.shape(x)[1:], k, s, d)
        node = helper.make_node("MaxPool", [x], [name], kernel_shape=list(k), strides=list(s),
                                pads=pads, dilations=list(d), ceil_mode=int(ceil))
        y = self._emit(name, [node])
        assert_close(name, self.values[y], torch_maxpool(self.values[x], k, s, pads, d, ceil),
                     "ONNX Runtime MaxPool vs PyTorch's max_pool2d (numpy)")
        return y

    def avgpool(self, name, kernel, stride=None, pad=0, ceil=False, count_include_pad=True, x=None):
        x = self._x(x)
        k = pair(kernel)
        s = k if stride is None else pair(stride)
        pads = explicit_pads(pad, self.shape(x)[1:], k, s, (1, 1))
        node = helper.make_node("AveragePool", [x], [name], kernel_shape=list(k), strides=list(s),
                                pads=pads, ceil_mode=int(ceil),
                                count_include_pad=int(count_include_pad))
        y = self._emit(name, [node])
        assert_close(name, self.values[y],
                     torch_avgpool(self.values[x], k, s, pads, ceil, count_include_pad),
                     "ONNX Runtime AveragePool vs PyTorch's avg_pool2d (numpy)")
        return y

    def globalavgpool(self, name, x=None):
        return self._emit(name, [helper.make_node("GlobalAveragePool", [self._x(x)], [name])])

    def globalmaxpool(self, name, x=None):
        return self._emit(name, [helper.make_node("GlobalMaxPool", [self._x(x)], [name])])

    def adaptiveavgpool(self, name, size, x=None):
        # NUMPY: ONNX has no adaptive pooling op.
        y = torch_adaptive_pool(self.values[self._x(x)], pair(size), np.mean)
        return self._numpy(name, y, "no ONNX op; PyTorch AdaptiveAvgPool2d windows in numpy")

    def adaptivemaxpool(self, name, size, x=None):
        # NUMPY: ONNX has no adaptive pooling op.
        y = torch_adaptive_pool(self.values[self._x(x)], pair(size), np.max)
        return self._numpy(name, y, "no ONNX op; PyTorch AdaptiveMaxPool2d windows in numpy")

    def lrn(self, name, size=5, alpha=1e-4, beta=0.75, k=1.0, alpha_scaled=True, x=None):
        x = self._x(x)
        a = alpha if alpha_scaled else alpha * size  # paper form: alpha not divided by size
        ref = torch_lrn(self.values[x], size, a, beta, k)
        if size % 2 == 0:
            # NUMPY: ONNX Runtime rejects even sizes (and ONNX's spec puts the extra channel
            # of an even window after c, PyTorch before c); PyTorch's formula is used.
            return self._numpy(name, ref, "even size: ONNX Runtime rejects it, ONNX's window "
                                          "differs from PyTorch's; PyTorch's formula in numpy")
        node = helper.make_node("LRN", [x], [name], size=size, alpha=a, beta=beta, bias=k)
        y = self._emit(name, [node])
        assert_close(name, self.values[y], ref, "ONNX Runtime LRN vs PyTorch's formula (numpy)")
        return y

    def flatten(self, name, x=None):
        return self._emit(name, [helper.make_node("Flatten", [self._x(x)], [name], axis=1)])

    def dropout(self, name, x=None):  # inference: identity
        return self._emit(name, [helper.make_node("Dropout", [self._x(x)], [name])])

    def identity(self, name, x=None):
        return self._emit(name, [helper.make_node("Identity", [self._x(x)], [name])])

    def relu(self, name, x=None):
        return self._emit(name, [helper.make_node("Relu", [self._x(x)], [name])])

    def relu6(self, name, x=None):
        lo, hi = self._const(f"{name}::min", 0.0), self._const(f"{name}::max", 6.0)
        return self._emit(name, [helper.make_node("Clip", [self._x(x), lo, hi], [name])])

    def leakyrelu(self, name, slope=0.01, x=None):
        return self._emit(name, [helper.make_node("LeakyRelu", [self._x(x)], [name], alpha=slope)])

    def tanh(self, name, x=None):
        return self._emit(name, [helper.make_node("Tanh", [self._x(x)], [name])])

    def sigmoid(self, name, x=None):
        return self._emit(name, [helper.make_node("Sigmoid", [self._x(x)], [name])])

    def softmax(self, name, x=None):  # over the channels (opset >= 13: that axis only)
        return self._emit(name, [helper.make_node("Softmax", [self._x(x)], [name], axis=1)])

    def concat(self, name, *xs):
        return self._emit(name, [helper.make_node("Concat", list(xs), [name], axis=1)])

    def add(self, name, *xs):
        op = "Add" if len(xs) == 2 else "Sum"
        return self._emit(name, [helper.make_node(op, list(xs), [name])])

    def residual(self, name, shortcut, main, scale=1.0):
        """cnnc's residual join: shortcut + scale * main."""
        if scale == 1.0:
            return self.add(name, shortcut, main)
        c = self._const(f"{name}::scale", scale)
        nodes = [helper.make_node("Mul", [main, c], [f"{name}::scaled"]),
                 helper.make_node("Add", [shortcut, f"{name}::scaled"], [name])]
        return self._emit(name, nodes)

    # -- whole network -------------------------------------------------------------------

    def whole_model(self):
        used = {i for nd in self.nodes for i in nd.input}
        return make_model(self.nodes, {"input": self.input}, {self.cur: self.values[self.cur].ndim},
                          {k: v for k, v in self.consts.items() if k in used}, name=self.case)

    def expected(self):
        """The output: the whole ONNX model in one session when every layer is ONNX,
        otherwise the layer-by-layer values (ONNX Runtime per node, numpy where marked)."""
        step = self.values[self.cur]
        if self.numpy_layers:
            return step
        (y,) = run_model(self.whole_model(), {"input": self.input})
        assert_close(self.case, step, y, "layer-by-layer vs whole-model run")
        return y


# ---------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------

CASES = {}


def case(name, input_shape, cnn, about, input_scale=1.0):
    def register(build):
        CASES[name] = dict(input_shape=input_shape, cnn=textwrap.dedent(cnn).strip() + "\n",
                           about=about, input_scale=input_scale, build=build)
        return build
    return register


@case("conv_basic", (3, 9, 11), """
    network ConvBasic(input: 3x9x11) {
        conv c1(5, 3x3, stride=2, pad=1)
    }
""", "conv with bias, stride 2, pad 1")
def _(n):
    n.conv("c1", 5, 3, stride=2, pad=1)


@case("conv_groups", (6, 7, 8), """
    network ConvGroups(input: 6x7x8) {
        conv c1(9, 3x3, pad=1, groups=3)
        conv c2(9, 3x3, groups=9)      // depthwise
    }
""", "grouped conv (groups=3, 6->9 channels), then a depthwise conv (groups=9)")
def _(n):
    n.conv("c1", 9, 3, pad=1, groups=3)
    n.conv("c2", 9, 3, groups=9)


@case("conv_dilation", (3, 11, 10), """
    network ConvDilation(input: 3x11x10) {
        conv c1(4, 3x3, pad=2, dilation=2)
        conv c2(4, 3x3, dilation=2x1)
    }
""", "dilation 2 with pad 2; dilation 2x1 (per axis)")
def _(n):
    n.conv("c1", 4, 3, pad=2, dilation=2)
    n.conv("c2", 4, 3, dilation=(2, 1))


@case("conv_asymmetric_pad", (2, 6, 7), """
    network ConvAsymmetricPad(input: 2x6x7) {
        conv c1(3, 3x3, pad=[1, 0, 2, 1])
        conv c2(4, 3x3, stride=2, pad=[0, 2, 2, 1])
    }
""", "pad=[top, left, bottom, right] (ONNX order), with stride 1 and 2")
def _(n):
    n.conv("c1", 3, 3, pad=[1, 0, 2, 1])
    n.conv("c2", 4, 3, stride=2, pad=[0, 2, 2, 1])


@case("conv_1x7_7x1", (4, 8, 9), """
    network Conv1x7_7x1(input: 4x8x9) {
        conv a(5, 1x7, pad=0x3) relu
        conv b(6, 7x1, pad=3x0)
    }
""", "Inception-v3 style 1x7 / 7x1 pair with per-axis padding 0x3 and 3x0")
def _(n):
    n.conv("a", 5, (1, 7), pad=(0, 3))
    n.relu("relu1")
    n.conv("b", 6, (7, 1), pad=(3, 0))


@case("conv_same", (3, 9, 10), """
    network ConvSame(input: 3x9x10) {
        conv c1(4, 4x3, stride=2, pad=same)             // pads [1, 0, 2, 1]
        conv c2(5, 3x3, pad=same)                       // pads [1, 1, 1, 1]
        conv c3(3, 2x3, dilation=[1, 2], pad=same)      // pads [0, 2, 1, 2]
    }
""", "pad=same (SAME_UPPER) with stride 2 and an even kernel (asymmetric), stride 1, dilation")
def _(n):
    n.conv("c1", 4, (4, 3), stride=2, pad="same")
    n.conv("c2", 5, 3, pad="same")
    n.conv("c3", 3, (2, 3), dilation=(1, 2), pad="same")


@case("conv_nobias", (3, 8, 8), """
    network ConvNoBias(input: 3x8x8) {
        conv c1(4, 3x3, bias=false) relu
        conv c2(2, 1x1, bias=false)
    }
""", "bias=false: no .bias tensors in the weights")
def _(n):
    n.conv("c1", 4, 3, bias=False)
    n.relu("relu1")
    n.conv("c2", 2, 1, bias=False)


@case("maxpool_ceil", (3, 8, 10), """
    network MaxPoolCeil(input: 3x8x10) {
        maxpool p1(3x3, stride=2, ceil=true)
    }
""", "3x3 stride 2 ceil=true, no padding, even sizes: the last window hangs over the edge")
def _(n):
    n.maxpool("p1", 3, 2, ceil=True)


@case("maxpool_ceil_pad", (3, 8, 10), """
    network MaxPoolCeilPad(input: 3x8x10) {
        maxpool p1(3x3, stride=2, pad=1, ceil=true)
    }
""", "3x3 stride 2 pad 1 ceil=true on even sizes")
def _(n):
    n.maxpool("p1", 3, 2, pad=1, ceil=True)


@case("maxpool_ceil_drop", (2, 5, 7), """
    network MaxPoolCeilDrop(input: 2x5x7) {
        maxpool p1(2x2, stride=2, pad=1, ceil=true)     // 5x7 -> 3x4, not 4x5
    }
""", "ceil=true where the last window would start in the end padding and is dropped "
     "(PyTorch's rule; ONNX shape inference says 4x5, ONNX Runtime computes 3x4)")
def _(n):
    n.maxpool("p1", 2, 2, pad=1, ceil=True)


@case("maxpool_dilation", (2, 9, 10), """
    network MaxPoolDilation(input: 2x9x10) {
        maxpool p1(3x3, stride=1, pad=1, dilation=2)
        maxpool p2(2x2, stride=2, dilation=2, ceil=true)
    }
""", "dilated max pooling, with padding, and with ceil=true")
def _(n):
    n.maxpool("p1", 3, 1, pad=1, dilation=2)
    n.maxpool("p2", 2, 2, dilation=2, ceil=True)


@case("avgpool_count_include_pad", (3, 7, 8), """
    network AvgPoolIncludePad(input: 3x7x8) {
        avgpool p1(3x3, stride=2, pad=1)                // count_include_pad=true (default)
    }
""", "avgpool pad 1, count_include_pad=true (the default): border windows divide by 9")
def _(n):
    n.avgpool("p1", 3, 2, pad=1)


@case("avgpool_count_exclude_pad", (3, 7, 8), """
    network AvgPoolExcludePad(input: 3x7x8) {
        avgpool p1(3x3, stride=2, pad=1, count_include_pad=false)
    }
""", "avgpool pad 1, count_include_pad=false: border windows divide by the real elements")
def _(n):
    n.avgpool("p1", 3, 2, pad=1, count_include_pad=False)


@case("avgpool_ceil", (2, 8, 9), """
    network AvgPoolCeil(input: 2x8x9) {
        avgpool p1(3x3, stride=2, ceil=true)
    }
""", "avgpool ceil=true without padding: the overhanging last row divides by the real "
     "elements (2x3), even with count_include_pad=true")
def _(n):
    n.avgpool("p1", 3, 2, ceil=True)


@case("avgpool_ceil_pad", (2, 8, 9), """
    network AvgPoolCeilPad(input: 2x8x9) {
        avgpool p1(3x3, stride=2, pad=1, ceil=true)
    }
""", "avgpool ceil=true, pad 1, count_include_pad=true: the divisor counts the padding but "
     "not the part of the window past the end padding (last row divides by 2x3)")
def _(n):
    n.avgpool("p1", 3, 2, pad=1, ceil=True)


@case("avgpool_ceil_pad_exclude", (2, 8, 9), """
    network AvgPoolCeilPadExclude(input: 2x8x9) {
        avgpool p1(3x3, stride=2, pad=1, ceil=true, count_include_pad=false)
    }
""", "avgpool ceil=true, pad 1, count_include_pad=false")
def _(n):
    n.avgpool("p1", 3, 2, pad=1, ceil=True, count_include_pad=False)


@case("avgpool_ceil_drop", (2, 5, 7), """
    network AvgPoolCeilDrop(input: 2x5x7) {
        avgpool p1(2x2, stride=2, pad=1, ceil=true)     // 5x7 -> 3x4, not 4x5
    }
""", "avgpool ceil=true where the last window would start in the end padding and is dropped")
def _(n):
    n.avgpool("p1", 2, 2, pad=1, ceil=True)


@case("pool_asymmetric_pad", (2, 6, 8), """
    network PoolAsymmetricPad(input: 2x6x8) {
        maxpool p1(3x3, stride=2, pad=[0, 1, 1, 0])
        avgpool p2(2x2, stride=1, pad=[1, 0, 0, 1])
    }
""", "pooling with asymmetric [top, left, bottom, right] padding (an ONNX form; PyTorch has "
     "only symmetric pooling padding; avgpool counts the padding)")
def _(n):
    n.maxpool("p1", 3, 2, pad=[0, 1, 1, 0])
    n.avgpool("p2", 2, 1, pad=[1, 0, 0, 1])


@case("globalpools", (3, 5, 6), """
    network GlobalPools(input: 3x5x6) {
        conv c1(4, 3x3, pad=1)
        concat {
            branch { globalavgpool }
            branch { globalmaxpool }
        }
    }
""", "globalavgpool and globalmaxpool (to Cx1x1), joined by concat")
def _(n):
    n.conv("c1", 4, 3, pad=1)
    a = n.globalavgpool("branch1.globalavgpool1", x="c1")
    b = n.globalmaxpool("branch2.globalmaxpool1", x="c1")
    n.concat("concat1", a, b)


@case("adaptiveavgpool", (3, 7, 5), """
    network AdaptiveAvgPool(input: 3x7x5) {
        conv c1(4, 1x1)
        adaptiveavgpool a1(3x4)      // overlapping windows; width 5 -> 4
    }
""", "adaptiveavgpool 7x5 -> 3x4 (overlapping windows). NUMPY for the pooling layer")
def _(n):
    n.conv("c1", 4, 1)
    n.adaptiveavgpool("a1", (3, 4))


@case("adaptivemaxpool", (3, 7, 5), """
    network AdaptiveMaxPool(input: 3x7x5) {
        adaptivemaxpool a1(2x3)
    }
""", "adaptivemaxpool 7x5 -> 2x3 (overlapping windows). NUMPY")
def _(n):
    n.adaptivemaxpool("a1", (2, 3))


@case("lrn_pytorch", (7, 4, 5), """
    network LrnPytorch(input: 7x4x5) {
        lrn l1(size=5, alpha=0.3, beta=0.75, k=1.0)
        lrn l2(3, 0.2, 0.5, 0.5)
    }
""", "lrn in PyTorch's form (alpha / size), sizes 5 and 3 on 7 channels (edges)",
      input_scale=2.0)
def _(n):
    n.lrn("l1", 5, 0.3, 0.75, 1.0)
    n.lrn("l2", 3, 0.2, 0.5, 0.5)


@case("lrn_paper", (7, 4, 5), """
    network LrnPaper(input: 7x4x5) {
        lrn l1(size=5, alpha=0.05, beta=0.75, k=2, alpha_scaled=false)
    }
""", "lrn in the AlexNet paper's form (alpha not divided by size), k=2 "
     "(= ONNX LRN with alpha*size)", input_scale=2.0)
def _(n):
    n.lrn("l1", 5, 0.05, 0.75, 2.0, alpha_scaled=False)


@case("lrn_even_size", (7, 4, 5), """
    network LrnEvenSize(input: 7x4x5) {
        lrn l1(size=4, alpha=0.3, beta=0.75, k=1.0)
    }
""", "lrn with an even size (window c-2..c+1, PyTorch's). NUMPY: ONNX Runtime rejects "
     "even sizes", input_scale=2.0)
def _(n):
    n.lrn("l1", 4, 0.3, 0.75, 1.0)


@case("batchnorm", (4, 5, 6), """
    network BatchNorm(input: 4x5x6) {
        bn b1()
        conv c1(3, 3x3)
        bn b2(eps=0.001)
        relu
        batchnorm(eps=0.1)
    }
""", "bn (inference) with default eps, eps=0.001 and eps=0.1 (the `batchnorm` spelling)")
def _(n):
    n.bn("b1")
    n.conv("c1", 3, 3)
    n.bn("b2", eps=0.001)
    n.relu("relu1")
    n.bn("batchnorm1", eps=0.1)


@case("dense_flatten", (3, 7, 9), """
    network DenseFlatten(input: 3x7x9) {
        conv c1(4, 3x3, stride=2) relu
        flatten
        dense d1(5) relu
        dense d2(3, bias=false)
    }
""", "conv -> flatten (C, H, W order) -> dense with and without bias")
def _(n):
    n.conv("c1", 4, 3, stride=2)
    n.relu("relu1")
    n.flatten("flatten1")
    n.dense("d1", 5)
    n.relu("relu2")
    n.dense("d2", 3, bias=False)


@case("activations_image", (3, 4, 5), """
    network ActivationsImage(input: 3x4x5) {
        concat {
            branch { relu }
            branch { relu6 }
            branch { leakyrelu(0.1) }
            branch { leakyrelu }
            branch { tanh }
            branch { sigmoid }
            branch { identity }
        }
    }
""", "relu, relu6, leakyrelu(0.1), leakyrelu (0.01), tanh, sigmoid, identity side by side on "
     "CxHxW, joined along the channels (input scaled by 4 so relu6 clips and tanh saturates)",
      input_scale=4.0)
def _(n):
    outs = [n.relu("branch1.relu1", x="input"),
            n.relu6("branch2.relu61", x="input"),
            n.leakyrelu("branch3.leakyrelu1", 0.1, x="input"),
            n.leakyrelu("branch4.leakyrelu1", x="input"),
            n.tanh("branch5.tanh1", x="input"),
            n.sigmoid("branch6.sigmoid1", x="input"),
            n.identity("branch7.identity1", x="input")]
    n.concat("concat1", *outs)


@case("activations_vector", (12,), """
    network ActivationsVector(input: 12) {
        relu6
        dense d1(8) relu
        dense d2(8) leakyrelu(0.1)
        dense d3(8) tanh
        dense d4(8) sigmoid
        dense d5(6) leakyrelu
        dense d6(4) identity
    }
""", "the activations chained on a vector input between dense layers (input scaled by 4 so "
     "relu6 clips)", input_scale=4.0)
def _(n):
    n.relu6("relu61")
    n.dense("d1", 8)
    n.relu("relu1")
    n.dense("d2", 8)
    n.leakyrelu("leakyrelu1", 0.1)
    n.dense("d3", 8)
    n.tanh("tanh1")
    n.dense("d4", 8)
    n.sigmoid("sigmoid1")
    n.dense("d5", 6)
    n.leakyrelu("leakyrelu2")
    n.dense("d6", 4)
    n.identity("identity1")


@case("softmax_channels", (5, 3, 4), """
    network SoftmaxChannels(input: 5x3x4) {
        softmax
    }
""", "softmax over the channels of a CxHxW tensor (each pixel sums to 1)", input_scale=2.0)
def _(n):
    n.softmax("softmax1")


@case("residual_projection", (4, 8, 8), """
    network ResidualProjection(input: 4x8x8) {
        residual {
            conv conv1(6, 3x3, stride=2, pad=1, bias=false) bn bn1() relu
            conv conv2(6, 3x3, pad=1, bias=false) bn bn2()
        } shortcut downsample {
            conv c(6, 1x1, stride=2) bn b()
        }
        relu
    }
""", "ResNet basic block with a projection shortcut (1x1 stride 2 conv + bn), post relu")
def _(n):
    n.conv("conv1", 6, 3, stride=2, pad=1, bias=False)
    n.bn("bn1")
    n.relu("relu1")
    n.conv("conv2", 6, 3, pad=1, bias=False)
    main = n.bn("bn2")
    n.conv("downsample.c", 6, 1, stride=2, x="input")
    short = n.bn("downsample.b")
    n.residual("add1", short, main)
    n.relu("relu2")


@case("residual_scaled", (4, 6, 6), """
    network ResidualScaled(input: 4x6x6) {
        conv stem(4, 3x3, pad=1) relu
        residual(scale=0.17) {
            conv a(6, 1x1) relu
            conv b(4, 3x3, pad=1)
        }
        relu
    }
""", "identity shortcut, scale=0.17: x + 0.17 * main(x) (Inception-ResNet)")
def _(n):
    n.conv("stem", 4, 3, pad=1)
    x = n.relu("relu1")
    n.conv("a", 6, 1)
    n.relu("relu2")
    main = n.conv("b", 4, 3, pad=1)
    n.residual("add1", x, main, scale=0.17)
    n.relu("relu3")


@case("concat_four_branches", (6, 7, 8), """
    block Inception(c1, r3, c3, r5, c5, proj) {
        concat {
            branch { conv(c1, 1x1) relu }
            branch { conv(r3, 1x1) relu; conv(c3, 3x3, pad=1) relu }
            branch { conv(r5, 1x1) relu; conv(c5, 5x5, pad=2) relu }
            branch { maxpool(3x3, stride=1, pad=1); conv(proj, 1x1) relu }
        }
    }

    network ConcatFourBranches(input: 6x7x8) {
        Inception inc(3, 2, 4, 2, 3, 2)
    }
""", "GoogLeNet inception block (four branches, one starting with a maxpool) in a block; "
     "default hierarchical names (inc.branch2.conv1, ...)")
def _(n):
    b1 = n.conv("inc.branch1.conv1", 3, 1, x="input")
    b1 = n.relu("inc.branch1.relu1")
    n.conv("inc.branch2.conv1", 2, 1, x="input")
    n.relu("inc.branch2.relu1")
    n.conv("inc.branch2.conv2", 4, 3, pad=1)
    b2 = n.relu("inc.branch2.relu2")
    n.conv("inc.branch3.conv1", 2, 1, x="input")
    n.relu("inc.branch3.relu1")
    n.conv("inc.branch3.conv2", 3, 5, pad=2)
    b3 = n.relu("inc.branch3.relu2")
    n.maxpool("inc.branch4.maxpool1", 3, 1, pad=1, x="input")
    n.conv("inc.branch4.conv1", 2, 1)
    b4 = n.relu("inc.branch4.relu1")
    n.concat("inc.concat1", b1, b2, b3, b4)


@case("named_tensors", (3, 6, 7), """
    network NamedTensors(input: 3x6x7) {
        conv c1(4, 3x3, pad=1) relu -> a
        conv c2(4, 3x3, pad=1) tanh -> b
        from input
        conv c3(4, 1x1) -> c
        concat(a, b)
        conv c4(4, 1x1) -> d
        add(a, d)
        -> e
        add(c, d, e)
        -> s
        concat(input, s)
        conv c5(3, 1x1)
    }
""", "-> name, from name (including the network input), concat(a, b), add(a, b), "
     "a three-way add(c, d, e)")
def _(n):
    n.conv("c1", 4, 3, pad=1)
    a = n.relu("relu1")
    n.conv("c2", 4, 3, pad=1)
    b = n.tanh("tanh1")
    n.from_("input")
    c = n.conv("c3", 4, 1)
    n.concat("concat1", a, b)
    d = n.conv("c4", 4, 1)
    e = n.add("add1", a, d)
    s = n.add("add2", c, d, e)
    n.concat("concat2", "input", s)
    n.conv("c5", 3, 1)


@case("repeat_blocks", (3, 6, 6), """
    block Basic(width) {
        residual {
            conv conv1(width, 3x3, pad=1, bias=false) bn bn1() relu
            conv conv2(width, 3x3, pad=1, bias=false) bn bn2()
        }
        relu
    }

    network RepeatBlocks(input: 3x6x6) {
        conv stem(4, 3x3, pad=1) relu
        repeat layer1 2 { Basic(4) }
        globalavgpool flatten
        dense fc(3)
    }
""", "repeat of a block call: torchvision-style names layer1.0.conv1, layer1.1.bn2, ...")
def _(n):
    n.conv("stem", 4, 3, pad=1)
    x = n.relu("relu1")
    for i in range(2):
        p = f"layer1.{i}."
        n.conv(p + "conv1", 4, 3, pad=1, bias=False)
        n.bn(p + "bn1")
        n.relu(p + "relu1")
        n.conv(p + "conv2", 4, 3, pad=1, bias=False)
        main = n.bn(p + "bn2")
        n.residual(p + "add1", x, main)
        x = n.relu(p + "relu2")
    n.globalavgpool("globalavgpool1")
    n.flatten("flatten1")
    n.dense("fc", 3)


@case("mini_lenet", (1, 12, 12), """
    network MiniLeNet(input: 1x12x12) {
        conv(4, 3x3) tanh           // 4x10x10
        avgpool(2x2)                // 4x5x5
        conv(6, 3x3) relu           // 6x3x3
        maxpool(2x2, stride=1)      // 6x2x2
        flatten
        dense(10) relu dropout(0.3)
        dense(5) softmax
    }
""", "a LeNet-like network end to end, default names (conv1, dense2, ...), dropout, softmax "
     "on a vector")
def _(n):
    n.conv("conv1", 4, 3)
    n.tanh("tanh1")
    n.avgpool("avgpool1", 2)
    n.conv("conv2", 6, 3)
    n.relu("relu1")
    n.maxpool("maxpool1", 2, 1)
    n.flatten("flatten1")
    n.dense("dense1", 10)
    n.relu("relu2")
    n.dropout("dropout1")
    n.dense("dense2", 5)
    n.softmax("softmax1")


# ---------------------------------------------------------------------------------------
# Checking against cnnc, writing
# ---------------------------------------------------------------------------------------

def cnnc_summary(cnnc, path):
    r = subprocess.run(cnnc + ["summary", "--format", "json", str(path)], cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"cnnc summary {path} failed:\n{r.stdout}{r.stderr}")
    return json.loads(r.stdout)


def check_against_cnnc(case_name, net, summary):
    theirs = [(l["name"], tuple(l["output"]), l["params"]) for l in summary["layers"]
              if l["op"] != "input"]
    ours = net.layers
    if sorted(theirs) != sorted(ours):
        lines = [f"{case_name}: layers differ from cnnc's (name, shape, params):"]
        for t in sorted(set(theirs) | set(ours)):
            mark = "  " if t in theirs and t in ours else ("cnnc" if t in theirs else "ours")
            lines.append(f"  {mark:4} {t}")
        raise SystemExit("\n".join(lines))
    if theirs[-1][0] != net.cur:
        raise SystemExit(f"{case_name}: cnnc's last layer is {theirs[-1][0]}, ours {net.cur}")
    total = summary["totals"]["inference"]["params"]
    if total != sum(p for _, _, p in ours):
        raise SystemExit(f"{case_name}: cnnc counts {total} params")


def write_case(name, spec, net, expected):
    d = OUT_DIR / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    (d / "net.cnn").write_text(spec["cnn"])
    save_file({k: np.ascontiguousarray(v) for k, v in net.weights.items()},
              str(d / "weights.safetensors"),
              metadata={"generator": "tools/make_reference_outputs.py"})
    np.save(d / "input.npy", np.ascontiguousarray(net.input, dtype=F32))
    np.save(d / "expected.npy", np.ascontiguousarray(expected, dtype=F32))
    return sum(f.stat().st_size for f in d.iterdir())


README_HEAD = """\
# Reference outputs for the runtime

Each directory holds one small network and what ONNX Runtime computes for it:

- `net.cnn`: the network, one per file, input declared per sample;
- `weights.safetensors`: float32 tensors `<layer name>.weight`, `<layer name>.bias`, and for
  batch norm also `<layer name>.running_mean`, `<layer name>.running_var` (cnnc's
  hierarchical layer names; PyTorch layouts: conv `[out, in/groups, kh, kw]`, dense
  `[out, in]`);
- `input.npy`: float32 NCHW input, batch 2 (`2 x features` for a vector input);
- `expected.npy`: float32 output, batch 2.

## How they were made

    pip install numpy onnx onnxruntime safetensors     # no torch
    python3 tools/make_reference_outputs.py            # from the repository root

The script writes every file here, this README included (the README only when it makes
all the cases). Versions used: {versions}; Python {python}; ONNX opset {opset}. Any run
reproduces the same bytes with the same versions (seeded data, one thread).

For each case it builds the equivalent ONNX graph with `onnx.helper` (Conv with explicit
`pads` in `[top, left, bottom, right]`, Gemm with `transB=1`, BatchNormalization, MaxPool,
AveragePool, GlobalAverage/MaxPool, LRN, Flatten(axis=1), Dropout, Relu, Clip(0, 6),
LeakyRelu, Tanh, Sigmoid, Softmax(axis=1), Identity, Concat(axis=1), Add/Sum, Mul for a
residual scale), draws seeded weights (N(0, 0.3); bn gamma U(0.5, 1.5), running_var
U(0.05, 2)) and a seeded N(0, 1) input (scaled for some cases so that relu6 clips and LRN
matters), and runs ONNX Runtime on the CPU with graph optimisations off. The seed of each
case is the CRC-32 of its name, so cases are independent of one another.

Checks the script makes before writing anything:

- every layer's name, output shape and parameter count agree with
  `cnnc summary --format json` (by default run through `cargo run --release -q --`;
  `--cnnc CMD` runs another build), so the weight names are exactly the runtime's;
- the network run layer by layer (one ONNX Runtime session per node) agrees with the whole
  ONNX model run in one session;
- every MaxPool, AveragePool and LRN result agrees with a numpy transcription of PyTorch's
  CPU kernel (output size with the ceil-mode rule, divisor of `count_include_pad`, LRN
  window), within 1e-5;
- `pad=same` convolutions: the explicit pads equal ONNX Runtime's `auto_pad=SAME_UPPER`.

## Tolerance

{tolerance} (relative 1e-4; float32 summation order differs between implementations).

## Layers computed with numpy instead of ONNX Runtime

{numpy}

Everything else is ONNX Runtime's output. The pooling edge cases (`*_ceil*`, `*_drop`,
`pool_asymmetric_pad`, `maxpool_dilation`) are ONNX Runtime's output and were also checked
equal to PyTorch's formulas. Note for `maxpool_ceil_drop` / `avgpool_ceil_drop`: ONNX's
shape inference (onnx {onnx_version}, opset {opset}) predicts 4x5 for these, not dropping
the window that starts in the end padding, while ONNX Runtime's kernels produce 3x4 like
PyTorch; the fixtures follow the kernels (and PyTorch, and cnnc).

## Cases

| case | input | output | what it covers |
|---|---|---|---|
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cases", nargs="*", help="cases to make (default: all)")
    ap.add_argument("--no-cnnc", action="store_true", help="skip the `cnnc summary` check")
    ap.add_argument("--cnnc", default="cargo run --release -q --",
                    help="command that runs cnnc (default: %(default)s)")
    ap.add_argument("--save-onnx", metavar="DIR", help="also save each whole ONNX model there")
    args = ap.parse_args()

    names = args.cases or list(CASES)
    unknown = [c for c in names if c not in CASES]
    if unknown:
        raise SystemExit(f"unknown cases: {unknown}; known: {list(CASES)}")
    OUT_DIR.mkdir(parents=True, exist_ok=True)

    rows, numpy_rows, total = [], [], 0
    for name in names:
        spec = CASES[name]
        net = Net(name, spec["input_shape"], spec["input_scale"])
        spec["build"](net)
        expected = net.expected()
        d = OUT_DIR / name
        if not args.no_cnnc:
            d.mkdir(parents=True, exist_ok=True)
            (d / "net.cnn").write_text(spec["cnn"])
            check_against_cnnc(name, net, cnnc_summary(args.cnnc.split(), d / "net.cnn"))
        if args.save_onnx and not net.numpy_layers:
            Path(args.save_onnx).mkdir(parents=True, exist_ok=True)
            onnx.save(net.whole_model(), str(Path(args.save_onnx) / f"{name}.onnx"))
        size = write_case(name, spec, net, expected)
        total += size
        shape = lambda s: "x".join(map(str, s))
        rows.append(f"| `{name}` | {shape(net.input.shape)} | {shape(expected.shape)} | "
                    f"{spec['about']} |")
        numpy_rows += [f"- `{name}`: layer `{l}`: {why}." for l, why in net.numpy_layers]
        print(f"{name:28} {shape(net.input.shape):>10} -> {shape(expected.shape):<10} "
              f"{len(net.weights):3} tensors {size:6} bytes"
              + ("  [numpy: " + ", ".join(l for l, _ in net.numpy_layers) + "]"
                 if net.numpy_layers else ""))

    if not args.cases:  # the README describes the full set
        versions = ", ".join(f"{m.__name__} {m.__version__}"
                             for m in (ort, onnx, np, safetensors))
        text = README_HEAD.format(
            versions=versions, python=sys.version.split()[0], opset=OPSET,
            tolerance=TOLERANCE, onnx_version=onnx.__version__,
            numpy="\n".join(numpy_rows) or "None.")
        (OUT_DIR / "README.md").write_text(text + "\n".join(rows) + "\n")
    print(f"{len(names)} cases, {total} bytes ({total / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
