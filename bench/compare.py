#!/usr/bin/env python3
"""cnnc's JIT against ONNX Runtime and OpenVINO on this machine, side by side in one run.

For each .cnn file: `cnnc export` writes the network as ONNX and `cnnc init` its weights
as safetensors, both from the same seed, so every engine runs the same weights. Then, for
each thread count, each engine runs batch 1 on a random input after a warm-up:

- cnnc: `cnnc bench --format json` (the JIT, the default backend);
- ONNX Runtime: the CPU provider, ORT_ENABLE_ALL, sequential execution;
- OpenVINO: the CPU device, the latency hint, the thread count, f32 precision (on CPUs
  with AMX or AVX-512 BF16 it would otherwise run in bfloat16).

Every engine runs the same number of times: `--runs`, or more where that many would
take less than `--min-seconds` of cnnc's time (LeNet-5's ten runs last 0.1 ms, too few
for a median to settle: caches, branch predictors and the clock still warming), with a
tenth as many warm-up runs; in `--rounds` rounds (3), the engines taking turns in a new
order each round, and the median of the rounds' medians is shown: the machine is shared,
and a burst of another's load then falls on one round of one engine, not on its figure.

It prints Markdown: the machine and versions, a table of median latencies with the ratio
best other engine / cnnc (above 1: cnnc is faster), and a table of each engine's time
from model file to first output (cnnc: the wall time of `cnnc run --weights`, a fresh
process that parses, checks, loads the weights, compiles and runs once, spawned as a shell
would; the others:
loading the model and creating the session, plus the first run, in this process).

    pip install -r bench/requirements.txt
    cargo build --release
    python3 bench/compare.py                      # the default networks
    python3 bench/compare.py --runs 20 --threads 1 2 examples/resnet50.cnn
"""
import argparse
import datetime
import gc
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

DEFAULT_NETWORKS = [
    "lenet5",
    "alexnet_torchvision",
    "vgg16",
    "googlenet",
    "resnet18",
    "resnet50",
    "inception_v3",
]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed_runs(run, warmup, runs):
    """Median of `runs` calls of `run` after `warmup` calls, in milliseconds."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1e3


def random_input(shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


class OnnxRuntime:
    name = "ONNX Runtime"

    def __init__(self):
        import onnxruntime

        self.ort = onnxruntime
        self.version = onnxruntime.__version__

    def load(self, model, threads):
        """A session and the function that runs it once on a batch-1 input."""
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = self.ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0]
        x = random_input([1] + [int(d) for d in feed.shape[1:]])
        return lambda: session.run(None, {feed.name: x})


class OpenVino:
    name = "OpenVINO"

    def __init__(self):
        import openvino
        import openvino.properties as properties
        import openvino.properties.hint as hints

        self.ov = openvino
        self.core = openvino.Core()
        self.properties = properties
        self.hints = hints
        self.version = openvino.__version__.split("-")[0]

    def load(self, model, threads):
        config = {
            self.hints.performance_mode: self.hints.PerformanceMode.LATENCY,
            self.properties.inference_num_threads: threads,
            self.hints.inference_precision: self.ov.Type.f32,
        }
        network = self.core.read_model(model)
        # Batch 1 fixed, as cnnc specializes for it: the export leaves the batch dynamic.
        shape = [1] + [d.get_length() for d in network.input(0).get_partial_shape()[1:]]
        network.reshape(shape)
        compiled = self.core.compile_model(network, "CPU", config)
        request = compiled.create_infer_request()
        x = random_input(shape)
        return lambda: request.infer({0: x})


def first_output_ms(engine, model, threads):
    """Model file to first output: loading and compiling the model, and one run."""
    started = time.perf_counter()
    engine.load(model, threads)()
    return (time.perf_counter() - started) * 1e3


def engine_median(engine, model, threads, warmup, runs):
    run = engine.load(model, threads)
    median = timed_runs(run, warmup, runs)
    # Drop the session now: its idle threads must not compete with the next engine.
    del run
    gc.collect()
    return median


def cnnc(args, *command):
    out = subprocess.run([args.cnnc, *command], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"cnnc {' '.join(command)} failed:\n{out.stderr}")
    return out.stdout


def cnnc_bench(args, path, weights, threads, runs, warmup):
    return json.loads(
        cnnc(args, "bench", path, "--weights", weights, "--threads", str(threads),
             "--runs", str(runs), "--warmup", str(warmup), "--format", "json")
    )


def latency_rounds(args, files, engines, threads, runs, warmup):
    """cnnc's and each engine's latency: the median over `--rounds` rounds of each
    one's median, the engines taking turns in a new order each round, so that a burst
    of the shared machine's load falls on one round of one engine, not on its whole
    figure. Returns cnnc's last report too."""
    path, weights, model = files
    contestants = len(engines) + 1
    orders = itertools.cycle(itertools.permutations(range(contestants)))
    samples = [[] for _ in range(contestants)]
    report = None
    for _ in range(args.rounds):
        for contestant in next(orders):
            if contestant == 0:
                report = cnnc_bench(args, path, weights, threads, runs, warmup)
                samples[0].append(report["latency"]["p50"])
            else:
                engine = engines[contestant - 1]
                samples[contestant].append(engine_median(engine, model, threads, warmup, runs))
    medians = [float(np.median(s)) for s in samples]
    return report, medians[0], medians[1:]


