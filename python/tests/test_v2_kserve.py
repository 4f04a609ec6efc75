"""The kserve SDK's Open Inference Protocol clients (InferenceRESTClient with and without
binary data, InferenceGRPCClient), unchanged, against teeserve over TLS on the digits model
(tract and ONNX Runtime) and a SavedModel (TensorFlow engine);
and the REST client through ``teeserve.attested_endpoint`` (a Unix socket, httpx's ``uds``
transport). Apart from test_v2_clients.py: tritonclient and kserve register the same protobuf
package, so they cannot share a process. Run in the v2 clients' virtualenv (v2util.py).
"""
import asyncio

import numpy as np

import teeserve
from v2util import PIXELS, WANT, X, ca_path, need, ort_server, tf_server  # noqa: F401 (fixtures)

kserve = need("kserve")
httpx = need("httpx")


def pixels_input(binary):
    i = kserve.InferInput(name="pixels", shape=list(PIXELS.shape), datatype="FP32")
    i.set_data_from_numpy(PIXELS, binary_data=binary)
    return i


def test_kserve_clients(pki, server):
    async def run():
        base = f"https://localhost:{server.rest_port}"
        rest = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v2", verify=ca_path(pki)))
        try:
            assert await rest.is_server_live(base)
            assert await rest.is_server_ready(base)
            assert await rest.is_model_ready(base, "digits")
            for binary in (True, False):
                r = await rest.infer(base, kserve.InferRequest(model_name="digits",
                                                               infer_inputs=[pixels_input(binary)]),
                                     model_name="digits")
                outs = {o.name: o.as_numpy() for o in r.outputs}
                assert np.abs(outs["probabilities"] - WANT).max() < 1e-4
        finally:
            await rest.close()
        g = kserve.InferenceGRPCClient(f"localhost:{server.grpc_port}", use_ssl=True,
                                       root_certificates=ca_path(pki))
        try:
            assert await g.is_server_ready()
            r = await g.infer(kserve.InferRequest(model_name="digits", infer_inputs=[pixels_input(False)]))
            outs = {o.name: o.as_numpy() for o in r.outputs}
            assert np.abs(outs["probabilities"] - WANT).max() < 1e-4
            assert (outs["class"] == WANT.argmax(axis=1)).all()
        finally:
            await g.close()

    asyncio.run(run())


def test_kserve_rest_through_the_attested_endpoint(pki, server):
    args = dict(root_certificates=pki.ca, policy=pki.policy(), root=pki.root)
    with teeserve.attested_endpoint(server.rest_url, protocol="http", transport="unix", **args) as ep:
        async def run():
            rest = kserve.InferenceRESTClient(kserve.RESTConfig(
                protocol="v2", transport=httpx.AsyncHTTPTransport(uds=ep.socket_path)))
            try:
                r = await rest.infer(f"http://localhost:{server.rest_port}",
                                     kserve.InferRequest(model_name="digits", infer_inputs=[pixels_input(True)]),
                                     model_name="digits")
                return {o.name: o.as_numpy() for o in r.outputs}
            finally:
                await rest.close()

        outs = asyncio.run(run())
        assert np.abs(outs["probabilities"] - WANT).max() < 1e-4


async def _kserve_infer(pki, server, model, name, x, binary):
    """Outputs by name from both kserve clients for one input."""
    def request():
        i = kserve.InferInput(name=name, shape=list(x.shape), datatype="FP32")
        i.set_data_from_numpy(x, binary_data=binary)
        return kserve.InferRequest(model_name=model, infer_inputs=[i])

    rest = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v2", verify=ca_path(pki)))
    try:
        r = await rest.infer(f"https://localhost:{server.rest_port}", request(), model_name=model)
        over_rest = {o.name: o.as_numpy() for o in r.outputs}
    finally:
        await rest.close()
    g = kserve.InferenceGRPCClient(f"localhost:{server.grpc_port}", use_ssl=True,
                                   root_certificates=ca_path(pki))
    try:
        r = await g.infer(request())
        over_grpc = {o.name: o.as_numpy() for o in r.outputs}
    finally:
        await g.close()
    return over_rest, over_grpc


def test_kserve_clients_on_onnxruntime(pki, ort_server):
    for outs in asyncio.run(_kserve_infer(pki, ort_server, "digits", "pixels", PIXELS, True)):
        assert np.abs(outs["probabilities"] - WANT).max() < 1e-4
        assert (outs["class"] == WANT.argmax(axis=1)).all()


def test_kserve_clients_on_a_savedmodel(pki, tf_server):
    server, want = tf_server
    for outs in asyncio.run(_kserve_infer(pki, server, "half_tf2", "x", X, False)):
        assert np.abs(outs["y"] - np.array(want["y"], np.float32)).max() < 1e-5
        assert outs["argmax"].tolist() == want["argmax"]
