#!/usr/bin/env bash
# The TensorFlow engine in one run: ResNet-50 and MobileNetV2 SavedModels (keras.applications,
# random weights, made on first use, not committed) on teeserve's TensorFlow engine in process
# and through `teeserve serve` over gRPC+TLS, beside TensorFlow in Python running the same
# SavedModel in process with the same threads (one per operation, one operation at a time).
#   bash bench/tf_engine.sh [SECONDS [TRIALS]]   (SECONDS per model and batch in each of TRIALS
#                                                 trials with fresh processes; default 15 and 5)
# Needs python3 with venv; installs tensorflow-cpu and numpy into a cached virtualenv (the
# package registry is the only network access). The engine loads the wheel's own library.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
venv="${XDG_CACHE_HOME:-$HOME/.cache}/teeserve-bench"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import tensorflow, numpy" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet tensorflow-cpu numpy
fi
build_model_bench
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
exec "$venv/bin/python" bench/tf_engine.py "${1:-15}" "${2:-5}"
