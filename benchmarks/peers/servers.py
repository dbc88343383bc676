"""The serving stacks compared, each started as its own server process on loopback, with the same models.

- ``reference``: azureml-inference-server-http (gunicorn + Flask, the server behind Azure ML online
  endpoints) running score.py entry scripts like the reference architecture's; its default of one sync
  worker, as deployed. It lives in a virtual environment of its own (``.peers/azml``, made on first use),
  because it pins pydantic and OpenTelemetry below what Ray and FastAPI need.
- ``fastapi``: one uvicorn process with the models loaded, the thing a user might write instead.
- ``serve``: this application on Ray Serve with the default proxy.
- ``serve-fast``: the same application with Ray's HAProxy ingress and throughput-optimized mode.
"""

import json
import os
import secrets
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.load import Call
from benchmarks.peers.isolation import private_fast_ingress_env
from benchmarks.workloads import Paths
from serve_app.haproxy import haproxy_with_limits_env

REPO = Path(__file__).resolve().parents[2]
REFERENCE_APP = Path(__file__).resolve().parent / "reference"
REFERENCE_VENV = REPO / ".peers" / "azml"
REFERENCE_PACKAGE = "azureml-inference-server-http==1.5.1"
SERVE_PATHS = {"faq": "/faq/match", "image": "/images/classify"}
# Every peer gets this key and every request carries it; the Serve application checks it (auth stays on, as
# deployed), the other stacks ignore it.
API_KEY = "benchmark-key-" + secrets.token_hex(16)
AUTH_HEADERS = {"Authorization": f"Bearer {API_KEY}"}
# Closed-loop throughput runs hold up to 64 image requests in flight on purpose: they measure the model path,
# so the ingress's image admission limit (16 in flight, sized for overload on CPU) is lifted for them.
THROUGHPUT_ENV = {"SERVE_APP_LIMITS__MAX_IMAGES_IN_FLIGHT": "1024"}
FAST_SERVE_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    # HAProxy with per-replica limits and JSON 503s (serve_app/bin/haproxy-with-limits), as deployed.
    **haproxy_with_limits_env(),
    # Benchmarks stop the app right after measuring; production keeps the 30 s drain.
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
}


def reference_server() -> Path:
    """The ``azmlinfsrv`` of a virtual environment beside the project's, made once (~30 s).

    Its own packages (Flask, gunicorn, its pinned pydantic) come first; numpy, scikit-learn, torch and the
    rest come from this interpreter's site-packages through a .pth file, so both stacks run the same wheels.
    """
    executable = REFERENCE_VENV / "bin" / "azmlinfsrv"
    if executable.exists():
        return executable
    subprocess.run([sys.executable, "-m", "venv", str(REFERENCE_VENV)], check=True)
    pip = [str(REFERENCE_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, REFERENCE_PACKAGE], check=True)
    purelib = subprocess.run(
        [str(REFERENCE_VENV / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "serve_app_project.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return executable


@dataclass(frozen=True)
class Launch:
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = REPO


@dataclass(frozen=True)
class Peer:
    name: str
    description: str
    paths: Paths
    launch: Callable[[int, tuple[str, ...], dict], Launch]
    one_model_only: bool = False  # serves one model per server (the reference: one entry script)


def _reference(port: int, kinds: tuple[str, ...], options: dict) -> Launch:
    (kind,) = kinds
    script = "score_faq.py" if kind == "faq" else "score_images.py"
    command = [str(reference_server()), "--entry_script", script, "--port", str(port)]
    env = {"GUNICORN_CMD_ARGS": "--no-control-socket", "WORKER_COUNT": str(options.get("workers", 1))}
    return Launch(command, env, REFERENCE_APP)


def _fastapi(port: int, kinds: tuple[str, ...], options: dict) -> Launch:
    command = [sys.executable, "-m", "uvicorn", "benchmarks.peers.fastapi_app:app", "--port", str(port)]
    return Launch([*command, "--log-level", "warning"], {"PEER_MODELS": ",".join(kinds)})


def _serve(extra_env: dict[str, str]) -> Callable[[int, tuple[str, ...], dict], Launch]:
    def launch(port: int, kinds: tuple[str, ...], options: dict) -> Launch:
        command = [sys.executable, "-m", "benchmarks.peers.serve_server", "--port", str(port)]
        command += ["--cpus", str(options.get("cpus", 2)), "--options", json.dumps(options.get("deployments", {}))]
        if "config" in options:  # declarative: `serve deploy` of this config through the dashboard
            command += ["--config", str(options["config"]), "--dashboard-port", str(options["dashboard_port"])]
        env = dict(extra_env)
        if env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
            env |= private_fast_ingress_env()  # tests run several servers at once
        return Launch(command, env)

    return launch


PEERS = {
    "reference": Peer(
        "reference",
        "azureml-inference-server-http 1.5.1 + score.py (gunicorn sync worker, Flask)",
        {"faq": "/score", "image": "/score"},
        _reference,
        one_model_only=True,
    ),
    "fastapi": Peer("fastapi", "FastAPI + uvicorn, one process", SERVE_PATHS, _fastapi),
    "serve": Peer("serve", "Ray Serve, default proxy", SERVE_PATHS, _serve({})),
    "serve-fast": Peer(
        "serve-fast", "Ray Serve, HAProxy ingress + throughput-optimized", SERVE_PATHS, _serve(FAST_SERVE_ENV)
    ),
}


def _probe_failure(base_url: str, probes: list[Call]) -> str | None:
    """None once every probe call answers 200, else what the first failing one got."""
    try:
        for call in probes:
            headers = {"content-type": call.content_type, **AUTH_HEADERS}
            response = httpx.post(base_url + call.path, content=call.body, headers=headers, timeout=30)
            if response.status_code != 200:
                return f"{call.path} answered {response.status_code}: {response.text[:500]}"
        return None
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}"


@contextmanager
def running(
    peer: Peer,
    kinds: tuple[str, ...],
    probes: list[Call],
    port: int,
    log: Path,
    options: dict | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Start ``peer`` on ``port``, wait until every probe call answers 200, yield its base URL, stop it."""
    launch = peer.launch(port, kinds, options or {})
    env = {**os.environ, **launch.env, "PYTHONPATH": str(REPO), "SERVE_APP_API_KEYS": API_KEY, **(extra_env or {})}
    with log.open("wb") as output:
        process = subprocess.Popen(
            launch.command, cwd=launch.cwd, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while failure := _probe_failure(base_url, probes):
            # A model that cannot load answers 503 model_unavailable for good (e.g. IMAGENET1K_V2 weights
            # without internet: set SERVE_APP_IMAGES__WEIGHTS=random:0); no point waiting out the deadline.
            if "model_unavailable" in failure or process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text()[-3000:]
                raise RuntimeError(f"{peer.name} did not start; last probe: {failure}\nits log:\n{tail}")
            time.sleep(1)
        yield base_url
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    # SIGINT lets the server shut down cleanly (serve_server stops Ray; gunicorn and uvicorn drain); then
    # whatever is left of its process group (Ray's raylet and workers, gunicorn workers) is killed.
    process.send_signal(signal.SIGINT)
    with suppress(subprocess.TimeoutExpired):
        process.wait(90)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
