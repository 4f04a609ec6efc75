#!/usr/bin/env python3
"""teeserve.verify_receipt: microseconds per call, on a receipt from a real server.

    pip install ./python requests
    python3 bench/receipt_python.py [TEESERVE_BIN]

Starts `teeserve serve` (default target/release/teeserve) on the simulated platform with the
digits model, gets one receipt over an attested REST session (receipts=True), then times
verify_receipt(receipt, request, response, attestation, policy=..., root=...), the call a
requester or a third party makes, best of 5 rounds:
- verify_receipt: the document's collateral bundle checked on the first call and kept (by its
  SHA-256, as verify_quote keeps bundles), so this is every call after the first with the
  same document: the document's quote and the policy, the binding of the TLS and receipt keys,
  the receipt's Ed25519 signature and the SHA-256 of the request, response and document;
- first call: the cache emptied before every call, so each one checks the bundle too;
- verify_quote: the document's quote alone with the same bundle and policy, for scale.
"""
import base64
import json
import os
import subprocess
import sys
import tempfile
import time

import benchlib
import teeserve

from benchlib import ROOT


def per_call(fn, n, rounds=5):
    fn()
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


def a_receipt(binary, tmp):
    def run(*args):
        return subprocess.run([binary, *args], check=True, capture_output=True, text=True, cwd=tmp).stdout

    run("sim", "init", "--dir", "sim")
    run("tls", "init", "--dir", "tls")
    policy = {"mrenclave": [run("attest", "measure").strip()], "allow_simulated": True,
              "tls_key_origin": ["host"]}
    benchlib.TEESERVE = binary
    server = benchlib.Serve(tmp, "serve", [
        "--platform", "simulated", "--sim-dir", f"{tmp}/sim", "--attest-host-tls-key",
        "--attestation-collateral", f"{tmp}/sim/collateral.json",
        "--model_name", "digits", "--model_base_path", os.path.join(ROOT, "models", "digits")])
    try:
        with open(os.path.join(ROOT, "testdata", "digits", "sample.json")) as f:
            body = json.load(f)
        url = f"https://localhost:{server.rest}"
        with teeserve.attested_session(url, root_certificates=f"{tmp}/tls/ca.pem", policy=policy,
                                       root=f"{tmp}/sim/root.pem", receipts=True) as s:
            r = s.post(f"{url}/v1/models/digits:predict", json=body, timeout=30)
            r.raise_for_status()
            return s.last_receipt(), policy, f"{tmp}/sim/root.pem"
    finally:
        server.stop()


def main(binary):
    with tempfile.TemporaryDirectory() as tmp:
        receipt, policy, root_path = a_receipt(binary, tmp)
        with open(root_path, "rb") as f:
            root = f.read()
    doc = json.loads(receipt.attestation.document)
    quote = base64.b64decode(doc["quote"])
    bundle = json.dumps(doc["collateral"]).encode()

    def verify():
        return teeserve.verify_receipt(receipt, policy=policy, root=root)

    def cold():
        teeserve._native.clear_cache()
        verify()

    v = verify()
    print(f"receipt of {v['model']} version {v['version']} ({v['method']}), {len(receipt.receipt)} bytes; "
          f"request {len(receipt.request)} bytes, response {len(receipt.response)} bytes, "
          f"document {len(receipt.attestation.document)} bytes")
    warm = per_call(verify, 2000)
    first = per_call(cold, 200)
    quote_only = per_call(lambda: teeserve.verify_quote(quote, bundle, policy=policy, root=root), 2000)
    print(f"{'verify_receipt':>16} {'first call':>11} {'verify_quote':>13}")
    print(f"{warm:>14.0f}µs {first:>9.0f}µs {quote_only:>11.0f}µs")


if __name__ == "__main__":
    main(os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else benchlib.TEESERVE)