def runs_for(args, milliseconds):
    """The runs (and warm-up runs) for a network whose run takes `milliseconds`: at
    least `--runs`, and enough to last `--min-seconds`."""
    runs = max(args.runs, min(100_000, int(args.min_seconds * 1e3 / max(milliseconds, 1e-6))))
    return runs, max(args.warmup, runs // 10)


def cnnc_first_output_ms(args, path, weights):
    """A fresh `cnnc run` process, from its spawn to its exit. It is spawned as a shell
    would, its output to /dev/null: `subprocess.run` spent 0.3 ms more on its pipes than
    on the process (a whole hello-world's start, 0.4 ms, is in the time either way)."""
    command = [args.cnnc, "run", path, "--weights", weights, "--format", "json"]
    quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_WRONLY, 0) for fd in (1, 2)]
    started = time.perf_counter()
    pid = os.posix_spawnp(args.cnnc, command, os.environ, file_actions=quiet)
    _, status = os.waitpid(pid, 0)
    elapsed = (time.perf_counter() - started) * 1e3
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        cnnc(args, *command[1:])  # again, to show its error
        sys.exit(f"cnnc {' '.join(command[1:])} failed (exit status {code})")
    return elapsed


def first_output_medians(args, path, weights, engines, model):
    """Model file to first output, cnnc's and each engine's: the median of
    `--first-output-samples` fresh starts. The engines take turns, so that a slow spell
    of the machine falls on all of them, each round in the next of their orders, so
    that each follows each other as often (OpenVINO's threads linger, and a start right
    after it took a third longer; with three engines, six rounds go through every
    order)."""
    threads = max(args.threads)
    starts = [lambda: cnnc_first_output_ms(args, path, weights)] + [
        (lambda engine=engine: first_output_ms(engine, model, threads)) for engine in engines
    ]
    orders = itertools.cycle(itertools.permutations(range(len(starts))))
    samples = [[] for _ in starts]
    for _ in range(max(1, args.first_output_samples)):
        for contestant in next(orders):
            samples[contestant].append(starts[contestant]())
            gc.collect()
    medians = [statistics.median(times) for times in samples]
    return medians[0], medians[1:]


def machine():
    model = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.1f} at the start"


