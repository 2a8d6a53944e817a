#!/usr/bin/env python3
"""ONNX Runtime's own time per node for a network, to set beside the table of
`cnnc bench FILE --profile`.

    /tmp/benchvenv/bin/python bench/ort_profile.py resnet50 --threads 1
    /tmp/benchvenv/bin/python bench/ort_profile.py examples/vgg11.cnn --runs 50 --top 15

The network is exported as `compare.py` exports it (`cnnc export --prune-side-outputs`,
weights from seed 0) and run with the session `compare.py` times (CPU provider, every
graph optimization, sequential execution), its profiler on. Each node's kernel time is
the median over the runs after the warm-up; nodes are listed slowest first with their
share of the sum. The names are ONNX Runtime's after its own fusions: a conv carries
the name of the last op fused into it (`layer1.0.relu2_nchwc` is block layer1.0's
second conv, with its batch norm and ReLU).
"""

import collections
import json
import os
import statistics
import tempfile

from compare import export_for_profile, profile_arguments, random_input


def node_times(model, threads, warmup, runs, workdir):
    """Median kernel milliseconds per (node, op type) over `runs` profiled runs."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(workdir, "profile")
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    x = random_input([1] + [int(d) for d in feed.shape[1:]])
    for _ in range(warmup + runs):
        session.run(None, {feed.name: x})
    with open(session.end_profiling()) as trace:
        events = json.load(trace)
    samples = collections.defaultdict(list)
    for event in events:
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            node = name[: -len("_kernel_time")]
            samples[(node, event["args"].get("op_name", "?"))].append(event["dur"] / 1e3)
    # Each node ran warmup + runs times, in order: the warm-up runs are left out.
    return {key: statistics.median(times[warmup:] or times) for key, times in samples.items()}


def main():
    args = profile_arguments(__doc__)
    with tempfile.TemporaryDirectory() as workdir:
        path, model = export_for_profile(args, workdir)
        times = node_times(model, args.threads, args.warmup, args.runs, workdir)
    total = sum(times.values())
    slowest = sorted(times.items(), key=lambda item: -item[1])
    if args.top > 0:
        slowest = slowest[: args.top]
    print(f"{os.path.basename(path)}: ONNX Runtime, {args.threads} thread(s), "
          f"median of {args.runs} runs after {args.warmup}")
    print(f"{'node':48} {'op':22} {'ms':>8} {'share':>7}")
    for (node, op), ms in slowest:
        print(f"{node[:48]:48} {op[:22]:22} {ms:8.3f} {100 * ms / total:6.1f}%")
    print(f"{'sum of the nodes':71} {total:8.3f}")


if __name__ == "__main__":
    main()
