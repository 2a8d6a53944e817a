#!/usr/bin/env python3
"""OpenVINO's own time per node for a network, to set beside the table of
`cnnc bench FILE --profile` (as `ort_profile.py` does for ONNX Runtime).

    /tmp/benchvenv/bin/python bench/ov_profile.py googlenet --threads 1
    /tmp/benchvenv/bin/python bench/ov_profile.py inception_v3 --runs 50 --top 15

The network is exported as `compare.py` exports it and compiled with the settings
`compare.py` times (CPU device, the latency hint, f32, the batch fixed to 1), with
OpenVINO's profiling on. Each node's real time is the median over the runs after the
warm-up; nodes are listed slowest first with their share of the sum, their type and
the kernel OpenVINO chose (`brgconv_avx512_f32`, `jit_avx512_f32`, ...). OpenVINO
renames the convolutions it folds a batch norm into (`Multiply_10710`), so those are
matched to cnnc's layers by shape and order, by hand.
"""

import collections
import os
import statistics
import tempfile

from compare import OpenVino, export_for_profile, profile_arguments, random_input


def node_times(model, threads, warmup, runs):
    """Median milliseconds and (type, kernel) per node over `runs` profiled runs."""
    engine = OpenVino()
    config = {
        engine.hints.performance_mode: engine.hints.PerformanceMode.LATENCY,
        engine.properties.inference_num_threads: threads,
        engine.hints.inference_precision: engine.ov.Type.f32,
        engine.properties.enable_profiling: True,
    }
    network = engine.core.read_model(model)
    shape = [1] + [d.get_length() for d in network.input(0).get_partial_shape()[1:]]
    network.reshape(shape)
    request = engine.core.compile_model(network, "CPU", config).create_infer_request()
    x = random_input(shape)
    samples = collections.defaultdict(list)
    kinds = {}
    for run in range(warmup + runs):
        request.infer({0: x})
        if run < warmup:
            continue
        for node in request.profiling_info:
            samples[node.node_name].append(node.real_time.total_seconds() * 1e3)
            kinds[node.node_name] = (node.node_type, node.exec_type)
    return {name: (statistics.median(times), kinds[name]) for name, times in samples.items()}


def main():
    args = profile_arguments(__doc__)
    with tempfile.TemporaryDirectory() as workdir:
        path, model = export_for_profile(args, workdir)
        times = node_times(model, args.threads, args.warmup, args.runs)
    total = sum(ms for ms, _ in times.values())
    slowest = sorted(times.items(), key=lambda item: -item[1][0])
    if args.top > 0:
        slowest = slowest[: args.top]
    print(f"{os.path.basename(path)}: OpenVINO, {args.threads} thread(s), "
          f"median of {args.runs} runs after {args.warmup}; sum of the nodes {total:.3f} ms")
    print(f"{'node':44} {'type':14} {'kernel':24} {'ms':>8} {'share':>7}")
    for node, (ms, (kind, kernel)) in slowest:
        print(f"{node[:44]:44} {kind[:14]:14} {kernel[:24]:24} {ms:8.3f} "
              f"{100 * ms / max(total, 1e-9):6.1f}%")


if __name__ == "__main__":
    main()
