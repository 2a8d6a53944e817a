#!/usr/bin/env python3
"""The JIT against ONNX Runtime on this machine, side by side in one run.

For each .cnn file: `cnnc export` writes it as ONNX (seeded weights, side outputs
pruned); `cnnc bench` measures the JIT and ONNX Runtime (CPU provider, all graph
optimisations, sequential execution) runs the same model on a random input, each for
1 and for 2 threads (the machine's cores), after a warm-up. Prints a Markdown table of
median latencies and the ratio ORT / JIT (above 1: the JIT is faster).

    pip install numpy onnx onnxruntime
    python3 tools/bench_vs_onnxruntime.py [--runs 20] examples/resnet50.cnn ...
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np
import onnxruntime as ort


def ort_median(model, threads, runs):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([1] + [int(d) for d in feed.shape[1:]]).astype(np.float32)
    for _ in range(3):
        session.run(None, {feed.name: x})
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, {feed.name: x})
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1e3


def jit_median(cnnc, path, threads, runs):
    out = subprocess.run([cnnc, "bench", path, "--threads", str(threads), "--runs", str(runs),
                          "--format", "json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["latency"]["p50"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--cnnc", default=os.path.join("target", "release", "cnnc"))
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    print("| network | threads | cnnc JIT p50 (ms) | ONNX Runtime p50 (ms) | ORT / JIT |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as workdir:
        for path in args.files:
            name = os.path.splitext(os.path.basename(path))[0]
            model = os.path.join(workdir, f"{name}.onnx")
            subprocess.run([args.cnnc, "export", path, "-o", model, "--prune-side-outputs"],
                           capture_output=True, check=True)
            for threads in (1, 2):
                ours = jit_median(args.cnnc, path, threads, args.runs)
                theirs = ort_median(model, threads, args.runs)
                print(f"| `{name}` | {threads} | {ours:.2f} | {theirs:.2f} | {theirs / ours:.2f} |", flush=True)


if __name__ == "__main__":
    main()
