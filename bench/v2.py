#!/usr/bin/env python3
"""The Open Inference Protocol (KServe v2) beside TF Serving's API in one run, on one teeserve
server (ONNX Runtime engine, TLS) and one load tool, h2load: the digits model at 32 requesters
(one image per request) and MobileNetV2 at 4 requesters (8 images per request, binary data),
each over TF Serving's gRPC Predict, v2 gRPC ModelInfer (raw_input_contents), v2 REST with the
binary tensor data extension, and for digits also TF Serving's REST and v2 REST with JSON.
Three rounds, the variants interleaved; the ratios are the median round's.

    python bench/v2.py [DIGITS_REQUESTS] [MOBILENET_REQUESTS]     (bench/v2.sh runs it)
"""
import json
import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import TEESERVE, free_port  # noqa: E402
from request_cost import field, predict_request, varint  # noqa: E402
from serving import ORT_LIB, onnx_path  # noqa: E402


def predict_content(model, name, array):
    """A PredictRequest with the tensor as tensor_content (tensorflow_serving/apis/predict.proto,
    tensorflow/core/framework/tensor.proto; DT_FLOAT = 1)."""
    dims = b"".join(field(2, 2, field(1, 0, d)) for d in array.shape)
    tensor = field(1, 0, 1) + field(2, 2, dims) + field(4, 2, array.astype("<f4").tobytes())
    entry = field(1, 2, name.encode()) + field(2, 2, tensor)
    return field(1, 2, field(1, 2, model.encode())) + field(2, 2, entry)


def model_infer(model, name, array):
    """A ModelInferRequest with the tensor in raw_input_contents (grpc_predict_v2.proto:
    model_name = 1, inputs = 5 {name = 1, datatype = 2, shape = 3 (packed int64)},
    raw_input_contents = 7)."""
    shape = b"".join(varint(d) for d in array.shape)
    tensor = field(1, 2, name.encode()) + field(2, 2, b"FP32") + field(3, 2, shape)
    return field(1, 2, model.encode()) + field(5, 2, tensor) + field(7, 2, array.astype("<f4").tobytes())


def framed(msg):
    # gRPC's Length-Prefixed-Message: compressed flag 0, 4-byte big-endian length.
    return b"\x00" + struct.pack(">I", len(msg)) + msg


