#!/usr/bin/env bash
# The reference architecture's cluster, built from real parts on one Linux machine, and broken
# the way operators break clusters.
#
# Hosts are network namespaces on one bridge: the key broker, three server replicas (each
# attests to the broker over RA-TLS on the simulated platform, receives the model key and the
# shared TLS key, and serves the sealed model), a balancer (nginx's stream module with
# ssl_preread: TLS passes through to the replicas, routed by SNI, as ingress-nginx's
# ssl-passthrough does) with a readiness watcher that keeps only ready replicas in its
# upstreams, and a requester (teeserve-load: attests every connection, retries, counts every
# request). Six scenarios run against it, then everything it made is removed, also when a
# step fails or the run is interrupted.
#
#   sudo deploy/cluster/run.sh                  # needs root, iproute2, nginx with its stream module, curl, python3
#   deploy/cluster/run.sh --print-config        # the replicas' command line and probes, as JSON (no root)
#
# Environment:
#   TEESERVE_BIN_DIR       where teeserve and teeserve-load are (default: target/release when
#                          both are there, else target/debug)
#   TEESERVE_CLUSTER_WORK  working directory, which must not exist yet: it is made private (0700)
#                          and removed at the end (default: a new one from mktemp -d in $TMPDIR)
#   TEESERVE_CLUSTER_NET   the first three octets of the /24 the hosts live in (default 10.213.7)
#   TEESERVE_CLUSTER_THROUGHPUT_SECONDS  seconds of load for the 1- and 3-replica throughput
#                          measurement (default 5; 0 skips it)
#   TEESERVE_CLUSTER_SCENARIOS  which scenarios to run (default "1 2 3 4 5 6")
#   TEESERVE_CLUSTER_KEEP=1  keep the working directory (logs, audit log, load summaries)
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
SCRIPT="$REPO/deploy/cluster/$(basename "$0")"
PREFIX=tsc                      # every namespace, link and file this harness makes starts with it
BRIDGE="$PREFIX-br0"
NET="${TEESERVE_CLUSTER_NET:-10.213.7}"
# Set by make_work (or, for the readiness watcher, by the run that starts it).
WORK="${TEESERVE_CLUSTER_WORK:-}"
THROUGHPUT_SECONDS="${TEESERVE_CLUSTER_THROUGHPUT_SECONDS:-5}"
SCENARIOS="${TEESERVE_CLUSTER_SCENARIOS:-1 2 3 4 5 6}"
MODEL=digits
SNI=teeserve.cluster.test       # the name requesters ask for; the balancer routes on it
GRPC_PORT=8500
REST_PORT=8501
KBS_PORT=4430
READY_PATH=/readyz              # deploy/kubernetes/server.yaml's readinessProbe
REPLICAS=(r1 r2 r3)             # deploy/kubernetes/kustomization.yaml's replica count
IMPOSTOR=r4
# Seconds between the replicas' scans of their model directory: the value of the flag below.
POLL_SECONDS=30

declare -A ADDR=([broker]="$NET.10" [r1]="$NET.11" [r2]="$NET.12" [r3]="$NET.13" [r4]="$NET.14"
                 [lb]="$NET.20" [req]="$NET.30")
HOSTS=(broker r1 r2 r3 r4 lb req)

# The replicas' command line: deploy/kubernetes's, which is the server image's Gramine manifest
# (deploy/gramine/teeserve.manifest.template, loader.argv), with the simulated platform in
# place of Gramine's. Paths are the manifest's mounts seen from the host (/etc/teeserve is
# etc/, /models is models/), relative to the replica's directory. deploy/check.sh compares the
# two (deploy/cluster/check_config.py).
serve_args() {
  printf '%s\n' serve \
    --platform simulated \
    --kbs "${ADDR[broker]}:$KBS_PORT" \
    --kbs_ca etc/kbs-ca.pem \
    --kbs_tls_key_secret tls-key \
    --tls_cert etc/server.pem \
    --model_name "$MODEL" \
    --model_base_path "models/$MODEL" \
    --port "$GRPC_PORT" \
    --rest_api_port "$REST_PORT" \
    --file_system_poll_wait_seconds "$POLL_SECONDS"
}

print_config() {
  local first=1 a
  printf '{"replicas": %d, "model_name": "%s", "ports": {"grpc": %d, "rest": %d}, ' \
    "${#REPLICAS[@]}" "$MODEL" "$GRPC_PORT" "$REST_PORT"
  printf '"readiness": {"path": "%s", "port": %d, "scheme": "HTTPS"}, "serve": [' \
    "$READY_PATH" "$REST_PORT"
  while IFS= read -r a; do
    if [ "$first" = 1 ]; then first=0; else printf ', '; fi
    printf '"%s"' "$a"
  done < <(serve_args)
  printf ']}\n'
}

# probe REPLICA: its readiness endpoint, as the kubelet's readinessProbe asks it (from the
# balancer's namespace).
probe() {
  curl -sf -o /dev/null -m 1 --cacert "$WORK/lb/ca.pem" \
    --resolve "$SNI:$REST_PORT:${ADDR[$1]}" "https://$SNI:$REST_PORT$READY_PATH"
}

# The balancer's upstreams: the ready replicas (an empty group has one server marked down).
write_upstreams() {
  local port group r f="$WORK/lb/upstreams.conf.new"
  : >"$f"
  for group in grpc rest; do
    port=$GRPC_PORT
    [ "$group" = rest ] && port=$REST_PORT
    {
      echo "upstream ${group}_ready {"
      echo "    zone ${group}_ready 64k;"
      for r in "$@"; do
        echo "    server ${ADDR[$r]}:$port max_fails=1 fail_timeout=5s;"
      done
      [ "$#" -gt 0 ] || echo "    server 127.0.0.1:$port down;"
      echo "}"
    } >>"$f"
  done
  mv "$f" "$WORK/lb/upstreams.conf"
}

