#!/usr/bin/env python3
"""The TensorFlow engine against TensorFlow in Python, all in one run (bench/tf_engine.sh
prepares what this needs).

For ResNet-50 and MobileNetV2 (keras.applications, random weights, seed 7), exported as
SavedModels with a `serving_default` signature (input `input`, output `predict`, as the
reference architecture's ResNet-50) on first use into target/bench-models/ (never committed),
at batch 1 and 8, one request at a time, one thread per operation and one operation at a time
everywhere, four ways of running the same SavedModel on the same input:
  - TensorFlow in Python: loaded with tf.saved_model.load, its serving_default signature called
    in process (the reference the goals name);
  - TensorFlow in Python through a TF1 Session on the MetaGraph (tf.compat.v1 loader), which is
    how TF Serving runs a SavedModel;
  - teeserve's TensorFlow engine in process (the model_bench example), loading the SavedModel
    through the C API of the library the same wheel ships;
  - `teeserve serve --tensorflow-lib` end to end over gRPC+TLS on loopback (model_bench client,
    which sends `tensor_content` and decodes the outputs into tensors, on the same 2 cores).

How, on a shared 2-core machine: each of the four runs in its own process, driven one call at a
time through a pipe, and the calls are made in rounds (one call of each, in a fresh random order
per round), so that a slow spell falls on all four alike. A process's speed also depends on
where its memory happens to land: two processes running the same model on the same engine
differ by up to 15% for as long as they live. So a run is several trials, each with fresh
processes (and a fresh server); a ratio is the median of each trial's ratio of medians, shown
with the lowest and highest trial.

    bench/tf_engine.sh [SECONDS [TRIALS]]   (SECONDS per model and batch in each trial,
                                             default 15; TRIALS default 5)
    tf_engine.py --worker function|session SAVEDMODEL_VERSION_DIR   (used by the run itself)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "target", "bench-models")
WORKER = len(sys.argv) > 1 and sys.argv[1] == "--worker"
SECS = float(sys.argv[1]) if len(sys.argv) > 1 and not WORKER else 15.0
TRIALS = int(sys.argv[2]) if len(sys.argv) > 2 and not WORKER else 5
MIN_ROUNDS = 5

import numpy as np  # noqa: E402
from benchlib import MODEL_BENCH, TEESERVE, Serve, images  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
import keras  # noqa: E402

TF_LIB = os.path.join(os.path.dirname(tf.__file__), "libtensorflow_cc.so.2")
ARCHS = {"resnet50": keras.applications.ResNet50, "mobilenetv2": keras.applications.MobileNetV2}


def saved_model(name):
    """The model's base path; version 1 is made on first use."""
    base = os.path.join(MODELS, f"{name}-savedmodel")
    version = os.path.join(base, "1")
    if not os.path.exists(os.path.join(version, "saved_model.pb")):
        keras.utils.set_random_seed(7)
        m = ARCHS[name](weights=None)
        # Keras 3 exports for TF Serving through an ExportArchive, which arranges for the
        # SavedModel's saver to restore the variables.
        archive = keras.export.ExportArchive()
        archive.track(m)
        archive.add_endpoint(
            name="serving_default",
            fn=lambda input: {"predict": m(input, training=False)},  # noqa: A002
            input_signature=[tf.TensorSpec((None, 224, 224, 3), tf.float32, name="input")])
        shutil.rmtree(version + ".tmp", ignore_errors=True)
        archive.write_out(version + ".tmp")
        os.replace(version + ".tmp", version)
        print(f"made {version}", file=sys.stderr)
    return base


