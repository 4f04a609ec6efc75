#!/usr/bin/env python3
"""Concurrent requests to one model, in one run (bench/concurrency.sh prepares what this needs).

MobileNetV2 and ResNet-50 (keras.applications, random weights, exported to ONNX on first use
into target/bench-models/, as bench/serving.py does) at batch 1, with 1, 2, 4 and 8 requesters:
  - onnxruntime in Python: one session shared by that many threads calling `run` at once, with
    1 intra-op thread and with the library's default (the cores); the better is the reference;
  - teeserve serve --engine onnxruntime over gRPC+TLS (model_bench client, that many requests in
    flight), with the default flags and with each --onnxruntime_intra_op_parallelism given.
Then the server's peak RSS (VmHWM) after a run at 1 and at 2 workers.

    bench/concurrency.sh [SECONDS] [INTRA_OP ...]
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import MODEL_BENCH, TEESERVE, Serve, images, tool  # noqa: E402
import onnxruntime as ort  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serving import MODELS, ORT_LIB, onnx_path  # noqa: E402

SECS = float(sys.argv[1]) if len(sys.argv) > 1 else 8.0
INTRA = [int(a) for a in sys.argv[2:]] or [1, 2]
REQUESTERS = [1, 2, 4, 8]


def raw(sess, x, threads, secs):
    """Requests per second of `threads` threads calling sess.run at once for `secs`."""
    sess.run(None, {"input": x})
    count = [0] * threads
    stop = time.perf_counter() + secs

    def loop(i):
        while time.perf_counter() < stop:
            sess.run(None, {"input": x})
            count[i] += 1

    ts = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(count) / (time.perf_counter() - start)


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main():
    tmp = tempfile.mkdtemp()
    results = {}
    try:
        subprocess.run([TEESERVE, "tls", "init", "--dir", f"{tmp}/tls"], check=True, capture_output=True)
        for name in ["mobilenetv2", "resnet50"]:
            path = onnx_path(name)
            x = images(1)
            r = {}
            for intra in (1, 0):
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = intra
                sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
                label = f"onnxruntime (Python), intra {intra or 'default'}"
                r[label] = {n: raw(sess, x, n, SECS) for n in REQUESTERS}
                print(name, label, json.dumps(r[label]), flush=True)
                del sess
            base = ["--model_name", name, "--model_base_path", os.path.join(MODELS, name),
                    "--engine", "onnxruntime", "--onnxruntime_lib", ORT_LIB]
            for intra in [None] + INTRA:
                label = "teeserve, default" if intra is None else f"teeserve, intra {intra}"
                extra = [] if intra is None else ["--onnxruntime_intra_op_parallelism", str(intra)]
                s = Serve(tmp, "serve", base + extra)
                try:
                    row = {}
                    for n in REQUESTERS:
                        out = tool(MODEL_BENCH, "client", f"127.0.0.1:{s.grpc}", f"{tmp}/tls/ca.pem",
                                   name, "input", "1", str(n), str(SECS))
                        row[n] = out["per_second"]
                        if n == 1:
                            r.setdefault("p50 ms at 1 requester", {})[label] = out["p50_ms"]
                    r[label] = row
                    print(name, label, json.dumps(row), flush=True)
                finally:
                    s.stop()
            # Peak RSS at 1 and 2 workers, after a run at 4 requesters.
            rss = {}
            for workers in (1, 2):
                s = Serve(tmp, "rss", base + ["--workers", str(workers)])
                try:
                    tool(MODEL_BENCH, "client", f"127.0.0.1:{s.grpc}", f"{tmp}/tls/ca.pem",
                         name, "input", "1", "4", str(SECS / 2))
                    rss[workers] = peak_rss_kib(s.p.pid)
                finally:
                    s.stop()
            r["peak RSS KiB by workers"] = rss
            print(name, "peak RSS KiB by workers", rss, flush=True)
            results[name] = r
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    for name, r in results.items():
        best_raw = max(v for k, row in r.items() if k.startswith("onnxruntime") for v in row.values())
        print(f"\n{name}, batch 1, requests/s (best raw onnxruntime: {best_raw:.1f})")
        print("| | " + " | ".join(f"{n} requester{'s' if n > 1 else ''}" for n in REQUESTERS) + " |")
        print("|---" * (len(REQUESTERS) + 1) + "|")
        for k, row in r.items():
            if isinstance(row, dict) and set(row) == set(REQUESTERS):
                print(f"| {k} | " + " | ".join(f"{row[n]:.1f}" for n in REQUESTERS) + " |")
        for k, row in r.items():
            if k.startswith("teeserve"):
                print(f"{k}: at 4 requesters {row[4] / best_raw:.2f}x the best raw figure")
        print("p50 at 1 requester (ms):", r["p50 ms at 1 requester"])
        rss = r["peak RSS KiB by workers"]
        print(f"peak RSS: 1 worker {rss[1] / 1024:.0f} MiB, 2 workers {rss[2] / 1024:.0f} MiB, "
              f"ratio {rss[2] / rss[1]:.3f}")
    with open(os.path.join(os.path.dirname(MODELS), "bench-concurrency.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