# The readiness watcher: what a Service's endpoints controller does, for nginx. Every 0.2 s it
# probes each candidate replica (the pods the Service selects); when the ready set changes, it
# rewrites the upstreams and reloads nginx. nginx's passive checks (max_fails) cover the time
# between a replica's death and the next probe. It runs in the balancer's namespace
# (`run.sh --watch START_NS`), like everything this harness starts, so that a run after a crash
# finds and ends it there.
watch_readiness() {
  local last="-" ready r candidates
  # It keeps watching whatever one probe or one reload does.
  set +e
  trap 'exit 0' TERM
  while :; do
    ready=""
    read -r -a candidates <"$WORK/lb/candidates"
    for r in "${candidates[@]}"; do
      if probe "$r"; then ready="$ready $r"; fi
    done
    ready="${ready# }"
    if [ "$ready" != "$last" ]; then
      # shellcheck disable=SC2086 # one argument per replica
      write_upstreams $ready
      kill -HUP "$(cat "$WORK/lb/nginx.pid")"
      echo "$(( ($(date +%s%N) - START_NS) / 1000000 )) ${ready:-none}" >>"$WORK/lb/watcher.log"
      echo "$ready" >"$WORK/lb/ready.new"
      mv "$WORK/lb/ready.new" "$WORK/lb/ready"
      last=$ready
    fi
    sleep 0.2
  done
}

if [ "${1:-}" = "--print-config" ]; then
  print_config
  exit 0
fi
if [ "${1:-}" = "--watch" ] && [ "$#" = 2 ]; then
  START_NS=$2
  watch_readiness
fi
if [ "$#" -gt 0 ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
fi

# ---------------------------------------------------------------------------------------------
# Output, timing, waiting

START_NS=$(date +%s%N)
elapsed() { echo $(( ($(date +%s%N) - START_NS) / 1000000 )); }   # ms since the start
say() { local ms; ms=$(elapsed); printf '[%4d.%ds] %s\n' $((ms / 1000)) $(((ms % 1000) / 100)) "$*"; }
die() { say "error: $*" >&2; exit 1; }

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.1 s until it succeeds.
wait_for() {
  local limit=$1 what=$2 deadline
  shift 2
  deadline=$(( $(date +%s%N) + limit * 1000000000 ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s%N)" -gt "$deadline" ]; then
      say "timed out after ${limit}s waiting for $what"
      return 1
    fi
    sleep 0.1
  done
}

# jget FILE EXPR: a value from a JSON file (EXPR in Python over d, the parsed document).
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {"d": d}))' "$1" "$2"; }

in_ns() { local host=$1; shift; ip netns exec "$PREFIX-$host" "$@"; }

# ---------------------------------------------------------------------------------------------
# Cleanup: processes by their id, then whatever is left in this harness's namespaces (also
# after a run that crashed), the namespaces, the bridge, the working directory.

declare -A PIDS=()
WATCHER_PID=""

remove_network() {
  local ns pid
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PREFIX-" || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null || true); do
      kill -9 "$pid" 2>/dev/null || true
    done
    ip netns del "$ns" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  if command -v iptables >/dev/null; then
    while iptables -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null; do :; done
  fi
}

cleanup() {
  local code=$? name
  trap - EXIT INT TERM
  if [ -n "$WATCHER_PID" ]; then
    kill "$WATCHER_PID" 2>/dev/null || true
    wait "$WATCHER_PID" 2>/dev/null || true
  fi
  for name in "${!PIDS[@]}"; do
    kill "${PIDS[$name]}" 2>/dev/null || true
  done
  for name in "${!PIDS[@]}"; do
    wait "${PIDS[$name]}" 2>/dev/null || true
  done
  remove_network
  if [ -z "$WORK_MADE" ]; then
    :
  elif [ "${TEESERVE_CLUSTER_KEEP:-0}" = 1 ]; then
    echo "kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$code"
}

# The working directory: made here, atomically, private to root, and never one that existed
# before. Binaries are copied into it and run from it, and the balancer's configuration is
# read from it, so a directory another local user made first (or could write to) would let
# them run code as root.
WORK_MADE=""
make_work() {
  if [ -n "$WORK" ]; then
    mkdir -m 0700 "$WORK" || die "TEESERVE_CLUSTER_WORK=$WORK: cannot make it (it must not exist yet)"
  else
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/teeserve-cluster.XXXXXXXX")"
  fi
  WORK_MADE=1
  # mkdir and mktemp never follow or reuse what is there; check anyway, before anything is
  # written into it.
  if [ -L "$WORK" ] || [ ! -d "$WORK" ]; then
    die "$WORK is not a directory"
  fi
  [ "$(stat -c '%u %a' "$WORK")" = "$(id -u) 700" ] \
    || die "$WORK is not this user's with mode 0700: $(stat -c '%U %a' "$WORK")"
}

# nginx_stream_module: the load_module line the balancer needs (empty when the stream
# module is built in), found by asking nginx to load a configuration with a stream block;
# nginx -V lists the stream modules it was built with even when they are dynamic modules
# that are not installed or not loaded.
nginx_stream_module() {
  local d="$WORK/nginx-check" m
  mkdir -p "$d"
  for m in "" /usr/lib/nginx/modules/ngx_stream_module.so /usr/lib64/nginx/modules/ngx_stream_module.so; do
    [ -z "$m" ] || [ -f "$m" ] || continue
    {
      [ -z "$m" ] || echo "load_module $m;"
      echo "pid $d/nginx.pid;"
      echo "events { worker_connections 16; }"
      echo "stream { server { listen 127.0.0.1:9; ssl_preread on; proxy_pass 127.0.0.1:9; } }"
    } >"$d/nginx.conf"
    if nginx -t -q -p "$d/" -c "$d/nginx.conf" -e "$d/error.log" >>"$d/test.log" 2>&1; then
      echo "$m"
      return 0
    fi
  done
  return 1
}

