#!/usr/bin/env bash
# Runs every fuzz target for a set time, two at a time, under a memory limit, and writes one
# line per target: wall time, CPU time, executions, corpus growth, peak RSS and findings.
#
#   fuzz/campaign.sh [--jobs N] [--target-dir DIR] [TARGET=MINUTES ...]
#
# Without TARGET=MINUTES pairs, the request parsers run 30 minutes each and the other targets
# 10 (the bar of docs/SECURITY.md "Fuzzing"). The fuzzers run at the lowest priority, so builds
# and tests on the same machine keep their speed; the CPU column says what each target got.
# Build first: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build -O [--target-dir DIR]
# Results: fuzz/campaign/<target>.log (libFuzzer's output) and fuzz/campaign/summary.tsv.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
jobs=2
target_dir="$here/target"
plan=()
while [ $# -gt 0 ]; do
  case "$1" in
    --jobs) jobs=$2; shift 2 ;;
    --target-dir) target_dir=$2; shift 2 ;;
    *=*) plan+=("$1"); shift ;;
    *) echo "usage: $0 [--jobs N] [--target-dir DIR] [TARGET=MINUTES ...]" >&2; exit 2 ;;
  esac
done
if [ ${#plan[@]} -eq 0 ]; then
  for t in serving_inputs predict_request rest_body v2_infer accept_header tf_example; do plan+=("$t=30"); done
  for t in quote collateral ratls_cert sealed sealed_file sealed_tamper gramine_pf gramine_pf_file \
    saved_model_ops warmup_file receipt log_proof attestation_document onnx_light; do plan+=("$t=10"); done
fi

bin_dir="$target_dir/x86_64-unknown-linux-gnu/release"
out="$here/campaign"
mkdir -p "$out"
for entry in "${plan[@]}"; do
  t=${entry%%=*}
  [ -x "$bin_dir/$t" ] || { echo "$bin_dir/$t is not built" >&2; exit 1; }
done

run_one() {
  local t=$1 minutes=$2
  local secs=$((minutes * 60))
  mkdir -p "$here/corpus/$t" "$here/artifacts/$t"
  local seeds
  seeds=$(find "$here/corpus/$t" -type f | wc -l)
  local start=$SECONDS
  # -timeout: one input taking 10 s is a finding (a hang); -rss_limit_mb: so is an allocation
  # that a request, rather than a configured bound, sizes.
  /usr/bin/time -f '%U %S' -o "$out/$t.time" \
    nice -n 19 "$bin_dir/$t" -artifact_prefix="$here/artifacts/$t/" -rss_limit_mb=512 \
    -timeout=10 -max_total_time="$secs" -print_final_stats=1 "$here/corpus/$t" \
    >"$out/$t.log" 2>&1 || true
  local wall=$((SECONDS - start))
  local cpu execs rss corpus findings
  cpu=$(awk '{printf "%d", $1 + $2}' "$out/$t.time")
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$t.log" | tail -1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$out/$t.log" | tail -1)
  corpus=$(find "$here/corpus/$t" -type f | wc -l)
  findings=$(grep -cE '^==[0-9]+==ERROR|^SUMMARY: libFuzzer|deadly signal' "$out/$t.log" || true)
  printf '%s\t%d\t%d\t%s\t%d\t%d\t%s\t%s\n' "$t" "$wall" "$cpu" "${execs:-0}" "$seeds" "$corpus" \
    "${rss:-?}" "$findings" >>"$out/summary.tsv"
  echo "$t: ${wall}s wall, ${cpu}s CPU, ${execs:-0} executions, corpus $seeds -> $corpus, findings $findings"
}

printf 'target\twall_s\tcpu_s\texecutions\tcorpus_before\tcorpus_after\tpeak_rss_mb\tfindings\n' \
  >"$out/summary.tsv"
running=0
for entry in "${plan[@]}"; do
  run_one "${entry%%=*}" "${entry#*=}" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n
    running=$((running - 1))
  fi
done
wait
column -t -s $'\t' "$out/summary.tsv"
