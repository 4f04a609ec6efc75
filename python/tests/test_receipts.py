"""Receipts from Python: a channel or session made with receipts=True keeps the receipt of each
answer with the exact bytes it is about, verify_receipt checks it as `teeserve receipt verify`
does, and each attack is refused naming its rule: a changed response, another request, a receipt
shown with another server's document."""
import hashlib
import json
import os
import subprocess
import time

import numpy as np
import pytest

import teeserve
from conftest import ROOT, binary

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from test_attested import pixels  # noqa: E402


def request(scale=1.0):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "digits"
    req.model_spec.signature_name = "serving_default"
    req.inputs["pixels"].CopyFrom(tf.make_tensor_proto(pixels() * scale))
    return req


def receipts_channel(pki, server, **kw):
    return teeserve.attested_channel(server.grpc_target, root_certificates=pki.ca, policy=pki.policy(**kw),
                                     root=pki.root, receipts=True)


def verify(pki, r, **kw):
    return teeserve.verify_receipt(r.receipt, r.request, r.response, r.attestation, policy=pki.policy(),
                                   root=pki.root, **kw)


def listed(document):
    (m,) = [m for m in document["models"] if m["name"] == "digits"]
    return m


def test_a_grpc_receipt_verifies_and_names_the_model_file_and_the_exact_messages(pki, server):
    with receipts_channel(pki, server) as ch:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        resp = stub.Predict(request(), 10.0)
        r = ch.last_receipt()
    assert r is not None
    # The bytes kept are the messages as sent and received.
    assert predict_pb2.PredictRequest.FromString(r.request) == request()
    assert predict_pb2.PredictResponse.FromString(r.response) == resp
    v = verify(pki, r)
    assert v["verified"] is True
    assert (v["model"], v["version"]) == ("digits", 1)
    assert v["model_sha256"] == listed(json.loads(r.attestation.document))["sha256"]
    assert (v["signature"], v["api"], v["method"]) == ("serving_default", "grpc", "Predict")
    assert v["request_sha256"] == hashlib.sha256(r.request).hexdigest()
    assert v["response_sha256"] == hashlib.sha256(r.response).hexdigest()
    assert abs(v["time"] - time.time()) < 300
    assert v["tee"] == "sgx"