# ---------------------------------------------------------------------------------------------
# Preconditions

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, a bridge, nginx in a namespace)"
for tool in ip nginx curl python3 ss; do
  command -v "$tool" >/dev/null || die "needs $tool"
done
if [ -z "${TEESERVE_BIN_DIR:-}" ]; then
  if [ -x "$REPO/target/release/teeserve" ] && [ -x "$REPO/target/release/teeserve-load" ]; then
    TEESERVE_BIN_DIR="$REPO/target/release"
  else
    TEESERVE_BIN_DIR="$REPO/target/debug"
  fi
fi
BIN="$(cd "$TEESERVE_BIN_DIR" && pwd)"
if [ ! -x "$BIN/teeserve" ] || [ ! -x "$BIN/teeserve-load" ]; then
  die "no teeserve and teeserve-load in $BIN (cargo build --release -p teeserve -p teeserve-load, or set TEESERVE_BIN_DIR)"
fi

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
remove_network
make_work
STREAM_MODULE="$(nginx_stream_module)" \
  || die "nginx cannot load a stream block with ssl_preread (Debian: apt-get install libnginx-mod-stream): $(tail -n 3 "$WORK/nginx-check/test.log")"
mkdir -p "$WORK"/{owner,lb,requester,logs,loads,bin}
say "binaries: $BIN; working directory: $WORK"

# ---------------------------------------------------------------------------------------------
# The network: one namespace per host, each with a veth on the bridge. The bridge has no
# address: nothing here is reachable from, or listens on, the root namespace.

ip link add "$BRIDGE" type bridge
ip link set "$BRIDGE" up
if [ "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || echo 0)" = 1 ] &&
   command -v iptables >/dev/null; then
  # br_netfilter hands bridged frames to iptables, whose FORWARD policy may drop them.
  iptables -I FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
fi
for h in "${HOSTS[@]}"; do
  ip netns add "$PREFIX-$h"
  ip link add "$PREFIX-$h" type veth peer name eth0 netns "$PREFIX-$h"
  ip link set "$PREFIX-$h" master "$BRIDGE" up
  in_ns "$h" ip addr add "${ADDR[$h]}/24" dev eth0
  in_ns "$h" ip link set eth0 up
  in_ns "$h" ip link set lo up
done
say "network: ${#HOSTS[@]} namespaces on $BRIDGE ($NET.0/24)"

# ---------------------------------------------------------------------------------------------
# The owner: the simulated platform the TEE hosts run on, TLS, the model key, the sealed model
# (versions 1 and 2; the replicas get version 2 in scenario 4), the broker's policy.

O="$WORK/owner"
T="$BIN/teeserve"
"$T" sim init --dir "$O/platform" >"$WORK/logs/owner.log" 2>&1
"$T" tls init --dir "$O/tls" --name kbs --name server --san "$SNI" --san "${ADDR[broker]}" \
  >>"$WORK/logs/owner.log" 2>&1
"$T" keygen --out "$O/model.key" >>"$WORK/logs/owner.log" 2>&1
for v in 1 2; do
  mkdir -p "$O/plain/$MODEL/$v"
  cp "$REPO/models/digits/1/model.onnx" "$O/plain/$MODEL/$v/model.onnx"
done
"$T" seal --key "$O/model.key" "$O/plain/$MODEL" "$O/sealed/$MODEL" >>"$WORK/logs/owner.log" 2>&1
MEASUREMENT="$("$T" attest measure)"
cat >"$O/kbs.toml" <<EOF
listen = "${ADDR[broker]}:$KBS_PORT"
tls_cert = "tls/kbs.pem"
tls_key = "tls/kbs.key"
audit_log = "audit.jsonl"
[collateral]
bundle = "platform/collateral.json"
root = "platform/root.pem"
[secrets.model-key]
file = "model.key"
[secrets.tls-key]
file = "tls/server.key"
[[policies]]
name = "tfserving"
mrenclave = ["$MEASUREMENT"]
allow_simulated = true
tcb_status = ["UpToDate"]
secrets = ["model-key", "tls-key"]
EOF
say "owner: model sealed (versions 1 and 2), policy admits MRENCLAVE $MEASUREMENT"

# Each replica's directory holds what a TEE host holds: the simulated platform, the broker's
# CA and the server's certificate (public), and the sealed model. No key.
for r in "${REPLICAS[@]}" "$IMPOSTOR"; do
  mkdir -p "$WORK/$r/etc" "$WORK/$r/models/$MODEL"
  cp -r "$O/platform" "$WORK/$r/platform"
  cp "$O/tls/ca.pem" "$WORK/$r/etc/kbs-ca.pem"
  cp "$O/tls/server.pem" "$WORK/$r/etc/server.pem"
  cp -r "$O/sealed/$MODEL/1" "$WORK/$r/models/$MODEL/1"
  echo 'prometheus_config { enable: true }' >"$WORK/$r/etc/monitoring.config"
done
# The impostor: a modified build, so its measurement is not the admitted one.
cp "$T" "$WORK/bin/teeserve-modified"
printf 'modified\n' >>"$WORK/bin/teeserve-modified"

# The requester: the CA, the platform's root and collateral, a policy that admits exactly the
# owner's build, one input.
R="$WORK/requester"
cp "$O/tls/ca.pem" "$O/platform/root.pem" "$O/platform/collateral.json" "$R/"
cp "$REPO/testdata/digits/sample.npy" "$R/input.npy"
cp "$REPO/testdata/digits/heldout-pixels.npy" "$R/heldout.npy"
printf 'name = "requester"\nmrenclave = ["%s"]\nallow_simulated = true\n' "$MEASUREMENT" >"$R/policy.toml"

# ---------------------------------------------------------------------------------------------
# Processes