class Paced:
    """A process that makes one call per line written (the line holds the batch size) and
    answers with its milliseconds: model_bench in `paced` mode, or this script's --worker."""

    def __init__(self, *args):
        self.p = subprocess.Popen(list(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        if self.p.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{args[:2]} did not start")

    def __call__(self, batch):
        self.p.stdin.write(f"{batch}\n")
        self.p.stdin.flush()
        return float(self.p.stdout.readline())

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def worker(kind, version):
    """The Python side of a trial: TensorFlow running the SavedModel, one call per line."""
    if kind == "function":
        fn = tf.saved_model.load(version).signatures["serving_default"]

        def call(x):
            return fn(input=tf.constant(x))["predict"].numpy()
    else:
        graph = tf.Graph()
        with graph.as_default():
            sess = tf.compat.v1.Session(graph=graph, config=tf.compat.v1.ConfigProto(
                intra_op_parallelism_threads=1, inter_op_parallelism_threads=1))
            sig = tf.compat.v1.saved_model.loader.load(sess, ["serve"], version).signature_def["serving_default"]
        feed, fetch = sig.inputs["input"].name, sig.outputs["predict"].name

        def call(x):
            return sess.run(fetch, {feed: x})
    inputs = {}
    print("ready", flush=True)
    for line in sys.stdin:
        batch = int(line)
        x = inputs.setdefault(batch, images(batch))
        t = time.perf_counter()
        call(x)
        print(f"{(time.perf_counter() - t) * 1e3:.3f}", flush=True)


def measure(calls, batch, budget, rng):
    """Rounds of one call each, in a fresh order per round, until `budget` seconds have gone
    and at least MIN_ROUNDS rounds have run, after one call each as a warm-up."""
    for c in calls.values():
        c(batch)
    ms = {k: [] for k in calls}
    start = time.perf_counter()
    while time.perf_counter() - start < budget or len(ms["python"]) < MIN_ROUNDS:
        for k in rng.permutation(list(calls)):
            ms[k].append(calls[k](batch))
    return {k: float(np.median(v)) for k, v in ms.items()}


def main():
    rng = np.random.default_rng(0)
    tmp = tempfile.mkdtemp()
    subprocess.run([TEESERVE, "tls", "init", "--dir", f"{tmp}/tls"], check=True, capture_output=True)
    bases = {name: saved_model(name) for name in ARCHS}
    config = os.path.join(tmp, "models.config")
    with open(config, "w") as f:
        f.write("model_config_list {\n" + "".join(
            f'  config {{ name: "{n}" base_path: "{b}" model_platform: "tensorflow" }}\n'
            for n, b in bases.items()) + "}\n")
    trials = {}  # "model batch N" -> one {participant: median ms} per trial
    try:
        for trial in range(TRIALS):
            server = Serve(tmp, "tensorflow", ["--model_config_file", config, "--tensorflow-lib", TF_LIB,
                                               "--workers", "1", "--tensorflow_intra_op_parallelism", "1",
                                               "--tensorflow_inter_op_parallelism", "1"])
            try:
                for name, base in bases.items():
                    version = os.path.join(base, "1")
                    me = [sys.executable, os.path.abspath(__file__), "--worker"]
                    calls = {
                        "python": Paced(*me, "function", version),
                        "session": Paced(*me, "session", version),
                        "engine": Paced(MODEL_BENCH, "engine", version, f"tensorflow={TF_LIB}", "1", "paced"),
                        "grpc": Paced(MODEL_BENCH, "client", f"127.0.0.1:{server.grpc}", f"{tmp}/tls/ca.pem",
                                      name, "input", "1", "1", "paced"),
                    }
                    try:
                        for batch in (1, 8):
                            m = measure(calls, batch, SECS, rng)
                            trials.setdefault(f"{name} batch {batch}", []).append(m)
                            print(f"trial {trial + 1}, {name} batch {batch}: " +
                                  ", ".join(f"{k} {v:.1f} ms" for k, v in m.items()), flush=True)
                    finally:
                        for c in calls.values():
                            c.close()
            finally:
                server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def ratio(ts, a, b):
        r = [t[a] / t[b] for t in ts]
        return float(np.median(r)), min(r), max(r)

    def show(v):
        return f"{v[0]:.3f} ({v[1]:.3f}-{v[2]:.3f})"
    results = {}
    print(f"\n{TRIALS} trials of {SECS:g} s per row. Median ms over the trials; ratios: the median of the "
          "trials' ratios (lowest-highest trial).\n")
    print("| model, batch | TensorFlow (Python) | TF1 Session (Python) | TensorFlow engine | gRPC+TLS "
          "| engine / Python | gRPC / Python | Session / Python | engine / Session |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, ts in trials.items():
        med = {p: float(np.median([t[p] for t in ts])) for p in ts[0]}
        r = {f"{a} / {b}": ratio(ts, a, b) for a, b in
             (("engine", "python"), ("grpc", "python"), ("session", "python"), ("engine", "session"))}
        results[k] = {"median_ms": med, "ratios": r, "trials": ts}
        print(f"| {k} | {med['python']:.1f} | {med['session']:.1f} | {med['engine']:.1f} | {med['grpc']:.1f} | "
              + " | ".join(show(v) for v in r.values()) + " |")
    with open(os.path.join(ROOT, "target", "bench-tensorflow.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    if WORKER:
        worker(sys.argv[2], sys.argv[3])
    else:
        main()
