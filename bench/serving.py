#!/usr/bin/env python3
"""Serving benchmark, all in one run (see bench/serving.sh, which prepares what this needs).

For ResNet-50 and MobileNetV2 (keras.applications, random weights, exported to ONNX by tf2onnx
on first use into target/bench-models/, never committed), at batch 1 and 8, one inference at a
time on one thread:
  - onnxruntime and TensorFlow in Python, in process (the references);
  - teeserve's engines in process (tract, ONNX Runtime), through the model_bench example;
  - teeserve serve --engine onnxruntime end to end over gRPC+TLS and REST+TLS on loopback
    (and tract over gRPC+TLS at batch 1).
Then MobileNetV2 at concurrency 16 with and without --enable_batching (ONNX Runtime engine), and
the digits model at concurrency 32 (the serving_load example).

    bench/serving.sh [SECONDS]
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
SERVING_LOAD = os.path.join(ROOT, "target", "release", "examples", "serving_load")
SECS = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0

from benchlib import MODEL_BENCH, TEESERVE, Serve, images, timed, tool  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
import keras  # noqa: E402

ORT_LIB = next(os.path.join(d, f) for d in [os.path.join(os.path.dirname(ort.__file__), "capi")]
               for f in sorted(os.listdir(d)) if f.startswith("libonnxruntime.so.1"))
ARCHS = {"resnet50": keras.applications.ResNet50, "mobilenetv2": keras.applications.MobileNetV2}


def keras_model(name):
    keras.utils.set_random_seed(7)
    return ARCHS[name](weights=None)


def onnx_path(name):
    path = os.path.join(MODELS, name, "1", "model.onnx")
    if not os.path.exists(path):
        import tf2onnx
        os.makedirs(os.path.dirname(path), exist_ok=True)
        m = keras_model(name)
        spec = (tf.TensorSpec((None, 224, 224, 3), tf.float32, name="input"),)
        f = tf.function(lambda x: {"probabilities": m(x, training=False)})
        tf2onnx.convert.from_function(f, input_signature=spec, opset=17, output_path=path + ".tmp")
        os.replace(path + ".tmp", path)
        print(f"made {path}", file=sys.stderr)
    return path


def client(tmp, port, model, batch, conc, rest=False, secs=None):
    args = [MODEL_BENCH, "client", f"127.0.0.1:{port}", f"{tmp}/tls/ca.pem", model, "input",
            str(batch), str(conc), str(secs or SECS)]
    return tool(*args + (["--rest"] if rest else []))


def main():
    results = {}
    tmp = tempfile.mkdtemp()
    servers = []
    try:
        subprocess.run([TEESERVE, "tls", "init", "--dir", f"{tmp}/tls"],
                       check=True, capture_output=True)
        for name in ARCHS:
            onnx_path(name)
        config = os.path.join(tmp, "models.config")
        with open(config, "w") as f:
            f.write("model_config_list {\n" + "".join(
                f'  config {{ name: "{n}" base_path: "{os.path.join(MODELS, n)}" model_platform: "onnx" }}\n'
                for n in ARCHS) + "}\n")
        ort_srv = Serve(tmp, "onnxruntime", ["--model_config_file", config, "--engine", "onnxruntime",
                                             "--onnxruntime-lib", ORT_LIB])
        tract_srv = Serve(tmp, "tract", ["--model_config_file", config])
        servers += [ort_srv, tract_srv]
        for name in ARCHS:
            path = onnx_path(name)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            km = keras_model(name)
            tf_fn = tf.function(lambda x, km=km: km(x, training=False))
            for batch in (1, 8):
                x = images(batch)
                budget = SECS / 2
                r = {
                    "onnxruntime (Python)": timed(lambda: sess.run(None, {"input": x}), budget),
                    "TensorFlow (Python)": timed(lambda: tf_fn(tf.constant(x)).numpy(), budget),
                }
                reps = max(3, int(budget * 1000 / (r["onnxruntime (Python)"] * 2.5)))
                r["tract engine"] = tool(MODEL_BENCH, "engine", path, "tract", str(batch), str(max(3, reps // 3)))["p50_ms"]
                r["ONNX Runtime engine"] = tool(MODEL_BENCH, "engine", path, f"onnxruntime={ORT_LIB}", str(batch), str(reps))["p50_ms"]
                r["gRPC+TLS (ONNX Runtime)"] = client(tmp, ort_srv.grpc, name, batch, 1)["p50_ms"]
                r["REST+TLS (ONNX Runtime)"] = client(tmp, ort_srv.rest, name, batch, 1, rest=True)["p50_ms"]
                if batch == 1:
                    r["gRPC+TLS (tract)"] = client(tmp, tract_srv.grpc, name, batch, 1)["p50_ms"]
                results[f"{name} batch {batch}"] = r
                print(f"{name} batch {batch}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in r.items()), flush=True)
        for s in servers:
            s.stop()
        servers = []

        # Dynamic batching, MobileNetV2 on ONNX Runtime, 16 concurrent batch-1 requests.
        params = os.path.join(tmp, "batching.config")
        with open(params, "w") as f:
            f.write("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 2000 }\n"
                    "num_batch_threads { value: 2 }\nmax_enqueued_batches { value: 64 }\n")
        base = ["--model_name", "mobilenetv2", "--model_base_path", os.path.join(MODELS, "mobilenetv2"),
                "--engine", "onnxruntime", "--onnxruntime-lib", ORT_LIB]
        batching = {}
        for label, extra in [("without batching", []),
                             ("with --enable_batching", ["--enable_batching", "--batching_parameters_file", params])]:
            s = Serve(tmp, "batching", base + extra)
            servers.append(s)
            r = client(tmp, s.grpc, "mobilenetv2", 1, 16)
            batching[label] = r
            print(f"mobilenetv2 gRPC+TLS concurrency 16 {label}: {r['per_second']:.1f} images/s, "
                  f"p50 {r['p50_ms']:.1f} ms", flush=True)
            s.stop()
            servers.remove(s)
        results["mobilenetv2 concurrency 16"] = batching

        out = subprocess.run([SERVING_LOAD, str(int(SECS))], check=True, capture_output=True, text=True).stdout
        print(out, end="", flush=True)
        results["digits"] = out
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    # The summary table, as docs/BENCHMARKS.md shows it.
    cols = ["onnxruntime (Python)", "TensorFlow (Python)", "tract engine", "ONNX Runtime engine",
            "gRPC+TLS (ONNX Runtime)", "REST+TLS (ONNX Runtime)", "gRPC+TLS (tract)"]
    print("\n| model, batch | " + " | ".join(cols) + " | gRPC / onnxruntime | gRPC / TensorFlow |")
    print("|---" * (len(cols) + 3) + "|")
    for k, r in results.items():
        if "batch" not in k:
            continue
        cells = [f"{r[c]:.1f}" if c in r else "" for c in cols]
        g = r["gRPC+TLS (ONNX Runtime)"]
        print(f"| {k} | " + " | ".join(cells) +
              f" | {g / r['onnxruntime (Python)']:.3f} | {g / r['TensorFlow (Python)']:.3f} |")
    b = results["mobilenetv2 concurrency 16"]
    gain = b["with --enable_batching"]["per_second"] / b["without batching"]["per_second"]
    print(f"\nbatching gain (MobileNetV2, ONNX Runtime, concurrency 16): {gain:.2f}x")
    with open(os.path.join(ROOT, "target", "bench-serving.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
