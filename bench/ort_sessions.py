"""One model's sessions in onnxruntime, for bench/ort_sessions.sh: MODEL MODE SECONDS.

MODE: one (a session of 2 intra-op threads), two (that and a session of 1 thread), shared (the
two given the same initializers through SessionOptions.add_initializer), shared-extended (the
same at ORT_ENABLE_EXTENDED, without the blocked NCHWc layout); optimised-one, optimised-two,
optimised-shared: the same three from the model as ONNX Runtime optimised it at ORT_ENABLE_ALL
(saved by `make-optimised` in a process of its own, blocked layout included, and loaded with
every optimisation off), so that the shared initializers are the rewritten weights themselves.
Prints the peak RSS of the process after three inferences on each session, its RSS before
loading anything, and the time of one inference on each session (one caller, SECONDS each).
"""
import os
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
name, mode, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])


def rss_mib():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024


def options(intra, level):
    o = ort.SessionOptions()
    o.intra_op_num_threads = intra
    o.inter_op_num_threads = 1
    o.graph_optimization_level = level
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return o


model = os.path.join(ROOT, "target", "bench-models", name, "1", "model.onnx")
optimised = os.path.join(ROOT, "target", "bench-models", name, "optimised.onnx")
if mode == "make-optimised":
    o = options(2, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    o.optimized_model_filepath = optimised
    ort.InferenceSession(model, o, providers=["CPUExecutionProvider"])
    sys.exit()
base = rss_mib()[1]
data = open(optimised if mode.startswith("optimised") else model, "rb").read()
level = {
    "shared-extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "optimised-one": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "optimised-two": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "optimised-shared": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}.get(mode, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
threads = (2,) if mode in ("one", "optimised-one") else (2, 1)
kept = []  # what the shared sessions point into lives as long as they do
shared = []
if "shared" in mode:
    for init in onnx.load_from_string(data).graph.initializer:
        array = numpy_helper.to_array(init).copy()
        kept.append(array)
        shared.append((init.name, ort.OrtValue.ortvalue_from_numpy(array)))
sessions = []
for intra in threads:
    o = options(intra, level)
    for n, v in shared:
        o.add_initializer(n, v)
    kept.append(o)
    sessions.append(ort.InferenceSession(data, o, providers=["CPUExecutionProvider"]))
del data
x = np.random.default_rng(7).random((1, 224, 224, 3), dtype=np.float32)
feed = {sessions[0].get_inputs()[0].name: x}
for s in sessions:
    for _ in range(3):
        s.run(None, feed)
peak = rss_mib()[0]
times = []
for s in sessions:
    t, n = time.perf_counter(), 0
    while time.perf_counter() - t < secs:
        s.run(None, feed)
        n += 1
    times.append(f"{1000 * (time.perf_counter() - t) / n:.2f} ms")
print(f"{name:12} {mode:16} peak RSS {peak:7.1f} MiB (before loading {base:.1f}); "
      f"one inference at {'/'.join(map(str, threads))} threads: {', '.join(times)}")
