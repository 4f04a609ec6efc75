# Shared by the bench scripts (sourced, not run).

# free_ports N: N loopback ports free now, on one line.
free_ports() {
  python3 -c 'import socket, sys
s = [socket.socket() for _ in range(int(sys.argv[1]))]
[x.bind(("127.0.0.1", 0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))' "$1"
}

# serve_sim_digits BIN DIR GRPC REST [WRAPPER...]: `teeserve serve` of the digits model on the
# simulated platform (DIR/sim and DIR/tls made by `sim init` and `tls init`), attested TLS, on
# GRPC and REST, under WRAPPER if given; its PID in `pid` once it listens (exits if it dies).
serve_sim_digits() {
  local bin="$1" dir="$2" grpc="$3" rest="$4"
  shift 4
  "$@" "$bin/teeserve" serve --platform simulated --sim_dir "$dir/sim" \
    --model_name digits --model_base_path "$PWD/models/digits" \
    --tls_cert "$dir/tls/server.pem" --tls_key "$dir/tls/server.key" --attest_host_tls_key \
    --attestation_collateral "$dir/sim/collateral.json" \
    --grpc_bind_address 127.0.0.1 --rest_api_bind_address 127.0.0.1 \
    --port "$grpc" --rest_api_port "$rest" >"$dir/serve.out" 2>"$dir/serve.log" &
  pid=$!
  wait_listening "$dir"
}

# wait_listening DIR: waits until the server `pid` (its output in DIR/serve.out, its log in
# DIR/serve.log) listens; exits showing the log if it dies or does not start within 2 minutes.
wait_listening() {
  local dir="$1"
  for _ in $(seq 600); do
    grep -q '^listening' "$dir/serve.out" && return
    kill -0 "$pid" 2>/dev/null || { cat "$dir/serve.log" >&2; exit 1; }
    sleep 0.2
  done
  echo "the server did not start" >&2
  exit 1
}

# bench_venv: the cached virtualenv of bench/serving.sh (tensorflow-cpu, onnxruntime, tf2onnx,
# numpy), made if it is missing; its path in `venv`.
bench_venv() {
  venv="${XDG_CACHE_HOME:-$HOME/.cache}/teeserve-bench"
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import tensorflow, onnxruntime, tf2onnx" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet tensorflow-cpu onnxruntime tf2onnx numpy
  fi
}

# build_model_bench [EXAMPLE...]: the release server and the model_bench requester (and any
# other examples of teeserve-serving named), with the ONNX Runtime engine.
build_model_bench() {
  cargo build --release --quiet -p teeserve
  cargo build --release --quiet -p teeserve-serving --features onnxruntime --example model_bench \
    "${@/#/--example=}"
}