def test_python_and_the_cli_give_the_same_verdict(pki, server, tmp_path):
    """A receipt saved from Python is what `teeserve receipt verify` reads, and both verdicts
    are the same."""
    with receipts_channel(pki, server) as ch:
        prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(request(), 10.0)
        r = ch.last_receipt()
    r.save(tmp_path / "r")
    out = subprocess.run([binary(), "receipt", "verify", str(tmp_path / "r"), "--policy", pki.policy_file(),
                          "--root", pki.root], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == verify(pki, r)
    assert teeserve.verify_receipt(teeserve.Receipt.load(tmp_path / "r"), policy=pki.policy(),
                                   root=pki.root) == verify(pki, r)


def test_a_changed_response_byte_is_refused(pki, server):
    with receipts_channel(pki, server) as ch:
        prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(request(), 10.0)
        r = ch.last_receipt()
    changed = bytearray(r.response)
    changed[len(changed) // 2] ^= 0x01
    with pytest.raises(teeserve.VerificationError) as e:
        teeserve.verify_receipt(r.receipt, r.request, bytes(changed), r.attestation, policy=pki.policy(),
                                root=pki.root)
    assert e.value.rule == "receipt response", str(e.value)


def test_the_receipt_of_one_request_is_refused_for_another(pki, server):
    with receipts_channel(pki, server) as ch:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        stub.Predict(request(), 10.0)
        first = ch.last_receipt()
        stub.Predict(request(scale=0.5), 10.0)
        second = ch.last_receipt()
    assert second.request != first.request
    assert verify(pki, second)["counter"] > verify(pki, first)["counter"]
    with pytest.raises(teeserve.VerificationError) as e:
        teeserve.verify_receipt(first.receipt, second.request, first.response, first.attestation,
                                policy=pki.policy(), root=pki.root)
    assert e.value.rule == "receipt request", str(e.value)


def test_a_receipt_shown_with_another_servers_document_is_refused(pki, server, fresh_server):
    """Another server process (its own receipt key, its own document) signed the receipt; shown
    with this server's document, its signature is not the attested key's."""
    other = fresh_server()
    with receipts_channel(pki, other) as ch:
        prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(request(), 10.0)
        theirs = ch.last_receipt()
    with receipts_channel(pki, server) as ch:
        ours = ch.attestation
    assert verify(pki, theirs)["model"] == "digits"
    with pytest.raises(teeserve.VerificationError) as e:
        teeserve.verify_receipt(theirs.receipt, theirs.request, theirs.response, ours, policy=pki.policy(),
                                root=pki.root)
    assert e.value.rule == "receipt", str(e.value)
    assert "signature" in str(e.value)


def test_a_future_call_with_a_model_pin_keeps_its_receipt(pki, server):
    """Receipts and the policy's model pin go with the same call; a call's future records its
    receipt when the result is taken."""
    with open(os.path.join(ROOT, "models", "digits", "1", "model.onnx"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    with receipts_channel(pki, server, models={"digits": [digest]}) as ch:
        resp = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict.future(request(), 10.0).result()
        r = ch.last_receipt()
    assert predict_pb2.PredictResponse.FromString(r.response) == resp
    assert verify(pki, r)["model_sha256"] == digest


def test_a_rest_receipt_verifies(pki, server):
    with teeserve.attested_session(server.rest_url, root_certificates=pki.ca, policy=pki.policy(),
                                   root=pki.root, receipts=True) as s:
        url = f"{server.rest_url}/v1/models/digits:predict"
        resp = s.post(url, json={"instances": pixels().tolist()}, timeout=10)
        assert resp.status_code == 200, resp.text
        r = s.last_receipt()
    assert r.response == resp.content
    v = verify(pki, r)
    assert (v["model"], v["version"], v["api"], v["method"]) == ("digits", 1, "rest", "Predict")
    with pytest.raises(teeserve.VerificationError) as e:
        teeserve.verify_receipt(r.receipt, r.request, r.response.replace(b"]", b" ]", 1), r.attestation,
                                policy=pki.policy(), root=pki.root)
    assert e.value.rule == "receipt response"


def test_without_receipts_no_receipt_is_kept(pki, server):
    with teeserve.attested_channel(server.grpc_target, root_certificates=pki.ca, policy=pki.policy(),
                                   root=pki.root) as ch:
        resp = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(request(), 10.0)
        assert ch.last_receipt() is None
    assert np.array(tf.make_ndarray(resp.outputs["probabilities"])).shape[0] == pixels().shape[0]


def test_the_document_kept_is_the_standing_one_byte_for_byte(pki, server):
    """The receipts name the server's standing document by its SHA-256: the channel keeps it as
    served (not serialized again, which a newer server's fields would change), although the
    check itself was quoted over the requester's nonce (the server's TLS key is the host's)."""
    import requests
    with receipts_channel(pki, server) as ch:
        assert ch.document.get("nonce")
        kept = ch.attestation.document
    served = requests.get(f"{server.rest_url}/v1/attestation", verify=os.path.join(pki.tls, "ca.pem"),
                          timeout=10).content
    assert kept == served
    assert "nonce" not in json.loads(kept)


def test_receipts_of_concurrent_answers_each_verify_alone(pki, server):
    """Answers made at once are signed in batches (one signature over a Merkle root, an inclusion
    path per receipt): each receipt still verifies on its own, names only its own request and
    response, and has its own counter."""
    import concurrent.futures

    def calls(scale):
        got = []
        with receipts_channel(pki, server) as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            for i in range(4):
                stub.Predict(request(scale + i / 100.0), 10.0)
                got.append(ch.last_receipt())
        return got

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        receipts = [r for rs in pool.map(calls, [0.5 + k / 10.0 for k in range(8)]) for r in rs]
    assert len(receipts) == 32
    counters = set()
    for r in receipts:
        v = verify(pki, r)
        assert v["verified"] is True
        assert v["request_sha256"] == hashlib.sha256(r.request).hexdigest()
        assert v["response_sha256"] == hashlib.sha256(r.response).hexdigest()
        counters.add(v["counter"])
    assert len(counters) == 32
    # A receipt's proof does not carry over to another answer of its batch.
    a, b = receipts[0], receipts[1]
    with pytest.raises(teeserve.VerificationError):
        teeserve.verify_receipt(a.receipt, b.request, b.response, a.attestation, policy=pki.policy(),
                                root=pki.root)


def test_a_long_lived_channel_keeps_verifiable_receipts_after_the_models_change(pki, fresh_server, tmp_path):
    """A receipt names the server's standing document of when its answer was made. A channel (and
    a session) made before a new model version loaded holds the document of before; the receipts
    after the change come with the later document (fetched by its SHA-256 and admitted as the
    first was), and both verify."""
    import shutil
    base = tmp_path / "digits"
    shutil.copytree(os.path.join(ROOT, "models", "digits", "1"), base / "1")
    server = fresh_server(model_args=["--model_name", "digits", "--model_base_path", str(base)],
                          extra_args=["--file_system_poll_wait_seconds", "1"])
    session = teeserve.attested_session(server.rest_url, root_certificates=pki.ca, policy=pki.policy(),
                                        root=pki.root, receipts=True)
    with receipts_channel(pki, server) as ch, session:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        stub.Predict(request(), 10.0)
        before = ch.last_receipt()
        assert verify(pki, before)["version"] == 1
        shutil.copytree(base / "1", base / "2")
        deadline = time.monotonic() + 60
        while True:
            stub.Predict(request(), 10.0)
            after = ch.last_receipt()
            if verify(pki, after)["version"] == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        resp = session.post(f"{server.rest_url}/v1/models/digits:predict",
                            json={"instances": pixels().tolist()}, timeout=10)
        assert resp.status_code == 200, resp.text
        rest = session.last_receipt()
    v = verify(pki, after)
    assert v["verified"] is True and v["version"] == 2, v
    assert after.attestation.document != before.attestation.document
    assert {m["version"] for m in json.loads(after.attestation.document)["models"]} >= {2}
    # The channel's own attestation is still the one it admitted when it was made.
    assert ch.attestation.document == before.attestation.document
    v = verify(pki, rest)
    assert (v["verified"], v["api"], v["version"]) == (True, "rest", 2), v
    assert rest.attestation.document == after.attestation.document
    # The receipt of before still verifies with the document it names.
    assert verify(pki, before)["version"] == 1
