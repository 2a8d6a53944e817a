#!/usr/bin/env python3
"""Runs networks on cnnc's reference interpreter and on ONNX Runtime, and compares.

For each .cnn file: `cnnc export` writes the network with seeded weights as ONNX, a
seeded random input is written as .npy, `cnnc run --backend reference` and ONNX Runtime
(CPU, all graph optimisations) both run it, and the outputs are compared. Prints one row
per network; exits 1 if any relative error exceeds the tolerance.

    pip install numpy onnxruntime
    python3 tools/compare_onnxruntime.py [--cnnc target/release/cnnc] [--markdown] examples/*.cnn

relative error = max |cnnc - ort| / max(1, max |ort|)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

TOLERANCE = 1e-4


def run(cmd):
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr}")
    return result.stdout


def compare(cnnc, path, workdir, seed, batch):
    name = os.path.splitext(os.path.basename(path))[0]
    model = os.path.join(workdir, f"{name}.onnx")
    run([cnnc, "export", path, "-o", model, "--seed", str(seed), "--prune-side-outputs"])
    session_options = ort.SessionOptions()
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model, session_options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    shape = [batch] + [int(d) for d in feed.shape[1:]]
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    x_path = os.path.join(workdir, f"{name}.input.npy")
    np.save(x_path, x)
    out_dir = os.path.join(workdir, f"{name}.out")
    report = json.loads(run([cnnc, "run", path, "--seed", str(seed), "--input", x_path,
                             "--save-outputs", out_dir, "--format", "json"]))
    ours = np.load(os.path.join(out_dir, "output.npy"))
    started = time.perf_counter()
    theirs = session.run(None, {feed.name: x})[0]
    ort_ms = (time.perf_counter() - started) * 1e3
    if ours.shape != theirs.shape:
        return name, float("inf"), f"shape {ours.shape} vs ONNX Runtime's {theirs.shape}", report, ort_ms
    abs_err = float(np.max(np.abs(ours - theirs)))
    rel = abs_err / max(1.0, float(np.max(np.abs(theirs))))
    return name, rel, f"max abs {abs_err:.2e}", report, ort_ms


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
