"""The Open Inference Protocol's (KServe v2) clients from Triton, ``tritonclient``, unchanged,
against teeserve over TLS: HTTP (with and without the binary tensor data extension) and gRPC,
on the digits model (tract and ONNX Runtime) and on SavedModels (TensorFlow engine), errors
included; and the same clients through ``teeserve.attested_endpoint``. The kserve SDK's
clients are in test_v2_kserve.py: the two register the same protobuf package, so they cannot
share a process.

Run in the v2 clients' virtualenv (v2util.py says which and why).
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import requests

import teeserve
from conftest import ROOT
from v2util import PIXELS, TEXT, WANT, X, ca_path, need, ort_server, tf_server  # noqa: F401 (fixtures)

httpclient = need("tritonclient.http")
grpcclient = need("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

def triton_http(pki, server):
    return httpclient.InferenceServerClient(f"localhost:{server.rest_port}", ssl=True,
                                            ssl_options={"ca_certs": ca_path(pki)})


def triton_grpc(pki, server):
    return grpcclient.InferenceServerClient(f"localhost:{server.grpc_port}", ssl=True,
                                            root_certificates=ca_path(pki))


def digits_http(client, binary=True, model="digits", pixels=PIXELS):
    i = httpclient.InferInput("pixels", list(pixels.shape), "FP32")
    i.set_data_from_numpy(pixels, binary_data=binary)
    out = [httpclient.InferRequestedOutput("probabilities", binary_data=binary),
           httpclient.InferRequestedOutput("class", binary_data=binary)]
    return client.infer(model, [i], outputs=out)


def digits_grpc(client, model="digits", pixels=PIXELS):
    i = grpcclient.InferInput("pixels", list(pixels.shape), "FP32")
    i.set_data_from_numpy(pixels)
    return client.infer(model, [i])


def check_digits(result):
    got = result.as_numpy("probabilities")
    assert got.shape == WANT.shape and got.dtype == np.float32, (got.shape, got.dtype)
    assert np.abs(got - WANT).max() < 1e-4, np.abs(got - WANT).max()
    assert (result.as_numpy("class") == WANT.argmax(axis=1)).all()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_http(pki, server, binary):
    c = triton_http(pki, server)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("digits")
    assert not c.is_model_ready("no-such-model")
    meta = c.get_server_metadata()
    assert meta["name"] == "teeserve" and "binary_tensor_data" in meta["extensions"]
    m = c.get_model_metadata("digits")
    assert m["name"] == "digits" and m["versions"] == ["1"] and m["platform"] == "tract_onnx"
    assert m["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}]
    assert {o["name"]: o["datatype"] for o in m["outputs"]} == {"probabilities": "FP32", "class": "INT64"}
    r = digits_http(c, binary)
    check_digits(r)
    assert r.get_response()["model_version"] == "1"
    # Versions by path, as the protocol names them.
    check_digits(c.infer("digits", [_http_pixels()], model_version="1"))


def _http_pixels():
    i = httpclient.InferInput("pixels", list(PIXELS.shape), "FP32")
    i.set_data_from_numpy(PIXELS)
    return i


def test_tritonclient_grpc(pki, server):
    c = triton_grpc(pki, server)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("digits")
    m = c.get_model_metadata("digits")
    assert m.name == "digits" and list(m.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in m.inputs] == [("pixels", "FP32", [-1, 64])]
    r = digits_grpc(c)
    check_digits(r)
    assert r.get_response().model_version == "1"
    # Only the outputs asked for.
    i = grpcclient.InferInput("pixels", list(PIXELS.shape), "FP32")
    i.set_data_from_numpy(PIXELS)
    r = c.infer("digits", [i], outputs=[grpcclient.InferRequestedOutput("class")])
    assert [o.name for o in r.get_response().outputs] == ["class"]
    assert server.served("ModelInfer"), "the access log shows no ModelInfer"


def test_onnxruntime_engine(pki, ort_server):
    assert triton_http(pki, ort_server).get_model_metadata("digits")["platform"] == "onnxruntime_onnx"
    check_digits(digits_http(triton_http(pki, ort_server)))
    check_digits(digits_grpc(triton_grpc(pki, ort_server)))


def test_tensorflow_engine(pki, tf_server):
    server, want = tf_server
    h, g = triton_http(pki, server), triton_grpc(pki, server)
    m = h.get_model_metadata("strings_tf2")
    assert m["platform"] == "tensorflow_savedmodel"
    assert m["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    for binary in (True, False):
        x = httpclient.InferInput("x", list(X.shape), "FP32")
        x.set_data_from_numpy(X, binary_data=binary)
        r = h.infer("half_tf2", [x], outputs=[httpclient.InferRequestedOutput(n, binary_data=binary)
                                               for n in ("y", "argmax")])
        assert np.abs(r.as_numpy("y") - np.array(want["y"], np.float32)).max() < 1e-5
        assert r.as_numpy("argmax").tolist() == want["argmax"]
        t = httpclient.InferInput("text", [len(TEXT)], "BYTES")
        t.set_data_from_numpy(TEXT, binary_data=binary)
        r = h.infer("strings_tf2", [t], outputs=[httpclient.InferRequestedOutput(n, binary_data=binary)
                                                  for n in ("upper", "length")])
        assert [u.decode() if isinstance(u, bytes) else u for u in r.as_numpy("upper")] == want["upper"]
        assert r.as_numpy("length").tolist() == want["length"]
    # Bytes that are not UTF-8 go back as binary data, not as a JSON string that changed them.
    t = httpclient.InferInput("text", [1], "BYTES")
    t.set_data_from_numpy(np.array([b"\xff\x00"], dtype=np.object_))
    r = h.infer("strings_tf2", [t], outputs=[httpclient.InferRequestedOutput("upper")])
    assert r.as_numpy("upper").tolist() == [b"\xff\x00"]
    with pytest.raises(InferenceServerException, match="not UTF-8"):
        h.infer("strings_tf2", [t], outputs=[httpclient.InferRequestedOutput("upper", binary_data=False)])
    x = grpcclient.InferInput("x", list(X.shape), "FP32")
    x.set_data_from_numpy(X)
    r = g.infer("half_tf2", [x])
    assert np.abs(r.as_numpy("y") - np.array(want["y"], np.float32)).max() < 1e-5
    t = grpcclient.InferInput("text", [len(TEXT)], "BYTES")
    t.set_data_from_numpy(TEXT)
    r = g.infer("strings_tf2", [t])
    assert [u.decode() for u in r.as_numpy("upper")] == want["upper"]


def test_errors_are_the_protocols(pki, server):
    h, g = triton_http(pki, server), triton_grpc(pki, server)
    wrong = PIXELS[:, :60].copy()
    with pytest.raises(InferenceServerException, match="does not match"):
        digits_http(h, pixels=wrong)
    with pytest.raises(InferenceServerException, match="does not match") as e:
        digits_grpc(g, pixels=wrong)
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException, match="nope"):
        digits_http(h, model="nope")
    with pytest.raises(InferenceServerException, match="nope"):
        digits_grpc(g, model="nope")
    with pytest.raises(InferenceServerException):
        g.get_model_metadata("nope")
    # Binary lengths that do not go with the shape, or with the bytes sent: refused with
    # {"error": ...} before anything is decoded.
    url = f"https://localhost:{server.rest_port}/v2/models/digits/infer"
    head = {"inputs": [{"name": "pixels", "shape": [2, 64], "datatype": "FP32",
                        "parameters": {"binary_data_size": 1 << 30}}]}
    for size, data, why in [(1 << 30, b"\0" * 512, "takes 512 bytes"),
                            (512, b"\0" * 100, "only 100 bytes"),
                            (512, b"\0" * 600, "88 bytes of binary data follow")]:
        head["inputs"][0]["parameters"]["binary_data_size"] = size
        j = json.dumps(head).encode()
        r = requests.post(url, data=j + data, verify=ca_path(pki),
                          headers={"Inference-Header-Content-Length": str(len(j))})
        assert r.status_code == 400, (r.status_code, r.text)
        assert why in r.json()["error"], r.json()
    r = requests.post(url, data=b"{\"inputs\": [", verify=ca_path(pki))
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    r = requests.get(url, verify=ca_path(pki))
    assert r.status_code == 405 and "POST" in r.json()["error"]


def test_a_body_over_the_limit_is_refused(pki, fresh_server):
    s = fresh_server(extra_args=["--max_request_bytes", "4096"])
    with pytest.raises(InferenceServerException, match="4096"):
        digits_http(triton_http(pki, s))
    with pytest.raises(InferenceServerException, match="4096|larger"):
        digits_grpc(triton_grpc(pki, s))


def test_attested_endpoint(pki, server):
    args = dict(root_certificates=pki.ca, policy=pki.policy(), root=pki.root)
    with teeserve.attested_endpoint(server.grpc_target, protocol="grpc", **args) as ep:
        assert ep.url.startswith("127.0.0.1:") and ep.verdict["sgx"]["mrenclave"] == pki.mrenclave
        check_digits(digits_grpc(grpcclient.InferenceServerClient(ep.url)))
    with teeserve.attested_endpoint(server.grpc_target, protocol="grpc", transport="unix", **args) as ep:
        assert ep.url.startswith("unix:")
        check_digits(digits_grpc(grpcclient.InferenceServerClient(ep.url, channel_args=ep.channel_args)))
    with teeserve.attested_endpoint(server.rest_url, protocol="http", **args) as ep:
        host, port = ep.url.split(":")
        assert host == "127.0.0.1" and int(port) > 0
        check_digits(digits_http(httpclient.InferenceServerClient(ep.url)))


def test_the_endpoint_refuses_another_measurement_before_any_request(pki, server):
    before = len(server.served("ModelInfer"))
    with pytest.raises(teeserve.AttestationError) as e:
        teeserve.attested_endpoint(server.grpc_target, protocol="grpc", root_certificates=pki.ca,
                                   policy=pki.policy(mrenclave=["00" * 32]), root=pki.root)
    assert e.value.rule == "mrenclave"
    assert len(server.served("ModelInfer")) == before


def test_the_endpoint_refuses_a_swapped_server(pki, fresh_server):
    s = fresh_server()
    args = dict(root_certificates=pki.ca, policy=pki.policy(), root=pki.root)
    with teeserve.attested_endpoint(s.rest_url, protocol="http", **args) as ep:
        c = httpclient.InferenceServerClient(ep.url)
        check_digits(digits_http(c))
        # Another server on the same port, with another key from the same CA.
        port = s.rest_port
        s.stop()
        other = fresh_server(cert="other", rest_port=port)
        c = httpclient.InferenceServerClient(ep.url)
        with pytest.raises(InferenceServerException, match="refused"):
            digits_http(c)
        assert "refused" in ep.last_error()
        assert not other.served("POST")


def test_the_tcp_endpoint_admits_only_this_process(pki, server):
    args = dict(root_certificates=pki.ca, policy=pki.policy(), root=pki.root)
    with teeserve.attested_endpoint(server.rest_url, protocol="http", **args) as ep:
        code = ("import socket,sys; s=socket.create_connection(('127.0.0.1', int(sys.argv[1])));"
                "s.sendall(b'GET /v2/health/live HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); s.settimeout(10)\n"
                "try: print(repr(s.recv(100)))\n"
                "except ConnectionResetError: print(repr(b''))")
        out = subprocess.run([sys.executable, "-c", code, ep.url.split(":")[1]], capture_output=True,
                             text=True, timeout=30)
        # Closed unanswered (or reset): the other process reads nothing.
        assert out.stdout.strip() == "b''", out
        # And this process is told why, should its own connections be the ones refused.
        for _ in range(100):
            if ep.last_error():
                break
            time.sleep(0.02)
        assert "another process" in (ep.last_error() or ""), ep.last_error()
        assert httpclient.InferenceServerClient(ep.url).is_server_live()


def test_v2_answers_have_receipts_that_verify(pki, server):
    """A receipt names the method the answer came from (ModelInfer) over gRPC (Triton's own
    stub on an attested channel) and over REST with binary data (an attested session)."""
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    def verify(r):
        return teeserve.verify_receipt(r.receipt, r.request, r.response, r.attestation,
                                       policy=pki.policy(), root=pki.root)

    with teeserve.attested_channel(server.grpc_target, root_certificates=pki.ca, policy=pki.policy(),
                                   root=pki.root, receipts=True) as ch:
        req = service_pb2.ModelInferRequest(model_name="digits")
        t = req.inputs.add(name="pixels", datatype="FP32")
        t.shape.extend(PIXELS.shape)
        req.raw_input_contents.append(PIXELS.astype("<f4").tobytes())
        resp = service_pb2_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=10)
        r = ch.last_receipt()
    got = np.frombuffer(resp.raw_output_contents[0], "<f4").reshape(WANT.shape)
    assert np.abs(got - WANT).max() < 1e-4
    v = verify(r)
    assert (v["model"], v["version"], v["api"], v["method"]) == ("digits", 1, "grpc", "ModelInfer")
    raw = PIXELS.astype("<f4").tobytes()
    head = json.dumps({"inputs": [{"name": "pixels", "shape": list(PIXELS.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(raw)}}]}).encode()
    with teeserve.attested_session(server.rest_url, root_certificates=pki.ca, policy=pki.policy(),
                                   root=pki.root, receipts=True) as s:
        resp = s.post(f"{server.rest_url}/v2/models/digits/infer", data=head + raw, timeout=10,
                      headers={"Inference-Header-Content-Length": str(len(head))})
        assert resp.status_code == 200, resp.text
        r = s.last_receipt()
    assert r.response == resp.content and r.request == head + raw
    v = verify(r)
    assert (v["model"], v["version"], v["api"], v["method"]) == ("digits", 1, "rest", "ModelInfer")
    with pytest.raises(teeserve.VerificationError) as e:
        teeserve.verify_receipt(r.receipt, r.request, r.response.replace(b"]", b" ]", 1), r.attestation,
                                policy=pki.policy(), root=pki.root)
    assert e.value.rule == "receipt response"


def test_an_endpoint_does_not_drop_the_policys_model_pin_silently(pki, server):
    """The forwarder cannot add the pin to a client's requests: a pinning policy is refused
    unless the caller takes on sending ep.headers, and with them a request for another file is
    refused by the server."""
    import hashlib
    with open(os.path.join(ROOT, "models", "digits", "1", "model.onnx"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    args = dict(root_certificates=pki.ca, policy=pki.policy(models={"digits": [digest]}), root=pki.root)
    with pytest.raises(ValueError, match="model_pin"):
        teeserve.attested_endpoint(server.rest_url, protocol="http", **args)
    with teeserve.attested_endpoint(server.rest_url, protocol="http", model_pin="caller", **args) as ep:
        assert ep.headers == {"x-teeserve-accept-sha256": f"digits={digest}"}
        c = httpclient.InferenceServerClient(ep.url)
        i = httpclient.InferInput("pixels", list(PIXELS.shape), "FP32")
        i.set_data_from_numpy(PIXELS)
        check_digits(c.infer("digits", [i], headers=ep.headers))
        with pytest.raises(InferenceServerException, match="accepts only model files"):
            c.infer("digits", [i], headers={"x-teeserve-accept-sha256": "digits=" + "0" * 64})