start_broker() {
  ( cd "$O" && exec ip netns exec "$PREFIX-broker" "$T" kbs --config kbs.toml ) \
    >>"$WORK/logs/broker.log" 2>&1 &
  PIDS[broker]=$!
  wait_for 20 "the key broker" in_ns broker bash -c "ss -Htln | grep -q '${ADDR[broker]}:$KBS_PORT'"
}

# start_replica NAME [BINARY]: with the manifest's command line, plus the metrics, which the
# harness reads to count each replica's share (the image leaves them off, as TF Serving does).
start_replica() {
  local r=$1 exe=${2:-$T} args
  mapfile -t args < <(serve_args)
  args+=(--monitoring_config_file etc/monitoring.config)
  ( cd "$WORK/$r" && exec ip netns exec "$PREFIX-$r" env TEESERVE_SIM_DIR=platform "$exe" "${args[@]}" ) \
    >>"$WORK/logs/$r.log" 2>&1 &
  PIDS[$r]=$!
}

# stop NAME [SIGNAL]: signals the process and waits for it; its exit status is left in STATUS.
STATUS=""
stop() {
  local name=$1 sig=${2:-TERM} pid=${PIDS[$1]:-}
  STATUS=none
  [ -n "$pid" ] || return 0
  kill -s "$sig" "$pid" 2>/dev/null || true
  STATUS=0
  wait "$pid" 2>/dev/null || STATUS=$?
  unset "PIDS[$name]"
}

running() { [ -n "${PIDS[$1]:-}" ] && kill -0 "${PIDS[$1]}" 2>/dev/null; }

# reap NAME: waits for the process to end by itself; its exit status is left in STATUS.
reap() {
  local pid=${PIDS[$1]:-}
  STATUS=none
  [ -n "$pid" ] || return 0
  STATUS=0
  wait "$pid" 2>/dev/null || STATUS=$?
  unset "PIDS[$1]"
}

# A host's log: its length now (a mark), and what it says after a mark.
log_mark() { wc -l <"$WORK/logs/$1.log" 2>/dev/null || echo 0; }
log_since() { tail -n "+$(($2 + 1))" "$WORK/logs/$1.log" 2>/dev/null; }
retries_since() { [ "$(log_since "$1" "$2" | grep -c 'key broker unreachable')" -ge "$3" ]; }

set_candidates() { echo "$*" >"$WORK/lb/candidates.new" && mv "$WORK/lb/candidates.new" "$WORK/lb/candidates"; }
# The replicas behind the balancer now (as long as the watcher runs: a stale answer is none).
ready_set() {
  if kill -0 "$WATCHER_PID" 2>/dev/null; then
    cat "$WORK/lb/ready" 2>/dev/null
  else
    say "the readiness watcher is not running" >&2
    echo "(watcher gone)"
  fi
}
is_ready_set() { [ "$(ready_set)" = "$*" ]; }
is_ready() { [[ " $(ready_set) " == *" $1 "* ]]; }

start_balancer() {
  cp "$O/tls/ca.pem" "$WORK/lb/ca.pem"
  set_candidates "${REPLICAS[@]}"
  write_upstreams
  {
    [ -n "$STREAM_MODULE" ] && echo "load_module $STREAM_MODULE;"
    cat <<EOF
daemon off;
worker_processes 1;
pid $WORK/lb/nginx.pid;
error_log $WORK/lb/error.log notice;
worker_shutdown_timeout 30s;
events { worker_connections 4096; }
# TLS pass-through, as ingress-nginx's ssl-passthrough: the ClientHello's SNI picks the
# backend, the bytes go through untouched, TLS ends inside the replica.
stream {
    log_format pass '\$remote_addr \$ssl_preread_server_name \$upstream_addr \$status';
    access_log $WORK/lb/access.log pass;
    map \$ssl_preread_server_name \$grpc_backend {
        $SNI grpc_ready;
        default refused;
    }
    map \$ssl_preread_server_name \$rest_backend {
        $SNI rest_ready;
        default refused;
    }
    upstream refused { server 127.0.0.1:9 down; }
    include $WORK/lb/upstreams.conf;
    server {
        listen ${ADDR[lb]}:$GRPC_PORT;
        ssl_preread on;
        proxy_pass \$grpc_backend;
        proxy_connect_timeout 1s;
        proxy_next_upstream on;
        proxy_next_upstream_tries 3;
    }
    server {
        listen ${ADDR[lb]}:$REST_PORT;
        ssl_preread on;
        proxy_pass \$rest_backend;
        proxy_connect_timeout 1s;
        proxy_next_upstream on;
        proxy_next_upstream_tries 3;
    }
}
EOF
  } >"$WORK/lb/nginx.conf"
  in_ns lb nginx -t -q -p "$WORK/lb/" -c "$WORK/lb/nginx.conf" -e "$WORK/lb/error.log" \
    || die "nginx refuses the configuration (see $WORK/lb/error.log)"
  ( exec ip netns exec "$PREFIX-lb" nginx -p "$WORK/lb/" -c "$WORK/lb/nginx.conf" -e "$WORK/lb/error.log" ) \
    >>"$WORK/logs/nginx.log" 2>&1 &
  PIDS[nginx]=$!
  wait_for 10 "nginx" test -s "$WORK/lb/nginx.pid"
  ( exec ip netns exec "$PREFIX-lb" env TEESERVE_CLUSTER_WORK="$WORK" TEESERVE_CLUSTER_NET="$NET" \
      bash "$SCRIPT" --watch "$START_NS" ) >>"$WORK/logs/watcher.log" 2>&1 &
  WATCHER_PID=$!
}

# ---------------------------------------------------------------------------------------------
# Load

