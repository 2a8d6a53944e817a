#!/usr/bin/env bash
# Runs one fuzz target for SECONDS (default 600) on one core, niced, with its seeds,
# and prints what docs/reliability.md records: time, executions, corpus size, crashes.
#   fuzz/run.sh cnn_text 600 [extra libFuzzer flags, e.g. -len_control=0]
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: fuzz/run.sh TARGET [SECONDS]}
seconds=${2:-600}
case $target in
    cnn_text) seeds=(../examples ../tests/bad ../tests/networks) ;;
    cnn_structured) seeds=() ;;
    weights) seeds=(seeds/weights) ;;
    npy) seeds=(seeds/npy ../tests/onnx) ;;
    image) seeds=(seeds/image) ;;
    onnx) seeds=(../tests/onnx) ;;
    *) echo "unknown target $target" >&2; exit 2 ;;
esac
mkdir -p "corpus/$target" "artifacts/$target"
log="artifacts/$target/run-$(date -u +%Y%m%dT%H%M%S).log"
set +e
nice -n 10 cargo +nightly fuzz run -O "$target" "corpus/$target" "${seeds[@]}" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 \
    -artifact_prefix="artifacts/$target/" "${@:3}" >"$log" 2>&1
status=$?
set -e
executions=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
echo "$target: exit $status, ${seconds} s, ${executions:-?} executions," \
    "corpus $(find "corpus/$target" -type f | wc -l) files," \
    "crashes $(find "artifacts/$target" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | wc -l)" \
    "(log: fuzz/$log)"
