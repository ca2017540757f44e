#!/bin/sh
# `make demo`: build the example disk and print what is in it.
set -eu
PY="$1"
cd "$(dirname "$0")/.."
mkdir -p build
"$PY" -m fstool build examples/disk.toml -o build/disk.img --layout-json build/disk.layout.json
echo "== build/disk.img"
"$PY" -m fstool info build/disk.img
echo "== partition 2 (root), /"
"$PY" -m fstool ls build/disk.img:2 /