LOAD_PID=""
LOAD_NAME=""
# load_start NAME [teeserve-load flags...]: the requester, through the balancer, in the
# background; its summary goes to loads/NAME.json. LOAD_PORT (default the gRPC port; with
# --rest, the REST port) and LOAD_INPUT (a file of the requester's) change the defaults.
load_start() {
  LOAD_NAME=$1
  shift
  ( cd "$R" && exec ip netns exec "$PREFIX-req" "$BIN/teeserve-load" \
      --server "${ADDR[lb]}:${LOAD_PORT:-$GRPC_PORT}" --server-name "$SNI" --model "$MODEL" \
      --ca ca.pem --attest policy.toml --root root.pem --collateral collateral.json \
      --input "${LOAD_INPUT:-input.npy}" \
      --latencies "$WORK/loads/$LOAD_NAME.lat" "$@" ) \
    >"$WORK/loads/$LOAD_NAME.json" 2>"$WORK/loads/$LOAD_NAME.log" &
  LOAD_PID=$!
  PIDS[load-$LOAD_NAME]=$LOAD_PID
  wait_for 30 "the load to start" grep -q '^teeserve-load:' "$WORK/loads/$LOAD_NAME.log"
}
load_phase() { kill -USR1 "$LOAD_PID"; }
# load_end [stop]: waits for the load (or stops it first) and checks that it printed a summary.
load_end() {
  [ "${1:-}" = stop ] && kill -INT "$LOAD_PID" 2>/dev/null
  wait "$LOAD_PID" || true
  unset "PIDS[load-$LOAD_NAME]"
  if ! python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$WORK/loads/$LOAD_NAME.json" 2>/dev/null; then
    say "the load printed no summary: $(tail -n 3 "$WORK/loads/$LOAD_NAME.log")"
    echo '{"requests": 0, "lost": 1, "answered": 0, "failed": 1, "wrong": 0, "phases": []}' \
      >"$WORK/loads/$LOAD_NAME.json"
  fi
}
L() { jget "$WORK/loads/$LOAD_NAME.json" "$1"; }
load_line() {
  say "  load: $(L 'd["requests"]') requests, $(L 'd["answered"]') answered correctly, $(L 'd["failed"]') failed, $(L 'd["wrong"]') wrong, $(L 'd["retried"]') retries, $(L 'd["throughput_rps"]') req/s, p99 $(L 'd["latency_ms"]["p99"]') ms"
}

# Requests that returned OK on a replica (its Prometheus metrics, read directly).
served() {
  in_ns lb curl -sf -m 2 --cacert "$WORK/lb/ca.pem" --resolve "$SNI:$REST_PORT:${ADDR[$1]}" \
    "https://$SNI:$REST_PORT/monitoring/prometheus/metrics" |
    awk 'index($0, ":tensorflow:serving:request_count{") == 1 && index($0, "status=\"OK\"") {n += $NF}
         END {print n + 0}'
}

# The state of a version of the model on a replica (TF Serving's GetModelStatus over REST).
version_state() {
  in_ns lb curl -sf -m 2 --cacert "$WORK/lb/ca.pem" --resolve "$SNI:$REST_PORT:${ADDR[$1]}" \
    "https://$SNI:$REST_PORT/v1/models/$MODEL" |
    python3 -c 'import json,sys; v=[s["state"] for s in json.load(sys.stdin)["model_version_status"] if str(s["version"])==sys.argv[1]]; print(v[0] if v else "NONE")' "$2"
}
serves_version() { [ "$(version_state "$1" "$2")" = AVAILABLE ]; }

# audit_has HOST DECISION [RULE]: the broker's audit log has such a decision about HOST.
audit_has() {
  python3 - "$O/audit.jsonl" "${ADDR[$1]}" "$2" "${3:-}" <<'PY'
import json, sys
path, addr, decision, rule = sys.argv[1:5]
for line in open(path):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if (str(r.get("peer", "")).rsplit(":", 1)[0] == addr and r.get("decision") == decision
            and (not rule or r.get("rule") == rule)):
        sys.exit(0)
sys.exit(1)
PY
}

listening() { in_ns "$1" ss -Htln | grep -q .; }

# ---------------------------------------------------------------------------------------------
# Scenarios

PASSED=0
RAN=0
FAILED_NAMES=()
SCENARIO_OK=1
# check DESCRIPTION COMMAND...: one assertion of the current scenario.
check() {
  local what=$1
  shift
  if "$@"; then
    say "  ok   $what"
  else
    say "  FAIL $what"
    SCENARIO_OK=0
  fi
}
lost_none() { [ "$(L 'd["lost"]')" = 0 ] && [ "$(L 'd["answered"]')" -gt 0 ]; }
phase_lost_none() { [ "$(L "d['phases'][$1]['lost']")" = 0 ]; }
scenario() {   # scenario NUMBER TITLE FUNCTION
  [[ " $SCENARIOS " == *" $1 "* ]] || return 0
  RAN=$((RAN + 1))
  restore
  say "scenario $1: $2"
  SCENARIO_OK=1
  # A scenario's commands do not stop the run when they fail; its checks decide.
  "$3" || true
  if [ "$SCENARIO_OK" = 1 ]; then
    PASSED=$((PASSED + 1))
    say "scenario $1: passed"
  else
    FAILED_NAMES+=("$1")
    say "scenario $1: FAILED"
  fi
}

# Brings the cluster back to its normal shape (broker up, the three replicas serving and
# ready), whatever the previous scenario left.
normal() {
  set_candidates "${REPLICAS[@]}"
  running broker || start_broker
  local r
  for r in "${REPLICAS[@]}"; do
    running "$r" || start_replica "$r"
  done
  wait_for 60 "all replicas ready" is_ready_set "${REPLICAS[@]}"
  sleep 0.3   # nginx's reload
}

s1_steady() {
  local before=() after r i
  for r in "${REPLICAS[@]}"; do before+=("$(served "$r")"); done
  LOAD_PORT=$REST_PORT load_start s1-rest --rest --connections 2 --duration 6
  local rest_name=$LOAD_NAME rest_pid=$LOAD_PID
  load_start s1-grpc --connections 6 --duration 6
  load_end
  load_line
  check "gRPC through the balancer: every request answered correctly" lost_none
  LOAD_NAME=$rest_name LOAD_PID=$rest_pid
  load_end
  load_line
  check "REST through the balancer: every request answered correctly" lost_none
  i=0
  for r in "${REPLICAS[@]}"; do
    after=$(served "$r")
    say "  $r served $((after - before[i])) requests"
    check "$r served a share" test "$((after - before[i]))" -gt 0
    i=$((i + 1))
  done
}

