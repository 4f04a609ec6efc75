#!/bin/sh
# The entrypoint of deploy/docker/Dockerfile.tfserving: teeserve started as tensorflow/serving's
# image starts tensorflow_model_server (tensorflow_serving/tools/docker/Dockerfile):
#
#   teeserve serve --port=$GRPC_PORT --rest_api_port=$PORT --model_name=$MODEL_NAME
#     --model_base_path=$MODEL_BASE_PATH/$MODEL_NAME "$@"
#
# with the same variables and defaults (8500, 8501, model, /models). The flags given to the
# container are appended; one of them that the line above already sets replaces the image's
# value, as the last of a repeated flag wins for tensorflow_model_server.
#
# The TEE is simulated (`teeserve sim init` in $TEESERVE_SIM_DIR at the first start): the image
# runs anywhere, for trying teeserve, and gives NO protection. Unlike tensorflow/serving it does
# not serve plaintext unless asked: the flags must say how clients connect (see `usage`).
set -eu

MODEL_NAME="${MODEL_NAME:-model}"
MODEL_BASE_PATH="${MODEL_BASE_PATH:-/models}"
GRPC_PORT="${GRPC_PORT:-8500}"
PORT="${PORT:-8501}"
sim="${TEESERVE_SIM_DIR:-/var/lib/teeserve/sim}"

say() {
  printf 'teeserve-tfserving: %s\n' "$*" >&2
}

# given FLAG ARGS...: whether ARGS set FLAG, as `--flag VALUE` or `--flag=VALUE`, in TF
# Serving's snake_case or teeserve's kebab-case spelling of it.
given() {
  snake="$1"
  kebab="$(printf '%s' "$1" | tr _ -)"
  shift
  for arg in "$@"; do
    case "$arg" in
      "$snake" | "$snake"=* | "$kebab" | "$kebab"=*) return 0 ;;
    esac
  done
  return 1
}

usage() {
  cat >&2 <<'EOF'
teeserve-tfserving: say how clients connect, with one of these flags after the image name:
  --insecure          plaintext, as tensorflow/serving serves: whoever is on the path reads
                      the requests and the answers
  --ssl_config_file=FILE
                      TLS with TF Serving's SSLConfig (server_key, server_cert), mounted
  --tls_cert=PEM --tls_key=PEM
                      TLS with your certificate and key, mounted (teeserve tls init makes them)
  --tls_ra            TLS with a key made inside the (simulated) TEE, in an RA-TLS certificate:
                      requesters check its attestation (teeserve predict --attest) instead of a CA
for example: docker run -p 8500:8500 -p 8501:8501 -v "$PWD/my_model:/models/my_model" \
  -e MODEL_NAME=my_model teeserve-tfserving --insecure
EOF
}

# --help and --version need no model and no platform.
if given --help "$@" || given -h "$@" || given --version "$@"; then
  exec teeserve serve "$@"
fi

if ! { given --insecure "$@" || given --tls_ra "$@" || given --tls_cert "$@" ||
  given --ssl_config_file "$@"; }; then
  usage
  exit 2
fi

if [ -f "$sim/collateral.json" ]; then
  say "using the simulated TEE made at an earlier start, in $sim"
else
  teeserve sim init --dir "$sim" >&2
fi
say "WARNING: this TEE is SIMULATED. It gives NO protection: its keys are files in $sim,"
say "  so whoever runs this container can read the model, the TLS key and every request."
say "  It is for trying teeserve in tensorflow/serving's place; for confidentiality run the"
say "  server in an SGX enclave (deploy/docker/Dockerfile.server) or a TDX guest."
if given --tls_ra "$@" || given --attest_host_tls_key "$@"; then
  say "requesters check the attestation with a policy that has"
  say "  mrenclave = [\"$(teeserve attest measure)\"] and allow_simulated = true,"
  say "  and with this platform's root certificate, $sim/root.pem (teeserve predict --root)"
fi
if given --insecure "$@"; then
  say "plaintext (--insecure): anyone on the network path reads the requests and the answers"
fi

given --model_base_path "$@" || set -- "--model_base_path=$MODEL_BASE_PATH/$MODEL_NAME" "$@"
given --model_name "$@" || set -- "--model_name=$MODEL_NAME" "$@"
given --rest_api_port "$@" || set -- "--rest_api_port=$PORT" "$@"
given --port "$@" || set -- "--port=$GRPC_PORT" "$@"
exec teeserve serve --platform=simulated --sim_dir="$sim" \
  --attestation_collateral="$sim/collateral.json" "$@"
