#!/usr/bin/env bash
# Peak RSS of `teeserve serve` with ResNet-50 at 1 and 2 workers on every engine (tract, ONNX
# Runtime, TensorFlow): issue "one copy of the weights".
#   bash bench/rss.sh
# Installs tensorflow-cpu, onnxruntime, tf2onnx and numpy into a cached virtualenv (the package
# registry is the only network access); the models are made on first use, not committed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${XDG_CACHE_HOME:-$HOME/.cache}/teeserve-bench"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import tensorflow, onnxruntime, tf2onnx" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet tensorflow-cpu onnxruntime tf2onnx numpy
fi
cargo build --release --quiet -p teeserve
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
TF_CPP_MIN_LOG_LEVEL=2 exec "$venv/bin/python" bench/rss.py target/release/teeserve
