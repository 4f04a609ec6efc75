"""attested_channel and attested_session against a simulated-platform teeserve server."""
import json
import os
import subprocess

import grpc
import numpy as np
import pytest
import requests

import teeserve
from conftest import ROOT, binary

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import (  # noqa: E402
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

SAMPLE = os.path.join(ROOT, "testdata", "digits", "sample.json")


def pixels():
    with open(SAMPLE) as f:
        return np.array(json.load(f)["instances"], dtype=np.float32)


def predict(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "digits"
    req.model_spec.signature_name = "serving_default"
    req.inputs["pixels"].CopyFrom(tf.make_tensor_proto(pixels()))
    return stub.Predict(req, 10.0)


def rust_predict(pki, server, rest=False):
    """What `teeserve predict --attest` answers for the same input."""
    policy = pki.policy_file()
    args = [binary(), "predict", "--model", "digits", "--input", SAMPLE, "--ca", os.path.join(pki.tls, "ca.pem"),
            "--attest", policy, "--root", pki.root]
    args += ["--server", f"127.0.0.1:{server.rest_port}", "--rest"] if rest else \
        ["--server", f"127.0.0.1:{server.grpc_port}"]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def test_admitted_predict_equals_the_rust_requester(pki, server):
    with teeserve.attested_channel(server.grpc_target, root_certificates=pki.ca, policy=pki.policy(),
                                   root=pki.root) as ch:
        assert ch.verdict["sgx"]["mrenclave"] == pki.mrenclave
        assert ch.document["key_origin"] == "host"
        resp = predict(ch)
        got = tf.make_ndarray(resp.outputs["probabilities"])
        status = model_service_pb2_grpc.ModelServiceStub(ch).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "digits"}), 10.0)
        assert status.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    want = np.array(rust_predict(pki, server)["outputs"]["probabilities"], dtype=np.float32)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-6
    assert server.served("Predict"), "the access log shows no Predict"


def test_policy_as_a_toml_file(pki, server):
    with teeserve.attested_channel(server.grpc_target, root_certificates=pki.ca, policy=pki.policy_file(),
                                   root=pki.root) as ch:
        assert predict(ch).model_spec.version.value == 1


def test_another_mrenclave_is_refused_before_any_predict(pki, fresh_server):
    s = fresh_server()
    with pytest.raises(teeserve.AttestationError) as e:
        teeserve.attested_channel(s.grpc_target, root_certificates=pki.ca, policy=pki.policy(mrenclave=["ab" * 32]),
                                  root=pki.root)
    assert e.value.rule == "mrenclave"
    assert pki.mrenclave in e.value.detail
    with pytest.raises(teeserve.AttestationError) as e:
        teeserve.attested_session(s.rest_url, root_certificates=pki.ca, policy=pki.policy(mrenclave=["ab" * 32]),
                                  root=pki.root)
    assert e.value.rule == "mrenclave"
    # Nothing but the attestation requests reached the server: no Predict.
    assert s.served("Predict") == []


def test_refusals_name_their_rule(pki, server):
    cases = [
        (dict(tls_key_origin=["tee", "broker"]), None, "tls_key_origin"),
        (dict(allow_simulated=False), None, "allow_simulated"),
        (dict(), "intel", "root"),
        # The key broker's log key: this server got no secret from a broker that signs its
        # log, so its document carries no grant to check.
        (dict(log_key="PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"), None, "log_key"),
    ]
    for over, root, rule in cases:
        with pytest.raises(teeserve.AttestationError) as e:
            teeserve.attested_channel(server.grpc_target, root_certificates=pki.ca, policy=pki.policy(**over),
                                      root=None if root == "intel" else pki.root)
        assert e.value.rule == rule, (rule, str(e.value))


def test_a_server_with_another_ca_is_refused(pki, server, tmp_path):
    subprocess.run([binary(), "tls", "init", "--dir", str(tmp_path / "other-ca")], check=True, capture_output=True)
    other_ca = (tmp_path / "other-ca" / "ca.pem").read_bytes()
    with pytest.raises(teeserve.AttestationError) as e:
        teeserve.attested_channel(server.grpc_target, root_certificates=other_ca, policy=pki.policy(), root=pki.root)
    assert e.value.rule == "fetch"


def test_a_swapped_server_is_refused(pki, fresh_server):
    """After the check, the attested server goes away and another one, with a certificate from
    the same CA (and an attestation of its own), answers on the same ports."""
    first = fresh_server("server")
    ch = teeserve.attested_channel(first.grpc_target, root_certificates=pki.ca, policy=pki.policy(), root=pki.root)
    session = teeserve.attested_session(first.rest_url, root_certificates=pki.ca, policy=pki.policy(),
                                        root=pki.root)
    try:
        predict(ch)
        r = session.post(f"{first.rest_url}/v1/models/digits:predict",
                         json={"instances": pixels().tolist()}, timeout=10)
        assert r.status_code == 200, r.text
        first.stop()
        swapped = fresh_server("other", grpc_port=first.grpc_port, rest_port=first.rest_port, name="swapped")
        with pytest.raises(grpc.RpcError) as e:
            predict(ch)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "not the attested key" in e.value.details(), e.value.details()
        with pytest.raises(requests.exceptions.SSLError) as e:
            session.post(f"{first.rest_url}/v1/models/digits:predict",
                         json={"instances": pixels().tolist()}, timeout=10)
        assert "not the attested key" in str(e.value)
        assert swapped.served("Predict") == []
        # The swapped server is a genuine teeserve server: checked on its own, it is admitted.
        with teeserve.attested_channel(swapped.grpc_target, root_certificates=pki.ca, policy=pki.policy(),
                                       root=pki.root) as again:
            predict(again)
    finally:
        ch.close()
        session.close()


