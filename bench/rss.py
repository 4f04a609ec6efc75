#!/usr/bin/env python3
"""Peak memory of `teeserve serve` with ResNet-50 (random weights) at 1 and 2 inference workers,
on every engine: tract and ONNX Runtime (the ONNX export) and TensorFlow (the SavedModel).

Each server loads the model, answers 4 Predict requests of one 224x224 image over REST (so that
plans and arenas made on first use are counted), and its peak resident set (VmHWM) is read from
/proc. Models are made on first use in the cache directory, not committed.

    python bench/rss.py TEESERVE_BINARY
Needs tensorflow-cpu, onnxruntime, tf2onnx and numpy (bench/rss.sh installs them).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

import numpy as np
from benchlib import free_port

CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "teeserve-bench", "models")


def models():
    """The ResNet-50 SavedModel and its ONNX export, made once."""
    sm = os.path.join(CACHE, "resnet50-savedmodel")
    onnx_dir = os.path.join(CACHE, "resnet50-onnx")
    if os.path.exists(os.path.join(sm, "1", "saved_model.pb")) and os.path.exists(os.path.join(onnx_dir, "1", "model.onnx")):
        return sm, onnx_dir
    import tensorflow as tf
    import tf2onnx
    tf.keras.utils.set_random_seed(0)
    m = tf.keras.applications.ResNet50(weights=None)
    spec = [tf.TensorSpec([None, 224, 224, 3], tf.float32, name="input")]

    @tf.function(input_signature=spec)
    def serve(input):  # noqa: A002 (the signature's input name, as the reference architecture's)
        return {"predict": m(input, training=False)}

    os.makedirs(sm, exist_ok=True)
    tmp = os.path.join(sm, "1.tmp")
    # Keras 3's export for TF Serving (its variables are restored by the SavedModel's saver,
    # which tf.saved_model.save of a Keras 3 model does not arrange).
    m.export(tmp, format="tf_saved_model")
    os.replace(tmp, os.path.join(sm, "1"))
    os.makedirs(os.path.join(onnx_dir, "1"), exist_ok=True)
    out = os.path.join(onnx_dir, "1", "model.onnx")
    tf2onnx.convert.from_function(serve, input_signature=spec, opset=17, output_path=out + ".tmp")
    os.replace(out + ".tmp", out)
    return sm, onnx_dir


def peak_rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def measure(binary, tmp, base, workers, extra):
    port = free_port()
    log = open(os.path.join(tmp, "serve.log"), "w")
    p = subprocess.Popen([binary, "serve", "--insecure", "--port", "0", "--rest_api_port", str(port),
                          "--rest_api_bind_address", "127.0.0.1", "--model_name", "resnet50",
                          "--model_base_path", base, "--workers", str(workers)] + extra,
                         stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("listening"), open(os.path.join(tmp, "serve.log")).read()
        x = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
        body = json.dumps({"instances": x.tolist()}).encode()
        for _ in range(4):
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/resnet50:predict", data=body,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=300) as r:
                    out = json.loads(r.read())
            except urllib.error.HTTPError as e:
                raise RuntimeError(f"{extra}: {e.code} {e.read()[:300]!r}") from None
            assert len(out["predictions"][0]) == 1000 or len(out["predictions"][0]["predict"]) == 1000
        return peak_rss_mib(p.pid)
    finally:
        p.terminate()
        p.wait()


def main(binary):
    import tensorflow as tf
    import onnxruntime
    tf_lib = os.path.join(os.path.dirname(tf.__file__), "libtensorflow_cc.so.2")
    capi = os.path.join(os.path.dirname(onnxruntime.__file__), "capi")
    ort_lib = os.path.join(capi, sorted(f for f in os.listdir(capi) if f.startswith("libonnxruntime.so"))[0])
    sm, onnx_dir = models()
    engines = [
        ("tract", onnx_dir, []),
        ("ONNX Runtime", onnx_dir, ["--engine", "onnxruntime", "--onnxruntime-lib", ort_lib]),
        ("TensorFlow", sm, ["--tensorflow-lib", tf_lib]),
    ]
    tmp = tempfile.mkdtemp()
    try:
        print("| engine | peak RSS, 1 worker | peak RSS, 2 workers | ratio |")
        print("|---|---|---|---|")
        for name, base, extra in engines:
            one = measure(binary, tmp, base, 1, extra)
            two = measure(binary, tmp, base, 2, extra)
            print(f"| {name} | {one:.0f} MiB | {two:.0f} MiB | {two / one:.2f}x |", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1])
