#!/usr/bin/env bash
# The cost of a request in one run: teeserve (the digits model on tract) beside nginx answering a
# static 100-byte body (the transport floor: TLS, framing and sockets, no work), on the same TLS
# 1.3 certificate, with the same load tool: h2load -c 32 -m 1, HTTP/2 for gRPC, HTTP/1.1 for
# REST; and beside the library floor (crates/serving/examples/floor.rs: the same rustls, hyper
# and tonic, answering one fixed message, so that nginx / floor is what the libraries cost and
# floor / teeserve what teeserve adds). Then the same teeserve on one core (taskset -c 0) beside
# two, and system calls per request (strace -f -c on each server over a fifth of the count).
#   bash bench/request_cost.sh [REQUESTS]      (per measurement, default 100000)
#   TEESERVE_BIN_DIR=DIR bash bench/request_cost.sh   (DIR/teeserve instead of a release build)
# Needs nginx, h2load (Debian: nginx, nghttp2-client), strace and taskset (util-linux).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
n="${1:-100000}"
traced_n=$((n / 5))
for tool in nginx h2load strace taskset; do
  command -v "$tool" >/dev/null || { echo "needs $tool (Debian: nginx nghttp2-client strace)" >&2; exit 1; }
done
# TEESERVE_BIN_DIR: a teeserve already built (e.g. an earlier commit's, to compare); otherwise
# the release build.
bin="${TEESERVE_BIN_DIR:-target/release}"
if [ -z "${TEESERVE_BIN_DIR:-}" ]; then
  cargo build --release --quiet -p teeserve
fi
cargo build --release --quiet -p teeserve-serving --example floor
tmp="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -f "$tmp/nginx.pid" ]; then kill "$(cat "$tmp/nginx.pid")" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
"$bin/teeserve" tls init --dir "$tmp/tls" >/dev/null
python3 bench/request_cost.py bodies "$tmp"
read -r grpc rest h2 h1 grpc1 rest1 fgrpc frest <<<"$(free_ports 8)"
"$bin/teeserve" serve --model_name digits --model_base_path "$PWD/models/digits" \
  --tls_cert "$tmp/tls/server.pem" --tls_key "$tmp/tls/server.key" \
  --grpc_bind_address 127.0.0.1 --rest_api_bind_address 127.0.0.1 \
  --port "$grpc" --rest_api_port "$rest" >"$tmp/serve.out" 2>"$tmp/serve.log" &
pids+=($!)
serve_pid=$!
# The same server on one core (its runtime sizes itself to the cores it may use), for the
# scaling from one server core to two.
taskset -c 0 "$bin/teeserve" serve --model_name digits --model_base_path "$PWD/models/digits" \
  --tls_cert "$tmp/tls/server.pem" --tls_key "$tmp/tls/server.key" \
  --grpc_bind_address 127.0.0.1 --rest_api_bind_address 127.0.0.1 \
  --port "$grpc1" --rest_api_port "$rest1" >"$tmp/serve1.out" 2>"$tmp/serve1.log" &
pids+=($!)
serve1_pid=$!
target/release/examples/floor "$tmp/tls/server.pem" "$tmp/tls/server.key" "$fgrpc" "$frest" \
  >"$tmp/floor.out" 2>"$tmp/floor.log" &
pids+=($!)
floor_pid=$!
body="$(head -c 100 /dev/zero | tr '\0' 'x')"
cat >"$tmp/nginx.conf" <<CONF
worker_processes $(nproc);
pid $tmp/nginx.pid;
error_log $tmp/nginx.err warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path $tmp/body;
  ssl_certificate $tmp/tls/server.pem;
  ssl_certificate_key $tmp/tls/server.key;
  ssl_protocols TLSv1.3;
  server {
    listen 127.0.0.1:$h2 ssl http2;
    location / { return 200 "$body"; }
  }
  server {
    listen 127.0.0.1:$h1 ssl;
    location / { return 200 "$body"; }
  }
}
CONF
nginx -c "$tmp/nginx.conf" -e "$tmp/nginx.err"
for _ in $(seq 100); do
  grep -q '^listening' "$tmp/serve.out" && grep -q '^listening' "$tmp/serve1.out" &&
    grep -q '^listening' "$tmp/floor.out" &&
    [ -f "$tmp/nginx.pid" ] && break
  sleep 0.1
