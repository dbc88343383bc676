"""Binding the graph imports no model library (the driver of `serve run`, the app builder on a cluster, and every
test server pay for what it imports: 4.6-4.8 s with them, 0.9 s without, benchmarks/results/README.md "Start-up"),
and serve_app.app.import_replica_modules imports all that the replicas do (the rehearsal's import check uses it)."""

import json
import subprocess
import sys

MODEL_LIBRARIES = ("torch", "torchvision", "sklearn", "numba", "scipy")

PROBE = f"""
import json, sys
import serve_app
serve_app.graph
bound = [m for m in {MODEL_LIBRARIES!r} if m in sys.modules]
import serve_app.app
serve_app.app.import_replica_modules()
print(json.dumps({{"bound": bound, "replica": [m for m in {MODEL_LIBRARIES!r} if m in sys.modules]}}))
"""


def test_the_graph_binds_without_model_libraries_and_the_replica_check_imports_them():
    # A fresh interpreter: this test process has imported the models already.
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert imported["bound"] == []
    assert imported["replica"] == list(MODEL_LIBRARIES)
