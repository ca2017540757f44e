#!/usr/bin/env bash
# Build the Bazel examples (examples/, offline on Bazel 4.2.3) and show the disk.
#   scripts/bazel-demo.sh [PYTHON]     PYTHON runs `fstool info` (default python3)
# BAZEL_STARTUP_OPTIONS, if set, goes before the command (e.g. --output_base=DIR).
set -euo pipefail
PY="${1:-python3}"
case "$PY" in  # a relative path (make passes .venv/bin/python) must survive the cd below
    /*) ;;
    */*) PY="$PWD/$PY" ;;
esac
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO/examples"
# shellcheck disable=SC2086
bazel ${BAZEL_STARTUP_OPTIONS:-} build --config=offline //images:rootfs //images:disk
echo "== bazel-bin/images/disk.img"
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m fstool info bazel-bin/images/disk.img
