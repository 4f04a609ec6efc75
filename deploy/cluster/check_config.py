"""The cluster harness (deploy/cluster/run.sh) runs the replicas the way deploy/kubernetes does.

The Kubernetes deployment's server command line is the server image's Gramine manifest
(deploy/gramine/teeserve.manifest.template, `loader.argv`, which the host cannot change); its
ports, readiness probe and replica count are in deploy/kubernetes. This compares them with what
the harness prints (`run.sh --print-config`): the same flags with the same values, except the
platform (gramine there, simulated here), the broker's address (the port must match), and paths,
which are compared after the manifest's mounts map them to the host (/etc/teeserve is etc/).

Run from deploy/ by check.sh: python check_config.py. It also checks itself: a harness or a
manifest that drifts in any of these ways must be reported.
"""

import copy
import json
import subprocess
import sys
import tomllib

import jinja2
import yaml


class Gramine:
    libos = "/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so"

    @staticmethod
    def runtimedir():
        return "/usr/lib/x86_64-linux-gnu/gramine/runtime/glibc"


def manifest(model_name):
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    text = open("gramine/teeserve.manifest.template").read()
    values = dict(gramine=Gramine, arch_libdir="/lib/x86_64-linux-gnu", log_level="error",
                  model_name=model_name, kbs_addr="kbs.test:4430", enclave_size="4G",
                  thread_num=64)
    return tomllib.loads(env.from_string(text).render(**values))


def kubernetes():
    """The server Deployment's container and the replica count kustomize sets."""
    docs = list(yaml.safe_load_all(open("kubernetes/server.yaml")))
    deployment = next(d for d in docs if d and d["kind"] == "Deployment"
                      and d["metadata"]["name"] == "teeserve-server")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    kustomization = yaml.safe_load(open("kubernetes/kustomization.yaml"))
    count = next(r["count"] for r in kustomization.get("replicas", [])
                 if r["name"] == "teeserve-server")
    return container, count


def flags(argv):
    """`--flag value` pairs (a flag followed by another flag, or last, has the value None)."""
    out, i = {}, 0
    while i < len(argv):
        a = argv[i]
        if not a.startswith("--"):
            raise ValueError(f"unexpected argument {a!r} in {argv}")
        value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else None
        if a in out:
            raise ValueError(f"{a} given twice")
        out[a] = value
        i += 2 if value is not None else 1
    return out


def host_path(path, mounts):
    """An in-enclave path as the host sees it, through the longest mount that covers it."""
    best = None
    for m in mounts:
        p = m["path"].rstrip("/")
        if (path == p or path.startswith(p + "/")) and (best is None or len(p) > len(best["path"])):
            best = m
    if best is None or not best["uri"].startswith("file:"):
        return path
    return best["uri"][len("file:"):] + path[len(best["path"].rstrip("/")):]


def differences(harness, m, container, replicas):
    diffs = []
    argv = m["loader"]["argv"]
    if argv[:2] != ["/teeserve", "serve"]:
        diffs.append(f"manifest argv does not run teeserve serve: {argv[:2]}")
    if harness["serve"][:1] != ["serve"]:
        diffs.append(f"harness does not run teeserve serve: {harness['serve'][:1]}")
    want = flags(argv[2:])
    got = flags(harness["serve"][1:])
    for f in sorted(set(want) - set(got)):
        diffs.append(f"the harness lacks {f} {want[f]}")
    for f in sorted(set(got) - set(want)):
        diffs.append(f"the harness adds {f} {got[f]}, which the manifest does not have")
    for f in sorted(set(want) & set(got)):
        w, g = want[f], got[f]
        if f == "--platform":
            if (w, g) != ("gramine", "simulated"):
                diffs.append(f"--platform: manifest {w}, harness {g} (expected gramine/simulated)")
        elif f == "--kbs":
            if w.rsplit(":", 1)[-1] != g.rsplit(":", 1)[-1]:
                diffs.append(f"--kbs: manifest port {w}, harness {g}")
        elif w is not None and w.startswith("/"):
            hp = host_path(w, m["fs"]["mounts"])
            if hp != g:
                diffs.append(f"{f}: manifest {w} (on the host {hp}), harness {g}")
        elif w != g:
            diffs.append(f"{f}: manifest {w}, harness {g}")
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    for name, flag in [("grpc", "--port"), ("rest", "--rest_api_port")]:
        if ports.get(name) != harness["ports"][name]:
            diffs.append(f"{name} port: server.yaml {ports.get(name)}, harness {harness['ports'][name]}")
        if str(harness["ports"][name]) != str(got.get(flag)):
            diffs.append(f"{name} port: the harness serves {flag} {got.get(flag)} but routes to {harness['ports'][name]}")
    probe = container.get("readinessProbe", {}).get("httpGet", {})
    port = probe.get("port")
    want_ready = {"path": probe.get("path"), "port": ports.get(port, port),
                  "scheme": probe.get("scheme", "HTTP")}
    if want_ready != harness["readiness"]:
        diffs.append(f"readiness: server.yaml {want_ready}, harness {harness['readiness']}")
    if replicas != harness["replicas"]:
        diffs.append(f"replicas: kustomization.yaml {replicas}, harness {harness['replicas']}")
    return diffs


def self_check(harness, m, container, replicas):
    """Each drift below must be reported, or this check proves nothing."""
    def serve_without(flag):
        h = copy.deepcopy(harness)
        i = h["serve"].index(flag)
        del h["serve"][i:i + 2]
        return h

    def serve_with(flag, value):
        h = copy.deepcopy(harness)
        h["serve"][h["serve"].index(flag) + 1] = value
        return h

    drifts = {
        "a flag left out": (serve_without("--kbs_tls_key_secret"), m),
        "another poll interval": (serve_with("--file_system_poll_wait_seconds", "1"), m),
        "another model path": (serve_with("--model_base_path", "models/other"), m),
        "another platform": (serve_with("--platform", "tdx"), m),
        "another broker port": (serve_with("--kbs", "10.0.0.1:4431"), m),
        "an extra flag": (dict(harness, serve=harness["serve"] + ["--insecure"]), m),
        "another readiness path": (dict(harness, readiness=dict(harness["readiness"], path="/healthz")), m),
        "another replica count": (dict(harness, replicas=harness["replicas"] - 1), m),
    }
    grown = copy.deepcopy(m)
    grown["loader"]["argv"] += ["--enable_batching"]
    drifts["a flag added to the manifest"] = (harness, grown)
    silent = [name for name, (h, mm) in drifts.items() if not differences(h, mm, container, replicas)]
    return silent


def main():
    harness = json.loads(subprocess.run(["bash", "cluster/run.sh", "--print-config"],
                                        check=True, capture_output=True, text=True).stdout)
    m = manifest(harness["model_name"])
    container, replicas = kubernetes()
    diffs = differences(harness, m, container, replicas)
    if diffs:
        print("deploy/cluster/run.sh and deploy/kubernetes (with the server image's manifest) differ:")
        for d in diffs:
            print("  " + d)
        return 1
    # The two agree; each drift from there must be caught.
    silent = self_check(harness, m, container, replicas)
    if silent:
        print("the cluster config check misses: " + ", ".join(silent))
        return 1
    print(f"cluster harness and Kubernetes manifests agree: {len(flags(harness['serve'][1:]))} "
          f"serve flags, ports, readiness probe, {replicas} replicas")
    return 0


if __name__ == "__main__":
    sys.exit(main())
