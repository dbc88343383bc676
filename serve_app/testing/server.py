"""The Serve application in a process of its own, for tests and benchmarks: runs until SIGTERM or SIGINT.

    python -m serve_app.testing.server --port 8000 [--cpus 2] [--options '{"FAQMatcher": {...}}']
    python -m serve_app.testing.server --port 8000 --config CONFIG.yaml [--dashboard-port 8265]

Settings come from ``SERVE_APP_*`` as for ``serve run``; the ingress mode from the environment Ray starts
with (``RAY_SERVE_ENABLE_HA_PROXY``, ``RAY_SERVE_THROUGHPUT_OPTIMIZED``), which is why it needs its own process.
With ``--config`` the application is deployed the way operators and KubeRay do it, declaratively: ``serve
deploy`` through Ray's dashboard, so a later ``serve deploy`` of a changed config updates it in place.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import ray
from ray import serve

from serve_app.app import build_graph
from serve_app.ray_env import OWN_LOCAL_RAY
from serve_app.settings import AppArgs
from serve_app.testing.ports import PRIVATE_HAPROXY_PREFIX


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--cpus", type=float, default=2, help="logical CPUs of the local Ray instance")
    parser.add_argument("--options", type=json.loads, default={}, help="deployment options by deployment name")
    parser.add_argument("--config", type=Path, help="a Serve config to `serve deploy` instead of serve.run")
    parser.add_argument("--dashboard-port", type=int, default=8265, help="Ray dashboard (serve deploy's API) port")
    args = parser.parse_args()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    dashboard = {
        "include_dashboard": bool(args.config),
        "dashboard_host": "127.0.0.1",
        "dashboard_port": args.dashboard_port,
    }
    ray.init(address=OWN_LOCAL_RAY, num_cpus=args.cpus, logging_level="WARNING", log_to_driver=False, **dashboard)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        if args.config:
            serve_deploy(args.config, args.dashboard_port)
        else:
            serve.run(build_graph(AppArgs(), args.options), name="serve_app", route_prefix="/")
        print("serve_app.testing.server: running", flush=True)
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()
        remove_private_haproxy_folder()


def remove_private_haproxy_folder() -> None:
    """The HAProxy files folder private_fast_ingress_env made for this server, once Ray has stopped (each test
    server left one in the temp folder)."""
    config = os.environ.get("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC")
    if config and Path(config).parent.name.startswith(PRIVATE_HAPROXY_PREFIX):
        shutil.rmtree(Path(config).parent, ignore_errors=True)


def serve_deploy(config: Path, dashboard_port: int) -> None:
    """The operator's command: submit the config to the cluster's Serve REST API (returns before it is running)."""
    serve_cli = Path(sys.executable).parent / "serve"
    address = f"http://127.0.0.1:{dashboard_port}"
    # Ray's clusters require a token; ray.init keeps it in ~/.ray/auth_token, which the CLI reads in token mode.
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    command = [str(serve_cli), "deploy", str(config), "--address", address]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"serve deploy {config} failed:\n{done.stdout}\n{done.stderr}")


if __name__ == "__main__":
    main()
