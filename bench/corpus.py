#!/usr/bin/env python3
"""The exporters' corpus on both ONNX engines: what loads, and whether it matches onnxruntime.

Models are made on first use in the cache directory (random weights; nothing downloaded, not
committed): keras.applications ResNet50, MobileNetV2, EfficientNetB0, DenseNet121 and
InceptionV3 through tf2onnx with a symbolic batch; small Keras models with Flatten and Reshape;
Keras LSTM and GRU text classifiers; a scikit-learn pipeline through skl2onnx. Each model is
served by `teeserve serve` on tract and on ONNX Runtime, asked one Predict of a batch of 2 over
REST, and its outputs compared with onnxruntime in process (max absolute difference; 1e-4 is
the bar). A model an engine cannot load is reported with serve's error.

    python bench/corpus.py TEESERVE_BINARY
Needs tensorflow-cpu, onnxruntime, tf2onnx, skl2onnx, scikit-learn and numpy
(bench/corpus.sh installs them).
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
import onnxruntime as ort

CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "teeserve-bench", "corpus")


def keras_to_onnx(make, shape, dtype, path):
    import tensorflow as tf
    import tf2onnx
    tf.keras.utils.set_random_seed(0)
    m = make()
    spec = [tf.TensorSpec([None] + list(shape), dtype, name="input")]

    @tf.function(input_signature=spec)
    def serve(input):  # noqa: A002
        return {"output": m(input, training=False)}

    tf2onnx.convert.from_function(serve, input_signature=spec, opset=17, output_path=path)


def keras_via_savedmodel(make, shape, dtype, path):
    """Through a SavedModel written by Keras's export, then tf2onnx's SavedModel converter,
    which freezes every variable: tf2onnx's function converter leaves the variables of
    EfficientNet's Normalization layer (mean and variance) as graph inputs."""
    import subprocess
    import tensorflow as tf
    tf.keras.utils.set_random_seed(0)
    m = make()
    archive = tf.keras.export.ExportArchive()
    archive.track(m)
    archive.add_endpoint(name="serving_default", fn=lambda input: {"output": m(input, training=False)},  # noqa: A002
                         input_signature=[tf.TensorSpec([None] + list(shape), dtype, name="input")])
    sm = path + ".savedmodel"
    shutil.rmtree(sm, ignore_errors=True)
    archive.write_out(sm)
    subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", sm, "--opset", "17",
                    "--output", path], check=True, capture_output=True)
    shutil.rmtree(sm, ignore_errors=True)


def small_cnn():
    import tensorflow as tf
    L = tf.keras.layers
    return tf.keras.Sequential([tf.keras.Input((28, 28, 1)), L.Conv2D(8, 3, activation="relu"),
                                L.MaxPooling2D(), L.Flatten(), L.Dense(32, activation="relu"),
                                L.Reshape((4, 8)), L.Flatten(), L.Dense(10, activation="softmax")])


def text_rnn(cell):
    import tensorflow as tf
    L = tf.keras.layers
    return tf.keras.Sequential([tf.keras.Input((20,), dtype="int32"), L.Embedding(1000, 16),
                                cell(32), L.Dense(2, activation="softmax")])


def sklearn_pipeline(path):
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    x, y = load_iris(return_X_y=True)
    p = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x.astype(np.float32), y)
    onx = to_onnx(p, x[:1].astype(np.float32), options={"zipmap": False}, target_opset=17)
    open(path, "wb").write(onx.SerializeToString())


