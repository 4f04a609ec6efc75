#!/usr/bin/env python3
"""The cost of a request, teeserve beside nginx on the same TLS certificate, in one run
(bench/request_cost.sh starts the servers; this writes the request bodies and reads h2load's
and strace's output).

    request_cost.py bodies DIR            write DIR/predict.grpc (a gRPC-framed PredictRequest of
                                          the digits sample) and DIR/predict.json (its REST body)
    request_cost.py h2load FILE           requests/s and the 2xx count from h2load's output
    request_cost.py strace FILE REQUESTS  system calls per request from `strace -c -f` output
"""
import json
import re
import struct
import sys


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number, wire, payload):
    """One protobuf field: wire type 0 takes an int, 2 bytes (length-delimited)."""
    key = varint(number << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


def predict_request(pixels):
    # tensorflow_serving/apis/predict.proto: PredictRequest { ModelSpec model_spec = 1;
    # map<string, TensorProto> inputs = 2; }, ModelSpec { string name = 1; };
    # tensorflow/core/framework/tensor.proto: TensorProto { DataType dtype = 1 (DT_FLOAT = 1);
    # TensorShapeProto tensor_shape = 2; bytes tensor_content = 4; },
    # TensorShapeProto { repeated Dim dim = 2; } Dim { int64 size = 1; }.
    shape = field(2, 2, field(1, 0, 1)) + field(2, 2, field(1, 0, len(pixels)))
    tensor = field(1, 0, 1) + field(2, 2, shape) + field(4, 2, struct.pack(f"<{len(pixels)}f", *pixels))
    entry = field(1, 2, b"pixels") + field(2, 2, tensor)
    return field(1, 2, field(1, 2, b"digits")) + field(2, 2, entry)


def main():
    cmd = sys.argv[1]
    if cmd == "bodies":
        d = sys.argv[2]
        sample = json.load(open("testdata/digits/sample.json"))
        pixels = sample["instances"][0]
        msg = predict_request(pixels)
        # gRPC's Length-Prefixed-Message: compressed flag 0, 4-byte big-endian length.
        open(f"{d}/predict.grpc", "wb").write(b"\x00" + struct.pack(">I", len(msg)) + msg)
        open(f"{d}/predict.json", "w").write(json.dumps({"instances": [pixels]}))
    elif cmd == "h2load":
        text = open(sys.argv[2]).read()
        rps = float(re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", text).group(1))
        ok = int(re.search(r"status codes: (\d+) 2xx", text).group(1))
        failed = int(re.search(r"requests: .*?(\d+) failed", text).group(1))
        print(json.dumps({"rps": rps, "2xx": ok, "failed": failed}))
    elif cmd == "strace":
        text = open(sys.argv[2]).read()
        total = None
        for line in text.splitlines():
            if line.strip().endswith("total"):
                total = int(line.split()[3])
        calls = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[-1] not in ("total", "syscall") and parts[3].isdigit():
                calls[parts[-1]] = int(parts[3])
        n = int(sys.argv[3])
        top = sorted(calls.items(), key=lambda kv: -kv[1])[:6]
        print(json.dumps({"per_request": round(total / n, 2) if total else None,
                          "top": {k: round(v / n, 2) for k, v in top}}))


if __name__ == "__main__":
    main()