def test_rest_session(pki, server):
    with teeserve.attested_session(server.rest_url, root_certificates=pki.ca, policy=pki.policy(),
                                   root=pki.root) as s:
        r = s.post(f"{server.rest_url}/v1/models/digits:predict", json={"instances": pixels().tolist()}, timeout=10)
        assert r.status_code == 200, r.text
        got = np.array([row["probabilities"] for row in r.json()["predictions"]], dtype=np.float32)
        meta = s.get(f"{server.rest_url}/v1/models/digits/metadata", timeout=10)
        assert meta.status_code == 200
        with pytest.raises(requests.exceptions.InvalidURL):
            s.get("https://example.invalid/", timeout=10)
    want = np.array(rust_predict(pki, server, rest=True)["outputs"]["probabilities"], dtype=np.float32)
    assert np.abs(got - want).max() < 1e-6


def test_closing_the_channel_stops_the_forwarder(pki, server):
    ch = teeserve.attested_channel(server.grpc_target, root_certificates=pki.ca, policy=pki.policy(), root=pki.root)
    path = ch._forwarder.socket_path
    assert os.path.exists(path)
    ch.close()
    assert not os.path.exists(path)
    assert ch._forwarder.closed


def test_the_forwarder_is_private(pki, server):
    with teeserve.attested_channel(server.grpc_target, root_certificates=pki.ca, policy=pki.policy(),
                                   root=pki.root) as ch:
        d = os.path.dirname(ch._forwarder.socket_path)
        assert os.stat(d).st_mode & 0o077 == 0


def test_mutual_tls(pki, fresh_server):
    s = fresh_server("server")
    # The same server, now requiring client certificates from the CA.
    s.stop()
    s2 = fresh_server("server", extra_args=["--tls-client-ca", os.path.join(pki.tls, "ca.pem")])
    with pytest.raises(teeserve.AttestationError):
        teeserve.attested_channel(s2.grpc_target, root_certificates=pki.ca, policy=pki.policy(), root=pki.root)
    with teeserve.attested_channel(s2.grpc_target, root_certificates=pki.ca, policy=pki.policy(), root=pki.root,
                                   private_key=pki.read("tls", "client.key"),
                                   certificate_chain=pki.read("tls", "client.pem")) as ch:
        predict(ch)


def test_bad_arguments_are_value_or_type_errors(pki, server):
    with pytest.raises(ValueError):
        teeserve.attested_channel(server.grpc_target, root_certificates=b"not a pem", policy=pki.policy(),
                                  root=pki.root)
    with pytest.raises(ValueError):
        teeserve.attested_channel(server.grpc_target, root_certificates=pki.ca, policy={"mrenclave": ["zz"]},
                                  root=pki.root)
    with pytest.raises(ValueError):
        teeserve.attested_channel(server.grpc_target, root_certificates=pki.ca, policy={"no_such_key": 1},
                                  root=pki.root)
    with pytest.raises(TypeError):
        teeserve.attested_channel(server.grpc_target, root_certificates=pki.ca, policy=42, root=pki.root)
    with pytest.raises(ValueError):
        teeserve.attested_channel("no-port", root_certificates=pki.ca, policy=pki.policy(), root=pki.root)
    # A client key that does not go with its certificate is the caller's mistake.
    with pytest.raises(ValueError, match="does not match certificate_chain"):
        teeserve.attested_channel(server.grpc_target, root_certificates=pki.ca, policy=pki.policy(), root=pki.root,
                                  private_key=pki.read("tls", "server.key"),
                                  certificate_chain=pki.read("tls", "client.pem"))


def test_the_policys_model_pin_goes_with_every_request(pki, server):
    """A policy that pins the model's file makes every request carry the pin
    (x-teeserve-accept-sha256), so that the attested server answers from no other file, even
    if the host adds one after the handshake; a request whose pin no served file meets is
    refused without being run."""
    import hashlib
    with open(os.path.join(ROOT, "models", "digits", "1", "model.onnx"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    policy = pki.policy(models={"digits": [digest]})
    with teeserve.attested_channel(server.grpc_target, root_certificates=pki.ca, policy=policy,
                                   root=pki.root) as ch:
        assert predict(ch).model_spec.version.value == 1
    with teeserve.attested_session(server.rest_url, root_certificates=pki.ca, policy=policy,
                                   root=pki.root) as s:
        assert s.headers["x-teeserve-accept-sha256"] == f"digits={digest}"
        url = f"{server.rest_url}/v1/models/digits:predict"
        body = {"instances": pixels().tolist()}
        assert s.post(url, json=body, timeout=10).status_code == 200
        other = "0" * 64
        r = s.post(url, json=body, timeout=10, headers={"x-teeserve-accept-sha256": f"digits={other}"})
        assert r.status_code == 400, r.text
        assert "accepts only model files" in r.json()["error"], r.text
