"""Peak and current RSS of `teeserve serve` (ONNX Runtime engine) after loading a model and after
4 requesters, at 1 worker, 2 workers with the default threads (two sessions over one copy of the
weights) and 2 workers at --onnxruntime_intra_op_parallelism 2 (one session), for
bench/worker_rss.sh: MODEL [SECONDS]."""
import os
import shutil
import subprocess
import sys
import tempfile
import time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
name = sys.argv[1]
SECS = sys.argv[2] if len(sys.argv) > 2 else "4"
sys.argv = sys.argv[:1]  # serving.py reads its own arguments when imported
from serving import MODELS, ORT_LIB  # noqa: E402
from benchlib import MODEL_BENCH, TEESERVE, Serve, tool  # noqa: E402


def status(pid):
    d = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status"))
    return int(d["VmHWM"].split()[0]) // 1024, int(d["VmRSS"].split()[0]) // 1024


tmp = tempfile.mkdtemp()
subprocess.run([TEESERVE, "tls", "init", "--dir", f"{tmp}/tls"], check=True, capture_output=True)
CONFIGS = [
    ("1 worker", ["--workers", "1"]),
    ("2 workers, default", ["--workers", "2"]),
    ("2 workers, intra 2", ["--workers", "2", "--onnxruntime_intra_op_parallelism", "2"]),
]
base = ["--model_name", name, "--model_base_path", os.path.join(MODELS, name),
        "--engine", "onnxruntime", "--onnxruntime_lib", ORT_LIB]
for label, extra in CONFIGS:
    s = Serve(tmp, "rss", base + extra)
    try:
        time.sleep(0.5)
        a = status(s.p.pid)
        tool(MODEL_BENCH, "client", f"127.0.0.1:{s.grpc}", f"{tmp}/tls/ca.pem",
             name, "input", "1", "4", SECS)
        b = status(s.p.pid)
        print(f"{name}, {label}: after loading VmHWM {a[0]} VmRSS {a[1]} MiB; "
              f"after 4 requesters VmHWM {b[0]} VmRSS {b[1]} MiB", flush=True)
    finally:
        s.stop()
shutil.rmtree(tmp, ignore_errors=True)
