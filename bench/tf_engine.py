#!/usr/bin/env python3
"""The TensorFlow engine against TensorFlow in Python, all in one run (bench/tf_engine.sh
prepares what this needs).

For ResNet-50 and MobileNetV2 (keras.applications, random weights, seed 7), exported as
SavedModels with a `serving_default` signature (input `input`, output `predict`, as the
reference architecture's ResNet-50) on first use into target/bench-models/ (never committed),
at batch 1 and 8, one request at a time, one thread per operation and one operation at a time
everywhere:
  - TensorFlow in Python: the SavedModel loaded with tf.saved_model.load, its serving_default
    signature called in process (the reference: what TF Serving runs);
  - teeserve's TensorFlow engine in process (the model_bench example), loading the same
    SavedModel through the C API of the library the same wheel ships;
  - `teeserve serve --tensorflow-lib` end to end over gRPC+TLS on loopback (model_bench client,
    which sends `tensor_content` and decodes the outputs into tensors, on the same 2 cores).
The two in-process figures are taken in alternation, three times each, and the median of each
three medians is kept, so that a slow spell of the shared machine falls on both.

    bench/tf_engine.sh [SECONDS]
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "target", "bench-models")
SECS = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0

import numpy as np  # noqa: E402
from benchlib import MODEL_BENCH, TEESERVE, Serve, images, timed, tool  # noqa: E402
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


def main():
    results = {}
    tmp = tempfile.mkdtemp()
    server = None
    try:
        subprocess.run([TEESERVE, "tls", "init", "--dir", f"{tmp}/tls"], check=True, capture_output=True)
        bases = {name: saved_model(name) for name in ARCHS}
        config = os.path.join(tmp, "models.config")
        with open(config, "w") as f:
            f.write("model_config_list {\n" + "".join(
                f'  config {{ name: "{n}" base_path: "{b}" model_platform: "tensorflow" }}\n'
                for n, b in bases.items()) + "}\n")
        server = Serve(tmp, "tensorflow", ["--model_config_file", config, "--tensorflow-lib", TF_LIB, "--workers", "1",
                             "--tensorflow_intra_op_parallelism", "1", "--tensorflow_inter_op_parallelism", "1"])
        for name, base in bases.items():
            version = os.path.join(base, "1")
            fn = tf.saved_model.load(version).signatures["serving_default"]
            for batch in (1, 8):
                x = images(batch)
                budget = SECS / 2
                python, engine = [], []
                for _ in range(3):
                    python.append(timed(lambda: fn(input=tf.constant(x))["predict"].numpy(), budget))
                    reps = max(3, int(budget * 1000 / python[-1]))
                    engine.append(tool(MODEL_BENCH, "engine", version, f"tensorflow={TF_LIB}",
                                       str(batch), str(reps))["p50_ms"])
                grpc = tool(MODEL_BENCH, "client", f"127.0.0.1:{server.grpc}", f"{tmp}/tls/ca.pem", name,
                            "input", str(batch), "1", str(SECS))["p50_ms"]
                r = {"TensorFlow (Python)": float(np.median(python)),
                     "TensorFlow engine": float(np.median(engine)),
                     "gRPC+TLS": grpc,
                     "runs": {"python": python, "engine": engine}}
                results[f"{name} batch {batch}"] = r
                print(f"{name} batch {batch}: Python {python} ms, engine {engine} ms, gRPC+TLS {grpc:.1f} ms",
                      flush=True)
    finally:
        if server:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print("\n| model, batch | TensorFlow (Python) | TensorFlow engine | gRPC+TLS | engine / Python | gRPC / Python |")
    print("|---|---|---|---|---|---|")
    for k, r in results.items():
        py = r["TensorFlow (Python)"]
        print(f"| {k} | {py:.1f} | {r['TensorFlow engine']:.1f} | {r['gRPC+TLS']:.1f} | "
              f"{r['TensorFlow engine'] / py:.3f} | {r['gRPC+TLS'] / py:.3f} |")
    with open(os.path.join(ROOT, "target", "bench-tensorflow.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
