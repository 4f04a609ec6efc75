#!/usr/bin/env bash
# Concurrent requests to one model in one run: MobileNetV2 and ResNet-50 at batch 1 with 1, 2, 4
# and 8 requesters, teeserve (ONNX Runtime engine, gRPC+TLS) beside onnxruntime in Python with
# that many threads sharing one session; the server's peak RSS at 1 and 2 workers.
#   ROUNDS=3 bash bench/concurrency.sh [SECONDS] [INTRA_OP ...]   (SECONDS per measurement, default 8;
#                                                         intra-op values to try, default 1 2)
# Uses the cached virtualenv of bench/serving.sh (tensorflow-cpu, onnxruntime, tf2onnx, numpy).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_venv
build_model_bench
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
exec "$venv/bin/python" bench/concurrency.py "$@"
