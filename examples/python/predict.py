#!/usr/bin/env python3
"""Predict with TensorFlow Serving's own client code, after checking the server's attestation.

Only the channel differs from a plain TF Serving client: `teeserve.attested_channel` in place of
`grpc.secure_channel`. It raises `teeserve.AttestationError`, before any data is sent, unless the
server's TLS key lives in a TEE that the policy admits; every connection of the channel then
must present that key.

    pip install "./python[grpc]" tensorflow-cpu tensorflow-serving-api
    python3 examples/python/predict.py --server localhost:8500 --ca tls/ca.pem \
        --policy requester-policy.toml --root sim/root.pem
"""
import argparse
import json

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import teeserve


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default="localhost:8500", help="HOST:PORT of the gRPC API")
    ap.add_argument("--ca", required=True, help="CA certificate (PEM) of the server's certificate")
    ap.add_argument("--policy", required=True, help="the requester's policy (TOML), as for `teeserve predict --attest`")
    ap.add_argument("--root", help="attestation root (PEM) instead of Intel's, e.g. a simulated platform's root.pem")
    ap.add_argument("--input", default="testdata/digits/sample.json", help='JSON {"instances": [...]}')
    ap.add_argument("--model", default="digits")
    a = ap.parse_args()

    with open(a.ca, "rb") as f:
        ca = f.read()
    try:
        channel = teeserve.attested_channel(a.server, root_certificates=ca, policy=a.policy, root=a.root)
    except teeserve.AttestationError as e:
        raise SystemExit(f"not sending anything: {e} (rule {e.rule})")
    with channel:
        v = channel.verdict
        print(f"attested: {v['tee']} {v.get('sgx', {}).get('mrenclave', '')} (TCB {v['tcb_status']})")
        with open(a.input) as f:
            pixels = np.array(json.load(f)["instances"], dtype=np.float32)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = a.model
        request.model_spec.signature_name = "serving_default"
        request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(pixels))
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 10.0)
        probabilities = tf.make_ndarray(response.outputs["probabilities"])
        print("classes:", probabilities.argmax(axis=1).tolist())


if __name__ == "__main__":
    main()
