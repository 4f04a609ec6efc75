#!/usr/bin/env bash
# What a receipt adds to one image's answer: ResNet-50 and MobileNetV2 (ONNX Runtime engine, batch
# 1) on the simulated platform over gRPC+TLS, one requester alternating a request without a
# receipt and one with (model_bench client, TEESERVE_BENCH_RECEIPT=alternate). Each pair is two
# requests a moment apart, so the machine's drift hits both; prints the p50 of each half and the
# median of the pairs' ratios (receipt / plain).
#   bash bench/receipt_latency.sh [SECONDS] [ROUNDS]   (SECONDS per model and round, default 30;
#                                                      ROUNDS, default 1)
#   TEESERVE_BIN_DIR=DIR TEESERVE_BEFORE_DIR=DIR2 bash bench/receipt_latency.sh 20 3
#     (two builds' servers, DIR2's then DIR's in each round: the same requester, the same hour)
#   TEESERVE_BENCH_RECEIPT=control bash bench/receipt_latency.sh   (the same pairs, no receipt
#     asked by either: what the method gives for no difference)
# Uses the virtualenv and models of bench/serving.sh (onnxruntime's library; the models are
# exported on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
secs="${1:-30}"
rounds="${2:-1}"
bench_venv
# The requester is this tree's model_bench; the servers are TEESERVE_BIN_DIR's (and
# TEESERVE_BEFORE_DIR's) when given, built as they are.
if [ -z "${TEESERVE_BIN_DIR:-}" ] || [ ! -x target/release/examples/model_bench ]; then
  build_model_bench
fi
bin="${TEESERVE_BIN_DIR:-target/release}"
bins=("$bin")
if [ -n "${TEESERVE_BEFORE_DIR:-}" ]; then bins=("$TEESERVE_BEFORE_DIR" "$bin"); fi
ort_lib="$("$venv/bin/python" -c '
import sys; sys.path.insert(0, "bench")
from serving import ORT_LIB, onnx_path
for m in ("resnet50", "mobilenetv2"):
    onnx_path(m)
print(ORT_LIB)' 2>/dev/null | tail -1)"
tmp="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
"$bin/teeserve" sim init --dir "$tmp/sim" >/dev/null
"$bin/teeserve" tls init --dir "$tmp/tls" >/dev/null
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); ${secs}s per model"
for round in $(seq "$rounds"); do
for model in resnet50 mobilenetv2; do
for server in "${bins[@]}"; do
  read -r grpc rest <<<"$(free_ports 2)"
  "$server/teeserve" serve --platform simulated --sim_dir "$tmp/sim" \
    --model_name "$model" --model_base_path "$PWD/target/bench-models/$model" \
    --engine onnxruntime --onnxruntime_lib "$ort_lib" \
    --tls_cert "$tmp/tls/server.pem" --tls_key "$tmp/tls/server.key" --attest_host_tls_key \
    --attestation_collateral "$tmp/sim/collateral.json" \
    --grpc_bind_address 127.0.0.1 --rest_api_bind_address 127.0.0.1 \
    --port "$grpc" --rest_api_port "$rest" >"$tmp/serve.out" 2>"$tmp/serve.log" &
  pid=$!
  wait_listening "$tmp"
  out="$(TEESERVE_BENCH_RECEIPT="${TEESERVE_BENCH_RECEIPT:-alternate}" target/release/examples/model_bench client "127.0.0.1:$grpc" \
    "$tmp/tls/ca.pem" "$model" input 1 1 "$secs")"
  label="$model"
  if [ "${#bins[@]}" -gt 1 ]; then label="round $round, $model, $server"; fi
  python3 - "$label" "$out" <<'PY'
import json, sys
v = json.loads(sys.argv[2])
print(f"{sys.argv[1]}: p50 without receipts {v['p50_ms_plain']:.2f} ms, with {v['p50_ms_receipt']:.2f} ms "
      f"({v['p50_ms_receipt'] / v['p50_ms_plain'] - 1:+.2%}); median of {v['pairs']} pairs' ratios "
      f"{v['pair_ratio_median']:.4f} ({v['pair_ratio_median'] - 1:+.2%})")
PY
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
done
done
done
