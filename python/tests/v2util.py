"""What the Open Inference Protocol client tests share. Those clients pin another protobuf than
TensorFlow's, so they live in a virtualenv of their own (.ci/run: scripts/v2clients_venv.sh);
elsewhere their tests skip, unless TEESERVE_REQUIRE_V2_CLIENTS=1. The ONNX Runtime server needs
TEESERVE_ONNXRUNTIME_LIB; the SavedModels need TEESERVE_TENSORFLOW_LIB and a Python with
TensorFlow, TEESERVE_TF_PYTHON, to make them and compute TensorFlow's own answers."""
import importlib
import os

import numpy as np
import pytest

from conftest import ROOT

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
