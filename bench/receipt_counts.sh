#!/usr/bin/env bash
# What a receipt costs, in counts that the machine's speed does not move: for the digits model
# on the simulated platform over gRPC+TLS (or REST+TLS with --rest), with and without receipts,
#   - instructions per request, server and load generator, each counted by callgrind (valgrind)
#     while the other runs natively;
#   - system calls per request made by the server, by name (strace -f -c).
# Needs valgrind and strace (Debian packages of those names).
#   bash bench/receipt_counts.sh [--rest] [SECONDS]   (SECONDS per measurement, default 8)
# Release binaries are built unless TEESERVE_BIN_DIR names a directory that holds both.
# Crypto note: under valgrind, SHA-256 runs ring's AVX code, not the SHA extensions it uses
# natively, so the hashing's share is larger here than on the machine itself.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
api=grpc
if [ "${1:-}" = --rest ]; then api=rest; shift; fi
secs="${1:-8}"
for tool in valgrind callgrind_control strace; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (apt-get install valgrind strace)" >&2; exit 1; }
done
bin="${TEESERVE_BIN_DIR:-target/release}"
if [ -z "${TEESERVE_BIN_DIR:-}" ]; then
  cargo build --release --quiet -p teeserve -p teeserve-load
fi
tmp="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
"$bin/teeserve" sim init --dir "$tmp/sim" >/dev/null
"$bin/teeserve" tls init --dir "$tmp/tls" >/dev/null 2>&1
read -r grpc rest <<<"$(free_ports 2)"
port="$grpc"
api_flags=()
if [ "$api" = rest ]; then port="$rest"; api_flags=(--rest); fi

# serve [WRAPPER...]: starts the server, under WRAPPER if given.
serve() { serve_sim_digits "$bin" "$tmp" "$grpc" "$rest" "$@"; }
stop() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; }
# load MODE [WRAPPER...]: one measurement; prints the requests answered.
load() {
  local mode="$1"; shift
  local flags=("${api_flags[@]}")
  if [ "$mode" = receipt ]; then flags+=(--receipt); fi
  "$@" "$bin/teeserve-load" --server "127.0.0.1:$port" --model digits \
    --input testdata/digits/sample.json --ca "$tmp/tls/ca.pem" \
    --connections 8 --duration "$secs" "${flags[@]}" >"$tmp/load.json" 2>/dev/null
  python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); assert v["lost"]==0 and v["failed"]==0, v; print(v["answered"])' "$tmp/load.json"
}
per() { python3 -c "import sys; print(f'{int(sys.argv[1]) / int(sys.argv[2]):,.0f}')" "$1" "$2"; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $api+TLS, 8 connections, ${secs}s each"

# 1. The server's instructions: callgrind on the server, counting only during each run.
serve valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$tmp/server.%p"
load plain >/dev/null
for mode in plain receipt; do
  callgrind_control -i on "$pid" &>/dev/null
  callgrind_control -z "$pid" &>/dev/null
  n="$(load "$mode")"
  callgrind_control -i off "$pid" &>/dev/null
  callgrind_control -d "$mode" "$pid" &>/dev/null
  echo "$mode $n" >>"$tmp/server.counts"
done
stop
for mode in plain receipt; do
  n="$(awk -v m="$mode" '$1==m {print $2}' "$tmp/server.counts")"
  f="$(grep -l "^desc: Trigger: .*dump $mode" "$tmp"/server.* | head -1)"
  ir="$(awk '/^totals:/ {print $2}' "$f")"
  echo "server instructions per request, $mode: $(per "$ir" "$n")  ($n requests)"
done

# 2. The load generator's instructions, against a native server (start-up included).
serve
load plain >/dev/null
for mode in plain receipt; do
  n="$(load "$mode" valgrind --tool=callgrind --callgrind-out-file="$tmp/client.$mode")"
  ir="$(awk '/^totals:/ {print $2}' "$tmp/client.$mode")"
  echo "load generator instructions per request, $mode: $(per "$ir" "$n")  ($n requests)"
done

# 3. The server's system calls, counted by strace over one run each.
for mode in plain receipt; do
  strace -f -c -p "$pid" -o "$tmp/strace.$mode" 2>/dev/null &
  tracer=$!
  sleep 1
  n="$(load "$mode")"
  kill -INT "$tracer"
  wait "$tracer" 2>/dev/null || true
  python3 - "$tmp/strace.$mode" "$n" "$mode" <<'EOF'
import sys
rows, n = {}, int(sys.argv[2])
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        rows[f[-1]] = int(f[3])
total = sum(rows.values())
top = ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(rows.items(), key=lambda kv: -kv[1])[:5])
print(f"server system calls per request, {sys.argv[3]}: {total / n:.2f} ({top})")
EOF
done