# CPU clock ticks the processes have used so far (their threads included).
cpu_ticks() {
  local t=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}

# The machine's busy and idle clock ticks so far (/proc/stat's first line: user nice system
# idle iowait irq softirq steal).
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat; }

# cpu_share SECONDS: where the machine's CPU went while the load runs, per role, in percent
# of one core; "rest-of-machine" is every other process, "idle" what nobody used.
cpu_share() {
  local window=$1 role r hz before=() after=() i=0 line="" ours=0 busy0 idle0 busy1 idle1
  hz=$(getconf CLK_TCK)
  local -A who=([requester]="$LOAD_PID" [balancer]="${PIDS[nginx]} $(pgrep -P "${PIDS[nginx]}" | tr '\n' ' ')")
  for r in "${REPLICAS[@]}"; do who[$r]=${PIDS[$r]:-}; done
  local roles=(requester balancer "${REPLICAS[@]}")
  read -r busy0 idle0 < <(machine_ticks)
  for role in "${roles[@]}"; do
    # shellcheck disable=SC2086 # a list of process ids
    before+=("$(cpu_ticks ${who[$role]})")
  done
  sleep "$window"
  read -r busy1 idle1 < <(machine_ticks)
  for role in "${roles[@]}"; do
    # shellcheck disable=SC2086
    after+=("$(cpu_ticks ${who[$role]})")
  done
  for role in "${roles[@]}"; do
    line="$line $role $(( (after[i] - before[i]) * 100 / hz / window ))%"
    ours=$((ours + after[i] - before[i]))
    i=$((i + 1))
  done
  line="$line rest-of-machine $(( (busy1 - busy0 - ours) * 100 / hz / window ))%"
  line="$line idle $(( (idle1 - idle0) * 100 / hz / window ))%"
  echo "${line# } (of the machine's $(getconf _NPROCESSORS_ONLN) cores)"
}

THROUGHPUT_1=""
THROUGHPUT_3=""
throughput() {
  [ "$THROUGHPUT_SECONDS" != 0 ] || return 0
  say "throughput through the balancer, ${THROUGHPUT_SECONDS}s each (gRPC, 8 connections, 1 row per request)"
  set_candidates r1
  wait_for 10 "r1 alone behind the balancer" is_ready_set r1 || return 0
  sleep 0.5
  load_start tput-1 --connections 8 --duration "$THROUGHPUT_SECONDS"
  local cpu1 cpu3
  [ "$THROUGHPUT_SECONDS" -lt 3 ] || cpu1=$(sleep 1; cpu_share $((THROUGHPUT_SECONDS - 2)))
  load_end
  THROUGHPUT_1=$(L 'd["throughput_rps"]')
  say "  1 replica:  $THROUGHPUT_1 req/s, p50 $(L 'd["latency_ms"]["p50"]') ms, p99 $(L 'd["latency_ms"]["p99"]') ms, lost $(L 'd["lost"]'); CPU (% of a core): ${cpu1:-?}"
  set_candidates "${REPLICAS[@]}"
  wait_for 10 "three replicas behind the balancer" is_ready_set "${REPLICAS[@]}" || return 0
  sleep 0.5
  load_start tput-3 --connections 8 --duration "$THROUGHPUT_SECONDS"
  [ "$THROUGHPUT_SECONDS" -lt 3 ] || cpu3=$(sleep 1; cpu_share $((THROUGHPUT_SECONDS - 2)))
  load_end
  THROUGHPUT_3=$(L 'd["throughput_rps"]')
  say "  3 replicas: $THROUGHPUT_3 req/s, p50 $(L 'd["latency_ms"]["p50"]') ms, p99 $(L 'd["latency_ms"]["p99"]') ms, lost $(L 'd["lost"]'); CPU (% of a core): ${cpu3:-?}"
}

FAILURE_P99=""
s2_kill() {
  load_start s2 --connections 8 --duration 12
  sleep 2.5
  # The failure's phase starts just before the kill, so that it holds the requests the kill
  # breaks (a request belongs to the phase it started in).
  load_phase
  sleep 0.5
  stop r2 KILL
  say "  r2 killed with SIGKILL (status $STATUS)"
  wait_for 5 "r2 out of the upstreams" is_ready_set r1 r3
  check "the watcher took r2 out of the balancer" is_ready_set r1 r3
  sleep 3
  load_phase
  start_replica r2
  check "r2, restarted, attests again and is back behind the balancer" \
    wait_for 30 "r2 ready" is_ready r2
  load_end
  load_line
  FAILURE_P99=$(L 'd["phases"][1]["latency_ms"]["p99"]')
  say "  during the failure (from 0.5 s before the kill to 3 s after r2 left the balancer): $(L 'd["phases"][1]["requests"]') requests, p50 $(L 'd["phases"][1]["latency_ms"]["p50"]') ms, p99 $FAILURE_P99 ms, max $(L 'd["phases"][1]["latency_ms"]["max"]') ms, $(L 'd["phases"][1]["requests_retried"]') retried"
  check "zero requests lost after retries" lost_none
}

