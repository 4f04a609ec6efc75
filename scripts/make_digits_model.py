#!/usr/bin/env python3
"""Makes the bundled digits classifier and its held-out test data.

A small MLP trained on scikit-learn's bundled 8x8 digits data set (no download), written as an
ONNX graph by hand with onnx.helper, checked with onnxruntime, and saved with the held-out
samples and onnxruntime's outputs on them (the reference teeserve's outputs are compared to).

    python3 -m venv .venv && .venv/bin/pip install scikit-learn onnx onnxruntime numpy
    .venv/bin/python scripts/make_digits_model.py
"""
import json
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

root = pathlib.Path(__file__).resolve().parent.parent
out = root / "models" / "digits"
testdata = root / "testdata" / "digits"
digits = load_digits()
x = digits.data.astype(np.float32)
y = digits.target.astype(np.int64)
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=7, stratify=y)
clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=600, random_state=7)
clf.fit(x_train / 16.0, y_train)

w1, w2 = (w.astype(np.float32) for w in clf.coefs_)
b1, b2 = (b.astype(np.float32) for b in clf.intercepts_)
inits = [
    numpy_helper.from_array(np.array(1.0 / 16.0, dtype=np.float32), "scale"),
    numpy_helper.from_array(w1, "w1"),
    numpy_helper.from_array(b1, "b1"),
    numpy_helper.from_array(w2, "w2"),
    numpy_helper.from_array(b2, "b2"),
]
nodes = [
    helper.make_node("Mul", ["pixels", "scale"], ["scaled"]),
    helper.make_node("MatMul", ["scaled", "w1"], ["h1"]),
    helper.make_node("Add", ["h1", "b1"], ["h1b"]),
    helper.make_node("Relu", ["h1b"], ["h1r"]),
    helper.make_node("MatMul", ["h1r", "w2"], ["logits0"]),
    helper.make_node("Add", ["logits0", "b2"], ["logits"]),
    helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    helper.make_node("ArgMax", ["logits"], ["class"], axis=1, keepdims=0),
]
graph = helper.make_graph(
    nodes,
    "digits",
    [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 64])],
    [
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]),
        helper.make_tensor_value_info("class", TensorProto.INT64, ["batch"]),
    ],
    inits,
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="teeserve")
model.ir_version = 8
onnx.checker.check_model(model)
(out / "1").mkdir(parents=True, exist_ok=True)
onnx.save(model, out / "1" / "model.onnx")

sess = ort.InferenceSession(str(out / "1" / "model.onnx"))
probs, classes = sess.run(None, {"pixels": x_test})
accuracy = float((classes == y_test).mean())
print(f"held-out accuracy {accuracy:.4f} on {len(y_test)} digits")
testdata.mkdir(parents=True, exist_ok=True)
np.save(testdata / "heldout-pixels.npy", x_test)
np.save(testdata / "heldout-labels.npy", y_test)
np.save(testdata / "heldout-probabilities-onnxruntime.npy", probs.astype(np.float32))
np.save(testdata / "sample.npy", x_test[:3])
(testdata / "sample.json").write_text(json.dumps({"instances": x_test[:3].tolist()}) + "\n")
