#!/usr/bin/env bash
# The exporters' corpus on tract and ONNX Runtime (issue 15, item 2): what loads and matches.
#   bash bench/corpus.sh
# Installs tensorflow-cpu, onnxruntime, tf2onnx, skl2onnx, scikit-learn and numpy into a cached
# virtualenv (the package registry is the only network access); models are made on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${XDG_CACHE_HOME:-$HOME/.cache}/teeserve-bench"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import tensorflow, onnxruntime, tf2onnx, skl2onnx, sklearn" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet tensorflow-cpu onnxruntime tf2onnx skl2onnx scikit-learn numpy
fi
cargo build --release --quiet -p teeserve
echo "| model | tract | ONNX Runtime |"
echo "|---|---|---|"
TF_CPP_MIN_LOG_LEVEL=2 exec "$venv/bin/python" bench/corpus.py target/release/teeserve
