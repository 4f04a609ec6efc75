"""What the benchmark scripts share: inputs, timing, the JSON the Rust tools print, and a
`teeserve serve` on loopback with TLS. Imported by bench/serving.py and bench/tf_engine.py
(run from this folder, so that Python finds it beside them).
"""
import json
import os
import socket
import subprocess
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEESERVE = os.path.join(ROOT, "target", "release", "teeserve")
MODEL_BENCH = os.path.join(ROOT, "target", "release", "examples", "model_bench")


def images(batch):
    return np.random.default_rng(1).random((batch, 224, 224, 3), dtype=np.float32)


def timed(fn, budget):
    fn()  # warm-up
    ms, start = [], time.perf_counter()
    while time.perf_counter() - start < budget or len(ms) < 3:
        t = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t) * 1e3)
    return float(np.median(ms))


def tool(*args, env=None):
    """Runs a tool that prints one JSON line last; `env`: variables added to this environment."""
    out = subprocess.run(list(args), check=True, capture_output=True, text=True,
                         env=None if env is None else {**os.environ, **env}).stdout
    return json.loads(out.strip().splitlines()[-1])


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Serve:
    def __init__(self, tmp, name, args):
        self.grpc, self.rest = free_port(), free_port()
        self.log = open(os.path.join(tmp, name + ".log"), "w")
        self.p = subprocess.Popen(
            [TEESERVE, "serve", "--grpc_bind_address", "127.0.0.1", "--rest_api_bind_address", "127.0.0.1",
             "--port", str(self.grpc), "--rest_api_port", str(self.rest),
             "--tls-cert", f"{tmp}/tls/server.pem", "--tls-key", f"{tmp}/tls/server.key"] + args,
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.p.stdout.readline()
        if not line.startswith("listening"):
            raise RuntimeError(f"serve did not start: {open(self.log.name).read()}")

    def stop(self):
        self.p.terminate()
        self.p.wait()