def corpus():
    import tensorflow as tf
    apps = tf.keras.applications
    rnd = np.random.default_rng(0)
    img = lambda n: rnd.random((2, n, n, 3), dtype=np.float32) * 255  # noqa: E731
    return [
        ("ResNet50", lambda p: keras_to_onnx(lambda: apps.ResNet50(weights=None), (224, 224, 3), tf.float32, p), img(224)),
        ("MobileNetV2", lambda p: keras_to_onnx(lambda: apps.MobileNetV2(weights=None), (224, 224, 3), tf.float32, p), img(224)),
        ("EfficientNetB0", lambda p: keras_via_savedmodel(lambda: apps.EfficientNetB0(weights=None), (224, 224, 3), tf.float32, p), img(224)),
        ("DenseNet121", lambda p: keras_to_onnx(lambda: apps.DenseNet121(weights=None), (224, 224, 3), tf.float32, p), img(224)),
        ("InceptionV3", lambda p: keras_to_onnx(lambda: apps.InceptionV3(weights=None), (299, 299, 3), tf.float32, p), img(299)),
        ("Keras CNN, Flatten and Reshape", lambda p: keras_to_onnx(small_cnn, (28, 28, 1), tf.float32, p),
         rnd.random((2, 28, 28, 1), dtype=np.float32)),
        ("Keras LSTM text classifier", lambda p: keras_to_onnx(lambda: text_rnn(tf.keras.layers.LSTM), (20,), tf.int32, p),
         rnd.integers(0, 1000, (2, 20)).astype(np.int32)),
        ("Keras GRU text classifier", lambda p: keras_to_onnx(lambda: text_rnn(tf.keras.layers.GRU), (20,), tf.int32, p),
         rnd.integers(0, 1000, (2, 20)).astype(np.int32)),
        ("scikit-learn pipeline (skl2onnx)", sklearn_pipeline, rnd.random((2, 4), dtype=np.float32)),
    ]


def serve_predict(binary, tmp, base, inputs, extra):
    """Serves `base` with `extra` flags and sends one Predict; gives (outputs, None) or
    (None, error)."""
    port = free_port()
    log_path = os.path.join(tmp, "serve.log")
    p = subprocess.Popen([binary, "serve", "--insecure", "--port", "0", "--rest_api_port", str(port),
                          "--rest_api_bind_address", "127.0.0.1", "--model_name", "m",
                          "--model_base_path", base] + extra,
                         stdout=subprocess.PIPE, stderr=open(log_path, "w"), text=True)
    try:
        if not p.stdout.readline().startswith("listening"):
            p.wait()
            err = [ln for ln in open(log_path).read().splitlines() if "error" in ln.lower()]
            return None, (err[-1] if err else "did not start")[:300]
        body = json.dumps({"inputs": {k: v.tolist() for k, v in inputs.items()}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/m:predict", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                out = json.loads(r.read())["outputs"]
        except urllib.error.HTTPError as e:
            return None, f"predict: {e.code} {e.read()[:300]!r}"
        if not isinstance(out, dict):
            out = {"": out}
        return {k: np.array(v, dtype=np.float64) for k, v in out.items()}, None
    finally:
        if p.poll() is None:
            p.terminate()
            p.wait()


def main(binary):
    capi = os.path.join(os.path.dirname(ort.__file__), "capi")
    ort_lib = os.path.join(capi, sorted(f for f in os.listdir(capi) if f.startswith("libonnxruntime.so"))[0])
    os.makedirs(CACHE, exist_ok=True)
    tmp = tempfile.mkdtemp()
    rows = []
    try:
        for name, make, x in corpus():
            base = os.path.join(CACHE, name.split(",")[0].split(" (")[0].replace(" ", "_"))
            path = os.path.join(base, "1", "model.onnx")
            if not os.path.exists(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                make(path + ".tmp")
                os.replace(path + ".tmp", path)
            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            if len(sess.get_inputs()) != 1:
                extra_inputs = [i.name for i in sess.get_inputs()[1:]]
                cell = f"not tried: the export has inputs besides the model's ({', '.join(extra_inputs)})"
                rows.append((name, cell, cell))
                print(f"| {name} | {cell} | {cell} |", flush=True)
                continue
            iname = sess.get_inputs()[0].name
            inputs = {iname: x}
            want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, inputs)))
            cells = []
            for engine, extra in [("tract", []), ("onnxruntime", ["--engine", "onnxruntime", "--onnxruntime-lib", ort_lib])]:
                got, err = serve_predict(binary, tmp, base, inputs, extra)
                if err:
                    cells.append(f"fails: {err}")
                    continue
                if "" in got and len(want) == 1:
                    got = {next(iter(want)): got[""]}
                diff = max(float(np.abs(got[k] - np.asarray(want[k], dtype=np.float64)).max()) for k in want)
                cells.append(("matches" if diff <= 1e-4 else "differs") + f" (max diff {diff:.1e})")
            rows.append((name, *cells))
            print(f"| {name} | {cells[0]} | {cells[1]} |", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ok = sum(1 for r in rows if r[1].startswith("matches"))
    print(f"tract: {ok}/{len(rows)} load and match onnxruntime within 1e-4")


if __name__ == "__main__":
    main(sys.argv[1])
