"""What the Open Inference Protocol client tests share (the servers on the ONNX Runtime and
TensorFlow engines among it). Those clients pin another protobuf than
TensorFlow's, so they live in a virtualenv of their own (.ci/run: scripts/v2clients_venv.sh);
elsewhere their tests skip, unless TEESERVE_REQUIRE_V2_CLIENTS=1. The ONNX Runtime server needs
TEESERVE_ONNXRUNTIME_LIB; the SavedModels need TEESERVE_TENSORFLOW_LIB and a Python with
TensorFlow, TEESERVE_TF_PYTHON, to make them and compute TensorFlow's own answers."""
import importlib
import json
import os
import subprocess

import numpy as np
import pytest

from conftest import ROOT, Server

REQUIRED = os.environ.get("TEESERVE_REQUIRE_V2_CLIENTS") == "1"

PIXELS = np.load(os.path.join(ROOT, "testdata", "digits", "heldout-pixels.npy"))[:32]
# onnxruntime's answers for the same pixels.
WANT = np.load(os.path.join(ROOT, "testdata", "digits", "heldout-probabilities-onnxruntime.npy"))[:32]


def need(module):
    """The module, or a skip (a failure with TEESERVE_REQUIRE_V2_CLIENTS=1)."""
    return importlib.import_module(module) if REQUIRED else pytest.importorskip(module)


def env_or_skip(name):
    v = os.environ.get(name)
    if not v:
        if REQUIRED:
            pytest.fail(f"TEESERVE_REQUIRE_V2_CLIENTS=1 but {name} is not set")
        pytest.skip(f"{name} is not set")
    return v


def ca_path(pki):
    return os.path.join(pki.tls, "ca.pem")


@pytest.fixture(scope="module")
def ort_server(pki):
    lib = env_or_skip("TEESERVE_ONNXRUNTIME_LIB")
    s = Server(pki, "server", name="v2-ort", extra_args=["--engine", "onnxruntime", "--onnxruntime-lib", lib])
    yield s
    s.stop()


X = np.array([[1.0, 2.0, 3.0], [6.0, 5.0, 4.0], [-1.5, 0.25, 9.0]], dtype=np.float32)
TEXT = np.array([b"attested", b"", "caf\u00e9".encode()], dtype=np.object_)

# Run with TensorFlow's Python: TensorFlow's own answers for X and TEXT.
_TF_ANSWERS = """
import json, sys
import numpy as np, tensorflow as tf
models, x, text = sys.argv[1], np.array(json.loads(sys.argv[2]), np.float32), json.loads(sys.argv[3])
h = tf.saved_model.load(models + "/half_tf2/1").signatures["serving_default"](x=tf.constant(x))
s = tf.saved_model.load(models + "/strings_tf2/1").signatures["serving_default"](
    text=tf.constant([t.encode() for t in text]))
print(json.dumps({"y": h["y"].numpy().tolist(), "argmax": h["argmax"].numpy().tolist(),
                  "upper": [u.decode() for u in s["upper"].numpy()], "length": s["length"].numpy().tolist()}))
"""


@pytest.fixture(scope="module")
def tf_server(pki, tmp_path_factory):
    env_or_skip("TEESERVE_TENSORFLOW_LIB")
    tf_python = env_or_skip("TEESERVE_TF_PYTHON")
    models = str(tmp_path_factory.mktemp("savedmodels"))
    subprocess.run([tf_python, os.path.join(ROOT, "tests", "python", "make_savedmodels.py"), models],
                   check=True, capture_output=True)
    answers = subprocess.run(
        [tf_python, "-c", _TF_ANSWERS, models, json.dumps(X.tolist()),
         json.dumps([t.decode() for t in TEXT])],
        check=True, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    config = os.path.join(models, "models.config")
    with open(config, "w") as f:
        f.write("model_config_list {\n")
        for name in ("half_tf2", "strings_tf2"):
            f.write(f" config {{ name: '{name}' base_path: '{models}/{name}' model_platform: 'tensorflow' }}\n")
        f.write("}\n")
    s = Server(pki, "server", name="v2-tf", model_args=["--model_config_file", config])
    yield s, json.loads(answers.stdout.strip().splitlines()[-1])
    s.stop()
