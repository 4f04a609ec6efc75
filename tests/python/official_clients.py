#!/usr/bin/env python3
"""TensorFlow Serving's official Python clients, unchanged, against `teeserve serve`.

Canonical client code (tf.make_tensor_proto, PredictionServiceStub, ModelServiceStub,
grpc.ssl_channel_credentials with and without a client certificate) for Predict,
GetModelMetadata and GetModelStatus; REST with curl in both formats. Outputs are compared with
onnxruntime's on the same inputs (tolerance 1e-4).

    python3 tests/python/official_clients.py target/debug/teeserve
The last checks run the server on the ONNX Runtime engine, loading the libonnxruntime that the
onnxruntime wheel ships.
Needs: tensorflow-cpu, tensorflow-serving-api, onnxruntime, numpy (.ci/run installs them).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback

import grpc
import numpy as np
import onnxruntime as ort
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "models", "digits", "1", "model.onnx")
PIXELS = np.load(os.path.join(ROOT, "testdata", "digits", "heldout-pixels.npy"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start(binary, tmp, name, extra):
    g, r = free_port(), free_port()
    log = open(os.path.join(tmp, name + ".log"), "w")
    p = subprocess.Popen(
        [binary, "serve", "--model_name", "digits", "--model_base_path", os.path.join(tmp, "digits"),
         "--grpc_bind_address", "127.0.0.1", "--rest_api_bind_address", "127.0.0.1",
         "--port", str(g), "--rest_api_port", str(r)] + extra,
        stdout=subprocess.PIPE, stderr=log, text=True)
    line = p.stdout.readline()
    assert line.startswith("listening"), "server did not start: " + open(os.path.join(tmp, name + ".log")).read()
    return p, g, r


def read(path):
    with open(path, "rb") as f:
        return f.read()


def main(binary):
    tmp = tempfile.mkdtemp()
    procs = []
    results = []
    try:
        subprocess.run([binary, "tls", "init", "--dir", os.path.join(tmp, "tls"), "--name", "server", "--client"],
                       check=True, capture_output=True)
        shutil.copytree(os.path.join(ROOT, "models", "digits"), os.path.join(tmp, "digits"))
        tls = os.path.join(tmp, "tls")
        p1, grpc_port, rest_port = start(binary, tmp, "tls", ["--tls-cert", f"{tls}/server.pem", "--tls-key", f"{tls}/server.key"])
        p2, mtls_port, _ = start(binary, tmp, "mtls", ["--tls-cert", f"{tls}/server.pem", "--tls-key", f"{tls}/server.key",
                                                        "--tls-client-ca", f"{tls}/ca.pem"])
        ort_lib = next(os.path.join(d, f) for d in [os.path.join(os.path.dirname(ort.__file__), "capi")]
                       for f in sorted(os.listdir(d)) if f.startswith("libonnxruntime.so.1"))
        p3, ort_port, ort_rest_port = start(binary, tmp, "onnxruntime", [
            "--tls-cert", f"{tls}/server.pem", "--tls-key", f"{tls}/server.key",
            "--engine", "onnxruntime", "--onnxruntime-lib", ort_lib])
        shutil.copytree(os.path.join(ROOT, "models", "digits"), os.path.join(tmp, "second"))
        p4, reload_port, _ = start(binary, tmp, "reload", ["--tls-cert", f"{tls}/server.pem", "--tls-key", f"{tls}/server.key",
                                                            "--reload_config_client_ca", f"{tls}/ca.pem"])
        procs += [p1, p2, p3, p4]
        ca = read(f"{tls}/ca.pem")
        want = ort.InferenceSession(MODEL).run(["probabilities"], {"pixels": PIXELS})[0]

        def check(name, fn):
            try:
                fn()
                results.append((name, None))
                print(f"ok   {name}")
            except Exception:  # noqa: BLE001 - report every failure
                results.append((name, traceback.format_exc()))
                print(f"FAIL {name}\n{traceback.format_exc()}")

        def predict(channel):
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "digits"
            request.model_spec.signature_name = "serving_default"
            request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(PIXELS))
            resp = stub.Predict(request, 10.0)
            got = tf.make_ndarray(resp.outputs["probabilities"])
            assert got.shape == want.shape, got.shape
            assert np.abs(got - want).max() < 1e-4, np.abs(got - want).max()
            assert len(resp.outputs["probabilities"].float_val) == want.size, "typed float_val expected"
            assert resp.model_spec.version.value == 1

        def one_way_tls(port=None):
            predict(grpc.secure_channel(f"localhost:{port or grpc_port}", grpc.ssl_channel_credentials(root_certificates=ca)))

        def metadata():
            ch = grpc.secure_channel(f"localhost:{grpc_port}", grpc.ssl_channel_credentials(root_certificates=ca))
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            req = get_model_metadata_pb2.GetModelMetadataRequest()
            req.model_spec.name = "digits"
            req.metadata_field.append("signature_def")
            resp = stub.GetModelMetadata(req, 10.0)
            sdm = get_model_metadata_pb2.SignatureDefMap()
            resp.metadata["signature_def"].Unpack(sdm)
            sig = sdm.signature_def["serving_default"]
            assert sig.inputs["pixels"].dtype == tf.float32.as_datatype_enum
            assert [d.size for d in sig.inputs["pixels"].tensor_shape.dim] == [-1, 64]
            assert set(sig.outputs.keys()) == {"probabilities", "class"}

        def status():
            ch = grpc.secure_channel(f"localhost:{grpc_port}", grpc.ssl_channel_credentials(root_certificates=ca))
            stub = model_service_pb2_grpc.ModelServiceStub(ch)
            req = get_model_status_pb2.GetModelStatusRequest()
            req.model_spec.name = "digits"
            resp = stub.GetModelStatus(req, 10.0)
            v = resp.model_version_status[0]
            assert v.version == 1 and v.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE

        def mutual_tls():
            creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=read(f"{tls}/client.key"),
                                                 certificate_chain=read(f"{tls}/client.pem"))
            predict(grpc.secure_channel(f"localhost:{mtls_port}", creds))

        def mutual_tls_refuses_anonymous():
            try:
                predict(grpc.secure_channel(f"localhost:{mtls_port}", grpc.ssl_channel_credentials(root_certificates=ca)))
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE, e.code()
                return
            raise AssertionError("served a client without a certificate")

        def not_found():
            ch = grpc.secure_channel(f"localhost:{grpc_port}", grpc.ssl_channel_credentials(root_certificates=ca))
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "nope"
            request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(PIXELS[:1]))
            try:
                stub.Predict(request, 10.0)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.NOT_FOUND and "Latest(nope)" in e.details(), e
                return
            raise AssertionError("unknown model served")

        def admin_channel():
            creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=read(f"{tls}/client.key"),
                                                 certificate_chain=read(f"{tls}/client.pem"))
            return grpc.secure_channel(f"localhost:{reload_port}", creds)

        def reload_request(models):
            config = model_server_config_pb2.ModelServerConfig()
            for name in models:
                c = config.model_config_list.config.add()
                c.name = name
                c.base_path = os.path.join(tmp, name)
                c.model_platform = "onnx"
            req = model_management_pb2.ReloadConfigRequest()
            req.config.CopyFrom(config)
            return req

        def predict_on(channel, model):
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model
            request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(PIXELS[:2]))
            return stub.Predict(request, 10.0)

        def reload_adds_and_removes_a_model():
            ch = admin_channel()
            stub = model_service_pb2_grpc.ModelServiceStub(ch)
            resp = stub.HandleReloadConfigRequest(reload_request(["digits", "second"]), 30.0)
            assert resp.status.error_code == 0, resp
            predict_on(ch, "second")
            resp = stub.HandleReloadConfigRequest(reload_request(["second"]), 30.0)
            assert resp.status.error_code == 0, resp
            try:
                predict_on(ch, "digits")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.NOT_FOUND, e
            else:
                raise AssertionError("a model removed by the reload is still served")
            predict_on(ch, "second")

        def reload_refuses_a_client_without_the_admin_certificate():
            ch = grpc.secure_channel(f"localhost:{reload_port}", grpc.ssl_channel_credentials(root_certificates=ca))
            stub = model_service_pb2_grpc.ModelServiceStub(ch)
            try:
                stub.HandleReloadConfigRequest(reload_request([]), 10.0)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.PERMISSION_DENIED and "--reload_config_client_ca" in e.details(), e
            else:
                raise AssertionError("a client without a certificate reloaded the config")
            predict_on(ch, "second")

        def rest_curl(body, key, port=None):
            out = subprocess.run(["curl", "-sf", "--cacert", f"{tls}/ca.pem", "-d", json.dumps(body),
                                  f"https://localhost:{port or rest_port}/v1/models/digits:predict"],
                                 check=True, capture_output=True, text=True).stdout
            v = json.loads(out)[key]
            got = np.array([r["probabilities"] for r in v]) if key == "predictions" else np.array(v["probabilities"])
            assert np.abs(got - want[:3]).max() < 1e-4

        check("Predict over one-way TLS (tensor_content in, typed float_val out)", one_way_tls)
        check("GetModelMetadata (SignatureDefMap in Any)", metadata)
        check("GetModelStatus (ModelServiceStub)", status)
        check("Predict over mutual TLS with a client certificate", mutual_tls)
        check("mutual TLS refuses a client without a certificate", mutual_tls_refuses_anonymous)
        check("NOT_FOUND for an unknown model", not_found)
        check("REST row format with curl", lambda: rest_curl({"instances": PIXELS[:3].tolist()}, "predictions"))
        check("REST columnar format with curl", lambda: rest_curl({"inputs": {"pixels": PIXELS[:3].tolist()}}, "outputs"))
        check("HandleReloadConfigRequest (ModelServiceStub, client certificate) adds and removes a model",
              reload_adds_and_removes_a_model)
        check("HandleReloadConfigRequest refuses a client without the reload CA's certificate",
              reload_refuses_a_client_without_the_admin_certificate)
        check("ONNX Runtime engine: Predict over one-way TLS", lambda: one_way_tls(ort_port))
        check("ONNX Runtime engine: REST row format with curl",
              lambda: rest_curl({"instances": PIXELS[:3].tolist()}, "predictions", ort_rest_port))
    finally:
        for p in procs:
            p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    failed = sum(1 for _, e in results if e)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "debug", "teeserve")))