def v2_binary(name, array):
    """A v2 REST body with the tensor as binary data after the JSON; the JSON's length."""
    raw = array.astype("<f4").tobytes()
    head = json.dumps({"inputs": [{"name": name, "shape": list(array.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "parameters": {"binary_data_output": True}}).encode()
    return head + raw, len(head)


def write(tmp, name, data):
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def h2load(url, n, conc, body, headers, h1=False):
    args = ["h2load", "-c", str(conc), "-m", "1", "-n", str(n), "-d", body]
    for h in headers:
        args += ["-H", h]
    if h1:
        args.append("--h1")
    out = subprocess.run(args + [url], capture_output=True, text=True, timeout=1800).stdout
    rps = float(re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out).group(1))
    ok = int(re.search(r"status codes: (\d+) 2xx", out).group(1))
    if ok != n:
        raise SystemExit(f"{url}: {ok} of {n} answered 2xx\n{out}")
    return rps


def main():
    n_digits = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    n_mobile = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    tmp = tempfile.mkdtemp()
    subprocess.run([TEESERVE, "tls", "init", "--dir", f"{tmp}/tls"], check=True, capture_output=True)
    mobilenet = os.path.dirname(os.path.dirname(onnx_path("mobilenetv2")))
    config = os.path.join(tmp, "models.config")
    with open(config, "w") as f:
        f.write("model_config_list {\n"
                f" config {{ name: 'digits' base_path: '{ROOT}/models/digits' }}\n"
                f" config {{ name: 'mobilenetv2' base_path: '{mobilenet}' }}\n}}\n")
    grpc, rest = free_port(), free_port()
    log = open(os.path.join(tmp, "serve.log"), "w")
    server = subprocess.Popen(
        [TEESERVE, "serve", "--model_config_file", config, "--engine", "onnxruntime",
         "--onnxruntime_lib", ORT_LIB, "--tls_cert", f"{tmp}/tls/server.pem",
         "--tls_key", f"{tmp}/tls/server.key", "--grpc_bind_address", "127.0.0.1",
         "--rest_api_bind_address", "127.0.0.1", "--port", str(grpc), "--rest_api_port", str(rest)],
        stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        if not server.stdout.readline().startswith("listening"):
            raise SystemExit(open(log.name).read())
        pixels = np.array(json.load(open(f"{ROOT}/testdata/digits/sample.json"))["instances"][:1], np.float32)
        images = np.random.default_rng(7).random((8, 224, 224, 3), dtype=np.float32)
        g = f"https://127.0.0.1:{grpc}"
        r = f"https://127.0.0.1:{rest}"
        grpc_h = ["content-type: application/grpc", "te: trailers"]
        variants = []
        for model, name, x, n, conc in [("digits", "pixels", pixels, n_digits, 32),
                                        ("mobilenetv2", "input", images, n_mobile, 4)]:
            p = write(tmp, f"{model}.predict", framed(predict_content(model, name, x)))
            i = write(tmp, f"{model}.infer", framed(model_infer(model, name, x)))
            body, head_len = v2_binary(name, x)
            b = write(tmp, f"{model}.v2bin", body)
            variants += [
                (model, "TF Serving gRPC Predict", f"{g}/tensorflow.serving.PredictionService/Predict", n, conc, p, grpc_h, False),
                (model, "v2 gRPC ModelInfer (raw)", f"{g}/inference.GRPCInferenceService/ModelInfer", n, conc, i, grpc_h, False),
                (model, "v2 REST, binary data", f"{r}/v2/models/{model}/infer", n, conc, b,
                 [f"inference-header-content-length: {head_len}", "content-type: application/octet-stream"], True),
            ]
            if model == "digits":
                v1 = write(tmp, "digits.json", json.dumps({"instances": x.tolist()}).encode())
                v2j = write(tmp, "digits.v2json", json.dumps({"inputs": [
                    {"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}).encode())
                json_h = ["content-type: application/json"]
                variants += [
                    (model, "TF Serving REST (JSON)", f"{r}/v1/models/digits:predict", n, conc, v1, json_h, True),
                    (model, "v2 REST, JSON", f"{r}/v2/models/digits/infer", n, conc, v2j, json_h, True),
                ]
        rounds = {v[:2]: [] for v in variants}
        for _ in range(3):
            for model, label, url, n, conc, body, headers, h1 in variants:
                rounds[(model, label)].append(h2load(url, n, conc, body, headers, h1))
        # gRPC errors come with HTTP 200: every call must be in the access log with status OK.
        server.terminate()
        server.wait(timeout=30)
        text = open(log.name).read()
        for method, want in [("Predict", 3 * (n_digits + n_mobile)), ("ModelInfer", 3 * (n_digits + n_mobile))]:
            got = len(re.findall(rf'method="{method}" model="[a-z0-9]+" status=OK', text))
            if got != want:
                raise SystemExit(f"{method}: {got} of {want} calls answered OK")
        cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                             capture_output=True, text=True).stdout.strip()
        print(f"machine: {os.cpu_count()} cores, {cpu}; h2load -m 1, TLS 1.3, ONNX Runtime engine")
        print(f"digits: {n_digits} requests at -c 32, 1 image; mobilenetv2: {n_mobile} requests at -c 4, 8 images")
        for model in ("digits", "mobilenetv2"):
            base = statistics.median(rounds[(model, "TF Serving gRPC Predict")])
            for (m, label), rps in rounds.items():
                if m == model:
                    med = statistics.median(rps)
                    print(f"{model:12} {label:28} {med:9.1f} req/s  ({', '.join(f'{x:.1f}' for x in rps)})"
                          f"  {med / base:.3f}x gRPC Predict")
    finally:
        if server.poll() is None:
            server.kill()


if __name__ == "__main__":
    main()
