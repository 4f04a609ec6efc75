#!/usr/bin/env python3
"""teeserve.verify_quote against the dcap-qvl Python package's verify, in one run, on the same
real quotes and collateral (the vectors in ../shared/vectors/dcap).

    pip install ./python dcap-qvl
    python3 bench/verify_python.py [VECTORS_DIR]

Prints microseconds per verification (best of 5 rounds) and the ratios:
- dcap-qvl: dcap_qvl.verify(quote, collateral, now) with the collateral object built once;
- teeserve: teeserve.verify_quote(quote, bundle_bytes, at=now), the call a requester makes; the
  bundle's signatures are checked on the first call and kept (by its SHA-256), so this is the
  figure of every call after the first with the same bundle;
- teeserve, first call: the cache emptied before every call, so each one checks the bundle's
  chains, CRLs and signatures too.
"""
import os
import sys
import time

import dcap_qvl

import teeserve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VECTORS = [("sgx-v3-dcapqvl", 1751000000), ("tdx-v4-dcapqvl", 1751000000)]


def per_call(fn, n, rounds=5):
    fn()
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


def main(vectors):
    print(f"{'vector':<16} {'dcap-qvl':>10} {'teeserve':>10} {'first call':>11} {'ratio':>7} {'first-call ratio':>17}")
    for name, at in VECTORS:
        d = os.path.join(vectors, "dcap")
        with open(os.path.join(d, name + ".quote"), "rb") as f:
            quote = f.read()
        with open(os.path.join(d, name + ".collateral.json"), "rb") as f:
            bundle = f.read()
        collateral = dcap_qvl.QuoteCollateralV3.from_json(bundle.decode())
        # Both agree before anything is timed.
        ours = teeserve.verify_quote(quote, bundle, at=at)
        theirs = dcap_qvl.verify(quote, collateral, at)
        assert ours["tcb_status"] == theirs.status, (ours["tcb_status"], theirs.status)

        def cold():
            teeserve._native.clear_cache()
            teeserve.verify_quote(quote, bundle, at=at)

        q = per_call(lambda: dcap_qvl.verify(quote, collateral, at), 200)
        w = per_call(lambda: teeserve.verify_quote(quote, bundle, at=at), 2000)
        c = per_call(cold, 200)
        print(f"{name:<16} {q:>8.0f}µs {w:>8.0f}µs {c:>9.0f}µs {q / w:>6.1f}x {q / c:>16.2f}x")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "shared", "vectors"))