def profile_arguments(doc):
    """The command line of the per-node profile scripts (`ort_profile.py`,
    `ov_profile.py`): a network, the cnnc binary, threads, runs, warm-up runs, and how
    many of the slowest nodes to list."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("network", help="an example's name or a .cnn file")
    parser.add_argument("--cnnc", default=os.path.join(REPO, "target", "release", "cnnc"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--top", type=int, default=0, help="only the slowest N nodes")
    return parser.parse_args()


def export_for_profile(args, workdir):
    """The network of `args` and its ONNX export in `workdir`, as the comparison
    exports it (side outputs pruned)."""
    path = resolve(args.network)
    model = os.path.join(workdir, "model.onnx")
    cnnc(args, "export", path, "-o", model, "--prune-side-outputs")
    return path, model


def resolve(network):
    """A name from the default list, or a path to a .cnn file."""
    if os.path.exists(network):
        return network
    return os.path.join(REPO, "examples", f"{network}.cnn")


def ratio(cnnc_ms, others):
    measured = [ms for ms in others if ms is not None]
    return f"{min(measured) / cnnc_ms:.2f}" if measured else "-"


def cell(ms):
    """Three significant figures below 1 ms (LeNet-5's tenth of a microsecond)."""
    return "-" if ms is None else f"{ms:.3g}" if ms < 1 else f"{ms:.2f}"


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("networks", nargs="*", default=DEFAULT_NETWORKS,
                        help="example names or .cnn files [default: %(default)s]")
    parser.add_argument("--cnnc", default=os.path.join(REPO, "target", "release", "cnnc"))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=0.5,
                        help="more runs than --runs where those would take less time "
                             "(every engine runs as many)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of every engine's runs, in a new order each round; "
                             "the median of the rounds' medians is shown")
    parser.add_argument("--first-output-samples", type=int, default=6,
                        help="fresh starts per engine for the model-to-first-output table "
                             "(the median is shown)")
    args = parser.parse_args()

    engines = [OnnxRuntime(), OpenVino()]
    version = cnnc(args, "--version").strip()
    print(f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"- machine: {machine()}")
    print(f"- {version} (JIT); " + "; ".join(f"{e.name} {e.version}" for e in engines)
          + f"; numpy {np.__version__}; Python {platform.python_version()}")
    print(f"- batch 1, f32, {args.runs} runs after {args.warmup} warm-up runs (or as many as "
          f"take {args.min_seconds} s of cnnc's time, a tenth as many warm-up runs), "
          f"in {args.rounds} rounds, the engines' order changing each round; the median of "
          "the rounds' medians, in ms")
    print()
    names = " | ".join(f"{e.name}" for e in engines)
    print(f"| network | threads | cnnc JIT | {names} | best other / cnnc |")
    print("|---|---:|" + "---:|" * (len(engines) + 2))
    first_outputs = []
    with tempfile.TemporaryDirectory() as workdir:
        for network in args.networks:
            path = resolve(network)
            name = os.path.splitext(os.path.basename(path))[0]
            model = os.path.join(workdir, f"{name}.onnx")
            weights = os.path.join(workdir, f"{name}.safetensors")
            cnnc(args, "export", path, "-o", model, "--prune-side-outputs")
            cnnc(args, "init", path, "-o", weights)
            for threads in args.threads:
                probe = cnnc_bench(args, path, weights, threads, args.runs, args.warmup)
                runs, warmup = runs_for(args, probe["latency"]["p50"])
                report, ours, theirs = latency_rounds(
                    args, (path, weights, model), engines, threads, runs, warmup
                )
                cells = " | ".join(cell(ms) for ms in theirs)
                print(f"| `{name}` | {threads} | {cell(ours)} | {cells} | {ratio(ours, theirs)} |",
                      flush=True)
            ours, theirs = first_output_medians(args, path, weights, engines, model)
            first_outputs.append((
                name,
                os.path.getsize(model) / 1e6,
                report["compile_milliseconds"],
                report["weights_milliseconds"],
                ours,
                theirs,
            ))
    print()
    print(f"Model file to first output, ms, the median of {args.first_output_samples} fresh "
          f"starts ({max(args.threads)} threads for the other engines; "
          "`cnnc run` on all cores), and the two parts of cnnc's start that `cnnc bench` "
          "times: compile (parse to ready, weights excluded) and weights (load, fold, pack):")
    print()
    print(f"| network | ONNX size (MB) | cnnc compile | cnnc weights | cnnc run | {names} "
          "| best other / cnnc |")
    print("|---|---:|---:|---:|---:|" + "---:|" * (len(engines) + 1))
    for name, size, compile_ms, weights_ms, ours, theirs in first_outputs:
        cells = " | ".join(cell(ms) for ms in theirs)
        print(f"| `{name}` | {size:.1f} | {cell(compile_ms)} | {cell(weights_ms)} | {cell(ours)} "
              f"| {cells} | {ratio(ours, theirs)} |")


if __name__ == "__main__":
    main()
