#!/usr/bin/env bash
# What receipts cost, in one run: the digits model on the simulated platform at concurrency 32
# over gRPC+TLS and REST+TLS, every request asking for a receipt or none, the two alternated
# three times (plain, receipt, plain, ...) so that drift in the machine's speed hits both.
# Prints each measurement, then per API the median requests/s and p50 of each mode and the
# ratio receipt/plain.
#   bash bench/receipts.sh [SECONDS]     (SECONDS per measurement, default 10)
# Release binaries are built unless TEESERVE_BIN_DIR names a directory that holds both.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
secs="${1:-10}"
# TEESERVE_BIN_DIR: binaries already built (a smoke run on a debug build); otherwise release.
bin="${TEESERVE_BIN_DIR:-target/release}"
if [ -z "${TEESERVE_BIN_DIR:-}" ]; then
  cargo build --release --quiet -p teeserve -p teeserve-load
fi
tmp="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
"$bin/teeserve" sim init --dir "$tmp/sim" >/dev/null
"$bin/teeserve" tls init --dir "$tmp/tls" >/dev/null
read -r grpc rest <<<"$(free_ports 2)"
serve_sim_digits "$bin" "$tmp" "$grpc" "$rest"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
for api in grpc rest; do
  port="$grpc"
  extra=()
  if [ "$api" = rest ]; then port="$rest"; extra=(--rest); fi
  for round in 1 2 3; do
    for mode in plain receipt; do
      flags=("${extra[@]}")
      if [ "$mode" = receipt ]; then flags+=(--receipt); fi
      "$bin/teeserve-load" --server "127.0.0.1:$port" --model digits \
        --input testdata/digits/sample.json --ca "$tmp/tls/ca.pem" \
        --connections 32 --duration "$secs" "${flags[@]}" \
        >"$tmp/$api-$mode-$round.json" 2>"$tmp/$api-$mode-$round.log"
      python3 - "$tmp/$api-$mode-$round.json" "$api" "$mode" "$round" <<'RUN'
import json, sys
v = json.load(open(sys.argv[1]))
assert v["lost"] == 0, v
rps, p50 = v["throughput_rps"], v["latency_ms"]["p50"]
print(f"{sys.argv[2]:5} {sys.argv[3]:8} round {sys.argv[4]}: {rps:9.1f} req/s  p50 {p50:.3f} ms")
RUN
    done
  done
done
python3 - "$tmp" <<'EOF'
import json, statistics, sys
tmp = sys.argv[1]
for api in ("grpc", "rest"):
    med = {}
    for mode in ("plain", "receipt"):
        runs = [json.load(open(f"{tmp}/{api}-{mode}-{r}.json")) for r in (1, 2, 3)]
        med[mode] = (statistics.median(v["throughput_rps"] for v in runs),
                     statistics.median(v["latency_ms"]["p50"] for v in runs))
    (p, pl), (r, rl) = med["plain"], med["receipt"]
    print(f"{api}: plain {p:.1f} req/s (p50 {pl:.3f} ms), receipts {r:.1f} req/s "
          f"(p50 {rl:.3f} ms): {r / p:.3f}x")
EOF
