#!/usr/bin/env bash
# Serving benchmark in one run: ResNet-50 and MobileNetV2 (random weights, exported to ONNX on
# first use, not committed) on tract and ONNX Runtime in process and through `teeserve serve`
# over gRPC+TLS and REST+TLS, beside onnxruntime and TensorFlow in Python on the same inputs and
# threads; dynamic batching at concurrency 16; the digits model at concurrency 32.
#   bash bench/serving.sh [SECONDS]     (SECONDS per measurement, default 10)
# Needs python3 with venv; installs tensorflow-cpu, onnxruntime, tf2onnx and numpy into a cached
# virtualenv (the package registry is the only network access).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
venv="${XDG_CACHE_HOME:-$HOME/.cache}/teeserve-bench"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import tensorflow, onnxruntime, tf2onnx" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet tensorflow-cpu onnxruntime tf2onnx numpy
fi
build_model_bench serving_load
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
exec "$venv/bin/python" bench/serving.py "${1:-10}"
