#!/usr/bin/env python3
"""Concurrent requests to one model, in one run (bench/concurrency.sh prepares what this needs).

MobileNetV2 and ResNet-50 (keras.applications, random weights, exported to ONNX on first use
into target/bench-models/, as bench/serving.py does) at batch 1, with 1, 2, 4 and 8 requesters:
  - onnxruntime in Python: one session shared by that many threads calling `run` at once, with
    1 intra-op thread and with the library's default (the cores); the better is the reference;
  - teeserve serve --engine onnxruntime over gRPC+TLS (model_bench client, that many requests in
    flight, each sending a request encoded once unless ENCODE=each), with the default flags and
    with each --onnxruntime_intra_op_parallelism given.
The configurations take turns for each requester count, ROUNDS times (default 3), and each
figure is the median of its rounds; at 4 requesters each teeserve figure is also divided by the
best raw figure of its own round (the machine's speed drifts by tens of per cent over minutes,
more than the difference measured). Then the goal in tight turns: TURNS times (default 8), raw
onnxruntime at 2 and at 4 threads (1 intra-op thread, the best raw configuration at 4 requesters
on two cores in every run so far) and each teeserve configuration at 4 requesters, TURN_SECONDS
each (default 4); a turn's ratio is teeserve's figure over the better raw one of the same turn,
and the report gives their median. Then the server's peak RSS (VmHWM) after a run at 1 and at 2
workers.

    ROUNDS=3 TURNS=8 [ENCODE=each] bench/concurrency.sh [SECONDS] [INTRA_OP ...]
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
# The requesters share the two cores with the server and Python's reference has none: they send
# a request encoded once (as h2load sends a fixed body), so that their own work is the transport
# alone. ENCODE=each makes every request encode its tensor, as a client library does.
REQUESTER_ENV = {} if os.environ.get("ENCODE") == "each" else {"TEESERVE_BENCH_ENCODED": "once"}
ROUNDS = int(os.environ.get("ROUNDS", "3"))
TURNS = int(os.environ.get("TURNS", "8"))
TURN_SECS = float(os.environ.get("TURN_SECONDS", "4"))
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


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def goal_turns(configs, name):
    """TURNS turns at 4 requesters: raw onnxruntime (intra 1) at 2 and 4 threads, then each
    teeserve configuration; each teeserve figure over the better raw figure of its turn."""
    raw_best = configs["onnxruntime (Python), intra 1"]
    ratios = {label: [] for label in configs if label.startswith("teeserve")}
    for turn in range(TURNS):
        best = max(raw_best(n, TURN_SECS)["per_second"] for n in (2, 4))
        line = {"raw best": round(best, 1)}
        for label in ratios:
            got = configs[label](4, TURN_SECS)["per_second"]
            ratios[label].append(got / best)
            line[label] = round(got / best, 3)
        print(name, f"turn {turn + 1} at 4 requesters:", json.dumps(line), flush=True)
    return ratios


def main():
    tmp = tempfile.mkdtemp()
    results = {}
    servers = []
    try:
        subprocess.run([TEESERVE, "tls", "init", "--dir", f"{tmp}/tls"], check=True, capture_output=True)
        for name in ["mobilenetv2", "resnet50"]:
            path = onnx_path(name)
            x = images(1)
            base = ["--model_name", name, "--model_base_path", os.path.join(MODELS, name),
                    "--engine", "onnxruntime", "--onnxruntime_lib", ORT_LIB]
            # Every configuration is measured in turn, for each requester count, ROUNDS times:
            # this machine's speed drifts over minutes, so a figure is compared with the
            # reference measured seconds before and after it, not minutes apart.
            configs = {}
            for intra in (1, 0):
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = intra
                sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
                label = f"onnxruntime (Python), intra {intra or 'default'}"
                configs[label] = lambda n, secs=SECS, sess=sess: {"per_second": raw(sess, x, n, secs)}
            for intra in [None] + INTRA:
                label = "teeserve, default" if intra is None else f"teeserve, intra {intra}"
                extra = [] if intra is None else ["--onnxruntime_intra_op_parallelism", str(intra)]
                s = Serve(tmp, f"serve-{len(servers)}", base + extra)
                servers.append(s)
                # One request per connection first, so that no measurement pays a first run.
                tool(MODEL_BENCH, "client", f"127.0.0.1:{s.grpc}", f"{tmp}/tls/ca.pem", name, "input", "1", "2", "1")
                configs[label] = lambda n, secs=SECS, s=s: tool(
                    MODEL_BENCH, "client", f"127.0.0.1:{s.grpc}", f"{tmp}/tls/ca.pem",
                    name, "input", "1", str(n), str(secs), env=REQUESTER_ENV)
            runs = {label: {n: [] for n in REQUESTERS} for label in configs}
            p50 = {label: [] for label in configs if label.startswith("teeserve")}
            for rnd in range(ROUNDS):
                for n in REQUESTERS:
                    for label, measure in configs.items():
                        out = measure(n)
                        runs[label][n].append(out["per_second"])
                        if n == 1 and label in p50:
                            p50[label].append(out["p50_ms"])
                    print(name, f"round {rnd + 1}, {n} requesters:",
                          json.dumps({k: round(v[n][-1], 1) for k, v in runs.items()}), flush=True)
            r = {label: {n: median(v) for n, v in row.items()} for label, row in runs.items()}
            # At 4 requesters, each teeserve figure over the best raw figure of its own round.
            r["paired ratio at 4 requesters"] = {
                label: median([runs[label][4][i] / max(runs[raw_label][n][i]
                                                       for raw_label in runs if raw_label.startswith("onnxruntime")
                                                       for n in REQUESTERS)
                               for i in range(ROUNDS)])
                for label in runs if label.startswith("teeserve")}
            r["p50 ms at 1 requester"] = {label: median(v) for label, v in p50.items()}
            r["rounds"] = runs
            r["turns at 4 requesters"] = goal_turns(configs, name)
            for s in servers:
                s.stop()
            servers.clear()
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
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    for name, r in results.items():
        best_raw = max(v for k, row in r.items() if k.startswith("onnxruntime") for v in row.values())
        print(f"\n{name}, batch 1, requests/s, medians of {ROUNDS} rounds (best raw onnxruntime: {best_raw:.1f})")
        print("| | " + " | ".join(f"{n} requester{'s' if n > 1 else ''}" for n in REQUESTERS) + " |")
        print("|---" * (len(REQUESTERS) + 1) + "|")
        for k, row in r.items():
            if isinstance(row, dict) and set(row) == set(REQUESTERS) and k != "rounds":
                print(f"| {k} | " + " | ".join(f"{row[n]:.1f}" for n in REQUESTERS) + " |")
        for k, row in r.items():
            if k.startswith("teeserve"):
                print(f"{k}: at 4 requesters {row[4] / best_raw:.2f}x the best raw median, "
                      f"{r['paired ratio at 4 requesters'][k]:.2f}x the best raw figure of its own round (median)")
        for k, ratios in r["turns at 4 requesters"].items():
            print(f"{k}: in {len(ratios)} tight turns at 4 requesters, {median(ratios):.2f}x the better raw "
                  f"figure of its turn (median; per turn {', '.join(f'{v:.2f}' for v in ratios)})")
        print("p50 at 1 requester (ms):", {k: round(v, 2) for k, v in r["p50 ms at 1 requester"].items()})
        rss = r["peak RSS KiB by workers"]
        print(f"peak RSS: 1 worker {rss[1] / 1024:.0f} MiB, 2 workers {rss[2] / 1024:.0f} MiB, "
              f"ratio {rss[2] / rss[1]:.3f}")
    with open(os.path.join(os.path.dirname(MODELS), "bench-concurrency.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
