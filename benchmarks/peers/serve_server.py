"""The Serve application in a process of its own, for benchmarks: runs until SIGTERM or SIGINT.

    python -m benchmarks.peers.serve_server --port 8000 [--cpus 2] [--options '{"FAQMatcher": {...}}']

Settings come from ``SERVE_APP_*`` as for ``serve run``; the ingress mode from the environment Ray starts
with (``RAY_SERVE_ENABLE_HA_PROXY``, ``RAY_SERVE_THROUGHPUT_OPTIMIZED``), which is why it needs its own process.
"""

import argparse
import json
import signal
import threading

import ray
from ray import serve

from serve_app.app import build_graph
from serve_app.settings import AppArgs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--cpus", type=float, default=2, help="logical CPUs of the local Ray instance")
    parser.add_argument("--options", type=json.loads, default={}, help="deployment options by deployment name")
    args = parser.parse_args()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        serve.run(build_graph(AppArgs(), args.options), name="serve_app", route_prefix="/")
        print("serve_server: running", flush=True)
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