# Every representation of the owner's secrets that could land in a file: the model key (raw,
# hex), the TLS private key (its PEM body lines, its DER).
scan_secrets() {
  python3 - "$WORK" "$O/model.key" "$O/tls/server.key" <<'PY'
import base64, os, sys
work, model_key, tls_key = sys.argv[1:4]
key = open(model_key, "rb").read()
pem = open(tls_key).read().split("\n")
body = [l for l in pem if l and not l.startswith("-----")]
der = base64.b64decode("".join(body))
needles = {"model key": [key, key.hex().encode(), key.hex().upper().encode(),
                         base64.b64encode(key)],
           "TLS private key": [der] + [l.encode() for l in body if len(l) >= 32]}
found = []
owner = os.path.join(work, "owner")
for root, dirs, files in os.walk(work):
    if os.path.commonpath([root, owner]) == owner:
        continue
    for f in files:
        p = os.path.join(root, f)
        if os.path.islink(p) or not os.path.isfile(p):
            continue
        data = open(p, "rb").read()
        for what, ns in needles.items():
            if any(n in data for n in ns):
                found.append(f"{what} in {os.path.relpath(p, work)}")
for f in found:
    print(f)
sys.exit(1 if found else 0)
PY
}

# A replica's directory holds only the platform, public certificates, sealed model files, the
# monitoring config and nothing else (no key, no unsealed model).
only_sealed_files() {
  local r=$1 bad
  bad=$(cd "$WORK/$r" && find . -type f ! -path './platform/*' ! -name '*.sealed' \
    ! -path './etc/kbs-ca.pem' ! -path './etc/server.pem' ! -path './etc/monitoring.config')
  [ -z "$bad" ] || { say "  unexpected files in $r: $bad"; return 1; }
  ! grep -q 'PRIVATE KEY' "$WORK/$r/etc/"*.pem
}

s3_broker() {
  load_start s3 --connections 6 --duration 120
  sleep 2
  load_phase
  stop broker TERM
  say "  key broker stopped (status $STATUS)"
  sleep 2
  check "the replicas keep serving with the broker down" is_ready_set "${REPLICAS[@]}"
  stop r3 TERM
  wait_for 5 "r3 out of the upstreams" is_ready_set r1 r2
  local mark
  mark=$(log_mark r3)
  start_replica r3
  say "  r3 restarted while the broker is down (its previous run exited with $STATUS)"
  check "r3 keeps retrying the broker" wait_for 15 "r3 retrying" retries_since r3 "$mark" 3
  local i never_routed=1
  for i in 1 2 3 4 5 6 7 8 9 10; do
    if is_ready r3 || listening r3 || grep -q "${ADDR[r3]}" "$WORK/lb/upstreams.conf"; then
      never_routed=0
    fi
    sleep 0.3
  done
  check "r3 is not ready, listens on nothing and is not in the balancer while it has no key" \
    test "$never_routed" = 1
  check "r3 is still running (retrying, not exited)" running r3
  start_broker
  say "  key broker back"
  check "r3 gets its keys and becomes ready once the broker is back" \
    wait_for 20 "r3 ready" is_ready r3
  load_phase
  sleep 2
  load_end stop
  load_line
  check "no request lost while the broker was down" lost_none
  check "the broker's audit log has r3's grants" audit_has r3 granted
  local leaks
  leaks=$(scan_secrets) || true
  [ -z "$leaks" ] || say "  $leaks"
  check "no secret (model key, TLS private key) in any file outside the owner's directory" test -z "$leaks"
  local r
  for r in "${REPLICAS[@]}"; do
    check "$r's directory holds only the platform, public certificates and sealed files" only_sealed_files "$r"
  done
}

s4_rollout() {
  local r t0 t switched=() late=0
  load_start s4 --connections 6 --duration 120
  sleep 2
  load_phase
  t0=$(elapsed)
  for r in "${REPLICAS[@]}"; do
    # Placed whole: copied beside the model directory, then renamed into it.
    mkdir -p "$WORK/$r/incoming"
    cp -r "$O/sealed/$MODEL/2" "$WORK/$r/incoming/2"
    mv "$WORK/$r/incoming/2" "$WORK/$r/models/$MODEL/2"
    rmdir "$WORK/$r/incoming"
  done
  say "  version 2 placed on every replica; they scan every ${POLL_SECONDS}s"
  for r in "${REPLICAS[@]}"; do
    if wait_for $((POLL_SECONDS + 15)) "$r serving version 2" serves_version "$r" 2; then
      t=$(( $(elapsed) - t0 ))
      switched+=("$r after $((t / 1000)).$(( (t % 1000) / 100 ))s")
      [ "$t" -le $((POLL_SECONDS * 1000 + 5000)) ] || late=1
    else
      late=1
    fi
  done
  say "  serving version 2: ${switched[*]:-none}"
  check "every replica serves version 2 within the poll interval (${POLL_SECONDS}s, and 5s to load it)" test "$late" = 0
  load_phase
  sleep 2
  load_end stop
  load_line
  say "  answers by version: $(L 'd["versions"]'); after the switch: $(L 'd["phases"][2]["versions"]')"
  check "no failed request during the switch" lost_none
  check "after the switch every answer comes from version 2" \
    test "$(L 'sorted(d["phases"][2]["versions"])')" = "['2']"
}

s5_impostor() {
  local status i saw_listener=0 measured
  set_candidates "${REPLICAS[@]}" "$IMPOSTOR"
  load_start s5 --connections 4 --duration 120
  measured=$("$T" attest measure --exe "$WORK/bin/teeserve-modified")
  start_replica "$IMPOSTOR" "$WORK/bin/teeserve-modified"
  say "  $IMPOSTOR started: a modified build, MRENCLAVE $measured"
  for i in $(seq 1 60); do
    running "$IMPOSTOR" || break
    listening "$IMPOSTOR" && saw_listener=1
    sleep 0.2
  done
  stop "$IMPOSTOR" TERM
  status=$STATUS
  sleep 1
  load_end stop
  load_line
  check "$IMPOSTOR exits refused (status $status)" \
    bash -c "[ '$status' != 0 ] && grep -q 'refused' '$WORK/logs/$IMPOSTOR.log'"
  check "$IMPOSTOR never listened" test "$saw_listener" = 0
  check "$IMPOSTOR was never ready" bash -c "! grep -q '$IMPOSTOR' '$WORK/lb/watcher.log'"
  check "$IMPOSTOR received no traffic (the balancer never proxied to it)" \
    bash -c "! grep -q '${ADDR[$IMPOSTOR]}:' '$WORK/lb/access.log'"
  check "the audit log records the refusal with its rule (mrenclave)" \
    audit_has "$IMPOSTOR" refused mrenclave
  check "requests kept being answered" lost_none
  set_candidates "${REPLICAS[@]}"
}