done
grpc_flags=(-H 'content-type: application/grpc' -H 'te: trailers' -d "$tmp/predict.grpc")
rest_flags=(--h1 -H 'content-type: application/json' -d "$tmp/predict.json")
run() { # NAME URL FLAGS...: h2load, then its figures
  local name="$1" url="$2"; shift 2
  h2load -c 32 -m 1 -n "$n" "$@" "$url" >"$tmp/$name.h2load" 2>&1
  printf '%-14s %s\n' "$name" "$(python3 bench/request_cost.py h2load "$tmp/$name.h2load")"
}
traced() { # NAME "PID..." URL FLAGS...: the same under strace -f -c of those processes
  local name="$1" url="$3" attach=()
  for p in $2; do attach+=(-p "$p"); done
  shift 3
  strace -qq -f -c "${attach[@]}" -o "$tmp/$name.strace" &
  local s=$!
  sleep 1
  h2load -c 32 -m 1 -n "$traced_n" "$@" "$url" >/dev/null 2>&1
  kill -INT "$s"; wait "$s" 2>/dev/null || true
  printf '%-14s syscalls %s\n' "$name" "$(python3 bench/request_cost.py strace "$tmp/$name.strace" "$traced_n")"
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $n requests per run, h2load -c 32 -m 1"
for round in 1 2 3; do
  run "teeserve-grpc" "https://127.0.0.1:$grpc/tensorflow.serving.PredictionService/Predict" "${grpc_flags[@]}"
  run "floor-grpc" "https://127.0.0.1:$fgrpc/tensorflow.serving.PredictionService/Predict" "${grpc_flags[@]}"
  run "nginx-h2" "https://127.0.0.1:$h2/" "${grpc_flags[@]}"
  run "teeserve-rest" "https://127.0.0.1:$rest/v1/models/digits:predict" "${rest_flags[@]}"
  run "floor-rest" "https://127.0.0.1:$frest/v1/models/digits:predict" "${rest_flags[@]}"
  run "nginx-h1" "https://127.0.0.1:$h1/" "${rest_flags[@]}"
done
# From one server core to two (h2load unpinned: on a 2-core machine it shares the cores, so the
# server with two cores loses to it what the one-core server did not). Beside the requests per
# second, the server's own CPU time per request (/proc/PID/stat, user + system): what the server
# would answer with the load tool on cores of its own is its cores over that time, so
# 2 x (1-core time) / (2-core time) is the scaling the server itself allows.
ticks="$(getconf CLK_TCK)"
cpu_us() { awk -v t="$ticks" '{printf "%d", ($14 + $15) * 1000000 / t}' "/proc/$1/stat"; }
scaled() { # NAME PID URL FLAGS...: run, with the server's CPU microseconds per request
  local name="$1" pid="$2" url="$3"
  shift 3
  local before after
  before="$(cpu_us "$pid")"
  run "$name" "$url" "$@"
  after="$(cpu_us "$pid")"
  printf '%-14s server_cpu_us_per_request %s\n' "$name" "$(((after - before) / n))"
}
for round in 1 2 3; do
  scaled "grpc-1core" "$serve1_pid" "https://127.0.0.1:$grpc1/tensorflow.serving.PredictionService/Predict" "${grpc_flags[@]}"
  scaled "grpc-2cores" "$serve_pid" "https://127.0.0.1:$grpc/tensorflow.serving.PredictionService/Predict" "${grpc_flags[@]}"
  scaled "rest-1core" "$serve1_pid" "https://127.0.0.1:$rest1/v1/models/digits:predict" "${rest_flags[@]}"
  scaled "rest-2cores" "$serve_pid" "https://127.0.0.1:$rest/v1/models/digits:predict" "${rest_flags[@]}"
done
# Every gRPC answer was OK (gRPC errors come with HTTP 200): the access log counts them.
sleep 0.5
echo "teeserve gRPC answers with status OK: $(grep -c 'entry="grpc" method="Predict" model="digits" status=OK' "$tmp/serve.log" || true)"
nginx_workers="$(pgrep -P "$(cat "$tmp/nginx.pid")" | tr '\n' ' ')"
traced "teeserve-grpc" "$serve_pid" "https://127.0.0.1:$grpc/tensorflow.serving.PredictionService/Predict" "${grpc_flags[@]}"
traced "teeserve-rest" "$serve_pid" "https://127.0.0.1:$rest/v1/models/digits:predict" "${rest_flags[@]}"
traced "floor-grpc" "$floor_pid" "https://127.0.0.1:$fgrpc/tensorflow.serving.PredictionService/Predict" "${grpc_flags[@]}"
traced "floor-rest" "$floor_pid" "https://127.0.0.1:$frest/v1/models/digits:predict" "${rest_flags[@]}"
traced "nginx-h2" "$nginx_workers" "https://127.0.0.1:$h2/" "${grpc_flags[@]}"
traced "nginx-h1" "$nginx_workers" "https://127.0.0.1:$h1/" "${rest_flags[@]}"
