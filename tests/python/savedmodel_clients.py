#!/usr/bin/env python3
"""TensorFlow Serving's official Python clients, unchanged, against `teeserve serve` serving
TensorFlow SavedModels on its TensorFlow engine (gRPC over TLS; REST with curl).

The SavedModels come from make_savedmodels.py (both export styles, classification and
regression signatures, DT_STRING). Outputs are compared with TensorFlow's own in this process
(within 1e-5), metadata with the MetaGraphDef TensorFlow reads, and a sealed copy must give
the same answers.

    python3 tests/python/savedmodel_clients.py target/debug/teeserve
Needs: tensorflow-cpu, tensorflow-serving-api, numpy (.ci/run installs them).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.python.tools import saved_model_utils
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    input_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_savedmodels  # noqa: E402
from official_clients import free_port, read  # noqa: E402

X = np.array([[1.0, 2.0, 3.0], [6.0, 5.0, 4.0], [-1.5, 0.25, 9.0]], dtype=np.float32)
TF_LIB = os.path.join(os.path.dirname(tf.__file__), "libtensorflow_cc.so.2")


def start(binary, tmp, name, args):
    g, r = free_port(), free_port()
    log = open(os.path.join(tmp, name + ".log"), "w")
    p = subprocess.Popen(
        [binary, "serve", "--tensorflow-lib", TF_LIB,
         "--grpc_bind_address", "127.0.0.1", "--rest_api_bind_address", "127.0.0.1",
         "--port", str(g), "--rest_api_port", str(r)] + args,
        stdout=subprocess.PIPE, stderr=log, text=True)
    line = p.stdout.readline()
    assert line.startswith("listening"), "server did not start: " + open(os.path.join(tmp, name + ".log")).read()
    return p, g, r


def main(binary):
    tmp = tempfile.mkdtemp()
    procs, results = [], []
    try:
        models = os.path.join(tmp, "models")
        subprocess.run(
            [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "make_savedmodels.py"), models],
            check=True, capture_output=True)
        subprocess.run([binary, "tls", "init", "--dir", os.path.join(tmp, "tls"), "--name", "server"],
                       check=True, capture_output=True)
        tls = os.path.join(tmp, "tls")
        tls_flags = ["--tls-cert", f"{tls}/server.pem", "--tls-key", f"{tls}/server.key"]
        config = os.path.join(tmp, "models.config")
        with open(config, "w") as f:
            f.write("model_config_list {\n")
            for name in make_savedmodels.MODELS:
                f.write(f" config {{ name: '{name}' base_path: '{models}/{name}' model_platform: 'tensorflow' }}\n")
            f.write("}\n")
        p, grpc_port, rest_port = start(binary, tmp, "plain", ["--model_config_file", config] + tls_flags)
        procs.append(p)
        key = os.path.join(tmp, "model.key")
        subprocess.run([binary, "keygen", "--out", key], check=True, capture_output=True)
        sealed = os.path.join(tmp, "sealed", "half_tf2")
        subprocess.run([binary, "seal", "--key", key, os.path.join(models, "half_tf2"), sealed],
                       check=True, capture_output=True)
        p, sealed_port, _ = start(binary, tmp, "sealed", ["--model-key", key, "--model_name", "half_tf2",
                                                          "--model_base_path", sealed] + tls_flags)
        procs.append(p)
        ca = read(f"{tls}/ca.pem")

        def stub(port):
            ch = grpc.secure_channel(f"localhost:{port}", grpc.ssl_channel_credentials(root_certificates=ca))
            return prediction_service_pb2_grpc.PredictionServiceStub(ch)

        def check(name, fn):
            try:
                fn()
                results.append((name, None))
                print("ok  ", name)
            except Exception as e:  # noqa: BLE001
                results.append((name, e))
                print("FAIL", name)
                traceback.print_exc()

        def in_process(name, **inputs):
            return tf.saved_model.load(os.path.join(models, name, "1")).signatures["serving_default"](**inputs)

        def predict(name, port=None):
            req = predict_pb2.PredictRequest()
            req.model_spec.name = name
            req.inputs["x"].CopyFrom(tf.make_tensor_proto(X))
            resp = stub(port or grpc_port).Predict(req, 30)
            want = in_process(name, x=tf.constant(X))
            assert np.abs(tf.make_ndarray(resp.outputs["y"]) - want["y"].numpy()).max() < 1e-5
            assert (tf.make_ndarray(resp.outputs["argmax"]) == want["argmax"].numpy()).all()
            assert resp.outputs["argmax"].dtype == tf.int64.as_datatype_enum
            return resp

        def output_filter():
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "half_tf1"
            req.model_spec.signature_name = "serving_default"
            req.inputs["x"].CopyFrom(tf.make_tensor_proto(X))
            req.output_filter.append("argmax")
            resp = stub(grpc_port).Predict(req, 30)
            assert list(resp.outputs.keys()) == ["argmax"], resp.outputs.keys()

        def metadata(name):
            req = get_model_metadata_pb2.GetModelMetadataRequest()
            req.model_spec.name = name
            req.metadata_field.append("signature_def")
            resp = stub(grpc_port).GetModelMetadata(req, 30)
            got = get_model_metadata_pb2.SignatureDefMap()
            resp.metadata["signature_def"].Unpack(got)
            want = saved_model_utils.get_meta_graph_def(os.path.join(models, name, "1"), "serve").signature_def
            assert set(got.signature_def.keys()) == set(want.keys()), (got.signature_def.keys(), want.keys())
            for k in want.keys():
                assert got.signature_def[k] == want[k], (k, got.signature_def[k], want[k])

        def strings():
            text = [b"abc", b"a longer string than a small TF_TString holds", b""]
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "strings_tf2"
            req.inputs["text"].CopyFrom(tf.make_tensor_proto(text))
            resp = stub(grpc_port).Predict(req, 30)
            want = in_process("strings_tf2", text=tf.constant(text))
            assert list(tf.make_ndarray(resp.outputs["upper"])) == list(want["upper"].numpy())
            assert (tf.make_ndarray(resp.outputs["length"]) == want["length"].numpy()).all()

        def dtypes():
            h = np.array([1.5, -0.25, 65504.0], np.float16)
            b = tf.constant([1.0, 2.5, -3.0], tf.bfloat16)
            c = np.array([1 + 1j, -2.5j, 3], np.complex64)
            want = in_process("dtypes_tf2", h=tf.constant(h), b=b, c=tf.constant(c))

            def ask(req):
                resp = stub(grpc_port).Predict(req, 30)
                for k, dt in [("h2", tf.float16), ("b1", tf.bfloat16), ("c2", tf.complex64), ("z", tf.complex128)]:
                    assert resp.outputs[k].dtype == dt.as_datatype_enum, (k, resp.outputs[k])
                    got = tf.make_ndarray(resp.outputs[k])
                    assert got.dtype == want[k].numpy().dtype, (k, got.dtype)
                    assert (got == want[k].numpy()).all(), (k, got, want[k].numpy())

            # As make_tensor_proto writes them (tensor_content for the 16-bit floats,
            # scomplex_val for complex64).
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "dtypes_tf2"
            req.inputs["h"].CopyFrom(tf.make_tensor_proto(h))
            req.inputs["b"].CopyFrom(tf.make_tensor_proto(b))
            req.inputs["c"].CopyFrom(tf.make_tensor_proto(c))
            ask(req)
            # The other encodings: 16-bit floats as bit patterns in half_val, complex64 as
            # tensor_content.
            for k, bits in [("h", h.view(np.uint16)), ("b", b.numpy().view(np.uint16))]:
                t = req.inputs[k]
                t.ClearField("tensor_content")
                t.half_val.extend(int(x) for x in bits)
            req.inputs["c"].ClearField("scomplex_val")
            req.inputs["c"].tensor_content = c.tobytes()
            ask(req)
            # REST: 16-bit floats as numbers; complex numbers, as in TF Serving, are refused.
            body = json.dumps({"inputs": {"h": h.astype(float).tolist(), "b": [1.0, 2.5, -3.0],
                                          "c": [[1, 1], [0, -2.5], [3, 0]]}})
            r = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "--cacert", f"{tls}/ca.pem", "-d", body,
                                f"https://localhost:{rest_port}/v1/models/dtypes_tf2:predict"],
                               check=True, capture_output=True, text=True).stdout
            out, code = r.rsplit("\n", 1)
            assert code == "400" and "DT_COMPLEX64" in json.loads(out)["error"], (code, out)

        def examples():
            inp = input_pb2.Input()
            for row in ([1.0, 2.0], [-3.0, 0.5]):
                e = inp.example_list.examples.add()
                e.features.feature["x"].float_list.value.extend(row)
            return inp

        def classify():
            req = classification_pb2.ClassificationRequest()
            req.model_spec.name = "examples_tf1"
            req.model_spec.signature_name = "classify_x"
            req.input.CopyFrom(examples())
            resp = stub(grpc_port).Classify(req, 30)
            x = np.array([[1.0, 2.0], [-3.0, 0.5]], dtype=np.float32)
            logits = x @ np.array([[1.0, -1.0], [2.0, 0.5]], dtype=np.float32)
            scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            for i, c in enumerate(resp.result.classifications):
                assert [k.label for k in c.classes] == ["neg", "pos"], c
                assert np.abs(np.array([k.score for k in c.classes]) - scores[i]).max() < 1e-5

        def regress():
            req = regression_pb2.RegressionRequest()
            req.model_spec.name = "examples_tf1"
            req.model_spec.signature_name = "regress_x"
            req.input.CopyFrom(examples())
            resp = stub(grpc_port).Regress(req, 30)
            got = [r.value for r in resp.result.regressions]
            assert np.abs(np.array(got) - np.array([8.25, 1.25])).max() < 1e-5, got

        def rest_rows():
            out = subprocess.run(["curl", "-sf", "--cacert", f"{tls}/ca.pem", "-d", json.dumps({"instances": X.tolist()}),
                                  f"https://localhost:{rest_port}/v1/models/half_tf1:predict"],
                                 check=True, capture_output=True, text=True).stdout
            rows = json.loads(out)["predictions"]
            want = in_process("half_tf1", x=tf.constant(X))
            assert [r["argmax"] for r in rows] == list(want["argmax"].numpy())
            assert np.abs(np.array([r["y"] for r in rows]) - want["y"].numpy()).max() < 1e-5

        def rest_metadata():
            out = subprocess.run(["curl", "-sf", "--cacert", f"{tls}/ca.pem",
                                  f"https://localhost:{rest_port}/v1/models/half_tf2/metadata"],
                                 check=True, capture_output=True, text=True).stdout
            sig = json.loads(out)["metadata"]["signature_def"]["signature_def"]["serving_default"]
            assert sig["inputs"]["x"]["dtype"] == "DT_FLOAT" and sig["outputs"]["argmax"]["dtype"] == "DT_INT64", sig

        def sealed_same():
            a = predict("half_tf2")
            b = predict("half_tf2", sealed_port)
            assert (tf.make_ndarray(a.outputs["y"]) == tf.make_ndarray(b.outputs["y"])).all()

        check("Predict, TF1 SavedModel (Builder), outputs equal TensorFlow's", lambda: predict("half_tf1"))
        check("Predict, TF2 SavedModel (tf.saved_model.save), outputs equal TensorFlow's", lambda: predict("half_tf2"))
        check("Predict honours output_filter", output_filter)
        for name in make_savedmodels.MODELS:
            check(f"GetModelMetadata of {name} equals the MetaGraphDef's SignatureDefMap", lambda n=name: metadata(n))
        check("DT_STRING in and out", strings)
        check("DT_HALF, DT_BFLOAT16, DT_COMPLEX64 and DT_COMPLEX128 in and out", dtypes)
        check("Classify on a classification signature", classify)
        check("Regress on a regression signature", regress)
        check("REST row format with curl, two outputs: one object per row", rest_rows)
        check("REST metadata with curl", rest_metadata)
        check("a sealed SavedModel gives the same answers", sealed_same)

        def warmup():
            # TF Serving's documented recipe: a TFRecord of PredictionLog in assets.extra,
            # written with TensorFlow's own writer; the server replays it before serving.
            from tensorflow_serving.apis import prediction_log_pb2
            warm = os.path.join(tmp, "warm", "half_tf2")
            shutil.copytree(os.path.join(models, "half_tf2"), warm)
            extra = os.path.join(warm, "1", "assets.extra")
            os.makedirs(extra, exist_ok=True)
            with tf.io.TFRecordWriter(os.path.join(extra, "tf_serving_warmup_requests")) as w:
                for _ in range(3):
                    req = predict_pb2.PredictRequest()
                    req.model_spec.name = "half_tf2"
                    req.inputs["x"].CopyFrom(tf.make_tensor_proto(X))
                    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=req))
                    w.write(log.SerializeToString())
            p, port, _ = start(binary, tmp, "warm", ["--model_name", "half_tf2", "--model_base_path", warm] + tls_flags)
            procs.append(p)
            logged = open(os.path.join(tmp, "warm.log")).read()
            assert "warmup requests replayed" in logged and "records=3" in logged, logged
            predict("half_tf2", port)

        check("warmup requests written by TensorFlow are replayed before serving", warmup)
    finally:
        for p in procs:
            p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    failed = sum(1 for _, e in results if e)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "target", "debug", "teeserve")))
