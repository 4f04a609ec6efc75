#!/usr/bin/env bash
# A stranger's small requests while one peer keeps long inferences in flight, in one run: the
# digits model on tract (TLS 1.3), one peer (h2load over gRPC, one connection) keeping 3 fill
# Predicts in flight (as many as its share of the memory budget holds) (each 42 bytes declaring [524288, 64] with one value: 128 MB of input and
# a second or more of inference on both cores), another peer (h2load over REST, HTTP/1.1, one
# connection, one request at a time) sending one-row Predicts: back to back (its runs then take
# microseconds), and then 5 a second (runs of a model used now and then take about 0.1 ms: the
# caches are cold). Reports the stranger's latency alone and under the fills (p50, p95, max
# from h2load's per-request log) and the fills answered; for each binary given, alternated.
#   bash bench/strangers.sh [SECONDS] [ROUNDS]     (under the fills per round, default 16; 2)
#   TEESERVE_BIN_DIR=DIR TEESERVE_BEFORE_DIR=DIR2 bash bench/strangers.sh   (compare two builds)
# Needs h2load (Debian: nghttp2-client).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
secs="${1:-16}"
rounds="${2:-2}"
command -v h2load >/dev/null || { echo "needs h2load (Debian: nghttp2-client)" >&2; exit 1; }
bin="${TEESERVE_BIN_DIR:-target/release}"
if [ -z "${TEESERVE_BIN_DIR:-}" ]; then
  cargo build --release --quiet -p teeserve
fi
bins=("$bin")
if [ -n "${TEESERVE_BEFORE_DIR:-}" ]; then bins=("$TEESERVE_BEFORE_DIR" "$bin"); fi
tmp="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
"$bin/teeserve" tls init --dir "$tmp/tls" >/dev/null
python3 - "$tmp" <<'PY'
import struct, sys
d = sys.argv[1]
def varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        out += bytes([b | (0x80 if v else 0)])
        if not v:
            return out
def field(n, payload):  # length-delimited field n
    return varint(n << 3 | 2) + varint(len(payload)) + payload
# tensorflow/core/framework/tensor.proto and tensor_shape.proto, tensorflow_serving/apis/
# predict.proto and model.proto: TensorProto dtype = 1, tensor_shape = 2, float_val = 5
# (packed); TensorShapeProto dim = 2, Dim size = 1; PredictRequest model_spec = 1, inputs = 2
# (a map: key = 1, value = 2); ModelSpec name = 1. DT_FLOAT = 1.
dims = b"".join(field(2, varint(1 << 3) + varint(n)) for n in (524288, 64))
tensor = varint(1 << 3) + varint(1) + field(2, dims) + field(5, struct.pack("<f", 1.0))
req = field(1, field(1, b"digits")) + field(2, field(1, b"pixels") + field(2, tensor))
open(f"{d}/fill.grpc", "wb").write(b"\0" + struct.pack(">I", len(req)) + req)
open(f"{d}/row.json", "w").write('{"instances": [[' + ",".join(["0.5"] * 64) + "]]}")
PY
# The stranger's requests for SECONDS: its latencies (microseconds) in FILE; more h2load
# flags after them (a rate).
stranger() {
  local secs="$1" log="$2"
  shift 2
  rm -f "$log"
  h2load --h1 -c 1 -m 1 -D "$secs" "$@" -H 'content-type: application/json' -d "$tmp/row.json" \
    --log-file "$log" "https://127.0.0.1:$rest/v1/models/digits:predict" >/dev/null 2>&1 || true
}
summary() {
  python3 - "$1" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]) if l.strip()]
ok = sorted(int(r[2]) / 1000 for r in rows if r[1] == "200")
bad = sum(1 for r in rows if r[1] != "200")
q = lambda p: ok[min(len(ok) - 1, int(p * len(ok)))]
print(f"p50 {q(0.5):.2f} ms, p95 {q(0.95):.2f} ms, max {ok[-1]:.2f} ms, "
      f"mean {statistics.mean(ok):.2f} ms, {len(ok)} answered"
      + (f", {bad} not 200" if bad else ""))
PY
}
for round in $(seq "$rounds"); do
  for b in "${bins[@]}"; do
    read -r grpc rest <<<"$(free_ports 2)"
    "$b/teeserve" serve --model_name digits --model_base_path "$PWD/models/digits" \
      --tls_cert "$tmp/tls/server.pem" --tls_key "$tmp/tls/server.key" \
      --grpc_bind_address 127.0.0.1 --rest_api_bind_address 127.0.0.1 \
      --port "$grpc" --rest_api_port "$rest" >"$tmp/serve.out" 2>"$tmp/serve.log" &
    pid=$!
    wait_listening "$tmp"
    stranger 3 "$tmp/alone.log"
    h2load -c 1 -m 3 -D "$((secs + 2))" -H 'content-type: application/grpc' -H 'te: trailers' \
      -d "$tmp/fill.grpc" "https://127.0.0.1:$grpc/tensorflow.serving.PredictionService/Predict" \
      >"$tmp/fills.out" 2>&1 &
    fills=$!
    sleep 2
    stranger "$((secs / 2))" "$tmp/under.log"
    stranger "$((secs / 2))" "$tmp/under_5.log" --rps 5
    wait "$fills" || true
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
    echo "round $round, $b/teeserve:"
    echo "  the stranger alone:          $(summary "$tmp/alone.log")"
    echo "  the stranger under the fills: $(summary "$tmp/under.log")"
    echo "  the same at 5 requests/s:     $(summary "$tmp/under_5.log")"
    echo "  the fills: $(grep -E '^requests:' "$tmp/fills.out" | sed 's/^requests: //')"
  done
done
