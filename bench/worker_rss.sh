#!/usr/bin/env bash
# The server's memory with two workers against one (ONNX Runtime engine): VmHWM and VmRSS after
# loading MobileNetV2 and ResNet-50 and after 4 requesters, at 1 worker, 2 workers with the
# default threads (two sessions of each model over one copy of its weights) and 2 workers with
# --onnxruntime_intra_op_parallelism 2 (one session).
#   bash bench/worker_rss.sh [SECONDS]   (SECONDS of requests, default 4)
# Uses the cached virtualenv and models of bench/serving.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_venv
build_model_bench
for model in mobilenetv2 resnet50; do
  "$venv/bin/python" bench/worker_rss.py "$model" "${1:-4}"
done
