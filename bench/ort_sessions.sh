#!/usr/bin/env bash
# What choosing each inference's intra-op threads by the load would cost in memory: ONNX Runtime
# fixes a session's thread count when the session is made, so a per-inference choice needs two
# sessions of each model (one with the workers' threads, one with one thread). Measured in
# onnxruntime's Python binding, each configuration in a process of its own: the peak RSS of one
# session, of two sessions, of two sessions given the same initializers (AddInitializer, the
# C API's way to share weights between sessions), and the same at the Extended optimisation
# level, where ONNX Runtime does not rewrite the weights into its blocked (NCHWc) layout; and
# the time of one inference on each session, so that the saving can be weighed against the speed;
# and the same three from the model as ONNX Runtime optimised it (its weights already in the
# blocked layout), so that what the shared sessions hold is the rewritten weights themselves.
#   bash bench/ort_sessions.sh [SECONDS]   (SECONDS of inferences per session, default 3)
# Uses the cached virtualenv of bench/serving.sh and its models (made on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_venv
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
# The models, made (by bench/serving.py's exporter) in a process of their own: TensorFlow is not
# loaded where RSS is measured.
(cd bench && TF_CPP_MIN_LOG_LEVEL=2 "$venv/bin/python" -c '
import sys
sys.argv = sys.argv[:1]
import serving
for name in ("mobilenetv2", "resnet50"):
    serving.onnx_path(name)
' >/dev/null)
for model in mobilenetv2 resnet50; do
  # The model as ONNX Runtime optimises it (its blocked layout is this machine's), saved once.
  "$venv/bin/python" bench/ort_sessions.py "$model" make-optimised 0 2>/dev/null
  for mode in one two shared shared-extended optimised-one optimised-two optimised-shared; do
    "$venv/bin/python" bench/ort_sessions.py "$model" "$mode" "${1:-3}"
  done
done
