#!/usr/bin/env bash
# The Open Inference Protocol's (KServe v2) own clients, Triton's tritonclient and the kserve
# SDK, in a virtualenv of their own: they pin another protobuf than TensorFlow's. Made once
# (cached between runs); prints its path.
set -euo pipefail
venv="${XDG_CACHE_HOME:-$HOME/.cache}/teeserve-v2clients"
if [ ! -x "$venv/bin/python" ] ||
  ! "$venv/bin/python" -c "import tritonclient.http, tritonclient.grpc, kserve, pytest, requests" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "tritonclient[http,grpc]==2.73.0" "kserve==0.21.0" numpy pytest requests >&2
fi
echo "$venv"
