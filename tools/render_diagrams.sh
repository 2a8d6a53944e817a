#!/usr/bin/env bash
# Draws docs/diagrams/*.svg from examples/ with the release binary: every example in
# full, the largest collapsed (--depth 2), a few more collapsed to show --depth.
# tests/diagrams.rs checks the committed files are what this writes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
cnnc=target/release/cnnc
out=docs/diagrams
mkdir -p "$out"
rm -f "$out"/*.svg

render() { # NAME [DEPTH]
    if [ $# -eq 2 ]; then
        "$cnnc" graph "examples/$1.cnn" --depth "$2" -o "$out/$1-depth$2.svg"
    else
        "$cnnc" graph "examples/$1.cnn" -o "$out/$1.svg"
    fi
}

for file in examples/*.cnn; do
    name=$(basename "$file" .cnn)
    case "$name" in
        # Hundreds of layers: readable only with the blocks collapsed.
        inception_v3 | inception_resnet_v2 | resnet101 | resnet152) render "$name" 2 ;;
        *) render "$name" ;;
    esac
done
render googlenet 1
render resnet50 1
render resnet50 2
render inception_resnet_v2 1
ls -l "$out"
