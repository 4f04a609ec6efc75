#!/usr/bin/env bash
# The Open Inference Protocol (KServe v2) beside TF Serving's API in one run (bench/v2.py):
# the digits model at 32 requesters and MobileNetV2 at batch 8, over gRPC Predict, v2 gRPC
# ModelInfer and v2 REST with binary data, on one server, with one load tool (h2load).
#   bash bench/v2.sh [DIGITS_REQUESTS] [MOBILENET_REQUESTS]   (per measurement; 20000, 200)
# Needs h2load (Debian: nghttp2-client); uses the cached virtualenv of bench/serving.sh
# (tensorflow-cpu, onnxruntime, tf2onnx, numpy), which makes MobileNetV2 on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v h2load >/dev/null || { echo "needs h2load (Debian: nghttp2-client)" >&2; exit 1; }
venv="${XDG_CACHE_HOME:-$HOME/.cache}/teeserve-bench"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import tensorflow, onnxruntime, tf2onnx" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet tensorflow-cpu onnxruntime tf2onnx numpy
fi
cargo build --release --quiet -p teeserve
exec "$venv/bin/python" bench/v2.py "$@"