DRAIN_IN_FLIGHT=""
s6_drain() {
  local mark status code drained
  # A request that stays in flight for seconds: 200 rows (about 180 KB of JSON) uploaded at
  # 50 KB/s, straight to r1 (as from another pod); r1 admits it as soon as its header is in.
  python3 - "$REPO/testdata/digits/sample.json" "$R/slow.json" <<'PY'
import json, sys
row = json.load(open(sys.argv[1]))["instances"][0]
json.dump({"instances": [row] * 200}, open(sys.argv[2], "w"))
PY
  # And the load: requests of 2000 rows (512 KB), through the balancer.
  LOAD_INPUT=heldout.npy load_start s6 --connections 12 --duration 120 --batch 2000
  sleep 2
  ( cd "$R" && exec ip netns exec "$PREFIX-req" curl -s --http1.1 --limit-rate 50k \
      -o slow-answer.json -w '%{http_code}' --cacert ca.pem \
      --resolve "$SNI:$REST_PORT:${ADDR[r1]}" -H 'content-type: application/json' -H 'expect:' \
      --data-binary @slow.json "https://$SNI:$REST_PORT/v1/models/$MODEL:predict" ) \
    >"$R/slow.code" 2>&1 &
  PIDS[slow]=$!
  sleep 1
  mark=$(log_mark r1)
  load_phase
  stop r1 TERM
  status=$STATUS
  load_phase
  reap slow
  code=$(cat "$R/slow.code")
  sleep 1
  load_end stop
  load_line
  DRAIN_IN_FLIGHT=$(log_since r1 "$mark" | sed -n 's/.*draining: \([0-9]*\) request.*/\1/p')
  drained=$(log_since r1 "$mark" | grep -c 'drained: every request in flight was answered' || true)
  say "  r1 had ${DRAIN_IN_FLIGHT:-?} request(s) in flight at SIGTERM, the slow upload among them; exit status $status"
  check "r1 answered the requests it had in flight and exited cleanly" \
    test "$status" = 0 -a "$drained" = 1 -a "${DRAIN_IN_FLIGHT:-0}" -ge 1
  check "the slow request, in flight across the SIGTERM, was answered (HTTP $code, 200 predictions)" \
    python3 -c 'import json,sys; sys.exit(not (sys.argv[1] == "200" and len(json.load(open(sys.argv[2]))["predictions"]) == 200))' \
    "$code" "$R/slow-answer.json"
  check "no request failed" lost_none
}

# ---------------------------------------------------------------------------------------------
# The run

start_balancer
start_broker
for r in "${REPLICAS[@]}"; do start_replica "$r"; done
wait_for 60 "all replicas ready" is_ready_set "${REPLICAS[@]}" ||
  die "the replicas did not become ready: $(tail -n 3 "$WORK/logs/r1.log")"
say "cluster up: broker ${ADDR[broker]}, replicas $(for r in "${REPLICAS[@]}"; do printf '%s ' "${ADDR[$r]}"; done)behind ${ADDR[lb]}:$GRPC_PORT,$REST_PORT"
# Nothing this harness started listens in the root namespace.
if ss -Htlnp | grep -E "pid=($(IFS='|'; echo "${PIDS[*]}"))," >/dev/null; then
  die "a process of this harness listens in the root namespace"
fi

restore() { normal || say "the cluster did not come back to three ready replicas"; }
scenario 1 "steady load through the balancer" s1_steady
if [[ " $SCENARIOS " == *" 1 "* ]]; then restore; throughput || true; fi
scenario 2 "a replica killed with SIGKILL under load" s2_kill
scenario 3 "the key broker stopped" s3_broker
scenario 4 "rolling model update" s4_rollout
scenario 5 "an impostor replica" s5_impostor
scenario 6 "drain: SIGTERM on a replica under load" s6_drain

# Every request the requesters sent, in every scenario and measurement: how many, how many
# were not answered correctly, and the 99th percentile of their latencies (nearest rank).
read -r TOTAL LOST P99 < <(python3 - "$WORK/loads" <<'PY'
import glob, json, math, os, sys
total = lost = 0
lat = []
for f in glob.glob(os.path.join(sys.argv[1], "*.json")):
    d = json.load(open(f))
    total += d["requests"]
    lost += d["lost"]
    lat_file = f[:-len(".json")] + ".lat"
    if os.path.exists(lat_file):
        lat += [float(x) for x in open(lat_file).read().split()]
lat.sort()
p99 = lat[max(1, math.ceil(0.99 * len(lat))) - 1] if lat else 0.0
print(total, lost, f"{p99:.1f}")
PY
)
if [ -n "$THROUGHPUT_1" ]; then
  say "throughput through the balancer: 1 replica $THROUGHPUT_1 req/s, 3 replicas $THROUGHPUT_3 req/s"
fi
[ -z "$FAILURE_P99" ] || say "p99 of the requests sent during the SIGKILL (scenario 2, phase 1): $FAILURE_P99 ms"
[ -z "$DRAIN_IN_FLIGHT" ] || say "requests in flight at the drain's SIGTERM, all answered: $DRAIN_IN_FLIGHT"
[ "${#FAILED_NAMES[@]}" = 0 ] || say "failed scenarios: ${FAILED_NAMES[*]}"
echo "cluster: $PASSED/$RAN scenarios passed, $TOTAL requests, $LOST lost, p99 $P99 ms"
[ "$PASSED" = "$RAN" ] && [ "$RAN" -gt 0 ]
