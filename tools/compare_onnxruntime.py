#!/usr/bin/env python3
"""Runs networks on cnnc's reference interpreter and on ONNX Runtime, and compares.

For each .cnn file: `cnnc export` writes the network with seeded weights as ONNX, a
seeded random input is written as .npy, `cnnc run --backend reference` and ONNX Runtime
(CPU, all graph optimisations) both run it, and the outputs are compared. Prints one row
per network; exits 1 if any relative error exceeds the tolerance.

    pip install numpy onnx onnxruntime
    python3 tools/compare_onnxruntime.py [--cnnc target/release/cnnc] [--markdown] examples/*.cnn

The export is also imported back (`cnnc import`): the imported .cnn must have the same
parameter and MAC totals, and give the same output with the imported weights.

Every layer's output is compared, not just the network's: with seeded weights the final
softmax is nearly uniform, and would hide almost any error.
relative error of a tensor = max |cnnc - ort| / max |ort|; a network's is its worst layer's.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort

TOLERANCE = 1e-4


def run(cmd):
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr}")
    return result.stdout


def with_every_layer_as_output(model_path, cnnc_layers):
    """The exported model with every layer's output tensor also a graph output."""
    model = onnx.shape_inference.infer_shapes(onnx.load(model_path))
    typed = {v.name: v for v in model.graph.value_info}
    present = {o.name for o in model.graph.output}
    layers = []
    for node in model.graph.node:
        # A layer's node and output tensor carry the layer's name; helper nodes (the
        # Slices of an adaptive pool, the Mul of a scaled residual) are not layers.
        if node.name in cnnc_layers and node.output and node.output[0] == node.name and node.name in typed:
            layers.append(node.name)
            if node.name not in present:
                model.graph.output.append(typed[node.name])
    return model.SerializeToString(), layers


def relative_error(ours, theirs):
    scale = max(float(np.max(np.abs(theirs))), 1e-12) if theirs.size else 1.0
    return float(np.max(np.abs(ours - theirs))) / scale if theirs.size else 0.0


def compare(cnnc, path, workdir, seed, batch):
    """Returns (name, worst relative error, note, cnnc's report, ORT milliseconds)."""
    name = os.path.splitext(os.path.basename(path))[0]
    model_path = os.path.join(workdir, f"{name}.onnx")
    run([cnnc, "export", path, "-o", model_path, "--seed", str(seed), "--prune-side-outputs"])
    summary = json.loads(run([cnnc, "summary", path, "--format", "json"]))
    model, layers = with_every_layer_as_output(model_path, {layer["name"] for layer in summary["layers"]})
    session_options = ort.SessionOptions()
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model, session_options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    shape = [batch] + [int(d) for d in feed.shape[1:]]
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    x_path = os.path.join(workdir, f"{name}.input.npy")
    np.save(x_path, x)
    out_dir = os.path.join(workdir, f"{name}.out")
    save = [arg for layer in layers for arg in ("--save", layer)]
    report = json.loads(run([cnnc, "run", path, "--backend", "reference", "--seed", str(seed),
                             "--input", x_path, "--batch", str(batch), "--save-outputs", out_dir,
                             "--format", "json"] + save))
    started = time.perf_counter()
    outputs = session.run(None, {feed.name: x})
    ort_ms = (time.perf_counter() - started) * 1e3
    by_name = {o.name: value for o, value in zip(session.get_outputs(), outputs)}
    files = {saved["tensor"]: saved["path"] for saved in report["saved"][1:]}
    ours = np.load(report["saved"][0]["path"])
    theirs = outputs[0]
    if ours.shape != theirs.shape:
        return name, float("inf"), f"output shape {ours.shape} vs ONNX Runtime's {theirs.shape}", report, ort_ms
    worst, worst_layer = relative_error(ours, theirs), "output"
    for layer in layers:
        saved = np.load(files[layer])
        if saved.shape != by_name[layer].shape:
            return name, float("inf"), f"{layer}: shape {saved.shape} vs {by_name[layer].shape}", report, ort_ms
        error = relative_error(saved, by_name[layer])
        if error > worst:
            worst, worst_layer = error, layer
    note = f"{len(layers)} layers compared; worst {worst_layer}"
    imported_error = check_import(cnnc, path, model_path, x_path, batch, workdir, theirs, summary)
    if imported_error > worst:
        worst, note = imported_error, note + f"; imported .cnn {imported_error:.2e}"
    else:
        note += f"; imported .cnn {imported_error:.2e}"
    return name, worst, note, report, ort_ms


def check_import(cnnc, path, model_path, x_path, batch, workdir, theirs, summary):
    """`cnnc import` of the exported model must give the same totals and outputs."""
    name = os.path.splitext(os.path.basename(path))[0]
    cnn = os.path.join(workdir, f"{name}.imported.cnn")
    weights = os.path.join(workdir, f"{name}.imported.safetensors")
    run([cnnc, "import", model_path, "-o", cnn, "--weights", weights])
    imported = json.loads(run([cnnc, "summary", cnn, "--format", "json"]))
    ours, again = summary["totals"]["inference"], imported["totals"]["inference"]
    if ours != again:
        raise RuntimeError(f"{path}: imported totals {again} differ from {ours}")
    out_dir = os.path.join(workdir, f"{name}.imported.out")
    report = json.loads(run([cnnc, "run", cnn, "--backend", "reference", "--weights", weights,
                             "--input", x_path, "--batch", str(batch), "--save-outputs", out_dir,
                             "--format", "json"]))
    return relative_error(np.load(report["saved"][0]["path"]), theirs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--cnnc", default=os.path.join("target", "release", "cnnc"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    failures = 0
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for path in args.files:
            try:
                name, rel, note, report, ort_ms = compare(args.cnnc, path, workdir, args.seed, args.batch)
            except RuntimeError as error:
                print(f"{path}: {error}", file=sys.stderr)
                failures += 1
                continue
            ok = rel <= TOLERANCE
            failures += not ok
            rows.append((name, rel, note, "ok" if ok else "FAIL", report["milliseconds"], ort_ms))
    if args.markdown:
        print(f"| network | relative error | | verdict |")
        print("|---|---:|---|---|")
        for name, rel, note, verdict, _, _ in rows:
            print(f"| `{name}` | {rel:.2e} | {note} | {verdict} |")
    else:
        for name, rel, note, verdict, ours_ms, ort_ms in rows:
            print(f"{verdict:4}  {name:24} relative error {rel:.2e} ({note})")
    print(f"{len(rows) - failures} passed, {failures} failed", file=sys.stderr if args.markdown else sys.stdout)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
