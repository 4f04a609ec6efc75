"""A simulated-platform teeserve server on loopback, as a requester meets it: TLS with a
certificate from the owner's CA, and /v1/attestation quoted by the simulated TEE.

The server binary is TEESERVE_BIN (default: target/debug/teeserve); the real DCAP vectors are
TEESERVE_VECTORS (default: ../shared/vectors beside the repository); with
TEESERVE_REQUIRE_VECTORS=1 their absence fails instead of skipping.
"""
import json
import os
import socket
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def binary():
    b = os.environ.get("TEESERVE_BIN", os.path.join(ROOT, "target", "debug", "teeserve"))
    if not os.path.isfile(b):
        pytest.fail(f"no teeserve binary at {b} (set TEESERVE_BIN)")
    return b


def vectors():
    d = os.environ.get("TEESERVE_VECTORS", os.path.join(ROOT, "..", "shared", "vectors"))
    if os.path.isdir(d):
        return d
    if os.environ.get("TEESERVE_REQUIRE_VECTORS") == "1":
        pytest.fail(f"TEESERVE_REQUIRE_VECTORS=1 but the real vectors are not at {d}")
    pytest.skip(f"the real vectors are not at {d} (set TEESERVE_VECTORS)")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Server:
    """One `teeserve serve` process; its stderr (the access log among it) is `log_path`."""

    def __init__(self, pki, cert, grpc_port=None, rest_port=None, name="server", extra_args=(),
                 model_args=None):
        self.pki = pki
        self.grpc_port = grpc_port or free_port()
        self.rest_port = rest_port or free_port()
        self.log_path = os.path.join(pki.dir, f"{name}-{self.grpc_port}-{time.monotonic_ns()}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [binary(), "serve", "--platform", "simulated", "--sim-dir", pki.sim,
             *(model_args or ["--model_name", "digits", "--model_base_path",
                              os.path.join(ROOT, "models", "digits")]),
             "--tls-cert", os.path.join(pki.tls, f"{cert}.pem"),
             "--tls-key", os.path.join(pki.tls, f"{cert}.key"),
             # The key is a file the test gave the server: the document says key_origin "host".
             "--attest-host-tls-key",
             "--attestation-collateral", os.path.join(pki.sim, "collateral.json"),
             "--grpc_bind_address", "127.0.0.1", "--rest_api_bind_address", "127.0.0.1",
             "--port", str(self.grpc_port), "--rest_api_port", str(self.rest_port)] + list(extra_args),
            stdout=subprocess.PIPE, stderr=self.log, text=True,
            env={k: v for k, v in os.environ.items() if k != "RUST_LOG"})
        line = self.proc.stdout.readline()
        if not line.startswith("listening"):
            self.stop()
            raise RuntimeError("serve did not start: " + self.log_text())

    @property
    def grpc_target(self):
        return f"localhost:{self.grpc_port}"

    @property
    def rest_url(self):
        return f"https://localhost:{self.rest_port}"

    def log_text(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def served(self, method):
        """Access-log lines of requests with this method (e.g. Predict). The server writes its
        access log in batches, at most 100 ms late: this waits past that before reading, so that
        an empty list means none was served."""
        time.sleep(0.5)
        return [l for l in self.log_text().splitlines() if f'method="{method}"' in l or f"method={method}" in l]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


class Pki:
    """A simulated TEE, an owner's CA with two server certificates and a client certificate."""

    def __init__(self, d):
        self.dir = str(d)
        self.sim = os.path.join(self.dir, "sim")
        self.tls = os.path.join(self.dir, "tls")
        subprocess.run([binary(), "sim", "init", "--dir", self.sim], check=True, capture_output=True)
        subprocess.run([binary(), "tls", "init", "--dir", self.tls, "--name", "server", "--name", "other",
                        "--client"], check=True, capture_output=True)
        self.mrenclave = subprocess.run([binary(), "attest", "measure"], check=True, capture_output=True,
                                        text=True).stdout.strip()

    def read(self, *parts):
        with open(os.path.join(self.dir, *parts), "rb") as f:
            return f.read()

    @property
    def ca(self):
        return self.read("tls", "ca.pem")

    @property
    def root(self):
        return os.path.join(self.sim, "root.pem")

    def policy(self, **over):
        p = {"name": "test", "mrenclave": [self.mrenclave], "allow_simulated": True,
             "tls_key_origin": ["host"]}
        p.update(over)
        return p

    def policy_file(self, **over):
        path = os.path.join(self.dir, f"policy-{len(os.listdir(self.dir))}.toml")
        with open(path, "w") as f:
            for k, v in self.policy(**over).items():
                f.write(f"{k} = {json.dumps(v)}\n")
        return path


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("teeserve"))


@pytest.fixture(scope="session")
def server(pki):
    s = Server(pki, "server")
    yield s
    s.stop()


@pytest.fixture
def fresh_server(pki):
    """A server of its own, for a test that stops it."""
    started = []

    def start(cert="server", **kw):
        s = Server(pki, cert, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
